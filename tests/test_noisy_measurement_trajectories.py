"""ProbabilityLayer / SampleLayer of noisy circuits run as trajectories, against the density matrix.

Statistical checks use fixed seeds (deterministic) and thresholds of ~4.5
standard errors; the standard errors come from the trajectories themselves
(a batch of copies of one input row with trajectories=1 gives independent
single-trajectory estimates).
"""

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

from qkeras_hybrid import noise as noise_lib
from qkeras_hybrid.circuits import noisy as noisy_lib
from qkeras_hybrid.layers.measurement import ProbabilityLayer, SampleLayer, StateLayer, frequencies

Q = cirq.LineQubit.range(6)
X = sympy.symbols("x0:2")
W = sympy.symbols("w0:6")
MEASURED = [Q[3], Q[0], Q[4]]
XS = np.array([[0.4, -1.1], [2.3, 0.8]])
WEIGHTS = np.random.default_rng(3).uniform(0, 2 * np.pi, 6)
# Depolarizing after every Ry and CNOT, amplitude damping (a jump channel) in the circuit, readout errors.
NOISE = noise_lib.GateNoise({"ry": cirq.depolarize(0.03), "cx": cirq.depolarize(0.05, n_qubits=2)},
                            readout=[(0.02, 0.06), (0.0, 0.0), (0.01, 0.01), (0.05, 0.1), (0.03, 0.0), (0.0, 0.0)])


def circuit6():
    c = cirq.Circuit([cirq.ry(X[i % 2])(Q[i]) for i in range(6)])
    c += [cirq.ry(W[i])(Q[i]) for i in range(6)]
    c += [cirq.CNOT(Q[i], Q[i + 1]) for i in range(5)]
    c += [cirq.amplitude_damp(0.25)(Q[0]), cirq.amplitude_damp(0.15)(Q[3]), cirq.phase_damp(0.3)(Q[4])]
    c += [cirq.rx(W[i])(Q[i]) for i in range(6)]
    c += [cirq.CZ(Q[0], Q[5]), cirq.generalized_amplitude_damp(0.3, 0.2)(Q[4])]
    return c


def layer(cls=ProbabilityLayer, **kwargs):
    out = cls(circuit6(), qubits=MEASURED, input_symbols=list(X), weight_symbols=list(W), noise=NOISE,
              dtype="float64", **kwargs)
    out.build((None, 2))
    out.quantum_weights.assign(WEIGHTS)
    return out


@pytest.fixture(scope="module")
def exact():
    return layer(simulation="density_matrix")(XS).numpy()


def z_scores(samples, expected):
    """(mean - expected) / standard error of the mean, over axis 0 of `samples`."""
    mean = samples.mean(axis=0)
    error = samples.std(axis=0, ddof=1) / np.sqrt(len(samples))
    return np.where(error > 0, (mean - expected) / np.maximum(error, 1e-300), np.abs(mean - expected) * 1e9)


def test_single_trajectories_are_unbiased(exact):
    """Each trajectory's |psi_t|^2 (readout applied) averages to the density matrix's probabilities."""
    single = layer(simulation="trajectories", trajectories=1, seed=11)
    for row in range(len(XS)):
        draws = single(np.repeat(XS[row:row + 1], 3000, axis=0)).numpy()
        z = z_scores(draws, exact[row])
        assert np.abs(z).max() < 4.5, z
    # Damping makes trajectories unnormalized: rows sum to 1 only on average.
    assert np.abs(draws.sum(axis=1) - 1).max() > 1e-3


def test_layer_mean_over_trajectories_matches_density_matrix(exact):
    spread = layer(simulation="trajectories", trajectories=1, seed=5)(np.repeat(XS, 2000, axis=0)).numpy()
    spread = spread.reshape(2000, len(XS), -1).std(axis=0)  # one trajectory's standard deviation per row
    got = layer(simulation="trajectories", trajectories=4000, seed=7)(XS).numpy()
    z = (got - exact) / np.maximum(spread / np.sqrt(4000), 1e-12)
    assert np.abs(z).max() < 4.5, z
    assert np.abs(got - exact).max() > 1e-6  # an estimate, not the density matrix


def test_gradient_of_the_estimate_matches_its_finite_differences():
    """At a fixed seed the picks do not depend on the angles: the estimate is a smooth function whose
    adjoint gradient must equal its central finite differences."""
    compiled = layer(simulation="trajectories", trajectories=50).compiled
    seed = tf.constant([3, 9], tf.int64)
    values = tf.constant(np.concatenate([XS, np.tile(WEIGHTS, (2, 1))], axis=1))
    upstream = np.random.default_rng(1).normal(size=(2, 8))

    def loss(v):
        return tf.reduce_sum(compiled.probabilities(v, [3, 0, 4], dtype=tf.float64, seed=seed) * upstream)

    with tf.GradientTape() as tape:
        tape.watch(values)
        value = loss(values)
    grad = tape.gradient(value, values).numpy()
    step = 1e-6
    numeric = np.zeros_like(grad)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            shift = np.zeros(values.shape)
            shift[i, j] = step
            numeric[i, j] = (loss(values + shift) - loss(values - shift)).numpy() / (2 * step)
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_gradients_average_to_the_density_matrix_gradient():
    dm = layer(simulation="density_matrix")
    single = layer(simulation="trajectories", trajectories=1, seed=2)
    upstream = tf.constant(np.random.default_rng(4).normal(size=8))

    def input_gradient(lyr, x):
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(lyr(x) * upstream)
        return tape.gradient(loss, x).numpy()

    expected = input_gradient(dm, XS[:1])[0]
    draws = input_gradient(single, np.repeat(XS[:1], 3000, axis=0))  # one trajectory's gradient per row
    z = z_scores(draws, expected)
    assert np.abs(z).max() < 4.5, (z, draws.mean(axis=0), expected)


def test_samples_one_trajectory_per_shot_chi_square(exact):
    """shots <= trajectories: independent shots, each from its own quantum-jump trajectory."""
    bits = layer(SampleLayer, shots=4000, simulation="trajectories", trajectories=4000, seed=8)(XS).numpy()
    assert bits.shape == (2, 4000, 3) and set(np.unique(bits)) <= {0, 1}
    freq = frequencies(bits, tf.float64).numpy()
    chi2 = ((freq - exact) ** 2 / exact * 4000).sum(axis=1)
    assert (chi2 < 30).all(), chi2  # 7 degrees of freedom: P(chi2 > 30) ~ 1e-4


def test_samples_several_per_trajectory_are_unbiased(exact):
    """shots > trajectories: shot s comes from trajectory s % T; the per-trajectory frequencies
    average to the exact probabilities (their spread, not the multinomial one, sets the error)."""
    shots, trajectories = 6000, 600
    bits = layer(SampleLayer, shots=shots, simulation="trajectories", trajectories=trajectories, seed=9)(XS).numpy()
    index = bits @ np.array([4, 2, 1])  # [B, shots], first measured qubit most significant
    for row in range(len(XS)):
        per_trajectory = np.stack([np.bincount(index[row, t::trajectories], minlength=8) / 10
                                   for t in range(trajectories)])
        z = z_scores(per_trajectory, exact[row])
        assert np.abs(z).max() < 4.5, z


def test_shot_s_comes_from_trajectory_s_mod_t():
    """bit_flip(0.5) makes each trajectory X or I for good: a trajectory's shots all agree."""
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.bit_flip(0.5)(q[0]), cirq.I(q[1]))
    bits = SampleLayer(circuit, shots=10, qubits=[q[0]], simulation="trajectories", trajectories=4,
                       seed=1)(np.zeros((64, 0))).numpy()[..., 0]
    np.testing.assert_array_equal(bits, bits[:, np.arange(10) % 4])
    assert 0.3 < bits.mean() < 0.7
    # One trajectory per shot when shots <= trajectories: shots of a row vary.
    bits = SampleLayer(circuit, shots=10, qubits=[q[0]], simulation="trajectories", trajectories=10,
                       seed=1)(np.zeros((64, 0))).numpy()[..., 0]
    assert (bits.min(axis=1) != bits.max(axis=1)).mean() > 0.9


def test_readout_errors_only_run_one_exact_trajectory():
    q = cirq.LineQubit.range(2)
    x = sympy.Symbol("x")
    circuit = cirq.Circuit(cirq.ry(x)(q[0]), cirq.CNOT(*q))
    readout = noise_lib.GateNoise(readout=[(0.1, 0.2), (0.05, 0.0)])
    kwargs = dict(input_symbols=[x], noise=readout, dtype="float64")
    dm = ProbabilityLayer(circuit, simulation="density_matrix", **kwargs)(XS[:, :1]).numpy()
    traj = ProbabilityLayer(circuit, simulation="trajectories", **kwargs)
    np.testing.assert_allclose(traj(XS[:, :1]).numpy(), dm, atol=1e-12)
    sampler = SampleLayer(circuit, shots=20000, simulation="trajectories", seed=3, **kwargs)
    freq = frequencies(sampler(XS[:, :1]), tf.float64).numpy()
    chi2 = ((freq - dm) ** 2 / dm * 20000).sum(axis=1)
    assert (chi2 < 25).all(), chi2


def test_14_qubit_noisy_sample_layer_runs_trajectories():
    """A 28-qubit density matrix is out of reach; "auto" runs trajectories. The CZ ladder entangles the
    state but keeps each qubit's Z populations those of its own ry + damping + depolarizing channel."""
    q = cirq.LineQubit.range(14)
    thetas = np.linspace(0.3, 2.8, 14)
    circuit = cirq.Circuit([cirq.ry(t)(qi) for t, qi in zip(thetas, q)])
    circuit += [cirq.CZ(q[i], q[i + 1]) for i in range(13)]
    circuit += [cirq.amplitude_damp(0.2)(qi) for qi in q]
    noise = noise_lib.GateNoise({"cz": cirq.depolarize(0.02, n_qubits=2)}, readout=(0.03, 0.08))
    sampler = SampleLayer(circuit, shots=500, noise=noise, seed=0)
    assert sampler.compiled.noisy.simulation == "trajectories" and sampler.simulation == "auto"
    bits = sampler(np.zeros((2, 0))).numpy()
    assert bits.shape == (2, 500, 14)
    # Reference per qubit: Cirq's density matrix of ry, then the depolarizing of its CZs, then damping.
    sim = cirq.DensityMatrixSimulator(dtype=np.complex128)
    expected = []
    for i, t in enumerate(thetas):
        one = cirq.LineQubit(0)
        c = cirq.Circuit(cirq.ry(t)(one))
        # A 2-qubit depolarizing(p) leaves this qubit's populations as a 1-qubit one of 4p/5 would.
        c += [cirq.depolarize(0.02 * 4 / 5)(one)] * (1 if i in (0, 13) else 2)
        c += cirq.amplitude_damp(0.2)(one)
        p1 = np.real(sim.simulate(c).final_density_matrix[1, 1])
        expected.append(0.03 * (1 - p1) + (1 - 0.08) * p1)
    # Default trajectories (100): shot s is from trajectory s % 100, so average per trajectory first.
    per_trajectory = bits.reshape(2, 5, 100, 14).mean(axis=1).reshape(200, 14)
    z = z_scores(per_trajectory, np.array(expected))
    assert np.abs(z).max() < 4.5, z


def test_14_qubit_probabilities_with_gradient():
    q = cirq.LineQubit.range(14)
    w = sympy.Symbol("w")
    circuit = cirq.Circuit([cirq.ry(w)(qi) for qi in q], [cirq.CNOT(q[i], q[i + 1]) for i in range(13)],
                           cirq.amplitude_damp(0.3)(q[13]))
    lyr = ProbabilityLayer(circuit, qubits=[q[13]], noise=cirq.ConstantQubitNoiseModel(cirq.depolarize(0.01)),
                           trajectories=20, seed=1)
    with tf.GradientTape() as tape:
        p = lyr(np.zeros((2, 0)))
        loss = tf.reduce_sum(p[:, 1])
    assert p.shape == (2, 2) and np.isfinite(p.numpy()).all()
    grad = tape.gradient(loss, lyr.quantum_weights)
    assert grad is not None and np.isfinite(grad.numpy()).all()


def test_seeds_advance_and_repeat():
    a, b = layer(simulation="trajectories", trajectories=5, seed=4), layer(simulation="trajectories", trajectories=5,
                                                                           seed=4)
    first, second = a(XS).numpy(), a(XS).numpy()
    assert np.abs(first - second).max() > 1e-6
    np.testing.assert_array_equal(b(XS).numpy(), first)
    sampler = layer(SampleLayer, shots=50, simulation="trajectories", trajectories=10, seed=4)
    run = tf.function(sampler.__call__)
    assert np.any(run(XS).numpy() != run(XS).numpy())


def test_bad_arguments():
    for bad in (0, -3, 2.5, True, "100"):
        with pytest.raises(ValueError, match=r"ProbabilityLayer: trajectories must be None .* got"):
            layer(simulation="trajectories", trajectories=bad)
        with pytest.raises(ValueError, match=r"SampleLayer: trajectories must be"):
            layer(SampleLayer, shots=3, trajectories=bad)
    for bad in ("exact", "density", None, 1):
        with pytest.raises(ValueError, match=r"ProbabilityLayer: simulation must be one of .*'trajectories'"):
            layer(simulation=bad)
        with pytest.raises(ValueError, match=r"SampleLayer: simulation must be one of"):
            layer(SampleLayer, shots=3, simulation=bad)
    with pytest.raises(ValueError, match="StateLayer: simulation= and trajectories= are for noisy circuits"):
        StateLayer(cirq.Circuit(cirq.H(Q[0])), simulation="trajectories")
    with pytest.raises(ValueError, match="StateLayer: simulation= and trajectories= are for noisy circuits"):
        StateLayer(cirq.Circuit(cirq.H(Q[0])), trajectories=10)


def test_config_round_trip_and_keras_file(tmp_path):
    layers = [layer(simulation="trajectories", trajectories=7, seed=3, name="p"),
              layer(SampleLayer, shots=5, simulation="density_matrix", seed=1, name="s"),
              layer(SampleLayer, shots=5, trajectories=9, name="s2")]
    for lyr in layers:
        config = lyr.get_config()
        assert (config["simulation"], config["trajectories"]) == (lyr.simulation, lyr.trajectories)
        clone = type(lyr).from_config(config)
        assert clone.get_config() == config
        restored = keras.layers.deserialize(keras.layers.serialize(lyr))
        assert type(restored) is type(lyr) and restored.get_config() == config
        assert type(restored.compiled.noisy) is noisy_lib.NoisyProgram
        assert restored.compiled.noisy.simulation == lyr.compiled.noisy.simulation
    # A config saved before simulation= existed ran noisy measurements on the density matrix.
    old = {k: v for k, v in layers[2].get_config().items() if k not in ("simulation", "trajectories")}
    assert SampleLayer.from_config(old).simulation == "density_matrix"

    inputs = keras.Input((2,))
    sampler = SampleLayer(cirq.Circuit(cirq.rx(X[0])(Q[0]), cirq.H(Q[1])), shots=40, input_symbols=[X[0]], seed=2)
    model = keras.Model(inputs, [layer(simulation="trajectories", trajectories=6, seed=12)(inputs),
                                 sampler(inputs[:, :1])])
    model(XS)  # the seed states advance: the file must keep them (Keras saves no SeedGenerator state)
    path = str(tmp_path / "trajectories.keras")
    model.save(path)
    expected = [o.numpy() for o in model(XS)]  # a reloaded model continues the sequences
    reloaded = keras.saving.load_model(path)
    restored = next(lyr for lyr in reloaded.layers if isinstance(lyr, ProbabilityLayer))
    assert (restored.simulation, restored.trajectories) == ("trajectories", 6)
    got = [o.numpy() for o in reloaded(XS)]
    np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
    np.testing.assert_array_equal(got[1], expected[1])


def test_savedmodel_export_continues_the_seed_sequence(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, [layer(simulation="trajectories", trajectories=4, seed=1)(inputs),
                                 layer(SampleLayer, shots=6, simulation="trajectories", trajectories=3,
                                       seed=2)(inputs)])
    model(XS)
    model.export(str(tmp_path / "exported"), verbose=False)
    expected = [[o.numpy() for o in model(XS)] for _ in range(2)]
    served = tf.saved_model.load(str(tmp_path / "exported"))
    for outputs in expected:
        got = [o.numpy() for o in served.serve(XS)]
        np.testing.assert_allclose(got[0], outputs[0], atol=1e-12)
        np.testing.assert_array_equal(got[1], outputs[1])
