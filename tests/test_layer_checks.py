"""Bad inputs to the quantum layers: clear errors in the layer's terms, never a silent wrong answer.

Issue 12, items 2 (input width only known at run time) and 8 (errors in the
layer's terms: width, non-finite values, ranks, dtypes, register size,
unsupported gates).
"""

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid
from qkeras_hybrid.backends import _validation
from qkeras_hybrid.circuits import UnsupportedGateError
from qkeras_hybrid.layers import QuantumConv2D, QuantumDataLayer, QuantumLayer

Q = cirq.LineQubit.range(2)
X0, X1, W0, W1 = sympy.symbols("x0 x1 w0 w1")
WIDTH_2 = r"\(batch, 2\) \(input_symbols \[x0, x1\]\)"


def make_layer(**kwargs):
    circuit = cirq.Circuit(cirq.ry(X0)(Q[0]), cirq.ry(X1)(Q[1]), cirq.ry(W0)(Q[0]), cirq.rx(W1)(Q[1]),
                           cirq.CNOT(*Q))
    layer = QuantumLayer(circuit, [cirq.Z(Q[0]), cirq.Z(Q[1])], input_symbols=[X0, X1], **kwargs)
    layer.build((None, 2))
    layer.quantum_weights.assign([0.3, -0.7])
    return layer


# --------------------------------------------------- item 2: width known only at run time


@pytest.mark.parametrize("width", [1, 3, 4])
def test_run_time_width_is_checked(width):
    """Extra columns must not take the place of the weights; too few must not reach the op."""
    layer = make_layer()
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{layer.name} expects inputs of shape {WIDTH_2}, got inputs of shape \[3 {width}\]"):
        fn(tf.zeros((3, width)))
    x = tf.constant([[0.1, 0.2], [1.0, -2.0], [3.0, 0.5]])
    np.testing.assert_allclose(fn(x), layer(x), atol=1e-6)


def test_functional_model_with_unknown_width():
    layer = make_layer()
    inputs = keras.Input((None,))
    model = keras.Model(inputs, layer(inputs))
    with pytest.raises(ValueError, match=rf"expects inputs of width 2: shape {WIDTH_2}; got inputs of width 4"):
        model(np.zeros((3, 4), "float32"))  # eager: the width is known, a ValueError
    serve = tf.function(model, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got inputs of shape \[3 4\]"):
        serve(tf.zeros((3, 4)))
    x = tf.constant([[0.4, -1.0]])
    np.testing.assert_allclose(serve(x), layer(x), atol=1e-6)


def test_unknown_rank_is_checked_at_run_time():
    layer = make_layer()
    fn = tf.function(layer, input_signature=[tf.TensorSpec(None, tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"got inputs of shape \[2 2 2\]"):
        fn(tf.zeros((2, 2, 2)))
    np.testing.assert_allclose(fn(tf.ones((2, 2))), layer(tf.ones((2, 2))), atol=1e-6)


def test_quantum_conv2d_channels_checked_at_run_time():
    layer = QuantumConv2D(filters=1, kernel_size=2, depth=1)
    x = tf.random.uniform((1, 3, 3, 2), seed=1)
    expected = layer(x)
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"{layer.name} expects inputs \(batch, height, width, 2\), got inputs of shape "
                             r"\[1 3 3 3\]"):
        fn(tf.zeros((1, 3, 3, 3)))
    np.testing.assert_allclose(fn(x), expected, atol=1e-6)


def test_quantum_data_layer_values_width_checked_at_run_time():
    tfq = pytest.importorskip("tensorflow_quantum")
    circuit = cirq.Circuit(cirq.ry(X0)(Q[0]), cirq.rx(W0)(Q[0]), cirq.CNOT(*Q))
    layer = QuantumDataLayer(circuit, cirq.Z(Q[1]), input_symbols=[X0])
    circuits = tfq.convert_to_tensor([cirq.Circuit(cirq.X(Q[0])), cirq.Circuit(cirq.H(Q[1]))])
    expected = layer([circuits, tf.constant([[0.5], [1.5]])])
    fn = tf.function(layer, input_signature=[[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None])]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expects inputs of shape \(batch, 1\).*\[2 3\]"):
        fn([circuits, tf.zeros((2, 3))])
    np.testing.assert_allclose(fn([circuits, tf.constant([[0.5], [1.5]])]), expected, atol=1e-6)


# --------------------------------------------------- item 8: errors in the layer's terms


def test_wrong_width_names_the_input_width():
    layer = make_layer()
    with pytest.raises(ValueError, match=rf"{layer.name} expects inputs of width 2: shape {WIDTH_2}; got inputs of "
                                         r"width 3 \(shape \(4, 3\)\)") as info:
        layer(np.zeros((4, 3), "float32"))
    assert "width 5" not in str(info.value)  # not inputs + weights


@pytest.mark.parametrize("shape", [(), (2,), (2, 2, 2)], ids=["rank0", "rank1", "rank3"])
def test_wrong_rank_is_a_value_error(shape):
    layer = make_layer()
    with pytest.raises(ValueError, match=rf"{layer.name} expects inputs of shape {WIDTH_2}, got inputs of shape"):
        layer(tf.zeros(shape))


def test_wrong_rank_at_build_is_a_value_error():
    layer = QuantumLayer(cirq.Circuit(cirq.rx(X0)(Q[0])), cirq.Z(Q[0]), input_symbols=[X0])
    with pytest.raises(ValueError, match=r"expects inputs of shape \(batch, 1\) .* got inputs of shape \(\)"):
        layer(tf.constant(1.0))


def test_layer_without_inputs_needs_a_batch_dimension():
    layer = QuantumLayer(cirq.Circuit(cirq.rx(W0)(Q[0])), cirq.Z(Q[0]))
    assert layer(tf.zeros((3, 5))).shape == (3, 1)
    with pytest.raises(ValueError, match="needs inputs with a batch dimension; got a scalar"):
        layer(tf.constant(1.0))


@pytest.mark.parametrize(
    "value,dtype",
    [([[True, False]], "bool"), ([[1 + 1j, 0j]], "complex64"), ([["a", "b"]], "string")],
    ids=["bool", "complex", "string"],
)
def test_non_real_inputs_are_a_type_error(value, dtype):
    layer = make_layer()
    match = f"takes real-valued inputs \\(floats or integers\\), got dtype {dtype}"
    if dtype.startswith("complex"):
        match += r" \(its imaginary parts would be dropped\)"
    with pytest.raises(TypeError, match=match):
        layer(tf.constant(value, dtype=dtype))
    with pytest.raises(TypeError, match="takes real-valued inputs"):
        QuantumConv2D(1, 2, depth=1)(tf.zeros((1, 2, 2, 1), dtype))


def test_integer_inputs_are_accepted():
    layer = make_layer()
    np.testing.assert_allclose(layer(tf.constant([[1, 0]])), layer(tf.constant([[1.0, 0.0]])), atol=1e-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_row_column_and_symbol(bad):
    layer = make_layer()
    x = np.zeros((3, 2), "float32")
    x[2, 1] = bad
    for result in ("eager", "graph"):
        fn = layer if result == "eager" else tf.function(layer)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{layer.name}: inputs\[2, 1\] \(input symbol x1\) is not finite \({bad}\)"):
            fn(tf.constant(x))


def test_non_finite_weight_names_the_weight():
    layer = make_layer()
    layer.quantum_weights.assign([0.3, np.nan])
    for fn in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{layer.name}: weight w1 \(quantum_weights\[1\]\) is not finite \(nan\)"):
            fn(tf.zeros((2, 2)))


def test_non_finite_values_fail_in_fit_not_silently():
    layer = make_layer()
    model = keras.Sequential([keras.Input((2,)), layer])
    model.compile("adam", "mse")
    x = np.zeros((8, 2), "float32")
    x[5, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs\[5, 0\] \(input symbol x0\)"):
        model.fit(x, np.zeros((8, 2)), batch_size=8, epochs=1, verbose=0, shuffle=False)


def test_quantum_conv2d_non_finite_names_pixel_or_weight():
    layer = QuantumConv2D(filters=2, kernel_size=2, depth=1)
    x = np.zeros((2, 3, 3, 1), "float32")
    x[1, 2, 0, 0] = np.inf
    for fn in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{layer.name}: inputs\[1, 2, 0, 0\] is not finite"):
            fn(tf.constant(x))
    weights = layer.quantum_weights.numpy()
    weights[1, 0, 3] = np.nan
    layer.quantum_weights.assign(weights)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"weight quantum_weights\[1, 0, 3\] \(filter 1, layer 0, qubit 3\) is not finite"):
        layer(tf.zeros((1, 3, 3, 1)))


def test_checks_keep_gradients():
    layer = make_layer(dtype="float64")
    x = tf.constant([[0.3, -1.1], [2.0, 0.4]], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x) * [[1.0, -2.0]])
    gx, gw = tape.gradient(y, [x, layer.quantum_weights.value])
    cc = qkeras_hybrid.compile_circuit(layer.circuit, layer.observables, symbols=["x0", "x1", "w0", "w1"])
    values = tf.concat([x, tf.tile(layer.quantum_weights.value[None], [2, 1])], axis=1)
    with tf.GradientTape() as tape:
        tape.watch(values)
        ref = tf.reduce_sum(cc.expectation(values, tf.float64) * [[1.0, -2.0]])
    g = tape.gradient(ref, values).numpy()
    np.testing.assert_allclose(gx, g[:, :2], atol=1e-10)
    np.testing.assert_allclose(gw, g[:, 2:].sum(axis=0), atol=1e-10)


def big_circuit(n):
    qubits = cirq.LineQubit.range(n)
    return cirq.Circuit(cirq.rx(X0)(q) for q in qubits), cirq.Z(qubits[0])


def test_too_many_qubits_refused_at_construction():
    circuit, observable = big_circuit(35)
    with pytest.raises(ValueError, match=r"QuantumLayer: a circuit on 35 qubits needs about 512 GiB of state vectors "
                                         r"on backend='native', more than this machine's memory"):
        QuantumLayer(circuit, observable, input_symbols=[X0])


@pytest.mark.parametrize("backend,limit", [("native", 25), ("tfq", 24)])
def test_qubit_limit_follows_memory(monkeypatch, backend, limit):
    """Same rule for both backends: the state vectors a gradient needs must fit in 80% of memory."""
    if backend == "tfq":
        pytest.importorskip("tensorflow_quantum")
    assert _validation.max_qubits(backend, 2**30) == limit
    monkeypatch.setattr(_validation, "physical_memory_bytes", lambda: 2**30)
    circuit, observable = big_circuit(limit + 1)
    with pytest.raises(ValueError, match=rf"{limit + 1} qubits .* at most {limit} qubits fit"):
        QuantumLayer(circuit, observable, input_symbols=[X0], backend=backend)
    small, observable = big_circuit(3)
    assert QuantumLayer(small, observable, input_symbols=[X0], backend=backend).num_qubits == 3


class _NoUnitaryGate(cirq.Gate):
    def _num_qubits_(self):
        return 1


def test_gate_without_unitary_or_decomposition_is_named():
    circuit = cirq.Circuit(cirq.H(Q[0]), _NoUnitaryGate().on(Q[0]))
    with pytest.raises(UnsupportedGateError,
                       match=r"Gate _NoUnitaryGate on 1 qubit \(q\(0\)\) has no unitary \(_unitary_\) and no "
                             r"decomposition \(_decompose_\)") as info:
        QuantumLayer(circuit, cirq.Z(Q[0]))
    assert "not unitary" not in str(info.value) and "object at 0x" not in str(info.value)


def test_large_matrix_gate_error_is_short():
    qubits = cirq.LineQubit.range(4)
    gate = cirq.MatrixGate(cirq.testing.random_unitary(16, random_state=1))
    with pytest.raises(UnsupportedGateError, match=r"cirq.MatrixGate on 4 qubits \(q\(0\), q\(1\), q\(2\), q\(3\)\)"
                                                   r" is not supported by the native simulator: it runs constant "
                                                   r"gates on at most 3 qubits") as info:
        QuantumLayer(cirq.Circuit(gate.on(*qubits)), cirq.Z(qubits[0]))
    assert len(str(info.value)) < 300


def test_tfq_unsupported_gate_error_names_tfq():
    pytest.importorskip("tensorflow_quantum")
    with pytest.raises(ValueError, match=r"backend='tfq': TensorFlow Quantum cannot run the gate _NoUnitaryGate on 1 "
                                         r"qubit \(q\(0\)\).*no unitary \(_unitary_\) and no decomposition") as info:
        QuantumLayer(cirq.Circuit(_NoUnitaryGate().on(Q[0])), cirq.Z(Q[0]), backend="tfq")
    assert "native simulator" not in str(info.value)
