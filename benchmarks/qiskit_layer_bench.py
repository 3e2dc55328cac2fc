"""The Qiskit textbook network trained with QiskitLayer vs the native simulator.

Protocol of the seed (the Qiskit textbook's hybrid network): MNIST 0s and 1s,
200 training images, batch size 1, Adam 1e-3. The network of
`examples/qiskit_textbook_mnist.py` is trained with its circuit head run

- by `QiskitLayer` on Aer with 100 shots and parameter-shift gradients
  (one Aer job per training step: the forward circuit and its two shifted
  copies, 100 shots each), and
- by `QuantumLayer` on our native simulator (exact P(1), adjoint gradient),

in the same process, interleaved, each with Keras's default `steps_per_execution=1`
(one Python-side dispatch per image) and with `steps_per_execution=20` (Keras's
knob for small steps: still one image and one Adam update per step, but 20
steps per graph call); the figure is the seconds per epoch, the
median of the epochs after the first (which traces), best of the repeats (the
median over the repeats is printed too: the machine may be shared). For
reference, the textbook's own PyTorch + Qiskit implementation took 0.96-1.08
s/epoch on this machine.

    python benchmarks/qiskit_layer_bench.py [--epochs 4] [--repeats 2] [--steps-per-execution 1,20]
"""

import argparse
import importlib.util
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_example():
    path = os.path.join(REPO, "examples", "qiskit_textbook_mnist.py")
    spec = importlib.util.spec_from_file_location("qiskit_textbook_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def seconds_per_epoch(backend, data, epochs, seed, steps_per_execution=1):
    (x_train, y_train), _ = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = example.compile_model(example.build_model(backend, shots=100, seed=seed),
                                  steps_per_execution=steps_per_execution)
    timer = example.EpochTimer()
    cpu_start = time.process_time()
    model.fit(x_train, y_train, batch_size=1, epochs=epochs, callbacks=[timer], verbose=0)
    return {"epoch_seconds": timer.seconds, "median": statistics.median(timer.seconds[1:]),
            "cpu_seconds": time.process_time() - cpu_start}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, the first excluded (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per head; the best median counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-execution", default="1,20",
                        help="comma-separated values of Keras's steps_per_execution to run (default 1,20)")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2: the first epoch is excluded as warm-up")
    from qkeras_hybrid.datasets import load_digits

    data = load_digits(example.DIGITS, train_per_class=100, test_per_class=50, seed=args.seed)
    load_start = os.getloadavg()[0]
    print(f"qiskit_layer_bench: textbook network, 200 images, batch 1, Adam 1e-3; s/epoch = median of epochs "
          f"2..{args.epochs}, best of {args.repeats} runs; TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, "
          f"load average {load_start:.1f}")
    heads = [(backend, int(spe)) for spe in args.steps_per_execution.split(",")
             for backend in ("qiskit", "native")]
    runs = {head: [] for head in heads}
    for _ in range(args.repeats):
        for head in heads:  # interleaved, so a change of load hits all
            runs[head].append(seconds_per_epoch(head[0], data, args.epochs, args.seed, steps_per_execution=head[1]))
    best = {head: min(r["median"] for r in rs) for head, rs in runs.items()}
    typical = {head: statistics.median(r["median"] for r in rs) for head, rs in runs.items()}
    labels = {"qiskit": "QiskitLayer (Aer, 100 shots, param. shift)", "native": "QuantumLayer (native, exact, adjoint)"}
    print(f"{'head':<42} | {'steps/exec':>10} | {'s/epoch':>8} | {'ms/step':>8} | {'median of runs':>14}")
    for backend, spe in heads:
        print(f"{labels[backend]:<42} | {spe:>10} | {best[backend, spe]:>8.2f} | {5 * best[backend, spe]:>8.1f} | "
              f"{typical[backend, spe]:>14.2f}")
    for spe in sorted({spe for _, spe in heads}):
        print(f"steps_per_execution={spe}: QiskitLayer / native: {best['qiskit', spe] / best['native', spe]:.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return {"best": best, "median_of_runs": typical, "runs": runs}


if __name__ == "__main__":
    main()
