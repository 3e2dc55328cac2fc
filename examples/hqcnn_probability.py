"""VQNet 2.0's HQCNN read-out: a CNN whose last neuron drives one qubit, read as P(|1>) from 100 shots.

The hybrid quantum-classical CNN of the VQNet 2.0 appendix (after the Qiskit
textbook's chapter) classifies MNIST 0s and 1s: a small CNN reduces each
image to one number x, the one-qubit circuit H, Ry(x) runs on it, the qubit
is measured 100 times and the frequency of |1> (its `qop_pmeasure`) feeds a
Linear(1, 2) head:

    Conv2D(6, 5x5, relu) -> MaxPool(2) -> Conv2D(16, 5x5, relu) -> MaxPool(2)
    -> Dropout -> Flatten -> Dense(64, relu) -> Dense(1) = x
    -> H, Ry(x), 100 shots -> P(|1>) -> Dense(2) (logits)

The head is the paper's Linear(1, 2), not P(|0>), P(|1>) used directly as
the class probabilities: the learned scale of the logits lets the loss reach
confident predictions (P(|1>) alone gives at best 1 - 1/100 steps of
cross-entropy, and examples/hybrid_mnist.py already shows the direct read-out).

Training and evaluation read the same quantity two ways:

* training (`fit`): `QuantumLayer(..., cirq.Z(q), shots=100)` then
  P(|1>) = (1 - <Z>) / 2. With shots, <Z> is the mean of 100 +-1 outcomes, so
  this is exactly the frequency of |1> in 100 shots, and its gradient is the
  parameter-shift rule estimated with 100 shots per shifted circuit (what
  hardware does). `ProbabilityLayer(shots=100)` returns the same
  frequencies, but frequencies of samples have no gradient, so it cannot be
  trained through.
* evaluation: the trained CNN and head with `ProbabilityLayer(circuit,
  shots=100)` reading P(|1>), and with the exact `ProbabilityLayer`
  (shots=None), whose gradient would be the adjoint method.

The circuit has no trainable angles, so the two read-outs share every weight.
Writes runs/hqcnn_probability/metrics.json and loss.png.

The other MNIST 0-vs-1 examples (vqnet_table5.py, vqnet_fig4.py,
deck_mnist.py) import their data loading, flags, CNN, sampled read-out,
compilation, metrics file and loss plot from here.

    python examples/hqcnn_probability.py            # 100 + 50 images per digit, 10 epochs
    python examples/hqcnn_probability.py --quick    # a smoke run
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401
from qkeras_hybrid.datasets import load_digits  # noqa: E402
from qkeras_hybrid.layers import ProbabilityLayer, QuantumLayer  # noqa: E402

DIGITS = (0, 1)
SHOTS = 100


def head_circuit():
    """H then Ry(x) on one qubit: P(|1>) = (1 + sin x) / 2."""
    qubit = cirq.LineQubit(0)
    x = sympy.Symbol("x")
    return cirq.Circuit(cirq.H(qubit), cirq.ry(x)(qubit)), x, qubit


def trunk_layers(dropout=0.25):
    """The CNN's layers, from the input: images [B, 28, 28, 1] -> the last hidden neuron x [B, 1].

    Args:
      dropout: rate of the Dropout before Flatten; None: no Dropout (VQNet's appendix C network).
    """
    return [
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(6, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        *([] if dropout is None else [keras.layers.Dropout(dropout, name="dropout")]),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(1, name="fc2"),
    ]


def trunk(dropout=0.25):
    """The CNN as one model: images [B, 28, 28, 1] -> the last hidden neuron x [B, 1]."""
    return keras.Sequential(trunk_layers(dropout), name="cnn")


def sampled_p1_layers(shots=SHOTS, seed=0, name="sampled_z"):
    """The layers x [B, 1] -> P(|1>) [B, 1] of H, Ry(x) measured `shots` times.

    `QuantumLayer(..., cirq.Z(q), shots=shots)` named `name`, then
    P(|1>) = (1 - <Z>) / 2: exactly the frequency of |1> in the shots; the
    gradient is the shift rule estimated with `shots` shots per shifted circuit.
    """
    circuit, x, qubit = head_circuit()
    return [QuantumLayer(circuit, cirq.Z(qubit), input_symbols=[x], shots=shots, seed=seed, name=name),
            keras.layers.Rescaling(-0.5, offset=0.5, name="p1_from_z")]


def compile_model(model, learning_rate, steps_per_execution=1):
    """Adam, cross-entropy of the two logits, accuracy: the training set-up of every HQCNN example."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  steps_per_execution=steps_per_execution)
    return model


def build_models(shots=SHOTS, seed=0):
    """(training model, {read-out name: evaluation model}), sharing the CNN and the Dense(2) head.

    Every model maps images to two logits.
    """
    circuit, x, qubit = head_circuit()
    cnn = trunk()
    head = keras.layers.Dense(2, name="linear_1_2")
    images = keras.Input((28, 28, 1), name="image")
    angle = cnn(images)

    # Training read-out: P(|1>) from `shots` shots, shift-rule gradient.
    p1 = angle
    for layer in sampled_p1_layers(shots, seed):
        p1 = layer(p1)
    train_model = keras.Model(images, head(p1), name="hqcnn_train")

    evaluation = {}
    for name, layer_shots in ((f"ProbabilityLayer, {shots} shots", shots), ("ProbabilityLayer, exact", None)):
        probabilities = ProbabilityLayer(circuit, qubits=[qubit], input_symbols=[x], shots=layer_shots,
                                         seed=None if layer_shots is None else seed + 1)(angle)
        evaluation[name] = keras.Model(images, head(probabilities[:, 1:]))
    return train_model, evaluation


def accuracy(model, x, y, batch_size=256):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def plot_loss(history, path, title, yscale="linear"):
    """Training (and, if in `history`, test) loss per epoch, written to the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax.plot(epochs, history["loss"], "o-", label="train")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], "s--", label="test")
    ax.set(xlabel="epoch", ylabel="cross-entropy", yscale=yscale, title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def example_parser(doc, epochs, out, quick):
    """The flags of the MNIST 0-vs-1 examples; parse them with `parse_example_args`.

    Args:
      doc: the example's docstring; its first paragraph describes the script.
      epochs: the default of --epochs.
      out: the default of --out, the directory of metrics.json and the plot.
      quick: (epochs, training images per digit, test images per digit) that --quick sets.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out, help="directory of metrics.json and loss.png")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {quick[0]} epochs on {quick[1]} + "
                        f"{quick[1]} training images, {quick[2]} + {quick[2]} test images")
    parser.set_defaults(quick_sizes=quick)
    return parser


def parse_example_args(parser, argv=None):
    """Parses `argv`; with --quick, the epochs and image counts are the parser's quick ones."""
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.train_per_class, args.test_per_class = args.quick_sizes
    return args


def load_data(args):
    """((x_train, y_train), (x_test, y_test)): the MNIST 0s and 1s the flags ask for."""
    return load_digits(DIGITS, args.train_per_class, args.test_per_class, seed=args.seed)


def save_metrics(out, metrics):
    """Writes `metrics` to `out`/metrics.json, creating the directory `out`."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)


def parse_args(argv=None):
    parser = example_parser(__doc__, epochs=10, out=os.path.join("runs", "hqcnn_probability"), quick=(2, 20, 20))
    parser.add_argument("--batch-size", type=int, default=16)
    return parse_example_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_data(args)
    model, evaluation = build_models(SHOTS, args.seed)
    compile_model(model, args.learning_rate)
    print(f"HQCNN on MNIST {DIGITS}: {len(x_train)} training, {len(x_test)} test images; "
          f"P(|1>) from {SHOTS} shots (parameter-shift gradient) -> Linear(1, 2)")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_test, y_test), verbose=2).history
    fit_seconds = time.perf_counter() - start
    accuracies = {"training read-out (QuantumLayer, 100 shots)": accuracy(model, x_test, y_test)}
    accuracies.update({name: accuracy(m, x_test, y_test) for name, m in evaluation.items()})
    for name, value in accuracies.items():
        print(f"test accuracy with {name}: {value:.4f}")
    metrics = {
        "digits": list(DIGITS), "shots": SHOTS, "epochs": args.epochs, "batch_size": args.batch_size,
        "train_images": len(x_train), "test_images": len(x_test), "seed": args.seed,
        "head": "Linear(1, 2) on P(|1>)", "fit_seconds": fit_seconds,
        "test_accuracy": accuracies, "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    }
    save_metrics(args.out, metrics)
    plot_loss(history, os.path.join(args.out, "loss.png"), f"HQCNN, P(|1>) from {SHOTS} shots -> Linear(1, 2)")
    print(f"fit {fit_seconds:.1f} s; metrics and loss plot written to {args.out}")
    return metrics


if __name__ == "__main__":
    main()
