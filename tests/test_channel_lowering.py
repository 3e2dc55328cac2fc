"""Channels in circuits lower to Primitive(kraus=...) with the right Kraus operators and qubit order.

The reference is a small numpy density-matrix evaluator of the lowered
primitives (`density_matrix` below), compared with Cirq's
DensityMatrixSimulator and Qiskit Aer's density_matrix method.
"""

import numpy as np
import pytest
import sympy

import cirq
from qiskit import QuantumCircuit
from qiskit.quantum_info import Kraus, SuperOp
from qiskit_aer import AerSimulator
from qiskit_aer.noise import amplitude_damping_error, depolarizing_error, pauli_error, thermal_relaxation_error

from qkeras_hybrid.circuits import UnsupportedGateError, cirq_compiler, qiskit_compiler

# ------------------------------------------------------------------ reference


def _apply(rho, ops, qubits, n):
    """sum_k K rho K^dagger for K on `qubits` (the first the MSB of K's index)."""
    k = len(qubits)
    t = rho.reshape([2] * (2 * n))
    rows, cols = list(qubits), [n + q for q in qubits]
    out = np.zeros_like(t)
    for op in ops:
        m = np.asarray(op).reshape([2] * (2 * k))
        a = np.moveaxis(np.tensordot(m, t, axes=(list(range(k, 2 * k)), rows)), list(range(k)), rows)
        out += np.moveaxis(np.tensordot(m.conj(), a, axes=(list(range(k, 2 * k)), cols)), list(range(k)), cols)
    return out.reshape(rho.shape)


def density_matrix(primitives, num_qubits, values=None):
    """The final density matrix of `primitives` from |0..0>, register qubit 0 the most significant bit.

    values: {symbol name: number} for the exponential gates' angles.
    """
    values = values or {}
    dim = 2**num_qubits
    rho = np.zeros((dim, dim), dtype=complex)
    rho[0, 0] = 1.0
    for p in primitives:
        if p.is_channel:
            ops = p.kraus
        elif p.is_constant:
            ops = [p.matrix]
        else:
            angle = float(p.angle.subs({s: values[str(s)] for s in p.angle.free_symbols}))
            ops = [p.unitary_at(angle)]
        rho = _apply(rho, ops, p.qubits, num_qubits)
    return rho


def little_to_big_endian(rho, num_qubits):
    """A density matrix with bit i = qubit i (Qiskit) reordered to qubit 0 as the MSB (Cirq)."""
    n = num_qubits
    axes = list(range(n - 1, -1, -1))
    return np.asarray(rho).reshape([2] * (2 * n)).transpose(axes + [n + a for a in axes]).reshape(rho.shape)


def aer_density_matrix(circuit, noise_model=None):
    circuit = circuit.copy()
    circuit.save_density_matrix()
    result = AerSimulator(method="density_matrix").run(circuit, noise_model=noise_model).result()
    return little_to_big_endian(np.asarray(result.data()["density_matrix"]), circuit.num_qubits)


def cirq_density_matrix(circuit, qubits, values=None):
    sim = cirq.DensityMatrixSimulator(dtype=np.complex128)
    return sim.simulate(circuit, cirq.ParamResolver(values or {}), qubit_order=qubits).final_density_matrix


def lower_cirq(circuit, qubits):
    return cirq_compiler.lower_circuit(circuit, qubits)


# ------------------------------------------------------------------ Cirq

Q = cirq.LineQubit.range(3)
KRAUS = cirq.KrausChannel([np.sqrt(0.7) * np.eye(2), np.sqrt(0.3) * np.array([[0, 1j], [1, 0]])])
MIXED = cirq.MixedUnitaryChannel([(0.6, np.eye(2)), (0.4, cirq.unitary(cirq.H))])
_RANDOM_2Q_UNITARY = cirq.testing.random_unitary(4, random_state=3)
KRAUS_2Q = cirq.KrausChannel([np.sqrt(0.8) * np.eye(4), np.sqrt(0.2) * _RANDOM_2Q_UNITARY])

CHANNELS = {
    "depolarize": (cirq.depolarize(0.1), 1),
    "depolarize_2q": (cirq.depolarize(0.15, n_qubits=2), 2),
    "asymmetric_depolarize": (cirq.asymmetric_depolarize(0.05, 0.1, 0.2), 1),
    "bit_flip": (cirq.bit_flip(0.2), 1),
    "phase_flip": (cirq.phase_flip(0.3), 1),
    "phase_damp": (cirq.phase_damp(0.4), 1),
    "amplitude_damp": (cirq.amplitude_damp(0.35), 1),
    "generalized_amplitude_damp": (cirq.generalized_amplitude_damp(0.3, 0.2), 1),
    "reset": (cirq.ResetChannel(), 1),
    "kraus": (KRAUS, 1),
    "mixed_unitary": (MIXED, 1),
    "kraus_2q": (KRAUS_2Q, 2),
    "asymmetric_depolarize_2q": (cirq.asymmetric_depolarize(error_probabilities={"XZ": 0.1, "IY": 0.2}), 2),
}


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_cirq_channel_lowers_to_its_kraus_operators(name):
    channel, width = CHANNELS[name]
    targets = [Q[2], Q[0]][:width]  # reversed pair: the first qubit is the MSB of the Kraus matrices
    primitives = lower_cirq(cirq.Circuit(channel.on(*targets)), Q)
    assert len(primitives) == 1
    (p,) = primitives
    assert p.is_channel and p.matrix is None and p.angle is None
    assert p.qubits == tuple(Q.index(q) for q in targets)
    np.testing.assert_allclose(p.kraus, np.asarray(cirq.kraus(channel)), atol=1e-15)


@pytest.mark.parametrize("seed", range(4))
def test_random_noisy_cirq_circuits_match_cirq_density_matrix(seed):
    rng = np.random.default_rng(seed)
    a, b = sympy.symbols("a b")
    values = {"a": float(rng.uniform(-3, 3)), "b": float(rng.uniform(-3, 3))}
    ops = []
    names = sorted(CHANNELS)
    for _ in range(10):
        qubits = [Q[i] for i in rng.permutation(3)]
        ops += [cirq.ry(a * (1 + rng.random()))(qubits[0]), cirq.H(qubits[1]), cirq.CNOT(qubits[0], qubits[2])]
        ops.append(cirq.rz(b - 0.3)(qubits[1]))
        channel, width = CHANNELS[names[rng.integers(len(names))]]
        ops.append(channel.on(*qubits[:width]))
    circuit = cirq.Circuit(ops + [cirq.measure(*Q)])
    ours = density_matrix(lower_cirq(circuit, Q), 3, values)
    reference = cirq_density_matrix(circuit[:-1], Q, values)
    np.testing.assert_allclose(ours, reference, atol=1e-10)


def test_single_unitary_kraus_channel_is_a_gate():
    u = cirq.unitary(cirq.rx(0.4))
    (p,) = lower_cirq(cirq.Circuit(cirq.KrausChannel([u]).on(Q[1])), Q)
    assert not p.is_channel
    np.testing.assert_allclose(p.matrix, u)


def test_noise_model_circuit_lowers():
    circuit = cirq.Circuit(cirq.H(Q[0]), cirq.CNOT(Q[0], Q[1])).with_noise(cirq.amplitude_damp(0.1))
    primitives = lower_cirq(circuit, Q[:2])
    assert sum(p.is_channel for p in primitives) == 4
    np.testing.assert_allclose(density_matrix(primitives, 2), cirq_density_matrix(circuit, Q[:2]), atol=1e-12)


def test_cirq_channel_on_three_qubits_raises_naming_it():
    circuit = cirq.Circuit(cirq.depolarize(0.1, n_qubits=3).on(*Q))
    with pytest.raises(UnsupportedGateError, match=r"depolarize.*3 qubits.*at most 2 qubits"):
        lower_cirq(circuit, Q)


def test_cirq_channel_with_symbolic_strength_raises():
    op = cirq.X.with_probability(sympy.Symbol("p")).on(Q[0])
    with pytest.raises(UnsupportedGateError, match=r"symbolic strengths \['p'\]"):
        lower_cirq(cirq.Circuit(op), Q)


def test_non_channel_non_unitary_gate_still_raises():
    class NoKraus(cirq.Gate):
        def _num_qubits_(self):
            return 1

        def __repr__(self):
            return "NoKraus()"

    with pytest.raises(UnsupportedGateError, match="NoKraus"):
        lower_cirq(cirq.Circuit(NoKraus().on(Q[0])), Q)


# ------------------------------------------------------------------ Qiskit


def _asymmetric_2q_error():
    # tensor: the right operand acts on the error's qubit 0 (the instruction's first qarg).
    return amplitude_damping_error(0.4).tensor(pauli_error([("X", 0.3), ("I", 0.7)]))


def _qiskit_circuit_with(build):
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(0.7, 1)
    qc.cx(0, 2)
    qc.rx(1.1, 2)
    build(qc)
    qc.rzx(0.4, 2, 1)
    qc.h(1)
    return qc


QISKIT_FORMS = {
    "reset": lambda qc: qc.reset(2),
    "kraus_instruction": lambda qc: qc.append(Kraus(amplitude_damping_error(0.3).to_quantumchannel()).to_instruction(),
                                             [1]),
    "superop": lambda qc: qc.append(SuperOp(thermal_relaxation_error(50, 30, 20)), [0]),
    "quantum_error": lambda qc: qc.append(depolarizing_error(0.2, 1), [2]),
    "error_to_instruction": lambda qc: qc.append(amplitude_damping_error(0.5).to_instruction(), [0]),
    "two_qubit_error": lambda qc: qc.append(_asymmetric_2q_error(), [2, 0]),
    "two_qubit_error_other_order": lambda qc: qc.append(_asymmetric_2q_error(), [0, 2]),
    "two_qubit_kraus": lambda qc: qc.append(Kraus(_asymmetric_2q_error()).to_instruction(), [1, 2]),
    "composite_with_reset": lambda qc: qc.append(_composite_with_reset(), [2, 1]),
}


def _composite_with_reset():
    sub = QuantumCircuit(2, name="sub")
    sub.ry(0.5, 0)
    sub.reset(1)
    sub.cx(0, 1)
    sub.append(amplitude_damping_error(0.2), [0])
    return sub.to_instruction()


@pytest.mark.parametrize("form", sorted(QISKIT_FORMS))
def test_qiskit_channel_matches_aer_density_matrix(form):
    qc = _qiskit_circuit_with(QISKIT_FORMS[form])
    primitives = qiskit_compiler.lower_circuit(qc)
    assert any(p.is_channel for p in primitives)
    reference = aer_density_matrix(qc.decompose(gates_to_decompose=["sub"]))  # Aer runs no custom instructions
    np.testing.assert_allclose(density_matrix(primitives, 3), reference, atol=1e-10)


def test_qiskit_parameterized_circuit_with_channel():
    from qiskit.circuit import Parameter

    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.append(_asymmetric_2q_error(), [0, 1])
    qc.rzx(2 * theta, 1, 0)
    primitives = qiskit_compiler.lower_circuit(qc)
    ours = density_matrix(primitives, 2, {"theta": 0.8})
    np.testing.assert_allclose(ours, aer_density_matrix(qc.assign_parameters({theta: 0.8})), atol=1e-10)


def test_qiskit_channel_on_three_qubits_raises_naming_it():
    qc = QuantumCircuit(3)
    qc.append(depolarizing_error(0.1, 3), [0, 1, 2])
    with pytest.raises(UnsupportedGateError, match=r"'quantum_channel' on qubits \[0, 1, 2\].*at most 2"):
        qiskit_compiler.lower_circuit(qc)
