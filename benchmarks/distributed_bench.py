"""Benchmark: data-parallel training throughput with 1 and 2 workers (MultiWorkerMirroredStrategy on localhost).

For each model it starts N worker processes on this machine (as
examples/distributed_training.py does) and each trains with Keras's
`Model.fit` under `tf.distribute.MultiWorkerMirroredStrategy`, with a fixed
batch per worker (so the global batch is N times it: weak scaling). It reports

  * samples/s: global batch / median step time, over the timed steps (after a
    warm-up epoch that traces the step);
  * the all-reduce: the median time of one all-reduce (sum) of tensors shaped
    like the model's trainable weights, the collective the strategy runs on
    the gradients of every step, timed in the same workers right after
    training; and its share of the step;
  * for N > 1, the same N processes training independently (no strategy, no
    collective, the same per-process batch) at the same time: the machine is
    as busy as with N workers, so the difference of the step times is what
    keeping the workers in step costs (the all-reduces of the gradients and
    of the logs, and waiting for the slower worker).

Models:
  * hqcnn:   examples/hqcnn_probability.py's training model (CNN -> 1 qubit,
             100 shots, parameter-shift gradient -> Dense(2)) on 28x28 MNIST;
  * qconv12: QuantumConv2D(1 filter, 3x4 kernel = 12 qubits, depth 2) on MNIST
             shrunk to 8x8 (30 windows of 12 qubits per image) -> Dense(2).

Usage (from the repository root):
  TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/distributed_bench.py
  ... benchmarks/distributed_bench.py --models qconv12 --workers 1,2 --threads 1 --steps 10

The machine's load average before and after each run is printed: on a shared
machine the numbers say as much about the other processes as about ours.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="hqcnn,qconv12", help="comma-separated: hqcnn, qconv12")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch per worker (default 32)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default 8)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TF intra-op threads per worker (default 0: TensorFlow's choice, all cores)")
    parser.add_argument("--allreduce-repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every case this many times, interleaved, and report medians (default 1)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)  # set for the workers
    parser.add_argument("--independent", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_model(name):
    import keras

    if name == "hqcnn":
        sys.path.insert(0, os.path.join(_REPO, "examples"))
        import hqcnn_probability

        model = hqcnn_probability.build_models()[0]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif name == "qconv12":
        from qkeras_hybrid.layers import QuantumConv2D

        model = keras.Sequential([
            keras.Input((8, 8, 1)),
            QuantumConv2D(filters=1, kernel_size=(3, 4), depth=2, name="qconv_12_qubits"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ], name="qconv12")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        raise ValueError(f"unknown model {name!r}: expected hqcnn or qconv12")
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    return model


def images(name, count):
    import tensorflow as tf

    from qkeras_hybrid.datasets import load_digits

    (x, y), _ = load_digits((0, 1), count // 2, 1, seed=0)
    if name == "qconv12":
        x = tf.image.resize(x, (8, 8)).numpy() * 3.1416  # pixels as angles
    return x, y


def worker(args):
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.independent:  # one of N unrelated processes: no cluster, no strategy
        index = json.loads(os.environ.pop("TF_CONFIG"))["task"]["index"]
        strategy = tf.distribute.get_strategy()
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    from qkeras_hybrid import distribute

    name = args.models
    workers = strategy.num_replicas_in_sync
    global_batch = args.batch_size * workers
    x, y = images(name, 2 * global_batch)
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(global_batch)
    with strategy.scope():
        model = build_model(name)

    class StepTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # waits for the step: Keras runs steps asynchronously
            self.times.append(time.perf_counter())

    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # traces the step
    timer = StepTimes()
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[timer])
    fit_seconds = time.perf_counter() - start
    step_seconds = statistics.median(np.diff(timer.times))

    shapes = [v.shape for v in model.trainable_variables]
    report = {
        "model": name, "workers": workers, "batch_per_worker": args.batch_size, "global_batch": global_batch,
        "threads": args.threads or "default", "step_ms": 1e3 * step_seconds,
        "samples_per_s": global_batch / step_seconds,
        "samples_per_s_whole_fit": global_batch * args.steps / fit_seconds,
        "parameters": int(sum(np.prod(s) for s in shapes)),
    }
    if args.independent:
        with open(f"{args.worker_out}.{index}", "w") as f:
            json.dump(report, f)
        return

    @tf.function
    def all_reduce():
        def replica_fn():
            tensors = [tf.ones(shape) for shape in shapes]
            return tf.distribute.get_replica_context().all_reduce("SUM", tensors)

        return strategy.run(replica_fn)

    all_reduce()  # traces it
    times = []
    for _ in range(args.allreduce_repeats):
        t = time.perf_counter()
        result = all_reduce()
        float(tf.reduce_sum(strategy.experimental_local_results(result[0])[0]))  # waits for it
        times.append(time.perf_counter() - t)
    if distribute.worker_index(strategy) == 0:
        report["allreduce_ms"] = 1e3 * statistics.median(times) if workers > 1 else 0.0
        with open(args.worker_out, "w") as f:
            json.dump(report, f)


def run(distribute, tmp, args, name, workers, independent=False):
    """Launches the workers of one case; returns the chief's report (independent: the summed throughput)."""
    tag = f"{name}-{workers}{'-independent' if independent else ''}"
    out = os.path.join(tmp, tag + ".json")
    command = [sys.executable, os.path.abspath(__file__), "--models", name,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--threads", str(args.threads), "--allreduce-repeats", str(args.allreduce_repeats),
               "--worker-out", out] + (["--independent"] if independent else [])
    load_before = os.getloadavg()
    distribute.launch_local(command, workers, log_dir=os.path.join(tmp, "logs-" + tag))
    if independent:
        reports = []
        for index in range(workers):
            with open(f"{out}.{index}") as f:
                reports.append(json.load(f))
        report = dict(reports[0], workers=workers, independent=True, allreduce_ms=0.0,
                      step_ms=statistics.mean(r["step_ms"] for r in reports),
                      samples_per_s=sum(r["samples_per_s"] for r in reports),
                      samples_per_s_whole_fit=sum(r["samples_per_s_whole_fit"] for r in reports))
    else:
        with open(out) as f:
            report = json.load(f)
    report["loadavg_before"], report["loadavg_after"] = load_before, os.getloadavg()
    return report


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.worker_out:
        return worker(args)
    sys.path.insert(0, _REPO)
    from qkeras_hybrid import distribute

    print(f"{os.cpu_count()} CPUs; batch {args.batch_size} per worker; {args.steps} timed steps; "
          f"threads per worker: {args.threads or 'TensorFlow default'}")
    cases = [(name, workers, independent) for name in args.models.split(",")
             for workers in map(int, args.workers.split(",")) for independent in [False] + [True] * (workers > 1)]
    rounds = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for case in cases:
                rounds[case].append(run(distribute, tmp, args, *case))
                r = rounds[case][-1]
                print(f"  round {round_index + 1}: {r['model']} {r['workers']} "
                      f"{'independent' if case[2] else 'worker(s)'}: step {r['step_ms']:.1f} ms, "
                      f"load average {r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f}", flush=True)
    results = []
    for (name, workers, independent), reports in rounds.items():
        r = dict(min(reports, key=lambda x: abs(x["step_ms"] - statistics.median(y["step_ms"] for y in reports))))
        r["step_ms_rounds"] = [x["step_ms"] for x in reports]
        r["allreduce_ms"] = statistics.median(x["allreduce_ms"] for x in reports)
        results.append(r)
        what = f"{workers} independent" if independent else f"{workers} worker(s)"
        line = (f"{name:8s} {what:14s}: {r['samples_per_s']:8.1f} samples/s, step {r['step_ms']:6.1f} ms "
                f"(batch {r['batch_per_worker']} per process)")
        if not independent and workers > 1:
            line += (f"; all-reduce of {r['parameters']} weights {r['allreduce_ms']:.2f} ms "
                     f"= {r['allreduce_ms'] / r['step_ms']:.1%} of a step")
        if independent:
            synced = results[-2]
            line += f"; keeping {workers} workers in step costs {synced['step_ms'] - r['step_ms']:.1f} ms/step"
        loads = [x["loadavg_before"][0] for x in reports] + [x["loadavg_after"][0] for x in reports]
        print(line + f"; load average {min(loads):.1f}-{max(loads):.1f}", flush=True)
    for name in args.models.split(","):
        runs = {r["workers"]: r for r in results if r["model"] == name and not r.get("independent")}
        if 1 in runs and 2 in runs:
            print(f"{name}: 2 workers / 1 worker throughput = "
                  f"{runs[2]['samples_per_s'] / runs[1]['samples_per_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
