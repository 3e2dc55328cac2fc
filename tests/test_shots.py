"""QuantumLayer(shots=...): sampled expectations, seeds and the three gradient methods."""

import cirq
import keras
import numpy as np
import pytest
import sympy
import tensorflow as tf

from conftest import random_cirq_circuit, random_pauli_sum, run_fresh_python
from qkeras_hybrid import differentiators, ops
from qkeras_hybrid.circuits.compiled import shift_rule
from qkeras_hybrid.layers import QuantumLayer
from qkeras_hybrid.ops import measure


@pytest.fixture
def exact_sampler(monkeypatch):
    """sampled_expectation replaced by the exact expectation, counting calls: shift rules must then be exact."""
    calls = []

    def exact(program, angles, shots, seed):
        calls.append(angles.shape)
        return ops.expectation(*program, angles)

    monkeypatch.setattr(measure, "sampled_expectation", exact)
    return calls


Q = cirq.LineQubit.range(2)
X, A, B = sympy.symbols("x a b")


def circuit():
    # b appears twice and as 2b: the chain rule over per-gate slots.
    return cirq.Circuit(cirq.rx(X)(Q[0]), cirq.ry(A)(Q[1]), cirq.CNOT(*Q), cirq.rz(B)(Q[0]),
                        cirq.rx(2 * B + 0.1)(Q[1]), cirq.ry(A)(Q[0]))


OBS = [cirq.Z(Q[0]), cirq.X(Q[1]), cirq.Z(Q[0]) * cirq.Y(Q[1])]
XS = np.array([[0.3], [-1.2], [2.0]])


def pair(dtype="float64", **kwargs):
    """A sampled layer and an exact twin with the same weights."""
    noisy = QuantumLayer(circuit(), OBS, input_symbols=[X], dtype=dtype, **kwargs)
    exact = QuantumLayer(circuit(), OBS, input_symbols=[X], dtype=dtype)
    for layer in (noisy, exact):
        layer.build((None, 1))
        layer.quantum_weights.assign([0.7, -0.4])
    return noisy, exact


def grads(layer, x, upstream):
    x = tf.constant(x, layer.compute_dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.cast(upstream, layer.compute_dtype) * layer(x))
    dx, dw = tape.gradient(loss, [x, layer.quantum_weights])
    return np.concatenate([dx.numpy().ravel(), dw.numpy().ravel()])


UPSTREAM = np.array([[1.0, -0.5, 0.3], [0.2, 0.8, -1.0], [0.5, 0.5, 0.5]])


@pytest.mark.parametrize("seed_", [0, 1, 2])
def test_shift_rules_are_exact_on_random_circuits(exact_sampler, seed_):
    rng = np.random.default_rng(seed_)
    symbols = list(sympy.symbols("s0:4"))
    _, bare, qubits = random_cirq_circuit(rng, 3, 12, symbols, measure=False)
    observables = [random_pauli_sum(rng, qubits) for _ in range(2)]
    present = [s for s in symbols if s in cirq.parameter_symbols(bare)]
    if not present:
        pytest.skip("no symbols drawn")
    noisy = QuantumLayer(bare, observables, input_symbols=present[:1], shots=10, seed=0, dtype="float64")
    exact = QuantumLayer(bare, observables, input_symbols=present[:1], dtype="float64")
    x = rng.uniform(-2, 2, size=(4, 1))
    for layer in (noisy, exact):
        layer.build((None, 1))
        layer.quantum_weights.assign(np.linspace(-1.0, 1.5, len(present) - 1))
    upstream = rng.normal(size=(4, 2))
    exact_sampler.clear()
    np.testing.assert_allclose(grads(noisy, x, upstream), grads(exact, x, upstream), atol=1e-9)
    assert len(exact_sampler) == 2  # the forward, and ONE call for all shifted sets of the batch


def test_generalized_shift_rule_for_three_eigenvalues(exact_sampler):
    t = sympy.Symbol("t")
    c = cirq.Circuit(cirq.H(Q[0]), cirq.ry(0.4)(Q[1]), (cirq.ISWAP ** t)(*Q), cirq.FSimGate(t, 0.3)(*Q))
    noisy = QuantumLayer(c, [cirq.X(Q[0]) * cirq.Y(Q[1]), cirq.Z(Q[1])], input_symbols=[t], shots=5,
                         dtype="float64")
    exact = QuantumLayer(c, [cirq.X(Q[0]) * cirq.Y(Q[1]), cirq.Z(Q[1])], input_symbols=[t], dtype="float64")
    x = np.array([[0.37], [1.9]])
    up = np.ones((2, 2))
    np.testing.assert_allclose(grads(noisy, x, up), grads(exact, x, up), atol=1e-9)
    shifts, _ = shift_rule([0.0, 0.5, -0.5])
    assert len(shifts) == 2


def test_shift_rule_formula():
    rng = np.random.default_rng(3)
    for eigs in ([-0.5, 0.5], [0.0, 1.0], [0.0, 0.5, -0.5], [0, 1, 2, 3], [0, 1, 3], [0.0, 1.0, np.sqrt(2)]):
        shifts, coefficients = shift_rule(eigs)
        e = np.array(eigs)
        freqs = np.unique(np.abs(e[:, None] - e[None]))
        freqs = freqs[freqs > 0]
        amp, phase = rng.normal(size=len(freqs)), rng.uniform(0, 6, len(freqs))

        def f(a):
            return np.sum(amp * np.cos(freqs * a + phase))

        a = 0.37
        estimate = sum(c * (f(a + s) - f(a - s)) for s, c in zip(shifts, coefficients))
        np.testing.assert_allclose(estimate, np.sum(-amp * freqs * np.sin(freqs * a + phase)), atol=1e-9)


def test_adjoint_differentiator_gives_the_exact_gradient():
    noisy, exact = pair(shots=100, seed=1, differentiator="adjoint")
    np.testing.assert_allclose(grads(noisy, XS, UPSTREAM), grads(exact, XS, UPSTREAM), atol=1e-10)


def test_finite_difference_step(exact_sampler):
    for step, tol in ((0.01, 1e-4), (0.2, 6e-2)):
        noisy, exact = pair(shots=10, differentiator=differentiators.FiniteDifference(step))
        error = np.abs(grads(noisy, XS, UPSTREAM) - grads(exact, XS, UPSTREAM)).max()
        assert error < tol
    assert error > 1e-4  # a coarse step is not exact: the step is used
    noisy, exact = pair(shots=10, differentiator="finite_difference")
    np.testing.assert_allclose(grads(noisy, XS, UPSTREAM), grads(exact, XS, UPSTREAM), atol=1e-4)


def test_sampled_means_within_standard_errors():
    shots, runs = 200, 300
    noisy, exact = pair(shots=shots, seed=5)
    truth = exact(XS).numpy()
    draws = np.stack([noisy(XS).numpy() for _ in range(runs)])
    sigma = np.sqrt((1 - truth**2) / shots)  # one Pauli string per observable: +-1 outcomes
    z = (draws.mean(0) - truth) / (sigma / np.sqrt(runs))
    assert np.abs(z).max() < 4.5
    np.testing.assert_allclose(draws.std(0), sigma, rtol=0.2, atol=1e-3)
    assert not np.allclose(draws[0], draws[1])


def test_parameter_shift_with_shots_averages_to_the_exact_gradient():
    noisy, exact = pair(shots=500, seed=9)
    truth = grads(exact, XS, UPSTREAM)
    samples = np.stack([grads(noisy, XS, UPSTREAM) for _ in range(150)])
    mean, stderr = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
    assert np.all(stderr > 0)
    assert np.abs((mean - truth) / stderr).max() < 4.5
    np.testing.assert_allclose(mean, truth, atol=0.05)


def test_same_seed_same_sequence_other_seed_other():
    a, _ = pair(shots=50, seed=3)
    b, _ = pair(shots=50, seed=3)
    c, _ = pair(shots=50, seed=4)
    first = a(XS).numpy()
    np.testing.assert_array_equal(b(XS).numpy(), first)
    np.testing.assert_array_equal(tf.function(a)(XS).numpy(), tf.function(b)(XS).numpy())
    assert not np.array_equal(c(XS).numpy(), first)
    assert not np.array_equal(a(XS).numpy(), first)


def test_fit_with_shots():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((1,)), QuantumLayer(circuit(), OBS[:1], input_symbols=[X], shots=300,
                                                              seed=2)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    x = np.linspace(-1, 1, 16)[:, None].astype(np.float32)
    y = np.full((16, 1), -0.8, np.float32)
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=25, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before / 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="shots must be None .* or a positive integer"):
        QuantumLayer(circuit(), OBS, input_symbols=[X], shots=0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        QuantumLayer(circuit(), OBS, input_symbols=[X], shots=10, seed=1.5)
    with pytest.raises(ValueError, match="differentiator must be one of"):
        QuantumLayer(circuit(), OBS, input_symbols=[X], shots=10, differentiator="magic")
    with pytest.raises(ValueError, match="backend='native'"):
        QuantumLayer(circuit(), OBS, input_symbols=[X], shots=10, backend="tfq")
    with pytest.raises(ValueError, match="differentiator must be None"):
        QuantumLayer(circuit(), OBS, input_symbols=[X], differentiator="adjoint")  # exact: adjoint already


def test_get_config_round_trip():
    for d in ("parameter_shift", "adjoint", differentiators.FiniteDifference(0.05)):
        layer = QuantumLayer(circuit(), OBS, input_symbols=[X], shots=64, seed=8, differentiator=d)
        config = layer.get_config()
        clone = QuantumLayer.from_config(config)
        assert clone.get_config() == config and clone.shots == 64 and clone.seed == 8
    assert clone.differentiator.shift == 0.05


def test_keras_file_and_export_in_fresh_process(tmp_path):
    model = keras.Sequential([keras.Input((1,)), QuantumLayer(circuit(), OBS, input_symbols=[X], shots=100,
                                                              seed=4)])
    x = XS.astype(np.float32)
    path, export_dir = tmp_path / "m.keras", tmp_path / "exported"
    model.save(path)
    model.export(str(export_dir), verbose=False)
    expected = [model(x).numpy(), model(x).numpy()]  # the sequence continues from the saved state
    np.save(tmp_path / "x.npy", x)
    run_fresh_python(f"""
        import numpy as np, keras, tensorflow as tf
        import qkeras_hybrid
        x = np.load({str(tmp_path / 'x.npy')!r})
        m = keras.models.load_model({str(path)!r})
        np.save({str(tmp_path / 'k0.npy')!r}, m(x).numpy())
        np.save({str(tmp_path / 'k1.npy')!r}, m(x).numpy())
        served = tf.saved_model.load({str(export_dir)!r})
        np.save({str(tmp_path / 's0.npy')!r}, served.serve(x).numpy())
        np.save({str(tmp_path / 's1.npy')!r}, served.serve(x).numpy())
    """)
    for prefix in "ks":
        for i in range(2):
            np.testing.assert_array_equal(np.load(tmp_path / f"{prefix}{i}.npy"), expected[i])


def test_quantum_conv2d_with_shots(exact_sampler):
    from qkeras_hybrid.layers import QuantumConv2D

    images = np.random.default_rng(0).uniform(0, 1, size=(2, 3, 3, 1))
    noisy = QuantumConv2D(2, kernel_size=2, depth=1, shots=100, seed=3, dtype="float64")
    exact = QuantumConv2D(2, kernel_size=2, depth=1, dtype="float64")
    for layer in (noisy, exact):
        layer.build(images.shape)
        layer.quantum_weights.assign(np.linspace(-1, 1, 8).reshape(2, 1, 4))
    upstream = np.random.default_rng(1).normal(size=(2, 2, 2, 2))
    np.testing.assert_allclose(grads(noisy, images, upstream), grads(exact, images, upstream), atol=1e-9)
    config = noisy.get_config()
    assert QuantumConv2D.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="differentiator must be None"):
        QuantumConv2D(2, differentiator="adjoint")


def test_quantum_conv2d_sampled_values():
    from qkeras_hybrid.layers import QuantumConv2D

    images = np.random.default_rng(0).uniform(0, 1, size=(2, 3, 3, 1))
    noisy = QuantumConv2D(1, kernel_size=2, depth=1, shots=100, seed=3, dtype="float64")
    exact = QuantumConv2D(1, kernel_size=2, depth=1, dtype="float64")
    for layer in (noisy, exact):
        layer.build(images.shape)
        layer.quantum_weights.assign(np.full((1, 1, 4), 0.4))
    got, truth = noisy(images).numpy(), exact(images).numpy()
    assert np.abs(got - truth).max() < 5 * 0.1 and not np.allclose(got, truth)
    np.testing.assert_allclose(got * 50, np.round(got * 50), atol=1e-6)  # sample means of +-1 outcomes


def test_seeds_across_processes_and_unseeded_runs(tmp_path):
    # Two fresh processes, each building layers with seeds 5, 6 and None.
    code = f"""
        import numpy as np, cirq, sympy, tensorflow as tf
        from qkeras_hybrid.layers import QuantumLayer
        q = cirq.LineQubit.range(2)
        x, w = sympy.symbols("x w")
        xs = tf.constant([[0.4], [1.3]])
        out = {{}}
        for seed in (5, 6, None):
            layer = QuantumLayer(cirq.Circuit(cirq.rx(x)(q[0]), cirq.ry(w)(q[1]), cirq.CNOT(*q)),
                                 [cirq.Z(q[0]), cirq.X(q[1])], input_symbols=[x], shots=100, seed=seed,
                                 initializer="ones")
            with tf.GradientTape() as tape:
                y = layer(xs)
            grad = tape.gradient(y, layer.quantum_weights)
            for i, v in enumerate((y, layer(xs), grad)):
                out[f"{{seed}}_{{i}}"] = v.numpy()
        np.savez({str(tmp_path)!r} + "/OUT.npz", **out)
    """
    for name in "ab":
        run_fresh_python(code.replace("OUT", name))
    a, b = (np.load(tmp_path / f"{n}.npz") for n in "ab")
    for i in range(3):
        np.testing.assert_array_equal(a[f"5_{i}"], b[f"5_{i}"])
        np.testing.assert_array_equal(a[f"6_{i}"], b[f"6_{i}"])
    assert not np.array_equal(a["5_0"], a["5_1"])  # the state advances per call
    assert not np.array_equal(a["5_0"], a["6_0"]) and not np.array_equal(a["5_2"], a["6_2"])
    assert not np.array_equal(a["None_0"], b["None_0"])  # seed=None: another sequence every run


def test_mixed_precision_with_shots():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = QuantumLayer(circuit(), OBS, input_symbols=[X], shots=50, seed=0)
        x = tf.constant(XS, tf.float16)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        assert y.dtype == tf.float16 and layer.quantum_weights.dtype == "float32"
        assert tape.gradient(y, layer.quantum_weights).dtype == tf.float32
    finally:
        keras.config.set_dtype_policy(policy)


def test_circuit_without_parameters_with_shots():
    layer = QuantumLayer(cirq.Circuit(cirq.H(Q[0]), cirq.CNOT(*Q)), [cirq.Z(Q[0]) * cirq.Z(Q[1])], shots=100, seed=1)
    x = tf.zeros((3, 0))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    np.testing.assert_array_equal(y.numpy(), np.ones((3, 1)))  # a Bell state: ZZ = 1 in every shot
    assert tape.gradient(y, layer.quantum_weights).shape == (0,)


def test_qiskit_circuit_shift_rules_exact(exact_sampler):
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import SparsePauliOp

    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(2)
    qc.rx(a, 0)
    qc.cry(b, 0, 1)  # three eigenvalues: a generalized rule
    qc.rzz(2 * b, 0, 1)
    qc.u(b, a, 0.3, 1)
    obs = [SparsePauliOp(["ZI", "XX", "YZ"], [0.5, 1.0, -0.7])]
    noisy = QuantumLayer(qc, obs, input_symbols=[a], dtype="float64", shots=10)
    exact = QuantumLayer(qc, obs, input_symbols=[a], dtype="float64")
    for layer in (noisy, exact):
        layer.build((None, 1))
        layer.quantum_weights.assign([0.9])
    x, up = np.array([[0.3], [1.0]]), np.ones((2, 1))
    np.testing.assert_allclose(grads(noisy, x, up), grads(exact, x, up), atol=1e-9)
