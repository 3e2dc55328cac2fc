"""The forward op that also outputs the final state, and the gradient that
starts from it (issue 13): ExpectationAndState and
ExpectationAdjointGradFromFinalState.

References: the old ops (Expectation, ExpectationAdjointGrad), central finite
differences in float64 and Cirq's complex128 final state vector.
"""

import os

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid as qh
from qkeras_hybrid import ops
from qkeras_hybrid.circuits import compiled as compiled_lib
from qkeras_hybrid.circuits import cirq_to_native_order

from conftest import run_fresh_python

SYMBOLS = sympy.symbols("a b c d")


def _complex_circuit(n):
    """Rx, Rz, H, phases, an ISWAP power: complex states; X and Y observables."""
    q = cirq.LineQubit.range(n)
    a, b, c, d = SYMBOLS
    circuit = cirq.Circuit(
        [cirq.H(x) for x in q[::2]],
        [cirq.rx(a * (i + 1) / n)(x) for i, x in enumerate(q)],
        cirq.S(q[1]), cirq.T(q[-1]), cirq.ZPowGate(exponent=c)(q[0]),
        [cirq.CNOT(x, y) for x, y in zip(q, q[1:])],
        [cirq.rz(b - 0.3 * i)(x) for i, x in enumerate(q[1::2])],
        cirq.ISWAP(q[0], q[-1]) ** 0.3,
        cirq.ry(d)(q[n // 2]), cirq.XXPowGate(exponent=a * b)(q[1], q[2]),
    )
    observables = [cirq.X(q[0]) * cirq.Y(q[1]) + 0.5 * cirq.Z(q[2]), cirq.Y(q[-1]),
                   cirq.Z(q[0]) * cirq.X(q[n // 2]) * cirq.Z(q[-1]) - 0.25 * cirq.X(q[1])]
    return circuit, observables, q


def _real_circuit(n):
    """Ry + CNOT: a real program, so a real state (the simulator's real path)."""
    q = cirq.LineQubit.range(n)
    circuit = cirq.Circuit(
        [cirq.ry(SYMBOLS[i % 4] * (1 + 0.1 * i))(x) for i, x in enumerate(q)],
        [cirq.CNOT(x, y) for x, y in zip(q, q[1:])],
        [cirq.ry(SYMBOLS[(i + 1) % 4] - 0.2 * i)(x) for i, x in enumerate(q[::3])],
        cirq.CZ(q[0], q[-1]),
    )
    observables = [cirq.Z(q[0]), cirq.X(q[1]) * cirq.Z(q[-1]) + 0.3 * cirq.X(q[n // 2]),
                   cirq.Y(q[0]) * cirq.Y(q[1])]
    return circuit, observables, q


CIRCUITS = {"complex": _complex_circuit, "real": _real_circuit}


def _case(kind, n, batch, seed=0):
    circuit, observables, qubits = CIRCUITS[kind](n)
    cc = qh.compile_circuit(circuit, observables, qubits=qubits)
    rng = np.random.default_rng([seed, n, batch])
    angles = rng.uniform(-2, 2, size=(batch, cc.num_angles))
    upstream = rng.normal(size=(batch, len(observables)))
    return cc, angles, upstream


def _old(cc, angles, upstream, dtype=tf.float64):
    a, u = tf.constant(angles, dtype), tf.constant(upstream, dtype)
    return (ops.expectation(*cc.program_inputs, a).numpy(),
            ops.expectation_adjoint_grad(*cc.program_inputs, a, u).numpy())


def _new(cc, angles, upstream, dtype=tf.float64, max_state_bytes=None):
    a, u = tf.constant(angles, dtype), tf.constant(upstream, dtype)
    e, state = ops.expectation_and_state(*cc.program_inputs, a, max_state_bytes=max_state_bytes)
    d = ops.expectation_adjoint_grad_from_final_state(*cc.program_inputs, a, state, u)
    return e.numpy(), state.numpy(), d.numpy()


def _fd(cc, angles, upstream, eps=1e-6):
    """d sum(upstream * <O>) / d angles, central differences, one column of
    every row at once (rows are independent samples)."""
    def rows(a):
        return np.sum(upstream * ops.expectation(*cc.program_inputs, tf.constant(a)).numpy(), axis=1)
    grad = np.zeros_like(angles)
    for j in range(angles.shape[1]):
        plus, minus = angles.copy(), angles.copy()
        plus[:, j] += eps
        minus[:, j] -= eps
        grad[:, j] = (rows(plus) - rows(minus)) / (2 * eps)
    return grad


# Batch sizes cover one lane group with padding (1, 3), a full one (8),
# several with padding (17), and 16-lane groups (40, up to 14 qubits); at 14
# qubits small unit counts run inside one state vector (threads share it).
@pytest.mark.parametrize("batch", [1, 3, 8, 17, 40])
@pytest.mark.parametrize("n", [3, 12, 13, 14])
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_gradient_from_final_state_equals_old_op_and_finite_differences(kind, n, batch):
    cc, angles, upstream = _case(kind, n, batch)
    e_old, d_old = _old(cc, angles, upstream)
    e_new, state, d_new = _new(cc, angles, upstream)
    assert state.shape == (batch, 2, 2**n)
    np.testing.assert_array_equal(e_new, e_old)
    np.testing.assert_allclose(d_new, d_old, rtol=0, atol=1e-12)
    if n <= 12 or batch in (3, 40):  # finite differences cost 2 * num_angles forward calls
        np.testing.assert_allclose(d_new, _fd(cc, angles, upstream), rtol=0, atol=1e-7)
    norms = np.sum(state**2, axis=(1, 2))
    np.testing.assert_allclose(norms, 1.0, atol=1e-12)
    if kind == "real":
        assert not np.any(state[:, 1])


def test_one_lane_simulator_at_21_qubits():
    """From 21 qubits a simulator runs one sample (no lanes)."""
    cc, angles, upstream = _case("complex", 21, 2)
    e_old, d_old = _old(cc, angles, upstream, tf.float32)
    e_new, _, d_new = _new(cc, angles, upstream, tf.float32)
    np.testing.assert_array_equal(e_new, e_old)
    np.testing.assert_allclose(d_new, d_old, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_final_state_equals_cirq(dtype):
    circuit, observables, qubits = _complex_circuit(4)
    cc = qh.compile_circuit(circuit, observables, qubits=qubits)
    values = np.random.default_rng(2).uniform(-2, 2, size=(3, len(cc.symbols)))
    sim = cirq.Simulator(dtype=np.complex128)
    expected = []
    for row in values:
        resolver = cirq.ParamResolver({s: float(v) for s, v in zip(cc.symbols, row)})
        expected.append(sim.simulate(circuit, resolver, qubit_order=qubits).final_state_vector)
    expected = cirq_to_native_order(np.array(expected), 4).numpy()  # qubit q = bit q
    _, state = ops.expectation_and_state(*cc.program_inputs, cc.angles(tf.constant(values, dtype)))
    assert state.dtype == dtype
    got = state.numpy()[:, 0] + 1j * state.numpy()[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-12 if dtype == tf.float64 else 1e-6)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_registered_gradient_equals_old_gradient(kind, dtype, graph):
    cc, angles, upstream = _case(kind, 12, 9)
    _, d_old = _old(cc, angles, upstream, dtype)
    u = tf.constant(upstream, dtype)

    def grad(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            e, _ = ops.expectation_and_state(*cc.program_inputs, a)
            loss = tf.reduce_sum(u * e)
        return tape.gradient(loss, a)

    if graph:
        grad = tf.function(grad, input_signature=[tf.TensorSpec([None, cc.num_angles], dtype)])
    got = grad(tf.constant(angles, dtype))
    assert got.dtype == dtype
    np.testing.assert_allclose(got.numpy(), d_old, rtol=0, atol=1e-12 if dtype == tf.float64 else 2e-5)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_symbolic_gradients_in_a_graph(dtype):
    """tf.gradients (no tape) fills the unused state's gradient with ZerosLike."""
    cc, angles, upstream = _case("complex", 5, 4)
    _, d_old = _old(cc, angles, upstream, dtype)

    @tf.function
    def grad(a):
        e, _ = ops.expectation_and_state(*cc.program_inputs, a)
        return tf.gradients(tf.reduce_sum(tf.constant(upstream, dtype) * e), a)[0]

    np.testing.assert_allclose(grad(tf.constant(angles, dtype)).numpy(), d_old, atol=1e-12 if dtype == tf.float64
                               else 2e-5)


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("kind", ["complex", "real"])
def test_loss_of_both_outputs_matches_finite_differences(kind, graph):
    """A loss that uses the final state too: its gradient adds the State op's
    adjoint sweep from the co-state the loss defines."""
    cc, angles, upstream = _case(kind, 5, 3)
    weights = np.random.default_rng(9).normal(size=(3, 2, 32))  # on real and imaginary parts

    def rows(a):
        e, state = ops.expectation_and_state(*cc.program_inputs, tf.constant(a))
        return np.sum(upstream * e.numpy(), axis=1) + np.sum(weights * state.numpy(), axis=(1, 2))

    fd = np.zeros_like(angles)
    for j in range(angles.shape[1]):
        plus, minus = angles.copy(), angles.copy()
        plus[:, j] += 1e-6
        minus[:, j] -= 1e-6
        fd[:, j] = (rows(plus) - rows(minus)) / 2e-6
    a = tf.constant(angles)

    def grad(use_state):
        with tf.GradientTape() as tape:
            tape.watch(a)
            e, state = ops.expectation_and_state(*cc.program_inputs, a)
            loss = tf.reduce_sum(tf.constant(upstream) * e) + use_state(state)
        return tape.gradient(loss, a)

    if graph:
        grad = tf.function(grad)
    np.testing.assert_allclose(grad(lambda s: tf.reduce_sum(tf.constant(weights) * s)).numpy(), fd, atol=1e-7)
    # A state that does not reach the loss: stopped, or unused.
    d_old = _old(cc, angles, upstream)[1]
    np.testing.assert_allclose(grad(lambda s: tf.reduce_sum(tf.stop_gradient(s))).numpy(), d_old, atol=1e-12)
    np.testing.assert_allclose(grad(lambda s: 0.0).numpy(), d_old, atol=1e-12)

    def state_only(budget):
        with tf.GradientTape() as tape:
            tape.watch(a)
            _, state = ops.expectation_and_state(*cc.program_inputs, a, max_state_bytes=budget)
            loss = tf.reduce_sum(tf.constant(weights[:, :, :state.shape[2]][:state.shape[0]]) * state)
        return tape.gradient(loss, a)

    np.testing.assert_allclose(state_only(None).numpy(), fd - _fd(cc, angles, upstream), atol=1e-7)
    # Past the budget the state output is empty, and so is its gradient.
    np.testing.assert_array_equal(state_only(0).numpy(), np.zeros_like(angles))


@pytest.mark.parametrize("kind", ["complex", "real"])
def test_states_beyond_max_state_bytes_are_not_kept(kind):
    """Past the budget final_state is empty and the gradient runs the forward
    sweep again: the same results, no batch of states held."""
    cc, angles, upstream = _case(kind, 6, 11)
    e_old, d_old = _old(cc, angles, upstream)
    needed = 11 * 2 * 2**6 * 8
    e, state, d = _new(cc, angles, upstream, max_state_bytes=needed - 1)
    assert state.shape == (0, 2, 64)
    np.testing.assert_array_equal(e, e_old)
    np.testing.assert_array_equal(d, d_old)
    _, state, d = _new(cc, angles, upstream, max_state_bytes=needed)
    assert state.shape == (11, 2, 64)
    np.testing.assert_allclose(d, d_old, atol=1e-12)
    a = tf.constant(angles)
    with tf.GradientTape() as tape:
        tape.watch(a)
        e, state = ops.expectation_and_state(*cc.program_inputs, a, max_state_bytes=0)
        loss = tf.reduce_sum(tf.constant(upstream) * e)
    assert state.shape == (0, 2, 64)
    np.testing.assert_array_equal(tape.gradient(loss, a).numpy(), d_old)
    with pytest.raises(ValueError, match="max_state_bytes must be a non-negative integer"):
        ops.expectation_and_state(*cc.program_inputs, a, max_state_bytes=-5)


# ------------------------------------------------------------------ bad inputs


def _small():
    q = cirq.LineQubit.range(3)
    circuit = cirq.Circuit(cirq.rx(SYMBOLS[0])(q[0]), cirq.H(q[1]), cirq.CNOT(q[0], q[2]))
    cc = qh.compile_circuit(circuit, [cirq.Z(q[0]), cirq.X(q[1])], qubits=q)
    angles = tf.constant([[0.3], [1.2]], tf.float64)
    _, state = ops.expectation_and_state(*cc.program_inputs, angles)
    return cc, angles, state, tf.ones((2, 2), tf.float64)


BAD_STATES = {
    "too_few_amplitudes": ((2, 2, 4), r"= \[2,2,8\] \(or \[0, 2, 2\*\*num_qubits\] when ExpectationAndState kept no "
                           r"states\), got \[2,2,4\]"),
    "other_batch": ((3, 2, 8), r"= \[2,2,8\] .*, got \[3,2,8\]"),
    "three_parts": ((2, 3, 8), r"= \[2,2,8\] .*, got \[2,3,8\]"),
    "rank_2": ((2, 16), r"= \[2,2,8\] .*, got \[2,16\]"),
    "rank_4": ((2, 2, 8, 1), r"= \[2,2,8\] .*, got \[2,2,8,1\]"),
    "empty_of_other_size": ((0, 2, 4), r"= \[0,2,8\] .*, got \[0,2,4\]"),
}


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("name", list(BAD_STATES))
def test_bad_final_state_shapes_are_named(name, graph):
    cc, angles, _, upstream = _small()
    shape, message = BAD_STATES[name]
    fn = ops.expectation_adjoint_grad_from_final_state
    args = [*cc.program_inputs, angles, tf.zeros(shape, tf.float64), upstream]
    if graph:  # unknown shapes: the kernel, not shape inference, must catch it
        fn = tf.function(fn, input_signature=[tf.TensorSpec(None, x.dtype) for x in args])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"final_state must have shape \[batch, 2, 2\*\*num_qubits\] " + message):
        fn(*args)


def test_bad_final_state_values_and_dtypes_are_named():
    cc, angles, state, upstream = _small()
    grad = ops.expectation_adjoint_grad_from_final_state
    bad = state.numpy()
    bad[1, 1, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"final_state\[1, 1, 3\] is not finite \(nan\)"):
        grad(*cc.program_inputs, angles, tf.constant(bad), upstream)
    bad = state.numpy()
    bad[0, 0, 7] = -np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"final_state\[0, 0, 7\] is not finite \(-inf\)"):
        grad(*cc.program_inputs, angles, tf.constant(bad), upstream)
    with pytest.raises(TypeError, match="angles, final_state, upstream must all have one dtype"):
        grad(*cc.program_inputs, angles, tf.cast(state, tf.float32), upstream)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"upstream must have shape \[2,2\]"):
        grad(*cc.program_inputs, angles, state, tf.ones((2, 3), tf.float64))


def test_static_shapes_are_checked_while_tracing():
    cc, angles, state, upstream = _small()
    program = [tf.constant(x.numpy()) for x in cc.program_inputs]

    @tf.function
    def run(shape):
        p = [tf.constant(x.numpy()) for x in program]  # constants: the shape function sees num_qubits
        return ops.expectation_adjoint_grad_from_final_state(*p, angles, tf.zeros(shape, tf.float64), upstream)

    for shape in [(2, 2, 4), (2, 2), (2, 3, 8)]:
        with pytest.raises(ValueError):
            run(shape)

    @tf.function
    def forward():
        p = [tf.constant(x.numpy()) for x in program]
        return ops.expectation_and_state(*p, angles)

    e, s = forward.get_concrete_function().structured_outputs
    assert e.shape.as_list() == [2, 2] and s.shape.as_list() == [None, 2, 8]


def test_sizes_from_user_input_never_abort():
    """Shapes whose element count overflows int64 are named, not CHECK-failed
    (TensorShape's constructor would abort the process): in a child."""
    out = run_fresh_python("""
        import sys
        sys.path.insert(0, "tests")
        import tensorflow as tf
        from qkeras_hybrid import ops
        from test_op_safety import _valid_program, _without_angle_slots
        PROGRAM = ["num_qubits", "block_meta", "gate_meta", "gate_data", "pauli_masks", "pauli_coeffs"]
        def run(name, f):
            try:
                out = f()
                print(name, "result", [tuple(t.shape) for t in (out if isinstance(out, tuple) else (out,))])
            except Exception as e:
                print(name, type(e).__name__, str(e).splitlines()[0])
        for n in (60, 62):
            t = {k: tf.constant(v) for k, v in _valid_program().items()}
            t["num_qubits"] = tf.constant(n, tf.int32)
            p = [t[k] for k in PROGRAM]
            run(f"grad{n}", lambda: ops.expectation_adjoint_grad_from_final_state(
                *p, tf.zeros((4, 1), tf.float64), tf.zeros((4, 2, 4), tf.float64), tf.ones((4, 2), tf.float64)))
            run(f"forward{n}", lambda: ops.expectation_and_state(*p, t["angles"]))
        # No observables and an empty angles tensor, which may have any batch: expectations
        # [batch, 0] hold nothing, but their states would.
        s = [tf.constant(_without_angle_slots()[k]) for k in PROGRAM]
        s[4], s[5] = tf.zeros((0, 1, 2), tf.int64), tf.zeros((0, 1), tf.float64)
        run("huge_batch", lambda: ops.expectation_and_state(*s, tf.zeros((2**40, 0), tf.float64),
                                                            max_state_bytes=2**62))
        run("huge_batch_default", lambda: ops.expectation_and_state(*s, tf.zeros((2**62, 0), tf.float64)))
    """)
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    def check(name, error, message):
        assert lines[name].startswith(error + " ") and message in lines[name], (name, lines)

    for n in (60, 62):
        check(f"grad{n}", "InvalidArgumentError",
              f"final_state must have shape [batch, 2, 2**num_qubits] = [4,2,{2**n}]")
        # No batch of 2**n-amplitude states is kept; the simulation itself does not fit.
        check(f"forward{n}", "ResourceExhaustedError", f"simulating {n} qubits")
    check("huge_batch", "ResourceExhaustedError", f"final_state of shape [{2**40},2,4] needs more")
    # Past the default budget no state is kept, and nothing is left to compute (no hang).
    assert lines["huge_batch_default"] == f"result [({2**62}, 0), (0, 2, 4)]", lines


# ------------------------------------------------------------- layers, saving


def _hea_layer(n=12, name=None):
    q = cirq.LineQubit.range(n)
    xs = sympy.symbols("x0:3")
    ws = sympy.symbols(f"w0:{n}")
    circuit = cirq.Circuit(
        [cirq.ry(xs[i % 3])(x) for i, x in enumerate(q)],
        [cirq.rx(w)(x) for w, x in zip(ws, q)],
        [cirq.CNOT(x, y) for x, y in zip(q, q[1:])],
        cirq.rz(ws[0] + xs[1])(q[-1]),
    )
    observables = [cirq.Z(q[0]), cirq.X(q[1]) * cirq.Y(q[-1]), cirq.Z(q[n // 2])]
    return qh.QuantumLayer(circuit, observables, input_symbols=xs, name=name)


def _op_types(fn, *args):
    return {op.type for op in tf.function(fn).get_concrete_function(*args).graph.get_operations()}


@pytest.mark.parametrize("n", [11, 12])
def test_layer_uses_the_state_op_from_twelve_qubits(n, monkeypatch):
    layer = _hea_layer(n)
    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, size=(5, 3)), tf.float32)
    layer(x)
    types = _op_types(lambda v: layer(v), x)
    uses_state = n >= compiled_lib.STATE_REUSE_QUBITS
    assert ("QkerasHybrid>ExpectationAndState" in types) == uses_state
    assert ("QkerasHybrid>Expectation" in types) == (not uses_state)
    # Eagerly without a tape nothing can use the states: the plain op runs.
    calls = []
    original = ops.expectation_and_state
    monkeypatch.setattr(ops, "expectation_and_state", lambda *a, **k: calls.append(1) or original(*a, **k))
    layer(x)
    assert not calls
    with tf.GradientTape():
        layer(x)
    assert len(calls) == uses_state


def test_layer_gradients_equal_the_old_path(monkeypatch):
    layer = _hea_layer(12)
    x = tf.constant(np.random.default_rng(2).uniform(-1, 1, size=(19, 3)), tf.float32)
    w = tf.constant(np.random.default_rng(3).normal(size=(19, 3)), tf.float32)

    def grads():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(w * y)
        return [y] + tape.gradient(loss, [x, layer.quantum_weights])

    new = [t.numpy() for t in grads()]
    graph_new = [t.numpy() for t in tf.function(grads)()]
    monkeypatch.setattr(compiled_lib, "STATE_REUSE_QUBITS", 100)
    old = [t.numpy() for t in grads()]
    for a, b, c in zip(new, graph_new, old):
        np.testing.assert_allclose(a, c, atol=1e-5)
        np.testing.assert_allclose(b, c, atol=1e-5)


def _model():
    keras.utils.set_random_seed(11)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="tanh")(inputs)
    e = _hea_layer(12, name="q12")(h)
    return keras.Model(inputs, keras.layers.Dense(2)(e))


def test_saved_twelve_qubit_model_reloads_with_outputs_and_gradients(tmp_path):
    """.keras and SavedModel export of a model whose quantum layer runs the
    state op: reloaded in a fresh process, outputs and gradients match."""
    model = _model()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 4)).astype("float32")
    w = rng.normal(size=(6, 2)).astype("float32")
    model.compile("adam", "mse")
    model.fit(x, w, epochs=1, verbose=0)  # trained through the new gradient
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = model(xt)
        loss = tf.reduce_sum(w * y)
    dx, dq = tape.gradient(loss, [xt, model.get_layer("q12").quantum_weights])
    model.save(tmp_path / "m.keras")
    model.export(str(tmp_path / "exported"), verbose=False)
    np.savez(tmp_path / "data.npz", x=x, w=w)
    out = run_fresh_python(f"""
        import numpy as np, tensorflow as tf, keras
        import qkeras_hybrid
        data = np.load({str(tmp_path / 'data.npz')!r})
        x, w = tf.constant(data["x"]), tf.constant(data["w"])
        m = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = m(x)
            loss = tf.reduce_sum(w * y)
        dx, dq = tape.gradient(loss, [x, m.get_layer("q12").quantum_weights])
        served = tf.saved_model.load({str(tmp_path / 'exported')!r})
        with tf.GradientTape() as tape:
            tape.watch(x)
            ys = served.serve(x)
            loss = tf.reduce_sum(w * ys)
        dxs = tape.gradient(loss, x)
        ops = {{op.type for f in served.serve._list_all_concrete_functions_for_serialization()
               for op in f.graph.get_operations()}}
        for g in served.serve._list_all_concrete_functions_for_serialization():
            for f in g.graph._functions.values():
                ops |= {{node.op for node in f.definition.node_def}}
        np.savez({str(tmp_path / 'out.npz')!r}, y=y.numpy(), dx=dx.numpy(), dq=dq.numpy(), ys=ys.numpy(),
                 dxs=dxs.numpy())
        print("ExpectationAndState" in " ".join(ops))
    """)
    got = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(got["y"], y.numpy(), atol=1e-6)
    np.testing.assert_allclose(got["ys"], y.numpy(), atol=1e-6)
    np.testing.assert_allclose(got["dx"], dx.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["dq"], dq.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["dxs"], dx.numpy(), atol=1e-5)
    assert out.strip().splitlines()[-1] == "True", out
