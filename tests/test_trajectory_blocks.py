"""Trajectory programs: Kraus-selection blocks in the ordinary (pure-state)
ops, `circuits.program.trajectory_primitives` / `trajectory_choices` and
`ops.density.sample_kraus_choices`.

References: with the choices fixed, a trajectory is a fixed (non-unitary)
circuit, checked against Cirq's unitary of the same matrices and central
finite differences; drawn at random, the trajectories' mean expectation and
mean adjoint gradient converge to the density matrix's (the density ops,
themselves checked against Cirq in test_density_ops.py) within their
standard errors.
"""

import numpy as np
import pytest
import scipy.stats
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid as qh
from qkeras_hybrid import ops
from qkeras_hybrid.circuits import observables as obs_lib
from qkeras_hybrid.circuits.angles import AngleMap
from qkeras_hybrid.circuits.program import (
    JUMP_SELECTION, NONUNITARY_SELECTION, SELECTION, build_program, trajectory_choices, trajectory_primitives)
from qkeras_hybrid.ops import density as D
from qkeras_hybrid.ops import measure as M

from test_density_ops import DensityCase, lower, random_case


class TrajectoryCase:
    """The trajectory program of a DensityCase's circuit."""

    def __init__(self, case, jumps=False):
        self.case = case
        prims = trajectory_primitives(lower(case.circuit, case.qubits, case.symbols), jumps=jumps)
        self.choices = trajectory_choices(prims)
        self.symbols = list(case.symbols) + [c.symbol for c in self.choices]
        index_of = {q: i for i, q in enumerate(case.qubits)}
        terms = [obs_lib.cirq_terms(o, index_of) for o in case.observables]
        self.primitives = prims
        self.program = build_program(case.n, prims, terms, self.symbols)
        self.inputs = self.program.as_tuple()
        self.angle_map = AngleMap(self.program.angle_exprs, self.symbols)

    def angles(self, values, ks, dtype=tf.float64):
        return self.angle_map(tf.constant(np.concatenate([values, ks], axis=1), dtype))

    def reference(self, row, ks):
        """<psi|O|psi>, psi the circuit with each channel replaced by its chosen matrix."""
        case = self.case
        ops_, c = [], 0
        selections = [p for p in self.primitives if p.is_selection]
        for op in case.circuit.all_operations():
            if not cirq.is_parameterized(op) and not cirq.has_unitary(op):
                m = selections[c].kraus[int(ks[c])]
                ops_.append(cirq.MatrixGate(m, unitary_check=False).on(*op.qubits))
                c += 1
            else:
                ops_.append(op)
        resolver = cirq.ParamResolver({s: float(v) for s, v in zip(case.symbols, row)})
        psi = cirq.resolve_parameters(cirq.Circuit(ops_), resolver).unitary(qubit_order=case.qubits)[:, 0]
        return np.array([np.real(psi.conj() @ o.matrix(case.qubits) @ psi) for o in case.observables])


def _draw(traj, rows, seed):
    return D.sample_kraus_choices(traj.choices, rows, seed, tf.float64).numpy()


def test_selection_kinds_and_probabilities():
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.H(q[0]), cirq.depolarize(0.3)(q[0]), cirq.CNOT(*q), cirq.amplitude_damp(0.4)(q[1]),
                           cirq.depolarize(0.2, n_qubits=2)(*q), cirq.ResetChannel()(q[0]))
    traj = TrajectoryCase(DensityCase(circuit, q, [], [cirq.Z(q[0])]))
    assert [c.unitary for c in traj.choices] == [True, False, True, False]
    np.testing.assert_allclose(traj.choices[0].probabilities, [0.7, 0.1, 0.1, 0.1])
    # amplitude damping: q_k = tr(K^dag K) / 2 = (1 + (1 - g)) / 2, g / 2
    np.testing.assert_allclose(traj.choices[1].probabilities, [0.8, 0.2])
    assert len(traj.choices[2].probabilities) == 16
    gm = traj.program.gate_meta
    assert list(gm[gm[:, 0] >= SELECTION, 0]) == [SELECTION, NONUNITARY_SELECTION, SELECTION, NONUNITARY_SELECTION]
    # The selection slots follow the circuit's symbols (none here).
    assert list(gm[gm[:, 0] >= SELECTION, 1]) == [0, 1, 2, 3]


def test_noiseless_program_is_unchanged():
    q = cirq.LineQubit.range(3)
    a = sympy.Symbol("a")
    circuit = cirq.Circuit(cirq.ry(a)(q[0]), cirq.CNOT(q[0], q[1]), cirq.rx(2 * a + 1)(q[2]))
    cc = qh.compile_circuit(circuit, [cirq.Z(q[0])])
    traj = TrajectoryCase(DensityCase(circuit, q, [a], [cirq.Z(q[0])]))
    assert traj.choices == []
    for x, y in zip(cc.program.as_tuple(), traj.inputs):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("seed", range(6))
def test_fixed_choices_match_cirq_and_finite_differences(seed):
    """Every op that runs pure programs runs trajectory programs: values
    against Cirq, gradients (through checkpoints for non-unitary choices)
    against central finite differences."""
    rng, case, values = random_case(1000 + seed, batch=3, num_channels=4)
    traj = TrajectoryCase(case)
    ks = _draw(traj, len(values), [seed, 1])
    angles = traj.angles(values, ks)
    expected = np.array([traj.reference(row, k) for row, k in zip(values, ks)])
    for dtype, atol in ((tf.float64, 1e-10), (tf.float32, 1e-5)):
        got = ops.expectation(*traj.inputs, tf.cast(angles, dtype))
        np.testing.assert_allclose(got, expected, atol=atol * max(1, np.abs(expected).max()))
    weights = rng.normal(size=expected.shape)
    selection_slots = [traj.symbols.index(c.symbol) for c in traj.choices]

    def fd(f):  # the selection slots stay integers: their derivative is 0
        out = np.zeros(tuple(angles.shape))
        for idx in np.ndindex(tuple(angles.shape)):
            if idx[1] in selection_slots:
                continue
            plus, minus = angles.numpy().copy(), angles.numpy().copy()
            plus[idx] += 1e-5
            minus[idx] -= 1e-5
            out[idx] = (f(plus) - f(minus)) / 2e-5
        return out

    def check(got, expected):
        np.testing.assert_allclose(got, expected, atol=1e-6 * max(1, np.abs(expected).max()))

    grad = ops.expectation_adjoint_grad(*traj.inputs, angles, weights).numpy()
    check(grad, fd(lambda a: float(np.sum(weights * ops.expectation(*traj.inputs, a).numpy()))))
    _, final = ops.expectation_and_state(*traj.inputs, angles)
    check(ops.expectation_adjoint_grad_from_final_state(*traj.inputs, angles, final, weights), grad)
    # Probabilities and the state, with their adjoint gradients.
    measured = [int(i) for i in rng.permutation(case.n)[:min(2, case.n)]]
    pw = rng.normal(size=(len(values), 2 ** len(measured)))
    check(M.probabilities_adjoint_grad(traj.inputs, angles, measured, pw),
          fd(lambda a: float(np.sum(pw * M.probabilities(traj.inputs, a, measured).numpy()))))
    state = M.state(traj.inputs, angles)
    sw = rng.normal(size=state.shape)
    check(M.state_adjoint_grad(traj.inputs, angles, state, sw),
          fd(lambda a: float(np.sum(sw * M.state(traj.inputs, a).numpy()))))


@pytest.mark.parametrize("seed", range(3))
def test_trajectories_converge_to_the_density_matrix(seed):
    """Mean expectation and mean adjoint gradient of N trajectories are
    within a few standard errors of the exact (density-matrix) values."""
    rng, case, values = random_case(1100 + seed, n=3, batch=1, num_channels=5)
    traj = TrajectoryCase(case)
    assert traj.choices
    n_traj = 4000
    rows = np.repeat(values, n_traj, axis=0)
    ks = _draw(traj, n_traj, [seed, 2])
    angles = traj.angles(rows, ks)
    weights = rng.normal(size=(1, len(case.observables)))
    e = ops.expectation(*traj.inputs, angles).numpy()
    exact = D.density_expectation(*case.inputs, case.angles(values, tf.float64)).numpy()[0]
    se = e.std(axis=0) / np.sqrt(n_traj)
    assert np.all(np.abs(e.mean(axis=0) - exact) <= 4.5 * se + 1e-12), (e.mean(axis=0), exact, se)
    # Gradients with respect to the circuit's symbols, through the angle maps.
    v = tf.constant(rows)
    with tf.GradientTape() as tape:
        tape.watch(v)
        per = tf.reduce_sum(weights * ops.expectation(
            *traj.inputs, traj.angle_map(tf.concat([v, tf.constant(ks)], 1))), axis=1)
    g = tape.gradient(per, v).numpy()
    x = tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(weights * D.density_expectation(*case.inputs, case.angle_map(x)))
    exact_g = tape.gradient(total, x).numpy()[0]
    se = g.std(axis=0) / np.sqrt(n_traj)
    assert np.all(np.abs(g.mean(axis=0) - exact_g) <= 4.5 * se + 1e-12), (g.mean(axis=0), exact_g, se)


def test_biased_scaling_would_be_detected():
    """The convergence test can fail: trajectories drawn with the wrong
    probabilities (uniform instead of q_k) miss the density matrix."""
    q = cirq.LineQubit.range(1)
    circuit = cirq.Circuit(cirq.H(q[0]), cirq.amplitude_damp(0.5)(q[0]), cirq.H(q[0]))
    case = DensityCase(circuit, q, [], [cirq.Z(q[0])])
    traj = TrajectoryCase(case)
    exact = D.density_expectation(*case.inputs, np.zeros((1, 0))).numpy()[0, 0]
    ks = np.random.default_rng(0).integers(0, 2, size=(4000, 1)).astype(float)  # uniform: wrong
    e = ops.expectation(*traj.inputs, ks)[:, 0].numpy()
    assert abs(e.mean() - exact) > 6 * e.std() / np.sqrt(len(e))
    ks = _draw(traj, 4000, [0, 3])
    e = ops.expectation(*traj.inputs, ks)[:, 0].numpy()
    assert abs(e.mean() - exact) < 4.5 * e.std() / np.sqrt(len(e))


def test_sample_kraus_choices_frequencies_and_determinism():
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.asymmetric_depolarize(0.1, 0.2, 0.3)(q[0]), cirq.amplitude_damp(0.4)(q[1]))
    traj = TrajectoryCase(DensityCase(circuit, q, [], [cirq.Z(q[0])]))
    draws = D.sample_kraus_choices(traj.choices, 20000, [4, 5], tf.float32).numpy()
    assert draws.shape == (20000, 2) and draws.dtype == np.float32
    np.testing.assert_array_equal(draws, D.sample_kraus_choices(traj.choices, 20000, [4, 5], tf.float32))
    assert not np.array_equal(draws, D.sample_kraus_choices(traj.choices, 20000, [4, 6], tf.float32))
    for column, choice in enumerate(traj.choices):
        counts = np.bincount(draws[:, column].astype(int), minlength=len(choice.probabilities))
        assert len(counts) == len(choice.probabilities)
        chi2 = np.sum((counts - 20000 * choice.probabilities) ** 2 / (20000 * choice.probabilities))
        assert scipy.stats.chi2.sf(chi2, len(counts) - 1) > 1e-4
    assert D.sample_kraus_choices([], 3, [1, 1]).shape == (3, 0)


@pytest.mark.parametrize("value, message", [
    (4.0, r"angles\[1, 0\] = 4 selects a Kraus operator of gate_meta\[1\]: it must be an integer in \[0, 4\)"),
    (-1.0, r"= -1 selects a Kraus operator"),
    (0.5, r"= 0.5 selects a Kraus operator"),
    (np.nan, r"angles\[1, 0\] is not finite"),
])
def test_bad_selection_values_are_invalid_argument(value, message):
    q = cirq.LineQubit.range(1)
    traj = TrajectoryCase(DensityCase(cirq.Circuit(cirq.H(q[0]), cirq.depolarize(0.1)(q[0])), q, [], [cirq.Z(q[0])]))
    angles = np.array([[0.0], [value]])
    for run in (lambda a: ops.expectation(*traj.inputs, a),
                lambda a: ops.expectation_adjoint_grad(*traj.inputs, a, np.ones((2, 1))),
                lambda a: M.sample(traj.inputs, a, [0], 3, [1, 1])):
        for dtype in (np.float32, np.float64):
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                run(angles.astype(dtype))


def test_selections_are_rejected_by_the_density_ops():
    q = cirq.LineQubit.range(1)
    traj = TrajectoryCase(DensityCase(cirq.Circuit(cirq.depolarize(0.1)(q[0])), q, [], [cirq.Z(q[0])]))
    program = list(traj.inputs)
    program[0] = np.int32(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="runs in the pure-state ops only"):
        D.density_expectation(*program, np.zeros((1, 1)))


# -------------------------------------------------------------- quantum jumps


def _damped_case():
    q = cirq.LineQubit.range(2)
    a = sympy.Symbol("a")
    circuit = cirq.Circuit(cirq.ry(a)(q[0]), cirq.H(q[1]), cirq.amplitude_damp(0.4)(q[0]), cirq.CNOT(*q),
                           cirq.depolarize(0.2)(q[1]), cirq.generalized_amplitude_damp(0.3, 0.5)(q[1]),
                           cirq.rx(a)(q[0]), cirq.ResetChannel()(q[1]), cirq.H(q[1]),
                           cirq.amplitude_damp(0.3)(q[1]))
    return DensityCase(circuit, q, [a], [cirq.Z(q[0]), cirq.X(q[1]) * cirq.Z(q[0]), cirq.Y(q[0])])


def test_quantum_jumps_are_normalized_draws_from_rho():
    """Jump trajectories are normalized states; their samples are draws from
    rho (chi-square against the density matrix's diagonal), their sampled
    and exact expectations average to tr(O rho)."""
    case = _damped_case()
    traj = TrajectoryCase(case, jumps=True)
    gm = traj.program.gate_meta
    # Depolarizing stays a Kraus selection: its choice does not depend on the state.
    assert list(gm[gm[:, 0] >= SELECTION, 0]) == [JUMP_SELECTION, SELECTION] + [JUMP_SELECTION] * 3
    assert [c.jump for c in traj.choices] == [True, False, True, True, True]
    n_traj = 6000
    values = np.array([[0.9]])
    ks = _draw(traj, n_traj, [1, 2])
    assert np.all((ks[:, 0] >= 0) & (ks[:, 0] < 1)) and set(np.unique(ks[:, 1])) <= {0, 1, 2, 3}
    angles = traj.angles(np.repeat(values, n_traj, axis=0), ks)
    state = M.state(traj.inputs, angles).numpy()
    np.testing.assert_allclose(np.sum(state**2, axis=(1, 2)), 1.0, atol=1e-12)
    exact = case.expectations(values)[0]
    e = ops.expectation(*traj.inputs, angles).numpy()
    se = e.std(axis=0) / np.sqrt(n_traj)
    assert np.all(np.abs(e.mean(axis=0) - exact) <= 4.5 * se + 1e-12), (e.mean(axis=0), exact, se)
    samples = M.sample(traj.inputs, angles, [0, 1], 1, [3, 4]).numpy()[:, 0]
    counts = np.bincount(samples @ [2, 1], minlength=4)
    p = np.real(np.diag(case.rho(values[0])))
    keep = p > 1e-12
    assert counts[~keep].sum() == 0
    chi2 = np.sum((counts[keep] - n_traj * p[keep]) ** 2 / (n_traj * p[keep]))
    assert scipy.stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4
    sampled = M.sampled_expectation(traj.inputs, angles, 4, [5, 6]).numpy()
    se = sampled.std(axis=0) / np.sqrt(n_traj)
    assert np.all(np.abs(sampled.mean(axis=0) - exact) <= 4.5 * se + 1e-12)
    # The same trajectories without jumps are unnormalized, and their samples
    # (normalized per row) are biased: this is what jumps are for.
    plain = TrajectoryCase(case)
    plain_angles = plain.angles(np.repeat(values, n_traj, axis=0), _draw(plain, n_traj, [1, 2]))
    norms = np.sum(M.state(plain.inputs, plain_angles).numpy() ** 2, axis=(1, 2))
    assert norms.std() > 0.1


def test_quantum_jump_choice_follows_the_state():
    """Amplitude damping of |1>: K_1 (the decay) has probability gamma; of
    |0>: never. The draw u picks it below that probability."""
    q = cirq.LineQubit.range(1)
    for prep, p_decay in ((cirq.X(q[0]), 0.3), (cirq.I(q[0]), 0.0)):
        case = DensityCase(cirq.Circuit(prep, cirq.amplitude_damp(0.3)(q[0])), q, [], [cirq.Z(q[0])])
        traj = TrajectoryCase(case, jumps=True)
        u = np.array([[0.0], [0.25], [0.35], [0.69], [0.71], [0.999]])
        e = ops.expectation(*traj.inputs, u)[:, 0].numpy()
        # Kraus order (K_0 no decay, K_1 decay): k = 0 while u < P(K_0).
        decayed = u[:, 0] >= 1 - p_decay
        np.testing.assert_allclose(e, np.where(decayed, 1.0, -1.0 if p_decay else 1.0), atol=1e-12)


def test_quantum_jump_programs_have_no_adjoint_gradient():
    traj = TrajectoryCase(_damped_case(), jumps=True)
    angles = traj.angles(np.array([[0.3]]), np.array([[0.5, 1.0, 0.5, 0.5, 0.5]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="quantum-jump selections .* no adjoint gradient"):
        ops.expectation_adjoint_grad(*traj.inputs, angles, np.ones((1, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no adjoint gradient"):
        M.probabilities_adjoint_grad(traj.inputs, angles, [0], np.ones((1, 2)))
    bad = angles.numpy().copy()
    bad[0, 1] = 1.0
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"angles\[0, 1\] = 1 is the uniform draw of the quantum-jump selection"):
        ops.expectation(*traj.inputs, bad)
