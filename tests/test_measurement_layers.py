"""ProbabilityLayer, SampleLayer, StateLayer against cirq.Simulator, Qiskit and finite differences."""

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

from conftest import run_fresh_python
from qkeras_hybrid.layers.measurement import ProbabilityLayer, SampleLayer, StateLayer, frequencies

Q = cirq.LineQubit.range(3)
X0, X1, W0, W1, W2 = sympy.symbols("x0 x1 w0 w1 w2")


def circuit3():
    return cirq.Circuit(
        cirq.rx(X0)(Q[0]), cirq.ry(X1)(Q[1]), cirq.H(Q[2]),
        cirq.CNOT(Q[0], Q[1]), cirq.rz(W0)(Q[1]), cirq.ry(2 * W1 + 0.3)(Q[2]),
        cirq.CZ(Q[1], Q[2]), cirq.rx(W2)(Q[0]), cirq.ry(W0)(Q[2]),
    )


def cirq_states(circuit, values, symbols, qubits=Q):
    sim = cirq.Simulator(dtype=np.complex128)
    out = []
    for row in values:
        resolver = dict(zip([str(s) for s in symbols], row))
        out.append(sim.simulate(circuit, resolver, qubit_order=qubits).final_state_vector)
    return np.array(out)


def marginal(states, qubits, register=Q):
    n = len(register)
    p = (np.abs(states) ** 2).reshape([-1] + [2] * n)
    axes = [1 + register.index(q) for q in qubits]
    rest = [a for a in range(1, n + 1) if a not in axes]
    return p.transpose([0] + axes + rest).reshape(len(states), 2 ** len(qubits), -1).sum(-1)


def weights_of(layer):
    return layer.quantum_weights.numpy().astype(np.float64)


RNG = np.random.default_rng(7)
XS = RNG.uniform(-2, 2, size=(5, 2))


@pytest.mark.parametrize("qubits", [None, [Q[2], Q[0]], [Q[1]], [Q[1], Q[2], Q[0]]])
def test_probabilities_match_cirq(qubits):
    layer = ProbabilityLayer(circuit3(), qubits=qubits, input_symbols=[X0, X1], dtype="float64")
    got = layer(XS).numpy()
    values = np.concatenate([XS, np.tile(weights_of(layer), (len(XS), 1))], axis=1)
    states = cirq_states(circuit3(), values, [X0, X1, W0, W1, W2])
    np.testing.assert_allclose(got, marginal(states, qubits or Q), atol=1e-10)
    assert got.shape == (5, 2 ** len(qubits or Q))


def test_state_matches_cirq():
    for dtype, complex_dtype, atol in (("float32", np.complex64, 2e-6), ("float64", np.complex128, 1e-12)):
        layer = StateLayer(circuit3(), input_symbols=[X0, X1], dtype=dtype)
        got = layer(XS).numpy()
        assert got.dtype == complex_dtype
        values = np.concatenate([XS, np.tile(weights_of(layer), (len(XS), 1))], axis=1)
        np.testing.assert_allclose(got, cirq_states(circuit3(), values, [X0, X1, W0, W1, W2]), atol=atol)


def test_qiskit_circuit_probabilities_and_state_in_cirq_order():
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import Statevector

    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(3)
    qc.ry(a, 0)
    qc.cx(0, 2)
    qc.rx(b, 1)
    qc.h(1)
    values = np.array([[0.3, 1.1], [2.0, -0.4]])
    probs = ProbabilityLayer(qc, qubits=[2, 0], input_symbols=[a, b], dtype="float64")(values).numpy()
    states = StateLayer(qc, input_symbols=[a, b], dtype="float64")(values).numpy()
    for row, value in enumerate(values):
        sv = Statevector(qc.assign_parameters(dict(zip([a, b], value)))).data  # qubit 0 least significant
        cirq_order = sv.reshape([2] * 3).transpose([2, 1, 0]).reshape(-1)  # qubit 0 most significant
        np.testing.assert_allclose(states[row], cirq_order, atol=1e-12)
        p = (np.abs(sv) ** 2).reshape([2] * 3)  # axes: qubit 2, 1, 0
        np.testing.assert_allclose(probs[row], p.sum(axis=1).reshape(-1), atol=1e-12)  # qubit 2 then 0


def test_output_specs_and_functional_model():
    inputs = keras.Input((2,))
    p = ProbabilityLayer(circuit3(), qubits=[Q[0]], input_symbols=[X0, X1])(inputs)
    s = StateLayer(circuit3(), input_symbols=[X0, X1])(inputs)
    b = SampleLayer(circuit3(), shots=7, input_symbols=[X0, X1], seed=1)(inputs)
    assert (tuple(p.shape), p.dtype) == ((None, 2), "float32")
    assert (tuple(s.shape), s.dtype) == ((None, 8), "complex64")
    assert (tuple(b.shape), b.dtype) == ((None, 7, 3), "int32")
    model = keras.Model(inputs, [p, s, b])
    out = model.predict(XS, verbose=0)
    assert out[0].shape == (5, 2) and out[1].shape == (5, 8) and out[2].shape == (5, 7, 3)
    assert out[2].dtype == np.int32 and set(np.unique(out[2])) <= {0, 1}


def test_probability_gradient_matches_finite_differences():
    layer = ProbabilityLayer(circuit3(), qubits=[Q[2], Q[1]], input_symbols=[X0, X1], dtype="float64")
    layer.build((None, 2))
    x = tf.constant(XS)
    upstream = tf.constant(RNG.normal(size=(5, 4)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(upstream * layer(x))
    dx, dw = tape.gradient(loss, [x, layer.quantum_weights])
    w0 = layer.quantum_weights.numpy()

    def f(xv, wv):
        layer.quantum_weights.assign(wv)
        return float(tf.reduce_sum(upstream * layer(xv)))

    eps = 1e-6
    for idx in np.ndindex(XS.shape):
        e = np.zeros_like(XS)
        e[idx] = eps
        np.testing.assert_allclose(dx.numpy()[idx], (f(XS + e, w0) - f(XS - e, w0)) / (2 * eps), atol=1e-7)
    for k in range(3):
        e = np.zeros(3)
        e[k] = eps
        np.testing.assert_allclose(dw.numpy()[k], (f(XS, w0 + e) - f(XS, w0 - e)) / (2 * eps), atol=1e-7)
    layer.quantum_weights.assign(w0)


def test_state_gradient_of_fidelity_matches_finite_differences():
    layer = StateLayer(circuit3(), input_symbols=[X0, X1], dtype="float64")
    layer.build((None, 2))
    target = RNG.normal(size=8) + 1j * RNG.normal(size=8)
    target = tf.constant(target / np.linalg.norm(target))

    def loss(x):
        overlap = tf.reduce_sum(tf.math.conj(target) * layer(x), axis=-1)
        return tf.reduce_sum(tf.abs(overlap) ** 2 + 0.3 * tf.math.real(layer(x)[:, 3]))

    x = tf.constant(XS)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    dx, dw = tape.gradient(value, [x, layer.quantum_weights])
    w0 = layer.quantum_weights.numpy()
    eps = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = eps
        layer.quantum_weights.assign(w0 + e)
        plus = float(loss(x))
        layer.quantum_weights.assign(w0 - e)
        minus = float(loss(x))
        np.testing.assert_allclose(dw.numpy()[k], (plus - minus) / (2 * eps), atol=1e-7)
    layer.quantum_weights.assign(w0)
    e = np.zeros_like(XS)
    e[2, 1] = eps
    np.testing.assert_allclose(dx.numpy()[2, 1], (float(loss(XS + e)) - float(loss(XS - e))) / (2 * eps), atol=1e-7)


def test_state_layer_learns_a_target_state_with_fit():
    q = cirq.LineQubit.range(2)
    a, b, c = sympy.symbols("a b c")
    circuit = cirq.Circuit(cirq.ry(a)(q[0]), cirq.CNOT(*q), cirq.rz(b)(q[1]), cirq.rx(c)(q[0]))
    truth = {"a": 1.1, "b": -0.7, "c": 0.4}
    target = cirq.Simulator(dtype=np.complex128).simulate(circuit, truth).final_state_vector.astype(np.complex64)

    # Keras losses cast y_true and y_pred to their dtype (floatx by default): a complex one keeps the phases.
    class Infidelity(keras.losses.Loss):
        def __init__(self):
            super().__init__(dtype="complex64")

        def call(self, y_true, y_pred):
            return 1.0 - tf.abs(tf.reduce_sum(tf.math.conj(y_true) * y_pred, axis=-1)) ** 2

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), StateLayer(circuit, initializer=keras.initializers.Constant(0.5))])
    model.compile(keras.optimizers.Adam(0.05), loss=Infidelity())
    x, y = np.zeros((16, 1), np.float32), np.tile(target, (16, 1))
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=100, batch_size=16, verbose=0)
    assert before > 0.1 and model.evaluate(x, y, verbose=0) < 1e-3


def chi_square_p_value(counts, probabilities):
    from scipy import stats

    expected = probabilities * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0  # nothing drawn where the probability is zero
    statistic = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    return stats.chi2.sf(statistic, keep.sum() - 1)


def test_sample_frequencies_match_probabilities_chi_square():
    qubits = [Q[2], Q[0]]
    shots = 4000
    sampler = SampleLayer(circuit3(), shots=shots, qubits=qubits, input_symbols=[X0, X1], seed=3)
    exact = ProbabilityLayer(circuit3(), qubits=qubits, input_symbols=[X0, X1], dtype="float64")
    sampler.build((None, 2))
    exact.build((None, 2))
    exact.quantum_weights.assign(tf.cast(sampler.quantum_weights, tf.float64))
    bits = sampler(XS).numpy()
    assert bits.shape == (5, shots, 2) and bits.dtype == np.int32
    p = exact(XS).numpy()
    counts = frequencies(bits, tf.float64).numpy() * shots
    for row in range(5):
        assert chi_square_p_value(counts[row], p[row]) > 1e-4
    freq = ProbabilityLayer(circuit3(), qubits=qubits, input_symbols=[X0, X1], shots=shots, seed=3)
    freq.build((None, 2))
    freq.quantum_weights.assign(sampler.quantum_weights)
    f = freq(XS).numpy()
    np.testing.assert_allclose(f.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(f, p, atol=5 * np.sqrt(0.25 / shots))
    np.testing.assert_allclose(f * shots, np.round(f * shots), atol=1e-3)  # multiples of 1/shots


def test_sample_bit_order_on_basis_states():
    circuit = cirq.Circuit(cirq.X(Q[1]), cirq.I(Q[0]), cirq.I(Q[2]))
    bits = SampleLayer(circuit, shots=4, qubits=[Q[1], Q[2], Q[0]], seed=0)(np.zeros((2, 0))).numpy()
    np.testing.assert_array_equal(bits, np.tile([1, 0, 0], (2, 4, 1)))
    probs = ProbabilityLayer(circuit, qubits=[Q[2], Q[1]])(np.zeros((1, 0))).numpy()
    np.testing.assert_allclose(probs, [[0, 1, 0, 0]], atol=1e-6)  # |q2 q1> = |01>


def test_seeds_advance_per_call_eagerly_and_in_tf_function():
    layer = SampleLayer(circuit3(), shots=50, input_symbols=[X0, X1], seed=11)
    twin = SampleLayer(circuit3(), shots=50, input_symbols=[X0, X1], seed=11)
    other = SampleLayer(circuit3(), shots=50, input_symbols=[X0, X1], seed=12)
    for l in (layer, twin, other):
        l.build((None, 2))
        l.quantum_weights.assign(np.full(3, 0.8, np.float32))
    first, second = layer(XS).numpy(), layer(XS).numpy()
    assert not np.array_equal(first, second)  # the state advances
    np.testing.assert_array_equal(twin(XS).numpy(), first)
    traced = tf.function(twin)
    np.testing.assert_array_equal(traced(XS).numpy(), second)  # graph calls continue the same sequence
    third = traced(XS).numpy()
    assert not np.array_equal(third, second)
    assert not np.array_equal(other(XS).numpy(), first)


def test_unseeded_layers_differ():
    a = SampleLayer(circuit3(), shots=200, input_symbols=[X0, X1], initializer="ones")
    b = SampleLayer(circuit3(), shots=200, input_symbols=[X0, X1], initializer="ones")
    assert not np.array_equal(a(XS).numpy(), b(XS).numpy())


def test_sampling_layers_have_no_gradient():
    x = tf.constant(XS, tf.float32)
    layer = ProbabilityLayer(circuit3(), input_symbols=[X0, X1], shots=5, seed=0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = layer(x)
    with pytest.raises(ValueError, match="probability_layer_3q.*no gradient"):
        tape.gradient(out, x)
    model = keras.Sequential([keras.Input((2,)), ProbabilityLayer(circuit3(), input_symbols=[X0, X1], shots=5)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no gradient"):
        model.fit(XS, np.zeros((5, 8)), verbose=0)
    layer = SampleLayer(circuit3(), shots=5, input_symbols=[X0, X1], seed=0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.cast(layer(x), tf.float32)
    assert tape.gradient(out, x) is None  # integers: never differentiated


def test_bad_arguments():
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        SampleLayer(circuit3(), shots=0)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        ProbabilityLayer(circuit3(), shots=2.5)
    with pytest.raises(ValueError, match="seed must be an integer"):
        SampleLayer(circuit3(), shots=3, seed="x")
    with pytest.raises(ValueError, match="more than once"):
        ProbabilityLayer(circuit3(), qubits=[Q[0], Q[0]])
    with pytest.raises(TypeError, match="cirq.Qid"):
        ProbabilityLayer(circuit3(), qubits=[0])
    with pytest.raises(ValueError, match="do not appear"):
        StateLayer(circuit3(), input_symbols=["nope"])
    layer = ProbabilityLayer(circuit3(), input_symbols=[X0, X1])
    with pytest.raises(ValueError, match="width 2"):
        layer(np.zeros((2, 3)))


def test_idle_measured_qubit_joins_the_register():
    extra = cirq.LineQubit(5)
    probs = ProbabilityLayer(cirq.Circuit(cirq.X(Q[0])), qubits=[extra, Q[0]])(np.zeros((1, 0))).numpy()
    np.testing.assert_allclose(probs, [[0, 1, 0, 0]], atol=1e-6)


def test_mixed_precision_outputs():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        p = ProbabilityLayer(circuit3(), input_symbols=[X0, X1])
        s = StateLayer(circuit3(), input_symbols=[X0, X1])
        assert p(XS).dtype == tf.float16 and s(XS).dtype == tf.complex64
        assert p.quantum_weights.dtype == "float32"
    finally:
        keras.config.set_dtype_policy(policy)


def test_get_config_round_trip():
    layers = [
        ProbabilityLayer(circuit3(), qubits=[Q[2], Q[0]], input_symbols=[X0, X1], shots=9, seed=4, name="p"),
        SampleLayer(circuit3(), shots=6, qubits=[Q[1]], input_symbols=[X0, X1], seed=2),
        StateLayer(circuit3(), input_symbols=[X0, X1], weight_symbols=[W2, W1, W0], dtype="float64"),
    ]
    for layer in layers:
        config = layer.get_config()
        clone = type(layer).from_config(config)
        assert clone.get_config() == config
        restored = keras.layers.deserialize(keras.layers.serialize(layer))
        assert type(restored) is type(layer) and restored.get_config() == config


def _model(tmp_path):
    inputs = keras.Input((2,))
    h = keras.layers.Dense(2)(inputs)
    outputs = [
        ProbabilityLayer(circuit3(), qubits=[Q[1], Q[0]], input_symbols=[X0, X1])(h),
        StateLayer(circuit3(), input_symbols=[X0, X1])(h),
        SampleLayer(circuit3(), shots=20, input_symbols=[X0, X1], seed=5)(h),
        ProbabilityLayer(circuit3(), input_symbols=[X0, X1], shots=30, seed=6)(h),
    ]
    return keras.Model(inputs, outputs)


def test_keras_file_round_trip_in_fresh_process(tmp_path):
    model = _model(tmp_path)
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", XS.astype(np.float32))
    expected = model(XS.astype(np.float32))  # what the saved model draws next: the state is saved
    run_fresh_python(f"""
        import numpy as np, keras
        import qkeras_hybrid
        m = keras.models.load_model({str(path)!r})
        out = m(np.load({str(tmp_path / 'x.npy')!r}))
        for i, o in enumerate(out):
            np.save({str(tmp_path)!r} + f"/y{{i}}.npy", np.asarray(o))
    """)
    for i, o in enumerate(expected):
        got = np.load(tmp_path / f"y{i}.npy")
        if i < 2:
            np.testing.assert_allclose(got, np.asarray(o), atol=1e-6)
        else:
            np.testing.assert_array_equal(got, np.asarray(o))


def test_savedmodel_export_in_fresh_process(tmp_path):
    model = _model(tmp_path)
    export_dir = tmp_path / "exported"
    model.export(str(export_dir), verbose=False)
    x = XS.astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = [np.asarray(o) for o in model(x)]
    again = [np.asarray(o) for o in model(x)]
    run_fresh_python(f"""
        import numpy as np, tensorflow as tf
        import qkeras_hybrid
        served = tf.saved_model.load({str(export_dir)!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        for call in range(2):
            for i, o in enumerate(served.serve(x)):
                np.save({str(tmp_path)!r} + f"/y{{call}}_{{i}}.npy", o.numpy())
    """)
    for call, outputs in enumerate((expected, again)):
        for i, o in enumerate(outputs):
            got = np.load(tmp_path / f"y{call}_{i}.npy")
            if i < 2:
                np.testing.assert_allclose(got, o, atol=1e-6)
            else:  # the exported seed state advances per call, from where it was exported
                np.testing.assert_array_equal(got, o)


def test_same_seed_same_outputs_in_two_processes(tmp_path):
    # Two fresh processes, each building layers with seeds 21 and 22.
    code = f"""
        import numpy as np, cirq, sympy, keras, tensorflow as tf
        from qkeras_hybrid.layers import SampleLayer, ProbabilityLayer
        q = cirq.LineQubit.range(2)
        x = sympy.Symbol("x")
        c = cirq.Circuit(cirq.rx(x)(q[0]), cirq.H(q[1]))
        xs = np.array([[0.4], [1.3]], np.float32)
        out = {{}}
        for seed in (21, 22):
            s = SampleLayer(c, shots=64, input_symbols=[x], seed=seed)
            p = ProbabilityLayer(c, input_symbols=[x], shots=64, seed=seed)
            for i, v in enumerate([s(xs), s(xs), tf.function(s)(xs), p(xs)]):
                out[f"{{seed}}_{{i}}"] = v.numpy()
        np.savez({str(tmp_path)!r} + "/OUT.npz", **out)
    """
    for name in "ab":
        run_fresh_python(code.replace("OUT", name))
    a, b = (np.load(tmp_path / f"{n}.npz") for n in "ab")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["21_0"], a["21_1"])
    assert not np.array_equal(a["21_0"], a["22_0"])


def test_quantum_tensorboard_logs_measurement_layers(tmp_path):
    from qkeras_hybrid.callbacks import QuantumTensorBoard

    inputs = keras.Input((2,))
    probs = ProbabilityLayer(circuit3(), qubits=[Q[0]], input_symbols=[X0, X1])(inputs)
    model = keras.Model(inputs, probs)
    model.compile("adam", "mse")
    y = np.tile([[0.2, 0.8]], (5, 1))
    callback = QuantumTensorBoard(str(tmp_path), gradient_data=(XS, y))
    model.fit(XS, y, epochs=2, verbose=0, callbacks=[callback])
    norms = callback.history[f"{model.layers[1].name}/grad_norm"]
    assert len(norms) == 2 and norms[0] > 0
