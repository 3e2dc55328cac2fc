"""Benchmark: QuantumConv2D on the native op vs the same layer on TensorFlow Quantum's ops.

On a batch of Tetris images (3x3x1) it times forward + gradient (of the sum of
the outputs, with respect to the input pixels and the filter weights) of

  * ours: `qkeras_hybrid.layers.QuantumConv2D(filters, 2x2, depth)`,
  * TFQ:  the same computation built on TFQ's ops: the same windows, one row
          of symbol values per (image, window, channel, filter), sent in one
          call to `tfq.get_expectation_op()` made differentiable by
          `tfq.differentiators.Adjoint()`; the filter circuit is converted
          with `tfq.convert_to_tensor` once, outside the timed region.

Both run in `tf.function`s with fixed input signatures. Before timing, each
case checks that both agree on outputs and gradients (relative to each tensor's largest entry; exit status 2 if not).
It reports medians over interleaved repetitions (each timed call after an
untimed one of the same function), as windows per second (one
window = one circuit run: an image window of one channel through one filter)
and the ratio TFQ time / our time.

Usage (from the repository root):
  TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/qconv_bench.py
  ... benchmarks/qconv_bench.py --batches 32,256 --filters 5 --depth 4 --repeats 20
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_quantum as tfq  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import qkeras_hybrid  # noqa: E402,F401  (registers the simulator op)
from qkeras_hybrid.datasets import load_tetris  # noqa: E402
from qkeras_hybrid.layers import QuantumConv2D  # noqa: E402


def tfq_conv_fn(layer):
    """The layer's computation on TFQ's ops: (images, weights) -> outputs, same layout."""
    rows, cols = layer.kernel_size
    k, filters, depth = layer.num_qubits, layer.filters, layer.depth
    program = tfq.convert_to_tensor([layer.circuit])
    pauli = tfq.convert_to_tensor([layer.observables])
    symbol_names = tf.constant(layer.input_symbols + layer.weight_symbols)
    expectation = tfq.differentiators.Adjoint().generate_differentiable_op(analytic_op=tfq.get_expectation_op())

    def conv(images, weights):
        patches = tf.image.extract_patches(
            images, sizes=[1, rows, cols, 1], strides=[1, *layer.strides, 1], rates=[1, 1, 1, 1],
            padding=layer.padding.upper(),
        )
        shape = tf.shape(patches)
        batch, out_h, out_w = shape[0], shape[1], shape[2]
        channels = images.shape[-1]
        windows = tf.transpose(tf.reshape(patches, [batch, out_h, out_w, k, channels]), [0, 1, 2, 4, 3])
        num_windows = batch * out_h * out_w * channels
        pixels = tf.broadcast_to(tf.reshape(windows, [num_windows, 1, k]), [num_windows, filters, k])
        flat_weights = tf.broadcast_to(tf.reshape(weights, [1, filters, depth * k]), [num_windows, filters, depth * k])
        values = tf.reshape(tf.concat([pixels, flat_weights], axis=-1), [-1, k + depth * k])
        count = tf.shape(values)[0]
        out = expectation(tf.tile(program, [count]), symbol_names, values, tf.tile(pauli, [count, 1]))
        return tf.reshape(out, [batch, out_h, out_w, channels * filters])

    return conv


def build_case(batch, filters, depth, seed=0):
    (x_train, _), _ = load_tetris(seed=seed)
    images = tf.constant(np.resize(x_train, (batch, 3, 3, 1)))
    layer = QuantumConv2D(filters, 2, depth=depth)
    layer.build(images.shape)
    weights = layer.quantum_weights
    spec = tf.TensorSpec(images.shape, tf.float32)

    @tf.function(input_signature=[spec])
    def ours(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            total = tf.reduce_sum(out)
        gx, gw = tape.gradient(total, [x, weights.value])
        return out, gx, gw

    conv = tfq_conv_fn(layer)

    @tf.function(input_signature=[spec])
    def theirs(x):
        w = tf.convert_to_tensor(weights.value)
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            out = conv(x, w)
            total = tf.reduce_sum(out)
        gx, gw = tape.gradient(total, [x, w])
        return out, gx, gw

    windows = int(np.prod(layer.compute_output_shape(images.shape)))
    return images, ours, theirs, windows


def check_agreement(images, ours, theirs, tol):
    """Largest difference of outputs and gradients, relative to each tensor's scale.

    The weight gradients sum float32 terms over every window, so they are
    compared relative to their largest entry (tens, at batch 256)."""
    worst = 0.0
    for a, b in zip(ours(images), theirs(images)):
        scale = max(1.0, float(np.max(np.abs(a.numpy()))))
        worst = max(worst, float(np.max(np.abs(a.numpy() - b.numpy()))) / scale)
    return worst, worst <= tol


def _run(fn, args):
    for t in fn(*args):
        t.numpy()


def time_interleaved(fns, args, repeats):
    """Per function, `repeats` timings, interleaved in rotating order.

    Each timed call follows an untimed call of the same function: TFQ's
    simulator leaves its worker threads spinning for a while after a call,
    which would otherwise be charged to whichever function runs next."""
    names = list(fns)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            _run(fns[name], args)
            start = time.perf_counter()
            _run(fns[name], args)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="32,256", help="comma-separated numbers of images per batch")
    parser.add_argument("--filters", type=int, default=5)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)

    print(f"QuantumConv2D forward+gradient, 2x2 windows, {args.filters} filters, depth {args.depth}, "
          f"Tetris 3x3 images; medians of {args.repeats} interleaved repetitions; load average "
          f"{os.getloadavg()[0]:.2f}; TF intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))}")
    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        images, ours, theirs, windows = build_case(batch, args.filters, args.depth)
        worst, ok = check_agreement(images, ours, theirs, args.tol)
        if not ok:
            print(f"batch {batch}: ours and TFQ disagree by {worst:.3g} (relative) > {args.tol}; not timing")
            sys.exit(2)
        time_interleaved({"ours": ours, "tfq": theirs}, (images,), 3)  # warm-up
        times = time_interleaved({"ours": ours, "tfq": theirs}, (images,), args.repeats)
        ours_s, tfq_s = statistics.median(times["ours"]), statistics.median(times["tfq"])
        row = {
            "batch": batch,
            "windows": windows,
            "max_abs_difference": worst,
            "ours_ms": 1e3 * ours_s,
            "tfq_ms": 1e3 * tfq_s,
            "ours_windows_per_s": windows / ours_s,
            "tfq_windows_per_s": windows / tfq_s,
            "ratio": tfq_s / ours_s,
        }
        results.append(row)
        print(f"batch {batch:5d} ({windows} windows, agree within {worst:.1e} relative): "
              f"TFQ {row['tfq_ms']:.2f} ms = {row['tfq_windows_per_s']:,.0f} windows/s, "
              f"ours {row['ours_ms']:.2f} ms = {row['ours_windows_per_s']:,.0f} windows/s, "
              f"ratio {row['ratio']:.1f}x")
    print()
    print("| images | windows | TFQ fwd+grad | ours fwd+grad | TFQ windows/s | ours windows/s | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['batch']} | {r['windows']} | {r['tfq_ms']:.2f} ms | {r['ours_ms']:.2f} ms | "
              f"{r['tfq_windows_per_s']:,.0f} | {r['ours_windows_per_s']:,.0f} | **{r['ratio']:.1f}x** |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
