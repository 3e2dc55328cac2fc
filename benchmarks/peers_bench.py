"""Peer benchmark: our op against TFQ, tensorcircuit-ng and PennyLane on JAX.

The op benchmark's circuit and cases (benchmarks/op_bench.py: Ry(x_i)
encoding, L x [Ry(w) layer, CNOT chain], <Z_i> on every qubit, float32;
(n, L, B) = (4,4,256), (10,5,256), (16,5,64), (20,5,8)), forward ([B, S]
values -> [B, n]) and forward+gradient (also d sum(expectations) / d values,
[B, S]), for:

  ours      the native op, CompiledCircuit.expectation (project .venv)
  tfq       TensorFlow Quantum, expectation op / Adjoint differentiator (.venv)
  tc_ps     tensorcircuit-ng on JAX, one c.expectation_ps(z=[i]) per qubit
            (its documented form) (.venv-peers)
  tc_state  tensorcircuit-ng on JAX, c.state() once, every <Z_i> from it
  tc_state_auto  (not run by default) tc_state with tensorcircuit's "auto"
            contractor instead of its default greedy one
  pl        PennyLane default.qubit, interface jax, backprop, jit + vmap
  pl_broadcast  (not run by default) the same with parameter broadcasting

The JAX forms are jit-compiled and vmapped over the batch; their gradient is
jax.value_and_grad of the sum (one forward and one reverse pass).

Each library runs in its own worker process (benchmarks/peers/worker_*.py),
which writes JSON: timing samples, peak memory, and the outputs of its first
call on the case's seeded input. The first round of workers gives those
outputs; the driver checks that every library, ours included, agrees with
ours in float64 (values and gradients within --tol, scaled up from 14 qubits
on for float32 sums over 2^n amplitudes) before any further timing; then --rounds - 1 more
rounds of workers, in a rotating order, add samples. It prints one table:
medians, ratios peer / ours (above 1: ours is faster), and peak memory.

Usage (from the repository root; `make bench-peers` sets up .venv-peers):
  .venv/bin/python benchmarks/peers_bench.py
  .venv/bin/python benchmarks/peers_bench.py --cases 4,10 --libs ours,tc_state --quick
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORKERS = os.path.join(HERE, "peers")

DEFAULT_CASES = [(4, 4, 256), (10, 5, 256), (16, 5, 64), (20, 5, 8)]

# key -> (table label, worker script, environment, --variant)
LIBRARIES = {
    "ours": ("ours (native op)", "worker_ours.py", "main", None),
    "tfq": ("TFQ adjoint", "worker_tfq.py", "main", None),
    "tc_ps": ("tc-ng expectation_ps", "worker_tc.py", "peers", "ps"),
    "tc_state": ("tc-ng one state", "worker_tc.py", "peers", "state"),
    "tc_state_auto": ("tc-ng one state auto", "worker_tc.py", "peers", "state-auto"),
    "pl": ("PennyLane dq jax vmap", "worker_pl.py", "peers", "vmap"),
    "pl_broadcast": ("PennyLane dq jax bcast", "worker_pl.py", "peers", "broadcast"),
}
DEFAULT_LIBS = ["ours", "tfq", "tc_ps", "tc_state", "pl"]
MODES = ("fwd", "grad")
STATE_BYTES = 8  # complex64 amplitude


def case_values(n, layers, batch):
    """The case's [B, S] float32 input, seeded as in op_bench."""
    rng = np.random.default_rng(1234 + n)
    return rng.uniform(-np.pi, np.pi, size=(batch, n * (layers + 1))).astype(np.float32)


def label_of(case):
    n, layers, batch = case
    return f"n={n} L={layers} B={batch}"


# ----------------------------------------------------------------------------
# Agreement


def tolerance(n, tol):
    """The agreement tolerance at n qubits: `tol` up to 14 qubits, then
    growing like sqrt(2^n), as float32 rounding does in sums over 2^n
    probabilities (measured against float64 at 20 qubits: the JAX forms are
    3e-4 to 5e-4 off, ours 1e-6, which sums in float64)."""
    return tol * 2.0 ** (max(0, n - 14) / 2)


def check_agreement(outputs, tol, reference="ours", exact=None):
    """Max |lib - reference| of fwd values, the fwd+grad values and the
    gradients, per library. outputs: lib -> the worker's "outputs" dict.
    With `exact` (the same dict in float64) every library, the reference
    included, is compared with it instead.

    Returns (deviations, failures): deviations[lib][quantity] = float;
    failures = [(lib, quantity, deviation)] beyond tol (NaN counts as beyond).
    """
    if reference not in outputs:
        reference = next(iter(outputs))
    ref = exact if exact is not None else outputs[reference]
    deviations, failures = {}, []
    for lib, out in outputs.items():
        if lib == reference and exact is None:
            continue
        dev = {}
        for key in ("fwd_values", "grad_values", "grad"):
            if key not in out or key not in ref:
                continue
            a, b = np.asarray(out[key], np.float64), np.asarray(ref[key], np.float64)
            if a.shape != b.shape:
                dev[key] = float("inf")
            else:
                dev[key] = float(np.max(np.abs(a - b))) if a.size else 0.0
            if not dev[key] <= tol:
                failures.append((lib, key, dev[key]))
        deviations[lib] = dev
    return deviations, failures


# ----------------------------------------------------------------------------
# Merging the workers' reports


def merge_runs(runs):
    """One library's worker reports for one case -> medians, samples, memory."""
    merged = {"samples_ms": {}, "median_ms": {}, "memory_mb": {}, "processes": len(runs)}
    for m in MODES:
        samples = [t for r in runs for t in r.get("samples_ms", {}).get(m, [])]
        if not samples:
            continue
        merged["samples_ms"][m] = samples
        merged["median_ms"][m] = statistics.median(samples)
        peaks = [r["memory"][m]["peak_increase_mb"] for r in runs
                 if m in r.get("memory", {}) and r["memory"][m]["peak_increase_mb"] is not None]
        if peaks:
            merged["memory_mb"][m] = max(peaks)
    if runs:
        merged["versions"] = runs[0].get("versions", {})
        merged["first_call_s"] = runs[0].get("first_call_s", {})
        merged["peak_rss_through_warmup_mb"] = max(r.get("peak_rss_through_warmup_mb") or 0 for r in runs)
    return merged


def table_rows(results, libs):
    """Rows of the table from results[case_label] = {"case": (n, L, B),
    "libs": {lib: merged}, "deviation": {...}, "failures": [...]}."""
    rows = []
    for label, res in results.items():
        n, _, batch = res["case"]
        batch_state_mb = batch * (2 ** n) * STATE_BYTES / 2**20
        ours = res["libs"].get("ours", {}).get("median_ms", {})
        bad_libs = {lib for lib, _, _ in res.get("failures", [])}
        first = True
        for lib in libs:
            merged = res["libs"].get(lib)
            cells = [label if first else "", LIBRARIES[lib][0]]
            first = False
            if not merged or not merged.get("median_ms"):
                error = (merged or {}).get("error")
                rows.append(cells + ["error" if error else "-"] + [""] * 8)
                continue
            med, mem = merged["median_ms"], merged.get("memory_mb", {})
            for m in MODES:
                if m in med:
                    cells.append(fmt_ms(med[m]))
                    cells.append(f"{med[m] / ours[m]:.2f}x" if m in ours and lib != "ours" else "")
                else:
                    cells += ["-", ""]
            cells.append(f"{med['grad'] / med['fwd']:.1f}" if "fwd" in med and "grad" in med else "-")
            for m in MODES:
                cells.append(fmt_mb(mem[m]) if m in mem else "-")
            # Working memory in states per sample, where a batch of states is
            # big enough (>= 1 MB) for this to mean more than fixed overheads.
            cells.append(f"{mem['grad'] / batch_state_mb:.1f}"
                         if "grad" in mem and batch_state_mb >= 1 else "-")
            cells.append(str(len(merged["samples_ms"].get("grad", merged["samples_ms"].get("fwd", [])))))
            cells.append("DISAGREE" if lib in bad_libs else "")
            rows.append(cells)
    return rows


TABLE_HEADER = ["case", "library", "fwd ms", "ratio", "fwd+grad ms", "ratio", "grad/fwd",
                "fwd MB", "fwd+grad MB", "states/sample", "samples", ""]


def format_table(rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(TABLE_HEADER)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(TABLE_HEADER), line(["-" * w for w in widths])] + [line(r) for r in rows])


def fmt_ms(x):
    return f"{x:.0f}" if x >= 1000 else f"{x:.1f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def fmt_mb(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def goal_lines(results):
    """Issue 13's goals, judged on this run's medians."""
    lines = []
    for label, res in results.items():
        n = res["case"][0]
        ours = res["libs"].get("ours", {}).get("median_ms", {})
        tc = res["libs"].get("tc_state", {}).get("median_ms", {})
        parts = []
        if "grad" in ours and "grad" in tc:
            ratio = tc["grad"] / ours["grad"]
            parts.append(f"tc-ng one state / ours fwd+grad {ratio:.2f}x (goal >= 1.5x: "
                         f"{'PASS' if ratio >= 1.5 else 'MISS'})")
        if n >= 16 and "grad" in ours and "fwd" in ours:
            ratio = ours["grad"] / ours["fwd"]
            parts.append(f"ours fwd+grad / fwd {ratio:.1f} (goal <= 3: {'PASS' if ratio <= 3 else 'MISS'})")
        if parts:
            lines.append(f"  {label}: " + "; ".join(parts))
    return lines


# ----------------------------------------------------------------------------
# Running workers


def python_for(lib, args):
    env = LIBRARIES[lib][2]
    return os.path.join(args.venv if env == "main" else args.peers_venv, "bin", "python")


def run_worker(lib, case, input_path, workdir, args, reps, with_outputs, tag):
    _, script, _, variant = LIBRARIES[lib]
    n, layers, batch = case
    out_path = os.path.join(workdir, f"{lib}_{n}_{tag}.json")
    log_path = os.path.join(workdir, f"{lib}_{n}_{tag}.log")
    cmd = [python_for(lib, args), os.path.join(WORKERS, script), "--case", f"{n}:{layers}:{batch}",
           "--input", input_path, "--out", out_path, "--reps", str(reps), "--budget", str(args.worker_budget)]
    if variant:
        cmd += ["--variant", variant]
    if with_outputs:
        cmd.append("--outputs")
    if args.block_ms is not None:
        cmd += ["--block-ms", str(args.block_ms)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    if args.threads:
        env["PEERS_TF_THREADS"] = str(args.threads)
    t0 = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout,
                                  cwd=REPO, env=env)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        status = "timeout"
    wall = time.perf_counter() - t0
    if status != 0 or not os.path.exists(out_path):
        with open(log_path) as f:
            tail = f.read()[-1500:]
        return {"error": f"worker {script} ({lib}) exited with {status} after {wall:.0f} s:\n{tail}",
                "wall_s": wall}
    with open(out_path) as f:
        report = json.load(f)
    report["wall_s"] = wall
    return report


def reps_for(case, args):
    """Samples per mode over all rounds, as op_bench: 15 (n < 20) or 5."""
    if args.reps:
        return args.reps
    if args.quick:
        return 3 if case[0] < 20 else 1
    return 15 if case[0] < 20 else 5


def bench_case(case, libs, args, workdir, index):
    label = label_of(case)
    print(f"\n[{label}]", flush=True)
    input_path = os.path.join(workdir, f"values_{case[0]}.npy")
    np.save(input_path, case_values(*case))
    total_reps = reps_for(case, args)
    per_round = max(1, math.ceil(total_reps / args.rounds))
    runs = {lib: [] for lib in libs}
    errors = {}
    outputs = {}
    exact = None
    tol = tolerance(case[0], args.tol)
    slow = set()
    for r in range(args.rounds):
        shift = (index + r) % len(libs)
        order = libs[shift:] + libs[:shift]
        for lib in order:
            if lib in errors or (r > 0 and lib in slow):
                continue
            report = run_worker(lib, case, input_path, workdir, args, per_round, r == 0, f"r{r}")
            if "error" in report:
                errors[lib] = report["error"]
                print(f"  {lib}: ERROR {report['error']}", flush=True)
                continue
            if r == 0:
                outputs[lib] = report.pop("outputs")
                if "reference" in report:
                    exact = report.pop("reference")
                # A library whose worker takes minutes (compilation included)
                # keeps its first round's samples only.
                if report["wall_s"] > args.slow_s:
                    slow.add(lib)
            runs[lib].append(report)
            med = {m: statistics.median(v) for m, v in report["samples_ms"].items() if v}
            mem = {m: report["memory"][m]["peak_increase_mb"] for m in report["memory"]}
            print(f"  round {r + 1} {lib:12s} " + "  ".join(
                f"{m} {fmt_ms(med[m])} ms ({len(report['samples_ms'][m])}x{report['calls_per_sample'][m]}, "
                f"+{fmt_mb(mem[m]) if mem[m] is not None else '?'} MB)" for m in med)
                + f"  [first calls {', '.join(f'{v:.1f}' for v in report['first_call_s'].values())} s; "
                  f"process {report['wall_s']:.0f} s]", flush=True)
        if r == 0:
            deviations, failures = check_agreement(outputs, tol, exact=exact)
            against = "ours in float64" if exact is not None else "ours"
            for lib, dev in deviations.items():
                print(f"  max |{lib} - {against}|: " + ", ".join(f"{k} {v:.1e}" for k, v in dev.items())
                      + f" (tolerance {tol:.1e})", flush=True)
            if failures:
                text = ", ".join(f"{lib} {key} {dev:.2e}" for lib, key, dev in failures)
                print(f"\n!!! AGREEMENT FAILURE for {label}: {text} exceed {tol:.1e}"
                      + ("; timing anyway (--keep-going)" if args.keep_going else "; no further timing")
                      + "\n", flush=True)
                if not args.keep_going:
                    break
    merged = {lib: merge_runs(runs[lib]) for lib in libs}
    for lib, error in errors.items():
        merged[lib]["error"] = error
    return {
        "case": case,
        "libs": merged,
        "runs": runs,
        "deviation": deviations,
        "tolerance": tol,
        "compared_with": "ours in float64" if exact is not None else "ours",
        "failures": failures,
        "errors": errors,
        "slow_single_round": sorted(slow),
    }


def parse_cases(text):
    if not text:
        return list(DEFAULT_CASES)
    by_n = {c[0]: c for c in DEFAULT_CASES}
    cases = []
    for item in (i.strip() for i in text.split(",")):
        if ":" in item:
            cases.append(tuple(int(v) for v in item.split(":")))
        elif item:
            if int(item) not in by_n:
                raise SystemExit(f"--cases: no default case with n={item} (have {sorted(by_n)}); "
                                 "give a custom case as n:L:B")
            cases.append(by_n[int(item)])
    return cases


def parse_libs(text):
    libs = [lib.strip() for lib in text.split(",") if lib.strip()]
    unknown = [lib for lib in libs if lib not in LIBRARIES]
    if unknown or not libs:
        raise SystemExit(f"--libs: unknown {unknown or text!r}; choose from {', '.join(LIBRARIES)}")
    return libs


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="", help="qubit counts of the default cases (4,10,16,20) "
                                                    "and/or n:L:B triples; default: all four")
    parser.add_argument("--libs", default=",".join(DEFAULT_LIBS),
                        help=f"comma-separated, from {', '.join(LIBRARIES)} (default: {','.join(DEFAULT_LIBS)})")
    parser.add_argument("--rounds", type=int, default=3,
                        help="worker processes per library and case, interleaved (default 3; --quick 1)")
    parser.add_argument("--reps", type=int, help="samples per mode over all rounds "
                                                 "(default 15, 5 at n >= 20; --quick 3, 1)")
    parser.add_argument("--quick", action="store_true", help="one round, few samples")
    parser.add_argument("--worker-budget", type=float, default=40.0,
                        help="seconds of timing per worker process (its samples are capped to fit)")
    parser.add_argument("--slow-s", type=float, default=120.0,
                        help="a library whose first worker took longer (compilation included) "
                             "runs no further rounds of that case")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker process")
    parser.add_argument("--block-ms", type=float, help="passed to the workers (default 20)")
    parser.add_argument("--tol", type=float, default=1e-4,
                        help="agreement tolerance against ours in float64, up to 14 qubits "
                             "(then x sqrt(2^(n-14)): float32 sums over 2^n probabilities)")
    parser.add_argument("--keep-going", action="store_true",
                        help="on an agreement failure, still time the case (exit status 2)")
    parser.add_argument("--threads", type=int, help="TF intra-op threads for ours and TFQ")
    parser.add_argument("--venv", default=os.path.join(REPO, ".venv"))
    parser.add_argument("--peers-venv", default=os.path.join(REPO, ".venv-peers"))
    parser.add_argument("--json", metavar="PATH", help="write everything to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    args.rounds = max(1, args.rounds)
    cases = parse_cases(args.cases)
    libs = parse_libs(args.libs)
    for lib in libs:
        if not os.path.exists(python_for(lib, args)):
            where = args.venv if LIBRARIES[lib][2] == "main" else args.peers_venv
            raise SystemExit(f"{lib} runs in {where}, which has no bin/python: run `make bench-peers` "
                             f"(or `make build` for .venv)")

    load_before = os.getloadavg()
    print(f"CPU: {cpu_model()} ({len(os.sched_getaffinity(0))} usable); load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(f"libraries: {', '.join(libs)}; {args.rounds} round(s) of worker processes per case; "
          "times are medians in ms, memory the peak RSS increase of one warm call in MB", flush=True)
    t_start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="peers_bench_") as workdir:
        for index, case in enumerate(cases):
            results[label_of(case)] = bench_case(case, libs, args, workdir, index)
            if results[label_of(case)]["failures"] and not args.keep_going:
                break
    total_s = time.perf_counter() - t_start
    load_after = os.getloadavg()

    versions = {}
    for res in results.values():
        for merged in res["libs"].values():
            versions.update(merged.get("versions", {}))
    print()
    print(format_table(table_rows(results, libs)))
    print("ratio: library / ours (above 1: ours is faster). grad/fwd: its fwd+grad / its fwd. "
          "MB: peak RSS above the RSS before one warm call. states/sample: fwd+grad MB / "
          "(B x one complex64 state), where a batch of states is >= 1 MB.")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    builds = sorted({r["info"].get("op_library_sha256", "?") for res in results.values()
                     for r in res["runs"].get("ours", [])})
    if builds:
        print(f"our op library sha256: {', '.join(builds)}"
              + (" (it changed during the run!)" if len(builds) > 1 else ""))
    goals = goal_lines(results)
    if goals:
        print("issue 13 goals:")
        print("\n".join(goals))
    failures = [(label, f) for label, res in results.items() for f in res["failures"]]
    errors = [(label, lib) for label, res in results.items() for lib in res["errors"]]
    print(f"\nTotal {total_s:.0f} s; load average {load_before[0]:.2f} -> {load_after[0]:.2f}.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                         "cpu_model": cpu_model(), "argv": sys.argv[1:] if argv is None else list(argv),
                         "loadavg_before": load_before, "loadavg_after": load_after,
                         "total_s": total_s, "versions": versions, "libs": libs},
                "results": {label: {k: v for k, v in res.items()} for label, res in results.items()},
            }, f, indent=1)
        print(f"Wrote {args.json}")
    if failures:
        print(f"!!! {len(failures)} agreement failure(s): exit status 2", file=sys.stderr)
        return 2
    if errors:
        print(f"!!! worker errors: {errors}: exit status 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
