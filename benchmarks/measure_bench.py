"""Benchmark: the native engine's measurement ops (issue 14, item 7).

The hardware-efficient circuit of op_bench.py on n qubits: Ry(x_i) encoding,
then L layers of [Ry(w_{l,i}) on every qubit, CNOT chain i -> i+1], <Z_i> on
every qubit, float32. Timed as medians over interleaved repetitions:

  1. sampled expectations, 1000 shots per term, forward:
       ours: CompiledCircuit.sampled_expectation(values, 1000, seed) in a
             tf.function (the Z_i commute qubit-wise, so they share one
             setting of 1000 shots: each <Z_i> is a mean of 1000 shots);
       TFQ:  tfq.get_sampled_expectation_op() with num_samples 1000 per term.
  2. parameter-shift gradient with 1000 shots, forward + d sum / d values
     ([B, S], all symbols):
       ours: CompiledCircuit.sampled_expectation(..., "parameter_shift"),
             the path QuantumLayer(shots=1000) takes;
       TFQ:  tfq.differentiators.ParameterShift().generate_differentiable_op(
             sampled_op=tfq.get_sampled_expectation_op()), as
             tfq.layers.SampledExpectation builds it.
     at (n, L, B) = (4, 4, 256) and (10, 5, 64); the issue's goal is >= 20x
     for both.
  3. ProbabilityLayer (all n qubits, exact, adjoint gradient) vs
     QuantumLayer with the n <Z_i>, forward + gradient of a random weighting
     of the outputs w.r.t. inputs and weights, at (10, 5, 256); goal: the
     ProbabilityLayer within 1.5x of the QuantumLayer.

Before timing, the sampled results are checked statistically against the
exact values (float64 adjoint): forward estimates must have z-scores with
|mean| < 0.25 and RMS in [0.8, 1.2]; gradient estimates must be unbiased
(|mean error| within 5 standard errors) and ours' and TFQ's RMS errors
within a factor 1.5 of each other (the same estimator). The exit status is
2 if a check fails.

Usage (from the repository root):
  TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/measure_bench.py
  ... benchmarks/measure_bench.py --quick --json /tmp/measure.json
"""

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # op_bench adds the repository
import op_bench  # noqa: E402  (the circuit, timing and environment helpers)
import tensorflow_quantum as tfq  # noqa: E402

import qkeras_hybrid  # noqa: E402

SHOTS = 1000
SAMPLED_CASES = [(4, 4, 256), (10, 5, 64)]
PROBABILITY_CASE = (10, 5, 256)
GOALS = {"sampled_fwd": 20.0, "shift_grad": 20.0, "probability_vs_quantum": 1.5}


class CheckError(RuntimeError):
    """A statistical agreement check failed."""


def exact(cc, values):
    """<O> [B, O] and d sum <O> / d values [B, S], float64 adjoint."""
    return op_bench.run(op_bench.with_gradient(lambda v: cc.expectation(v, tf.float64)), tf.cast(values, tf.float64))


def check_forward(name, estimate, exact_values, shots):
    sigma = np.sqrt(np.maximum(1.0 - exact_values**2, 1e-6) / shots)
    z = (np.asarray(estimate, np.float64) - exact_values) / sigma
    mean, rms = float(np.mean(z)), float(np.sqrt(np.mean(z**2)))
    ok = bool(abs(mean) < 0.25 and 0.8 < rms < 1.2)
    return {"name": name, "z_mean": mean, "z_rms": rms, "ok": ok}


def check_gradient(name, estimate, exact_grad):
    err = np.asarray(estimate, np.float64) - exact_grad
    rms = float(np.sqrt(np.mean(err**2)))
    mean = float(np.mean(err))
    ok = bool(abs(mean) < 5 * rms / np.sqrt(err.size))
    return {"name": name, "err_mean": mean, "err_rms": rms, "ok": ok}


def build_sampled_case(n, layers, batch):
    circuit, _, symbols, observables = op_bench.hardware_efficient(n, layers)
    num_symbols = len(symbols)
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=symbols)
    spec = [tf.TensorSpec([None, num_symbols], tf.float32)]
    next_seed = op_bench.advancing_seed(1234)
    ours_fwd = tf.function(lambda values: cc.sampled_expectation(values, SHOTS, next_seed()), input_signature=spec)
    ours_grad = tf.function(op_bench.with_gradient(
        lambda values: cc.sampled_expectation(values, SHOTS, next_seed(), "parameter_shift")), input_signature=spec)
    tfq_fwd, tfq_grad = op_bench.tfq_sampled_functions(circuit, symbols, observables, batch, SHOTS,
                                                       tfq.get_sampled_expectation_op())
    fns = {"tfq_fwd": tfq_fwd, "ours_fwd": ours_fwd, "tfq_grad": tfq_grad, "ours_grad": ours_grad}
    return cc, num_symbols, fns


def timed(fns, x, reps, budget):
    """Medians (ms) over interleaved samples: `reps` of them, fewer (but at
    least 3) if a repetition of all would overrun `budget` seconds. Cheap calls
    (< 0.5 s) get an untimed settle call before each sample (op_bench.py's
    reason: the previous library's clean-up)."""
    est = {name: op_bench.autorange(fn, x) for name, fn in fns.items()}  # seconds per call
    settle = {k: est[k] < 0.5 for k in fns}
    number = {k: op_bench.calls_per_sample(est[k]) for k in fns}  # ~0.2 s of calls per sample
    per_rep = sum(est[k] * (number[k] + settle[k]) for k in fns)
    planned = min(reps, max(3, int(budget // max(per_rep, 1e-9))))
    if planned < reps:
        print(f"  one repetition takes ~{per_rep:.1f} s: {planned} repetitions (--budget {budget:g} s)", flush=True)
    samples = op_bench.time_interleaved(fns, x, planned, number, settle)
    return {k: {"median_ms": statistics.median(v) * 1e3, "samples_ms": sorted(s * 1e3 for s in v)}
            for k, v in samples.items()}


def bench_sampled(n, layers, batch, reps, budget):
    label = f"n={n} L={layers} B={batch}"
    print(f"\n[sampled, {SHOTS} shots per term, {label}]", flush=True)
    cc, num_symbols, fns = build_sampled_case(n, layers, batch)
    values = op_bench.random_values(99 + n, (batch, num_symbols))
    outputs = {k: op_bench.run(fn, values) for k, fn in fns.items()}  # traces; checked below
    e, g = exact(cc, values)
    checks = [check_forward("ours_fwd", outputs["ours_fwd"], e, SHOTS),
              check_forward("tfq_fwd", outputs["tfq_fwd"], e, SHOTS),
              check_forward("ours_grad (values)", outputs["ours_grad"][0], e, SHOTS),
              check_forward("tfq_grad (values)", outputs["tfq_grad"][0], e, SHOTS)]
    grad_checks = [check_gradient("ours_grad", outputs["ours_grad"][1], g),
                   check_gradient("tfq_grad", outputs["tfq_grad"][1], g)]
    rms_ratio = grad_checks[0]["err_rms"] / grad_checks[1]["err_rms"]
    for c in checks:
        print(f"  {c['name']:20s} z-scores vs exact: mean {c['z_mean']:+.3f} rms {c['z_rms']:.3f}"
              f"{'' if c['ok'] else '  FAIL'}", flush=True)
    for c in grad_checks:
        print(f"  {c['name']:20s} gradient error vs exact: mean {c['err_mean']:+.4f} rms {c['err_rms']:.4f}"
              f"{'' if c['ok'] else '  FAIL'}", flush=True)
    print(f"  gradient error rms ours/TFQ: {rms_ratio:.2f}", flush=True)
    failed = [c["name"] for c in checks + grad_checks if not c["ok"]]
    if not 1 / 1.5 < rms_ratio < 1.5:
        failed.append(f"gradient rms ratio {rms_ratio:.2f}")
    if failed:
        raise CheckError(f"{label}: statistical check failed: {failed}")

    timing = timed(fns, values, reps, budget)
    med = {k: v["median_ms"] for k, v in timing.items()}
    for k in fns:
        print(f"  {k:9s} median {med[k]:10.2f} ms", flush=True)
    result = {"case": {"n": n, "L": layers, "B": batch}, "timing": timing,
              "checks": checks + grad_checks, "grad_rms_ratio": rms_ratio,
              "fwd_ratio": med["tfq_fwd"] / med["ours_fwd"], "grad_ratio": med["tfq_grad"] / med["ours_grad"]}
    print(f"  TFQ/ours: forward {result['fwd_ratio']:.1f}x (goal >= {GOALS['sampled_fwd']:.0f}x), "
          f"shift-rule gradient {result['grad_ratio']:.1f}x (goal >= {GOALS['shift_grad']:.0f}x)", flush=True)
    return result


def bench_probability(n, layers, batch, reps, budget):
    from qkeras_hybrid.layers import ProbabilityLayer, QuantumLayer

    label = f"n={n} L={layers} B={batch}"
    print(f"\n[ProbabilityLayer vs QuantumLayer, exact, forward+gradient, {label}]", flush=True)
    circuit, qubits, symbols, observables = op_bench.hardware_efficient(n, layers)
    xs, ws = symbols[:n], symbols[n:]
    quantum = QuantumLayer(circuit, observables, input_symbols=xs, weight_symbols=ws)
    probability = ProbabilityLayer(circuit, qubits=qubits, input_symbols=xs, weight_symbols=ws)
    for layer in (quantum, probability):
        layer.build((None, n))
    probability.set_weights(quantum.get_weights())
    rng = np.random.default_rng(7)
    x = tf.constant(rng.uniform(-np.pi, np.pi, (batch, n)), tf.float32)
    # A random weighting of the outputs: the gradient of a plain sum of
    # probabilities is zero.
    mix = {"quantum": tf.constant(rng.normal(size=(1, n)), tf.float32),
           "probability": tf.constant(rng.normal(size=(1, 2**n)), tf.float32)}
    spec = [tf.TensorSpec([None, n], tf.float32)]
    fns = {}
    for name, layer in (("quantum", quantum), ("probability", probability)):
        def fwd_grad(x, layer=layer, mix=mix[name]):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = layer(x)
                total = tf.reduce_sum(out * mix)
            gx, gw = tape.gradient(total, [x, layer.trainable_variables[0]])
            return out, gx, gw

        fns[name] = tf.function(fwd_grad, input_signature=spec)
    outputs = {k: op_bench.run(fn, x) for k, fn in fns.items()}
    # Check: <Z_i> from the probabilities (qubit i is bit n-1-i of the index) equals QuantumLayer's.
    index = np.arange(2**n)
    signs = np.stack([1 - 2 * ((index >> (n - 1 - i)) & 1) for i in range(n)], axis=1)
    dev = float(np.max(np.abs(outputs["probability"][0] @ signs - outputs["quantum"][0])))
    print(f"  max |<Z_i> from probabilities - QuantumLayer|: {dev:.2e}", flush=True)
    if not dev < 1e-4:
        raise CheckError(f"{label}: probabilities disagree with QuantumLayer's <Z_i> by {dev:.2e}")
    timing = timed(fns, x, reps, budget)
    med = {k: v["median_ms"] for k, v in timing.items()}
    for k in fns:
        print(f"  {k:11s} median {med[k]:10.2f} ms", flush=True)
    ratio = med["probability"] / med["quantum"]
    print(f"  ProbabilityLayer/QuantumLayer: {ratio:.2f}x (goal <= {GOALS['probability_vs_quantum']}x)", flush=True)
    return {"case": {"n": n, "L": layers, "B": batch}, "timing": timing,
            "zi_deviation": dev, "ratio": ratio}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small cases, 2 repetitions")
    parser.add_argument("--reps", type=int, help="repetitions (default 9, --quick 2)")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds of timed calls per case, at least 3 repetitions (default 120)")
    parser.add_argument("--json", metavar="PATH", help="write the results to this JSON file")
    parser.add_argument("--threads", type=int, help="intra-op threads (read before TF starts)")
    args = parser.parse_args(argv)
    reps = args.reps or (2 if args.quick else 9)
    sampled_cases = [(3, 2, 32)] if args.quick else SAMPLED_CASES
    probability_case = (4, 2, 32) if args.quick else PROBABILITY_CASE
    report = {**op_bench.report_start(f"TF {tf.__version__}, TFQ {tfq.__version__}"),
              "shots": SHOTS, "goals": GOALS, "sampled": [], "probability": None}
    status = 0
    try:
        for n, layers, batch in sampled_cases:
            report["sampled"].append(bench_sampled(n, layers, batch, reps, args.budget))
        report["probability"] = bench_probability(*probability_case, reps, args.budget)
    except CheckError as e:
        print(f"\n!!! {e}", file=sys.stderr, flush=True)
        report["failure"] = str(e)
        status = 2
    op_bench.report_end(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
