"""End-to-end benchmark of the hybrid MNIST network (examples/hybrid_mnist.py).

Protocol of the seed experiments: digits 0 and 1, 200 training images (100
per digit), batch size 1, Adam with learning rate 1e-3; the figure is the
seconds per epoch, the median over the epochs after the first (the first
traces and compiles the train step). Every configuration is run for the
hybrid network and for its classical-only twin (the circuit replaced by a
Dense(1, tanh) -> two-probability head, i.e. a sigmoid), in the same
process, and the ratio hybrid / classical is printed. Configurations:
`steps_per_execution` 1 (Keras's default: one Python-driven step per batch)
and larger values (Keras runs that many steps inside one `tf.function`).

Then "idiomatic batched training": batch 32, evaluated on the held-out
digits after every epoch, stopped at the first epoch whose test accuracy is
>= 98 %; the figure is the wall-clock seconds from the start of `fit`
(tracing included) to that point.

Last, where a batch-1 step spends its time: the simulator op alone
(forward + adjoint gradient), the whole QuantumLayer, and Keras's per-step
overhead (the step time with steps_per_execution=1 minus that with the
largest value).

    python benchmarks/hqcnn_bench.py [--epochs 5] [--json results.json]
"""

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import qkeras_hybrid  # noqa: E402
from qkeras_hybrid.datasets import load_digits  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_SECONDS_PER_EPOCH = 0.30
TARGET_ACCURACY = 0.98


def _load_demo():
    spec = importlib.util.spec_from_file_location("hybrid_mnist", os.path.join(REPO, "examples", "hybrid_mnist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock and process-CPU seconds of each epoch (no validation in these runs).

    The CPU seconds (all of the process's threads) tell contention apart from
    work: on a machine others are loading, wall time grows, CPU time hardly.
    """

    def __init__(self):
        super().__init__()
        self.seconds, self.cpu_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)


class StopAtAccuracy(keras.callbacks.Callback):
    """Stops `fit` at the first epoch whose val_accuracy reaches `target`; records when."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.reached_epoch = None
        self.reached_seconds = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs.get("val_accuracy", 0.0) >= self.target:
            self.reached_epoch = epoch + 1
            self.reached_seconds = time.perf_counter() - self._start
            self.model.stop_training = True


def seconds_per_epoch(quantum, steps_per_execution, data, epochs, seed):
    """Trains under the seed protocol; per-epoch wall and CPU seconds, final loss."""
    (x_train, y_train), _ = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = demo.compile_model(demo.build_model(quantum=quantum), 1e-3, steps_per_execution=steps_per_execution)
    timer = EpochTimer()
    history = model.fit(x_train, y_train, batch_size=1, epochs=epochs, callbacks=[timer], verbose=0)
    return {
        "epoch_seconds": timer.seconds,
        "epoch_cpu_seconds": timer.cpu_seconds,
        "median": statistics.median(timer.seconds[1:]),
        "median_cpu": statistics.median(timer.cpu_seconds[1:]),
        "final_loss": float(history.history["loss"][-1]),
    }


def time_to_accuracy(quantum, data, batch_size, max_epochs, seed, warm):
    """Seconds of `fit` (validation included) until the test accuracy reaches the target.

    With `warm`, the train and test steps are traced first by a throw-away
    epoch, after which the weights and the optimizer state are restored, so
    the figure is training alone; otherwise it includes tracing, as a user's
    first `fit` does.
    """
    (x_train, y_train), (x_test, y_test) = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = demo.compile_model(demo.build_model(quantum=quantum), 1e-3)
    fit_args = dict(batch_size=batch_size, validation_data=(x_test, y_test), verbose=0)
    if warm:
        initial = model.get_weights()
        model.fit(x_train, y_train, epochs=1, **fit_args)  # every batch shape, train and test
        model.set_weights(initial)
        learning_rate = getattr(model.optimizer, "_learning_rate", None)
        for variable in model.optimizer.variables:  # iterations and Adam's moments
            if variable is not learning_rate:
                variable.assign(tf.zeros_like(variable))
    stop = StopAtAccuracy(TARGET_ACCURACY)
    history = model.fit(x_train, y_train, epochs=max_epochs, callbacks=[stop], **fit_args)
    return {
        "seconds": stop.reached_seconds,
        "epochs": stop.reached_epoch,
        "test_accuracy": float(history.history["val_accuracy"][-1]),
    }


def _loop_microseconds(fn, iterations=200, repeats=15):
    """Microseconds per iteration of `fn` run `iterations` times inside one tf.function.

    The best of `repeats` loops: the least disturbed by other processes.
    """

    @tf.function
    def loop():
        return tf.foldl(lambda acc, _: acc + fn(), tf.range(iterations), initializer=tf.constant(0.0))

    loop()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loop().numpy()
        times.append(time.perf_counter() - start)
    return 1e6 * min(times) / iterations


def quantum_breakdown():
    """Microseconds per batch-1 call: the raw op and the whole layer, forward + gradient."""
    keras.backend.clear_session()
    layer = demo.quantum_head()
    x = tf.constant([[0.3]])
    layer(x)
    compiled = layer.compiled
    angles = compiled.angles(tf.concat([x, tf.zeros((1, len(layer.weight_symbols)))], axis=1))

    def op_forward_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(angles)
            out = qkeras_hybrid.ops.expectation(*compiled.program_inputs, angles)
        return tf.reduce_sum(tape.gradient(out, angles))

    def layer_forward_and_grad():
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
        return tf.reduce_sum(tape.gradient(out, x))

    def empty():
        return tf.constant(0.0)

    return {
        "loop_overhead_us": _loop_microseconds(empty),
        "op_forward_and_grad_us": _loop_microseconds(op_forward_and_grad),
        "layer_forward_and_grad_us": _loop_microseconds(layer_forward_and_grad),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (the first is excluded; default 5)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per configuration; the best run's median is reported (default 2)")
    parser.add_argument("--steps-per-execution", default="1,50,200",
                        help="comma-separated steps_per_execution values (default 1,50,200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batched-batch-size", type=int, default=32)
    parser.add_argument("--batched-max-epochs", type=int, default=30)
    parser.add_argument("--skip-batched", action="store_true", help="skip the time-to-98%% runs")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    return parser.parse_args(argv)


def _best(runs):
    """The run with the smallest median: the one least disturbed by other processes."""
    return min(runs, key=lambda run: run["median"])


def per_epoch_table(spe_values, data, epochs, repeats, seed):
    rows = []
    for spe in spe_values:
        runs = {True: [], False: []}
        for _ in range(repeats):
            for quantum in (True, False):  # interleaved, so a change of load hits both alike
                runs[quantum].append(seconds_per_epoch(quantum, spe, data, epochs, seed))
        hybrid, classical = _best(runs[True]), _best(runs[False])
        rows.append({
            "steps_per_execution": spe,
            "hybrid_s_per_epoch": hybrid["median"],
            "classical_s_per_epoch": classical["median"],
            "ratio": hybrid["median"] / classical["median"],
            "hybrid_cpu_s_per_epoch": hybrid["median_cpu"],
            "classical_cpu_s_per_epoch": classical["median_cpu"],
            "hybrid_runs": runs[True],
            "classical_runs": runs[False],
        })
    return rows


def print_per_epoch_table(rows):
    header = (f"{'steps_per_execution':>19} | {'hybrid s/epoch':>14} | {'classical s/epoch':>17} | "
              f"{'hybrid/classical':>16} | {'hybrid ms/step':>14} | {'CPU s/epoch hyb. / cls.':>23} | "
              f"<= {TARGET_SECONDS_PER_EPOCH:.2f} s?")
    print(header)
    print("-" * len(header))
    for row in rows:
        verdict = "yes" if row["hybrid_s_per_epoch"] <= TARGET_SECONDS_PER_EPOCH else "no"
        cpu = f"{row['hybrid_cpu_s_per_epoch']:.3f} / {row['classical_cpu_s_per_epoch']:.3f}"
        print(f"{row['steps_per_execution']:>19} | {row['hybrid_s_per_epoch']:>14.3f} | "
              f"{row['classical_s_per_epoch']:>17.3f} | {row['ratio']:>16.2f} | "
              f"{1000 * row['hybrid_s_per_epoch'] / 200:>14.2f} | {cpu:>23} | {verdict}")


def batched_table(data, batch_size, max_epochs, seed):
    print(f"\nIdiomatic batched training: batch {batch_size}, Adam 1e-3, accuracy on the 100 held-out digits "
          f"after every epoch, stop at >= {TARGET_ACCURACY:.0%}")
    print(f"{'network':>9} | {'start':>17} | {'seconds to 98%':>14} | {'epochs':>6} | {'test accuracy':>13}")
    results = {}
    for warm, start in ((False, "cold (tracing)"), (True, "warm (traced)")):
        for quantum, name in ((True, "hybrid"), (False, "classical")):
            result = time_to_accuracy(quantum, data, batch_size, max_epochs, seed, warm)
            results[f"{name}_{'warm' if warm else 'cold'}"] = result
            seconds = "not reached" if result["seconds"] is None else f"{result['seconds']:.2f}"
            print(f"{name:>9} | {start:>17} | {seconds:>14} | {result['epochs'] or '-':>6} | "
                  f"{result['test_accuracy']:>13.2%}")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2: the first epoch is excluded as warm-up")
    spe_values = [int(v) for v in args.steps_per_execution.split(",")]
    data = load_digits((0, 1), train_per_class=100, test_per_class=50, seed=args.seed)
    load_start = os.getloadavg()[0]
    print(f"hqcnn_bench: hybrid MNIST network, 200 training images, batch 1, Adam 1e-3; s/epoch = median of "
          f"epochs 2..{args.epochs}, best of {args.repeats} runs")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"load average {load_start:.1f} at start\n")

    rows = per_epoch_table(spe_values, data, args.epochs, args.repeats, args.seed)
    print_per_epoch_table(rows)
    batched = {} if args.skip_batched else batched_table(
        data, args.batched_batch_size, args.batched_max_epochs, args.seed)

    breakdown = quantum_breakdown()
    first, last = rows[0], rows[-1]
    print("\nWhere a batch-1 train step goes (microseconds):")
    print(f"    simulator op alone, forward + adjoint gradient:  {breakdown['op_forward_and_grad_us']:7.1f}")
    print(f"    QuantumLayer, forward + gradient:                {breakdown['layer_forward_and_grad_us']:7.1f}")
    print(f"      (both timed in a 200-iteration tf.function loop whose empty iteration costs "
          f"{breakdown['loop_overhead_us']:.1f})")
    for row in (first, last) if first is not last else (last,):
        spe = row["steps_per_execution"]
        print(f"    whole train step, steps_per_execution={spe:<4}    hybrid {1e6 * row['hybrid_s_per_epoch'] / 200:7.0f}"
              f", classical {1e6 * row['classical_s_per_epoch'] / 200:7.0f}"
              f"  (CPU: {1e6 * row['hybrid_cpu_s_per_epoch'] / 200:.0f}, "
              f"{1e6 * row['classical_cpu_s_per_epoch'] / 200:.0f})")
    keras_overhead_us = None
    if first is not last:
        keras_overhead_us = 1e6 * (first["hybrid_s_per_epoch"] - last["hybrid_s_per_epoch"]) / 200
        print(f"    Keras per-step dispatch (spe={first['steps_per_execution']} minus spe="
              f"{last['steps_per_execution']}, hybrid):  {keras_overhead_us:7.0f}")
    load_end = os.getloadavg()[0]
    print(f"load average {load_end:.1f} at end (above {os.cpu_count()}, other processes were competing "
          "for the CPUs and wall times are inflated)" if max(load_start, load_end) > os.cpu_count()
          else f"load average {load_end:.1f} at end")

    if args.json:
        results = {
            "protocol": {"train_images": 200, "batch_size": 1, "optimizer": "Adam", "learning_rate": 1e-3,
                         "epochs": args.epochs, "repeats": args.repeats,
                         "statistic": "median of the epochs after the first, best of the repeats",
                         "seed": args.seed},
            "environment": {"tensorflow": tf.__version__, "keras": keras.__version__, "cpus": os.cpu_count(),
                            "python": platform.python_version(), "load_average": [load_start, load_end]},
            "target_seconds_per_epoch": TARGET_SECONDS_PER_EPOCH,
            "per_epoch": rows,
            "batched_time_to_98": batched,
            "breakdown_us": breakdown,
            "keras_per_step_dispatch_us": keras_overhead_us,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"results written to {args.json}")
    return rows


if __name__ == "__main__":
    main()
