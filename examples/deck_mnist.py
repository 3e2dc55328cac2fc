"""The QizGloria deck's MNIST runs: a ConvNet's last linear layer drives an Rx & Ry circuit, trained with shots.

The slide deck of the PyTorch + Qiskit hackathon project QizGloria (Qiskit
Camp Europe 2019; the "hello qubit" of examples/hello_qubit.py is from the
same deck) trains, on MNIST 0s and 1s, a classical node (a ConvNet) whose
last linear layer outputs two angles for a quantum node (a Qiskit circuit of
Rx and Ry rotations); the circuit's sigma_z expectation gives the class
probabilities and PyTorch's Adam optimizes everything. It shows two loss
curves (200 data samples per epoch):

  (a) analytic gradients (the parameter-shift rule), 100 shots;
  (b) finite-difference gradient estimates, 10,000 shots.

Here both runs, on the native engine, with the shots sampled by the
simulator op and the gradients estimated from the same shots:

    Conv2D(10, 5x5) -> MaxPool(2) -> ReLU -> Conv2D(20, 5x5) -> MaxPool(2) -> ReLU
    -> Flatten (320) -> Dense(50, relu) -> Dense(2) = (a, b)          [the linear layer]
    -> Rx(a), Ry(b) on |0>, <Z> = cos(a) cos(b) from N shots
    -> (P(0), P(1)) = ((1 + <Z>) / 2, (1 - <Z>) / 2)

(a) `QuantumLayer(..., shots=100, differentiator="parameter_shift")`,
(b) `QuantumLayer(..., shots=10_000, differentiator=FiniteDifference(0.01))`
(central differences with step 0.01, as the hackathon's hello-qubit).

What the deck leaves open, and what was chosen:

* The ConvNet is the one of the project's MNIST notebooks (PyTorch's MNIST
  example: 10 and 20 filters of 5x5, 320 -> 50 -> linear), without its two
  dropout layers: the read-out is periodic in the angles, and dropout's change
  of activation scale between training and test moves test angles across
  periods. Measured at seed 0 with 100 shots: with its Dropout2d alone, 100%
  training but 77-85% test accuracy over 15 epochs; with both dropouts, near
  chance after 5 epochs; with neither, 100% test accuracy from epoch 1.
* Loss: the cross-entropy -log P(label) for both runs, so the curves share a
  scale. (The deck's panels are labelled "negative log-likelihood" and
  "cross-entropy"; PyTorch's `nll_loss` applied to probabilities, as in the
  project's notebooks, is -P(label), which the script also records as the
  metric `mean_p_label`.)
* Adam, learning rate 1e-3, batch size 1 (the notebooks' batch), 10 epochs
  of 100 + 100 training images (the deck's 200 data samples per epoch),
  tested on 50 + 50 held-out images after every epoch (test predictions are
  sampled with the run's shots too).

After training, each run's gradient estimate of <Z> with respect to the
angles, at the angles of a test image, is repeated 50 times with fresh shots
(mean +- std against the exact value): central differences divide the shot
noise by 2h = 0.02, so 10,000 shots give them a larger spread than the shift
rule has with 100.

Writes `loss.png` (both runs' training and test loss per epoch, one plot) and
`metrics.json` under --out (default runs/deck_mnist). The data and flags are
examples/hqcnn_probability.py's.

    python examples/deck_mnist.py            # both runs, 10 epochs, ~30 s
    python examples/deck_mnist.py --quick    # 2 epochs on 20 + 20 images
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402
import tensorflow as tf  # noqa: E402

from qkeras_hybrid.differentiators import FiniteDifference  # noqa: E402
from qkeras_hybrid.layers import ExpectationToProbabilities, QuantumLayer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hqcnn_probability as hqcnn  # noqa: E402  (the shared MNIST 0-vs-1 data and flags)

DIGITS = hqcnn.DIGITS
# The deck's two runs: name -> (shots, differentiator).
RUNS = {
    "analytic gradients (parameter shift), 100 shots": (100, "parameter_shift"),
    "finite differences (h = 0.01), 10,000 shots": (10_000, "finite_difference"),
}
FD_STEP = 0.01


def rx_ry_circuit():
    """Rx(a) then Ry(b) on one qubit: <Z> = cos(a) cos(b)."""
    qubit = cirq.LineQubit(0)
    a, b = sympy.symbols("a b")
    return cirq.Circuit(cirq.rx(a)(qubit), cirq.ry(b)(qubit)), [a, b], qubit


def build_model(shots, differentiator, seed=0):
    """The ConvNet -> Dense(2) -> Rx & Ry circuit network; outputs (P(0), P(1))."""
    circuit, symbols, qubit = rx_ry_circuit()
    if differentiator == "finite_difference":
        differentiator = FiniteDifference(FD_STEP)
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(10, 5, name="conv1"),
        keras.layers.MaxPooling2D(2),
        keras.layers.ReLU(),
        keras.layers.Conv2D(20, 5, name="conv2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(50, activation="relu", name="fc1"),
        keras.layers.Dense(2, name="linear"),  # the two angles
        QuantumLayer(circuit, cirq.Z(qubit), input_symbols=symbols, shots=shots, seed=seed,
                     differentiator=differentiator, name="rx_ry"),
        ExpectationToProbabilities(name="probabilities"),
    ], name="deck_mnist")


class MeanProbabilityOfLabel(keras.metrics.Mean):
    """The mean probability given to the true label: PyTorch's nll_loss of probabilities is its negative."""

    def __init__(self, name="mean_p_label", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        p_label = keras.ops.take_along_axis(y_pred, keras.ops.expand_dims(labels, -1), axis=-1)
        return super().update_state(p_label, sample_weight=sample_weight)


def gradient_noise(model, image, repeats):
    """d<Z>/d(a, b) at the angles the trained model gives `image`: the run's estimates (mean, std) and exact."""
    angles = keras.Model(model.inputs[0], model.get_layer("linear").output)(image[None])
    layer = model.get_layer("rx_ry")
    estimates = []
    for _ in range(repeats):
        with tf.GradientTape() as tape:
            tape.watch(angles)
            z = layer(angles)
        estimates.append(tape.gradient(z, angles).numpy()[0])
    a, b = angles.numpy()[0]
    exact = [-np.sin(a) * np.cos(b), -np.cos(a) * np.sin(b)]  # of <Z> = cos(a) cos(b)
    return {"angles": [float(a), float(b)], "exact": [float(g) for g in exact],
            "mean": np.mean(estimates, axis=0).tolist(), "std": np.std(estimates, axis=0).tolist(),
            "repeats": repeats}


def train_run(shots, differentiator, data, epochs, learning_rate, seed, verbose=0, gradient_repeats=50):
    """Trains one run; returns its per-epoch history, test metrics, gradient noise and seconds."""
    (x_train, y_train), (x_test, y_test) = data
    keras.utils.set_random_seed(seed)
    model = build_model(shots, differentiator, seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), MeanProbabilityOfLabel()],
        # Batch-1 steps are Keras-overhead bound; 20 steps per graph call change nothing else.
        steps_per_execution=20,
    )
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=1, epochs=epochs, validation_data=(x_test, y_test),
                        verbose=verbose).history
    seconds = time.perf_counter() - start
    return {
        "gradient": gradient_noise(model, x_test[0], gradient_repeats),
        "shots": shots,
        "differentiator": differentiator if differentiator != "finite_difference" else f"finite_difference({FD_STEP})",
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "final_train_loss": float(history["loss"][-1]),
        "final_test_loss": float(history["val_loss"][-1]),
        "final_test_accuracy": float(history["val_accuracy"][-1]),
        "fit_seconds": seconds,
    }


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in results.items():
        history = run["history"]
        epochs = np.arange(1, len(history["loss"]) + 1)
        (line,) = ax_loss.plot(epochs, history["loss"], "o-", label=f"{name}: train")
        ax_loss.plot(epochs, history["val_loss"], "s--", color=line.get_color(), label=f"{name}: test")
        ax_acc.plot(epochs, history["val_accuracy"], "s--", color=line.get_color(), label=name)
    ax_loss.set(xlabel="epoch (200 training images)", ylabel="cross-entropy", yscale="log",
                title="Deck MNIST: ConvNet -> Dense(2) -> Rx, Ry")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1.02), title="test accuracy (sampled read-out)")
    ax_loss.legend(fontsize=7)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = hqcnn.example_parser(__doc__, epochs=10, out=os.path.join("runs", "deck_mnist"), quick=(2, 20, 10))
    return hqcnn.parse_example_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    data = hqcnn.load_data(args)
    print(f"Deck MNIST {DIGITS}: {len(data[0][0])} training, {len(data[1][0])} test images; "
          f"ConvNet -> Dense(2) -> Rx(a) Ry(b) -> <Z>; Adam {args.learning_rate}, batch 1, {args.epochs} epochs")
    results = {}
    for name, (shots, differentiator) in RUNS.items():
        run = train_run(shots, differentiator, data, args.epochs, args.learning_rate, args.seed,
                        gradient_repeats=20 if args.quick else 50)
        results[name] = run
        g = run["gradient"]
        print(f"{name:50s} train loss {run['history']['loss'][0]:.3f} -> {run['final_train_loss']:.3f}, "
              f"test loss {run['final_test_loss']:.3f}, test accuracy {run['final_test_accuracy']:.3f} "
              f"({run['fit_seconds']:.1f} s)")
        print(f"{'':50s} d<Z>/da at a test image: {g['mean'][0]:+.3f} +- {g['std'][0]:.3f} "
              f"(exact {g['exact'][0]:+.3f}, {g['repeats']} estimates)")
    metrics = {
        "digits": list(DIGITS), "epochs": args.epochs, "batch_size": 1, "learning_rate": args.learning_rate,
        "train_images": len(data[0][0]), "test_images": len(data[1][0]), "seed": args.seed, "runs": results,
    }
    hqcnn.save_metrics(args.out, metrics)
    plot(results, os.path.join(args.out, "loss.png"))
    print(f"loss curves and metrics written to {args.out}")
    return metrics


if __name__ == "__main__":
    main()
