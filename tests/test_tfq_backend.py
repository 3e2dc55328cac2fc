"""QuantumLayer(backend="tfq"): TFQ's ops and differentiators inside our Keras 3 layer.

References: the native backend (itself tested against Cirq), Cirq's simulator,
central finite differences in float64, and TFQ's own differentiators.
"""


import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq

from conftest import central_fd, cirq_expectations, random_cirq_circuit, random_pauli_sum
from conftest import run_fresh_python
from qkeras_hybrid.backends import tfq as tfq_backend
from qkeras_hybrid.layers import QuantumLayer
from test_quantum_layer import QUBITS, X0, X1, two_qubit_circuit

OBSERVABLES = [cirq.Z(QUBITS[0]), cirq.Z(QUBITS[1]), cirq.X(QUBITS[0]) * cirq.Y(QUBITS[1])]


def layer_pair(circuit, observables, input_symbols, **tfq_kwargs):
    """A native and a tfq layer of the same circuit with the same weights."""
    native = QuantumLayer(circuit, observables, input_symbols=input_symbols)
    other = QuantumLayer(circuit, observables, input_symbols=input_symbols, backend="tfq", **tfq_kwargs)
    width = len(input_symbols)
    native.build((None, width))
    other.build((None, width))
    other.set_weights(native.get_weights())
    return native, other


def gradients(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * upstream)
    gx, gw = tape.gradient(loss, [x, layer.quantum_weights.value])
    return gx.numpy(), gw.numpy()


@pytest.mark.parametrize("seed", range(4))
def test_random_circuits_match_native_within_1e5(seed):
    # The whole gate list, with non-linear expressions (sin(a), a*b): TFQ gets
    # them as fresh symbols computed in TF, and unsupported gates decomposed.
    rng = np.random.default_rng(seed)
    symbols = list(sympy.symbols("a b c"))
    _, circuit, qubits = random_cirq_circuit(rng, 3, 10, symbols)
    observables = [random_pauli_sum(rng, qubits) for _ in range(2)]
    native, other = layer_pair(circuit, observables, symbols[:2])
    x = rng.uniform(-2, 2, size=(5, 2)).astype("float32")
    np.testing.assert_allclose(other(x).numpy(), native(x).numpy(), atol=1e-5)
    w = native.quantum_weights.numpy()
    ref = cirq_expectations(circuit, observables, symbols, np.concatenate([x, np.tile(w, (5, 1))], axis=1))
    np.testing.assert_allclose(other(x).numpy(), ref, atol=1e-5)


@pytest.mark.parametrize(
    "make, atol",
    [
        (lambda: None, 1e-4),  # Adjoint, TFQ's float32 adjoint
        (lambda: tfq.differentiators.ParameterShift(), 1e-4),
        (lambda: tfq.differentiators.CentralDifference(), 1e-3),
        (lambda: tfq.differentiators.ForwardDifference(error_order=2, grid_spacing=1e-3), 2e-3),
    ],
    ids=["Adjoint", "ParameterShift", "CentralDifference", "ForwardDifference"],
)
def test_gradients_match_finite_differences(make, atol):
    native, other = layer_pair(two_qubit_circuit(), OBSERVABLES, [X0, X1], differentiator=make())
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, size=(3, 2)).astype("float32")
    upstream = rng.normal(size=(3, 3)).astype("float32")
    gx, gw = gradients(other, x, upstream)
    # Float64 central differences of the native layer (tested against Cirq).
    cc, w = native.compiled, native.quantum_weights.numpy().astype("float64")

    def loss(xv, wv):
        values = np.concatenate([xv, np.tile(wv, (xv.shape[0], 1))], axis=1)
        return float(tf.reduce_sum(cc.expectation(values, tf.float64) * upstream.astype("float64")))

    np.testing.assert_allclose(gx, central_fd(lambda v: loss(v, w), x.astype("float64")), atol=atol)
    np.testing.assert_allclose(gw, central_fd(lambda v: loss(x.astype("float64"), v), w), atol=atol)


def test_gradients_come_from_the_given_differentiator():
    # A deliberately coarse forward difference is visibly off the exact
    # gradient, and equals TFQ's own differentiable op with that differentiator.
    coarse = tfq.differentiators.ForwardDifference(error_order=1, grid_spacing=0.5)
    native, other = layer_pair(two_qubit_circuit(), OBSERVABLES, [X0, X1], differentiator=coarse)
    x = np.array([[0.3, -0.8], [1.1, 0.4]], "float32")
    upstream = np.ones((2, 3), "float32")
    exact_x, _ = gradients(native, x, upstream)
    coarse_x, _ = gradients(other, x, upstream)
    assert np.abs(coarse_x - exact_x).max() > 0.05

    op = tfq.differentiators.ForwardDifference(error_order=1, grid_spacing=0.5).generate_differentiable_op(
        analytic_op=tfq.get_expectation_op())
    ex = other.executor
    values = tf.constant(np.concatenate([x, np.tile(other.quantum_weights.numpy(), (2, 1))], axis=1))
    with tf.GradientTape() as tape:
        tape.watch(values)
        angles = ex.angle_map(values)
        out = op(tf.tile(ex._program, [2]), ex._symbol_names, angles, tf.tile(ex._pauli_sums, [2, 1]))
        total = tf.reduce_sum(out)
    np.testing.assert_allclose(coarse_x, tape.gradient(total, values).numpy()[:, :2], atol=1e-6)


def test_sampled_expectations_within_shot_noise():
    shots = 20000
    native, other = layer_pair(
        two_qubit_circuit(), OBSERVABLES, [X0, X1],
        differentiator=tfq.differentiators.ParameterShift(), repetitions=shots,
    )
    x = np.random.default_rng(3).uniform(-2, 2, size=(4, 2)).astype("float32")
    exact = native(x).numpy()
    sampled = other(x).numpy()
    # TFQ's sampled op takes no seed. Each <P> from `shots` +-1 samples has
    # standard deviation sqrt(1 - <P>^2 / shots) <= 0.0071: allow 5 sigma.
    assert np.abs(sampled - exact).max() < 5 / np.sqrt(shots)
    assert np.any(sampled != exact)  # really sampled
    # Parameter-shift gradients from samples, same tolerance scaled by the shifts.
    upstream = np.ones((4, 3), "float32")
    _, gw_exact = gradients(native, x, upstream)
    _, gw_sampled = gradients(other, x, upstream)
    assert np.abs(gw_sampled - gw_exact).max() < 4 * 3 * 2 * 5 / np.sqrt(shots)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(backend="tfq", repetitions=100), ValueError, "Adjoint differentiator needs exact"),
        (dict(backend="tfq", repetitions=0, differentiator=tfq.differentiators.ParameterShift()), ValueError,
         "positive int"),
        (dict(backend="tfq", differentiator="adjoint"), TypeError, "tfq.differentiators.Differentiator"),
        (dict(differentiator=tfq.differentiators.Adjoint()), ValueError, "differentiator must be None"),
        (dict(repetitions=10), ValueError, "repetitions must be None"),
    ],
)
def test_bad_backend_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], **kwargs)


def test_qiskit_circuit_and_unrunnable_gates_are_refused():
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(1)
    qc.h(0)
    from qiskit.quantum_info import SparsePauliOp

    with pytest.raises(TypeError, match="backend='tfq' runs Cirq circuits"):
        QuantumLayer(qc, SparsePauliOp("Z"), backend="tfq")

    class Opaque(cirq.Gate):  # a unitary gate Cirq cannot decompose
        def _num_qubits_(self):
            return 1

        def _unitary_(self):
            return np.array([[0, 1], [1, 0]])

    q = cirq.NamedQubit("a")
    with pytest.raises(ValueError, match="LineQubit and cirq.GridQubit"):
        tfq_backend.tfq_circuit(cirq.Circuit(cirq.X(q)), [q])
    q = cirq.LineQubit(0)
    with pytest.raises(ValueError, match="TensorFlow Quantum cannot run the gate Opaque on 1 qubit"):
        tfq_backend.tfq_circuit(cirq.Circuit(Opaque().on(q)), [q])


def test_float64_layer_and_idle_register_qubits():
    # TFQ runs float32 inside; a float64 layer gets float64 outputs. An
    # observable on a register qubit the circuit never touches still works.
    extra = cirq.LineQubit(5)
    circuit = two_qubit_circuit()
    observables = [cirq.Z(extra), cirq.Z(QUBITS[0]) * cirq.X(extra)]
    qubits = QUBITS + [extra]
    native = QuantumLayer(circuit, observables, input_symbols=[X0, X1], qubits=qubits, dtype="float64")
    other = QuantumLayer(circuit, observables, input_symbols=[X0, X1], qubits=qubits, backend="tfq",
                         dtype="float64")
    x = np.array([[0.1, 0.2]])
    native(x), other(x)
    other.set_weights(native.get_weights())
    out = other(x)
    assert out.dtype == tf.float64
    np.testing.assert_allclose(out.numpy(), native(x).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "differentiator",
    [
        tfq.differentiators.Adjoint(),
        tfq.differentiators.ParameterShift(),
        tfq.differentiators.ForwardDifference(error_order=2, grid_spacing=0.01),
        tfq.differentiators.CentralDifference(error_order=4, grid_spacing=0.002),
        tfq.differentiators.LinearCombination([0.5, -0.5], [0.25, -0.25]),
    ],
    ids=lambda d: type(d).__name__,
)
def test_differentiator_config_round_trip(differentiator):
    config = tfq_backend.differentiator_to_config(differentiator)
    assert set(config) == {"class_name", "config"}
    restored = tfq_backend.differentiator_from_config(config)
    assert type(restored) is type(differentiator) and restored is not differentiator
    assert tfq_backend.differentiator_to_config(restored) == config
    if hasattr(differentiator, "weights"):
        np.testing.assert_allclose(restored.weights.numpy(), differentiator.weights.numpy(), rtol=1e-6)
        np.testing.assert_allclose(restored.perturbations.numpy(), differentiator.perturbations.numpy(), rtol=1e-6)
    # The same object in two layers: each layer makes its own op.
    layers = [QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], backend="tfq",
                           differentiator=differentiator) for _ in range(2)]
    assert layers[0].get_config()["differentiator"] == config


def test_custom_differentiator_runs_but_is_refused_at_save_time():
    class MyShift(tfq.differentiators.ParameterShift):
        pass

    layer = QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], backend="tfq",
                         differentiator=MyShift())
    x = tf.constant([[0.3, 0.4]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(layer(x))
    assert np.all(np.isfinite(tape.gradient(y, x).numpy()))
    with pytest.raises(ValueError, match="Cannot save differentiator .*MyShift"):
        layer.get_config()
    with pytest.raises(ValueError, match="Unknown differentiator 'MyShift'"):
        tfq_backend.differentiator_from_config({"class_name": "MyShift", "config": {}})


def test_trains_in_a_keras_model_with_tf_function():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((2,)),
        keras.layers.Dense(2),
        QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], backend="tfq",
                     differentiator=tfq.differentiators.ParameterShift()),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.Adam(0.05), "mse")
    x = np.random.default_rng(0).uniform(-1, 1, size=(64, 2)).astype("float32")
    y = np.sin(x[:, :1] + x[:, 1:])
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * before


def tfq_model():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((2,))
    h = keras.layers.Dense(2)(inputs)
    q = QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], backend="tfq",
                     differentiator=tfq.differentiators.CentralDifference(grid_spacing=0.01))(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(q))
    model.compile("adam", "mse")
    x = np.random.default_rng(1).uniform(-1, 1, size=(16, 2)).astype("float32")
    model.fit(x, x[:, :1], epochs=1, verbose=0)
    return model, x


def test_keras_file_and_savedmodel_round_trip_in_fresh_process(tmp_path):
    model, x = tfq_model()
    model.save(tmp_path / "m.keras")
    model.export(str(tmp_path / "sm"), verbose=False)
    np.save(tmp_path / "x.npy", x)
    expected = model.predict(x, verbose=0)
    out = run_fresh_python(f"""
        import numpy as np, keras, tensorflow as tf
        import qkeras_hybrid
        x = np.load({str(tmp_path / 'x.npy')!r})
        m = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        q = [l for l in m.layers if isinstance(l, qkeras_hybrid.QuantumLayer)][0]
        print(q.backend, q.get_config()["differentiator"])
        np.save({str(tmp_path / 'keras.npy')!r}, m.predict(x, verbose=0))
        np.save({str(tmp_path / 'w.npy')!r}, q.quantum_weights.numpy())
        served = tf.saved_model.load({str(tmp_path / 'sm')!r})   # TFQ's ops registered by the import
        np.save({str(tmp_path / 'served.npy')!r}, served.serve(x).numpy())
    """)
    assert "tfq {'class_name': 'CentralDifference', 'config': {'error_order': 2, 'grid_spacing': 0.01}}" in out
    np.testing.assert_allclose(np.load(tmp_path / "keras.npy"), expected, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, atol=1e-6)
    original = [l for l in model.layers if isinstance(l, QuantumLayer)][0].quantum_weights.numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), original)


def test_missing_tfq_at_load_time_gives_clear_errors(tmp_path):
    model, x = tfq_model()
    model.save(tmp_path / "m.keras")
    model.export(str(tmp_path / "sm"), verbose=False)
    # A process where TensorFlow Quantum cannot be imported (as if not installed).
    out = run_fresh_python(f"""
        import sys
        sys.modules["tensorflow_quantum"] = None
        import keras, tensorflow as tf
        import qkeras_hybrid
        from qkeras_hybrid.backends import TFQNotAvailableError, load_saved_model
        print("unavailable:", qkeras_hybrid.backends.TFQ_OPS_UNAVAILABLE)
        try:
            tf.saved_model.load({str(tmp_path / 'sm')!r})
        except Exception as e:
            print("raw:", type(e).__name__, str(e).splitlines()[0])
        try:
            load_saved_model({str(tmp_path / 'sm')!r})
        except TFQNotAvailableError as e:
            print("wrapped:", e)
        try:
            keras.models.load_model({str(tmp_path / 'm.keras')!r})
        except TFQNotAvailableError as e:
            print("keras:", e)
    """)
    assert "unavailable: tensorflow_quantum is not installed" in out
    assert "raw: RuntimeError Op type not registered 'Tfq" in out
    assert "wrapped: The SavedModel" in out and "pip install tensorflow-quantum" in out
    assert "keras:" in out and "needs TensorFlow Quantum" in out


# ------------------------------------------- validation before TFQ runs (issue 12, item 3)


def test_too_many_qubits_refused_before_tfq_sees_them():
    """TFQ does not check its allocations and crashes the process (35 qubits: a segfault). Run in a
    child process, so that a regression fails this test instead of killing the test run."""
    out = run_fresh_python(
        """
        import cirq, sympy
        import qkeras_hybrid
        from qkeras_hybrid.layers import QuantumDataLayer, QuantumLayer
        x = sympy.Symbol("x")
        qubits = cirq.LineQubit.range(35)
        try:
            QuantumLayer(cirq.Circuit(cirq.rx(x)(q) for q in qubits), cirq.Z(qubits[0]), input_symbols=[x],
                         backend="tfq")
        except ValueError as e:
            print("layer |", e)
        layer = QuantumDataLayer(cirq.Circuit(cirq.rx(x)(qubits[0])), cirq.Z(qubits[0]), backend="tfq")
        try:  # data circuits on 35 qubits: TFQ would simulate them with the layer's
            layer([cirq.Circuit(cirq.H.on_each(*qubits))])
        except ValueError as e:
            print("data |", e)
        """
    )
    lines = dict(line.split(" | ", 1) for line in out.strip().splitlines())
    assert "a circuit on 35 qubits needs about 1,024 GiB of state vectors on backend='tfq'" in lines["layer"]
    assert "at most" in lines["layer"] and "qubits fit" in lines["layer"]
    assert "35 qubits" in lines["data"] and "backend='tfq'" in lines["data"]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_and_weights_raise_before_tfq(bad):
    layer = QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], backend="tfq")
    x = np.zeros((2, 2), "float32")
    x[1, 0] = bad
    for fn in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{layer.name}: inputs\[1, 0\] \(input symbol x0\) is not finite \({bad}\)"):
            fn(tf.constant(x))
    layer.quantum_weights.assign([0.1, bad, 0.3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"weight w1 \(quantum_weights\[1\]\) is not finite"):
        layer(tf.zeros((2, 2)))


def test_non_finite_expression_values_are_named():
    """Finite symbols whose expression overflows float32 (x * y): TFQ would return NaN silently."""
    x, y = sympy.symbols("x y")
    q = QUBITS[0]
    layer = QuantumLayer(cirq.Circuit(cirq.rx(x * y)(q)), cirq.Z(q), input_symbols=[x, y], backend="tfq")
    big = tf.constant([[0.5, 2.0], [1e30, 1e30]])
    for fn in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"backend=tfq: the value of symbol <x\*y/pi> in row 1 is not finite \(inf\)"):
            fn(big)
    np.testing.assert_allclose(layer(big[:1]), [[np.cos(1.0)]], atol=1e-6)


def test_observable_outside_the_register_is_refused_at_construction():
    with pytest.raises(ValueError, match="acts on qubit q\\(5\\), which is not one of the circuit's qubits"):
        QuantumLayer(two_qubit_circuit(), cirq.Z(cirq.LineQubit(5)), input_symbols=[X0, X1], backend="tfq")
    with pytest.raises(ValueError, match=r"Circuit symbols \['w2'\] are not given values"):
        QuantumLayer(two_qubit_circuit(), OBSERVABLES, input_symbols=[X0, X1], weight_symbols=["w0", "w1"],
                     backend="tfq")
