"""QuantumTensorBoard: what it writes, read back from the event files."""

import os
import warnings

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from tensorboard.backend.event_processing import event_accumulator

from qkeras_hybrid.callbacks import QuantumTensorBoard, find_quantum_layers
from qkeras_hybrid.layers import QuantumLayer

QUBITS = cirq.LineQubit.range(2)
X0, X1, W0, W1 = sympy.symbols("x0 x1 w0 w1")
EPOCHS = 2


def cirq_layer(name):
    q = QUBITS
    circuit = cirq.Circuit(
        cirq.ry(X0)(q[0]), cirq.ry(X1)(q[1]), cirq.ry(W0)(q[0]), cirq.ry(W1)(q[1]), cirq.CNOT(q[0], q[1])
    )
    return QuantumLayer(circuit, [cirq.Z(q[0]), cirq.Z(q[1])], input_symbols=[X0, X1], name=name)


def qiskit_layer(name):
    a, b, theta = Parameter("a"), Parameter("b"), Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(a, 0)
    qc.ry(b, 1)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    return QuantumLayer(qc, [SparsePauliOp(["IZ", "ZI"])], input_symbols=[a, b], name=name)


def make_model():
    """Dense -> (nested model: Cirq quantum layer) -> Dense -> Qiskit quantum layer -> Dense."""
    inner = keras.Sequential([keras.Input((2,)), cirq_layer("vqc_cirq")], name="inner")
    inputs = keras.Input((3,))
    h = keras.layers.Dense(2, activation="tanh")(inputs)
    h = inner(h)
    h = keras.layers.Dense(2, activation="tanh")(h)
    h = qiskit_layer("vqc_qiskit")(h)
    outputs = keras.layers.Dense(1)(h)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    return model


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 3)).astype("float32")
    y = np.sin(x.sum(axis=1, keepdims=True)).astype("float32")
    return x, y


def load_run(run_dir):
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def tensor_events(acc, tag):
    return {e.step: tf.make_ndarray(e.tensor_proto) for e in acc.Tensors(tag)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    log_dir = str(tmp_path_factory.mktemp("logs"))
    model = make_model()
    x, y = data()
    gradient_data = (x[:16], y[:16])
    callback = QuantumTensorBoard(log_dir, gradient_data=gradient_data)
    model.fit(
        x, y, batch_size=8, epochs=EPOCHS, verbose=0,
        callbacks=[keras.callbacks.TensorBoard(log_dir, histogram_freq=1), callback],
    )
    return model, callback, log_dir, gradient_data


def test_finds_quantum_layers_in_nested_models(trained):
    model = trained[0]
    assert [layer.name for layer in find_quantum_layers(model)] == ["vqc_cirq", "vqc_qiskit"]


def test_runs_next_to_keras_tensorboard(trained):
    _, callback, log_dir, _ = trained
    assert callback.run_dir == os.path.join(log_dir, "quantum")
    assert {"train", "quantum"} <= set(os.listdir(log_dir))
    keras_train = load_run(os.path.join(log_dir, "train"))
    assert sorted(tensor_events(keras_train, "epoch_loss")) == list(range(EPOCHS))


def test_circuit_text_summaries(trained):
    acc = load_run(trained[1].run_dir)
    cirq_text = tensor_events(acc, "vqc_cirq/circuit")[0].item().decode()
    assert cirq_text.count("```") == 2  # the diagram is a Markdown code block
    for part in ["Ry(x0)", "Ry(w0)", "Ry(w1)", "@", "`w0`, `w1`", "`x0`, `x1`", "2 qubits"]:
        assert part in cirq_text, part
    qiskit_text = tensor_events(acc, "vqc_qiskit/circuit")[0].item().decode()
    for part in ["Ry(a)", "Rx(theta)", "q_0", "`theta`"]:
        assert part in qiskit_text, part


def test_weight_histograms_every_epoch(trained):
    model, callback, _, _ = trained
    acc = load_run(callback.run_dir)
    for layer in find_quantum_layers(model):
        hists = tensor_events(acc, f"{layer.name}/quantum_weights")
        assert sorted(hists) == list(range(EPOCHS))
        last = hists[EPOCHS - 1]  # [buckets, (left, right, count)]
        assert last.ndim == 2 and last.shape[1] == 3
        assert last[:, 2].sum() == len(layer.weight_symbols)
        weights = layer.quantum_weights.numpy()
        assert last[:, 0].min() <= weights.min() + 1e-6 and weights.max() - 1e-6 <= last[:, 1].max()
        assert sorted(tensor_events(acc, f"{layer.name}/quantum_gradients")) == list(range(EPOCHS))


def test_gradient_scalars_match_an_independent_gradient(trained):
    model, callback, _, (xg, yg) = trained
    acc = load_run(callback.run_dir)
    for layer in find_quantum_layers(model):
        norms = tensor_events(acc, f"{layer.name}/grad_norm")
        variances = tensor_events(acc, f"{layer.name}/grad_variance")
        assert sorted(norms) == sorted(variances) == list(range(EPOCHS))
        assert all(np.isfinite(v) for v in list(norms.values()) + list(variances.values()))
        assert callback.history[f"{layer.name}/grad_norm"] == pytest.approx(
            [float(norms[e]) for e in range(EPOCHS)], rel=1e-6
        )

        # The weights have not moved since the last epoch's summaries.
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x=xg, y=yg, y_pred=model(xg, training=True))
        grad = tape.gradient(loss, layer.quantum_weights).numpy().astype(np.float64)
        assert np.linalg.norm(grad) > 0
        np.testing.assert_allclose(float(norms[EPOCHS - 1]), np.linalg.norm(grad), rtol=1e-4)
        np.testing.assert_allclose(float(variances[EPOCHS - 1]), np.var(grad), rtol=1e-3, atol=1e-10)


def test_gradient_pass_leaves_model_state_alone(tmp_path):
    """Batch-norm statistics, dropout seeds and weights are unchanged by the callback."""
    inputs = keras.Input((2,))
    h = keras.layers.BatchNormalization()(inputs)
    h = keras.layers.Dropout(0.5)(h)
    h = cirq_layer("vqc_bn")(h)
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_regularizer="l2")(h))
    model.compile("sgd", "mse")
    x, y = data(8)
    x = x[:, :2] * 3 + 1
    callback = QuantumTensorBoard(str(tmp_path), gradient_data=(x, y))
    before = [v.numpy().copy() for v in model.variables]
    run_epochs(callback, model, epochs=1)
    for old, v in zip(before, model.variables):
        np.testing.assert_array_equal(old, v.numpy(), err_msg=v.path)
    assert np.isfinite(callback.history["vqc_bn/grad_norm"][0])


def run_epochs(callback, model, epochs):
    """The callback's hooks as fit() calls them, without the cost of fit()."""
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(epochs):
        callback.on_epoch_begin(epoch)
        callback.on_epoch_end(epoch, {})
    callback.on_train_end()


def test_without_gradient_data_warns_once_and_still_logs_weights(tmp_path):
    callback = QuantumTensorBoard(str(tmp_path), histogram_freq=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_epochs(callback, make_model(), epochs=3)
    messages = [str(w.message) for w in caught if "gradient_data" in str(w.message)]
    assert len(messages) == 1
    acc = load_run(callback.run_dir)
    assert "vqc_cirq/grad_norm" not in acc.Tags()["tensors"]
    assert sorted(tensor_events(acc, "vqc_cirq/quantum_weights")) == [0, 2]  # histogram_freq=2
    assert callback.history == {}


def test_gradient_data_from_a_dataset(tmp_path):
    x, y = data(16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    callback = QuantumTensorBoard(str(tmp_path), gradient_data=dataset, histogram_freq=0, write_circuits=False)
    run_epochs(callback, make_model(), epochs=1)
    acc = load_run(callback.run_dir)
    tags = acc.Tags()["tensors"]
    assert "vqc_qiskit/grad_norm" in tags
    assert not any(t.endswith("/circuit") or t.endswith("/quantum_weights") for t in tags)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"histogram_freq": -1}, "histogram_freq"),
        ({"histogram_freq": 1.5}, "histogram_freq"),
        ({"gradient_data": np.zeros((4, 2))}, "gradient_data"),
        ({"gradient_data": (np.zeros((4, 2)),)}, "length 1"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantumTensorBoard(str(tmp_path), **kwargs)


def test_layer_without_weights_gets_its_circuit_but_no_weight_summaries(tmp_path):
    q = cirq.LineQubit(0)
    x = sympy.Symbol("x")
    head = QuantumLayer(cirq.Circuit(cirq.H(q), cirq.ry(x)(q)), cirq.Z(q), input_symbols=[x], name="head")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1), head])
    model.compile("adam", "mse")
    xs, ys = data(16)
    callback = QuantumTensorBoard(str(tmp_path), gradient_data=(xs, ys))
    run_epochs(callback, model, epochs=1)
    tags = load_run(callback.run_dir).Tags()["tensors"]
    assert "head/circuit" in tags
    assert not any(t.startswith("head/") and t != "head/circuit" for t in tags), tags
