"""Shared helpers: random Cirq / Qiskit circuits, random observables, references."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import sympy  # noqa: E402
import tensorflow as tf  # noqa: E402

import cirq  # noqa: E402

# ---------------------------------------------------------------- parameters


def random_param(rng, symbols, numeric_prob=0.25, nonlinear=True):
    """A gate parameter: a number, or an (often non-linear) sympy expression."""
    if not symbols or rng.random() < numeric_prob:
        return float(rng.uniform(-2.0, 2.0))
    a, b = (symbols[i] for i in rng.integers(len(symbols), size=2))
    forms = [
        lambda: a,
        lambda: 2 * a + b,
        lambda: -0.5 * a + 0.3,
        lambda: a / sympy.pi,
        lambda: a - b,
    ]
    if nonlinear:
        forms += [lambda: sympy.sin(a), lambda: a * b, lambda: sympy.cos(a) * b + 0.1]
    expr = forms[rng.integers(len(forms))]()
    return expr if expr.free_symbols else float(expr)  # a - a is a number


def random_shift(rng):
    return float(rng.choice([0.0, -0.5, 0.25, float(rng.uniform(-1, 1))]))


# ----------------------------------------------------------- Cirq circuits


def _one_qubit_gate(rng, p):
    shift = random_shift
    makers = [
        lambda: cirq.X,
        lambda: cirq.Y,
        lambda: cirq.Z,
        lambda: cirq.H,
        lambda: cirq.S,
        lambda: cirq.T,
        lambda: cirq.rx(p()),
        lambda: cirq.ry(p()),
        lambda: cirq.rz(p()),
        lambda: cirq.XPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.YPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.ZPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.HPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.PhasedXPowGate(phase_exponent=p(), exponent=p()),
        lambda: cirq.PhasedXZGate(x_exponent=p(), z_exponent=p(), axis_phase_exponent=p()),
        lambda: cirq.MatrixGate(cirq.testing.random_unitary(2, random_state=int(rng.integers(2**31)))),
    ]
    return makers[rng.integers(len(makers))]()


def _two_qubit_gate(rng, p):
    shift = random_shift
    makers = [
        lambda: cirq.CNOT,
        lambda: cirq.CZ,
        lambda: cirq.CXPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.CZPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.SWAP,
        lambda: cirq.SwapPowGate(exponent=p()),
        lambda: cirq.ISWAP,
        lambda: cirq.ISwapPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.XXPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.YYPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.ZZPowGate(exponent=p(), global_shift=shift(rng)),
        lambda: cirq.FSimGate(theta=p(), phi=p()),
        lambda: cirq.ControlledGate(_one_qubit_gate(rng, p)),
        lambda: cirq.ControlledGate(_one_qubit_gate(rng, p), control_values=[0]),
        lambda: cirq.MatrixGate(cirq.testing.random_unitary(4, random_state=int(rng.integers(2**31)))),
    ]
    return makers[rng.integers(len(makers))]()


def _three_qubit_gate(rng, p):
    makers = [
        lambda: cirq.CCX,
        lambda: cirq.CCZ,
        lambda: cirq.CSWAP,
        lambda: cirq.CCXPowGate(exponent=p()),
        lambda: cirq.CCZPowGate(exponent=p()),
        lambda: cirq.ControlledGate(_one_qubit_gate(rng, p), num_controls=2,
                                    control_values=[int(rng.integers(2)), 1]),
        lambda: cirq.ControlledGate(
            rng.choice([cirq.ZZPowGate, cirq.XXPowGate, cirq.SwapPowGate, cirq.ISwapPowGate])(exponent=p())
        ),
        lambda: cirq.MatrixGate(cirq.testing.random_unitary(8, random_state=int(rng.integers(2**31)))),
    ]
    return makers[rng.integers(len(makers))]()


def random_qubits(rng, n):
    """n qubits of a random kind, not created in sorted order."""
    kind = rng.integers(3)
    if kind == 0:
        qubits = cirq.LineQubit.range(n)
    elif kind == 1:
        qubits = [cirq.LineQubit(int(i)) for i in rng.choice(3 * n + 3, size=n, replace=False)]
    else:
        qubits = [cirq.GridQubit(int(i) // 3, int(i) % 3) for i in rng.choice(3 * n, size=n, replace=False)]
    return [qubits[i] for i in rng.permutation(n)]


def random_cirq_circuit(rng, num_qubits, num_ops, symbols, nonlinear=True, measure=True):
    """A random circuit over the whole supported gate list; every qubit is used.

    Returns (circuit_with_terminal_measurements, circuit_without, qubits).
    """
    qubits = random_qubits(rng, num_qubits)

    def p():
        return random_param(rng, symbols, nonlinear=nonlinear)

    ops = []
    for q in qubits:  # every qubit appears, so the register is all of them
        ops.append(cirq.I(q) if rng.random() < 0.15 else _one_qubit_gate(rng, p).on(q))
    for _ in range(num_ops):
        arity = int(rng.choice([1, 2, 3], p=[0.4, 0.45, 0.15]))
        arity = min(arity, num_qubits)
        qs = [qubits[i] for i in rng.choice(num_qubits, size=arity, replace=False)]
        if arity == 1:
            op = _one_qubit_gate(rng, p).on(*qs)
            if num_qubits >= 2 and rng.random() < 0.15:  # .controlled_by
                ctrl = next(q for q in qubits if q != qs[0])
                op = op.controlled_by(ctrl, control_values=[int(rng.integers(2))])
        elif arity == 2:
            op = _two_qubit_gate(rng, p).on(*qs)
        else:
            op = _three_qubit_gate(rng, p).on(*qs)
        ops.append(op)
    bare = cirq.Circuit(ops)
    full = bare.copy()
    if measure:
        full.append(cirq.measure(*qubits, key="m"))
    return full, bare, qubits


_PAULIS = {1: cirq.X, 2: cirq.Y, 3: cirq.Z}


def random_pauli_sum(rng, qubits, max_terms=3, identity_prob=0.2):
    """A real-coefficient Pauli sum with 1..max_terms terms (Y terms included)."""
    total = cirq.PauliSum()
    for _ in range(int(rng.integers(1, max_terms + 1))):
        coeff = float(rng.uniform(-1, 1))
        string = cirq.PauliString(coeff)
        for q in qubits:
            code = int(rng.integers(4)) if rng.random() < 0.6 else 0
            if code:
                string *= _PAULIS[code](q)
        total += string
    if rng.random() < identity_prob:
        total += float(rng.uniform(-1, 1))
    return total


def cirq_expectations(circuit, observables, symbols, values):
    """Reference <O_o> per row of values [B, S] with Cirq's complex128 simulator."""
    sim = cirq.Simulator(dtype=np.complex128)
    out = []
    for row in np.atleast_2d(values):
        resolver = cirq.ParamResolver({s: float(v) for s, v in zip(symbols, row)})
        res = sim.simulate_expectation_values(circuit, observables, resolver)
        out.append(np.real(res))
    return np.array(out)


def weighted_grad(cc, values, weights, dtype=tf.float64):
    """(expectations, d sum(weights * expectations) / d values) of a compiled
    circuit, with a GradientTape."""
    v = tf.constant(values, dtype)
    with tf.GradientTape() as tape:
        tape.watch(v)
        e = cc.expectation(v, dtype=dtype)
        loss = tf.reduce_sum(tf.constant(weights, dtype) * e)
    return e.numpy(), tape.gradient(loss, v).numpy()


def central_fd(f, x, eps=1e-5):
    """Central finite differences of scalar f at x (any shape), float64."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (f(plus) - f(minus)) / (2 * eps)
    return grad


def single_gate_circuits():
    """(name, circuit): one gate family each, between fixed gates on 3 qubits."""
    a, b = sympy.symbols("a b")
    q0, q1, q2 = cirq.LineQubit.range(3)
    u1 = cirq.testing.random_unitary(2, random_state=1)
    u2 = cirq.testing.random_unitary(4, random_state=2)
    u3 = cirq.testing.random_unitary(8, random_state=3)
    cases = {
        "X": cirq.X(q0), "Y": cirq.Y(q0), "Z": cirq.Z(q0), "H": cirq.H(q0), "S": cirq.S(q0), "T": cirq.T(q0),
        "rx": cirq.rx(2 * a + b)(q0), "ry": cirq.ry(sympy.sin(a))(q0), "rz": cirq.rz(a * b)(q0),
        "XPow": cirq.XPowGate(exponent=a, global_shift=0.3)(q0),
        "YPow": cirq.YPowGate(exponent=0.37, global_shift=-0.2)(q0),
        "ZPow": cirq.ZPowGate(exponent=a / sympy.pi, global_shift=0.1)(q0),
        "HPow": cirq.HPowGate(exponent=a, global_shift=0.25)(q0),
        "PhasedXPow": cirq.PhasedXPowGate(phase_exponent=a, exponent=b)(q0),
        "PhasedXZ": cirq.PhasedXZGate(x_exponent=a, z_exponent=b, axis_phase_exponent=a * b)(q0),
        "CNOT": cirq.CNOT(q0, q1), "CXPow": cirq.CXPowGate(exponent=a)(q1, q0),
        "CZPow": cirq.CZPowGate(exponent=a, global_shift=0.2)(q0, q1),
        "SWAP": cirq.SWAP(q0, q1), "SwapPow": cirq.SwapPowGate(exponent=a)(q0, q1),
        "ISWAP": cirq.ISWAP(q1, q0), "ISwapPow": cirq.ISwapPowGate(exponent=a)(q0, q1),
        "XX": cirq.XXPowGate(exponent=a)(q0, q1), "YY": cirq.YYPowGate(exponent=a)(q0, q1),
        "ZZ": cirq.ZZPowGate(exponent=a, global_shift=-0.5)(q0, q1),
        "FSim": cirq.FSimGate(theta=a, phi=2 * b)(q0, q1),
        "FSim_numeric_theta": cirq.FSimGate(theta=0.4, phi=b)(q1, q0),
        "CCX": cirq.CCX(q0, q1, q2), "CCXPow": cirq.CCXPowGate(exponent=a)(q2, q0, q1),
        "CCZ": cirq.CCZ(q0, q1, q2), "CSWAP": cirq.CSWAP(q1, q0, q2),
        "Controlled_rx": cirq.ControlledGate(cirq.rx(a))(q0, q1),
        "Controlled_rx_cv0": cirq.ControlledGate(cirq.rx(a), control_values=[0])(q1, q0),
        "Controlled_XPow_shift": cirq.ControlledGate(cirq.XPowGate(exponent=a, global_shift=0.3))(q0, q2),
        "Controlled_PhasedX": cirq.ControlledGate(cirq.PhasedXPowGate(phase_exponent=a, exponent=b))(q0, q1),
        "Controlled_PhasedXZ": cirq.ControlledGate(
            cirq.PhasedXZGate(x_exponent=a, z_exponent=b, axis_phase_exponent=0.2))(q1, q2),
        "Controlled_FSim": cirq.ControlledGate(cirq.FSimGate(theta=a, phi=b))(q0, q1, q2),
        "Controlled_ZZ": cirq.ControlledGate(cirq.ZZPowGate(exponent=a))(q2, q0, q1),
        "Controlled2_ry_cv01": cirq.ControlledGate(cirq.ry(a), num_controls=2, control_values=[0, 1])(q0, q1, q2),
        "Controlled_matrix": cirq.ControlledGate(cirq.MatrixGate(u1), control_values=[0])(q2, q1),
        "controlled_by": cirq.rz(a)(q0).controlled_by(q1, q2, control_values=[1, 0]),
        "Matrix1": cirq.MatrixGate(u1)(q1), "Matrix2": cirq.MatrixGate(u2)(q2, q0),
        "Matrix3": cirq.MatrixGate(u3)(q1, q2, q0),
        "PhasedISwap": cirq.PhasedISwapPowGate(phase_exponent=a, exponent=b)(q0, q1),
        "GlobalPhase": cirq.GlobalPhaseGate(1j).on(),
    }
    prep = [cirq.H(q0), cirq.ry(0.7)(q1), cirq.rx(1.1)(q2), cirq.CNOT(q0, q2), cirq.S(q2)]
    return [(name, cirq.Circuit(prep, op, cirq.ry(0.3)(q0), cirq.rx(-0.4)(q1))) for name, op in cases.items()]


# --------------------------------------------------------- Qiskit circuits

QISKIT_GATES_1Q = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "p", "u"]
QISKIT_GATES_2Q = ["cx", "cy", "cz", "crx", "cry", "crz", "cp", "swap", "rxx", "ryy", "rzz", "rzx", "ch", "iswap"]
QISKIT_GATES_3Q = ["ccx", "cswap"]
_NUM_PARAMS = {"rx": 1, "ry": 1, "rz": 1, "p": 1, "u": 3, "crx": 1, "cry": 1, "crz": 1,
               "cp": 1, "rxx": 1, "ryy": 1, "rzz": 1, "rzx": 1}


def qiskit_param(rng, params, numeric_prob=0.25):
    """A number, a Parameter or a ParameterExpression (2*theta, a+b, a*b, sin)."""
    if not params or rng.random() < numeric_prob:
        return float(rng.uniform(-2.0, 2.0))
    a, b = (params[i] for i in rng.integers(len(params), size=2))
    forms = [lambda: a, lambda: 2 * a, lambda: a + b, lambda: -0.5 * a + 0.3, lambda: a * b,
             lambda: a.sin() if hasattr(a, "sin") else a]
    return forms[rng.integers(len(forms))]()


def random_qiskit_circuit(rng, num_qubits, num_ops, params, measure=True):
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(num_qubits)
    for q in range(num_qubits):
        qc.h(q) if rng.random() < 0.5 else qc.ry(qiskit_param(rng, params), q)
    for _ in range(num_ops):
        pool = QISKIT_GATES_1Q + (QISKIT_GATES_2Q if num_qubits >= 2 else []) + (
            QISKIT_GATES_3Q if num_qubits >= 3 else [])
        name = pool[rng.integers(len(pool))]
        arity = 1 if name in QISKIT_GATES_1Q else 2 if name in QISKIT_GATES_2Q else 3
        qs = [int(i) for i in rng.choice(num_qubits, size=arity, replace=False)]
        args = [qiskit_param(rng, params) for _ in range(_NUM_PARAMS.get(name, 0))]
        getattr(qc, name)(*args, *qs)
    if measure:
        qc.measure_all()
    return qc


def random_sparse_pauli_op(rng, num_qubits, max_terms=3):
    from qiskit.quantum_info import SparsePauliOp

    labels, coeffs = [], []
    for _ in range(int(rng.integers(1, max_terms + 1))):
        labels.append("".join("IXYZ"[int(rng.integers(4))] for _ in range(num_qubits)))
        coeffs.append(float(rng.uniform(-1, 1)))
    return SparsePauliOp(labels, coeffs)


def qiskit_expectations(qc, observables, params, values):
    """Reference with qiskit.quantum_info.Statevector, per row of values."""
    from qiskit.quantum_info import Statevector

    bare = qc.remove_final_measurements(inplace=False)
    out = []
    for row in np.atleast_2d(values):
        bound = bare.assign_parameters({p: float(v) for p, v in zip(params, row)})
        sv = Statevector(bound)
        out.append([np.real(sv.expectation_value(o)) for o in observables])
    return np.array(out)


# ------------------------------------------------------------ fresh processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fresh_python(code):
    """Runs `code` in a new Python process (nothing cached from this one); returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def load_example(name, folder="examples"):
    """The module of `<folder>/<name>.py`, imported from its file."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, folder, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
