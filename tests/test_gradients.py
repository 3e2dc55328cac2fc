"""Adjoint gradients of the native op against central finite differences of
Cirq's simulator (float64) and against TensorFlow Quantum's adjoint (float32)."""

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid
from qkeras_hybrid import ops

from conftest import (central_fd, cirq_expectations, random_cirq_circuit, random_pauli_sum,
                      single_gate_circuits, weighted_grad)

FD_EPS = 1e-5
FD_TOL = 1e-6


def _cirq_fd_grad(circuit, observables, symbols, values, weights):
    """Central differences of sum(weights * <O>) from Cirq's complex128 simulator, row by row."""
    grad = np.zeros_like(values)
    for b in range(values.shape[0]):
        def f(row, b=b):
            return float(np.sum(weights[b] * cirq_expectations(circuit, observables, symbols, row[None])[0]))
        grad[b] = central_fd(f, values[b], FD_EPS)
    return grad


def _random_case(seed, max_qubits=6):
    rng = np.random.default_rng(5000 + seed)
    n = 1 + seed % max_qubits
    symbols = [sympy.Symbol(s) for s in ("a", "b", "c")]
    circuit, bare, qubits = random_cirq_circuit(rng, n, int(rng.integers(4, 3 * n + 6)), symbols)
    observables = [random_pauli_sum(rng, qubits) for _ in range(int(rng.integers(1, 4)))]
    used = sorted(cirq.parameter_symbols(bare), key=str)
    values = rng.uniform(-np.pi, np.pi, size=(2, len(used)))
    weights = rng.normal(size=(2, len(observables)))
    return circuit, bare, observables, used, values, weights


@pytest.mark.parametrize("seed", range(36))
def test_random_circuit_gradient_matches_cirq_finite_differences(seed):
    circuit, bare, observables, used, values, weights = _random_case(seed)
    if not used:
        pytest.skip("circuit drew no symbolic parameter")
    expected = _cirq_fd_grad(bare, observables, used, values, weights)
    for fuse in (1, 2):
        cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
        _, grad = weighted_grad(cc, values, weights)
        np.testing.assert_allclose(grad, expected, atol=FD_TOL, err_msg=f"seed={seed} fuse={fuse}\n{circuit}")


@pytest.mark.parametrize("circuit", [pytest.param(c, id=name) for name, c in single_gate_circuits()
                                     if cirq.is_parameterized(c)])
def test_each_parametric_gate_family_gradient(circuit):
    qubits = sorted(circuit.all_qubits())
    rng = np.random.default_rng(7)
    observables = [random_pauli_sum(rng, qubits, max_terms=4) for _ in range(3)]
    symbols = sorted(cirq.parameter_symbols(circuit), key=str)
    values = rng.uniform(-np.pi, np.pi, size=(2, len(symbols)))
    weights = rng.normal(size=(2, 3))
    expected = _cirq_fd_grad(circuit, observables, symbols, values, weights)
    for fuse in (1, 2, 3):
        cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
        _, grad = weighted_grad(cc, values, weights)
        np.testing.assert_allclose(grad, expected, atol=FD_TOL, err_msg=f"fuse={fuse}\n{circuit}")


def _structured_circuit(kind):
    """4-qubit circuits whose fused blocks are all real, mostly diagonal, or 3-qubit."""
    a, b, c = sympy.symbols("a b c")
    q = cirq.LineQubit.range(4)
    rng = np.random.default_rng(1)
    if kind == "real":  # Ry + CNOT + a real orthogonal matrix: real blocks
        orth, _ = np.linalg.qr(rng.normal(size=(4, 4)))
        layers = [[cirq.ry(s)(x) for s, x in zip([a, 2 * b, a * c, sympy.sin(c)], q)],
                  [cirq.CNOT(q[0], q[1]), cirq.CNOT(q[2], q[3])],
                  [cirq.ry(b - c)(q[1]), cirq.MatrixGate(orth)(q[1], q[2]), cirq.ry(a)(q[2])],
                  [cirq.CNOT(q[1], q[2]), cirq.ry(c)(q[3]), cirq.X(q[0]), cirq.ry(-a)(q[0])]]
    elif kind == "diagonal":  # long runs of diagonal gates between H layers
        layers = [cirq.H.on_each(*q),
                  [cirq.ZZPowGate(exponent=a)(q[0], q[1]), cirq.CZPowGate(exponent=b, global_shift=0.3)(q[2], q[3])],
                  [cirq.rz(c)(q[0]), cirq.ZZPowGate(exponent=a * b)(q[1], q[2]), cirq.T(q[3])],
                  [cirq.CCZPowGate(exponent=c)(q[0], q[1], q[2]), cirq.ZPowGate(exponent=a)(q[3])],
                  [cirq.ControlledGate(cirq.rz(b), control_values=[0])(q[3], q[0]), cirq.S(q[1])],
                  [cirq.DiagonalGate([0.1, 0.2, 0.3, 0.4])(q[1], q[2])],
                  cirq.H.on_each(*q)]
    else:  # 3-qubit gates next to each other, complex
        layers = [cirq.H.on_each(*q),
                  [cirq.CCXPowGate(exponent=a)(q[0], q[1], q[2]), cirq.rx(b)(q[3])],
                  [cirq.ControlledGate(cirq.ISwapPowGate(exponent=b))(q[3], q[1], q[2]), cirq.S(q[0])],
                  [cirq.FSimGate(theta=c, phi=a)(q[0], q[1]), cirq.PhasedXZGate(x_exponent=a, z_exponent=0.1,
                                                                               axis_phase_exponent=c)(q[3])],
                  [cirq.CSWAP(q[2], q[0], q[3]), cirq.HPowGate(exponent=b)(q[1])]]
    return cirq.Circuit(layers), q


@pytest.mark.parametrize("kind", ["real", "diagonal", "three_qubit"])
def test_structured_circuit_gradients(kind):
    circuit, q = _structured_circuit(kind)
    rng = np.random.default_rng(8)
    observables = [random_pauli_sum(rng, q, max_terms=4) for _ in range(3)] + [cirq.Z(q[0]) * cirq.Z(q[3])]
    symbols = sorted(cirq.parameter_symbols(circuit), key=str)
    values = rng.uniform(-np.pi, np.pi, size=(2, len(symbols)))
    weights = rng.normal(size=(2, len(observables)))
    expected_e = cirq_expectations(circuit, observables, symbols, values)
    expected_g = _cirq_fd_grad(circuit, observables, symbols, values, weights)
    for fuse in (1, 2, 3):
        cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
        for dtype, etol, gtol in ((tf.float64, 1e-10, FD_TOL), (tf.float32, 1e-5, 1e-4)):
            e, g = weighted_grad(cc, values, weights, dtype)
            np.testing.assert_allclose(e, expected_e, atol=etol, err_msg=f"fuse={fuse} {dtype.name}")
            np.testing.assert_allclose(g, expected_g, atol=gtol, err_msg=f"fuse={fuse} {dtype.name}")


def test_per_observable_jacobian():
    """The full Jacobian [B, O, S], one observable at a time, against Cirq FD."""
    circuit, bare, observables, used, values, _ = _random_case(4)
    cc = qkeras_hybrid.compile_circuit(circuit, observables)
    v = tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch(v)
        e = cc.expectation(v, dtype=tf.float64)
    jac = tape.batch_jacobian(e, v).numpy()  # [B, O, S]
    for o in range(len(observables)):
        w = np.zeros((values.shape[0], len(observables)))
        w[:, o] = 1.0
        np.testing.assert_allclose(jac[:, o], _cirq_fd_grad(bare, observables, used, values, w), atol=FD_TOL)


def test_float32_gradient_close_to_float64():
    circuit, _, observables, _, values, weights = _random_case(11)
    cc = qkeras_hybrid.compile_circuit(circuit, observables)
    e64, g64 = weighted_grad(cc, values, weights, tf.float64)
    e32, g32 = weighted_grad(cc, values, weights, tf.float32)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(e32, e64, atol=1e-5)
    np.testing.assert_allclose(g32, g64, atol=1e-4)


def test_large_state_gradient_parallel_paths_agree():
    """14 qubits: a batch of 1 or 3 runs inside the state on the pool (buffers reused
    across samples), a batch of 9 one sample per thread; all agree, and with Cirq FD."""
    rng = np.random.default_rng(99)
    symbols = [sympy.Symbol("a"), sympy.Symbol("b")]
    circuit, bare, qubits = random_cirq_circuit(rng, 14, 30, symbols, nonlinear=False)
    observables = [random_pauli_sum(rng, qubits, max_terms=3) for _ in range(2)]
    used = sorted(cirq.parameter_symbols(bare), key=str)
    values = rng.uniform(-3, 3, size=(3, len(used)))
    weights = rng.normal(size=(3, 2))
    for fuse in (2, 3):
        cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
        e3, g3 = weighted_grad(cc, values, weights)
        e1, g1 = weighted_grad(cc, values[2:], weights[2:])
        e9, g9 = weighted_grad(cc, np.tile(values, (3, 1)), np.tile(weights, (3, 1)))
        np.testing.assert_allclose(e1, e3[2:], atol=1e-12)
        np.testing.assert_allclose(g1, g3[2:], atol=1e-10)
        np.testing.assert_allclose(e9, np.tile(e3, (3, 1)), atol=1e-12)
        np.testing.assert_allclose(g9, np.tile(g3, (3, 1)), atol=1e-10)
        np.testing.assert_allclose(e1, cirq_expectations(bare, observables, used, values[2:]), atol=1e-10)
        np.testing.assert_allclose(g1, _cirq_fd_grad(bare, observables, used, values[2:], weights[2:]),
                                   atol=FD_TOL, err_msg=f"fuse={fuse}")


# ------------------------------------------------------------- raw op


def test_raw_adjoint_op_applies_upstream_weights():
    """expectation_adjoint_grad(angles, w) = d sum(w * E)/d angles, checked by FD on angles."""
    circuit, _, observables, used, values, _ = _random_case(9)
    cc = qkeras_hybrid.compile_circuit(circuit, observables)
    program = cc.program_inputs
    rng = np.random.default_rng(3)
    angles = rng.uniform(-3, 3, size=(3, cc.num_angles))
    w = rng.normal(size=(3, len(observables)))
    got = ops.expectation_adjoint_grad(*program, tf.constant(angles), tf.constant(w)).numpy()
    assert got.shape == angles.shape

    def f(a):
        return float(np.sum(w * ops.expectation(*program, tf.constant(a)).numpy()))

    np.testing.assert_allclose(got, central_fd(f, angles, FD_EPS), atol=FD_TOL)
    # The registered gradient of the forward op is this op.
    a = tf.constant(angles)
    with tf.GradientTape() as tape:
        tape.watch(a)
        loss = tf.reduce_sum(tf.constant(w) * ops.expectation(*program, a))
    np.testing.assert_allclose(tape.gradient(loss, a).numpy(), got, atol=1e-12)
    # Zero upstream gives zero gradient; linear in the upstream.
    zero = ops.expectation_adjoint_grad(*program, tf.constant(angles), tf.zeros_like(tf.constant(w)))
    np.testing.assert_array_equal(zero.numpy(), 0.0)
    twice = ops.expectation_adjoint_grad(*program, tf.constant(angles), tf.constant(2.5 * w - 1.0))
    ones = ops.expectation_adjoint_grad(*program, tf.constant(angles), tf.ones_like(tf.constant(w)))
    np.testing.assert_allclose(twice.numpy(), 2.5 * got - ones.numpy(), atol=1e-12)


# ------------------------------------------------------- graph mode, chain rule


def test_tf_function_matches_eager():
    circuit, _, observables, used, values, weights = _random_case(15)
    cc = qkeras_hybrid.compile_circuit(circuit, observables)

    def value_and_grad(v, w):
        with tf.GradientTape() as tape:
            tape.watch(v)
            e = cc.expectation(v, dtype=tf.float64)
            loss = tf.reduce_sum(w * e)
        return e, tape.gradient(loss, v)

    eager_e, eager_g = value_and_grad(tf.constant(values), tf.constant(weights))
    graph = tf.function(value_and_grad, input_signature=[tf.TensorSpec([None, len(used)], tf.float64),
                                                         tf.TensorSpec([None, len(observables)], tf.float64)])
    graph_e, graph_g = graph(tf.constant(values), tf.constant(weights))
    assert graph_e.shape == eager_e.shape and graph_g.shape == eager_g.shape
    np.testing.assert_allclose(graph_e.numpy(), eager_e.numpy(), atol=1e-13)
    np.testing.assert_allclose(graph_g.numpy(), eager_g.numpy(), atol=1e-13)
    # The static shape [batch, num_observables] is known while tracing.
    concrete = graph.get_concrete_function()
    assert concrete.structured_outputs[0].shape.as_list() == [None, len(observables)]
    # A second batch size reuses the trace.
    graph_e2, graph_g2 = graph(tf.constant(np.concatenate([values, values])),
                               tf.constant(np.concatenate([weights, weights])))
    np.testing.assert_allclose(graph_e2.numpy()[2:], eager_e.numpy(), atol=1e-13)
    np.testing.assert_allclose(graph_g2.numpy()[2:], eager_g.numpy(), atol=1e-13)
    assert graph.experimental_get_tracing_count() == 1


def test_chain_rule_through_dense_layer():
    """symbol values = x @ W + bias: gradients w.r.t. W, bias and x by TF's chain rule."""
    a, b, c = sympy.symbols("a b c")
    q = cirq.LineQubit.range(3)
    circuit = cirq.Circuit(
        cirq.H.on_each(*q), cirq.rx(2 * a + b)(q[0]), cirq.FSimGate(theta=sympy.sin(b), phi=a * c)(q[0], q[1]),
        cirq.ControlledGate(cirq.ry(c), control_values=[0])(q[1], q[2]),
        cirq.PhasedXZGate(x_exponent=a, z_exponent=0.3, axis_phase_exponent=b)(q[2]), cirq.CZ(q[2], q[0]))
    observables = [cirq.Z(q[0]) + 0.3 * cirq.Y(q[1]) * cirq.X(q[2]), cirq.X(q[2])]
    symbols = [a, b, c]
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=symbols)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4))
    kernel = rng.normal(size=(4, 3)) * 0.5
    bias = rng.normal(size=3)
    w = rng.normal(size=(2, 2))
    xt, kt, bt = tf.constant(x), tf.Variable(kernel), tf.Variable(bias)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(w * cc.expectation(tf.matmul(xt, kt) + bt, dtype=tf.float64))
    got = [tape.gradient(loss, t).numpy() for t in (kt, bt, xt)]

    def ref(x_, k_, b_):
        return float(np.sum(w * cirq_expectations(circuit, observables, symbols, x_ @ k_ + b_)))

    np.testing.assert_allclose(got[0], central_fd(lambda k_: ref(x, k_, bias), kernel, FD_EPS), atol=FD_TOL)
    np.testing.assert_allclose(got[1], central_fd(lambda b_: ref(x, kernel, b_), bias, FD_EPS), atol=FD_TOL)
    np.testing.assert_allclose(got[2], central_fd(lambda x_: ref(x_, kernel, bias), x, FD_EPS), atol=FD_TOL)


# --------------------------------------------------------------------- TFQ


def _random_tfq_circuit(rng, n, num_ops, symbols):
    """Gates TFQ serializes, with symbols only as scalar multiples."""
    q = cirq.GridQubit.rect(1, n)

    def p():
        if rng.random() < 0.25:
            return float(rng.uniform(-2, 2))
        return float(rng.choice([1.0, 2.0, -0.5, 1 / np.pi])) * symbols[int(rng.integers(len(symbols)))]

    def shift():
        return float(rng.choice([0.0, -0.5, 0.3]))

    one = [
        lambda: cirq.X, lambda: cirq.Y, lambda: cirq.Z, lambda: cirq.H,
        lambda: cirq.rx(p()), lambda: cirq.ry(p()), lambda: cirq.rz(p()),
        lambda: cirq.XPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.YPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.ZPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.HPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.PhasedXPowGate(phase_exponent=p(), exponent=p()),
    ]
    two = [
        lambda: cirq.CZPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.CNotPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.SwapPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.ISwapPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.XXPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.YYPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.ZZPowGate(exponent=p(), global_shift=shift()),
        lambda: cirq.FSimGate(theta=p(), phi=p()),
        lambda: cirq.PhasedISwapPowGate(phase_exponent=float(rng.uniform(-1, 1)), exponent=p()),
    ]
    ops_ = [cirq.H(x) for x in q]
    for _ in range(num_ops):
        if n >= 2 and rng.random() < 0.5:
            i, j = rng.choice(n, size=2, replace=False)
            ops_.append(two[int(rng.integers(len(two)))]().on(q[i], q[j]))
        else:
            i = int(rng.integers(n))
            op = one[int(rng.integers(len(one)))]().on(q[i])
            if n >= 2 and rng.random() < 0.2:
                op = op.controlled_by(q[(i + 1) % n])
            ops_.append(op)
    return cirq.Circuit(ops_), q


@pytest.fixture(scope="module")
def tfq_adjoint_op():
    tfq = pytest.importorskip("tensorflow_quantum")
    return tfq, tfq.differentiators.Adjoint().generate_differentiable_op(analytic_op=tfq.get_expectation_op())


@pytest.mark.parametrize("seed", range(12))
def test_values_and_gradients_match_tfq(seed, tfq_adjoint_op):
    tfq, op = tfq_adjoint_op
    rng = np.random.default_rng(700 + seed)
    n = 1 + seed % 5
    names = ["a", "b", "c"]
    symbols = [sympy.Symbol(s) for s in names]
    circuit, q = _random_tfq_circuit(rng, n, 5 * n + 3, symbols)
    # Every symbol in the circuit, so TFQ and we see the same symbol list.
    circuit.append([cirq.rx(s)(q[k % n]) for k, s in enumerate(symbols)])
    observables = [random_pauli_sum(rng, q) for _ in range(2)]
    batch = 3
    values = tf.constant(rng.uniform(-np.pi, np.pi, size=(batch, 3)), tf.float32)
    weights = tf.constant(rng.normal(size=(batch, 2)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(values)
        ref = op(tfq.convert_to_tensor([circuit] * batch), tf.constant(names), values,
                 tfq.convert_to_tensor([observables] * batch))
        ref_loss = tf.reduce_sum(weights * ref)
    ref_grad = tape.gradient(ref_loss, values)
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=names)
    with tf.GradientTape() as tape:
        tape.watch(values)
        got = cc.expectation(values, dtype=tf.float32)
        loss = tf.reduce_sum(weights * got)
    grad = tape.gradient(loss, values)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4, err_msg=str(circuit))
    # TFQ's float32 adjoint is itself off from float64 finite differences by up
    # to ~6e-4 on gradients of size ~4 (ours: ~2e-6), hence the relative part.
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), atol=1e-4, rtol=3e-4, err_msg=str(circuit))
