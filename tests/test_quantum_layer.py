"""QuantumLayer in Keras models: values, gradients, training, saving, export."""

import os

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid as qh
from qkeras_hybrid.layers import QuantumLayer

from conftest import REPO, run_fresh_python

QUBITS = cirq.LineQubit.range(2)
X0, X1, W0, W1, W2 = sympy.symbols("x0 x1 w0 w1 w2")


def two_qubit_circuit():
    q = QUBITS
    return cirq.Circuit(
        cirq.ry(X0)(q[0]), cirq.ry(X1)(q[1]), cirq.ry(W0)(q[0]), cirq.rx(W1 + X0)(q[1]),
        cirq.CNOT(q[0], q[1]), cirq.rz(W2)(q[1]), cirq.H(q[1]),
    )


def make_layer(**kwargs):
    obs = [cirq.Z(QUBITS[0]), cirq.Z(QUBITS[1]), cirq.X(QUBITS[0]) * cirq.Y(QUBITS[1])]
    return QuantumLayer(two_qubit_circuit(), obs, input_symbols=[X0, X1], **kwargs)


def cirq_reference(layer, inputs):
    weights = layer.quantum_weights.numpy()
    sim = cirq.Simulator(dtype=np.complex128)
    rows = []
    for row in inputs:
        values = dict(zip(layer.input_symbols, row))
        values.update(zip(layer.weight_symbols, weights))
        res = sim.simulate_expectation_values(
            layer.circuit, layer.observables, cirq.ParamResolver(values), qubit_order=QUBITS
        )
        rows.append(np.real(res))
    return np.array(rows)


def test_outputs_match_cirq_and_shapes():
    layer = make_layer()
    x = np.random.default_rng(1).uniform(-2, 2, size=(5, 2)).astype("float32")
    y = layer(x).numpy()
    assert y.shape == (5, 3) == layer.compute_output_shape((5, 2))
    np.testing.assert_allclose(y, cirq_reference(layer, x), atol=1e-5)
    assert layer.weight_symbols == ["w0", "w1", "w2"]
    assert layer.count_params() == 3


def test_gradients_wrt_inputs_and_weights_match_finite_differences():
    layer = make_layer(dtype="float64")
    x = tf.constant(np.random.default_rng(2).uniform(-2, 2, size=(3, 2)))
    upstream = tf.constant(np.random.default_rng(3).normal(size=(3, 3)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * upstream)
    gx, gw = tape.gradient(loss, [x, layer.quantum_weights.value])

    def f(xv, wv):
        layer.quantum_weights.assign(wv)
        return float(tf.reduce_sum(layer(tf.constant(xv)) * upstream))

    w = layer.quantum_weights.numpy().copy()
    eps = 1e-6
    fd_x = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        d = np.zeros(x.shape)
        d[idx] = eps
        fd_x[idx] = (f(x.numpy() + d, w) - f(x.numpy() - d, w)) / (2 * eps)
    fd_w = np.zeros(w.shape)
    for i in range(w.size):
        d = np.zeros(w.shape)
        d[i] = eps
        fd_w[i] = (f(x.numpy(), w + d) - f(x.numpy(), w - d)) / (2 * eps)
    np.testing.assert_allclose(gx.numpy(), fd_x, atol=1e-6)
    np.testing.assert_allclose(gw.numpy(), fd_w, atol=1e-6)


def xy_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 4)).astype("float32")
    y = (x[:, :1] * x[:, 1:2] > 0).astype("float32")
    return x, y


def test_sequential_fit_evaluate_predict_with_tf_data():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(2),
        make_layer(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["accuracy"])
    x, y = xy_data(128)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    before = model.evaluate(ds, verbose=0)[0]
    history = model.fit(ds, epochs=8, verbose=0)
    after = model.evaluate(ds, verbose=0)[0]
    assert after < before - 0.05, (before, after)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.predict(x[:7], verbose=0).shape == (7, 1)


def test_functional_model_with_conv_and_two_quantum_layers():
    keras.utils.set_random_seed(1)
    images = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, activation="relu")(images)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(2)(h)
    first = make_layer()(h)  # 3 outputs
    second = QuantumLayer(
        cirq.Circuit(cirq.ry(X0)(QUBITS[0]), cirq.rx(X1)(QUBITS[0]), cirq.ry(W0)(QUBITS[0])),
        cirq.Z(QUBITS[0]), input_symbols=[X0, X1],
    )(keras.layers.Dense(2)(first))
    model = keras.Model(images, keras.layers.Dense(1)(second))
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).uniform(size=(16, 6, 6, 1)).astype("float32")
    y = x.mean(axis=(1, 2))
    w_before = [l.quantum_weights.numpy().copy() for l in model.layers if isinstance(l, QuantumLayer)]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    w_after = [l.quantum_weights.numpy() for l in model.layers if isinstance(l, QuantumLayer)]
    assert all(np.any(a != b) for a, b in zip(w_before, w_after)), "quantum weights did not train"


def test_subclassed_model():
    class Hybrid(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)
            self.quantum = make_layer()

        def call(self, x):
            return self.quantum(self.dense(x))

    model = Hybrid()
    model.compile("adam", "mse")
    x, _ = xy_data(16)
    model.fit(x, np.zeros((16, 3), "float32"), epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (16, 3)


def test_layer_without_inputs_finds_ground_state_energy():
    # A purely trainable circuit (VQE): minimise <H> of a 2-qubit Hamiltonian.
    q = QUBITS
    a, b, c, d = sympy.symbols("a b c d")
    circuit = cirq.Circuit(cirq.ry(a)(q[0]), cirq.ry(b)(q[1]), cirq.CNOT(*q), cirq.ry(c)(q[0]), cirq.ry(d)(q[1]))
    hamiltonian = cirq.Z(q[0]) * cirq.Z(q[1]) + 0.5 * cirq.X(q[0]) + 0.3 * cirq.X(q[1])
    layer = QuantumLayer(circuit, hamiltonian)
    assert layer.weight_symbols == ["a", "b", "c", "d"]
    opt = keras.optimizers.Adam(0.1)
    dummy = tf.zeros((1, 1))
    layer(dummy)
    for _ in range(200):
        with tf.GradientTape() as tape:
            energy = tf.reduce_sum(layer(dummy))
        grads = tape.gradient(energy, layer.trainable_variables)
        opt.apply_gradients(zip(grads, layer.trainable_variables))
    exact = np.linalg.eigvalsh(hamiltonian.matrix(q)).min()
    assert float(energy) == pytest.approx(exact, abs=1e-2)


def test_qiskit_circuit_runs_on_native_simulator():
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import SparsePauliOp, Statevector

    x, w = Parameter("x"), Parameter("w")
    qc = QuantumCircuit(2)
    qc.ry(x, 0)
    qc.rx(2 * w, 1)
    qc.cx(0, 1)
    obs = SparsePauliOp.from_list([("ZI", 1.0), ("XY", 0.5)])
    layer = QuantumLayer(qc, obs, input_symbols=[x])
    inputs = np.array([[0.3], [-1.2]], "float32")
    out = layer(inputs).numpy()
    wv = float(layer.quantum_weights.numpy()[0])
    for row, value in zip(inputs, out):
        ref = Statevector(qc.assign_parameters({x: float(row[0]), w: wv})).expectation_value(obs).real
        assert value[0] == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_symbols=["nope"]), "do not appear in the circuit"),
        (dict(input_symbols=[X0], weight_symbols=[X0, W0]), "both as input_symbols and weight_symbols"),
        (dict(input_symbols=[X0], weight_symbols=["zz"]), "do not appear in the circuit"),
        (dict(input_symbols=[X0], backend="gpu"), "backend must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantumLayer(two_qubit_circuit(), cirq.Z(QUBITS[0]), **kwargs)


def test_observable_on_missing_qubit_and_wrong_width():
    with pytest.raises(ValueError, match="not one of the circuit's qubits"):
        QuantumLayer(two_qubit_circuit(), cirq.Z(cirq.LineQubit(5)), input_symbols=[X0, X1])
    layer = make_layer()
    with pytest.raises(ValueError, match="expects inputs of width 2"):
        layer(np.zeros((4, 3), "float32"))


def test_config_round_trip_reproduces_outputs():
    layer = make_layer(initializer=keras.initializers.Constant(0.4), regularizer="l2")
    x = np.random.default_rng(5).uniform(size=(4, 2)).astype("float32")
    y = layer(x).numpy()
    config = layer.get_config()
    clone = QuantumLayer.from_config(config)
    clone.build((None, 2))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), y, atol=1e-6)
    assert clone.circuit == layer.circuit
    assert clone.get_config()["regularizer"] == config["regularizer"]


def trained_model(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(2)(inputs)
    out = keras.layers.Dense(1)(make_layer()(h))
    model = keras.Model(inputs, out)
    model.compile("adam", "mse")
    x, y = xy_data(32)
    model.fit(x, y, epochs=2, verbose=0)
    return model, x


def test_keras_save_load_in_separate_process(tmp_path):
    model, x = trained_model(tmp_path)
    path = tmp_path / "hybrid.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    expected = model.predict(x, verbose=0)
    run_fresh_python(f"""
        import numpy as np, keras
        import qkeras_hybrid
        m = keras.models.load_model({str(path)!r})
        np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))
        q = [l for l in m.layers if isinstance(l, qkeras_hybrid.QuantumLayer)][0]
        np.save({str(tmp_path / 'w.npy')!r}, q.quantum_weights.numpy())
    """)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-6)
    original = [l for l in model.layers if isinstance(l, QuantumLayer)][0].quantum_weights.numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), original)


def test_savedmodel_export_serves_in_separate_process(tmp_path):
    model, x = trained_model(tmp_path)
    export_dir = tmp_path / "exported"
    model.export(str(export_dir), verbose=False)
    np.save(tmp_path / "x.npy", x)
    run_fresh_python(f"""
        import numpy as np, tensorflow as tf
        import qkeras_hybrid
        served = tf.saved_model.load({str(export_dir)!r})
        np.save({str(tmp_path / 'y.npy')!r}, served.serve(np.load({str(tmp_path / 'x.npy')!r})).numpy())
    """)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), atol=1e-6)


def test_reference_models_from_earlier_versions_still_load():
    ref = np.load(os.path.join(REPO, "saved_models", "reference_v1_expected.npz"))
    served = tf.saved_model.load(os.path.join(REPO, "saved_models", "reference_v1"))
    np.testing.assert_allclose(served.serve(ref["x"]).numpy(), ref["y"], atol=1e-5)
    model = keras.models.load_model(os.path.join(REPO, "saved_models", "reference_v1.keras"))
    np.testing.assert_allclose(model.predict(ref["x"], verbose=0), ref["y"], atol=1e-5)


def test_summary_names_qubits():
    model = keras.Sequential([keras.Input((2,)), make_layer()])
    lines = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    assert "2q" in text and "QuantumLayer" in text
