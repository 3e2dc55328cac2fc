"""Quantum autoencoder: compress ground states of a spin chain from n to n - k qubits.

The quantum autoencoder of Romero, Olson and Aspuru-Guzik (arXiv:1612.02806),
as in VQNet 2.0's appendix B: a parameterized encoder U(w) acts on an n-qubit
state |psi>; if U(w)|psi> = |latent> (x) |0...0> on k "trash" qubits, the
state is compressed losslessly into the n - k latent qubits, and the decoder
U(w)^dagger restores it from the latent qubits and fresh |0...0> qubits. The
encoder is trained to maximize the trash fidelity

    F_trash(psi) = P(trash qubits of U(w)|psi> measure 0...0),

which is what `fit` does here: a `ProbabilityLayer` reads the probabilities
of the trash qubits' basis states, and the loss is 1 - P(0...0), minimized
with `keras.optimizers.Adam`. After training, the reconstruction fidelity
of the whole autoencoder on held-out states,

    F_rec(psi) = <psi| U^dagger (Tr_trash[U |psi><psi| U^dagger] (x) |0...0><0...0|) U |psi>,

is measured by a second circuit, encoder, SWAP of the trash qubits with k
fresh |0> qubits (the reset), decoder U^dagger, then the inverse of the
state preparation: F_rec is the probability that the n data qubits measure
0...0 (a `ProbabilityLayer` with the fresh qubits traced out). F_rec lies
between F_trash^2 and F_trash.

Choices where the seed gives too little (VQNet uses Hubbard-model and
molecular ground states; their fidelities are shown as curves, not numbers):

* States: ground states of the transverse-field Ising ring
  H = -sum_i Z_i Z_{i+1} - h sum_i X_i (periodic, n = 6 qubits by default)
  for fields h in [0.2, 2.0], across the critical point h = 1, computed by
  exact diagonalization (numpy). 16 evenly spaced fields are the training
  set, the 15 midpoints between them the held-out test set. The ground
  states are real (H is real) and unique for h > 0.
* Input: each state is prepared exactly from its 2^n amplitudes by the
  library's `amplitude_embedding` template (Mottonen's tree of uniformly
  controlled Ry rotations), whose inputs are the amplitudes.
* Encoder: the library's `hardware_efficient` template (layers of Ry on
  every qubit then a CNOT chain), which keeps states real; `--depth` layers
  (20 by default, 120 angles for n = 6; 6 layers for n = 4). Trash qubits:
  the last k of the chain; n = 6 -> 3 qubits by default.
* Training: Adam, learning rate 0.05 with cosine decay to 1/50 of it,
  batches of 8 states, 4000 steps (200 epochs of 20 steps); weights start
  uniform in [-pi, pi].
* Reference: no encoder can beat the optimal linear compression: the mean
  trash fidelity of a set of states is at most the sum of the 2^(n-k)
  largest eigenvalues of their mean density matrix (Ky Fan's maximum
  principle). Both bounds (training and test set) are reported. For these
  symmetric states (translation, reflection, spin flip) both are 1 to
  within 1e-8 for 4 -> 2 and 6 -> 3 qubits: lossless compression exists,
  and the question is whether training finds it.

Writes runs/quantum_autoencoder/metrics.json and fidelity.png (fidelity over
training; per-field trash and reconstruction fidelities on the test fields).

    python examples/quantum_autoencoder.py            # 6 -> 3 qubits, 4000 steps
    python examples/quantum_autoencoder.py --quick    # 4 -> 2 qubits, 400 steps
"""

import argparse
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cirq  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import qkeras_hybrid  # noqa: E402,F401
from qkeras_hybrid.circuits.templates import amplitude_embedding, hardware_efficient  # noqa: E402
from qkeras_hybrid.layers import ProbabilityLayer  # noqa: E402

BATCH_SIZE = 8
_PAULI_X = np.array([[0.0, 1.0], [1.0, 0.0]])
_PAULI_Z = np.diag([1.0, -1.0])


def _on_sites(n, factors):
    """Kronecker product of 2x2 `factors` {site: matrix} with identities elsewhere (site 0 first)."""
    out = np.ones((1, 1))
    for site in range(n):
        out = np.kron(out, factors.get(site, np.eye(2)))
    return out


def ising_hamiltonian(n, field):
    """H = -sum_i Z_i Z_{i+1} - field * sum_i X_i on a ring of n qubits, dense, real [2^n, 2^n]."""
    hamiltonian = np.zeros((2**n, 2**n))
    for i in range(n):
        hamiltonian -= _on_sites(n, {i: _PAULI_Z, (i + 1) % n: _PAULI_Z})
        hamiltonian -= field * _on_sites(n, {i: _PAULI_X})
    return hamiltonian


def ground_state(n, field):
    """(ground state [2^n], real, qubit 0 the most significant bit; energy gap to the first excited state)."""
    energies, vectors = np.linalg.eigh(ising_hamiltonian(n, field))
    state = vectors[:, 0]
    return state * np.sign(state.sum()), float(energies[1] - energies[0])


def datasets(n, train_points=16, field_range=(0.2, 2.0)):
    """(train fields, train states [T, 2^n], test fields (midpoints), test states), float64."""
    train_fields = np.linspace(*field_range, train_points)
    test_fields = (train_fields[:-1] + train_fields[1:]) / 2
    return (train_fields, np.array([ground_state(n, h)[0] for h in train_fields]),
            test_fields, np.array([ground_state(n, h)[0] for h in test_fields]))


def optimal_trash_fidelity(states, latent_qubits):
    """Upper bound on the mean trash fidelity of any encoder: the top 2^latent eigenvalues of mean |psi><psi|."""
    density = states.T @ states.conj() / len(states)
    eigenvalues = np.sort(np.linalg.eigvalsh(density))[::-1]
    return float(eigenvalues[: 2**latent_qubits].sum())


def circuits(n, trash, depth):
    """(state preparation, encoder, data qubits, trash qubits) templates and qubits."""
    qubits = cirq.LineQubit.range(n)
    preparation = amplitude_embedding(qubits, prefix="a")
    encoder = hardware_efficient(qubits, depth, prefix="w")
    return preparation, encoder, qubits, qubits[n - trash:]


def trash_fidelity(y_true, y_pred):
    """The loss: 1 - P(trash qubits = 0...0), column 0 of the trash probabilities."""
    del y_true
    return 1.0 - y_pred[:, 0]


def reconstruction_layer(preparation, encoder, data_qubits, trash_qubits, weights):
    """P(data qubits = 0...0) after preparation, encoder, reset of the trash, decoder, un-preparation.

    The reset swaps the trash qubits with fresh |0> qubits, which the
    marginal over the data qubits traces out.
    """
    n = len(data_qubits)
    fresh = cirq.LineQubit.range(n, n + len(trash_qubits))
    circuit = (preparation.circuit + encoder.circuit
               + cirq.Circuit(cirq.SWAP(t, f) for t, f in zip(trash_qubits, fresh))
               + cirq.inverse(encoder.circuit) + cirq.inverse(preparation.circuit))
    return ProbabilityLayer(circuit, qubits=data_qubits, input_symbols=preparation.symbols,
                            weight_symbols=encoder.symbols, initializer=keras.initializers.Constant(weights),
                            name="reconstruction")


def plot(history, initial, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = np.arange(len(history["loss"]) + 1) * history["steps_per_epoch"]
    for key, label, style in (("loss", "training states (mean over the epoch)", "-"),
                              ("val_loss", "held-out states (end of epoch)", "--")):
        start = initial["train" if key == "loss" else "test"]
        infidelity = np.maximum(1.0 - np.array([start] + list(history[key])), 1e-7)
        left.semilogy(steps, infidelity, style, label=label)
    floor = max(1.0 - results["optimal_trash_fidelity_test"], 0.0)
    left.axhline(max(floor, 1e-7), color="gray", lw=0.8, ls=":",
                 label=f"optimal linear compression, test (1 - F = {floor:.1e})")
    left.set_xlabel("optimizer step")
    left.set_ylabel("1 - trash fidelity")
    left.set_title(f"{results['qubits']} -> {results['latent_qubits']} qubits, Ising ring ground states")
    left.legend(fontsize=8)

    fields = results["test_fields"]
    right.plot(fields, results["test_trash_fidelity"], "o-", label="trash fidelity, trained")
    right.plot(fields, results["test_reconstruction_fidelity"], "s-", label="reconstruction fidelity, trained")
    right.plot(fields, results["test_trash_fidelity_initial"], "o:", color="gray", label="trash fidelity, initial")
    right.plot(fields, results["test_reconstruction_fidelity_initial"], "s:", color="silver",
               label="reconstruction fidelity, initial")
    right.axvline(1.0, color="gray", lw=0.8, ls=":")
    right.set_xlabel("transverse field h (held-out)")
    right.set_ylabel("fidelity")
    right.set_ylim(0, 1.02)
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qubits", type=int, default=6, help="qubits n of the states")
    parser.add_argument("--trash", type=int, default=3, help="trash qubits k (compressed into n - k)")
    parser.add_argument("--depth", type=int, default=20, help="layers of the encoder")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--train-points", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "quantum_autoencoder"),
                        help="directory of metrics.json and fidelity.png")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 -> 2 qubits, depth 6, 400 steps")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        args.qubits, args.trash, args.depth, args.epochs, args.steps_per_epoch = 4, 2, 6, 10, 40
    n, k = args.qubits, args.trash
    if not 1 <= k < n:
        raise ValueError(f"--trash must be in [1, {n - 1}] for {n} qubits, got {k}")
    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    train_fields, train_states, test_fields, test_states = datasets(n, args.train_points)
    x_train, x_test = train_states.astype(np.float32), test_states.astype(np.float32)
    bounds = {name: optimal_trash_fidelity(states, n - k) for name, states in
              (("train", train_states), ("test", test_states))}

    preparation, encoder, qubits, trash = circuits(n, k, args.depth)
    layer = ProbabilityLayer(preparation.circuit + encoder.circuit, qubits=trash,
                             input_symbols=preparation.symbols, weight_symbols=encoder.symbols,
                             initializer=keras.initializers.RandomUniform(-math.pi, math.pi), name="encoder")
    model = keras.Sequential([keras.Input((2**n,), name="amplitudes"), layer], name="quantum_autoencoder")
    total_steps = args.epochs * args.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, total_steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=trash_fidelity)

    def trash_fidelities(x):
        return model.predict(x, batch_size=256, verbose=0)[:, 0].astype(float)

    initial_weights = layer.quantum_weights.numpy().copy()
    reconstruction = reconstruction_layer(preparation, encoder, qubits, trash, initial_weights)

    def reconstruction_fidelities(x):
        reconstruction(x[:1])  # builds the layer the first time
        reconstruction.quantum_weights.assign(layer.quantum_weights)
        return reconstruction(x).numpy()[:, 0].astype(float)

    initial = {"train": float(trash_fidelities(x_train).mean()), "test_states": trash_fidelities(x_test),
               "reconstruction": reconstruction_fidelities(x_test)}
    initial["test"] = float(initial["test_states"].mean())
    print(f"Quantum autoencoder: {n} -> {n - k} qubits, Ising ring ground states, {len(x_train)} training and "
          f"{len(x_test)} held-out fields; encoder: {args.depth} layers of Ry + CNOT chain "
          f"({len(encoder.symbols)} angles), {total_steps} Adam steps")
    print(f"initial trash fidelity: train {initial['train']:.4f}, test {initial['test']:.4f}; optimal linear "
          f"compression bound: train {bounds['train']:.6f}, test {bounds['test']:.6f}")

    repeats = math.ceil(args.steps_per_epoch * BATCH_SIZE / len(x_train))
    x_epoch = np.tile(x_train, (repeats, 1))[: args.steps_per_epoch * BATCH_SIZE]
    fit_start = time.perf_counter()
    history = model.fit(x_epoch, np.zeros(len(x_epoch), np.float32), batch_size=BATCH_SIZE, epochs=args.epochs,
                        shuffle=True, validation_data=(x_test, np.zeros(len(x_test), np.float32)),
                        verbose=0).history
    fit_seconds = time.perf_counter() - fit_start
    history = {key: [1.0 - float(v) for v in values] for key, values in history.items()}  # as fidelities

    test_trash = trash_fidelities(x_test)
    test_reconstruction = reconstruction_fidelities(x_test)
    results = {
        "hamiltonian": "H = -sum Z_i Z_{i+1} - h sum X_i, periodic", "qubits": n, "trash_qubits": k,
        "latent_qubits": n - k, "depth": args.depth, "encoder": f"hardware_efficient(depth={args.depth}), Ry + CNOT chain",
        "encoder_angles": len(encoder.symbols), "steps": total_steps, "batch_size": BATCH_SIZE,
        "learning_rate": args.learning_rate, "seed": args.seed, "quick": args.quick,
        "train_fields": train_fields.tolist(), "test_fields": test_fields.tolist(),
        "optimal_trash_fidelity_train": bounds["train"], "optimal_trash_fidelity_test": bounds["test"],
        "train_trash_fidelity": float(trash_fidelities(x_train).mean()),
        "test_trash_fidelity_mean": float(test_trash.mean()), "test_trash_fidelity_min": float(test_trash.min()),
        "test_reconstruction_fidelity_mean": float(test_reconstruction.mean()),
        "test_reconstruction_fidelity_min": float(test_reconstruction.min()),
        "test_trash_fidelity": test_trash.tolist(), "test_reconstruction_fidelity": test_reconstruction.tolist(),
        "initial_train_trash_fidelity": initial["train"], "initial_test_trash_fidelity_mean": initial["test"],
        "test_trash_fidelity_initial": initial["test_states"].tolist(),
        "test_reconstruction_fidelity_initial": initial["reconstruction"].tolist(),
        "initial_weights": initial_weights.tolist(), "weights": layer.quantum_weights.numpy().tolist(),
        "history": {"train_trash_fidelity": history["loss"], "test_trash_fidelity": history["val_loss"],
                    "steps_per_epoch": args.steps_per_epoch},
        "fit_seconds": fit_seconds, "seconds": time.perf_counter() - start,
    }
    print(f"trained: trash fidelity train {results['train_trash_fidelity']:.5f}, held-out mean "
          f"{results['test_trash_fidelity_mean']:.5f} (min {results['test_trash_fidelity_min']:.5f}); "
          f"reconstruction fidelity held-out mean {results['test_reconstruction_fidelity_mean']:.5f} "
          f"(min {results['test_reconstruction_fidelity_min']:.5f}); fit {fit_seconds:.1f} s")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot({"loss": history["loss"], "val_loss": history["val_loss"], "steps_per_epoch": args.steps_per_epoch},
         initial, results, os.path.join(args.out, "fidelity.png"))
    print(f"{results['seconds']:.1f} s; metrics.json and fidelity.png written to {args.out}")
    return results


if __name__ == "__main__":
    main()
