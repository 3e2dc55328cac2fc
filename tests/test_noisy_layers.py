"""Noisy layers (issue 15) against Cirq's and Aer's density-matrix simulators."""

import json
import os
import subprocess
import sys
import textwrap

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid as qh
from qkeras_hybrid import noise as noise_lib
from qkeras_hybrid.layers.measurement import frequencies

QUBITS = cirq.LineQubit.range(3)
X = sympy.symbols("x0:3")
W = sympy.symbols("w0:6")


def hea(channels=()):
    """Ry encoding, two [Ry, CNOT chain] layers, a phase gate; `channels` after the first layer."""
    q = QUBITS
    c = cirq.Circuit([cirq.ry(X[i])(q[i]) for i in range(3)])
    c += [cirq.ry(W[i])(q[i]) for i in range(3)]
    c += [cirq.CNOT(q[0], q[1]), cirq.CNOT(q[1], q[2])]
    c += list(channels)
    c += [cirq.rx(W[3 + i])(q[i]) for i in range(3)]
    c += [cirq.CZ(q[0], q[2]), cirq.S(q[1])]
    return c


OBSERVABLES = [cirq.Z(QUBITS[0]), cirq.X(QUBITS[1]) * cirq.Z(QUBITS[2]), 0.5 * cirq.Y(QUBITS[2]) + cirq.Z(QUBITS[1])]
IN_CIRCUIT = [cirq.amplitude_damp(0.15)(QUBITS[0]), cirq.depolarize(0.05, n_qubits=2)(QUBITS[1], QUBITS[2]),
              cirq.phase_damp(0.2)(QUBITS[2])]


def reference(circuit, inputs, weights, observables=OBSERVABLES):
    """Cirq's DensityMatrixSimulator (float64): [B, O]."""
    sim = cirq.DensityMatrixSimulator(dtype=np.complex128)
    qmap = {q: i for i, q in enumerate(QUBITS)}
    out = []
    for row in inputs:
        resolver = {**{str(s): v for s, v in zip(X, row)}, **{str(s): v for s, v in zip(W, weights)}}
        rho = sim.simulate(circuit, resolver, qubit_order=QUBITS).final_density_matrix
        out.append([np.real(cirq.PauliSum.wrap(o).expectation_from_density_matrix(rho, qmap)) for o in observables])
    return np.array(out)


def make_layer(circuit, dtype="float32", **kwargs):
    layer = qh.layers.QuantumLayer(circuit, OBSERVABLES, input_symbols=list(X), weight_symbols=list(W),
                                   dtype=dtype, **kwargs)
    layer.build((None, 3))
    return layer


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    return rng.uniform(-np.pi, np.pi, (4, 3)), rng.uniform(0, 2 * np.pi, 6)


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("float64", 1e-10)])
def test_channels_in_circuit_match_cirq(data, dtype, atol):
    inputs, weights = data
    layer = make_layer(hea(IN_CIRCUIT), dtype=dtype)
    layer.quantum_weights.assign(weights)
    got = layer(inputs).numpy()
    np.testing.assert_allclose(got, reference(hea(IN_CIRCUIT), inputs, weights), atol=atol)


def test_cirq_noise_model_matches_with_noise(data):
    inputs, weights = data
    model = cirq.ConstantQubitNoiseModel(cirq.depolarize(0.03))
    layer = make_layer(hea(), dtype="float64", noise=model)
    layer.quantum_weights.assign(weights)
    expected = reference(hea().with_noise(model), inputs, weights)
    np.testing.assert_allclose(layer(inputs).numpy(), expected, atol=1e-10)
    # and the noise matters: the ideal circuit differs
    assert np.abs(expected - reference(hea(), inputs, weights)).max() > 1e-3


def test_gate_table_noise(data):
    inputs, weights = data
    table = {"ry": cirq.bit_flip(0.02), "cx": cirq.depolarize(0.04, n_qubits=2)}
    layer = make_layer(hea(), dtype="float64", noise=table)
    layer.quantum_weights.assign(weights)
    noisy = cirq.Circuit()
    for op in hea().all_operations():
        noisy.append(op, strategy=cirq.InsertStrategy.NEW)
        if isinstance(op.gate, cirq.Ry):
            noisy.append(cirq.bit_flip(0.02)(*op.qubits), strategy=cirq.InsertStrategy.NEW)
        if op.gate == cirq.CNOT:
            noisy.append(cirq.depolarize(0.04, n_qubits=2)(*op.qubits), strategy=cirq.InsertStrategy.NEW)
    np.testing.assert_allclose(layer(inputs).numpy(), reference(noisy, inputs, weights), atol=1e-10)


def test_density_matrix_gradients_match_finite_differences(data):
    inputs, weights = data
    layer = make_layer(hea(IN_CIRCUIT), dtype="float64", noise=cirq.ConstantQubitNoiseModel(cirq.bit_flip(0.05)))
    layer.quantum_weights.assign(weights)
    x = tf.constant(inputs)
    mix = tf.constant(np.random.default_rng(3).normal(size=(4, 3)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * mix)
    gx, gw = tape.gradient(loss, [x, layer.quantum_weights])

    def f(xv, wv):
        layer.quantum_weights.assign(wv)
        return float(tf.reduce_sum(layer(tf.constant(xv)) * mix))

    eps = 1e-6
    num_w = np.array([(f(inputs, weights + eps * e) - f(inputs, weights - eps * e)) / (2 * eps)
                      for e in np.eye(6)])
    num_x = np.zeros_like(inputs)
    for idx in np.ndindex(*inputs.shape):
        d = np.zeros_like(inputs)
        d[idx] = eps
        num_x[idx] = (f(inputs + d, weights) - f(inputs - d, weights)) / (2 * eps)
    np.testing.assert_allclose(gw.numpy(), num_w, atol=1e-7)
    np.testing.assert_allclose(gx.numpy(), num_x, atol=1e-7)


def test_trajectories_converge_to_the_density_matrix(data):
    inputs, weights = data
    circuit = hea(IN_CIRCUIT)
    exact = make_layer(circuit, dtype="float64", simulation="density_matrix")
    traj = make_layer(circuit, dtype="float64", simulation="trajectories", trajectories=4000, seed=11)
    for layer in (exact, traj):
        layer.quantum_weights.assign(weights)
    x = tf.constant(inputs)
    mix = tf.constant(np.random.default_rng(5).normal(size=(4, 3)))

    def value_and_grad(layer):
        with tf.GradientTape() as tape:
            out = layer(x)
            loss = tf.reduce_sum(out * mix)
        return out.numpy(), tape.gradient(loss, layer.quantum_weights).numpy()

    e_val, e_grad = value_and_grad(exact)
    t_vals, t_grads = zip(*[value_and_grad(traj) for _ in range(3)])
    t_val, t_grad = np.mean(t_vals, axis=0), np.mean(t_grads, axis=0)
    # Observables are bounded by 1.5: the standard error of a mean of 12000 trajectories is below ~0.02.
    assert np.abs(t_val - e_val).max() < 0.06
    assert np.abs(t_grad - e_grad).max() < 0.25
    # Different calls draw different picks (the seed advances); the estimates differ.
    assert np.abs(t_vals[0] - t_vals[1]).max() > 0


def test_trajectories_are_unbiased_statistically(data):
    """z-scores of trajectory means against the exact values: centered, unit spread."""
    inputs, weights = data
    circuit = hea(IN_CIRCUIT)
    exact = make_layer(circuit, dtype="float64", simulation="density_matrix")
    exact.quantum_weights.assign(weights)
    e = exact(inputs).numpy()
    runs = []
    for seed in range(20):
        layer = make_layer(circuit, dtype="float64", simulation="trajectories", trajectories=200, seed=seed)
        layer.quantum_weights.assign(weights)
        runs.append(layer(inputs).numpy())
    runs = np.array(runs)
    spread = runs.std(axis=0, ddof=1)
    z = (runs.mean(axis=0) - e) / (spread / np.sqrt(len(runs)) + 1e-12)
    assert abs(z.mean()) < 1.0
    assert np.sqrt(np.mean(z**2)) < 2.5


def test_sampled_expectations_with_noise_and_readout(data):
    inputs, weights = data
    spec = noise_lib.GateNoise({"cx": cirq.depolarize(0.05, n_qubits=2)}, readout=(0.02, 0.05))
    exact = make_layer(hea(), dtype="float64", noise=spec)
    exact.quantum_weights.assign(weights)
    sampled = make_layer(hea(), dtype="float64", noise=spec, shots=4000, seed=3)
    sampled.quantum_weights.assign(weights)
    e = exact(inputs).numpy()
    s = np.mean([sampled(inputs).numpy() for _ in range(4)], axis=0)
    # Readout errors shrink <Z>-type values towards the flip bias: they must show in the samples.
    p01, p10 = 0.02, 0.05
    z0 = e[:, 0] * (1 - p01 - p10) + (p10 - p01)  # <Z_0> through the readout confusion
    # 16000 shots: standard error <= 0.008.
    assert np.abs(s[:, 0] - z0).max() < 0.035
    # The other observables (X/Y bases) see the flips too: within 4 sigma of the same confusion.
    assert np.abs(s - e).max() < 0.2


def test_shift_rule_gradient_with_noise_averages_to_the_exact_one(data):
    inputs, weights = data
    model = cirq.ConstantQubitNoiseModel(cirq.depolarize(0.02))
    exact = make_layer(hea(), dtype="float64", noise=model)
    sampled = make_layer(hea(), dtype="float64", noise=model, shots=2000, seed=1)
    for layer in (exact, sampled):
        layer.quantum_weights.assign(weights)
    x = tf.constant(inputs[:2])

    def grad(layer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x))
        return tape.gradient(loss, layer.quantum_weights).numpy()

    g = grad(exact)
    estimates = np.array([grad(sampled) for _ in range(8)])
    assert np.abs(estimates.mean(axis=0) - g).max() < 0.12


def test_probability_and_sample_layers_with_noise():
    q = QUBITS
    circuit = cirq.Circuit(cirq.ry(X[0])(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(W[0])(q[2]),
                           cirq.amplitude_damp(0.3)(q[1]))
    spec = noise_lib.GateNoise({"cx": cirq.depolarize(0.1, n_qubits=2)}, readout=[(0.0, 0.0), (0.1, 0.2), (0.0, 0.0)])
    layer = qh.layers.ProbabilityLayer(circuit, qubits=[q[1], q[0]], input_symbols=[X[0]], noise=spec,
                                       dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.7])
    x = np.array([[0.3], [2.1]])
    got = layer(x).numpy()
    # Reference: Cirq's density matrix, marginal on (q1, q0), then q1's readout confusion.
    noisy = cirq.Circuit(cirq.ry(X[0])(q[0]), cirq.CNOT(q[0], q[1]), cirq.depolarize(0.1, n_qubits=2)(q[0], q[1]),
                         cirq.ry(W[0])(q[2]), cirq.amplitude_damp(0.3)(q[1]))
    sim = cirq.DensityMatrixSimulator(dtype=np.complex128)
    expected = []
    for (v,) in x:
        rho = sim.simulate(noisy, {"x0": v, "w0": 0.7}, qubit_order=[q[1], q[0], q[2]]).final_density_matrix
        p = np.real(np.diag(rho)).reshape(2, 2, 2).sum(axis=2)  # [q1, q0]
        confusion = np.array([[0.9, 0.2], [0.1, 0.8]])
        expected.append(np.einsum("ji,ik->jk", confusion, p).reshape(4))
    np.testing.assert_allclose(got, np.array(expected), atol=1e-10)
    # Exact noisy probabilities are differentiable.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x)[:, 1])
    assert tape.gradient(loss, layer.quantum_weights) is not None

    sampler = qh.layers.SampleLayer(circuit, shots=20000, qubits=[q[1], q[0]], input_symbols=[X[0]], noise=spec,
                                    seed=4)
    sampler.build((None, 1))
    sampler.quantum_weights.assign([0.7])
    bits = sampler(x).numpy()
    assert bits.shape == (2, 20000, 2)
    freq = frequencies(bits, tf.float64).numpy()
    # Chi-square against the exact noisy probabilities (3 degrees of freedom per row).
    chi2 = ((freq - expected) ** 2 / np.maximum(np.array(expected), 1e-9) * 20000).sum(axis=1)
    assert (chi2 < 25).all(), chi2


def test_state_layer_rejects_channels():
    circuit = cirq.Circuit(cirq.ry(X[0])(QUBITS[0]), cirq.depolarize(0.1)(QUBITS[0]))
    with pytest.raises(ValueError, match="no state vector"):
        qh.layers.StateLayer(circuit, input_symbols=[X[0]])


def test_bad_noise_arguments():
    with pytest.raises(ValueError, match="simulation"):
        make_layer(hea(IN_CIRCUIT), simulation="exact")
    with pytest.raises(ValueError, match="trajectories"):
        make_layer(hea(IN_CIRCUIT), trajectories=0)
    with pytest.raises(ValueError, match="backend='native'"):
        qh.layers.QuantumLayer(hea(), OBSERVABLES, input_symbols=list(X), backend="tfq",
                               noise=cirq.depolarize(0.01))
    with pytest.raises(ValueError, match="shots with noise"):
        make_layer(hea(IN_CIRCUIT), simulation="trajectories", shots=100)
    with pytest.raises(TypeError, match="noise must be"):
        make_layer(hea(), noise="depolarizing")


def test_qiskit_noise_model_matches_aer_density_matrix():
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, ReadoutError, amplitude_damping_error, depolarizing_error

    theta, phi = Parameter("theta"), Parameter("phi")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.rx(phi, 1)
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx"])
    model.add_all_qubit_quantum_error(amplitude_damping_error(0.1), ["ry", "rx"])
    model.add_readout_error(ReadoutError([[0.9, 0.1], [0.2, 0.8]]), [0])
    obs = [SparsePauliOp("IZ"), SparsePauliOp("ZX")]
    layer = qh.layers.QuantumLayer(qc, obs, input_symbols=["theta"], noise=model, dtype="float64")
    layer.build((None, 1))
    layer.quantum_weights.assign([0.4])
    got = layer(np.array([[1.1]])).numpy()[0]
    bound = qc.assign_parameters({theta: 1.1, phi: 0.4})
    bound.save_density_matrix()
    rho = AerSimulator(method="density_matrix", noise_model=model).run(bound).result().data()["density_matrix"]
    expected = [np.real(rho.expectation_value(o)) for o in obs]
    np.testing.assert_allclose(got, expected, atol=1e-10)


SAVE_SCRIPT = textwrap.dedent(
    """
    import sys, json, numpy as np, keras
    import qkeras_hybrid
    path, export = sys.argv[1], sys.argv[2]
    x = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.4]])
    if path.endswith(".keras"):
        model = keras.saving.load_model(path)
        print(json.dumps(model(x).numpy().tolist()))
    else:
        import tensorflow as tf
        reloaded = tf.saved_model.load(path)
        print(json.dumps(reloaded.serve(tf.constant(x, tf.float32)).numpy().tolist()))
    """
)


def test_noise_survives_keras_save_and_export(tmp_path):
    model_noise = cirq.ConstantQubitNoiseModel(cirq.depolarize(0.04))
    inputs = keras.Input((3,))
    layer = qh.layers.QuantumLayer(hea(IN_CIRCUIT), OBSERVABLES, input_symbols=list(X), weight_symbols=list(W),
                                   noise=model_noise)
    model = keras.Model(inputs, layer(inputs))
    x = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.4]])
    expected = model(x).numpy()
    ideal = make_layer(hea(), dtype="float32")
    ideal.quantum_weights.assign(layer.quantum_weights.numpy())
    assert np.abs(ideal(x).numpy() - expected).max() > 1e-3  # the noise changes the values
    config = layer.get_config()
    json.dumps(config)
    assert config["noise"] is not None and config["simulation"] == "auto"
    keras_path = str(tmp_path / "noisy.keras")
    model.save(keras_path)
    export_path = str(tmp_path / "exported")
    model.export(export_path)
    script = tmp_path / "load.py"
    script.write_text(SAVE_SCRIPT)
    for path in (keras_path, export_path):
        out = subprocess.run([sys.executable, str(script), path, "x"], capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        got = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_quantum_conv2d_with_noise_matches_cirq():
    layer = qh.layers.QuantumConv2D(filters=1, kernel_size=2, depth=1, noise=cirq.ConstantQubitNoiseModel(
        cirq.depolarize(0.05)), dtype="float64")
    images = np.random.default_rng(2).uniform(0, 1, (1, 2, 2, 1))
    out = layer(images).numpy()
    ideal = qh.layers.QuantumConv2D(filters=1, kernel_size=2, depth=1, dtype="float64")
    ideal(images)
    ideal.quantum_weights.assign(layer.quantum_weights.numpy())
    # Reference: the layer's own circuit with the noise model, on Cirq's density-matrix simulator.
    compiled = layer.compiled
    symbols = compiled.symbol_names
    values = dict(zip(symbols, list(images.reshape(-1)) + list(layer.quantum_weights.numpy().reshape(-1))))
    noisy = layer.circuit.with_noise(cirq.ConstantQubitNoiseModel(cirq.depolarize(0.05)))
    qubits = sorted(layer.circuit.all_qubits())
    rho = cirq.DensityMatrixSimulator(dtype=np.complex128).simulate(noisy, values,
                                                                    qubit_order=qubits).final_density_matrix
    zzzz = cirq.PauliString({q: cirq.Z for q in qubits})
    expected = np.real(zzzz.expectation_from_density_matrix(rho, {q: i for i, q in enumerate(qubits)}))
    np.testing.assert_allclose(out.reshape(-1)[0], expected, atol=1e-10)
    assert abs(ideal(images).numpy().reshape(-1)[0] - expected) > 1e-4


def test_measurement_layer_noise_and_readout_survive_keras_save(tmp_path):
    q = QUBITS
    circuit = cirq.Circuit(cirq.ry(X[0])(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(W[0])(q[1]))
    spec = noise_lib.GateNoise({"cx": cirq.depolarize(0.1, n_qubits=2)}, readout=(0.05, 0.1))
    inputs = keras.Input((1,))
    layer = qh.layers.ProbabilityLayer(circuit, input_symbols=[X[0]], noise=spec)
    model = keras.Model(inputs, layer(inputs))
    x = np.array([[0.3], [2.0]])
    expected = model(x).numpy()
    ideal = qh.layers.ProbabilityLayer(circuit, input_symbols=[X[0]])
    ideal(x)
    ideal.quantum_weights.assign(layer.quantum_weights.numpy())
    assert np.abs(ideal(x).numpy() - expected).max() > 1e-3
    path = str(tmp_path / "probabilities.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(x).numpy(), expected, atol=1e-6)
    assert reloaded.layers[-1].noise == layer.noise
