"""QiskitLayer's backends: large circuits, Rust panics, saving backends and noise models, the fast sampling paths,
mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, amplitude_damping_error, depolarizing_error

import qkeras_hybrid  # noqa: F401  (registers the op)
from qkeras_hybrid.backends import qiskit_executor
from qkeras_hybrid.backends.qiskit_executor import BackendJobError, QiskitExecutor, UnsavableBackendError
from qkeras_hybrid.differentiators import ParameterShift
from qkeras_hybrid.layers import QiskitLayer

pytestmark = pytest.mark.filterwarnings("ignore:Qiskit backend .* has no QubitProperties")

X, A = Parameter("x"), Parameter("a")


def value_and_grads(layer, inputs, upstream, training=None):
    inputs = tf.constant(inputs, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs, training=training)
        loss = tf.reduce_sum(outputs * upstream)
    d_inputs, d_weights = tape.gradient(loss, [inputs, layer.quantum_weights])
    return outputs.numpy(), d_inputs.numpy(), d_weights.numpy()


# ---------------------------------------------------------- large circuits (issue 12, item 4)


def test_exact_values_of_12_qubits_never_densify_an_observable(monkeypatch):
    n = 12
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(X * (q + 1) / n + A, q)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    observables = [SparsePauliOp("I" * (n - 1) + "Z"), SparsePauliOp.from_list([("X" * n, 0.5), ("Z" + "I" * (n - 1), 1.0)])]
    inputs = np.array([[0.3], [1.2]])
    reference = [[Statevector(qc.assign_parameters({X: x, A: 0.4})).expectation_value(o).real for o in observables]
                 for x in inputs[:, 0]]

    def densified(self, *args, **kwargs):
        raise AssertionError("an observable was made a dense 2^n x 2^n matrix")

    # numpy calls __array__ when a list of operators is assigned into an object array.
    monkeypatch.setattr(SparsePauliOp, "__array__", densified)
    monkeypatch.setattr(SparsePauliOp, "to_matrix", densified)
    layer = QiskitLayer(qc, observables, input_params=[X], dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.4])
    for training in (None, True):  # the two-job path and the one-job training path
        values, d_inputs, _ = value_and_grads(layer, inputs, np.ones((2, 2)), training=training)
        np.testing.assert_allclose(values, reference, atol=1e-10)
        assert np.all(np.isfinite(d_inputs))


def test_too_large_dense_simulation_is_refused_at_construction():
    n = 35
    qc = QuantumCircuit(n)
    for q in range(n):
        qc.ry(X, q)
    observable = SparsePauliOp("I" * (n - 1) + "Z")
    from qiskit.primitives import StatevectorEstimator

    for kwargs in ({}, {"shots": 100}, {"estimator": StatevectorEstimator()},
                   {"backend": AerSimulator(method="density_matrix"), "shots": 100}):
        with pytest.raises(ValueError, match=r"a 35-qubit circuit .* needs .*2\^35.* more than the .* of memory"):
            QiskitLayer(qc, observable, input_params=[X], **kwargs)
    # A simulator without a dense state takes it, values and all.
    layer = QiskitLayer(qc, observable, input_params=[X], backend=AerSimulator(method="matrix_product_state"),
                        dtype="float64")
    np.testing.assert_allclose(layer(np.array([[0.3]])).numpy(), [[np.cos(0.3)]], atol=1e-8)


class PanickingEstimator:
    """An estimator whose job makes Qiskit's Rust code panic (pyo3's PanicException is a BaseException)."""

    def run(self, pubs, **kwargs):
        SparsePauliOp("Z" * 40).to_matrix()


def test_rust_panic_in_a_job_becomes_a_normal_error():
    qc = QuantumCircuit(1)
    qc.ry(X, 0)
    layer = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X], estimator=PanickingEstimator())
    caught = []
    for call in (lambda: layer.executor.run(np.zeros((1, 1))), lambda: layer(np.zeros((2, 1))),
                 lambda: tf.function(layer)(tf.zeros((2, 1)))):
        try:
            call()
        except BaseException as e:  # noqa: B036  (a panic that got through must fail the test, not end it)
            caught.append(e)
    assert len(caught) == 3
    for error in caught:
        assert isinstance(error, Exception), type(error).__mro__
        assert "PanickingEstimator job" in str(error) and "Rust code panicked" in str(error), str(error)
    assert isinstance(caught[0], BackendJobError)


# -------------------------------------------------- saving backends and noise (issue 12, item 5)


def noisy_aer(**options):
    noise_model = NoiseModel()
    noise_model.add_all_qubit_quantum_error(depolarizing_error(0.6, 1), ["ry"])
    return AerSimulator(noise_model=noise_model, coupling_map=[[0, 1], [1, 0]], max_parallel_threads=1, **options)


def test_noisy_aer_backend_round_trips_through_a_keras_file(tmp_path, monkeypatch):
    def densified(self, *args, **kwargs):
        raise AssertionError("an observable was made dense")

    # Transpiled for an AerSimulator, the observable acts on its 30 qubits: dense, it would fill the memory.
    monkeypatch.setattr(SparsePauliOp, "to_matrix", densified)
    qc = QuantumCircuit(1)
    qc.ry(X, 0)
    inputs = np.array([[0.0], [1.0], [2.5]], dtype="float32")
    noisy = 0.4 * np.cos(inputs)  # depolarizing p = 0.6 after Ry: <Z> = (1 - p) cos(x)
    for shots, tolerance in ((None, 1e-6), (4000, 5 / np.sqrt(4000))):
        backend = noisy_aer(method="density_matrix")
        model = keras.Sequential([keras.Input((1,)), QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X],
                                                                backend=backend, shots=shots, seed=3, name="q")])
        path = tmp_path / f"noisy_{shots}.keras"
        model.save(path)
        expected = model.predict(inputs, verbose=0)  # the layer's first (seeded) job, as the reloaded one's
        np.testing.assert_allclose(expected, noisy, atol=tolerance)
        loaded = keras.models.load_model(path)
        rebuilt = loaded.get_layer("q").backend
        assert type(rebuilt) is AerSimulator and rebuilt is not backend
        assert rebuilt.options.noise_model == backend.options.noise_model
        assert rebuilt.options.method == "density_matrix" and rebuilt.options.max_parallel_threads == 1
        assert rebuilt.configuration().coupling_map == [[0, 1], [1, 0]]
        got = loaded.predict(inputs, verbose=0)
        np.testing.assert_array_equal(got, expected)  # same noise, same seeds: the same samples
        assert np.all(np.abs(got[1:] - np.cos(inputs[1:])) > 0.3)  # not the noiseless values


def test_noise_model_config_round_trip_keeps_every_error_and_the_basis():
    import json

    noise_model = NoiseModel(basis_gates=["rx", "ry", "rz", "cx", "h"])
    noise_model.add_all_qubit_quantum_error(depolarizing_error(0.1, 1), ["rx", "h"])
    noise_model.add_quantum_error(amplitude_damping_error(0.2), ["ry"], [1])  # Kraus matrices, complex
    noise_model.add_quantum_error(depolarizing_error(0.05, 2), ["cx"], [0, 1])
    noise_model.add_readout_error(ReadoutError([[0.9, 0.1], [0.25, 0.75]]), [0])
    config = json.loads(json.dumps(qiskit_executor.noise_model_to_config(noise_model)))
    rebuilt = qiskit_executor.noise_model_from_config(config)
    assert rebuilt == noise_model
    assert rebuilt.basis_gates == noise_model.basis_gates


def test_backends_and_primitives_that_a_file_cannot_hold_refuse_to_save():
    from qiskit.providers.fake_provider import GenericBackendV2

    qc = QuantumCircuit(1)
    qc.ry(X, 0)
    device = GenericBackendV2(2, seed=1)
    for backend, reason in ((device, "handle to a device"), (AerSimulator.from_backend(device), "from_backend")):
        layer = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X], backend=backend, shots=10)
        with pytest.raises(UnsavableBackendError, match=f"Cannot save the Qiskit backend .*{reason}.*register_backend"):
            layer.get_config()

    class MyEstimator(qiskit_executor_reference_estimator()):
        pass

    layer = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X], estimator=MyEstimator())
    with pytest.raises(UnsavableBackendError, match="Cannot save the Qiskit primitive .*MyEstimator"):
        layer.get_config()


def qiskit_executor_reference_estimator():
    from qiskit.primitives import StatevectorEstimator

    return StatevectorEstimator


def test_reference_primitives_keep_their_options_and_backends():
    from qiskit.primitives import BackendSamplerV2, StatevectorSampler
    from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2
    from qiskit_aer.primitives import SamplerV2 as AerSamplerV2

    qc = QuantumCircuit(1, 1)
    qc.ry(X, 0)
    qc.measure(0, 0)
    for sampler in (AerSamplerV2.from_backend(noisy_aer(), default_shots=77, seed=5),
                    StatevectorSampler(default_shots=50, seed=3),
                    BackendSamplerV2(backend=noisy_aer(), options={"default_shots": 33, "seed_simulator": 4})):
        layer = QiskitLayer(qc, input_params=[X], sampler=sampler, shots=100)
        rebuilt = QiskitLayer.from_config(layer.get_config()).sampler
        assert type(rebuilt) is type(sampler)
        if isinstance(sampler, BackendSamplerV2):
            assert rebuilt.options == sampler.options
        else:
            assert (rebuilt.default_shots, rebuilt.seed) == (sampler.default_shots, sampler.seed)
        backend = getattr(sampler, "_backend", None) or getattr(sampler, "backend", None)
        if backend is not None:
            rebuilt_backend = getattr(rebuilt, "_backend", None) or rebuilt.backend
            assert rebuilt_backend.options.noise_model == backend.options.noise_model
    estimator = AerEstimatorV2.from_backend(noisy_aer(), options={"default_precision": 0.01})
    qc = QuantumCircuit(1)
    qc.ry(X, 0)
    layer = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X], estimator=estimator, dtype="float64")
    rebuilt = QiskitLayer.from_config(layer.get_config())
    assert rebuilt.estimator.options.default_precision == 0.01
    # Noisy values (within the precision's Gaussian noise) after the round trip: the estimator kept its simulator.
    np.testing.assert_allclose(rebuilt(np.array([[1.0]])).numpy(), [[0.4 * np.cos(1.0)]], atol=5 * 0.01)


# ------------------------------------------------------------ sampling paths (issue 12, item 13)


def measured_circuit():
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.ry(X, 0)
    qc.cry(A, 0, 1)
    qc.rx(2 * A, 1)
    qc.measure([0, 1], [1, 0])
    return qc


def test_pre_assembled_aer_runs_give_aer_runs_counts():
    """Our simulator's shortcut (circuits assembled once) against AerSimulator.run, seed for seed, packed or not."""
    qc = QuantumCircuit(2)
    qc.ry(X, 0)
    qc.cry(A, 0, 1)
    observables = [SparsePauliOp("ZI"), SparsePauliOp("XX")]  # two measurement bases: two circuits
    rng = np.random.default_rng(0)
    for executor in (QiskitExecutor(measured_circuit(), None, [X, A], shots=50, seed=3),
                     QiskitExecutor(qc, observables, [X, A], shots=50, seed=3)):
        sampling = executor._aer_sampling
        assert sampling.owned and sampling.max_copies == 5
        for max_copies in (5, 1):
            sampling.max_copies = max_copies
            for rows in (1, 3, 12):
                angles = rng.uniform(-3, 3, (rows, executor.num_gate_params))
                for seed in (1, 2):
                    fast = sampling.sample(angles, seed)
                    sampling.owned = False  # through AerSimulator.run
                    slow = sampling.sample(angles, seed)
                    sampling.owned = True
                    assert len(fast) == len(slow) == len(sampling.circuits)
                    for a, b in zip(fast, slow):
                        assert set(a.rows) == set(range(rows))
                        for name in ("rows", "keys", "weights"):
                            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_packed_copies_sample_each_parameter_set_with_its_own_shots():
    """Copies of a circuit side by side in one experiment: each copy's mean has the spread of `shots` shots of its
    own, and copies do not correlate."""
    qc = QuantumCircuit(1, 1)
    qc.ry(X, 0)
    qc.measure(0, 0)
    shots, rows = 100, 600
    executor = QiskitExecutor(qc, None, [X], shots=shots, seed=5)
    assert executor._aer_sampling.max_copies == 10
    x = np.tile([0.4, 2.0], rows // 2)[:, None]  # P(1) = sin^2(x / 2): copies with different distributions
    p = np.sin(x[:, 0] / 2) ** 2
    means = executor.run(x)[:, 0]
    z = (means - p) / np.sqrt(p * (1 - p) / shots)
    assert abs(z.mean()) < 5 / np.sqrt(rows)
    assert 0.8 < z.var() < 1.2  # 100 shots per set: not fewer, not shared
    pairs = z.reshape(-1, 10)  # the 10 copies of an experiment
    assert abs(np.corrcoef(pairs[:, 0::2].ravel(), pairs[:, 1::2].ravel())[0, 1]) < 4 / np.sqrt(rows / 2)


class CountingEstimator:
    """Wraps Aer's EstimatorV2 and records the shape of each job's parameter values."""

    def __init__(self):
        from qiskit_aer.primitives import EstimatorV2 as AerEstimatorV2

        self.estimator = AerEstimatorV2()
        self.calls = []

    def run(self, pubs, **kwargs):
        self.calls.append([np.shape(pub[2]) for pub in pubs])
        return self.estimator.run(pubs, **kwargs)


def test_training_call_runs_the_forward_pass_and_the_shifts_in_one_job():
    qc = QuantumCircuit(2)
    qc.ry(X, 0)
    qc.cry(A, 0, 1)
    qc.rzz(2 * A * X, 0, 1)  # a non-linear angle: the chain rule per row
    qc.rx(A, 1)
    observables = [SparsePauliOp("ZI"), SparsePauliOp("XY")]
    inputs, upstream = np.array([[0.3], [-1.1], [2.0]]), np.random.default_rng(0).normal(size=(3, 2))
    results = {}
    for training in (None, True):
        estimator = CountingEstimator()
        layer = QiskitLayer(qc, observables, input_params=[X], estimator=estimator, dtype="float64")
        layer.build((None, 1))
        layer.quantum_weights.assign([0.7])
        results[training] = value_and_grads(layer, inputs, upstream, training=training)
        gates = layer.executor.num_gate_params
        jobs = [[(3, 1, gates)], [(2 * gates * 3, 1, gates)]] if training is None else [[(3 + 2 * gates * 3, 1, gates)]]
        assert estimator.calls == jobs
    for before, after in zip(results[None], results[True]):
        np.testing.assert_allclose(after, before, atol=1e-12)

    # The Jacobian is the one the two-job vjp contracts.
    executor = layer.executor
    values = np.array([[0.3, 0.7], [-1.1, 0.7]])
    outputs, jacobian = executor.run_with_jacobian(values, ParameterShift())
    np.testing.assert_allclose(outputs, executor.run(values), atol=1e-12)
    for k in range(2):
        np.testing.assert_allclose(jacobian[..., k].sum(axis=1), executor.vjp(values, np.ones((2, 2)), ParameterShift())[:, k],
                                   atol=1e-12)


def test_sampled_training_step_matches_the_statevector_gradient():
    shots = 20000
    layer = QiskitLayer(measured_circuit(), input_params=[X], shots=shots, seed=2, dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.9])
    inputs = np.array([[0.2], [1.4]])
    values, d_inputs, d_weights = value_and_grads(layer, inputs, np.ones((2, 1)), training=True)

    def exact(x, a):  # the mean of clbit0 * 1 + clbit1 * 2, clbit 0 measuring qubit 1
        probs = Statevector(measured_circuit().remove_final_measurements(inplace=False).assign_parameters(
            {X: x, A: a})).probabilities()
        return sum(p * (((i >> 1) & 1) * 1 + (i & 1) * 2) for i, p in enumerate(probs))

    h = 1e-5
    for row, x in enumerate(inputs[:, 0]):
        assert abs(values[row, 0] - exact(x, 0.9)) < 5 * 1.5 / np.sqrt(shots)
        assert abs(d_inputs[row, 0] - (exact(x + h, 0.9) - exact(x - h, 0.9)) / (2 * h)) < 5 * 3 / np.sqrt(shots)
    grad_a = sum((exact(x, 0.9 + h) - exact(x, 0.9 - h)) / (2 * h) for x in inputs[:, 0])
    assert abs(d_weights[0] - grad_a) < 5 * 12 / np.sqrt(shots)


# ------------------------------------------------------------------------------- mixed precision


def test_mixed_float16_computes_in_float64_inside_and_returns_float16():
    qc = QuantumCircuit(1)
    qc.ry(X, 0)
    qc.rx(A, 0)
    weight = 2.0009766  # between float16 neighbours 2.0 and 2.00195: a float16 read would move it
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X])
        inputs = tf.constant([[0.3], [1.0]], tf.float16)
        layer.build((None, 1))
        layer.quantum_weights.assign([weight])
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
        d_inputs, d_weights = tape.gradient(outputs, [inputs, layer.quantum_weights])
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1),
                                  QiskitLayer(qc, SparsePauliOp("Z"), input_params=[X], shots=100, seed=1)])
        model.compile("adam", "mse")
        history = model.fit(np.ones((8, 1)), np.zeros((8, 1)), batch_size=4, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert outputs.dtype == tf.float16 and layer.quantum_weights.dtype == "float32"
    assert d_inputs.dtype == tf.float16 and d_weights.dtype == tf.float32
    x = np.array([0.3, 1.0], dtype=np.float16).astype(np.float64)
    np.testing.assert_allclose(outputs.numpy()[:, 0], np.cos(x) * np.cos(weight), atol=2e-3)
    # <Z> = cos(x) cos(a): d/da = -sum cos(x) sin(a) at the float32 weight, not at its float16 rounding.
    np.testing.assert_allclose(d_weights.numpy(), [-np.sum(np.cos(x)) * np.sin(np.float32(weight))], atol=2e-6)
    assert np.all(np.isfinite(history.history["loss"]))
