"""examples/noisy_training.py (issue 15, item 5): --quick in a fresh process, and its noise settings.

The run's numbers are checked for completeness and against what the physics
fixes independently of training: the MNIST head is one qubit read out by
the sign of <Z>, and depolarizing noise after each gate only shrinks <Z>
(by (1 - 4p/3) per gate), so it changes losses but never a decision.
"""

import json
import math
import os
import subprocess
import sys

import cirq
import numpy as np
import pytest

from conftest import REPO, load_example

SCRIPT = os.path.join(REPO, "examples", "noisy_training.py")
SETTINGS = ["p=0", "p=0.01", "p=0.05", "device"]
NETWORKS = ["hybrid_mnist", "qccnn"]
ACCURACIES = ("noisy_accuracy", "ideal_accuracy", "ideal_trained_noisy_accuracy")
LOSSES = ("noisy_loss", "ideal_loss", "ideal_trained_noisy_loss")


@pytest.fixture(scope="module")
def example():
    return load_example("noisy_training")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy_training")
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--out", str(out)], capture_output=True, text=True,
                            cwd=REPO, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    return out, metrics, result.stdout


def test_quick_run_writes_every_entry_plot_and_table(quick_run):
    out, metrics, stdout = quick_run
    assert metrics["quick"] is True and metrics["settings"] == SETTINGS
    assert (out / "accuracy_vs_noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = {(e["network"], e["noise"]): e for e in metrics["summary"]}
    runs = {(r["network"], r["noise"]): r for r in metrics["runs"]}
    assert set(summary) == set(runs) == {(n, s) for n in NETWORKS for s in SETTINGS}
    for key, run in runs.items():
        for name in ACCURACIES:
            assert 0.0 <= run[name] <= 1.0, (key, name, run[name])
            assert summary[key][f"{name}_mean"] == pytest.approx(run[name])
        for name in LOSSES:
            assert math.isfinite(run[name]) and run[name] >= 0.0, (key, name, run[name])
    assert "| network | noise |" in stdout
    for setting in SETTINGS:
        assert f"| {setting} |" in stdout


def test_noiseless_model_beats_chance_and_is_its_own_ideal_copy(quick_run):
    _, metrics, _ = quick_run
    runs = {(r["network"], r["noise"]): r for r in metrics["runs"]}
    for network in NETWORKS:
        ideal = runs[(network, "p=0")]
        chance = metrics["networks"][network]["chance"]
        assert ideal["noisy_accuracy"] >= chance + 0.25, (network, ideal)
        assert ideal["noisy_accuracy"] == ideal["ideal_accuracy"] == ideal["ideal_trained_noisy_accuracy"]


def test_depolarizing_noise_keeps_every_decision_of_the_one_qubit_head(quick_run):
    # P(0) - P(1) = <Z> shrinks by a positive factor: the argmax stays, so the
    # same weights classify the same images with and without the noise.
    _, metrics, _ = quick_run
    runs = {(r["network"], r["noise"]): r for r in metrics["runs"]}
    noiseless = runs[("hybrid_mnist", "p=0")]
    for setting in ("p=0.01", "p=0.05"):
        run = runs[("hybrid_mnist", setting)]
        assert run["noisy_accuracy"] == run["ideal_accuracy"], run
        assert run["ideal_trained_noisy_accuracy"] == noiseless["noisy_accuracy"], run
        # ... but the probabilities are less confident: a larger loss for the same weights.
        assert run["ideal_trained_noisy_loss"] > noiseless["noisy_loss"], run


@pytest.mark.parametrize("p", [0.01, 0.05])
def test_mnist_head_under_the_sweep_matches_the_depolarized_bloch_vector(example, p):
    # H then Ry(x), each followed by depolarize(p): <Z> = -(1 - 4p/3)^2 sin(x).
    model = example.build_mnist(example.depolarizing_table(p))
    head = model.get_layer("quantum_head")
    x = np.array([[0.0], [0.4], [-1.1], [2.5]], np.float32)
    z = -((1 - 4 * p / 3) ** 2) * np.sin(x[:, 0])
    np.testing.assert_allclose(head(x).numpy(), np.stack([(1 + z) / 2, (1 - z) / 2], axis=-1), atol=1e-6)


def test_device_model_puts_an_error_after_every_gate_of_both_circuits(example):
    # Aer attaches errors by gate name: the device's basis is the circuits' gates, so none runs noiseless.
    from qkeras_hybrid.noise import resolve

    model, summary = example.device_noise_model(seed=7)
    assert summary["cx"]["error_mean"] > 0 and summary["measure"]["error_mean"] > 0
    qccnn = example.build_qccnn(2, model).get_layer("quantum_conv")
    mnist_circuit, _ = example.mnist_head_circuit()
    for circuit, qubits in ((qccnn.circuit, None), (mnist_circuit, 1)):
        spec = resolve(model, qubits or len(circuit.all_qubits()))
        noisy = spec.apply_cirq(circuit)
        gates = list(circuit.all_operations())
        channels = [op for op in noisy.all_operations() if cirq.VirtualTag() in op.tags]
        assert len(channels) == len(gates) > 0
    # Readout errors of the measured qubit reach the MNIST head's probabilities.
    flip = example.device_backend(seed=7).target["measure"][(0,)].error
    head = example.build_mnist(model).get_layer("quantum_head")
    assert head.noise.readout_error([cirq.LineQubit(0)])[0].tolist() == pytest.approx([flip, flip])


def test_noiseless_copy_runs_the_same_weights(example):
    noisy = example.build_qccnn(2, example.depolarizing_table(0.05))
    ideal = example.build_qccnn(2, None)
    example.copy_weights(noisy, ideal)
    for a, b in zip(noisy.trainable_weights, ideal.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(0).uniform(size=(3, 3, 3, 1)).astype(np.float32)
    assert not np.allclose(noisy(x).numpy(), ideal(x).numpy(), atol=1e-4)  # the noise is there


def test_device_noise_in_both_networks_matches_aer_density_matrices(example):
    # The same circuits on Aer's density-matrix simulator with the same NoiseModel (Aer's own semantics:
    # errors by gate name and qubits), readout errors applied by the model's confusion matrix.
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import DensityMatrix, SparsePauliOp
    from qiskit_aer import AerSimulator

    model, _ = example.device_noise_model(seed=7)
    simulator = AerSimulator(method="density_matrix", noise_model=model)

    def aer_density_matrix(circuit):
        circuit.save_density_matrix()
        return DensityMatrix(simulator.run(circuit).result().data()["density_matrix"])

    # MNIST head: H, Ry(x), then the readout of device qubit 0.
    x = np.array([[0.7], [-2.0]], np.float32)
    head = example.build_mnist(model).get_layer("quantum_head")
    confusion = model._local_readout_errors[(0,)].probabilities  # rows: prepared, columns: read
    for row, value in zip(head(x).numpy(), x[:, 0]):
        circuit = QuantumCircuit(1)
        circuit.h(0)
        circuit.ry(float(value), 0)
        expected = np.real(np.diag(aer_density_matrix(circuit).data)) @ confusion
        np.testing.assert_allclose(row, expected, atol=2e-6)

    # QCCNN: one 2x2 window; pixel i (row-major) on qubit i as Ry(2 p_i), then per layer Ry(w) and CX i -> i+1.
    conv = example.build_qccnn(2, model).get_layer("quantum_conv")
    image = np.random.default_rng(1).uniform(size=(1, 2, 2, 1)).astype(np.float32)
    got = conv(image).numpy().reshape(-1)
    weights = conv.quantum_weights.numpy()  # [filters, depth, qubits]
    for f in range(conv.filters):
        circuit = QuantumCircuit(4)
        for i, pixel in enumerate(image.reshape(-1)):
            circuit.ry(2 * float(pixel), i)
        for d in range(conv.depth):
            for i in range(4):
                circuit.ry(float(weights[f, d, i]), i)
            for i in range(3):
                circuit.cx(i, i + 1)
        expected = aer_density_matrix(circuit).expectation_value(SparsePauliOp("ZZZZ")).real
        assert got[f] == pytest.approx(expected, abs=2e-6)
