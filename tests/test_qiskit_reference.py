"""The native op on Qiskit circuits against qiskit.quantum_info.Statevector,
and the same circuit written in Cirq and in Qiskit giving the same values."""

import functools

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.quantum_info import Pauli, SparsePauliOp

from conftest import (cirq_expectations, qiskit_expectations, random_qiskit_circuit,
                      random_sparse_pauli_op)

NUM_SEEDS = 80
BATCH = 2


def _params(rng):
    kind = rng.integers(3)
    if kind == 0:
        return []
    if kind == 1:
        return [Parameter(n) for n in ["theta", "phi", "alpha"][: int(rng.integers(1, 4))]]
    return list(ParameterVector("v", int(rng.integers(1, 5)))) + [Parameter("w")]


@functools.lru_cache(maxsize=8)
def _case(seed):
    rng = np.random.default_rng(1000 + seed)
    num_qubits = 1 + seed % 8
    params = _params(rng)
    qc = random_qiskit_circuit(rng, num_qubits, int(rng.integers(3, 4 * num_qubits + 6)), params)
    observables = [random_sparse_pauli_op(rng, num_qubits) for _ in range(int(rng.integers(1, 4)))]
    used = list(qc.parameters)  # what the circuit really uses, in Qiskit's order
    values = rng.uniform(-np.pi, np.pi, size=(BATCH, len(used)))
    expected = qiskit_expectations(qc, observables, used, values)
    return qc, observables, used, values, expected


@pytest.mark.parametrize("fuse", (1, 2))
@pytest.mark.parametrize("seed", range(NUM_SEEDS))
def test_random_qiskit_circuit_matches_statevector(seed, fuse):
    qc, observables, used, values, expected = _case(seed)
    cc = qkeras_hybrid.compile_circuit(qc, observables, max_fused_qubits=fuse)
    assert cc.symbol_names == [p.name for p in used]
    assert cc.num_qubits == qc.num_qubits
    got64 = cc.expectation(values, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got64, expected, atol=1e-10, err_msg=f"seed={seed} fuse={fuse}\n{qc}")
    got32 = cc.expectation(values, dtype=tf.float32).numpy()
    np.testing.assert_allclose(got32, expected, atol=1e-5, err_msg=f"seed={seed} fuse={fuse}\n{qc}")


def _gate_cases():
    theta, phi, lam = Parameter("theta"), Parameter("phi"), Parameter("lam")
    v = ParameterVector("v", 2)
    one = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx"]
    cases = [(g, lambda qc, g=g: getattr(qc, g)(1)) for g in one]
    cases += [
        ("rx", lambda qc: qc.rx(2 * theta, 0)),
        ("ry", lambda qc: qc.ry(theta + phi, 1)),
        ("rz", lambda qc: qc.rz(theta * phi, 2)),
        ("p", lambda qc: qc.p(-0.5 * theta + 0.3, 0)),
        ("u", lambda qc: qc.u(theta, phi, lam, 1)),
        ("u_numeric", lambda qc: qc.u(0.3, -1.2, 2.2, 1)),
        ("u_mixed", lambda qc: qc.u(theta, 0.4, 2 * phi, 2)),
        ("cx", lambda qc: qc.cx(2, 0)),
        ("cy", lambda qc: qc.cy(0, 1)),
        ("cz", lambda qc: qc.cz(1, 2)),
        ("crx", lambda qc: qc.crx(v[0], 0, 2)),
        ("cry", lambda qc: qc.cry(2 * v[1], 2, 1)),
        ("crz", lambda qc: qc.crz(theta, 1, 0)),
        ("cp", lambda qc: qc.cp(phi, 0, 1)),
        ("swap", lambda qc: qc.swap(0, 2)),
        ("rxx", lambda qc: qc.rxx(theta, 0, 1)),
        ("ryy", lambda qc: qc.ryy(theta, 2, 1)),
        ("rzz", lambda qc: qc.rzz(theta, 0, 2)),
        ("rzx", lambda qc: qc.rzx(theta, 2, 0)),
        ("ccx", lambda qc: qc.ccx(2, 0, 1)),
        ("cswap", lambda qc: qc.cswap(1, 2, 0)),
        ("cu", lambda qc: qc.cu(theta, phi, lam, 0.3, 0, 1)),
        ("sin_expr", lambda qc: qc.ry(theta.sin(), 0)),
        ("barrier", lambda qc: (qc.barrier(), qc.rx(theta, 0))),
    ]
    return [pytest.param(f, id=name) for name, f in cases]


@pytest.mark.parametrize("add_gate", _gate_cases())
def test_each_qiskit_gate_matches_statevector(add_gate):
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(0.7, 1)
    qc.rx(1.1, 2)
    qc.cx(0, 2)
    add_gate(qc)
    qc.ry(0.3, 0)
    qc.rx(-0.4, 1)
    qc.measure_all()
    rng = np.random.default_rng(0)
    observables = [SparsePauliOp(p) for p in ("IIX", "IXI", "XII", "IIY", "IYI", "YII", "IIZ", "IZI", "ZII")]
    observables += [random_sparse_pauli_op(rng, 3, max_terms=4) for _ in range(3)]
    used = list(qc.parameters)
    values = rng.uniform(-np.pi, np.pi, size=(2, len(used)))
    expected = qiskit_expectations(qc, observables, used, values)
    for fuse in (1, 2):
        cc = qkeras_hybrid.compile_circuit(qc, observables, max_fused_qubits=fuse)
        got = cc.expectation(values, dtype=tf.float64).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-10, err_msg=f"fuse={fuse}\n{qc}")


def _more_instruction_cases():
    from qiskit.circuit.library import (GlobalPhaseGate, PauliEvolutionGate, RXGate, RZGate, U2Gate,
                                        XXPlusYYGate)

    t, p = Parameter("t"), Parameter("p")
    v = ParameterVector("v", 2)
    sub = QuantumCircuit(2)
    sub.rx(t, 0)
    sub.cx(0, 1)
    sub.rzz(2 * p, 0, 1)
    phased = QuantumCircuit(1, global_phase=t)  # the phase matters once controlled
    phased.rx(p, 0)
    phase_gate = QuantumCircuit(1)
    phase_gate.append(GlobalPhaseGate(t), [])
    phase_gate.ry(p, 0)
    cases = {
        "u2": lambda qc: qc.append(U2Gate(t, p), [1]),
        "r": lambda qc: qc.r(t, p, 0),
        "cs_csx": lambda qc: (qc.cs(0, 1), qc.csx(1, 0)),
        "rccx": lambda qc: qc.rccx(0, 1, 2),
        "mcx_4_qubits": lambda qc: qc.mcx([0, 1, 2], 3),
        "mcrx": lambda qc: qc.append(RXGate(t).control(2), [0, 1, 2]),
        "mcp_4_qubits": lambda qc: qc.mcp(t, [0, 1, 2], 3),
        "xx_plus_yy": lambda qc: qc.append(XXPlusYYGate(t, p), [0, 2]),
        "ecr_dcx": lambda qc: (qc.ecr(0, 3), qc.dcx(3, 1)),
        "pauli_evolution": lambda qc: qc.append(PauliEvolutionGate(SparsePauliOp(["XZ", "YY"]), time=t), [0, 3]),
        "custom_gate": lambda qc: qc.append(sub.to_gate(), [3, 1]),
        "custom_gate_bound_to_expressions": lambda qc: qc.append(
            sub.assign_parameters({t: 2 * v[0], p: v[0] * v[1]}).to_gate(), [0, 2]),
        "controlled_custom_gate_with_symbolic_global_phase": lambda qc: qc.append(phased.to_gate().control(1), [0, 1]),
        "controlled_global_phase_gate": lambda qc: qc.append(phase_gate.to_gate().control(1), [2, 3]),
        "cu_symbolic_gamma": lambda qc: qc.cu(t, p, 0.2, t * p, 2, 0),
        "vector_nonlinear": lambda qc: (qc.crx(v[0] * v[1] + v[1].sin(), 3, 1), qc.u(v[0], v[1].cos(), v[0] ** 2, 2)),
        "exp": lambda qc: qc.cry(v[0].exp(), 0, 1),
        "power_and_inverse": lambda qc: (qc.append(RXGate(t).power(2), [0]), qc.append(RZGate(t + p).inverse(), [1])),
        "unitary": lambda qc: qc.unitary(np.eye(4)[[1, 0, 3, 2]], [0, 2]),
        "symbolic_global_phase": lambda qc: (setattr(qc, "global_phase", t), qc.rx(p, 0)),
    }
    return [pytest.param(f, id=name) for name, f in cases.items()]


@pytest.mark.parametrize("add_gate", _more_instruction_cases())
def test_more_qiskit_instructions_match_statevector(add_gate):
    qc = QuantumCircuit(4)
    qc.h(range(4))
    qc.ry(0.4, 1)
    qc.cx(1, 2)
    add_gate(qc)
    qc.rx(0.3, 0)
    qc.ry(0.5, 3)
    observables = [SparsePauliOp(s) for s in ["IIIX", "IIXI", "IXII", "XIII", "IIIY", "IIYI", "IYII", "YIII"]]
    observables += [SparsePauliOp(["ZZII", "IXYZ"], [0.5, -1.0])]
    used = list(qc.parameters)
    values = np.random.default_rng(4).uniform(-np.pi, np.pi, size=(2, len(used)))
    expected = qiskit_expectations(qc, observables, used, values)
    cc = qkeras_hybrid.compile_circuit(qc, observables)
    np.testing.assert_allclose(cc.expectation(values, dtype=tf.float64), expected, atol=1e-10, err_msg=str(qc))


def test_several_registers_use_global_qubit_order():
    from qiskit import QuantumRegister

    a, b = QuantumRegister(2, "a"), QuantumRegister(1, "b")
    theta = Parameter("theta")
    qc = QuantumCircuit(a, b)
    qc.ry(theta, b[0])
    qc.cx(b[0], a[1])
    qc.h(a[0])
    observables = [SparsePauliOp("ZII"), SparsePauliOp("IZI"), SparsePauliOp("IIX"), SparsePauliOp("ZZI")]
    cc = qkeras_hybrid.compile_circuit(qc, observables)
    values = np.array([[0.4], [2.0]])
    expected = qiskit_expectations(qc, observables, [theta], values)
    np.testing.assert_allclose(cc.expectation(values, dtype=tf.float64), expected, atol=1e-10)
    np.testing.assert_allclose(expected[:, 0], np.cos(values[:, 0]), atol=1e-12)  # qubit 2 is b[0]


def test_qiskit_pauli_observable_and_explicit_symbol_order():
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(2)
    qc.rx(a, 0)
    qc.cx(0, 1)
    qc.ry(b, 1)
    cc = qkeras_hybrid.compile_circuit(qc, [Pauli("ZI"), SparsePauliOp("XZ", -0.7)], symbols=[b, a])
    assert cc.symbol_names == ["b", "a"]
    values = np.array([[0.4, 1.3]])
    expected = qiskit_expectations(qc, [SparsePauliOp("ZI"), SparsePauliOp("XZ", -0.7)], [b, a], values)
    np.testing.assert_allclose(cc.expectation(values, dtype=tf.float64), expected, atol=1e-10)


# ------------------------------------------------ the same circuit in both

def _twin_circuits(rng, n):
    """The same random circuit in Cirq (LineQubit(i)) and in Qiskit (qubit i)."""
    names = ["x0", "x1", "x2"]
    syms = [sympy.Symbol(s) for s in names]
    params = [Parameter(s) for s in names]

    def expr():
        i, j = rng.integers(3, size=2)
        c = float(rng.choice([1.0, 2.0, -0.5]))
        form = int(rng.integers(3))
        if form == 0:
            return c * syms[i], c * params[i]
        if form == 1:
            return syms[i] + syms[j], params[i] + params[j]
        return syms[i] * syms[j], params[i] * params[j]

    q = cirq.LineQubit.range(n)
    cq = cirq.Circuit(cirq.H.on_each(*q))
    qc = QuantumCircuit(n)
    qc.h(range(n))
    for k, (rot, qrot) in enumerate([(cirq.rx, qc.rx), (cirq.ry, qc.ry), (cirq.rz, qc.rz)]):
        cq.append(rot(syms[k])(q[0]))  # every symbol is used
        qrot(params[k], 0)
    for _ in range(6 * n):
        kind = int(rng.integers(12 if n > 1 else 6))
        i, j = (int(k) for k in rng.choice(n, size=2, replace=n < 2))
        if kind < 3:
            s, p = expr()
            rot = [cirq.rx, cirq.ry, cirq.rz][kind]
            cq.append(rot(s)(q[i]))
            [qc.rx, qc.ry, qc.rz][kind](p, i)
        elif kind == 3:
            s, p = expr()
            cq.append(cirq.ZPowGate(exponent=s / sympy.pi)(q[i]))
            qc.p(p, i)
        elif kind == 4:
            cq.append(cirq.S(q[i]))
            qc.s(i)
        elif kind == 5:
            cq.append(cirq.T(q[i]) ** -1)
            qc.tdg(i)
        elif kind == 6:
            cq.append(cirq.CNOT(q[i], q[j]))
            qc.cx(i, j)
        elif kind == 7:
            cq.append(cirq.CZ(q[i], q[j]))
            qc.cz(i, j)
        elif kind == 8:
            s, p = expr()
            cq.append(cirq.rx(s).on(q[j]).controlled_by(q[i]))
            qc.crx(p, i, j)
        elif kind == 9:
            s, p = expr()
            cq.append(cirq.ZZPowGate(exponent=s / sympy.pi, global_shift=-0.5)(q[i], q[j]))
            qc.rzz(p, i, j)
        elif kind == 10:
            s, p = expr()
            cq.append(cirq.ControlledGate(cirq.ZPowGate(exponent=s / sympy.pi))(q[i], q[j]))
            qc.cp(p, i, j)
        else:
            cq.append(cirq.SWAP(q[i], q[j]))
            qc.swap(i, j)
    labels = ["".join("IXYZ"[int(k)] for k in rng.integers(4, size=n)) for _ in range(3)]
    coeffs = rng.uniform(-1, 1, size=3)
    sp = SparsePauliOp(labels, coeffs)
    ps = cirq.PauliSum()
    for label, c in zip(labels, coeffs):
        string = cirq.PauliString(float(c))
        for k, ch in enumerate(reversed(label)):  # Qiskit labels are little-endian
            if ch != "I":
                string *= {"X": cirq.X, "Y": cirq.Y, "Z": cirq.Z}[ch](q[k])
        ps += string
    return cq, qc, ps, sp, syms, params


@pytest.mark.parametrize("seed", range(12))
def test_same_circuit_in_cirq_and_qiskit(seed):
    rng = np.random.default_rng(seed)
    n = 1 + seed % 5
    cq, qc, ps, sp, syms, params = _twin_circuits(rng, n)
    values = rng.uniform(-np.pi, np.pi, size=(2, 3))
    cc_cirq = qkeras_hybrid.compile_circuit(cq, [ps], symbols=syms)
    cc_qiskit = qkeras_hybrid.compile_circuit(qc, [sp], symbols=params)
    got_cirq = cc_cirq.expectation(values, dtype=tf.float64).numpy()
    got_qiskit = cc_qiskit.expectation(values, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got_cirq, got_qiskit, atol=1e-10)
    ref_qiskit = qiskit_expectations(qc, [sp], params, values)
    ref_cirq = cirq_expectations(cq, [ps], syms, values)
    np.testing.assert_allclose(ref_cirq, ref_qiskit, atol=1e-10)  # the twins really are the same
    np.testing.assert_allclose(got_qiskit, ref_qiskit, atol=1e-10)
