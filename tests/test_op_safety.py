"""Malformed programs fed straight to the raw op must raise, never crash, with a
message naming the problem; and the compiler's errors on bad circuits."""

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid
from qkeras_hybrid import ops
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp

_PLUS = np.array([[1, 1], [1, 1]]) / 2
_MINUS = np.array([[1, -1], [-1, 1]]) / 2
_CNOT = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=complex)


def _flat(m):
    m = np.asarray(m, dtype=complex)
    return np.stack([m.real, m.imag], axis=-1).reshape(-1)


def _valid_program():
    """Hand-built from program.h's layout: Rx(angle) on q0, then CNOT(q0, q1);
    observables <Z1> + 0.5 <X0> and <Y0 X1>."""
    rx_data = np.concatenate([[0.5], _flat(_PLUS), [-0.5], _flat(_MINUS)])  # Rx = exp(-i a X/2)
    return dict(
        num_qubits=np.array(2, dtype=np.int32),
        block_meta=np.array([[1, 0, 0, 0, 0, 0, 1], [2, 0, 1, 0, 0, 1, 1]], dtype=np.int32),
        gate_meta=np.array([[1, 0, 0, 2], [0, -1, rx_data.size, 1]], dtype=np.int32),
        gate_data=np.concatenate([rx_data, _flat(_CNOT)]),
        pauli_masks=np.array([[[0, 2], [1, 0]], [[3, 1], [0, 0]]], dtype=np.int64),
        pauli_coeffs=np.array([[1.0, 0.5], [1.0, 0.0]]),
        angles=np.array([[0.3], [1.1], [-2.0]]),
    )


_ORDER = ["num_qubits", "block_meta", "gate_meta", "gate_data", "pauli_masks", "pauli_coeffs", "angles"]


def _args(p, dtype=tf.float64):
    return [tf.constant(p[k], dtype=dtype if k == "angles" else None) for k in _ORDER]


def test_hand_built_program_is_valid_and_correct():
    p = _valid_program()
    a = p["angles"][:, 0]
    # Rx(a)|0> then CNOT: <Z1> = cos a, <X0> = 0, <Y0 X1> = -sin a.
    expected = np.stack([np.cos(a), -np.sin(a)], axis=1)
    q = cirq.LineQubit.range(2)
    sim = cirq.Simulator(dtype=np.complex128)
    for row, angle in zip(expected, a):
        ref = sim.simulate_expectation_values(
            cirq.Circuit(cirq.rx(angle)(q[0]), cirq.CNOT(*q)),
            [cirq.Z(q[1]) + 0.5 * cirq.X(q[0]), cirq.Y(q[0]) * cirq.X(q[1])])
        np.testing.assert_allclose(row, np.real(ref), atol=1e-12)
    for dtype, tol in ((tf.float64, 1e-12), (tf.float32, 1e-6)):
        got = ops.expectation(*_args(p, dtype)).numpy()
        np.testing.assert_allclose(got, expected, atol=tol)
        upstream = tf.ones([3, 2], dtype)
        grad = ops.expectation_adjoint_grad(*_args(p, dtype), upstream).numpy()
        np.testing.assert_allclose(grad[:, 0], -np.sin(a) - np.cos(a), atol=tol * 10)


def _set(key, index, value):
    def mutate(p):
        p[key] = p[key].copy()
        p[key][index] = value
    return mutate


def _replace(key, fn):
    def mutate(p):
        p[key] = fn(p[key])
    return mutate


# (id, mutation, substring of the error)
MALFORMED = [
    ("qubit_out_of_range", _set("block_meta", (1, 2), 2), "qubit index 2 out of range"),
    ("qubit_negative", _set("block_meta", (0, 1), -1), "qubit index -1 out of range"),
    ("qubit_repeated", _set("block_meta", (1, 2), 0), "repeated"),
    ("block_size_0", _set("block_meta", (0, 0), 0), "block size must be 1, 2 or 3"),
    ("block_size_4", _set("block_meta", (1, 0), 4), "block size must be 1, 2 or 3"),
    ("block_kind_unknown", _set("block_meta", (0, 4), 7), "unknown block kind 7"),
    ("block_kind_negative", _set("block_meta", (1, 4), -1), "unknown block kind -1"),
    ("gate_range_past_end", _set("block_meta", (1, 6), 2), "not inside gate_meta"),
    ("gate_range_negative_first", _set("block_meta", (1, 5), -1), "not inside gate_meta"),
    ("gate_range_empty", _set("block_meta", (1, 6), 0), "not inside gate_meta"),
    ("gate_range_huge", _set("block_meta", (1, 6), 2**31 - 1), "not inside gate_meta"),
    ("gate_in_two_blocks", _set("block_meta", (1, 5), 0), "already belongs to block"),
    ("gate_in_no_block",
     _replace("gate_meta", lambda g: np.concatenate([g, g[1:]])), "belongs to no block"),
    ("gate_type_unknown", _set("gate_meta", (1, 0), 5), "unknown gate type 5"),
    ("angle_slot_too_big", _set("gate_meta", (0, 1), 1), "angle slot 1 out of range"),
    ("angle_slot_negative", _set("gate_meta", (0, 1), -3), "angle slot -3 out of range"),
    ("num_terms_too_big", _set("gate_meta", (0, 3), 3), "num_terms must be in [1, 2]"),
    ("num_terms_zero", _set("gate_meta", (0, 3), 0), "num_terms must be in [1, 2]"),
    ("data_offset_past_end", _set("gate_meta", (1, 2), 19), "outside gate_data"),
    ("data_offset_negative", _set("gate_meta", (1, 2), -1), "outside gate_data"),
    ("data_offset_int32_max", _set("gate_meta", (1, 2), 2**31 - 1), "outside gate_data"),
    ("gate_data_truncated", _replace("gate_data", lambda d: d[:-1]), "outside gate_data"),
    ("gate_data_empty", _replace("gate_data", lambda d: d[:0]), "outside gate_data"),
    ("gate_data_nan", _set("gate_data", 5, np.nan), "gate_data[5] is not finite"),
    ("gate_data_inf", _set("gate_data", 30, -np.inf), "gate_data[30] is not finite"),
    ("pauli_coeff_nan", _set("pauli_coeffs", (0, 1), np.nan), "pauli_coeffs[0, 1] is not finite"),
    ("pauli_mask_outside_register", _set("pauli_masks", (0, 0, 1), 4), "outside the 2-qubit register"),
    ("pauli_mask_x_outside_register", _set("pauli_masks", (1, 1, 0), 2**40), "outside the 2-qubit register"),
    ("pauli_mask_negative", _set("pauli_masks", (1, 0, 0), -1), "outside the 2-qubit register"),
    ("angle_nan", _set("angles", (1, 0), np.nan), "angles[1, 0] is not finite"),
    ("angle_inf", _set("angles", (2, 0), np.inf), "angles[2, 0] is not finite"),
    ("angle_minus_inf", _set("angles", (0, 0), -np.inf), "angles[0, 0] is not finite"),
    ("num_qubits_0", _set("num_qubits", (), 0), "num_qubits must be in [1, 62]"),
    ("num_qubits_negative", _set("num_qubits", (), -5), "num_qubits must be in [1, 62]"),
    ("num_qubits_63", _set("num_qubits", (), 63), "num_qubits must be in [1, 62]"),
    ("num_qubits_1_with_2_qubit_block", _set("num_qubits", (), 1), "qubit index 1 out of range"),
    # Shapes (the kernel checks them; traced with unknown shapes below).
    ("num_qubits_not_scalar", _replace("num_qubits", lambda n: np.array([n])), "num_qubits must be a scalar"),
    ("block_meta_6_columns", _replace("block_meta", lambda b: b[:, :6]), "block_meta must have shape [num_blocks, 7]"),
    ("block_meta_rank_1", _replace("block_meta", lambda b: b.reshape(-1)), "block_meta must have shape"),
    ("gate_meta_5_columns", _replace("gate_meta", lambda g: np.pad(g, ((0, 0), (0, 1)))),
     "gate_meta must have shape [num_gates, 4]"),
    ("gate_data_rank_2", _replace("gate_data", lambda d: d.reshape(2, -1)), "gate_data must be a vector"),
    ("pauli_masks_3_columns", _replace("pauli_masks", lambda m: np.pad(m, ((0, 0), (0, 0), (0, 1)))),
     "pauli_masks must have shape"),
    ("pauli_coeffs_fewer_terms", _replace("pauli_coeffs", lambda c: c[:, :1]), "pauli_coeffs must have shape"),
    ("pauli_coeffs_more_observables", _replace("pauli_coeffs", lambda c: np.concatenate([c, c])),
     "pauli_coeffs must have shape"),
    ("angles_rank_1", _replace("angles", lambda a: a[:, 0]), "angles must have shape [batch, num_angles]"),
    ("angles_rank_3", _replace("angles", lambda a: a[None]), "angles must have shape [batch, num_angles]"),
    ("angles_too_few_columns", _replace("angles", lambda a: a[:, :0]), "angle slot 0 out of range [0, 0)"),
]


def _call(p, dtype, graph, grad, upstream=None):
    args = _args(p, dtype)
    batch = p["angles"].shape[0] if p["angles"].ndim else 1
    if upstream is None:
        upstream = tf.ones([batch, 2], dtype)

    def run(*a):
        return ops.expectation_adjoint_grad(*a) if grad else ops.expectation(*a)

    inputs = args + ([upstream] if grad else [])
    if graph:
        # Unknown shapes: the kernel, not shape inference, must catch the problem.
        run = tf.function(run, input_signature=[tf.TensorSpec(None, x.dtype) for x in inputs])
    return run(*inputs)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "adjoint"])
@pytest.mark.parametrize("name,mutate,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_program_raises(name, mutate, message, grad, graph):
    p = _valid_program()
    mutate(p)
    dtype = tf.float32 if "angle" in name else tf.float64
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _call(p, dtype, graph, grad)
    assert message in str(info.value), str(info.value)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("upstream_shape", [(3, 1), (2, 2), (3, 2, 1), (6,)])
def test_upstream_of_wrong_shape_raises(upstream_shape, graph):
    p = _valid_program()
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _call(p, tf.float64, graph, grad=True, upstream=tf.ones(upstream_shape, tf.float64))
    assert "upstream must have shape [3,2]" in str(info.value), str(info.value)


SHAPE_ERRORS = [m for m in MALFORMED if any(k in m[0] for k in ("rank", "columns", "not_scalar", "coeffs_"))]


@pytest.mark.parametrize("name,mutate,message", SHAPE_ERRORS, ids=[m[0] for m in SHAPE_ERRORS])
def test_static_shapes_rejected_while_tracing(name, mutate, message):
    """With known shapes, the op's shape function rejects the graph at trace time."""
    p = _valid_program()
    mutate(p)
    args = _args(p)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        tf.function(lambda: ops.expectation(*args))()


@pytest.mark.parametrize("num_qubits", [40, 62])
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "adjoint"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_state_too_large_for_memory_raises_resource_exhausted(num_qubits, grad, dtype):
    p = _valid_program()
    p["num_qubits"] = np.int32(num_qubits)
    for graph in (False, True):
        with pytest.raises(tf.errors.ResourceExhaustedError) as info:
            _call(p, dtype, graph, grad)
        assert f"{num_qubits} qubits" in str(info.value), str(info.value)


def test_op_still_works_after_errors():
    """Errors leave no broken state behind (thread-local buffers, pools)."""
    p = _valid_program()
    bad = _valid_program()
    bad["num_qubits"] = np.int32(40)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        ops.expectation(*_args(bad))
    got = ops.expectation(*_args(p)).numpy()
    np.testing.assert_allclose(got[:, 0], np.cos(p["angles"][:, 0]), atol=1e-12)


def test_empty_batch_and_no_blocks():
    p = _valid_program()
    p["angles"] = np.zeros((0, 1))
    assert ops.expectation(*_args(p)).shape == (0, 2)
    assert ops.expectation_adjoint_grad(*_args(p), tf.zeros([0, 2], tf.float64)).shape == (0, 1)
    p = _valid_program()
    p.update(block_meta=np.zeros((0, 7), np.int32), gate_meta=np.zeros((0, 4), np.int32),
             gate_data=np.zeros(0), angles=np.zeros((2, 0)))
    np.testing.assert_allclose(ops.expectation(*_args(p)).numpy(), [[1.0, 0.0]] * 2)  # |00>: <Z1>=1


# ------------------------------------------------------------ compile time


class _NonUnitaryGate(cirq.Gate):
    def _num_qubits_(self):
        return 1

    def __repr__(self):
        return "MyNonUnitaryGate()"


class _OpaqueSymbolicGate(cirq.Gate):
    """A parameterized gate with no unitary, no decomposition and no symbolic form."""

    def __init__(self, t):
        self.t = t

    def _num_qubits_(self):
        return 1

    def _is_parameterized_(self):
        return cirq.is_parameterized(self.t)

    def _parameter_names_(self):
        return cirq.parameter_names(self.t)

    def _resolve_parameters_(self, resolver, recursive):
        return _OpaqueSymbolicGate(resolver.value_of(self.t, recursive))

    def __repr__(self):
        return "MyOpaqueSymbolicGate()"


@pytest.mark.parametrize(
    "op,name",
    [
        (cirq.ResetChannel().on(cirq.LineQubit(0)), "ResetChannel"),
        (_NonUnitaryGate().on(cirq.LineQubit(0)), "MyNonUnitaryGate"),
        (_OpaqueSymbolicGate(sympy.Symbol("a")).on(cirq.LineQubit(0)), "MyOpaqueSymbolicGate"),
        (cirq.depolarize(0.1).on(cirq.LineQubit(0)), "depolarize"),
        (cirq.amplitude_damp(0.2).on(cirq.LineQubit(0)), "amplitude_damp"),
    ],
    ids=["reset", "custom_non_unitary", "custom_symbolic", "depolarize", "amplitude_damp"],
)
def test_unsupported_cirq_gate_raises_naming_it(op, name):
    circuit = cirq.Circuit(cirq.H(cirq.LineQubit(0)), op)
    with pytest.raises(qkeras_hybrid.circuits.UnsupportedGateError, match=name):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(cirq.LineQubit(0))])


def test_qutrit_raises():
    qid = cirq.LineQid(0, dimension=3)
    circuit = cirq.Circuit(cirq.MatrixGate(np.eye(3), qid_shape=(3,)).on(qid))
    with pytest.raises(qkeras_hybrid.circuits.UnsupportedGateError, match="dimension"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(cirq.LineQubit(0))], qubits=[qid])


def test_unsupported_qiskit_instruction_raises():
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.reset(0)
    with pytest.raises(qkeras_hybrid.circuits.UnsupportedGateError, match="reset"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp("Z")])


def test_symbolic_phased_iswap_compiles_or_names_the_gate():
    """PhasedISwapPowGate with a symbolic phase_exponent: supported, or a clear error, not a numpy TypeError."""
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.H(q[0]), cirq.PhasedISwapPowGate(phase_exponent=a, exponent=b)(*q))
    try:
        qkeras_hybrid.compile_circuit(circuit, [cirq.X(q[1])])
    except qkeras_hybrid.circuits.UnsupportedGateError as e:
        assert "PhasedISwap" in str(e)


@pytest.mark.parametrize(
    "observable",
    [(1 + 1j) * cirq.Z(cirq.LineQubit(0)), cirq.Z(cirq.LineQubit(0)) + 0.5j * cirq.X(cirq.LineQubit(1))],
    ids=["string", "sum"],
)
def test_complex_cirq_observable_raises(observable):
    q = cirq.LineQubit.range(2)
    with pytest.raises(ValueError, match="not real"):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H.on_each(*q)), [observable])


def test_complex_and_mismatched_qiskit_observables_raise():
    qc = QuantumCircuit(2)
    qc.h([0, 1])
    with pytest.raises(ValueError, match="not real"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp(["ZI", "XX"], [1.0, 0.5j])])
    with pytest.raises(ValueError, match="3 qubits"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp("ZZZ")])


def test_symbolic_observable_coefficient_raises():
    q = cirq.LineQubit(0)
    with pytest.raises((ValueError, TypeError)):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H(q)), [sympy.Symbol("k") * cirq.Z(q)])


def test_observable_on_qubit_outside_circuit_raises():
    q = cirq.LineQubit.range(3)
    with pytest.raises(ValueError, match="not one of"):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1])), [cirq.Z(q[2])])


def test_symbol_errors():
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.rx(a)(q[0]), cirq.ry(2 * b)(q[1]))
    with pytest.raises(ValueError, match=r"\['zz'\].*do not appear"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0])], symbols=[a, b, "zz"])
    with pytest.raises(ValueError, match=r"\['b'\]"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0])], symbols=[a])
    with pytest.raises(ValueError, match="more than once"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0])], symbols=[a, b, "a"])
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.rx(theta, 0)
    with pytest.raises(ValueError, match="do not appear"):
        qkeras_hybrid.compile_circuit(qc, [SparsePauliOp("Z")], symbols=[theta, Parameter("other")])


@pytest.mark.parametrize("shape", [(2, 1), (2, 3), (4,), (2, 2, 1)])
def test_wrong_symbol_values_shape_raises(shape):
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(2)
    cc = qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.rx(a)(q[0]), cirq.ry(b)(q[1])), [cirq.Z(q[0])])
    with pytest.raises(ValueError, match=r"\[batch, 2\]"):
        cc.expectation(np.zeros(shape))


def test_no_observables_and_wrong_circuit_type_raise():
    q = cirq.LineQubit(0)
    with pytest.raises(ValueError, match="observable"):
        qkeras_hybrid.compile_circuit(cirq.Circuit(cirq.H(q)), [])
    with pytest.raises(TypeError, match="cirq.Circuit or a qiskit.QuantumCircuit"):
        qkeras_hybrid.compile_circuit("H 0", [cirq.Z(q)])


@pytest.mark.parametrize("value", [4, 5])
def test_max_fused_qubits_beyond_op_limit_raises_clearly(value):
    """Blocks may hold at most 3 qubits (program.h); asking for more must say so,
    not fail deep inside numpy (or, worse, build a malformed program)."""
    q = cirq.LineQubit.range(4)
    circuit = cirq.Circuit(cirq.CZ(q[0], q[1]), cirq.CZ(q[1], q[2]), cirq.CZ(q[2], q[3]))
    with pytest.raises(ValueError, match="max_fused_qubits"):
        qkeras_hybrid.compile_circuit(circuit, [cirq.X(q[0])], max_fused_qubits=value)
