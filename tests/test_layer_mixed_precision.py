"""Quantum layers under Keras mixed precision (issue 12, item 6).

Under "mixed_float16" / "mixed_bfloat16" the layers simulate in float32
(weights stay float32, inputs are not rounded to 16 bits) and return the
policy's compute dtype; values and gradients match a float32 layer with the
same weights up to the 16-bit rounding of the outputs.
"""

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

from qkeras_hybrid.layers import QuantumConv2D, QuantumDataLayer, QuantumLayer

Q = cirq.LineQubit.range(2)
X0, X1, W0, W1, W2 = sympy.symbols("x0 x1 w0 w1 w2")
POLICIES = ["mixed_float16", "mixed_bfloat16"]
# Relative rounding of one 16-bit output: 2**-11 (float16), 2**-8 (bfloat16).
TOLERANCE = {"mixed_float16": 2e-3, "mixed_bfloat16": 1.5e-2}


@pytest.fixture
def policy(request):
    """Sets the global dtype policy for one test and always restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def in_float32(make):
    """make(), under the float32 policy."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return make()
    finally:
        keras.config.set_dtype_policy(previous)


def circuit():
    return cirq.Circuit(cirq.ry(X0)(Q[0]), cirq.ry(X1)(Q[1]), cirq.ry(W0)(Q[0]), cirq.rx(W1 + X0)(Q[1]),
                        cirq.CNOT(*Q), cirq.rz(W2)(Q[1]), cirq.H(Q[1]))


def quantum_layer(backend="native"):
    return QuantumLayer(circuit(), [cirq.Z(Q[0]), cirq.X(Q[0]) * cirq.Y(Q[1])], input_symbols=[X0, X1],
                        backend=backend)


def quantum_data_layer():
    a = sympy.Symbol("a")
    return QuantumDataLayer(cirq.Circuit(cirq.ry(a)(Q[1]), cirq.CNOT(*Q)), [cirq.Z(Q[0]), cirq.Z(Q[1])])


def angles(rng):
    return tf.constant(rng.uniform(-2, 2, (5, 2)), tf.float32)


CASES = {
    "quantum_layer": (quantum_layer, angles),
    "quantum_layer_tfq": (lambda: quantum_layer("tfq"), angles),
    "quantum_conv2d": (lambda: QuantumConv2D(filters=2, kernel_size=2, depth=2),
                       lambda rng: tf.constant(rng.uniform(0, 1, (2, 3, 3, 1)), tf.float32)),
}


def values_and_gradients(layer, x):
    """Outputs (as float32), and the gradients of a weighted sum of them w.r.t. inputs and weights."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        upstream = tf.cast(tf.reshape(tf.range(tf.size(y)) % 3 - 1, tf.shape(y)), tf.float32)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    gx, gw = tape.gradient(loss, [x, layer.quantum_weights])
    return y, gx, gw


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
@pytest.mark.parametrize("case", list(CASES))
def test_values_and_gradients_match_float32(policy, case):
    if case.endswith("tfq"):
        pytest.importorskip("tensorflow_quantum")
    make, data = CASES[case]
    x = data(np.random.default_rng(7))
    layer = make()
    reference = in_float32(make)
    assert layer.dtype_policy.name == policy and reference.dtype_policy.name == "float32"
    layer.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())
    assert layer.quantum_weights.dtype == "float32"

    y, gx, gw = values_and_gradients(layer, x)
    y_ref, gx_ref, gw_ref = values_and_gradients(reference, x)
    assert y.dtype == layer.compute_dtype == policy.split("_")[1]
    assert gx.dtype == tf.float32 and gw.dtype == tf.float32
    tol = TOLERANCE[policy]
    np.testing.assert_allclose(tf.cast(y, tf.float32), y_ref, atol=tol)
    assert np.abs(gw_ref).max() > 0.1 and np.abs(gx_ref).max() > 0.1
    scale = max(1.0, float(np.abs(gw_ref).max()))
    np.testing.assert_allclose(gw, gw_ref, atol=3 * tol * scale)
    np.testing.assert_allclose(gx, gx_ref, atol=3 * tol)


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_quantum_data_layer(policy):
    pytest.importorskip("tensorflow_quantum")
    data = [cirq.Circuit(cirq.H(Q[0])), cirq.Circuit(cirq.X(Q[1]))]
    layer = quantum_data_layer()
    reference = in_float32(quantum_data_layer)
    y = layer(data)
    reference(data)
    reference.set_weights(layer.get_weights())
    assert y.dtype == policy.split("_")[1]
    np.testing.assert_allclose(tf.cast(y, tf.float32), reference(data), atol=TOLERANCE[policy])


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_fit_under_mixed_precision(policy, tmp_path):
    """A whole model under the policy trains (loss scaling included for float16), saves and reloads."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (64, 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(0.7))(inputs)
    quantum = quantum_layer()(hidden)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(quantum)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy")
    qlayer = model.layers[2]
    assert quantum.dtype == policy.split("_")[1]
    before = qlayer.quantum_weights.numpy().copy()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert qlayer.quantum_weights.dtype == "float32"
    assert np.abs(qlayer.quantum_weights.numpy() - before).max() > 1e-3  # gradients reached the weights
    path = str(tmp_path / "mixed.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert restored.layers[2].dtype_policy.name == policy
    np.testing.assert_allclose(restored.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0), atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_inputs_are_not_rounded_to_16_bits(policy):
    """Float32 inputs reach the simulator as float32: an angle change below float16's resolution shows."""
    x = sympy.Symbol("x")
    layer = QuantumLayer(cirq.Circuit(cirq.rx(x)(Q[0])), cirq.Y(Q[0]), input_symbols=[x])
    # <Y> = -sin(x) near x = 1000: float16 spaces numbers there by 0.5, float32 by 6e-5.
    a, b = layer(tf.constant([[1000.0], [1000.25]]))
    assert abs(float(a[0]) - float(b[0])) > 0.1
