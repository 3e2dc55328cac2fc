"""QiskitLayer: values and gradients against qiskit.quantum_info.Statevector, batching, models, saving, export."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2
from qiskit.primitives import BackendSamplerV2

import qkeras_hybrid  # noqa: F401  (registers the op)
from qkeras_hybrid.backends.qiskit_executor import BackendJobError, register_backend
from qkeras_hybrid.differentiators import FiniteDifference, ParameterShift
from qkeras_hybrid.layers import QiskitLayer

from conftest import run_fresh_python

pytestmark = pytest.mark.filterwarnings("ignore:Qiskit backend .* has no QubitProperties")



# ------------------------------------------------------------------ circuits

A, B, C, X = (Parameter(n) for n in ("a", "b", "c", "x"))


def hard_circuit():
    """Gates whose parameters the shift rule cannot shift naively: u, cry, cp, p, 2*a, a*b, a reused."""
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.ry(X, 1)
    qc.u(A, 2 * B, A + B, 0)
    qc.cry(C, 0, 1)
    qc.cp(B, 1, 2)
    qc.p(A, 2)
    qc.rxx(2 * A, 0, 2)
    qc.rzz(C * X, 1, 2)
    qc.sx(2)
    qc.crx(X + 0.3, 2, 0)
    return qc


OBSERVABLES = [
    SparsePauliOp.from_list([("IIZ", 1.0), ("XXI", 0.5)]),
    SparsePauliOp("YZX"),
    SparsePauliOp.from_list([("ZZZ", -0.7), ("IYI", 0.2)]),
]


def statevector_expectations(circuit, observables, names, rows):
    params = {p.name: p for p in circuit.parameters}
    out = []
    for row in rows:
        state = Statevector(circuit.remove_final_measurements(inplace=False).assign_parameters(
            {params[n]: v for n, v in zip(names, row)}))
        out.append([state.expectation_value(o).real for o in observables])
    return np.array(out)


def statevector_jacobian(circuit, observables, names, rows, h=1e-5):
    """Central finite differences of the Statevector reference: [B, O, P]."""
    rows = np.asarray(rows, dtype=np.float64)
    columns = []
    for k in range(rows.shape[1]):
        step = np.zeros(rows.shape[1])
        step[k] = h
        plus = statevector_expectations(circuit, observables, names, rows + step)
        minus = statevector_expectations(circuit, observables, names, rows - step)
        columns.append((plus - minus) / (2 * h))
    return np.stack(columns, axis=-1)


def layer_value_and_grads(layer, inputs, upstream):
    inputs = tf.constant(inputs, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
        loss = tf.reduce_sum(outputs * upstream)
    d_inputs, d_weights = tape.gradient(loss, [inputs, layer.quantum_weights])
    return outputs.numpy(), d_inputs.numpy(), d_weights.numpy()


def exact_layer(**kwargs):
    return QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X], dtype="float64", **kwargs)


# ------------------------------------------------------------ differentiators


def test_differentiators_shift_sets_and_vjp():
    def f(v):  # trigonometric of degree 1 in each value, like any Pauli-rotation circuit
        return np.stack([np.cos(v[:, 0]) * np.sin(v[:, 1]) + 0.3 * np.sin(v[:, 0]), np.cos(v[:, 1])], axis=1)

    def jacobian(v):  # [B, O, P]
        return np.stack([
            np.stack([-np.sin(v[:, 0]) * np.sin(v[:, 1]) + 0.3 * np.cos(v[:, 0]), np.cos(v[:, 0]) * np.cos(v[:, 1])], 1),
            np.stack([np.zeros(len(v)), -np.sin(v[:, 1])], 1),
        ], axis=1)

    rng = np.random.default_rng(4)
    values, upstream = rng.uniform(-3, 3, (5, 2)), rng.normal(size=(5, 2))
    expected = np.einsum("bo,bop->bp", upstream, jacobian(values))
    for shift in (np.pi / 2, 0.4, 2.5):
        rule = ParameterShift(shift)
        shifted = rule.shifted_values(values)
        assert shifted.shape == (2 * 2 * 5, 2)
        np.testing.assert_allclose(shifted[5 * 1 + 3], values[3] - [shift, 0])  # parameter 0, minus, row 3
        np.testing.assert_allclose(rule.vjp(f(shifted), upstream), expected, atol=1e-12)
    fd = FiniteDifference(1e-4)
    np.testing.assert_allclose(fd.vjp(f(fd.shifted_values(values)), upstream), expected, atol=1e-7)
    assert np.max(np.abs(FiniteDifference(0.5).vjp(f(FiniteDifference(0.5).shifted_values(values)), upstream)
                         - expected)) > 1e-2  # O(h^2) error: the comparison above can fail


# ------------------------------------------------------- values, gradients


def test_exact_values_and_parameter_shift_gradients_match_statevector():
    layer = exact_layer()
    rng = np.random.default_rng(0)
    inputs = rng.uniform(-2, 2, (4, 1))
    layer.build((None, 1))
    layer.quantum_weights.assign(rng.uniform(-2, 2, 3))
    upstream = rng.normal(size=(4, 3))
    values, d_inputs, d_weights = layer_value_and_grads(layer, inputs, upstream)

    names = ["x", "a", "b", "c"]
    assert layer.input_symbols + layer.weight_symbols == names
    rows = np.concatenate([inputs, np.tile(layer.quantum_weights.numpy(), (4, 1))], axis=1)
    np.testing.assert_allclose(values, statevector_expectations(hard_circuit(), OBSERVABLES, names, rows), atol=1e-10)
    jac = np.einsum("bo,bop->bp", upstream, statevector_jacobian(hard_circuit(), OBSERVABLES, names, rows))
    np.testing.assert_allclose(d_inputs, jac[:, :1], atol=1e-6)
    np.testing.assert_allclose(d_weights, jac[:, 1:].sum(axis=0), atol=1e-6)


def test_any_shift_is_exact_and_finite_differences_approximate():
    rng = np.random.default_rng(1)
    inputs, upstream = rng.uniform(-2, 2, (2, 1)), rng.normal(size=(2, 3))
    results = {}
    for name, kwargs in {
        "shift_pi2": {},
        "shift_0.3": {"shift": 0.3},
        "instance": {"differentiator": ParameterShift(1.1)},
        "fd": {"differentiator": "finite_difference", "shift": 1e-4},
        "fd_coarse": {"differentiator": FiniteDifference(0.3)},
    }.items():
        layer = exact_layer(**kwargs)
        layer.build((None, 1))
        layer.quantum_weights.assign([0.4, -1.2, 0.9])
        results[name] = np.concatenate([g.ravel() for g in layer_value_and_grads(layer, inputs, upstream)[1:]])
    for name in ("shift_0.3", "instance"):
        np.testing.assert_allclose(results[name], results["shift_pi2"], atol=1e-9)
    np.testing.assert_allclose(results["fd"], results["shift_pi2"], atol=1e-6)
    # A coarse finite-difference step is visibly biased: the comparison can fail.
    assert np.max(np.abs(results["fd_coarse"] - results["shift_pi2"])) > 1e-3


def test_shots_sample_within_tolerance_and_seed_reproduces():
    shots = 4000
    qc = QuantumCircuit(2)
    qc.ry(X, 0)
    qc.cry(A, 0, 1)
    qc.rx(2 * A, 1)
    observables = [SparsePauliOp("IZ"), SparsePauliOp("ZI"), SparsePauliOp("XX")]
    layer = QiskitLayer(qc, observables, input_params=[X], shots=shots, seed=7, dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.8])
    inputs = np.array([[0.3], [1.9], [-1.0]])
    upstream = np.ones((3, 3))
    values, d_inputs, d_weights = layer_value_and_grads(layer, inputs, upstream)
    rows = np.concatenate([inputs, np.full((3, 1), 0.8)], axis=1)
    exact = statevector_expectations(qc, observables, ["x", "a"], rows)
    sigma = np.sqrt((1 - exact**2) / shots) + 1e-3
    assert np.all(np.abs(values - exact) < 5 * sigma), (values, exact)
    jac = statevector_jacobian(qc, observables, ["x", "a"], rows).sum(axis=1)
    # Each shifted estimate has std <= 1/sqrt(shots); a gradient sums <= 3 gates x 3 observables of them.
    tolerance = 5 * 9 * np.sqrt(2) / 2 / np.sqrt(shots)
    np.testing.assert_allclose(d_inputs.ravel(), jac[:, 0], atol=tolerance)
    np.testing.assert_allclose(d_weights, jac[:, 1].sum(), atol=3 * tolerance)
    assert not np.allclose(values, exact, atol=1e-6)  # really sampled

    def first_call(seed):
        again = QiskitLayer(qc, observables, input_params=[X], shots=shots, seed=seed, dtype="float64")
        again.build((None, 1))
        again.quantum_weights.assign([0.8])
        return again(tf.constant(inputs)).numpy()

    np.testing.assert_array_equal(first_call(7), values)
    assert not np.array_equal(first_call(8), values)


def textbook_circuit():
    qc = QuantumCircuit(1, 1)
    qc.h(0)
    qc.ry(X, 0)
    qc.measure(0, 0)
    return qc


def test_measured_circuit_gives_bitstring_value():
    inputs = np.array([[0.3], [1.2], [-0.8]])
    expected = (1 + np.sin(inputs)) / 2  # P(1) after H, Ry(x)
    exact = QiskitLayer(textbook_circuit(), input_params=[X], dtype="float64")
    np.testing.assert_allclose(exact(tf.constant(inputs)).numpy(), expected, atol=1e-10)
    sampled = QiskitLayer(textbook_circuit(), input_params=[X], shots=2000, seed=3, dtype="float64")
    values, d_inputs, _ = layer_value_and_grads(sampled, inputs, np.ones((3, 1)))
    np.testing.assert_allclose(values, expected, atol=5 * 0.5 / np.sqrt(2000))
    np.testing.assert_allclose(d_inputs, np.cos(inputs) / 2, atol=5 * 0.5 / np.sqrt(2000))

    # Three qubits, two registers: value = sum over bitstrings of int(bitstring) * probability.
    from qiskit import ClassicalRegister, QuantumRegister

    q, low, high = QuantumRegister(3), ClassicalRegister(2, "low"), ClassicalRegister(1, "high")
    qc = QuantumCircuit(q, low, high)
    qc.ry(X, 0)
    qc.h(1)
    qc.cry(A, 1, 2)
    qc.rx(A + X, 2)
    qc.measure([2, 0, 1], [0, 1, 2])
    layer = QiskitLayer(qc, input_params=[X], dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.7])
    got = layer(tf.constant(inputs)).numpy().ravel()
    ref = []
    for x in inputs.ravel():
        probs = Statevector(qc.remove_final_measurements(inplace=False).assign_parameters({X: x, A: 0.7}))
        probs = probs.probabilities()  # index bit j = qubit j
        value = 0.0
        for index, p in enumerate(probs):
            bits = {qubit: (index >> qubit) & 1 for qubit in range(3)}
            value += p * (bits[2] * 1 + bits[0] * 2 + bits[1] * 4)  # clbit k = qubit measured into it, worth 2^k
        ref.append(value)
    np.testing.assert_allclose(got, ref, atol=1e-10)
    sampled = QiskitLayer(qc, input_params=[X], shots=3000, seed=1, dtype="float64")
    sampled.build((None, 1))
    sampled.quantum_weights.assign([0.7])
    np.testing.assert_allclose(sampled(tf.constant(inputs)).numpy().ravel(), ref, atol=5 * 3.5 / np.sqrt(3000))


# ------------------------------------------------------------------ batching


class CountingEstimator(AerEstimatorV2):
    def __init__(self):
        super().__init__()
        self.calls = []

    def run(self, pubs, **kwargs):
        self.calls.append([np.shape(pub[2]) for pub in pubs])
        return super().run(pubs, **kwargs)


class CountingSampler(BackendSamplerV2):
    def __init__(self):
        from qiskit_aer import AerSimulator

        super().__init__(backend=AerSimulator(), options={"seed_simulator": 5})
        self.calls = []

    def run(self, pubs, **kwargs):
        self.calls.append([np.shape(pub[1]) for pub in pubs])
        return super().run(pubs, **kwargs)


def test_one_job_for_the_forward_pass_and_one_for_the_gradient():
    estimator = CountingEstimator()
    layer = QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X], estimator=estimator, dtype="float64")
    gates = layer.executor.num_gate_params
    batch = 5
    layer_value_and_grads(layer, np.full((batch, 1), 0.2), np.ones((batch, 3)))
    assert estimator.calls == [[(batch, 1, gates)], [(2 * gates * batch, 1, gates)]]

    sampler = CountingSampler()
    layer = QiskitLayer(textbook_circuit(), input_params=[X], sampler=sampler, shots=100)
    layer_value_and_grads(layer, np.full((batch, 1), 0.2), np.ones((batch, 1)))
    assert sampler.calls == [[(batch, 1)], [(2 * 1 * batch, 1)]]


# ---------------------------------------------------------------- black boxes


@keras.saving.register_keras_serializable(package="qkeras_hybrid_tests")
class CosineBox:
    """VQNet-style black box: <Z> of Ry(v0) Rx(v1) |0> = cos(v0) cos(v1), and sin(v0)."""

    num_outputs = 2

    def __init__(self, scale=1.0):
        self.scale = scale
        self.calls = 0

    def run(self, values):
        self.calls += 1
        return self.scale * np.stack([np.cos(values[:, 0]) * np.cos(values[:, 1]), np.sin(values[:, 0])], axis=1)

    def get_config(self):
        return {"scale": self.scale}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_black_box_parameter_shift_is_exact_for_rotation_like_dependence(tmp_path):
    box = CosineBox(2.0)
    layer = QiskitLayer(box, input_params=1, weight_params=1, dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.4])
    inputs = np.array([[0.1], [1.3]])
    values, d_inputs, d_weights = layer_value_and_grads(layer, inputs, np.ones((2, 2)))
    v0, v1 = inputs[:, 0], 0.4
    np.testing.assert_allclose(values, 2 * np.stack([np.cos(v0) * np.cos(v1), np.sin(v0)], 1), atol=1e-12)
    np.testing.assert_allclose(d_inputs[:, 0], 2 * (-np.sin(v0) * np.cos(v1) + np.cos(v0)), atol=1e-12)
    np.testing.assert_allclose(d_weights, [np.sum(-2 * np.cos(v0) * np.sin(v1))], atol=1e-12)
    assert box.calls == 2  # one forward, one gradient

    model = keras.Sequential([keras.Input((1,)), layer])
    path = tmp_path / "box.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-12)
    assert loaded.layers[0].box.scale == 2.0
    with pytest.raises(ValueError, match="black box"):
        model.export(str(tmp_path / "box_export"), verbose=False)


# --------------------------------------------------------------- bad input


class FailingEstimator(AerEstimatorV2):
    def run(self, pubs, **kwargs):
        raise RuntimeError("device is offline")


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match=r"Parameters \['nope'\] are not in the circuit"):
        QiskitLayer(hard_circuit(), OBSERVABLES, input_params=["nope"])
    with pytest.raises(ValueError, match=r"\['x'\] are listed more than once"):
        QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X], weight_params=[X, A, B, C])
    with pytest.raises(ValueError, match=r"\['c'\] are neither"):
        QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X], weight_params=[A, B])
    with pytest.raises(ValueError, match="expects inputs of width 1"):
        QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X])(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expects inputs of width 1"):
        keras.Sequential([keras.Input((4,)), QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X])])
    with pytest.raises(ValueError, match="shots must be"):
        QiskitLayer(textbook_circuit(), input_params=[X], shots=0)
    with pytest.raises(ValueError, match="circuit with measurements"):
        QiskitLayer(hard_circuit(), input_params=[X])
    with pytest.raises(ValueError, match="act on \\[1\\] qubits, the circuit has 3"):
        QiskitLayer(hard_circuit(), SparsePauliOp("Z"), input_params=[X])
    with pytest.raises(TypeError, match="observables must be qiskit SparsePauliOps, got LineQubit"):
        import cirq

        QiskitLayer(hard_circuit(), [cirq.LineQubit(0)], input_params=[X])
    with pytest.raises(TypeError, match="run\\(values\\) method"):
        QiskitLayer(object(), input_params=1)
    with pytest.raises(TypeError, match="needs get_config and from_config"):
        QiskitLayer(type("Box", (), {"run": lambda self, v: v[:, :1]})(), input_params=1).get_config()
    with pytest.raises(ValueError, match="not be a multiple of pi"):
        QiskitLayer(textbook_circuit(), input_params=[X], shift=np.pi)
    with pytest.raises(Exception, match="must be finite"):
        QiskitLayer(textbook_circuit(), input_params=[X])(tf.constant([[np.nan]]))

    failing = QiskitLayer(hard_circuit(), OBSERVABLES, input_params=[X], estimator=FailingEstimator())
    with pytest.raises(BackendJobError, match="FailingEstimator job .* failed: RuntimeError: device is offline"):
        failing.executor.run(np.zeros((1, 4)))
    with pytest.raises(Exception, match="device is offline"):  # eager call: through tf.numpy_function
        failing(np.zeros((2, 1)))
    model = keras.Sequential([keras.Input((1,)), failing])
    model.compile("adam", "mse")
    with pytest.raises(Exception, match="device is offline"):  # graph mode, inside fit
        model.fit(np.zeros((4, 1)), np.zeros((4, 3)), verbose=0)


# ------------------------------------------------------ models, save, export


def regression_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (32, 2)).astype("float32")
    y = (0.5 * np.sin(x[:, :1] + x[:, 1:])).astype("float32")  # reachable by <Z> after Ry(angle)
    return x, y


def small_model(**layer_kwargs):
    x, a = Parameter("x"), Parameter("a")
    qc = QuantumCircuit(1)
    qc.ry(x, 0)
    qc.rx(a, 0)
    qc.ry(np.pi / 2, 0)
    inputs = keras.Input((2,))
    angle = keras.layers.Dense(1, name="angle")(inputs)
    outputs = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[x], name="qiskit", **layer_kwargs)(angle)
    return keras.Model(inputs, outputs)


def test_functional_model_fits_in_graph_mode_with_tensorboard(tmp_path):
    from qkeras_hybrid.callbacks import QuantumTensorBoard

    keras.utils.set_random_seed(0)
    x, y = regression_data()
    model = small_model(shots=200, seed=0)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    before = model.evaluate(x, y, verbose=0)
    log_dir = str(tmp_path / "logs")
    model.fit(x, y, epochs=8, batch_size=8, verbose=0,
              callbacks=[keras.callbacks.TensorBoard(log_dir),
                         QuantumTensorBoard(log_dir, gradient_data=(x[:8], y[:8]))])
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.5 * before, (before, after)
    written = [f for _, _, files in os.walk(log_dir) for f in files if "tfevents" in f]
    assert len(written) >= 2

    @tf.function
    def graph_call(inputs):
        return model(inputs)

    sampled = graph_call(tf.constant(x[:4])).numpy()
    assert sampled.shape == (4, 1) and np.all(np.abs(sampled) <= 1)


def test_keras_round_trip_in_fresh_process(tmp_path):
    from qiskit_aer import AerSimulator

    model = small_model(backend=AerSimulator(method="statevector"), shots=500, seed=4,
                        differentiator="finite_difference", shift=0.05)
    x, _ = regression_data()  # no call before predict: it must be the layer's first (seeded) job
    model.get_layer("qiskit").quantum_weights.assign([0.77])
    path = tmp_path / "qiskit.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x[:5])
    expected = model.predict(x[:5], verbose=0)  # first job of a seed-4 layer: the reloaded one draws the same
    out = run_fresh_python(f"""
        import numpy as np, keras
        import qkeras_hybrid
        m = keras.models.load_model({str(path)!r})
        q = m.get_layer("qiskit")
        print(q.quantum_weights.numpy()[0], q.shots, q.seed, type(q.backend).__name__, q.backend.options.method,
              type(q.differentiator).__name__, q.differentiator.shift)
        np.save({str(tmp_path / 'y.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))
    """)
    assert out.split() == ["0.77", "500", "4", "AerSimulator", "statevector", "FiniteDifference", "0.05"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_device_backend_needs_registration_to_save_and_load(tmp_path):
    from qiskit.providers.fake_provider import GenericBackendV2

    from qkeras_hybrid.backends import qiskit_executor

    backend = GenericBackendV2(2, seed=1, noise_info=False)
    model = small_model(backend=backend, shots=2000, seed=1)
    x, _ = regression_data()
    model.get_layer("qiskit").quantum_weights.assign([0.3])
    # The backend's transpiled circuit (its basis, its layout) still gives the right values.
    angle = model.get_layer("angle")(x[:3]).numpy()
    qc = model.get_layer("qiskit").circuit
    reference = statevector_expectations(qc, [SparsePauliOp("Z")], ["x", "a"],
                                         np.stack([angle[:, 0], np.full(3, 0.3)], 1))[:, 0]
    np.testing.assert_allclose(model.predict(x[:3], verbose=0)[:, 0], reference, atol=5 / np.sqrt(2000))
    path = tmp_path / "generic.keras"
    # A device handle is not data: saving says so instead of dropping it.
    with pytest.raises(TypeError, match=r"Cannot save the Qiskit backend 'generic_backend_2q'.*register_backend"):
        model.save(path)
    register_backend(backend.name, lambda: GenericBackendV2(2, seed=1, noise_info=False))
    try:
        model.save(path)  # stored by name
        del qiskit_executor._FACTORIES[backend.name]
        with pytest.raises(Exception, match="register_backend"):
            keras.models.load_model(path)
        register_backend(backend.name, lambda: GenericBackendV2(2, seed=1, noise_info=False))
        loaded = keras.models.load_model(path)
        assert loaded.get_layer("qiskit").backend.name == backend.name
    finally:
        qiskit_executor._FACTORIES.pop(backend.name, None)


def test_export_runs_the_native_simulator_or_refuses(tmp_path):
    x, _ = regression_data()
    model = small_model(shots=100, seed=0)
    exact = small_model()
    exact.set_weights(model.get_weights())
    expected = exact.predict(x[:6], verbose=0)
    export_dir = str(tmp_path / "exported")
    model.export(export_dir, verbose=False)
    np.save(tmp_path / "x.npy", x[:6])
    run_fresh_python(f"""
        import numpy as np, tensorflow as tf
        import qkeras_hybrid
        loaded = tf.saved_model.load({export_dir!r})  # kept alive: it owns the variables
        served = loaded.serve(tf.constant(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'y.npy')!r}, served.numpy())
    """)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)  # exact: no shot noise

    # A circuit the native compiler cannot run: a mid-circuit measurement read by a sampler.
    qc = QuantumCircuit(1, 1)
    qc.ry(X, 0)
    qc.measure(0, 0)
    qc.h(0)
    qc.measure(0, 0)
    model = keras.Sequential([keras.Input((1,)), QiskitLayer(qc, input_params=[X], shots=50, seed=0,
                                                            sampler=BackendSamplerV2(backend=_aer()))])
    with pytest.raises(Exception, match="Cannot export .* acts after a measurement"):
        model.export(str(tmp_path / "refused"), verbose=False)
    assert not os.path.exists(tmp_path / "refused" / "saved_model.pb")


def _aer():
    from qiskit_aer import AerSimulator

    return AerSimulator()


def test_user_primitives_statevector_estimator_and_sampler():
    from qiskit.primitives import StatevectorEstimator, StatevectorSampler

    layer = exact_layer(estimator=StatevectorEstimator())
    layer.build((None, 1))
    layer.quantum_weights.assign([0.5, -0.3, 1.1])
    inputs = np.array([[0.2], [-1.4]])
    rows = np.concatenate([inputs, np.tile([0.5, -0.3, 1.1], (2, 1))], axis=1)
    reference = statevector_expectations(hard_circuit(), OBSERVABLES, ["x", "a", "b", "c"], rows)
    np.testing.assert_allclose(layer(tf.constant(inputs)).numpy(), reference, atol=1e-10)
    rebuilt = QiskitLayer.from_config(layer.get_config())
    assert type(rebuilt.estimator).__name__ == "StatevectorEstimator"

    sampled = QiskitLayer(textbook_circuit(), input_params=[X], sampler=StatevectorSampler(seed=2), shots=4000,
                          dtype="float64")
    np.testing.assert_allclose(sampled(tf.constant(inputs)).numpy(), (1 + np.sin(inputs)) / 2, atol=5 * 0.5 / 63)


def test_docstring_example_runs():
    import doctest

    from qkeras_hybrid.layers import qiskit_layer

    result = doctest.testmod(qiskit_layer, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_circuit_without_parameters_and_layer_without_inputs():
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.ry(0.4, 1)
    observables = [SparsePauliOp("ZZ"), SparsePauliOp("XI")]
    reference = statevector_expectations(qc, observables, [], [[]])
    for kwargs, tolerance in (({}, 1e-10), ({"shots": 4000, "seed": 0}, 5 / np.sqrt(4000))):
        layer = QiskitLayer(qc, observables, dtype="float64", **kwargs)
        out = layer(np.zeros((3, 5)))  # no input params: only the batch size is used
        np.testing.assert_allclose(out.numpy(), np.repeat(reference, 3, axis=0), atol=tolerance)
        assert layer.quantum_weights.shape == (0,)


def test_backend_transpilation_keeps_qubits_and_observables_aligned():
    from qiskit.primitives import StatevectorEstimator
    from qiskit.providers.fake_provider import GenericBackendV2

    qc = QuantumCircuit(3)
    qc.ry(X, 0)
    qc.cx(0, 2)  # not adjacent on a line: routing may move qubits
    qc.rx(A, 1)
    qc.cry(A, 2, 1)
    observables = [SparsePauliOp("ZII"), SparsePauliOp("IZI"), SparsePauliOp("XZY")]
    rows = np.array([[0.4, 1.1], [-1.2, 1.1]])  # inputs x, shared weight a
    reference = statevector_expectations(qc, observables, ["x", "a"], rows)
    backend = GenericBackendV2(5, coupling_map=[[0, 1], [1, 2], [2, 3], [3, 4]], seed=3, noise_info=False)
    for kwargs, tolerance in (({"estimator": StatevectorEstimator()}, 1e-9),
                              ({"shots": 4000, "seed": 2}, 5 / np.sqrt(4000))):
        layer = QiskitLayer(qc, observables, input_params=[X], backend=backend, dtype="float64", **kwargs)
        assert all(c.num_qubits == 5 for c in layer.executor.circuits)  # really targeted at the device
        layer.build((None, 1))
        layer.quantum_weights.assign(rows[:1, 1])
        got = layer(tf.constant(rows[:, :1])).numpy()
        np.testing.assert_allclose(got, reference, atol=tolerance)
