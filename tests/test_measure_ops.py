"""The measurement ops (qkeras_hybrid.ops.measure): probabilities, states,
samples and sampled expectations.

References: Cirq's complex128 simulator (states, marginal probabilities,
exact expectations), central finite differences in float64 (gradients),
chi-square tests of sample frequencies, and the spread of sampled means over
many independent rows (each batch row draws its own shots).
"""

import numpy as np
import pytest
import scipy.stats
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid as qh
from qkeras_hybrid.ops import measure as M

from conftest import central_fd, random_cirq_circuit


def _random_case(seed, n=None, batch=11):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(1, 7))
    symbols = sympy.symbols("a b c")
    _, bare, qubits = random_cirq_circuit(rng, n, int(rng.integers(3, 14)), symbols, measure=False)
    qubits = sorted(qubits)
    used = sorted(cirq.parameter_symbols(bare), key=str)
    cc = qh.compile_circuit(bare, [cirq.Z(qubits[0])], symbols=used, qubits=qubits)
    values = rng.uniform(-2, 2, size=(batch, len(used)))
    return rng, bare, qubits, used, cc, values


def _cirq_states(circuit, qubits, symbols, values):
    sim = cirq.Simulator(dtype=np.complex128)
    return np.array([
        sim.simulate(circuit, cirq.ParamResolver({s: float(v) for s, v in zip(symbols, row)}),
                     qubit_order=qubits).final_state_vector
        for row in values])


def _cirq_marginal(states, n, measured):
    """Marginal probabilities of register qubits `measured`, first = MSB."""
    p = np.abs(states.reshape((-1,) + (2,) * n)) ** 2  # Cirq: axis 1 + q is qubit q
    others = tuple(1 + q for q in range(n) if q not in measured)
    p = p.sum(axis=others)
    kept = [q for q in range(n) if q in measured]  # remaining axes in ascending qubit order
    p = np.transpose(p, [0] + [1 + kept.index(q) for q in measured])
    return p.reshape(len(states), -1)


@pytest.mark.parametrize("seed", range(10))
def test_probabilities_and_states_match_cirq(seed):
    rng, bare, qubits, used, cc, values = _random_case(100 + seed, batch=11 if seed % 2 else 40)
    n = len(qubits)
    expected = _cirq_states(bare, qubits, used, values)
    for dtype, atol in ((tf.float64, 1e-10), (tf.float32, 2e-5)):
        angles = cc.angles(tf.constant(values, dtype))
        state = M.state(cc.program_inputs, angles)
        assert state.dtype == dtype and state.shape == (len(values), 2, 2**n)
        got = M.to_cirq_order(state, n).numpy()
        np.testing.assert_allclose(got, expected, atol=atol)
        for _ in range(3):
            k = int(rng.integers(1, n + 1))
            measured = [int(q) for q in rng.permutation(n)[:k]]
            probs = M.probabilities(cc.program_inputs, angles, measured).numpy()
            assert probs.shape == (len(values), 2**k)
            np.testing.assert_allclose(probs, _cirq_marginal(expected, n, measured), atol=atol)


def test_probability_order_is_cirqs():
    q = cirq.LineQubit.range(3)
    cc = qh.compile_circuit(cirq.Circuit(cirq.X(q[0]), cirq.I(q[1]), cirq.I(q[2])), [cirq.Z(q[0])])
    angles = tf.zeros([1, 0], tf.float64)
    # |100> in Cirq's order: qubit 0 is the most significant bit.
    np.testing.assert_array_equal(M.probabilities(cc.program_inputs, angles, [0, 1, 2])[0], np.eye(8)[4])
    np.testing.assert_array_equal(M.probabilities(cc.program_inputs, angles, [2, 0])[0], [0, 1, 0, 0])
    samples = M.sample(cc.program_inputs, angles, [2, 0, 1], 5, [0, 0]).numpy()
    np.testing.assert_array_equal(samples, np.tile([0, 1, 0], (1, 5, 1)))


def _complex_circuit(n, layers=2):
    q = cirq.LineQubit.range(n)
    symbols = sympy.symbols(f"t0:{3 * n * layers}")
    ops, i = [], 0
    for _ in range(layers):
        for j in range(n):
            ops += [cirq.rx(symbols[i])(q[j]), cirq.rz(symbols[i + 1])(q[j]), cirq.ry(symbols[i + 2])(q[j])]
            i += 3
        ops += [cirq.ISWAP(q[j], q[j + 1]) ** 0.3 for j in range(n - 1)]
        ops += [cirq.CZ(q[j], q[j + 1]) for j in range(0, n - 1, 2)]
    return qh.compile_circuit(cirq.Circuit(ops), [cirq.Z(q[0])], symbols=list(symbols), qubits=q)


@pytest.mark.parametrize("case", ["random", "complex", "real", "large"])
def test_probability_and_state_gradients_match_finite_differences(case):
    rng = np.random.default_rng(7)
    if case == "random":
        _, _, _, _, cc, values = _random_case(3, n=4, batch=3)
    elif case == "real":  # a real program keeps a real state and co-state
        q = cirq.LineQubit.range(3)
        a, b = sympy.symbols("a b")
        cc = qh.compile_circuit(cirq.Circuit(cirq.ry(a)(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(2 * b)(q[2]),
                                             cirq.CZ(q[1], q[2])), [cirq.Z(q[0])], symbols=[a, b])
        values = rng.uniform(-2, 2, size=(3, 2))
    else:  # "large": 13 qubits, one sample per call: both cores inside one state
        n = 13 if case == "large" else 4
        cc = _complex_circuit(n, layers=1 if case == "large" else 2)
        values = rng.uniform(-2, 2, size=(1 if case == "large" else 3, cc.num_angles))
    n = cc.num_qubits
    angles = cc.angles(tf.constant(values, tf.float64)).numpy()
    if case == "large":  # finite differences of a few angles only
        angles = angles[:, :4]
        full = cc.angles(tf.constant(values, tf.float64)).numpy()

        def expand(a):
            return np.concatenate([a, full[:, 4:]], axis=1)
    else:
        def expand(a):
            return a
    measured = [n - 1, 0] if n > 1 else [0]
    w_p = rng.normal(size=(len(angles), 2 ** len(measured)))
    w_s = rng.normal(size=(len(angles), 2, 2**n))

    def f_p(a):
        return float(np.sum(w_p * M.probabilities(cc.program_inputs, expand(a), measured).numpy()))

    def f_s(a):
        return float(np.sum(w_s * M.state(cc.program_inputs, expand(a)).numpy()))

    a = tf.constant(expand(angles))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        loss_p = tf.reduce_sum(w_p * M.probabilities(cc.program_inputs, a, measured))
        loss_s = tf.reduce_sum(w_s * M.state(cc.program_inputs, a))
    g_p = tape.gradient(loss_p, a).numpy()[:, :angles.shape[1]]
    g_s = tape.gradient(loss_s, a).numpy()[:, :angles.shape[1]]
    np.testing.assert_allclose(g_p, central_fd(f_p, angles), atol=1e-7)
    np.testing.assert_allclose(g_s, central_fd(f_s, angles), atol=1e-7)


def test_state_gradient_trains_fidelity_in_float32():
    """A real loss of the complex state (fidelity with a target) through to_cirq_order."""
    cc = _complex_circuit(3)
    rng = np.random.default_rng(5)
    target = rng.normal(size=8) + 1j * rng.normal(size=8)
    target = target / np.linalg.norm(target)
    values = tf.constant(rng.uniform(-2, 2, size=(2, cc.num_angles)), tf.float32)

    def fidelity(a):
        psi = M.to_cirq_order(M.state(cc.program_inputs, a), 3)
        overlap = tf.reduce_sum(tf.math.conj(tf.constant(target, psi.dtype)) * psi, axis=1)
        return tf.reduce_sum(tf.abs(overlap) ** 2)

    a = cc.angles(values)
    with tf.GradientTape() as tape:
        tape.watch(a)
        loss = fidelity(a)
    g = tape.gradient(loss, a).numpy()
    fd = central_fd(lambda x: float(fidelity(tf.constant(x, tf.float64))), a.numpy(), eps=1e-5)
    np.testing.assert_allclose(g, fd, atol=2e-4)


def test_sample_frequencies_match_probabilities():
    _, _, _, _, cc, values = _random_case(11, n=5, batch=3)
    angles = cc.angles(tf.constant(values, tf.float64))
    measured = [3, 0, 4]
    shots = 20000
    probs = M.probabilities(cc.program_inputs, angles, measured).numpy()
    samples = M.sample(cc.program_inputs, angles, measured, shots, [12, 34]).numpy()
    assert samples.shape == (3, shots, 3) and samples.dtype == np.int32
    assert set(np.unique(samples)) <= {0, 1}
    index = samples @ np.array([4, 2, 1])  # bit j is qubits[j]: Cirq's order
    for row in range(3):
        counts = np.bincount(index[row], minlength=8)
        keep = probs[row] > 1e-12
        assert counts[~keep].sum() == 0  # outcomes of probability 0 never drawn
        expected = probs[row][keep] / probs[row][keep].sum() * shots
        _, p_value = scipy.stats.chisquare(counts[keep], expected)
        assert p_value > 1e-4, (row, counts, expected)


def _sum_abs_coeffs(observable):
    return sum(abs(complex(t.coefficient)) for t in cirq.PauliSum.wrap(observable) if t.qubits)


def test_sampled_expectations_are_unbiased_with_the_right_spread():
    q = cirq.LineQubit.range(3)
    a, b = sympy.symbols("a b")
    circuit = cirq.Circuit(cirq.rx(a)(q[0]), cirq.ry(b)(q[1]), cirq.CNOT(q[0], q[2]), cirq.rz(a - b)(q[2]),
                           cirq.ISWAP(q[1], q[2]) ** 0.4, cirq.H(q[1]))
    observables = [cirq.X(q[0]), cirq.Y(q[1]), cirq.Z(q[2]), cirq.Z(q[0]) * cirq.Z(q[2]),
                   cirq.X(q[1]) * cirq.Y(q[2]),
                   0.7 * cirq.X(q[0]) - 0.4 * cirq.Z(q[1]) * cirq.Y(q[2]) + 0.25 * cirq.Y(q[0]) + 0.6,
                   cirq.Z(q[0]) + cirq.Z(q[1]) + cirq.Z(q[0]) * cirq.Z(q[1])]
    cc = qh.compile_circuit(circuit, observables, symbols=[a, b], qubits=q)
    rows, shots = 400, 200
    values = np.tile([[0.7, -1.3]], (rows, 1))
    exact = cc.expectation(tf.constant(values[:1], tf.float64), dtype=tf.float64).numpy()[0]
    for dtype in (tf.float64, tf.float32):
        est = M.sampled_expectation(cc.program_inputs, cc.angles(tf.constant(values, dtype)), shots,
                                    [5, 6]).numpy()
        assert est.shape == (rows, len(observables)) and est.dtype == dtype.as_numpy_dtype
        mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(rows)
        assert np.all(np.abs(mean - exact) < 5 * se + 1e-6), (mean, exact, se)
        # A single Pauli term: the variance of a mean of +-1 outcomes.
        for o in range(5):
            var = (1 - exact[o] ** 2) / shots
            assert 0.7 * var < est[:, o].var(ddof=1) < 1.4 * var, (o, est[:, o].var(), var)
        for o, obs in enumerate(observables):  # every estimate within the worst-case spread
            assert np.all(np.abs(est[:, o] - exact[o]) <= 6 * _sum_abs_coeffs(obs) / np.sqrt(shots) + 1e-6)


def test_commuting_terms_share_shots():
    """Bell state: Z0, Z1 and Z0 Z1 are one setting, so every shot has z0 == z1:
    the estimates of Z0 and Z1 agree exactly and Z0 Z1 is exactly 1; X0 X1 and
    Y0 Y1 come from two other settings, also exact (+1, -1)."""
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1]))
    observables = [cirq.Z(q[0]), cirq.Z(q[1]), cirq.Z(q[0]) * cirq.Z(q[1]),
                   cirq.X(q[0]) * cirq.X(q[1]), cirq.Y(q[0]) * cirq.Y(q[1]), cirq.X(q[0]), cirq.Z(q[0]) + 0.5]
    cc = qh.compile_circuit(circuit, observables)
    est = M.sampled_expectation(cc.program_inputs, tf.zeros([20, 0], tf.float64), 50, [1, 1]).numpy()
    np.testing.assert_array_equal(est[:, 0], est[:, 1])
    np.testing.assert_array_equal(est[:, 2], 1)
    np.testing.assert_array_equal(est[:, 3], 1)
    np.testing.assert_array_equal(est[:, 4], -1)
    np.testing.assert_array_equal(est[:, 6], est[:, 0] + 0.5)  # same setting as Z0; identity exact
    assert np.any(est[:, 0] != est[:, 5])  # X0: another setting, other shots
    assert np.all(np.abs(est[:, [0, 5]]) < 1)  # not a single shot each


def test_seeds_are_deterministic_and_independent_of_batch_splitting():
    cc = _complex_circuit(14, layers=1)
    rng = np.random.default_rng(3)
    values = rng.uniform(-2, 2, size=(70, cc.num_angles))
    angles = cc.angles(tf.constant(values, tf.float32))
    q = cc.program_inputs

    def run(a, seed):
        return (M.sample(q, a, [13, 2, 5, 0, 7, 9, 11], 500, seed).numpy(),  # 128 outcomes: guided
                M.sampled_expectation(q, a, 300, seed).numpy())

    s70, e70 = run(angles, [7, 8])
    # 70 rows: groups of 16 lanes over the threads; 3 rows and 1 row: threads
    # inside one state, the shots split between them.
    for rows in (1, 3):
        s, e = run(angles[:rows], [7, 8])
        np.testing.assert_array_equal(s, s70[:rows])
        np.testing.assert_array_equal(e, e70[:rows])
    s_again, e_again = run(angles, np.array([7, 8], np.int64))
    np.testing.assert_array_equal(s_again, s70)
    np.testing.assert_array_equal(e_again, e70)
    for other in ([7, 9], [8, 8]):  # both halves of the seed matter
        s, e = run(angles[:3], other)
        assert np.any(s != s70[:3]) and np.any(e != e70[:3])
    # Rows with equal angles draw different shots.
    same = tf.tile(angles[:1], [2, 1])
    s, _ = run(same, [7, 8])
    assert np.any(s[0] != s[1])


def test_in_tf_function_and_gradients_of_samples():
    cc = _complex_circuit(2)
    a = tf.Variable(tf.zeros([2, cc.num_angles], tf.float32))

    @tf.function
    def f(seed):
        with tf.GradientTape() as tape:
            p = M.probabilities(cc.program_inputs, a, [1, 0])
            s = M.sample(cc.program_inputs, a, [0, 1], 10, seed)
            e = M.sampled_expectation(cc.program_inputs, a, 10, seed)
            loss = tf.reduce_sum(p) + tf.reduce_sum(e)
        return tape.gradient(loss, a), s

    g, s = f(tf.constant([1, 2], tf.int64))
    assert s.shape == (2, 10, 2)
    np.testing.assert_allclose(g.numpy(), 0, atol=1e-6)  # probabilities sum to 1; e has no gradient


def _bell():
    q = cirq.LineQubit.range(2)
    return qh.compile_circuit(cirq.Circuit(cirq.H(q[0]), cirq.CNOT(q[0], q[1])), [cirq.Z(q[0])])


@pytest.mark.parametrize("qubits, message", [
    ([0, 0], "repeats qubits"), ([2], "out of range"), ([-1], "out of range"), ([], "1 to num_qubits"),
    ([[0, 1]], "vector"), ([0, 1, 1], "1 to num_qubits"),
])
def test_bad_qubits(qubits, message):
    cc = _bell()
    a = tf.zeros([1, 0], tf.float64)
    for call in (lambda: M.probabilities(cc.program_inputs, a, np.array(qubits, np.int32)),
                 lambda: M.sample(cc.program_inputs, a, np.array(qubits, np.int32), 3, [0, 0])):
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"qubits.*{message}"):
            call()


def test_bad_shots_seeds_and_upstreams():
    cc = _bell()
    p = cc.program_inputs
    a = tf.zeros([2, 0], tf.float64)
    for shots, message in ((0, "shots must be positive"), (-3, "shots must be positive"),
                           ([1, 2], "shots must be a scalar")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            M.sample(p, a, [0], np.array(shots, np.int32), [0, 0])
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            M.sampled_expectation(p, a, np.array(shots, np.int32), [0, 0])
    for seed in ([1, 2, 3], [1], 5):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed must have shape \[2\]"):
            M.sample(p, a, [0], 3, np.array(seed, np.int64))
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed must have shape \[2\]"):
            M.sampled_expectation(p, a, 3, np.array(seed, np.int64))
    with pytest.raises(TypeError, match="seed must be a int64 tensor"):
        M.sample(p, a, [0], 3, tf.constant([1, 2], tf.int32))
    with pytest.raises(TypeError, match="shots must hold integers"):
        M.sample(p, a, [0], 2.5, [1, 2])
    with pytest.raises(TypeError, match="qubits must be a int32 tensor"):
        M.probabilities(p, a, tf.constant([0], tf.int64))
    # Outputs that cannot fit: the checked allocation names them.
    with pytest.raises(tf.errors.ResourceExhaustedError, match="samples of shape"):
        M.sample(p, tf.zeros([100000, 0], tf.float64), [0, 1], 2**31 - 1, [0, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"angles\[0, 0\] is not finite"):
        M.probabilities(_complex_circuit(2).program_inputs, tf.fill([1, 12], np.nan), [0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream must have shape"):
        M.probabilities_adjoint_grad(p, a, [0], tf.zeros([2, 4], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"upstream\[1, 0\] is not finite"):
        M.probabilities_adjoint_grad(p, a, [0], tf.constant([[0, 0], [np.inf, 0]], tf.float64))
    state = M.state(p, a)
    with pytest.raises(tf.errors.InvalidArgumentError, match="upstream must have shape"):
        M.state_adjoint_grad(p, a, state, tf.zeros([2, 2, 8], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="state must have shape"):
        M.state_adjoint_grad(p, a, state[:1], state)
    with pytest.raises(TypeError, match="must all have one dtype"):
        M.state_adjoint_grad(p, a, tf.cast(state, tf.float32), state)


def test_many_outcomes_sample_frequencies_match_probabilities():
    """128 outcomes: the sampler searches through a guide table."""
    _, _, _, _, cc, values = _random_case(21, n=7, batch=2)
    angles = cc.angles(tf.constant(values, tf.float64))
    measured = [6, 1, 3, 0, 5, 2, 4]
    shots = 40000
    probs = M.probabilities(cc.program_inputs, angles, measured).numpy()
    samples = M.sample(cc.program_inputs, angles, measured, shots, [3, 4]).numpy()
    index = samples @ (1 << np.arange(6, -1, -1))
    for row in range(2):
        counts = np.bincount(index[row], minlength=128)
        assert counts[probs[row] < 1e-12].sum() == 0
        expected = probs[row] / probs[row].sum() * shots
        big = expected >= 5  # the rest pooled into one cell
        observed = np.append(counts[big], counts[~big].sum())
        expect = np.append(expected[big], expected[~big].sum())
        if expect[-1] == 0:
            observed, expect = observed[:-1], expect[:-1]
        _, p_value = scipy.stats.chisquare(observed, expect)
        assert p_value > 1e-4, row


_HUGE_STATIC_SHAPES = r"""
import numpy as np, tensorflow as tf
from qkeras_hybrid.ops import measure as M
# A valid 1-qubit program claiming 62 qubits: the outputs' static shapes
# ([3, 2, 2**62], [3, 2**62], [3, 2**40, 40]) overflow int64 elements.
program = (tf.constant(62), tf.constant([[1, 0, 0, 0, 2, 0, 1]], tf.int32),
           tf.constant([[0, -1, 0, 1]], tf.int32),
           tf.constant([0.70710678, 0.0, -0.70710678, 0.0, 0.70710678, 0.0, 0.70710678, 0.0], tf.float64),
           tf.zeros([1, 1, 2], tf.int64), tf.ones([1, 1], tf.float64))
angles = tf.zeros([3, 1], tf.float64)
calls = {
    "state": lambda: M.state(program, angles),
    "probabilities": lambda: M.probabilities(program, angles, tf.range(62, dtype=tf.int32)),
    "sample": lambda: M.sample(program, angles, tf.range(40, dtype=tf.int32), tf.constant(2**30),
                               tf.constant([1, 2], tf.int64)),
}
for name, call in calls.items():
    with tf.GradientTape() as tape:  # the eager tape records static shapes
        tape.watch(angles)
        try:
            tf.function(call)()
            print(name, "no error")
        except (tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError) as e:
            print(name, "error", type(e).__name__)
"""


def test_outputs_too_large_for_int64_are_errors_not_aborts():
    """Found by the fuzzer: a static output shape whose element count overflows int64
    made TensorFlow's tape abort the process; the shape functions now leave such a
    dimension unknown and the kernels refuse the size."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _HUGE_STATIC_SHAPES], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.split()[0] in ("state", "probabilities", "sample")]
    assert len(lines) == 3 and all(" error " in line for line in lines), result.stdout
