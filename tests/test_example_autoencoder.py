"""examples/quantum_autoencoder.py --quick in a fresh process (issue 16, item 1).

The run's numbers are checked against an independent reference: the ground
states from Cirq's Pauli-sum matrices, the trained encoder as a Cirq unitary,
the trash and reconstruction fidelities from the encoded state in numpy."""

import json
import os
import subprocess
import sys

import cirq
import numpy as np
import pytest

from conftest import REPO

SCRIPT = os.path.join(REPO, "examples", "quantum_autoencoder.py")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantum_autoencoder")
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--out", str(out)], capture_output=True, text=True,
                            cwd=REPO, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "metrics.json").read_text()), result.stdout


def ising_ground_state(qubits, field):
    """Ground state of -sum Z_i Z_i+1 - h sum X_i on a ring, from Cirq's matrix of the Pauli sum."""
    n = len(qubits)
    hamiltonian = sum(-cirq.Z(qubits[i]) * cirq.Z(qubits[(i + 1) % n]) - field * cirq.X(qubits[i])
                      for i in range(n))
    energies, vectors = np.linalg.eigh(hamiltonian.matrix(qubits))
    assert energies[1] - energies[0] > 1e-6  # unique, so the state is defined up to a phase
    return vectors[:, 0]


def encoder_unitary(qubits, depth, weights):
    """Layers of Ry(w_l_i) on every qubit, then CNOT(q_i, q_i+1) down the chain, written out here."""
    weights = np.asarray(weights).reshape(depth, len(qubits))
    ops = []
    for layer in weights:
        ops += [cirq.ry(w)(q) for w, q in zip(layer, qubits)]
        ops += [cirq.CNOT(a, b) for a, b in zip(qubits, qubits[1:])]
    return cirq.unitary(cirq.Circuit(ops))


def test_quick_run_prints_and_writes_its_outputs(quick_run):
    out, metrics, stdout = quick_run
    assert "4 -> 2 qubits" in stdout and "reconstruction fidelity held-out mean" in stdout
    assert (out / "fidelity.png").stat().st_size > 10_000
    assert metrics["qubits"] == 4 and metrics["latent_qubits"] == 2 and len(metrics["test_fields"]) == 15
    history = metrics["history"]
    assert len(history["train_trash_fidelity"]) == len(history["test_trash_fidelity"]) == 10


def test_training_compresses_held_out_states(quick_run):
    _, metrics, _ = quick_run
    # Random encoder angles leave the trash qubits far from |00> (0.39 here);
    # the trained encoder reaches ~0.999 on fields it never saw.
    assert metrics["initial_test_trash_fidelity_mean"] < 0.6
    assert metrics["test_trash_fidelity_mean"] > 0.99
    assert metrics["test_trash_fidelity_min"] > 0.98
    assert metrics["test_reconstruction_fidelity_mean"] > 0.98
    # No encoder beats the optimal linear compression (Ky Fan); here it is 1.
    assert metrics["test_trash_fidelity_mean"] <= metrics["optimal_trash_fidelity_test"] + 1e-5
    assert metrics["history"]["test_trash_fidelity"][-1] > metrics["history"]["test_trash_fidelity"][0]


def test_fidelities_match_an_independent_simulation(quick_run):
    _, metrics, _ = quick_run
    n, k, depth = metrics["qubits"], metrics["trash_qubits"], metrics["depth"]
    qubits = cirq.LineQubit.range(n)
    for weights, trash_key, reconstruction_key in (
        (metrics["weights"], "test_trash_fidelity", "test_reconstruction_fidelity"),
        (metrics["initial_weights"], "test_trash_fidelity_initial", "test_reconstruction_fidelity_initial"),
    ):
        unitary = encoder_unitary(qubits, depth, weights)
        states = np.array([ising_ground_state(qubits, h) for h in metrics["test_fields"]])
        # Encoded state as [latent, trash]: the trash qubits are the last (least significant) ones.
        encoded = (states @ unitary.T).reshape(len(states), 2 ** (n - k), 2**k)
        kept = encoded[:, :, 0]  # the trash-|0..0> component
        trash = np.sum(np.abs(kept) ** 2, axis=1)
        # <psi| U^+ (rho_latent (x) |0><0|) U |psi> = sum_t |<phi_0|phi_t>|^2
        reconstruction = np.sum(np.abs(np.einsum("bl,blt->bt", kept.conj(), encoded)) ** 2, axis=1)
        np.testing.assert_allclose(metrics[trash_key], trash, atol=2e-4)
        np.testing.assert_allclose(metrics[reconstruction_key], reconstruction, atol=2e-4)
        assert np.all(reconstruction <= trash + 1e-9) and np.all(reconstruction >= trash**2 - 1e-9)


def test_optimal_compression_bound_matches_singular_values(quick_run):
    _, metrics, _ = quick_run
    qubits = cirq.LineQubit.range(metrics["qubits"])
    states = np.array([ising_ground_state(qubits, h) for h in metrics["train_fields"]])
    singular = np.linalg.svd(states, compute_uv=False)
    bound = np.sum(singular[: 2 ** metrics["latent_qubits"]] ** 2) / len(states)
    assert metrics["optimal_trash_fidelity_train"] == pytest.approx(bound, abs=1e-9)
