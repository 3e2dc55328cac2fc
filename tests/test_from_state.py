"""The from-state op: a compiled circuit run from given initial states.

References: Cirq's complex128 simulator started from the same states, and
central finite differences in float64 for the gradients with respect to the
angles and to the initial state's real and imaginary parts.
"""

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid as qh
from qkeras_hybrid import ops
from qkeras_hybrid.circuits import cirq_to_native_order

from conftest import central_fd, random_cirq_circuit, random_pauli_sum


def _random_states(rng, batch, num_qubits, real=False):
    psi = rng.normal(size=(batch, 2**num_qubits))
    if not real:
        psi = psi + 1j * rng.normal(size=psi.shape)
    return psi / np.linalg.norm(psi, axis=1, keepdims=True)


def _cirq_from_states(circuit, observables, qubits, symbols, values, states):
    """<O> per row, Cirq started from each state (Cirq's amplitude order)."""
    sim = cirq.Simulator(dtype=np.complex128)
    index = {q: i for i, q in enumerate(qubits)}
    out = []
    for row, psi in zip(values, states):
        resolver = cirq.ParamResolver({s: float(v) for s, v in zip(symbols, row)})
        final = sim.simulate(circuit, resolver, qubit_order=qubits,
                             initial_state=psi.astype(np.complex128)).final_state_vector
        out.append([o.expectation_from_state_vector(final, index).real for o in observables])
    return np.array(out)


def _native(states, num_qubits):
    return cirq_to_native_order(tf.constant(states), num_qubits).numpy()


@pytest.mark.parametrize("seed", range(12))
def test_random_circuits_from_random_states_match_cirq(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 7))
    symbols = sympy.symbols("a b c")
    _, bare, qubits = random_cirq_circuit(rng, n, int(rng.integers(2, 12)), symbols, measure=False)
    qubits = sorted(qubits)
    observables = [random_pauli_sum(rng, qubits) for _ in range(2)]
    used = sorted(cirq.parameter_symbols(bare), key=str)
    cc = qh.compile_circuit(bare, observables, symbols=used, qubits=qubits)
    batch = 11  # more than one group of 8 lanes, with padding lanes
    values = rng.uniform(-2, 2, size=(batch, len(used)))
    states = _random_states(rng, batch, n, real=bool(seed % 3 == 0))
    expected = _cirq_from_states(bare, observables, qubits, used, values, states)
    native = _native(states, n)
    got64 = cc.expectation_from_state(native, values, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got64, expected, atol=1e-10)
    got32 = cc.expectation_from_state(native, values, dtype=tf.float32).numpy()
    np.testing.assert_allclose(got32, expected, atol=1e-5)


@pytest.mark.parametrize("real_program", [False, True])
def test_gradients_wrt_state_and_angles_match_finite_differences(real_program):
    rng = np.random.default_rng(7 + real_program)
    q = cirq.LineQubit.range(3)
    a, b = sympy.symbols("a b")
    if real_program:  # a real program from a real start keeps a real state
        circuit = cirq.Circuit(cirq.ry(a)(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(2 * b)(q[2]), cirq.CZ(q[1], q[2]))
        observables = [cirq.Z(q[0]) * cirq.X(q[2]), 0.5 * cirq.X(q[1]) + cirq.Z(q[2])]
    else:
        circuit = cirq.Circuit(cirq.rx(a)(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(b)(q[2]),
                               cirq.ISWAP(q[1], q[2]) ** 0.3, cirq.rz(a * b)(q[1]))
        observables = [cirq.Z(q[0]) * cirq.X(q[2]), cirq.Y(q[1]) + 0.5 * cirq.Z(q[2])]
    cc = qh.compile_circuit(circuit, observables)
    batch = 3
    states = _native(_random_states(rng, batch, 3, real=real_program), 3)
    state = np.stack([states.real, states.imag], axis=1)
    values = rng.uniform(-2, 2, size=(batch, 2))
    weights = rng.normal(size=(batch, 2))

    def loss(s, v):
        return tf.reduce_sum(weights * cc.expectation_from_state(s, v, dtype=tf.float64))

    s, v = tf.constant(state), tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch([s, v])
        value = loss(s, v)
    d_state, d_values = tape.gradient(value, [s, v])
    fd_state = central_fd(lambda x: float(loss(x, values)), state, 1e-6)
    fd_values = central_fd(lambda x: float(loss(state, x)), values, 1e-6)
    np.testing.assert_allclose(d_state.numpy(), fd_state, atol=1e-7)
    np.testing.assert_allclose(d_values.numpy(), fd_values, atol=1e-7)


def test_zero_state_start_equals_plain_op():
    rng = np.random.default_rng(3)
    _, bare, qubits = random_cirq_circuit(rng, 4, 10, sympy.symbols("a b"), measure=False)
    qubits = sorted(qubits)
    observables = [random_pauli_sum(rng, qubits) for _ in range(3)]
    cc = qh.compile_circuit(bare, observables, qubits=qubits)
    values = rng.uniform(-2, 2, size=(9, len(cc.symbols)))
    zero = np.zeros((9, 2, 16))
    zero[:, 0, 0] = 1.0
    np.testing.assert_allclose(
        cc.expectation_from_state(zero, values, dtype=tf.float64).numpy(),
        cc.expectation(values, dtype=tf.float64).numpy(), atol=1e-12)


def test_large_state_small_batch_runs_inside_one_state():
    """14 qubits, batch 2: the threads share one state vector."""
    rng = np.random.default_rng(5)
    n = 14
    qubits = cirq.LineQubit.range(n)
    x = sympy.Symbol("x")
    circuit = cirq.Circuit([cirq.ry(x)(q) for q in qubits], [cirq.CNOT(a, b) for a, b in zip(qubits, qubits[1:])],
                           cirq.rx(0.3)(qubits[5]))
    observables = [cirq.Z(qubits[0]) * cirq.Z(qubits[13]), cirq.X(qubits[6])]
    cc = qh.compile_circuit(circuit, observables)
    states = _random_states(rng, 2, n)
    values = np.array([[0.4], [-1.1]])
    expected = _cirq_from_states(circuit, observables, qubits, [x], values, states)
    got = cc.expectation_from_state(_native(states, n), values, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_cirq_to_native_order_reverses_qubits_and_is_an_involution():
    q = cirq.LineQubit.range(3)
    state = cirq.Circuit(cirq.X(q[0])).final_state_vector(qubit_order=q)  # |100> in Cirq's order
    native = cirq_to_native_order(tf.constant(state), 3).numpy()
    assert native[1] == 1  # qubit 0 is bit 0 here
    np.testing.assert_array_equal(cirq_to_native_order(tf.constant(native), 3).numpy(), state)


def test_bad_initial_states_are_named():
    q = cirq.LineQubit.range(3)
    cc = qh.compile_circuit(cirq.Circuit(cirq.rx(sympy.Symbol("a"))(q[0]), cirq.H(q[2])), cirq.Z(q[0]), qubits=q)
    with pytest.raises(ValueError, match=r"initial_state must have shape \[batch, 8\] or \[batch, 2, 8\]"):
        cc.expectation_from_state(np.zeros((2, 2, 4)), np.zeros((2, 1)))
    program = cc.program_inputs
    angles = tf.zeros((2, cc.num_angles), tf.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"initial_state must have shape .*\[2,2,8\]"):
        ops.expectation_from_state(*program, tf.zeros((2, 2, 4), tf.float64), angles)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"initial_state must have shape"):
        ops.expectation_from_state(*program, tf.zeros((3, 2, 8), tf.float64), angles)
    bad = np.zeros((2, 2, 8))
    bad[1, 1, 3] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"initial_state\[1, 1, 3\] is not finite"):
        ops.expectation_from_state(*program, tf.constant(bad), angles)
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream must have shape"):
        ops.expectation_from_state_adjoint_grad(*program, tf.zeros((2, 2, 8), tf.float64), angles,
                                                tf.zeros((2, 5), tf.float64))


def test_results_overflowing_float32_from_huge_states_are_named():
    """States are used as given: amplitudes near float32's largest value give
    <Z> and d/d state beyond it (once inf, silently)."""
    q = cirq.LineQubit(0)
    cc = qh.compile_circuit(cirq.Circuit(cirq.Z(q)), [cirq.Z(q)], qubits=[q])
    program = cc.program_inputs
    state = tf.constant([[[3e38, 0.0], [0.0, 0.0]]], tf.float32)
    angles = tf.zeros((1, 0), tf.float32)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"expectations\[0, 0\] is inf: the computation overflows float32"):
        ops.expectation_from_state(*program, state, angles)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"d_initial_state\[0, 0, 0\] is -?inf: the computation overflows float32"):
        ops.expectation_from_state_adjoint_grad(*program, state, angles, tf.ones((1, 1), tf.float32))
    # The same state in float64 is fine: <Z> = |3e38|^2.
    np.testing.assert_allclose(ops.expectation_from_state(*program, tf.cast(state, tf.float64),
                                                          tf.zeros((1, 0), tf.float64)).numpy(), [[9e76]])
