"""What every peer-benchmark worker shares: the circuit as a gate list, the
command line, the timing loop, the memory measurement and the JSON report.

Standard library and numpy only: it runs both in the project's .venv (ours,
TFQ) and in .venv-peers (JAX, tensorcircuit-ng, PennyLane).

A worker is `python worker_<lib>.py --case n:L:B --input values.npy --out
result.json [--reps R] [--outputs] ...`. It builds its library's forward and
forward+gradient functions for the case, calls each once (tracing /
compiling; these outputs are the ones the driver compares), warms up,
measures each function's peak memory, then times both, interleaved.
"""

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import sys
import time

import numpy as np

MB = 1024.0 * 1024.0


def hea_gates(n, layers):
    """The op benchmark's circuit as a list of gates, in application order.

    ("ry", qubit, symbol index) or ("cnot", control, target). Symbols are fed
    in the order x_0..x_{n-1}, then w_{l,i} layer by layer: the columns of the
    [B, S] values.
    """
    gates = [("ry", i, i) for i in range(n)]
    for l in range(layers):
        gates += [("ry", i, n + l * n + i) for i in range(n)]
        gates += [("cnot", i, i + 1) for i in range(n - 1)]
    return gates


def num_symbols(n, layers):
    return n * (layers + 1)


def parse_case(text):
    n, layers, batch = (int(v) for v in text.split(":"))
    return n, layers, batch


# ----------------------------------------------------------------------------
# Memory: resident set size from /proc/self/status


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def rss_mb():
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def peak_rss_mb():
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss():
    """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS
    (Linux >= 4.0: writing 5 to /proc/self/clear_refs). False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim_heap():
    # Freed buffers that glibc keeps in its arenas stay resident: without
    # giving them back first, a call could reuse them and look free.
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


MEMORY_METHOD = ("peak RSS (VmHWM, reset through /proc/self/clear_refs) above the RSS just "
                 "before one call of the warmed-up function, after gc and malloc_trim; the "
                 "largest of 1-2 such calls, made before the timed ones")


def peak_increase_mb(call):
    """(peak RSS above the RSS just before `call()` in MB, that RSS, CPU
    seconds per wall second during the call: the cores kept busy). The peak
    is None if its mark cannot be reset. The process is warm, so this is the
    call's working memory (states, temporaries, outputs), not tracing or
    compilation."""
    gc.collect()
    _trim_heap()
    before = rss_mb()
    if not reset_peak_rss():
        return None, before, None
    t0, c0 = time.perf_counter(), _cpu_s()
    call()
    busy = (_cpu_s() - c0) / max(time.perf_counter() - t0, 1e-9)
    return peak_rss_mb() - before, before, busy


def _cpu_s():
    """CPU seconds of all of this process's threads so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------
# Timing


def calls_per_sample(est_s, block_ms):
    """How many back-to-back calls make one timed sample (timeit's `number`)."""
    if block_ms <= 0:
        return 1
    return max(1, math.ceil(block_ms * 1e-3 / max(est_s, 1e-9)))


def time_interleaved(fns, reps, number, settle):
    """Seconds per call: `reps` samples per function, each the mean of
    number[name] back-to-back calls, preceded by one untimed call where
    settle[name]; functions interleaved in a rotating order; gc off."""
    names = list(fns)
    samples = {name: [] for name in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(reps):
            for name in names[r % len(names):] + names[: r % len(names)]:
                if settle[name]:
                    fns[name]()
                t0 = time.perf_counter()
                for _ in range(number[name]):
                    fns[name]()
                samples[name].append((time.perf_counter() - t0) / number[name])
    finally:
        if was_enabled:
            gc.enable()
    return samples


# ----------------------------------------------------------------------------
# The worker's main


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--case", required=True, help="n:L:B")
    p.add_argument("--input", required=True, help=".npy file of [B, S] float32 symbol values")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--modes", default="fwd,grad", help="fwd and/or grad")
    p.add_argument("--reps", type=int, default=5, help="timed samples per mode (0: outputs only)")
    p.add_argument("--budget", type=float, default=None,
                   help="cap the samples so that timing takes about this many seconds (at least one)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls after the first, which compiles (default: 3 if the "
                        "second takes < 1 s, else 1)")
    p.add_argument("--block-ms", type=float, default=20.0,
                   help="a sample is the mean of as many back-to-back calls as fill this (0: one)")
    p.add_argument("--settle-below", type=float, default=0.5,
                   help="precede each sample by an untimed call when a call takes less (s)")
    p.add_argument("--memory-calls", type=int, default=None,
                   help="calls per mode whose peak memory is measured, the largest reported "
                        "(default: 2, or 1 when a call takes over 1 s)")
    p.add_argument("--outputs", action="store_true", help="include the first call's outputs")
    p.add_argument("--variant", default=None, help="library-specific form (see the worker)")
    return p


def run_worker(library, build, argv=None, description=None):
    """build(n, layers, batch, values, variant) -> (fns, versions, info):
    fns[mode]() runs one call with the case's input and returns the outputs
    as numpy arrays, fully computed (fwd: values [B, n]; grad: (values [B, n],
    gradient [B, S])). An optional fns["reference"]() returns (values,
    gradient) in float64, reported with --outputs (untimed)."""
    args = parser(description or f"peer benchmark worker: {library}").parse_args(argv)
    n, layers, batch = parse_case(args.case)
    modes = [m for m in args.modes.split(",") if m]
    values = np.load(args.input).astype(np.float32)
    if values.shape != (batch, num_symbols(n, layers)):
        raise SystemExit(f"--input has shape {values.shape}, expected "
                         f"{(batch, num_symbols(n, layers))} for case {args.case}")
    rss_start = rss_mb()
    t0 = time.perf_counter()
    fns, versions, info = build(n, layers, batch, values, args.variant)
    reference = fns.get("reference")  # float64 outputs, for the agreement check
    fns = {m: fns[m] for m in modes}
    setup_s = time.perf_counter() - t0
    rss_before_first_call = rss_mb()

    first_call_s, outputs = {}, {}
    for m in modes:
        t0 = time.perf_counter()
        outputs[m] = fns[m]()
        first_call_s[m] = time.perf_counter() - t0

    # The first call traced / compiled: the second is the first real estimate,
    # and cheap functions get 2 more.
    est = {}
    for m in modes:
        times = []
        while True:
            t0 = time.perf_counter()
            fns[m]()
            times.append(time.perf_counter() - t0)
            wanted = args.warmup if args.warmup is not None else (3 if times[0] < 1.0 else 1)
            if len(times) >= max(1, wanted):
                break
        est[m] = min(times)
    # Before any reset of the mark: the whole process's peak so far, which
    # includes tracing / compiling and the first calls.
    peak_through_warmup = peak_rss_mb()

    memory = {}
    for m in modes:
        peaks, busy, base = [], [], None
        calls = args.memory_calls if args.memory_calls is not None else (2 if est[m] < 1.0 else 1)
        for _ in range(max(1, calls)):
            peak, base, cores = peak_increase_mb(fns[m])
            peaks.append(peak)
            busy.append(cores)
        memory[m] = {
            "peak_increase_mb": None if None in peaks else max(peaks),
            "samples_mb": peaks,
            "rss_before_mb": base,
            "busy_cores": busy,
        }

    number = {m: calls_per_sample(est[m], args.block_ms) for m in modes}
    settle = {m: est[m] < args.settle_below for m in modes}
    reps = args.reps
    if args.budget is not None and reps > 0:
        per_rep = sum(est[m] * (number[m] + settle[m]) for m in modes)
        reps = max(1, min(reps, int(args.budget // max(per_rep, 1e-9))))
    samples = time_interleaved(fns, reps, number, settle) if reps > 0 else {m: [] for m in modes}

    result = {
        "library": library,
        "variant": args.variant,
        "case": {"n": n, "L": layers, "B": batch},
        "versions": dict(versions, python=platform.python_version()),
        "info": info,
        "pid": os.getpid(),
        "setup_s": setup_s,
        "first_call_s": first_call_s,
        "estimate_s": est,
        "calls_per_sample": number,
        "settle": settle,
        "samples_ms": {m: [t * 1e3 for t in v] for m, v in samples.items()},
        "memory": memory,
        "reps": reps,
        "memory_method": MEMORY_METHOD,
        "rss_start_mb": rss_start,
        "rss_before_first_call_mb": rss_before_first_call,
        "peak_rss_through_warmup_mb": peak_through_warmup,
        "loadavg": os.getloadavg(),
    }
    if args.outputs:
        out = {}
        if "fwd" in outputs:
            out["fwd_values"] = np.asarray(outputs["fwd"], np.float32).tolist()
        if "grad" in outputs:
            out["grad_values"] = np.asarray(outputs["grad"][0], np.float32).tolist()
            out["grad"] = np.asarray(outputs["grad"][1], np.float32).tolist()
        result["outputs"] = out
        if reference is not None:
            e, g = reference()
            result["reference"] = {"fwd_values": np.asarray(e, np.float64).tolist(),
                                   "grad_values": np.asarray(e, np.float64).tolist(),
                                   "grad": np.asarray(g, np.float64).tolist()}
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


def main_guard(library, build):
    sys.exit(run_worker(library, build))
