"""The density-matrix ops (qkeras_hybrid.ops.density) and density programs
(circuits.program.density_primitives).

References: Cirq's complex128 DensityMatrixSimulator on random circuits with
random channels (expectations, marginal probabilities), central finite
differences in float64 (gradients), the pure-state ops on noiseless circuits,
chi-square tests of sample frequencies with readout errors applied by an
independent confusion-matrix reference, and the spread of sampled means.
"""

import numpy as np
import pytest
import scipy.stats
import sympy
import tensorflow as tf

import cirq
from qkeras_hybrid import ops
from qkeras_hybrid.circuits import observables as obs_lib
from qkeras_hybrid.circuits.angles import AngleMap
from qkeras_hybrid.circuits.cirq_compiler import lower_operation
from qkeras_hybrid.circuits.program import (
    NONUNITARY_SELECTION, SELECTION, SUPEROPERATOR, Primitive, bind_angle, build_program, density_primitives,
    superoperator)
from qkeras_hybrid.ops import density as D
from qkeras_hybrid.ops import measure as M

from conftest import central_fd, random_cirq_circuit, random_pauli_sum, run_fresh_python


def random_kraus_channel(rng, num_qubits, count):
    """A random CPTP map: the blocks of a random isometry."""
    d = 2**num_qubits
    v = rng.normal(size=(count * d, d)) + 1j * rng.normal(size=(count * d, d))
    q, _ = np.linalg.qr(v)
    return cirq.KrausChannel([q[k * d:(k + 1) * d] for k in range(count)])


def random_channel(rng, num_qubits):
    """One of the issue's channel kinds, with random strengths."""
    p = float(rng.uniform(0.02, 0.4))
    if num_qubits == 2:
        kinds = [
            lambda: cirq.depolarize(p, n_qubits=2),
            lambda: random_kraus_channel(rng, 2, int(rng.integers(1, 4))),
            lambda: cirq.MixedUnitaryChannel(
                [(w, cirq.testing.random_unitary(4, random_state=int(rng.integers(2**31)))) for w in rng.dirichlet([1, 1, 1])]),
        ]
    else:
        kinds = [
            lambda: cirq.depolarize(p),
            lambda: cirq.amplitude_damp(p),
            lambda: cirq.generalized_amplitude_damp(float(rng.uniform()), p),
            lambda: cirq.phase_damp(p),
            lambda: cirq.ResetChannel(),
            lambda: cirq.asymmetric_depolarize(p / 2, p / 3, p / 4),
            lambda: cirq.bit_flip(p),
            lambda: cirq.phase_flip(p),
            lambda: random_kraus_channel(rng, 1, int(rng.integers(1, 5))),
            lambda: cirq.MixedUnitaryChannel(
                [(w, cirq.testing.random_unitary(2, random_state=int(rng.integers(2**31)))) for w in rng.dirichlet([1, 1])]),
        ]
    return kinds[int(rng.integers(len(kinds)))]()


def noisy_circuit(rng, n, num_ops, num_channels, symbols):
    """A random circuit (conftest's gate mix) with random channels inserted."""
    _, bare, qubits = random_cirq_circuit(rng, n, num_ops, symbols, measure=False)
    ops_ = list(bare.all_operations())
    qubits = sorted(qubits)
    for _ in range(num_channels):
        k = 2 if n >= 2 and rng.random() < 0.3 else 1
        on = [qubits[i] for i in rng.choice(n, size=k, replace=False)]
        ops_.insert(int(rng.integers(len(ops_) + 1)), random_channel(rng, k).on(*on))
    return cirq.Circuit(ops_), qubits


def lower(circuit, qubits, symbols):
    """Primitives of a noisy circuit: channels straight from cirq.kraus (not
    from the compiler under test elsewhere), unitaries from the compiler."""
    index_of = {q: i for i, q in enumerate(qubits)}
    out = []
    for op in circuit.all_operations():
        if not cirq.is_parameterized(op) and not cirq.has_unitary(op):
            out.append(Primitive(qubits=tuple(index_of[q] for q in op.qubits), kraus=np.array(cirq.kraus(op))))
            continue
        for p in lower_operation(op, index_of):
            out.extend(bind_angle(p, symbols))
    return out


class DensityCase:
    """A noisy circuit compiled to a density program, with its reference."""

    def __init__(self, circuit, qubits, symbols, observables, max_fused_qubits=None):
        self.circuit, self.qubits, self.symbols, self.observables = circuit, qubits, symbols, observables
        self.n = len(qubits)
        index_of = {q: i for i, q in enumerate(qubits)}
        terms = [obs_lib.cirq_terms(o, index_of) for o in observables]
        prims = density_primitives(lower(circuit, qubits, symbols), self.n)
        self.program = build_program(2 * self.n, prims, terms, symbols, max_fused_qubits)
        self.inputs = self.program.as_tuple()
        self.angle_map = AngleMap(self.program.angle_exprs, symbols)

    def angles(self, values, dtype):
        return self.angle_map(tf.constant(values, dtype))

    def rho(self, row):
        sim = cirq.DensityMatrixSimulator(dtype=np.complex128)
        resolver = cirq.ParamResolver({s: float(v) for s, v in zip(self.symbols, row)})
        return sim.simulate(self.circuit, resolver, qubit_order=self.qubits).final_density_matrix

    def expectations(self, values):
        mats = [o.matrix(self.qubits) for o in self.observables]
        return np.array([[np.real(np.trace(m @ self.rho(row))) for m in mats] for row in values])


def random_case(seed, n=None, batch=5, num_channels=None, **kwargs):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(1, 6))
    symbols = list(sympy.symbols("a b c"))
    circuit, qubits = noisy_circuit(rng, n, int(rng.integers(2, 10)),
                                    int(rng.integers(1, 6)) if num_channels is None else num_channels, symbols)
    used = sorted(cirq.parameter_symbols(circuit), key=str)
    observables = [random_pauli_sum(rng, qubits) for _ in range(int(rng.integers(1, 4)))]
    case = DensityCase(circuit, qubits, used, observables, **kwargs)
    values = rng.uniform(-2, 2, size=(batch, len(used)))
    return rng, case, values


def marginal(rho_diag, n, measured):
    """Marginal of register qubits `measured` (first = MSB) from diag(rho) in Cirq's order."""
    p = rho_diag.reshape((2,) * n)
    p = p.sum(axis=tuple(q for q in range(n) if q not in measured))
    kept = [q for q in range(n) if q in measured]
    return np.transpose(p, [kept.index(q) for q in measured]).reshape(-1)


# ------------------------------------------------------------------ exact values


@pytest.mark.parametrize("seed", range(12))
def test_expectations_match_cirq_density_matrix_simulator(seed):
    _, case, values = random_case(seed, batch=5 if seed % 3 else 40, max_fused_qubits=[None, 1, 2, 3][seed % 4])
    expected = case.expectations(values)
    for dtype, atol in ((tf.float64, 1e-10), (tf.float32, 1e-5)):
        got = D.density_expectation(*case.inputs, case.angles(values, dtype))
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got.numpy(), expected, atol=atol)


def test_every_channel_kind_matches_cirq():
    """Each kind of the issue, alone after a random state preparation, both on
    single qubits and (2-qubit kinds) on a non-adjacent, reversed pair."""
    rng = np.random.default_rng(7)
    q = cirq.LineQubit.range(3)
    a = sympy.Symbol("a")
    prep = [cirq.ry(a)(q[0]), cirq.rx(0.7)(q[1]), cirq.CNOT(q[0], q[2]), cirq.H(q[1]), cirq.rz(a)(q[2])]
    channels = [random_channel(rng, 1) for _ in range(40)]
    kinds = {type(c).__name__ for c in channels}
    assert len(kinds) >= 8  # the draw covers the kinds
    channels += [cirq.depolarize(0.2, n_qubits=2), random_kraus_channel(rng, 2, 3)]
    observables = [cirq.Z(q[0]), cirq.X(q[1]) * cirq.Y(q[2]), cirq.Z(q[0]) * cirq.Z(q[2]) + 0.3 * cirq.X(q[0])]
    for ch in channels:
        on = [q[1]] if cirq.num_qubits(ch) == 1 else [q[2], q[0]]
        circuit = cirq.Circuit(prep + [ch.on(*on), cirq.ry(a)(q[1])])
        case = DensityCase(circuit, q, [a], observables)
        values = np.array([[0.4], [-1.3]])
        got = D.density_expectation(*case.inputs, case.angles(values, tf.float64)).numpy()
        np.testing.assert_allclose(got, case.expectations(values), atol=1e-10, err_msg=repr(ch))


@pytest.mark.parametrize("seed", range(6))
def test_probabilities_match_cirq(seed):
    rng, case, values = random_case(100 + seed)
    n = case.n
    for _ in range(3):
        k = int(rng.integers(1, n + 1))
        measured = [int(i) for i in rng.permutation(n)[:k]]
        expected = np.array([marginal(np.real(np.diag(case.rho(row))), n, measured) for row in values])
        for dtype, atol in ((tf.float64, 1e-10), (tf.float32, 1e-5)):
            got = D.density_probabilities(*case.inputs, case.angles(values, dtype), measured)
            assert got.shape == (len(values), 2**k)
            np.testing.assert_allclose(got.numpy(), expected, atol=atol)


def test_noiseless_density_program_equals_pure_state_ops():
    for seed in range(4):
        rng, case, values = random_case(200 + seed, num_channels=0)
        rng = np.random.default_rng(seed)
        index_of = {q: i for i, q in enumerate(case.qubits)}
        pure_prims = lower(case.circuit, case.qubits, case.symbols)
        terms = [obs_lib.cirq_terms(o, index_of) for o in case.observables]
        pure = build_program(case.n, pure_prims, terms, case.symbols)
        angles = AngleMap(pure.angle_exprs, case.symbols)(tf.constant(values))
        np.testing.assert_allclose(D.density_expectation(*case.inputs, case.angles(values, tf.float64)),
                                   ops.expectation(*pure.as_tuple(), angles), atol=1e-12)
        measured = [int(i) for i in rng.permutation(case.n)[:2]]
        np.testing.assert_allclose(
            D.density_probabilities(*case.inputs, case.angles(values, tf.float64), measured),
            M.probabilities(pure.as_tuple(), angles, measured), atol=1e-12)
        # Same seed, same counters, same distribution: the same samples.
        np.testing.assert_array_equal(
            D.density_sample(*case.inputs, case.angles(values, tf.float64), measured, 50, [3, 4]),
            M.sample(pure.as_tuple(), angles, measured, 50, [3, 4]))


# ------------------------------------------------------------------- gradients


def _fd_check(forward, grad, angles, weights, atol):
    def f(a):
        return float(np.sum(weights * forward(tf.constant(a)).numpy()))
    expected = central_fd(f, angles, eps=1e-5)
    got = grad(tf.constant(angles), tf.constant(weights)).numpy()
    np.testing.assert_allclose(got, expected, atol=atol, rtol=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_expectation_gradient_matches_finite_differences(seed):
    rng, case, values = random_case(300 + seed, batch=3)
    angles = case.angles(values, tf.float64).numpy()
    weights = rng.normal(size=(len(values), len(case.observables)))
    _fd_check(lambda a: D.density_expectation(*case.inputs, a),
              lambda a, w: D.density_expectation_adjoint_grad(*case.inputs, a, w), angles, weights, 1e-7)
    # The registered gradient, through the symbols' angle map, on a tape.
    v = tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch(v)
        loss = tf.reduce_sum(weights * D.density_expectation(*case.inputs, case.angle_map(v)))
    expected = central_fd(
        lambda x: float(np.sum(weights * D.density_expectation(*case.inputs, case.angles(x, tf.float64)))), values)
    np.testing.assert_allclose(tape.gradient(loss, v), expected, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_probabilities_gradient_matches_finite_differences(seed):
    rng, case, values = random_case(400 + seed, batch=3)
    measured = [int(i) for i in rng.permutation(case.n)[:2]]
    angles = case.angles(values, tf.float64).numpy()
    weights = rng.normal(size=(len(values), 2 ** len(measured)))
    _fd_check(lambda a: D.density_probabilities(*case.inputs, a, measured),
              lambda a, w: D.density_probabilities_adjoint_grad(*case.inputs, a, measured, w), angles, weights, 1e-7)


def test_float32_gradient_is_close_to_float64():
    _, case, values = random_case(17, n=4, num_channels=8)
    up = np.ones((len(values), len(case.observables)))
    g64 = D.density_expectation_adjoint_grad(*case.inputs, case.angles(values, tf.float64), up)
    g32 = D.density_expectation_adjoint_grad(*case.inputs, case.angles(values, tf.float32), up.astype(np.float32))
    np.testing.assert_allclose(g32, g64, atol=2e-5)


def test_adjoint_restores_from_inverses_and_checkpoints():
    """Depolarizing and damping channels come with inverses, resets do not
    (their state is restored from checkpoints); both give exact gradients."""
    q = cirq.LineQubit.range(2)
    a, b = sympy.symbols("a b")
    layers = []
    for ch in [cirq.depolarize(0.05), cirq.ResetChannel(), cirq.amplitude_damp(0.6)] * 4:
        layers += [cirq.ry(a)(q[0]), cirq.rx(b)(q[1]), cirq.CZ(*q), ch.on(q[0]), cirq.depolarize(0.1)(q[1])]
    case = DensityCase(cirq.Circuit(layers), q, [a, b], [cirq.Z(q[0]) + cirq.X(q[1]), cirq.Y(q[0]) * cirq.X(q[1])])
    gm = case.program.gate_meta
    supers = gm[gm[:, 0] == SUPEROPERATOR]
    assert supers.shape[0] == 24
    assert np.sum(supers[:, 3] == 1) == 4  # resets: no inverse
    values = np.array([[0.3, -0.8], [1.9, 0.4]])
    np.testing.assert_allclose(
        D.density_expectation(*case.inputs, case.angles(values, tf.float64)), case.expectations(values), atol=1e-10)
    _fd_check(lambda x: D.density_expectation(*case.inputs, x),
              lambda x, w: D.density_expectation_adjoint_grad(*case.inputs, x, w),
              case.angles(values, tf.float64).numpy(), np.array([[1.0, 0.5], [-0.3, 2.0]]), 1e-7)


def test_strong_damping_chain_keeps_float32_gradients_accurate():
    """Un-applying a chain of strong damping channels by their inverses would
    amplify float32 rounding by ||S^-1||^8 (about 10^8; measured: a relative
    error of 1e-3 without the op's growth budget, 8e-7 with it): past the
    budget the op restores from checkpoints instead."""
    q = cirq.LineQubit.range(2)
    a, b = sympy.symbols("a b")
    layers = []
    for _ in range(8):
        layers += [cirq.ry(a)(q[0]), cirq.rx(b)(q[1]), cirq.CNOT(*q), cirq.amplitude_damp(0.9)(q[0]),
                   cirq.generalized_amplitude_damp(0.3, 0.8)(q[1])]
    case = DensityCase(cirq.Circuit(layers), q, [a, b], [cirq.X(q[0]) + cirq.Z(q[1]), cirq.Y(q[1])])
    values = np.array([[0.3, -0.8], [1.9, 0.4], [-2.5, 1.0]])
    up = np.array([[1.0, 0.5], [-0.3, 2.0], [0.7, 0.7]])
    g64 = D.density_expectation_adjoint_grad(*case.inputs, case.angles(values, tf.float64), up).numpy()
    g32 = D.density_expectation_adjoint_grad(*case.inputs, case.angles(values, tf.float32),
                                             up.astype(np.float32)).numpy()
    _fd_check(lambda x: D.density_expectation(*case.inputs, x),
              lambda x, w: D.density_expectation_adjoint_grad(*case.inputs, x, w),
              case.angles(values, tf.float64).numpy(), up, 1e-7)
    np.testing.assert_allclose(g32, g64, atol=2e-5 * np.abs(g64).max())


def test_superoperator_and_index_order():
    """vec(rho)[r + (c << n)] = rho[r, c]; S = sum K (x) conj(K) on (row, column)."""
    k = np.array(cirq.kraus(cirq.amplitude_damp(0.3)))
    rho = np.array([[0.6, 0.2 - 0.1j], [0.2 + 0.1j, 0.4]])
    out = sum(m @ rho @ m.conj().T for m in k)
    # The primitive's first qubit (row) is the most significant bit of S's index.
    vec = rho.reshape(-1)  # index r * 2 + c
    np.testing.assert_allclose(superoperator(k) @ vec, out.reshape(-1), atol=1e-15)


# ------------------------------------------------------------------- sampling


def _confusion(readout, qubits):
    """P(read m' | true m) over the bits of `qubits` (first = MSB), a reference."""
    mat = np.ones((1, 1))
    for q in qubits:
        e0, e1 = readout[q]
        mat = np.kron(mat, np.array([[1 - e0, e1], [e0, 1 - e1]]))
    return mat


@pytest.mark.parametrize("seed", range(3))
def test_sample_frequencies_with_readout_errors(seed):
    rng, case, values = random_case(500 + seed, n=3, batch=2)
    readout = rng.uniform(0, 0.3, size=(case.n, 2))
    measured = [int(i) for i in rng.permutation(case.n)]
    shots = 20000
    samples = D.density_sample(*case.inputs, case.angles(values, tf.float64), measured, shots, [seed, 9],
                               readout).numpy()
    assert samples.shape == (len(values), shots, case.n) and samples.dtype == np.int32
    weights = 2 ** np.arange(case.n - 1, -1, -1)
    for row, s in zip(values, samples):
        p = _confusion(readout, measured) @ marginal(np.real(np.diag(case.rho(row))), case.n, measured)
        counts = np.bincount(s @ weights, minlength=2**case.n)
        keep = p > 0
        assert counts[~keep].sum() == 0
        chi2 = np.sum((counts[keep] - shots * p[keep]) ** 2 / (shots * p[keep]))
        assert scipy.stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4


def test_readout_flips_known_state():
    q = cirq.LineQubit.range(2)
    case = DensityCase(cirq.Circuit(cirq.X(q[0]), cirq.I(q[1])), q, [], [cirq.Z(q[0])])
    readout = np.array([[0.0, 0.25], [0.1, 0.0]])  # q0 is 1: reads 0 w.p. 0.25; q1 is 0: reads 1 w.p. 0.1
    s = D.density_sample(*case.inputs, np.zeros((1, 0)), [0, 1], 40000, [1, 1], readout).numpy()[0]
    assert abs(s[:, 0].mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 40000)
    assert abs(s[:, 1].mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / 40000)
    # Without readout errors the bits are exact.
    exact = D.density_sample(*case.inputs, np.zeros((1, 0)), [0, 1], 100, [1, 1]).numpy()[0]
    np.testing.assert_array_equal(exact, np.tile([1, 0], (100, 1)))


def test_sampled_expectation_is_unbiased_with_readout():
    """Rows are independent draws: their mean is within a few standard errors
    of the exact value, readout included (E[(-1)^read] per measured bit)."""
    rng, case, values = random_case(600, n=3, batch=1)
    q = case.qubits
    observables = [cirq.Z(q[0]), cirq.X(q[1]) * cirq.Z(q[2]), cirq.Y(q[0]) + 0.5 * cirq.Z(q[1]) * cirq.Z(q[2])]
    case = DensityCase(case.circuit, q, case.symbols, observables)
    readout = np.array([[0.05, 0.1], [0.2, 0.0], [0.0, 0.15]])
    rows = 400
    angles = case.angles(np.repeat(values, rows, axis=0), tf.float64)
    got = D.density_sampled_expectation(*case.inputs, angles, 200, [5, 6], readout).numpy()
    # Reference: each measured bit's Z is damped by the readout errors:
    # E[(-1)^read | true b] = (1 - 2 e0) for b = 0 and -(1 - 2 e1) for b = 1.
    rho = case.rho(values[0])
    n = case.n

    def damped_pauli(paulis):
        mats = []
        for i in range(n):
            p = paulis.get(i)
            if p is None:
                mats.append(np.eye(2))
                continue
            e0, e1 = readout[i]
            noisy_z = np.diag([1 - 2 * e0, -(1 - 2 * e1)])
            rot = {"Z": np.eye(2), "X": cirq.unitary(cirq.H),
                   "Y": cirq.unitary(cirq.H) @ np.diag([1, -1j])}[p]
            mats.append(rot.conj().T @ noisy_z @ rot)
        out = mats[0]
        for m in mats[1:]:
            out = np.kron(out, m)
        return out

    expected = [
        np.real(np.trace(damped_pauli({0: "Z"}) @ rho)),
        np.real(np.trace(damped_pauli({1: "X", 2: "Z"}) @ rho)),
        np.real(np.trace(damped_pauli({0: "Y"}) @ rho)) + 0.5 * np.real(np.trace(damped_pauli({1: "Z", 2: "Z"}) @ rho)),
    ]
    se = got.std(axis=0) / np.sqrt(rows)
    assert np.all(np.abs(got.mean(axis=0) - expected) < 5 * se + 1e-9), (got.mean(axis=0), expected, se)
    # Without readout errors the estimate targets tr(O rho).
    clean = D.density_sampled_expectation(*case.inputs, angles, 200, [5, 7]).numpy()
    exact = case.expectations(values)[0]
    se = clean.std(axis=0) / np.sqrt(rows)
    assert np.all(np.abs(clean.mean(axis=0) - exact) < 5 * se + 1e-9)


def test_sampled_expectation_of_noiseless_program_equals_pure_op():
    """Same grouping, same counters: a noiseless circuit's density estimate is
    the pure op's (up to rounding at a CDF boundary, which these draws miss)."""
    _, case, values = random_case(700, n=3, num_channels=0)
    index_of = {q: i for i, q in enumerate(case.qubits)}
    q = case.qubits
    observables = [cirq.X(q[0]) * cirq.Z(q[1]) + cirq.Y(q[2]), cirq.Z(q[0]) + 2.0 * cirq.X(q[1])]
    case = DensityCase(case.circuit, q, case.symbols, observables)
    pure = build_program(case.n, lower(case.circuit, q, case.symbols),
                         [obs_lib.cirq_terms(o, index_of) for o in observables], case.symbols)
    angles = AngleMap(pure.angle_exprs, case.symbols)(tf.constant(values))
    np.testing.assert_allclose(
        D.density_sampled_expectation(*case.inputs, case.angles(values, tf.float64), 300, [8, 9]),
        M.sampled_expectation(pure.as_tuple(), angles, 300, [8, 9]), atol=1e-12)


def test_results_do_not_depend_on_batch_split():
    _, case, values = random_case(800, n=3, batch=37)
    angles = case.angles(values, tf.float32)
    whole = D.density_sample(*case.inputs, angles, [0, 2], 64, [1, 2], np.full((3, 2), 0.1)).numpy()
    parts = [D.density_sample(*case.inputs, angles[i:i + 1], [0, 2], 64, [1, 2], np.full((3, 2), 0.1)).numpy()
             for i in (0, 17, 36)]
    # Row i of a batch draws from counters (seed, i): row 0 alone matches row 0.
    np.testing.assert_array_equal(parts[0][0], whole[0])
    assert parts[1].shape == (1, 64, 2)


# ------------------------------------------------------------- graphs, saving


def test_tf_function_unknown_shapes_and_saved_model(tmp_path):
    _, case, values = random_case(900, n=2, batch=4)
    program = [tf.constant(x) for x in case.inputs]
    angles = case.angles(values, tf.float32)

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
        def run(self, a):
            with tf.GradientTape() as tape:
                tape.watch(a)
                e = D.density_expectation(*program, a)
            return e, tape.gradient(tf.reduce_sum(e), a), D.density_probabilities(*program, a, [1, 0])

    module = Module()
    e, g, p = module.run(angles)
    np.testing.assert_allclose(e, case.expectations(values), atol=1e-5)
    tf.saved_model.save(module, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    e2, g2, p2 = loaded.run(angles)
    np.testing.assert_array_equal(e, e2)
    np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(p, p2)


def test_reloaded_saved_model_is_differentiable_in_a_fresh_process(tmp_path):
    """`import qkeras_hybrid` registers the density ops' gradients (TF looks
    them up by op type when a reloaded function is differentiated)."""
    _, case, values = random_case(901, n=2, batch=3)
    program = [tf.constant(x) for x in case.inputs]
    num_angles = case.angles(values, tf.float64).shape[1]

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, num_angles], tf.float64)])
        def run(self, a):
            return D.density_expectation(*program, a)

    tf.saved_model.save(Module(), str(tmp_path / "m"))
    angles = case.angles(values, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(angles)
        e = D.density_expectation(*program, angles)
    expected = tape.gradient(e, angles).numpy()
    np.save(tmp_path / "angles.npy", angles.numpy())
    out = run_fresh_python(f"""
        import numpy as np, tensorflow as tf
        import qkeras_hybrid
        m = tf.saved_model.load({str(tmp_path / "m")!r})
        a = tf.constant(np.load({str(tmp_path / "angles.npy")!r}))
        with tf.GradientTape() as tape:
            tape.watch(a)
            e = m.run(a)
        np.save({str(tmp_path / "grad.npy")!r}, tape.gradient(e, a).numpy())
        print("ok")
    """)
    assert "ok" in out
    np.testing.assert_allclose(np.load(tmp_path / "grad.npy"), expected, atol=1e-12)


# --------------------------------------------------------------- size, memory


def test_twelve_qubits():
    """rho on 12 qubits is a 24-qubit vector: an analytic check, forward and
    gradient (a reset restores from a checkpoint, depolarizing by inverse)."""
    n = 12
    q = cirq.LineQubit.range(n)
    t = sympy.Symbol("t")
    circuit = cirq.Circuit([cirq.ry(t)(x) for x in q] + [cirq.depolarize(0.1)(q[0]), cirq.depolarize(0.2)(q[5]),
                                                        cirq.amplitude_damp(0.3)(q[11])])
    case = DensityCase(circuit, q, [t], [cirq.Z(q[0]), cirq.Z(q[5]), cirq.Z(q[11]), cirq.Z(q[3]) * cirq.Z(q[4])])
    theta = 0.7
    up = np.array([[1.0, 1.0, 1.0, 1.0]], np.float32)
    e = D.density_expectation(*case.inputs, np.array([[theta]], np.float32)).numpy()[0]
    g = D.density_expectation_adjoint_grad(*case.inputs, np.array([[theta]], np.float32), up).numpy()[0, 0]
    c, s = np.cos(theta), np.sin(theta)
    # amplitude damping: <Z> = 1 - (1 - gamma) (1 - cos) = gamma + (1 - gamma) cos
    expected = [(1 - 0.4 / 3) * c, (1 - 0.8 / 3) * c, 0.3 + 0.7 * c, c * c]
    np.testing.assert_allclose(e, expected, atol=1e-5)
    np.testing.assert_allclose(g, -s * ((1 - 0.4 / 3) + (1 - 0.8 / 3) + 0.7 + 2 * c), atol=1e-4)


def test_checkpoint_memory_is_checked():
    """A gradient whose checkpoints cannot fit fails cleanly, naming them."""
    import os

    n = 13  # a 26-qubit vector: 1 GiB of float64 per checkpoint
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    resets = int(memory / 2**30) + 2
    q = cirq.LineQubit.range(n)
    t = sympy.Symbol("t")
    circuit = cirq.Circuit([cirq.ry(t)(x) for x in q] + [cirq.ResetChannel()(q[0])] * resets)
    case = DensityCase(circuit, q, [t], [cirq.Z(q[0])])
    with pytest.raises(tf.errors.ResourceExhaustedError, match=rf"{resets} checkpoints of the state"):
        D.density_expectation_adjoint_grad(*case.inputs, np.zeros((1, 1)), np.ones((1, 1)))


# ------------------------------------------------------------------ bad inputs


def _small_case():
    q = cirq.LineQubit.range(2)
    a = sympy.Symbol("a")
    circuit = cirq.Circuit(cirq.ry(a)(q[0]), cirq.depolarize(0.1, n_qubits=2)(*q), cirq.CNOT(*q))
    return DensityCase(circuit, q, [a], [cirq.Z(q[0])])


def test_bad_inputs_are_invalid_argument():
    case = _small_case()
    program = list(case.inputs)
    assert program[1].shape[1] == 8  # the 2-qubit channel's 4-qubit block
    angles = np.zeros((2, 1))
    raises = lambda match: pytest.raises(tf.errors.InvalidArgumentError, match=match)  # noqa: E731
    with raises(r"angles\[1, 0\] is not finite"):
        D.density_expectation(*program, np.array([[0.0], [np.nan]]))
    with raises(r"readout must have shape \[n, 2\] = \[2,2\]"):
        D.density_sample(*program, angles, [0], 5, [1, 2], np.zeros((3, 2)))
    with raises(r"readout\[1, 0\] = 1.5 must be a probability"):
        D.density_sampled_expectation(*program, angles, 5, [1, 2], np.array([[0, 0], [1.5, 0]]))
    with raises(r"qubits\[0\] = 2 is out of range \[0, 2\)"):
        D.density_probabilities(*program, angles, [2])
    with raises(r"upstream must have shape \[2,1\]"):
        D.density_expectation_adjoint_grad(*program, angles, np.zeros((2, 3)))
    odd = list(program)
    odd[0] = np.int32(3)
    with raises("num_qubits of a density program must be even"):
        D.density_expectation(*odd, angles)
    masks = program[4].copy()
    masks[0, 0, 1] = 1 << 2  # Z on column qubit 0
    with raises("physical register"):
        D.density_expectation(*program[:4], masks, program[5], angles)
    # A density program (superoperators, 8 columns) is not a pure program.
    with raises(r"block_meta must have shape \[num_blocks, 7\]"):
        ops.expectation(*program, angles)
    seven = list(program)
    seven[1] = program[1][:, :7]
    with raises("block size must be 1, 2 or 3 qubits"):
        ops.expectation(*seven, angles)
    one_qubit = _one_qubit_channel_program()
    with raises(r"a superoperator \(gate type 4\) runs only in the density ops"):
        ops.expectation(*one_qubit, np.zeros((1, 1)))
    gm = program[2].copy()
    gm[gm[:, 0] == SUPEROPERATOR, 3] = 3
    with raises("num_terms of a superoperator must be 1"):
        D.density_expectation(*program[:2], gm, *program[3:], angles)


def _one_qubit_channel_program():
    q = cirq.LineQubit.range(1)
    a = sympy.Symbol("a")
    return DensityCase(cirq.Circuit(cirq.ry(a)(q[0]), cirq.amplitude_damp(0.2)(q[0])), q, [a], [cirq.Z(q[0])]).inputs


def test_channels_need_a_rewrite():
    with pytest.raises(ValueError, match="density_primitives .* or trajectory_primitives"):
        build_program(1, [Primitive(qubits=(0,), kraus=np.array(cirq.kraus(cirq.bit_flip(0.1))))], [[(1.0, 0, 1)]])
    with pytest.raises(ValueError, match=r"kraus must have shape \[m, 4, 4\]"):
        Primitive(qubits=(0, 1), kraus=np.eye(2)[None])
    prims = density_primitives([Primitive(qubits=(0,), kraus=np.array(cirq.kraus(cirq.bit_flip(0.1))))], 1)
    with pytest.raises(ValueError, match="not Kraus selections or superoperators"):
        density_primitives(prims, 1)
    # Selection gate types are for the pure ops only.
    assert SELECTION != NONUNITARY_SELECTION
