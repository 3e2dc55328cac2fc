"""Benchmark: qkeras_hybrid's native op vs TensorFlow Quantum.

The hardware-efficient circuit on n qubits: Ry(x_i) encoding on every qubit,
then L layers of [Ry(w_{l,i}) on every qubit, CNOT chain i -> i+1], measured
with <Z_i> on every qubit. For each case (n, L, B) it times, as medians over
interleaved repetitions:

  * forward:          [B, S] symbol values -> [B, n] expectations
  * forward+gradient: the same plus d sum(expectations) / d symbol values
                      ([B, S], gradient w.r.t. all symbols, x and w)

for
  * ours: CompiledCircuit.expectation(values, tf.float32) in a tf.function,
  * TFQ:  tfq.get_expectation_op() (forward) and the Adjoint differentiator's
          differentiable op (forward+gradient), also in a tf.function, with
          programs / symbol names / pauli sums converted outside the timed region.

Before timing, each case checks that both agree on values and gradients
within --tol (1e-4) and aborts (exit status 2) if not.

Then the layer path (skip with --no-layer-path): the same circuit as a Keras
layer, `QuantumLayer(..., backend="native")` vs `QuantumLayer(...,
backend="tfq")` (TFQ's Adjoint differentiator), inputs [B, n] = the x_i and
the w as the layer's weights, timing layer(x) and layer(x) plus the gradient
of the sum w.r.t. the inputs and the weights, each in a tf.function. This is
what a model pays per step on each backend, circuit conversion and tiling
included.

Usage (from the repository root):
  TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/op_bench.py
  ... benchmarks/op_bench.py --quick --cases 4,10 --json /tmp/bench.json
"""

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import sympy  # noqa: E402
import tensorflow as tf  # noqa: E402


def _early_threads(argv):
    """--threads N must reach TF before anything initialises its context."""
    for i, a in enumerate(argv):
        value = a.split("=", 1)[1] if a.startswith("--threads=") else (
            argv[i + 1] if a == "--threads" and i + 1 < len(argv) else None)
        if value is not None:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(value))
            except ValueError:
                pass  # argparse reports it


_early_threads(sys.argv[1:])

import cirq  # noqa: E402
import tensorflow_quantum as tfq  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import qkeras_hybrid  # noqa: E402

# (n, L, B) -> the goal for the TFQ/ours forward+gradient ratio.
DEFAULT_CASES = [(4, 4, 256), (10, 5, 256), (16, 5, 64), (20, 5, 8)]
GOALS = {4: 50.0, 10: 20.0, 16: 3.0, 20: 3.0}


# ----------------------------------------------------------------------------
# Environment description


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_info():
    """TF's configured thread pools and what 0 (= automatic) resolves to."""
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    # With 0, TF sizes its intra-op pool to the schedulable cores.
    return {
        "intra_op_setting": intra,
        "inter_op_setting": inter,
        "intra_op_threads": intra if intra > 0 else usable,
        "inter_op_threads": inter if inter > 0 else usable,
        "usable_cpus": usable,
        "os_cpu_count": os.cpu_count(),
    }


def build_provenance():
    """Which op build and source state was measured (the C++ changes often)."""
    import hashlib
    import subprocess

    info = {}
    try:
        from qkeras_hybrid import ops

        path = ops.library_path()
        with open(path, "rb") as f:
            info["op_library_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
        info["op_library_mtime"] = datetime.datetime.fromtimestamp(
            os.path.getmtime(path)
        ).isoformat(timespec="seconds")
    except Exception as e:  # pragma: no cover - reported, not fatal
        info["op_library_error"] = repr(e)
    try:
        git = ["git", "-C", _REPO]
        info["git_head"] = subprocess.run(
            git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            git + ["status", "--porcelain", "--", "custom_ops", "qkeras_hybrid", "setup.py"],
            capture_output=True, text=True, check=True,
        ).stdout.split("\n")
        info["uncommitted_source_files"] = sorted(l[3:] for l in dirty if l.strip())
    except Exception:  # pragma: no cover - not a git checkout
        pass
    return info


def report_start(versions):
    """Prints the machine's line (CPU, threads, load average) and `versions`;
    returns the JSON report's fields for them and for the op build."""
    load = os.getloadavg()
    threads = thread_info()
    print(f"CPU {cpu_model()}; threads {threads['intra_op_threads']}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {versions}", flush=True)
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_average_start": load, "cpu": cpu_model(), "threads": threads, "build": build_provenance()}


def report_end(report):
    """Records and prints the load average at the end of a run: a loaded machine moves the numbers."""
    report["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in report['load_average_end'])}")


# ----------------------------------------------------------------------------
# The circuit


def hardware_efficient(n, layers, noise=None):
    """(circuit, qubits, symbols in feed order x..., w_0_..., observables).

    `noise`: a single-qubit channel (e.g. `cirq.depolarize(0.01)`) put on every
    qubit after every layer (noise_bench.py's circuit), or None.
    """
    qubits = cirq.LineQubit.range(n)
    xs = [sympy.Symbol(f"x{i}") for i in range(n)]
    ws = [[sympy.Symbol(f"w_{l}_{i}") for i in range(n)] for l in range(layers)]
    circuit = cirq.Circuit(cirq.Moment(cirq.ry(xs[i])(q) for i, q in enumerate(qubits)))
    for l in range(layers):
        circuit.append(cirq.Moment(cirq.ry(ws[l][i])(q) for i, q in enumerate(qubits)))
        for i in range(n - 1):
            circuit.append(cirq.CNOT(qubits[i], qubits[i + 1]))
        if noise is not None:
            circuit.append(cirq.Moment(noise.on_each(qubits)))
    symbols = xs + [w for row in ws for w in row]
    observables = [cirq.Z(q) for q in qubits]
    return circuit, qubits, symbols, observables


def random_values(seed, shape):
    """Uniform angles in [-pi, pi) of `shape`, float32: a case's input."""
    return tf.constant(np.random.default_rng(seed).uniform(-np.pi, np.pi, size=shape), tf.float32)


def with_gradient(expectation):
    """values -> (expectation(values), d sum(expectation(values)) / d values): the forward+gradient timed."""

    def fwd_grad(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            expectations = expectation(values)
            total = tf.reduce_sum(expectations)
        return expectations, tape.gradient(total, values)

    return fwd_grad


def advancing_seed(first):
    """A function returning a [2] int64 seed that advances on every call (in a
    tf.function: on every run of the graph), as QuantumLayer's SeedGenerator
    does: each timed call draws fresh shots or trajectories."""
    state = tf.Variable([first, 0], dtype=tf.int64)

    def next_seed():
        seed = state.value()
        state.assign_add(tf.constant([0, 1], tf.int64))
        return seed

    return next_seed


def tfq_sampled_functions(circuit, symbols, observables, batch, samples, sampled_op):
    """TFQ's (forward, forward + shift-rule gradient) tf.functions of [B, S] values
    for a sampled op (`tfq.get_sampled_expectation_op()`, `tfq.noise.expectation`)
    with `samples` shots or trajectories per row and term. The gradient is
    ParameterShift's differentiable op over `sampled_op`, as
    tfq.layers.SampledExpectation and NoisyPQC build it. Programs, names and
    Pauli sums are converted once, outside the timed calls."""
    programs = tfq.convert_to_tensor([circuit] * batch)
    names = tf.constant([str(s) for s in symbols])
    paulis = tfq.convert_to_tensor([observables] * batch)
    num_samples = tf.fill([batch, len(observables)], samples)
    shift_op = tfq.differentiators.ParameterShift().generate_differentiable_op(sampled_op=sampled_op)
    spec = [tf.TensorSpec([None, len(symbols)], tf.float32)]
    forward = tf.function(lambda values: sampled_op(programs, names, values, paulis, num_samples),
                          input_signature=spec)
    fwd_grad = tf.function(with_gradient(lambda values: shift_op(programs, names, values, paulis, num_samples)),
                           input_signature=spec)
    return forward, fwd_grad


# ----------------------------------------------------------------------------
# The four timed functions of one case


def build_case(n, layers, batch):
    circuit, _, symbols, observables = hardware_efficient(n, layers)
    num_symbols = len(symbols)
    names = [str(s) for s in symbols]

    t0 = time.perf_counter()
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=symbols)
    compile_s = time.perf_counter() - t0
    assert cc.symbol_names == names, (cc.symbol_names, names)

    values_spec = tf.TensorSpec([None, num_symbols], tf.float32)

    @tf.function(reduce_retracing=True, input_signature=[values_spec])
    def ours_fwd(values):
        return cc.expectation(values, tf.float32)

    ours_grad_body = with_gradient(lambda values: cc.expectation(values, tf.float32))
    ours_grad = tf.function(ours_grad_body, reduce_retracing=True, input_signature=[values_spec])

    # TFQ inputs, converted once outside the timed region.
    programs = tfq.convert_to_tensor([circuit] * batch)
    symbol_names = tf.constant(names)
    pauli_sums = tfq.convert_to_tensor([observables] * batch)
    tfq_spec = [
        tf.TensorSpec([None], tf.string),
        tf.TensorSpec([num_symbols], tf.string),
        values_spec,
        tf.TensorSpec([None, n], tf.string),
    ]
    tfq_expectation = tfq.get_expectation_op()
    tfq_adjoint = tfq.differentiators.Adjoint().generate_differentiable_op(
        analytic_op=tfq.get_expectation_op()
    )

    @tf.function(reduce_retracing=True, input_signature=tfq_spec)
    def tfq_fwd_fn(p, s, values, o):
        return tfq_expectation(p, s, values, o)

    def tfq_grad_of(p, s, values, o):
        return with_gradient(lambda v: tfq_adjoint(p, s, v, o))(values)

    tfq_grad_fn = tf.function(tfq_grad_of, reduce_retracing=True, input_signature=tfq_spec)

    fns = {
        "tfq_fwd": lambda v: tfq_fwd_fn(programs, symbol_names, v, pauli_sums),
        "ours_fwd": ours_fwd,
        "tfq_grad": lambda v: tfq_grad_fn(programs, symbol_names, v, pauli_sums),
        "ours_grad": ours_grad,
    }
    # The fwd+grad bodies, untraced, for the in-one-graph timing.
    grad_bodies = {
        "tfq_grad": lambda v: tfq_grad_of(programs, symbol_names, v, pauli_sums),
        "ours_grad": ours_grad_body,
    }
    extra = {"num_symbols": num_symbols, "num_angles": cc.num_angles, "compile_s": compile_s}
    try:
        extra["num_blocks"] = int(cc.program_inputs[1].shape[0])
    except Exception:  # pragma: no cover - layout may change
        pass
    return cc, fns, grad_bodies, extra


def run(fn, values):
    """Calls fn and materialises every output (so all work is done)."""
    out = fn(values)
    return tf.nest.map_structure(lambda t: t.numpy(), out)


AUTORANGE_S = 0.2


def calls_per_sample(est_s, target_s=AUTORANGE_S):
    """How many back-to-back calls make one timed sample: as many as fill
    `target_s` (timeit's autorange; at least one, and one if target_s <= 0),
    from a call's estimated seconds `est_s`. One cheap call right after a long
    call of the other library times the machine waking up, not the op (ours'
    3 ms call after TFQ's 20 s one took 9.6 ms, 3.3 ms in a loop): a sample
    of about 0.2 s of calls spreads that over all of them."""
    if target_s <= 0:
        return 1
    return max(1, math.ceil(target_s / max(est_s, 1e-9)))


def autorange(fn, x, target_s=AUTORANGE_S):
    """Seconds per call of fn(x), as timeit's autorange measures it: 1, 2, 5,
    10, 20, 50, ... back-to-back calls until they take `target_s` (a single
    call if one takes that long)."""
    number = 1
    while True:
        for calls in (number, 2 * number, 5 * number):
            t0 = time.perf_counter()
            for _ in range(calls):
                run(fn, x)
            seconds = time.perf_counter() - t0
            if seconds >= target_s:
                return seconds / calls
        number *= 10


def estimate_call_s(fn, x, first_call_s):
    """The estimate of fn(x)'s seconds per call that sizes its samples: the
    autorange after the first call, the faster of two where the first call
    took under 1 s. Not the first call itself: it includes the tracing, over
    1 s on a loaded machine, which made ours' 0.3 ms forward look too slow to
    need more than one call per sample. A first call over 5 s is a long call
    (tracing takes less): it is the estimate, with no more calls."""
    if first_call_s > 5.0:
        return first_call_s
    return min(autorange(fn, x) for _ in range(2 if first_call_s < 1.0 else 1))


def plan_timing(n, est, args, case_budget):
    """(reps, calls per sample, settle call or not) per function, from the
    functions' estimated seconds per call `est`."""
    # Settle calls: TFQ parses its serialized programs on every call and frees
    # thousands of small protobuf objects; glibc merges those free chunks
    # (malloc_consolidate) on the next large allocation, which bills 3-5 ms of
    # TFQ's clean-up to whichever op runs next. So where a call is cheap, each
    # timed sample is preceded by an untimed call of the same function: every
    # timed call then pays for its own library's clean-up, as in a loop that
    # calls one op repeatedly. And a cheap function's sample is the mean of
    # back-to-back calls filling --block-ms (0.2 s, timeit's autorange, as in
    # measure_bench.py), which spreads what is left of the switch (cold
    # caches, a descheduled thread waking up) over them.
    settle = {name: (not args.no_settle) and est[name] < args.settle_below for name in est}
    number = {name: calls_per_sample(est[name], args.block_ms * 1e-3) for name in est}

    # Repetitions: requested count, capped by this case's share of the budget.
    per_rep = sum(est[k] * (number[k] + settle[k]) for k in est)
    if args.reps is not None:
        reps = args.reps
    elif args.quick:
        reps = 5 if n < 20 else 2
    elif n < 20:
        # A cheap case gets up to 3x the repetitions, within about 10 s: the
        # medians of sub-millisecond calls are what a shared machine's load
        # bursts move most. (With 0.2 s samples a repetition of all four takes
        # about 1 s, so that is 15.)
        reps = max(15, min(45, int(10.0 // max(per_rep, 1e-9))))
    else:
        reps = 5
    capped = max(args.min_reps, int(case_budget // max(per_rep, 1e-9)))
    if capped < reps:
        print(
            f"  one repetition of all four takes ~{per_rep:.1f} s: {reps} -> {capped} reps "
            f"to stay within this case's {case_budget:.0f} s share of the time budget",
            flush=True,
        )
        reps = capped
    return reps, number, settle


def time_interleaved(fns, x, reps, number, settle):
    """Seconds per call of each function: `reps` samples each, a sample being
    the mean of `number[name]` back-to-back calls, preceded by one untimed
    call where settle[name]. The functions are interleaved in a rotating
    order so that load drifts on a shared machine hit all of them alike. The
    garbage collector is off while timing, as in timeit."""
    names = list(fns)
    samples = {name: [] for name in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(reps):
            for name in names[r % len(names):] + names[: r % len(names)]:
                if settle[name]:
                    run(fns[name], x)
                t0 = time.perf_counter()
                for _ in range(number[name]):
                    run(fns[name], x)
                samples[name].append((time.perf_counter() - t0) / number[name])
    finally:
        if was_enabled:
            gc.enable()
    return samples


# ----------------------------------------------------------------------------
# One case


class AgreementError(RuntimeError):
    """TFQ and ours disagree beyond the tolerance."""


def reference_deviation(cc, values, outputs, rows):
    """Both float32 results vs ours in float64 on the first rows (who is off?)."""
    e, g = run(with_gradient(lambda v: cc.expectation(v, tf.float64)), tf.cast(values[:rows], tf.float64))
    rows = e.shape[0]

    def dev(a, b):
        return float(np.max(np.abs(a[:rows].astype(np.float64) - b)))

    return {
        "rows": rows,
        "tfq_value": dev(outputs["tfq_fwd"], e),
        "tfq_grad": dev(outputs["tfq_grad"][1], g),
        "ours_value": dev(outputs["ours_fwd"], e),
        "ours_grad": dev(outputs["ours_grad"][1], g),
    }


def check_agreement(outputs, tol):
    dev = {
        "fwd_value": float(np.max(np.abs(outputs["tfq_fwd"] - outputs["ours_fwd"]))),
        "grad_value": float(np.max(np.abs(outputs["tfq_grad"][0] - outputs["ours_grad"][0]))),
        "grad": float(np.max(np.abs(outputs["tfq_grad"][1] - outputs["ours_grad"][1]))),
        # Ours' forward op vs the values its forward+gradient function returns.
        "ours_fwd_vs_grad_value": float(
            np.max(np.abs(outputs["ours_fwd"] - outputs["ours_grad"][0]))
        ),
    }
    bad = {k: v for k, v in dev.items() if not (v <= tol)}  # NaN-safe
    return dev, bad


def bench_case(n, layers, batch, args, case_budget):
    label = f"n={n} L={layers} B={batch}"
    print(f"\n[{label}]", flush=True)
    cc, fns, grad_bodies, extra = build_case(n, layers, batch)
    print(
        f"  symbols={extra['num_symbols']} angles={extra['num_angles']} "
        f"blocks={extra.get('num_blocks', '?')} compile={extra['compile_s'] * 1e3:.0f} ms",
        flush=True,
    )
    values = random_values(1234 + n, (batch, extra["num_symbols"]))

    # Warm-up: the first call traces; its outputs double as the agreement check.
    warm_s = {}
    outputs = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        outputs[name] = run(fn, values)
        warm_s[name] = time.perf_counter() - t0
    dev, bad = check_agreement(outputs, args.tol)
    print(
        "  max |TFQ - ours|: values {fwd_value:.2e}, values (grad op) {grad_value:.2e}, "
        "gradients {grad:.2e}".format(**dev),
        flush=True,
    )
    if args.reference_rows > 0:
        ref = reference_deviation(cc, values, outputs, args.reference_rows)
        dev["vs_float64_reference"] = ref
        print(
            "  vs float64 reference ({rows} rows): TFQ values {tfq_value:.2e} gradients "
            "{tfq_grad:.2e}; ours values {ours_value:.2e} gradients {ours_grad:.2e}".format(**ref),
            flush=True,
        )
    failure = None
    if bad:
        failure = (
            f"AGREEMENT FAILURE for {label}: "
            + ", ".join(f"{k}={v:.3e}" for k, v in bad.items())
            + f" exceed tolerance {args.tol:g}"
        )
        banner = f"\n!!! {failure}." + (
            " Timing it anyway (--keep-going); the run will exit with status 2.\n"
            if args.keep_going else " Aborting.\n"
        )
        print(banner, file=sys.stderr, flush=True)
        print(banner, flush=True)
        if not args.keep_going:
            raise AgreementError(failure)

    est = {}
    for name, fn in fns.items():
        for _ in range(args.warmup or 0):
            run(fn, values)
        est[name] = estimate_call_s(fn, values, warm_s[name])

    reps, number, settle = plan_timing(n, est, args, case_budget)
    names = list(fns)
    samples = time_interleaved(fns, values, reps, number, settle)

    def stats(xs):
        xs_ms = sorted(x * 1e3 for x in xs)
        q = np.percentile(xs_ms, [25, 75])
        return {
            "median_ms": statistics.median(xs_ms),
            "min_ms": xs_ms[0],
            "p25_ms": float(q[0]),
            "p75_ms": float(q[1]),
            "samples_ms": xs_ms,
        }

    timing = {name: stats(samples[name]) for name in names}
    med = {name: timing[name]["median_ms"] for name in names}
    result = {
        "case": {"n": n, "L": layers, "B": batch},
        "label": label,
        "reps": reps,
        "settle_calls": settle,
        "calls_per_sample": number,
        "warmup_first_call_ms": {k: v * 1e3 for k, v in warm_s.items()},
        "timing": timing,
        "fwd_ratio": med["tfq_fwd"] / med["ours_fwd"],
        "grad_ratio": med["tfq_grad"] / med["ours_grad"],
        "goal_grad_ratio": GOALS.get(n),
        "max_deviation": dev,
        "agreement_failure": failure,
        **extra,
    }
    goal = result["goal_grad_ratio"]
    result["pass"] = None if goal is None else bool(result["grad_ratio"] >= goal)
    for name in names:
        t = timing[name]
        print(
            f"  {name:9s} median {t['median_ms']:10.2f} ms  "
            f"(min {t['min_ms']:.2f}, p25 {t['p25_ms']:.2f}, p75 {t['p75_ms']:.2f}, "
            f"reps {reps} x {number[name]} calls)",
            flush=True,
        )

    if not args.no_in_graph and max(est["tfq_grad"], est["ours_grad"]) < args.settle_below:
        result["in_graph"] = in_graph(grad_bodies, values, est, min(reps, 15))
    if args.breakdown:
        result["breakdown"] = breakdown(cc, values, reps)
    return result


def in_graph_loop(body, iterations, spec):
    """One tf.function that runs body `iterations` times (on inputs that
    differ by 1e-6 * i, so nothing is hoisted or shared) and sums every
    output: the cost of the op inside a graph, as in a model's training step,
    without TF's per-call dispatch, which a step pays once for all its ops.
    One iteration at a time: TF would otherwise run independent iterations
    side by side on its inter-op threads, which one call cannot do."""

    @tf.function(input_signature=[spec])
    def loop(values):
        def step(i, total):
            out = body(values + tf.cast(i, values.dtype) * 1e-6)
            return i + 1, total + tf.add_n([tf.reduce_sum(t) for t in tf.nest.flatten(out)])

        _, total = tf.while_loop(lambda i, _: i < iterations, step,
                                 (tf.constant(0), tf.zeros([], values.dtype)),
                                 parallel_iterations=1)
        return total

    return loop


def in_graph(bodies, values, est, reps):
    """Forward+gradient of both inside one graph, per iteration (ms)."""
    spec = tf.TensorSpec([None, values.shape[1]], values.dtype)
    # About 0.2 s of calls per sample: enough iterations that the one
    # dispatch per call is a small part of each.
    iterations = {name: calls_per_sample(est[name]) for name in bodies}
    loops = {name: in_graph_loop(body, iterations[name], spec) for name, body in bodies.items()}
    for loop in loops.values():
        run(loop, values)  # traces
    samples = time_interleaved(loops, values, reps, {name: 1 for name in loops},
                               {name: True for name in loops})
    med = {name: statistics.median(v) * 1e3 / iterations[name] for name, v in samples.items()}
    out = {"tfq_grad_ms": med["tfq_grad"], "ours_grad_ms": med["ours_grad"],
           "iterations": iterations, "grad_ratio": med["tfq_grad"] / med["ours_grad"]}
    print(f"  in one graph (fwd+grad per iteration): TFQ {out['tfq_grad_ms']:.2f} ms, "
          f"ours {out['ours_grad_ms']:.3f} ms, ratio {out['grad_ratio']:.1f}x "
          f"({iterations['ours_grad']} and {iterations['tfq_grad']} iterations per call)", flush=True)
    return out


def breakdown(cc, values, reps):
    """Ours split up: angle map alone, raw forward op, raw adjoint-gradient op."""
    from qkeras_hybrid import ops

    angles = tf.constant(cc.angles(values))
    upstream = tf.ones([values.shape[0], cc.num_observables], tf.float32)
    spec = tf.TensorSpec(angles.shape, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec(values.shape, tf.float32)])
    def angle_map(v):
        return cc.angles(v)

    @tf.function(input_signature=[spec])
    def raw_fwd(a):
        return ops.expectation(*cc.program_inputs, a)

    @tf.function(input_signature=[spec])
    def raw_grad(a):
        return ops.expectation_adjoint_grad(*cc.program_inputs, a, upstream)

    @tf.function(input_signature=[tf.TensorSpec(values.shape, tf.float32)])
    def empty(v):
        return v

    parts = {"angle_map": (angle_map, values), "raw_fwd_op": (raw_fwd, angles),
             "raw_grad_op": (raw_grad, angles), "empty_tf_function": (empty, values)}
    out = {}
    for name, (fn, arg) in parts.items():
        run(fn, arg)
        xs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            run(fn, arg)
            xs.append(time.perf_counter() - t0)
        out[name + "_ms"] = statistics.median(xs) * 1e3
        print(f"  breakdown {name:18s} median {out[name + '_ms']:10.3f} ms", flush=True)
    return out


# ----------------------------------------------------------------------------
# The layer path: QuantumLayer(backend="native") vs QuantumLayer(backend="tfq")


def build_layer_case(n, layers):
    from qkeras_hybrid.layers import QuantumLayer

    circuit, _, symbols, observables = hardware_efficient(n, layers)
    xs, ws = symbols[:n], symbols[n:]
    by_backend = {
        backend: QuantumLayer(circuit, observables, input_symbols=xs, weight_symbols=ws, backend=backend)
        for backend in ("tfq", "native")
    }
    for layer in by_backend.values():
        layer.build((None, n))
    by_backend["tfq"].set_weights(by_backend["native"].get_weights())
    spec = [tf.TensorSpec([None, n], tf.float32)]
    fns = {}
    for backend, layer in by_backend.items():
        fns[f"{backend}_fwd"] = tf.function(layer.__call__, input_signature=spec, reduce_retracing=True)

        def fwd_grad(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = layer(x)
                total = tf.reduce_sum(out)
            gx, gw = tape.gradient(total, [x, layer.quantum_weights.value])
            return out, gx, gw

        fns[f"{backend}_grad"] = tf.function(fwd_grad, input_signature=spec, reduce_retracing=True)
    return fns


def bench_layer_case(n, layers, batch, args, case_budget):
    label = f"n={n} L={layers} B={batch}"
    print(f"\n[layer path, {label}]", flush=True)
    fns = build_layer_case(n, layers)
    x = random_values(4321 + n, (batch, n))
    outputs, warm_s = {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        outputs[name] = run(fn, x)
        warm_s[name] = time.perf_counter() - t0
    dev = {
        "fwd_value": float(np.max(np.abs(outputs["tfq_fwd"] - outputs["native_fwd"]))),
        "grad_inputs": float(np.max(np.abs(outputs["tfq_grad"][1] - outputs["native_grad"][1]))),
        "grad_weights": float(np.max(np.abs(outputs["tfq_grad"][2] - outputs["native_grad"][2]))),
    }
    print("  max |tfq - native|: values {fwd_value:.2e}, input gradients {grad_inputs:.2e}, "
          "weight gradients {grad_weights:.2e}".format(**dev), flush=True)
    # Weight gradients sum over the batch: compare them relative to their size.
    scale = max(1.0, float(np.max(np.abs(outputs["native_grad"][2]))))
    bad = dev["fwd_value"] > args.tol or dev["grad_inputs"] > args.tol or dev["grad_weights"] > args.tol * scale
    failure = f"LAYER PATH AGREEMENT FAILURE for {label}: {dev}" if bad else None
    if failure:
        print(f"\n!!! {failure}\n", flush=True)
    est = {name: estimate_call_s(fn, x, warm_s[name]) for name, fn in fns.items()}
    reps, number, settle = plan_timing(n, est, args, case_budget)  # as for the ops
    names = list(fns)
    samples = time_interleaved(fns, x, reps, number, settle)
    med = {name: statistics.median(v) * 1e3 for name, v in samples.items()}
    for name in names:
        print(f"  {name:11s} median {med[name]:10.2f} ms  (min {min(samples[name]) * 1e3:.2f}, reps {reps} x {number[name]} calls)",
              flush=True)
    return {
        "case": {"n": n, "L": layers, "B": batch},
        "label": label,
        "reps": reps,
        "median_ms": med,
        "samples_ms": {k: [t * 1e3 for t in v] for k, v in samples.items()},
        "fwd_ratio": med["tfq_fwd"] / med["native_fwd"],
        "grad_ratio": med["tfq_grad"] / med["native_grad"],
        "max_deviation": dev,
        "agreement_failure": failure,
    }


def print_layer_table(results):
    header = ["case (layer path)", "tfq fwd ms", "native fwd ms", "ratio", "tfq fwd+grad ms",
              "native fwd+grad ms", "ratio (tfq/native)", ""]
    rows = [[
        r["label"], fmt_ms(r["median_ms"]["tfq_fwd"]), fmt_ms(r["median_ms"]["native_fwd"]), f"{r['fwd_ratio']:.2f}x",
        fmt_ms(r["median_ms"]["tfq_grad"]), fmt_ms(r["median_ms"]["native_grad"]), f"{r['grad_ratio']:.2f}x",
        "DISAGREE" if r["agreement_failure"] else "",
    ] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


# ----------------------------------------------------------------------------
# Output


def fmt_ms(x):
    return f"{x:.1f}" if x >= 100 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def print_table(results):
    header = [
        "case", "TFQ fwd ms", "ours fwd ms", "ratio",
        "TFQ fwd+grad ms", "ours fwd+grad ms", "ratio (TFQ/ours)", "goal", "",
        "in one graph",
    ]
    rows = []
    for r in results:
        t = r["timing"]
        goal = r["goal_grad_ratio"]
        rows.append([
            r["label"],
            fmt_ms(t["tfq_fwd"]["median_ms"]),
            fmt_ms(t["ours_fwd"]["median_ms"]),
            f"{r['fwd_ratio']:.2f}x",
            fmt_ms(t["tfq_grad"]["median_ms"]),
            fmt_ms(t["ours_grad"]["median_ms"]),
            f"{r['grad_ratio']:.2f}x",
            "-" if goal is None else f">={goal:g}x",
            "DISAGREE" if r.get("agreement_failure")
            else "-" if r["pass"] is None else ("PASS" if r["pass"] else "MISS"),
            f"{r['in_graph']['grad_ratio']:.1f}x" if "in_graph" in r else "-",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    left = {0}

    def line(cells):
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    print(line(header))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def parse_cases(text):
    if not text:
        return list(DEFAULT_CASES)
    by_n = {c[0]: c for c in DEFAULT_CASES}
    cases = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if ":" in item:  # custom n:L:B
            n, layers, batch = (int(v) for v in item.split(":"))
            cases.append((n, layers, batch))
        else:
            n = int(item)
            if n not in by_n:
                raise SystemExit(
                    f"--cases: no default case with n={n} (have {sorted(by_n)}); "
                    "give a custom case as n:L:B"
                )
            cases.append(by_n[n])
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (5 / 2)")
    parser.add_argument(
        "--cases", default="",
        help="comma-separated qubit counts of the default cases (4,10,16,20) "
             "and/or custom n:L:B triples; default: all four",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results to this JSON file")
    parser.add_argument("--reps", type=int, help="repetitions per case (overrides the defaults)")
    parser.add_argument("--min-reps", type=int, default=3,
                        help="never fewer repetitions than this when capping by budget")
    parser.add_argument("--budget", type=float,
                        help="target seconds for the whole run: each case gets an equal share of "
                             "what is left when it starts and caps its repetitions to fit "
                             "(default 150, quick 60); --min-reps wins")
    parser.add_argument("--settle-below", type=float, default=0.5,
                        help="precede each timed sample by an untimed call when a call "
                             "takes less than this many seconds (see the source)")
    parser.add_argument("--no-settle", action="store_true", help="never make settle calls")
    parser.add_argument("--block-ms", type=float, default=1e3 * AUTORANGE_S,
                        help="a timed sample is the mean of as many back-to-back calls as "
                             "fill this many milliseconds (default 200, timeit's autorange; "
                             "at least one; 0: always one)")
    parser.add_argument("--keep-going", action="store_true",
                        help="on an agreement failure, still time the case (exit status 2)")
    parser.add_argument("--warmup", type=int,
                        help="untimed calls after the tracing call, before the autoranged estimate "
                             "of each call's time (default 0)")
    parser.add_argument("--tol", type=float, default=1e-4, help="agreement tolerance")
    parser.add_argument("--reference-rows", type=int, default=4,
                        help="rows also checked against ours in float64 (0: skip)")
    parser.add_argument("--threads", type=int,
                        help="set TF's intra-op thread count (default: TF's choice)")
    parser.add_argument("--no-in-graph", action="store_true",
                        help="skip timing fwd+grad inside one graph (cheap cases only)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time ours' angle map and raw ops separately")
    parser.add_argument("--no-layer-path", action="store_true",
                        help="skip the layer-path report (QuantumLayer native vs tfq)")
    args = parser.parse_args(argv)
    cases = parse_cases(args.cases)

    if args.threads and tf.config.threading.get_intra_op_parallelism_threads() != args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)  # main(argv) use
    threads = thread_info()
    load_before = os.getloadavg()
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "threads": threads,
        "tensorflow": tf.__version__,
        "tensorflow_quantum": tfq.__version__,
        "cirq": cirq.__version__,
        "qkeras_hybrid": qkeras_hybrid.__version__,
        "python": platform.python_version(),
        "argv": sys.argv[1:] if argv is None else list(argv),
        "loadavg_before": load_before,
    }
    print(f"CPU: {meta['cpu_model']} ({threads['usable_cpus']} usable CPUs, "
          f"os.cpu_count()={threads['os_cpu_count']})")
    print(
        f"TF threads: intra-op {threads['intra_op_threads']} "
        f"(setting {threads['intra_op_setting']}{' = auto' if not threads['intra_op_setting'] else ''}), "
        f"inter-op {threads['inter_op_threads']} "
        f"(setting {threads['inter_op_setting']}{' = auto' if not threads['inter_op_setting'] else ''})"
    )
    print(f"TF {tf.__version__}, TFQ {tfq.__version__}, cirq {cirq.__version__}, "
          f"qkeras_hybrid {qkeras_hybrid.__version__}; "
          f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    meta["build"] = build = build_provenance()
    dirty = build.get("uncommitted_source_files")
    print(f"op library sha256 {build.get('op_library_sha256', '?')} built "
          f"{build.get('op_library_mtime', '?')}; git {build.get('git_head', '?')}"
          + (f" + {len(dirty)} uncommitted source files" if dirty else ""))
    print("Times are medians of interleaved repetitions, in milliseconds.", flush=True)

    t_start = time.perf_counter()
    results = []
    budget = args.budget if args.budget is not None else (60.0 if args.quick else 150.0)
    aborted = None
    for i, (n, layers, batch) in enumerate(cases):
        spent = time.perf_counter() - t_start
        share = max(0.0, budget - spent) / (len(cases) - i)
        try:
            results.append(bench_case(n, layers, batch, args, share))
        except AgreementError as e:
            aborted = str(e)
            break
    layer_results = []
    if not args.no_layer_path and not aborted:
        layer_start = time.perf_counter()
        for i, (n, layers, batch) in enumerate(cases):
            spent = time.perf_counter() - layer_start
            share = max(0.0, budget - spent) / (len(cases) - i)
            layer_results.append(bench_layer_case(n, layers, batch, args, share))
    total_s = time.perf_counter() - t_start
    meta["loadavg_after"] = os.getloadavg()
    meta["total_s"] = total_s
    failures = [r["agreement_failure"] for r in results + layer_results if r.get("agreement_failure")]
    if aborted:
        failures.append(aborted)
    meta["agreement_failures"] = failures
    meta["aborted"] = aborted

    print()
    if results:
        print_table(results)
        print("in one graph: the fwd+grad ratio with both run repeatedly inside one tf.function "
              "(what a training step pays per op; TF's per-call dispatch left out)")
    if layer_results:
        print()
        print_layer_table(layer_results)
    if aborted:
        skipped = [f"n={c[0]} L={c[1]} B={c[2]}" for c in cases[len(results):]]
        print(f"\n!!! ABORTED: {aborted}; not timed: {', '.join(skipped)}. "
              "(--keep-going times such cases anyway.)")
    la = meta["loadavg_after"]
    print(f"\nTotal {total_s:.0f} s; load average now {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} "
          f"on {threads['usable_cpus']} CPUs.")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "layer_results": layer_results}, f, indent=2)
        print(f"Wrote {args.json}")
    if failures:
        print(f"\n!!! {len(failures)} agreement failure(s): exit status 2", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
