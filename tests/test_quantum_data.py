"""QuantumDataLayer: circuits as inputs, the model circuit appended; native and tfq backends."""

import doctest

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf
import tensorflow_quantum as tfq

from conftest import central_fd, load_example, run_fresh_python
from qkeras_hybrid.layers import QuantumDataLayer, quantum_data_layer

QUBITS = [cirq.GridQubit(0, 1), cirq.GridQubit(1, 0), cirq.GridQubit(0, 0)]
C0, C1, W0, W1 = sympy.symbols("c0 c1 w0 w1")
OBSERVABLES = [cirq.Z(QUBITS[0]), cirq.X(QUBITS[1]) * cirq.Y(QUBITS[2]), 0.5 * cirq.X(QUBITS[0]) + cirq.Z(QUBITS[2])]


def model_circuit():
    q = QUBITS
    return cirq.Circuit(
        cirq.ry(W0)(q[0]), cirq.CNOT(q[0], q[1]), cirq.rx(C0 * W1)(q[2]), cirq.CZ(q[2], q[0]),
        cirq.ry(C1)(q[1]), cirq.XXPowGate(exponent=sympy.sin(W1))(q[1], q[2]),
    )


def data_circuits(rng, count):
    """Random symbol-free circuits, some on fewer qubits than the register."""
    out = []
    for i in range(count):
        used = QUBITS if i % 3 else QUBITS[1:]
        c = cirq.Circuit(cirq.rx(rng.uniform(0, 3))(q) for q in used)
        c += cirq.Circuit(cirq.CNOT(used[0], used[-1]), cirq.ry(rng.uniform(0, 3))(used[0]), cirq.S(used[-1]))
        out.append(c)
    return out


def reference(layer, circuits, controls):
    """Cirq: <O> of data + model circuit, per sample."""
    sim = cirq.Simulator(dtype=np.complex128)
    weights = dict(zip(layer.weight_symbols, layer.quantum_weights.numpy().astype(float)))
    rows = []
    for i, data in enumerate(circuits):
        values = dict(weights)
        if controls is not None:
            values.update(zip(layer.input_symbols, controls[i].astype(float)))
        rows.append(np.real(sim.simulate_expectation_values(
            data + layer.circuit, layer.observables, cirq.ParamResolver(values), qubit_order=sorted(QUBITS))))
    return np.array(rows)


@pytest.mark.parametrize("backend", ["native", "tfq"])
@pytest.mark.parametrize("qubit_order", [None, [QUBITS[2], QUBITS[0], QUBITS[1]]], ids=["sorted", "custom"])
def test_controlled_values_match_cirq(backend, qubit_order):
    rng = np.random.default_rng(0)
    circuits = data_circuits(rng, 5)
    controls = rng.uniform(-2, 2, size=(5, 2)).astype("float32")
    layer = QuantumDataLayer(model_circuit(), OBSERVABLES, input_symbols=[C0, C1], backend=backend,
                             qubits=qubit_order)
    out = layer([circuits, controls]).numpy()
    assert out.shape == (5, 3) and layer.weight_symbols == ["w0", "w1"]
    np.testing.assert_allclose(out, reference(layer, circuits, controls), atol=2e-5)
    # The same circuits as TFQ's string tensor.
    np.testing.assert_allclose(layer([tfq.convert_to_tensor(circuits), controls]).numpy(), out, atol=1e-6)


@pytest.mark.parametrize("backend", ["native", "tfq"])
def test_pqc_and_expectation_styles(backend):
    rng = np.random.default_rng(1)
    circuits = data_circuits(rng, 4)
    pqc = QuantumDataLayer(model_circuit(), OBSERVABLES, backend=backend)  # every symbol trainable
    assert pqc.weight_symbols == ["c0", "c1", "w0", "w1"]
    np.testing.assert_allclose(pqc(circuits).numpy(), reference(pqc, circuits, None), atol=2e-5)
    # Every symbol fed by the input, no weights: tfq.layers.Expectation.
    values = rng.uniform(-2, 2, size=(4, 4)).astype("float32")
    expectation = QuantumDataLayer(model_circuit(), OBSERVABLES, input_symbols=[C0, C1, W0, W1], backend=backend)
    out = expectation([circuits, values]).numpy()
    assert expectation.count_params() == 0
    sim = cirq.Simulator(dtype=np.complex128)
    for row, data, v in zip(out, circuits, values):
        r = cirq.ParamResolver(dict(zip(["c0", "c1", "w0", "w1"], v.astype(float))))
        ref = np.real(sim.simulate_expectation_values(data + model_circuit(), OBSERVABLES, r))
        np.testing.assert_allclose(row, ref, atol=2e-5)


def test_native_and_tfq_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    circuits = tfq.convert_to_tensor(data_circuits(rng, 3))
    controls = rng.uniform(-2, 2, size=(3, 2))
    upstream = rng.normal(size=(3, 3))
    w = rng.uniform(0, 2 * np.pi, size=2)  # fixed weights: the test is deterministic
    native = QuantumDataLayer(model_circuit(), OBSERVABLES, input_symbols=[C0, C1], dtype="float64")
    native([circuits, controls])

    def loss(layer, c, wv):
        layer.quantum_weights.assign(wv)
        return float(tf.reduce_sum(layer([circuits, tf.constant(c)]) * upstream))

    # The reference: central differences of the native float64 forward; with
    # eps = 1e-4 their truncation (eps^2 / 6 times the third derivative) and
    # rounding (1e-16 / eps) stay below 1e-8.
    fd_c = central_fd(lambda c: loss(native, c, w), controls, eps=1e-4)
    fd_w = central_fd(lambda wv: loss(native, controls, wv), w, eps=1e-4)
    scale = max(1.0, np.max(np.abs(fd_c)), np.max(np.abs(fd_w)))
    # TFQ's ops run in float32 whatever the layer's dtype, so its tolerances
    # follow from how it computes, relative to the gradient's scale:
    # * ParameterShift: the exact rule on float32 expectations, each off by
    #   ~2^-24 = 6e-8 per gate (10 gates), times the chain factors (<= 2 pi
    #   here) and 3 outputs x |upstream|: 2e-5 (measured: at most 2.2e-6 over
    #   300 random weights).
    # * Adjoint: TFQ differentiates each gate matrix by a float32 central
    #   difference with step h = 5e-3 in Cirq's exponent t (_GRAD_EPS in
    #   tensorflow_quantum/core/src/adj_util.cc): truncation (pi h)^2 / 6 = 4e-5
    #   and the rounding of t +- h, 2^-24 |t| / h <= 5e-5 for |t| <= 4 (angles
    #   up to 4 pi), relative to each gate's contribution: 2e-4 (measured: at
    #   most 6.7e-5 over 300 random weights; 1e-4 absolute was flaky).
    # A sign or factor-2 error moves the largest entry by at least its size,
    # which at these weights is far above every tolerance.
    assert min(np.max(np.abs(fd_c)), np.max(np.abs(fd_w))) > 100 * 2e-4 * scale
    native.quantum_weights.assign(w)
    for backend, differentiator, atol in [
        ("native", None, 1e-6),
        ("tfq", None, 2e-4 * scale),
        ("tfq", tfq.differentiators.ParameterShift(), 2e-5 * scale),
    ]:
        layer = QuantumDataLayer(model_circuit(), OBSERVABLES, input_symbols=[C0, C1], backend=backend,
                                 differentiator=differentiator, dtype="float64")
        layer([circuits, controls])
        layer.set_weights([w])
        c = tf.constant(controls)
        with tf.GradientTape() as tape:
            tape.watch(c)
            total = tf.reduce_sum(layer([circuits, c]) * upstream)
        gc, gw = tape.gradient(total, [c, layer.quantum_weights.value])
        np.testing.assert_allclose(gc.numpy(), fd_c, atol=atol, err_msg=backend)
        np.testing.assert_allclose(gw.numpy(), fd_w, atol=atol, err_msg=backend)


def test_sampled_expectations_on_data_circuits():
    # TFQ's sampled op has no seed: check against shot noise. <Z> after
    # H then Ry(w) is -sin(w); 20000 shots give a standard deviation <= 0.0071.
    q = cirq.LineQubit(0)
    shots = 20000
    layer = QuantumDataLayer(cirq.Circuit(cirq.ry(sympy.Symbol("w"))(q)), cirq.Z(q), backend="tfq",
                             repetitions=shots, differentiator=tfq.differentiators.ParameterShift(),
                             initializer=keras.initializers.Constant(0.5))
    out = layer([cirq.Circuit(cirq.H(q)), cirq.Circuit(cirq.X(q))]).numpy()[:, 0]
    np.testing.assert_allclose(out, [-np.sin(0.5), -np.cos(0.5)], atol=5 / np.sqrt(shots))


def test_bad_inputs_are_named():
    q = QUBITS
    layer = QuantumDataLayer(model_circuit(), OBSERVABLES, input_symbols=[C0, C1])
    with pytest.raises(ValueError, match="must not contain symbols"):
        layer([[cirq.Circuit(cirq.rx(sympy.Symbol("t"))(q[0]))], np.zeros((1, 2), "float32")])
    with pytest.raises(ValueError, match=r"takes \[circuits, values\]"):
        layer([cirq.Circuit(cirq.X(q[0]))])
    with pytest.raises(TypeError, match="tf.string tensor"):
        layer([np.zeros((2,), "float32"), np.zeros((2, 2), "float32")])
    stray = [cirq.Circuit(cirq.X(cirq.GridQubit(5, 5)))]
    # Python circuits are checked before TFQ simulates them; serialized ones when the graph runs.
    with pytest.raises(ValueError, match=r"act on qubits \[cirq.GridQubit\(5, 5\)\] outside the layer's qubits"):
        layer([stray, np.zeros((1, 2), "float32")])
    with pytest.raises(tf.errors.InvalidArgumentError, match="act only on the layer's qubits"):
        layer([tfq.convert_to_tensor(stray), np.zeros((1, 2), "float32")])
    from qiskit import QuantumCircuit

    with pytest.raises(TypeError, match="must be a cirq.Circuit"):
        QuantumDataLayer(QuantumCircuit(1), [])


def cluster_data(n=40, seed=0):
    """Labelled 2-qubit quantum data: Ry(theta) |0>, label 1 when theta > pi/2."""
    rng = np.random.default_rng(seed)
    q = QUBITS[:2]
    thetas = rng.uniform(0, np.pi, size=n)
    circuits = [cirq.Circuit(cirq.ry(t)(q[0]), cirq.CNOT(q[0], q[1])) for t in thetas]
    return tfq.convert_to_tensor(circuits), (thetas > np.pi / 2).astype("float32")[:, None]


def data_model(backend):
    q = QUBITS[:2]
    a, b = sympy.symbols("a b")
    circuit = cirq.Circuit(cirq.ry(a)(q[1]), cirq.rx(b)(q[0]))
    inputs = keras.Input((), dtype="string")
    expectation = QuantumDataLayer(circuit, cirq.Z(q[1]), backend=backend,
                                   initializer=keras.initializers.Constant(0.3))(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(expectation))


def test_functional_models_train_and_round_trip(tmp_path):
    x, y = cluster_data()
    expected = {}
    for backend in ["native", "tfq"]:
        keras.utils.set_random_seed(0)
        model = data_model(backend)
        model.compile(keras.optimizers.Adam(0.1), "binary_crossentropy")
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=5, batch_size=20, verbose=0)
        assert model.evaluate(x, y, verbose=0) < before, backend
        model.save(tmp_path / f"{backend}.keras")
        model.export(str(tmp_path / f"{backend}_sm"), verbose=False)
        expected[backend] = model.predict(x, verbose=0)
    np.save(tmp_path / "x.npy", x.numpy())
    run_fresh_python(f"""
        import numpy as np, keras, tensorflow as tf
        import qkeras_hybrid
        x = tf.constant(np.load({str(tmp_path / 'x.npy')!r}, allow_pickle=True))
        for backend in ["native", "tfq"]:
            m = keras.models.load_model({str(tmp_path)!r} + f"/{{backend}}.keras")
            np.save({str(tmp_path)!r} + f"/{{backend}}_keras.npy", m.predict(x, verbose=0))
            served = tf.saved_model.load({str(tmp_path)!r} + f"/{{backend}}_sm")
            np.save({str(tmp_path)!r} + f"/{{backend}}_served.npy", served.serve(x).numpy())
    """)
    for backend in ["native", "tfq"]:
        np.testing.assert_allclose(np.load(tmp_path / f"{backend}_keras.npy"), expected[backend], atol=1e-6)
        np.testing.assert_allclose(np.load(tmp_path / f"{backend}_served.npy"), expected[backend], atol=1e-6)


def test_qcnn_example_classifies_excited_cluster_states(capsys):
    example = load_example("excited_cluster_states")
    assert len(cirq.parameter_symbols(example.qcnn_circuit(example.QUBITS))) == 63  # the tutorial's QCNN
    result = example.main(["--quick"])
    assert "test accuracy" in capsys.readouterr().out
    # Balanced labels: chance is 0.5; 29 test circuits at >= 0.7 is p < 0.02 by chance.
    assert result["test_size"] == 29 and result["test_accuracy"] >= 0.7, result
    assert result["tfq_dataset_accuracy"] >= 7 / 9, result


def test_hello_many_worlds_steers_each_command_to_its_state():
    # Native (the example's default); the tfq backend gives the same numbers
    # (examples/hello_many_worlds.py --backend tfq) but takes as long again.
    example = load_example("hello_many_worlds")
    result = example.run("native", epochs=100)
    np.testing.assert_allclose(result["bloch"], example.TARGETS, atol=0.15)
    for target, bloch in zip(example.TARGETS, result["bloch"]):
        axis = int(np.argmax(np.abs(target)))
        assert bloch[axis] * target[axis] > 0.95


def test_docstring_example_runs():
    result = doctest.testmod(quantum_data_layer, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
