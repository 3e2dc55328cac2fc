"""QuantumConv2D: values, shapes, gradients, training, saving and export."""


import cirq
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import central_fd, cirq_expectations, load_example, run_fresh_python
from qkeras_hybrid import ops
from qkeras_hybrid.datasets import load_tetris
from qkeras_hybrid.layers import QuantumConv2D
from qkeras_hybrid.layers.quantum_conv2d import filter_circuit


# ------------------------------------------------------- numpy reference


def _apply_1q(state, gate, qubit, n):
    state = np.moveaxis(state.reshape([2] * n), qubit, 0)
    state = np.tensordot(gate, state, axes=(1, 0))
    return np.moveaxis(state, 0, qubit).reshape(-1)


def _apply_cnot(state, control, target, n):
    state = state.reshape([2] * n).copy()
    index = [slice(None)] * n
    index[control] = 1
    sub = state[tuple(index)]
    axis = target if target < control else target - 1
    state[tuple(index)] = np.flip(sub, axis=axis)
    return state.reshape(-1)


def window_reference(pixels, weights):
    """<Z...Z> of one window: encode cos(p)|0> + sin(p)|1>, then the layers (numpy)."""
    n = len(pixels)
    state = np.zeros(2**n)
    state[0] = 1.0
    for q, p in enumerate(pixels):
        state = _apply_1q(state, np.array([[np.cos(p), -np.sin(p)], [np.sin(p), np.cos(p)]]), q, n)
    for layer in weights:
        for q, w in enumerate(layer):
            c, s = np.cos(w / 2), np.sin(w / 2)
            state = _apply_1q(state, np.array([[c, -s], [s, c]]), q, n)
        for q in range(n - 1):
            state = _apply_cnot(state, q, q + 1, n)
    bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
    parity = 1 - 2 * (bits.sum(axis=1) % 2)
    return float(np.sum(parity * np.abs(state) ** 2))


def _same_padding(length, kernel, stride):
    out = -(-length // stride)
    total = max((out - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


def conv_reference(x, weights, kernel_size, strides, padding):
    """The layer by loops over images, windows, channels and filters."""
    (m, n), (sh, sw) = kernel_size, strides
    if padding == "same":
        pads = [_same_padding(x.shape[1], m, sh), _same_padding(x.shape[2], n, sw)]
        x = np.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
    batch, height, width, channels = x.shape
    filters = weights.shape[0]
    out_h, out_w = (height - m) // sh + 1, (width - n) // sw + 1
    out = np.zeros((batch, out_h, out_w, channels * filters))
    for b, i, j, c, f in np.ndindex(batch, out_h, out_w, channels, filters):
        window = x[b, i * sh : i * sh + m, j * sw : j * sw + n, c].reshape(-1)
        out[b, i, j, c * filters + f] = window_reference(window, weights[f])
    return out


def test_numpy_reference_matches_cirq_on_the_layer_circuit():
    circuit, qubits, pixels, weights = filter_circuit((2, 2), depth=3)
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 2 * np.pi, size=(3, len(pixels) + len(weights)))
    zzzz = cirq.PauliString({q: cirq.Z for q in qubits})
    expected = cirq_expectations(circuit, [zzzz], pixels + weights, values)[:, 0]
    got = [window_reference(row[:4], row[4:].reshape(3, 4)) for row in values]
    np.testing.assert_allclose(got, expected, atol=1e-10)


# ----------------------------------------------------------------- values


@pytest.mark.parametrize(
    "kernel_size, strides, padding, shape, filters",
    [
        ((2, 2), (1, 1), "valid", (2, 3, 3, 1), 2),
        ((2, 2), (1, 1), "same", (1, 3, 3, 2), 3),
        ((2, 3), (2, 1), "same", (2, 4, 5, 2), 2),
        ((3, 1), (1, 2), "valid", (1, 4, 5, 1), 1),
    ],
)
def test_outputs_match_reference(kernel_size, strides, padding, shape, filters):
    layer = QuantumConv2D(filters, kernel_size, strides=strides, padding=padding, depth=2)
    x = np.random.default_rng(1).uniform(0, 1, size=shape).astype("float32")
    y = layer(x).numpy()
    weights = layer.quantum_weights.numpy().astype(np.float64)
    expected = conv_reference(x.astype(np.float64), weights, kernel_size, strides, padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=2e-5)


def test_depth_zero_is_the_closed_form_product_of_cosines():
    layer = QuantumConv2D(1, 2, depth=0, dtype="float64")
    x = np.random.default_rng(2).uniform(0, 1, size=(3, 3, 4, 2))
    y = layer(x).numpy()
    for i, j, c in np.ndindex(2, 3, 2):
        window = x[:, i : i + 2, j : j + 2, c].reshape(3, -1)
        np.testing.assert_allclose(y[:, i, j, c], np.prod(np.cos(2 * window), axis=1), atol=1e-12)
    # The paper's encoding: pixel 0 is |0>, pixel pi/2 is |1>, so <Z> flips sign per such pixel.
    single = QuantumConv2D(1, 2, depth=0, dtype="float64")
    np.testing.assert_allclose(single(np.full((1, 2, 2, 1), np.pi / 2)).numpy(), [[[[1.0]]]], atol=1e-12)
    np.testing.assert_allclose(
        single(np.array([0, 0, 0, np.pi / 2]).reshape(1, 2, 2, 1)).numpy(), [[[[-1.0]]]], atol=1e-12
    )
    np.testing.assert_allclose(single(np.full((1, 2, 2, 1), np.pi / 4)).numpy(), [[[[0.0]]]], atol=1e-12)


def test_channel_major_output_order():
    layer = QuantumConv2D(3, 2, depth=1)
    x = np.random.default_rng(3).uniform(0, 1, size=(2, 3, 3, 2)).astype("float32")
    y = layer(x).numpy()
    # Output channel c * filters + f is filter f on input channel c alone, same weights for every c.
    single = QuantumConv2D(3, 2, depth=1)
    single.build((None, 3, 3, 1))
    single.set_weights(layer.get_weights())
    for c in range(2):
        np.testing.assert_allclose(y[..., 3 * c : 3 * c + 3], single(x[..., c : c + 1]).numpy(), atol=1e-6)
    assert not np.allclose(y[..., :3], y[..., 3:], atol=1e-3)


def test_one_simulator_call_per_batch():
    layer = QuantumConv2D(4, 2, depth=2)
    fn = tf.function(lambda x: layer(x)).get_concrete_function(tf.TensorSpec([None, 5, 5, 3], tf.float32))
    kinds = [op.type for op in fn.graph.get_operations()]
    assert kinds.count(ops.EXPECTATION_OP) == 1
    with tf.GradientTape() as tape:
        x = tf.random.uniform((7, 5, 5, 3))
        tape.watch(x)
        y = layer(x)
    assert y.shape == (7, 4, 4, 12)
    assert tape.gradient(y, x).shape == (7, 5, 5, 3)


@pytest.mark.parametrize(
    "kernel_size, strides, padding, shape",
    [
        (2, 1, "valid", (3, 3)),
        (2, 1, "same", (3, 3)),
        (2, 2, "same", (5, 5)),
        (3, 2, "valid", (7, 6)),
        ((2, 3), (3, 2), "same", (8, 7)),
        ((1, 4), (1, 3), "valid", (4, 9)),
        (3, 4, "same", (2, 2)),
    ],
)
def test_output_shapes_match_keras_conv2d(kernel_size, strides, padding, shape):
    x = np.zeros((2, *shape, 2), "float32")
    layer = QuantumConv2D(3, kernel_size, strides=strides, padding=padding, depth=1)
    conv = keras.layers.Conv2D(6, kernel_size, strides=strides, padding=padding)
    assert tuple(layer(x).shape) == tuple(conv(x).shape) == layer.compute_output_shape(x.shape)
    assert layer.compute_output_shape((None, None, None, 2)) == (None, None, None, 6)


# -------------------------------------------------------------- gradients


@pytest.mark.parametrize("padding, strides", [("valid", 1), ("same", (2, 1))])
def test_gradients_wrt_pixels_and_weights_match_finite_differences(padding, strides):
    layer = QuantumConv2D(2, 2, strides=strides, padding=padding, depth=2, dtype="float64")
    rng = np.random.default_rng(4)
    x0 = rng.uniform(0, 1, size=(2, 3, 3, 2))
    layer.build(x0.shape)
    w0 = layer.quantum_weights.numpy().copy()
    upstream = tf.constant(rng.normal(size=layer.compute_output_shape(x0.shape)))

    x = tf.constant(x0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * upstream)
    gx, gw = tape.gradient(loss, [x, layer.quantum_weights.value])

    def f_x(xv):
        return float(tf.reduce_sum(layer(tf.constant(xv)) * upstream))

    def f_w(wv):
        layer.quantum_weights.assign(wv)
        try:
            return f_x(x0)
        finally:
            layer.quantum_weights.assign(w0)

    np.testing.assert_allclose(gx.numpy(), central_fd(f_x, x0, eps=1e-6), atol=1e-7)
    np.testing.assert_allclose(gw.numpy(), central_fd(f_w, w0, eps=1e-6), atol=1e-7)
    assert np.abs(gw.numpy()).max() > 1e-3  # not trivially zero


# --------------------------------------------------------------- training


def qccnn(num_labels, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3, 3, 1)),
            QuantumConv2D(5, 2, depth=4),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(num_labels, activation="softmax"),
        ]
    )


def test_fits_the_two_label_tetris_task():
    (x_train, y_train), (x_test, y_test) = load_tetris(("S", "T"), seed=0, one_hot=True)
    model = qccnn(2)
    model.compile(keras.optimizers.Adam(0.01), "mse", metrics=["categorical_accuracy"])
    before = model.evaluate(x_test, y_test, verbose=0)
    weights_before = model.layers[0].quantum_weights.numpy().copy()
    model.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert loss < 0.3 * before[0]
    assert accuracy >= 0.95
    assert not np.allclose(model.layers[0].quantum_weights.numpy(), weights_before)


# ------------------------------------------------------- saving and export


def test_config_round_trip():
    layer = QuantumConv2D(
        3, (2, 3), strides=(1, 2), padding="same", depth=2, initializer=keras.initializers.Constant(0.3),
        regularizer="l2", name="qconv",
    )
    x = np.random.default_rng(5).uniform(size=(2, 4, 5, 2)).astype("float32")
    y = layer(x).numpy()
    config = layer.get_config()
    clone = QuantumConv2D.from_config(config)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), y)
    assert clone.get_config() == config
    assert config["kernel_size"] == [2, 3] and config["strides"] == [1, 2] and config["padding"] == "same"


def test_keras_file_and_savedmodel_reload_in_a_fresh_process(tmp_path):
    (x_train, y_train), (x_test, _) = load_tetris(seed=1, one_hot=True)
    keras.utils.set_random_seed(2)
    inputs = keras.Input((3, 3, 1))
    h = QuantumConv2D(2, 2, depth=2)(inputs)
    h = keras.layers.ZeroPadding2D(1)(h)
    h = QuantumConv2D(2, 2, strides=2, depth=1, padding="same")(h)
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    model.fit(x_train[:64], y_train[:64], epochs=1, verbose=0)
    x = x_test[:16]
    expected = model.predict(x, verbose=0)

    model.save(tmp_path / "qccnn.keras")
    model.export(str(tmp_path / "exported"), verbose=False)
    np.save(tmp_path / "x.npy", x)
    # In this process: the .keras file gives the same outputs and weights.
    loaded = keras.models.load_model(tmp_path / "qccnn.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    run_fresh_python(f"""
        import numpy as np, keras, tensorflow as tf
        import qkeras_hybrid
        x = np.load({str(tmp_path / 'x.npy')!r})
        m = keras.models.load_model({str(tmp_path / 'qccnn.keras')!r})
        assert sum(isinstance(l, qkeras_hybrid.layers.QuantumConv2D) for l in m.layers) == 2
        np.save({str(tmp_path / 'y_keras.npy')!r}, m.predict(x, verbose=0))
        served = tf.saved_model.load({str(tmp_path / 'exported')!r})
        np.save({str(tmp_path / 'y_served.npy')!r}, served.serve(x).numpy())
    """)
    np.testing.assert_allclose(np.load(tmp_path / "y_keras.npy"), expected, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "y_served.npy"), expected, atol=1e-6)


# ----------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 0}, "filters must be a positive integer, got 0"),
        ({"filters": 2.0}, "filters must be a positive integer"),
        ({"filters": 1, "kernel_size": (2, 0)}, r"kernel_size must be .* got \(2, 0\)"),
        ({"filters": 1, "kernel_size": (2, 2, 2)}, "kernel_size must be a positive integer or a pair"),
        ({"filters": 1, "kernel_size": "2"}, "kernel_size must be"),
        ({"filters": 1, "kernel_size": (5, 5)}, r"25 qubits per window; at most 20"),
        ({"filters": 1, "strides": -1}, "strides must be"),
        ({"filters": 1, "padding": "causal"}, 'padding must be "valid" or "same", got \'causal\''),
        ({"filters": 1, "depth": -1}, "depth must be a non-negative integer, got -1"),
        ({"filters": 1, "depth": 1.5}, "depth must be a non-negative integer"),
        ({"filters": 1, "data_format": "channels_first"}, "only data_format=\"channels_last\""),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QuantumConv2D(**kwargs)


def test_numpy_integers_are_accepted():
    layer = QuantumConv2D(np.int64(2), kernel_size=(np.int32(2), 2), strides=np.int64(1), depth=np.int64(1))
    assert layer.kernel_size == (2, 2) and layer.get_config()["filters"] == 2 and type(layer.depth) is int
    assert layer(np.zeros((1, 3, 3, 1), "float32")).shape == (1, 2, 2, 2)


def test_bad_input_shapes_are_named():
    with pytest.raises(ValueError, match="expected ndim=4|expects inputs"):
        QuantumConv2D(1)(np.zeros((2, 3, 3), "float32"))
    with pytest.raises(ValueError, match=r'height 1 is smaller than the kernel \(2\) with padding="valid"'):
        QuantumConv2D(1)(np.zeros((2, 1, 3, 1), "float32"))
    layer = QuantumConv2D(1)
    layer(np.zeros((1, 3, 3, 2), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 .* value 2"):
        layer(np.zeros((1, 3, 3, 3), "float32"))


# ------------------------------------------------------------ the example


def test_qccnn_tetris_example_quick_run(tmp_path):
    example = load_example("qccnn_tetris")
    rows = example.main(["--seeds", "1", "--epochs", "6", "--labels", "2", "--out", str(tmp_path)])
    assert {(r["labels"], r["model"]) for r in rows} == {(2, m) for m in example.MODELS}
    for name in ("fig3_2_labels.png", "results.csv", "results.md"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "fig3_2_labels.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| 2 | QCCNN-1 |" in (tmp_path / "results.md").read_text()
    qccnn_2 = next(r for r in rows if r["labels"] == 2 and r["model"] == "QCCNN-1")
    assert qccnn_2["test_accuracy_mean"] > 0.6  # chance is 0.5
    assert all(0.0 <= r["test_loss_mean"] < 1.0 for r in rows)


def test_docstring_example_runs():
    import doctest

    from qkeras_hybrid.layers import quantum_conv2d

    result = doctest.testmod(quantum_conv2d, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
