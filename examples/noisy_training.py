"""Training under noise: the hybrid MNIST network and the QCCNN on noisy circuits.

Two networks of the other examples, each trained with its circuits simulated
exactly as density matrices (adjoint gradients through the noise):

    hybrid MNIST  (examples/hybrid_mnist.py)  CNN -> Dense(1) -> one qubit H, Ry(x), measured:
                                              (P(0), P(1)) are the two class probabilities (digits 0, 1)
    QCCNN         (examples/qccnn_tetris.py)  QuantumConv2D(5 filters, 2x2 windows = 4 qubits, depth 4)
                                              -> MaxPool(2) -> Dense(softmax), on the 5-brick Tetris set

under these noise settings:

    p = 0, 0.01, 0.05   a depolarizing sweep: after every gate, a depolarizing channel of strength p
                        on the gate's qubits (cirq.depolarize(p) after H and Ry, the 2-qubit
                        cirq.depolarize(p, n_qubits=2) after CNOT), the per-gate noise table of VQNet
    device              a device-like Qiskit model: NoiseModel.from_backend of a 4-qubit
                        GenericBackendV2 whose native gates are the circuits' own (H, Ry, CX), so every
                        gate of the circuits gets that device's error (Aer attaches errors by gate name:
                        a model on the default IBM basis, rz/sx/x/cx, would leave H and Ry noiseless).
                        Per gate: depolarizing + thermal relaxation (T1, T2, gate duration), as
                        Aer builds it, on device qubits 0..n-1 (the layer's qubits, in order); readout
                        errors reach the MNIST head's probabilities (the QCCNN's outputs are exact
                        expectations <ZZZZ>, which readout errors do not touch: they act on
                        probabilities, samples and sampled expectations)

Each trained model is evaluated three ways on the held-out test set:

    noisy          the trained model, with its noise (what it was trained for)
    ideal          the same weights in a noiseless copy of the model
    ideal-trained  the p = 0 model's weights run under this noise (trained on a perfect
                   simulator, deployed on a noisy device)

It writes, under --out (default runs/noisy_training):

    accuracy_vs_noise.png   test accuracy and loss against noise, per network (mean +- std over seeds)
    metrics.json            every run's accuracies and losses, the means, the settings

and prints the table. What to expect: the MNIST head is one qubit read out
by the sign of <Z>, and depolarizing noise only shrinks <Z> (by 1 - 4p/3 per
gate), so it never changes a decision of given weights: accuracy stays, the
loss rises (the probabilities cannot reach 1 any more). The QCCNN's features
<ZZZZ> pass 32 noisy gates, which damp them by amounts that depend on the
window and the weights: the features change shape, not only scale.

    python examples/noisy_training.py            # 3 seeds per setting, a few minutes on 2 cores
    python examples/noisy_training.py --quick    # 1 seed, 2-label Tetris, less data and epochs (a smoke run)
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(HERE)
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402
import tensorflow as tf  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401  (registers the simulator op)
from qkeras_hybrid.datasets import load_digits  # noqa: E402
from qkeras_hybrid.datasets.tetris import BRICKS, TWO_LABELS, load_tetris  # noqa: E402
from qkeras_hybrid.layers import ProbabilityLayer, QuantumConv2D  # noqa: E402

NETWORKS = ("hybrid_mnist", "qccnn")
SWEEP = (0.0, 0.01, 0.05)
DEVICE = "device"
DEVICE_QUBITS = 4  # the QCCNN's 2x2 window; the MNIST head uses device qubit 0
DEVICE_BASIS = ("h", "ry", "cx")  # the gates of both networks' circuits
MNIST_DIGITS = (0, 1)


def setting_names():
    return [f"p={p:g}" for p in SWEEP] + [DEVICE]


# ------------------------------------------------------------------ noise

def depolarizing_table(p):
    """The per-gate table of the sweep: depolarize(p) on a gate's qubits after it (None at p = 0)."""
    if p == 0:
        return None
    return {"h": cirq.depolarize(p), "ry": cirq.depolarize(p), "cx": cirq.depolarize(p, n_qubits=2)}


def device_backend(seed):
    """A 4-qubit `GenericBackendV2` (all-to-all) whose native gates are H, Ry and CX."""
    from qiskit.providers.fake_provider import GenericBackendV2

    # A fresh list: GenericBackendV2 appends "measure", "delay" and "reset" to the one it is given.
    return GenericBackendV2(num_qubits=DEVICE_QUBITS, basis_gates=list(DEVICE_BASIS), seed=seed)


def device_noise_model(seed):
    """`NoiseModel.from_backend` of `device_backend(seed)`, and a summary of its error rates."""
    from qiskit_aer.noise import NoiseModel

    backend = device_backend(seed)
    target = backend.target
    summary = {"backend": f"GenericBackendV2(num_qubits={DEVICE_QUBITS}, basis_gates={list(DEVICE_BASIS)}, "
                          f"seed={seed})"}
    for name in DEVICE_BASIS + ("measure",):
        errors = [props.error for props in target[name].values() if props is not None and props.error is not None]
        durations = [props.duration for props in target[name].values() if props is not None and props.duration]
        summary[name] = {"error_mean": float(np.mean(errors)), "error_max": float(np.max(errors)),
                         "duration_ns_mean": float(np.mean(durations)) * 1e9}
    summary["t1_us"] = [float(target.qubit_properties[q].t1) * 1e6 for q in range(DEVICE_QUBITS)]
    summary["t2_us"] = [float(target.qubit_properties[q].t2) * 1e6 for q in range(DEVICE_QUBITS)]
    return NoiseModel.from_backend(backend), summary


def noise_for(setting, device_model):
    """The `noise=` argument of the quantum layers for a setting name."""
    if setting == DEVICE:
        return device_model
    return depolarizing_table(float(setting[2:]))


# --------------------------------------------------------------- networks

def mnist_head_circuit():
    """examples/hybrid_mnist.py's one-qubit circuit: H then Ry(x)."""
    qubit = cirq.LineQubit(0)
    x = sympy.Symbol("x")
    return cirq.Circuit(cirq.H(qubit), cirq.ry(x)(qubit)), x


def build_mnist(noise=None):
    """The hybrid MNIST network of examples/hybrid_mnist.py, its head read as probabilities.

    `QuantumLayer(Z) -> ExpectationToProbabilities` there computes
    (P(0), P(1)) = ((1 + <Z>) / 2, (1 - <Z>) / 2); a `ProbabilityLayer` gives
    the same two numbers and, unlike an exact expectation, sees readout errors.
    """
    circuit, x = mnist_head_circuit()
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(6, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(16, 5, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Dropout(0.25, name="dropout"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(1, name="fc2"),
        ProbabilityLayer(circuit, input_symbols=[x], noise=noise, name="quantum_head"),
    ], name="hybrid_mnist")


def build_qccnn(num_labels, noise=None):
    """QCCNN-1 of examples/qccnn_tetris.py: QuantumConv2D(5, 2x2, depth 4) -> MaxPool(2) -> Dense(softmax)."""
    return keras.Sequential([
        keras.Input((3, 3, 1)),
        QuantumConv2D(5, kernel_size=2, strides=1, depth=4, noise=noise, name="quantum_conv"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(num_labels, activation="softmax", name="classifier"),
    ], name="qccnn")


def copy_weights(source, target):
    """`source`'s trainable weights into `target` (the same network with other noise)."""
    for a, b in zip(source.trainable_weights, target.trainable_weights):
        if a.shape != b.shape:
            raise ValueError(f"weight {a.path} has shape {a.shape} but {b.path} has {b.shape}")
        b.assign(a)


# ---------------------------------------------------------------- training

def train(model, loss, x, y, config, seed):
    """Adam on shuffled mini-batches, as `model.fit` (the last batch may be smaller).

    Written out because `fit` traces a graph per model (seconds on a loaded
    machine); with `config["eager"]` (the quick run's few steps) the steps run
    eagerly, otherwise as one `tf.function`.
    """
    optimizer = keras.optimizers.Adam(config["learning_rate"])

    def step(x_batch, y_batch):
        with tf.GradientTape() as tape:
            value = loss(y_batch, model(x_batch, training=True))
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return value

    if not config.get("eager", False):
        step = tf.function(step, reduce_retracing=True)
    rng = np.random.default_rng(seed)
    n, batch_size = len(x), config["batch_size"]
    for _ in range(config["epochs"]):
        order = rng.permutation(n)
        for begin in range(0, n, batch_size):
            index = order[begin:begin + batch_size]
            step(tf.constant(x[index]), tf.constant(y[index]))


class Task:
    """One network on its data: builds, trains and scores models under a given noise."""

    def __init__(self, network, config):
        self.network = network
        self.config = config
        if network == "hybrid_mnist":
            (self.x_train, self.y_train), (self.x_test, self.y_test) = load_digits(
                MNIST_DIGITS, config["train_per_class"], config["test_per_class"], seed=config["data_seed"])
            self.num_labels = 2
        else:
            bricks = TWO_LABELS if config["labels"] == 2 else BRICKS
            (self.x_train, self.y_train), (self.x_test, self.y_test) = load_tetris(bricks, seed=config["data_seed"])
            self.num_labels = len(bricks)

    def build(self, noise):
        if self.network == "hybrid_mnist":
            return build_mnist(noise)
        return build_qccnn(self.num_labels, noise)

    def fit(self, noise, seed):
        """A model under `noise`, trained from seed `seed` (weights and batch order)."""
        keras.utils.set_random_seed(seed)
        model = self.build(noise)
        if self.network == "hybrid_mnist":  # as examples/hybrid_mnist.py
            loss, y = keras.losses.SparseCategoricalCrossentropy(), self.y_train
        else:  # as examples/qccnn_tetris.py: MSE on one-hot labels
            loss, y = keras.losses.MeanSquaredError(), np.eye(self.num_labels, dtype=np.float32)[self.y_train]
        train(model, loss, self.x_train, y, self.config, seed)
        return model

    def score(self, model):
        """(test accuracy, test loss) of `model`, the loss as it was trained (cross-entropy or MSE)."""
        probabilities = np.asarray(model(self.x_test, training=False), dtype=np.float64)
        accuracy = float(np.mean(np.argmax(probabilities, axis=-1) == self.y_test))
        if self.network == "hybrid_mnist":
            picked = probabilities[np.arange(len(self.y_test)), self.y_test]
            loss = float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0))))
        else:
            one_hot = np.eye(self.num_labels)[self.y_test]
            loss = float(np.mean((probabilities - one_hot) ** 2))
        return accuracy, loss

    def title(self):
        if self.network == "hybrid_mnist":
            return f"hybrid MNIST (digits {MNIST_DIGITS[0]} and {MNIST_DIGITS[1]})"
        return f"QCCNN (Tetris, {self.num_labels} labels)"

    def describe(self):
        if self.network == "hybrid_mnist":
            return (f"MNIST digits {MNIST_DIGITS}: {len(self.y_train)} training / {len(self.y_test)} test images, "
                    f"{self.config['epochs']} epochs, batch {self.config['batch_size']}")
        return (f"Tetris, {self.num_labels} labels: {len(self.y_train)} training / {len(self.y_test)} test images, "
                f"{self.config['epochs']} epochs, batch {self.config['batch_size']}")


def run_network(task, settings, device_model, seeds, log=print):
    """Rows of one network: per seed and setting, the model trained under that noise scored three ways."""
    rows = []
    for seed in seeds:
        ideal_trained = None
        for setting in settings:
            noise = noise_for(setting, device_model)
            start = time.perf_counter()
            model = task.fit(noise, seed)
            seconds = time.perf_counter() - start
            noisy_accuracy, noisy_loss = task.score(model)
            if noise is None:
                ideal_trained = model
                ideal_accuracy, ideal_loss = noisy_accuracy, noisy_loss
                deployed_accuracy, deployed_loss = noisy_accuracy, noisy_loss
            else:
                twin = task.build(None)
                copy_weights(model, twin)
                ideal_accuracy, ideal_loss = task.score(twin)
                if ideal_trained is None:
                    raise ValueError("the settings must start with the noiseless one (p=0)")
                deployed = task.build(noise)
                copy_weights(ideal_trained, deployed)
                deployed_accuracy, deployed_loss = task.score(deployed)
            row = {
                "network": task.network, "noise": setting, "seed": seed,
                "noisy_accuracy": noisy_accuracy, "ideal_accuracy": ideal_accuracy,
                "ideal_trained_noisy_accuracy": deployed_accuracy,
                "noisy_loss": noisy_loss, "ideal_loss": ideal_loss, "ideal_trained_noisy_loss": deployed_loss,
                "fit_seconds": seconds,
            }
            rows.append(row)
            log(f"  {task.network:12s} {setting:8s} seed {seed}: accuracy noisy {noisy_accuracy:.3f}, "
                f"ideal {ideal_accuracy:.3f}, ideal-trained under this noise {deployed_accuracy:.3f}  "
                f"(fit {seconds:.1f} s)", flush=True)
    return rows


KEYS = ("noisy_accuracy", "ideal_accuracy", "ideal_trained_noisy_accuracy",
        "noisy_loss", "ideal_loss", "ideal_trained_noisy_loss")


def summarize(rows):
    """Mean and std over seeds, per network and setting, in the rows' order."""
    groups = {}
    for row in rows:
        groups.setdefault((row["network"], row["noise"]), []).append(row)
    summary = []
    for (network, setting), group in groups.items():
        entry = {"network": network, "noise": setting, "seeds": len(group)}
        for key in KEYS:
            values = [r[key] for r in group]
            entry[f"{key}_mean"] = float(np.mean(values))
            entry[f"{key}_std"] = float(np.std(values))
        summary.append(entry)
    return summary


def markdown_table(summary, titles):
    lines = [
        "| network | noise | test accuracy, noisy | same weights, ideal | ideal-trained, under this noise "
        "| test loss, noisy | test loss, ideal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(entry, key, digits=3):
        mean, std = entry[f"{key}_mean"], entry[f"{key}_std"]
        return f"{mean:.{digits}f}" + (f" +- {std:.{digits}f}" if entry["seeds"] > 1 else "")

    for e in summary:
        lines.append(
            f"| {titles[e['network']]} | {e['noise']} | {cell(e, 'noisy_accuracy')} | "
            f"{cell(e, 'ideal_accuracy')} | {cell(e, 'ideal_trained_noisy_accuracy')} | "
            f"{cell(e, 'noisy_loss', 4)} | {cell(e, 'ideal_loss', 4)} |"
        )
    return "\n".join(lines)


def plot(summary, settings, path, titles, chance):
    """Test accuracy (top) and test loss (bottom) against the noise setting, one column per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    networks = [n for n in NETWORKS if n in titles]
    fig, axes = plt.subplots(2, len(networks), figsize=(6 * len(networks), 7.5), squeeze=False, sharex=True)
    positions = np.arange(len(settings))
    curves = (("noisy", "trained and evaluated under the noise", "o-"),
              ("ideal", "trained under the noise, evaluated ideal", "s--"),
              ("ideal_trained_noisy", "trained ideal, evaluated under the noise", "^:"))
    labels = [s.replace("p=", "depolarizing\np = ") if s != DEVICE else "device-like\n(Qiskit model)"
              for s in settings]
    for column, network in enumerate(networks):
        by_setting = {e["noise"]: e for e in summary if e["network"] == network}
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row][column]
            for offset, (key, label, style) in zip((-0.06, 0.0, 0.06), curves):
                means = np.array([by_setting[s][f"{key}_{metric}_mean"] for s in settings])
                stds = np.array([by_setting[s][f"{key}_{metric}_std"] for s in settings])
                sweep = slice(0, len(SWEEP))  # a line through the sweep; the device model is a point apart
                bars = ax.errorbar(positions[sweep] + offset, means[sweep], yerr=stds[sweep], fmt=style,
                                   capsize=3, label=label)
                ax.errorbar(positions[len(SWEEP):] + offset, means[len(SWEEP):], yerr=stds[len(SWEEP):],
                            fmt=style[0], capsize=3, color=bars.lines[0].get_color())
            ax.axvline(len(SWEEP) - 0.5, color="grey", lw=0.5)
            ax.grid(axis="y", alpha=0.3)
            if metric == "accuracy":
                ax.axhline(chance[network], color="grey", lw=0.8, ls="-.", label="chance")
                ax.set(ylabel="test accuracy", ylim=(0, 1.03), title=titles[network])
            else:
                ax.set(ylabel="test loss (cross-entropy)" if network == "hybrid_mnist" else "test loss (MSE)")
                ax.set_xticks(positions, labels)
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Training under noise (exact density-matrix simulation); mean +- std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -------------------------------------------------------------------- main

FULL = {
    "seeds": 3,
    "hybrid_mnist": {"train_per_class": 100, "test_per_class": 100, "epochs": 5, "batch_size": 16,
                     "learning_rate": 1e-3, "data_seed": 0},
    "qccnn": {"labels": 5, "epochs": 6, "batch_size": 32, "learning_rate": 0.05, "data_seed": 0},
}
QUICK = {
    "seeds": 1,
    "hybrid_mnist": {"train_per_class": 30, "test_per_class": 50, "epochs": 1, "batch_size": 10,
                     "learning_rate": 3e-3, "data_seed": 0, "eager": True},
    "qccnn": {"labels": 2, "epochs": 3, "batch_size": 32, "learning_rate": 0.08, "data_seed": 0, "eager": True},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, small data, few epochs: a smoke run of every network and setting")
    parser.add_argument("--seeds", type=int, default=None, help="training seeds per setting (default 3; quick 1)")
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated subset of {NETWORKS}")
    parser.add_argument("--device-seed", type=int, default=7, help="seed of the GenericBackendV2 device (default 7)")
    parser.add_argument("--out", default=os.path.join("runs", "noisy_training"), help="output directory")
    args = parser.parse_args(argv)
    networks = tuple(n for n in args.networks.split(",") if n)
    if not networks or not set(networks) <= set(NETWORKS):
        parser.error(f"--networks must name some of {NETWORKS}, got {args.networks!r}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be positive, got {args.seeds}")
    args.networks = networks
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    config = QUICK if args.quick else FULL
    seeds = list(range(args.seeds or config["seeds"]))
    settings = setting_names()
    os.makedirs(args.out, exist_ok=True)

    device_model, device_summary = device_noise_model(args.device_seed)
    print(f"Device-like noise: NoiseModel.from_backend({device_summary['backend']}):")
    for name in DEVICE_BASIS + ("measure",):
        s = device_summary[name]
        print(f"    {name:8s} error {s['error_mean']:.2e} (max {s['error_max']:.2e}), "
              f"duration {s['duration_ns_mean']:.0f} ns")
    print(f"    T1 {min(device_summary['t1_us']):.0f}-{max(device_summary['t1_us']):.0f} us, "
          f"T2 {min(device_summary['t2_us']):.0f}-{max(device_summary['t2_us']):.0f} us")

    rows, tasks = [], {}
    for network in args.networks:
        task = tasks[network] = Task(network, config[network])
        print(f"\n{task.title()}: {task.describe()}, seeds {seeds}")
        rows += run_network(task, settings, device_model, seeds)
    summary = summarize(rows)
    chance = {n: 1.0 / t.num_labels for n, t in tasks.items()}
    plot_path = os.path.join(args.out, "accuracy_vs_noise.png")
    titles = {n: t.title() for n, t in tasks.items()}
    plot(summary, settings, plot_path, titles, chance)
    table = markdown_table(summary, titles)
    seconds = time.perf_counter() - start
    metrics = {
        "quick": args.quick,
        "seeds": seeds,
        "settings": settings,
        "noise": {
            "depolarizing": "per-gate table: cirq.depolarize(p) after each H and Ry, cirq.depolarize(p, n_qubits=2) "
                            "after each CNOT",
            "device": device_summary,
            "simulation": "density_matrix (exact)",
        },
        "networks": {n: {**config[n], "num_labels": t.num_labels, "train_size": len(t.y_train),
                         "test_size": len(t.y_test), "chance": chance[n]} for n, t in tasks.items()},
        "runs": rows,
        "summary": summary,
        "seconds": seconds,
    }
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print()
    print(table)
    print(f"\nWrote {plot_path} and metrics.json in {args.out} ({seconds:.0f} s)")
    return metrics


if __name__ == "__main__":
    main()
