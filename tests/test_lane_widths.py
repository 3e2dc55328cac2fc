"""Batches that run 16 samples per simulator.

Up to 14 qubits, a batch of at least 32 samples runs 16 interleaved lanes per
simulator; a smaller batch runs 8, and a single row runs 8 lanes of which 7
repeat it. Every row of a wide batch must therefore equal the same row run
alone (a different lane width, other padding), and agree with Cirq's
simulator and with finite differences.
"""

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid as qh
from qkeras_hybrid.circuits import cirq_to_native_order

from conftest import (central_fd, cirq_expectations, random_cirq_circuit, random_pauli_sum,
                      weighted_grad)

WIDE_BATCHES = [32, 33, 47]  # a multiple of 16, one over it, padding lanes in the last group


def _random_case(seed, num_qubits, batch):
    rng = np.random.default_rng(900 + seed)
    symbols = list(sympy.symbols("a b c"))
    _, bare, qubits = random_cirq_circuit(rng, num_qubits, int(rng.integers(6, 3 * num_qubits + 8)),
                                          symbols, measure=False)
    observables = [random_pauli_sum(rng, qubits) for _ in range(3)]
    used = sorted(cirq.parameter_symbols(bare), key=str)
    values = rng.uniform(-np.pi, np.pi, size=(batch, len(used)))
    weights = rng.normal(size=(batch, len(observables)))
    return bare, observables, used, values, weights


@pytest.mark.parametrize("seed,num_qubits,batch", [
    (0, 1, 32), (1, 2, 33), (2, 3, 47), (3, 4, 40), (4, 5, 32), (5, 7, 33), (6, 9, 47), (7, 14, 33),
])
def test_wide_batch_rows_equal_rows_run_alone(seed, num_qubits, batch):
    bare, observables, used, values, weights = _random_case(seed, num_qubits, batch)
    if not used:
        pytest.skip("circuit drew no symbolic parameter")
    cc = qh.compile_circuit(bare, observables, symbols=used)
    rows = [0, 9, 15, 16, batch - 1]
    for dtype, atol in ((tf.float64, 1e-12), (tf.float32, 2e-6)):
        e, g = weighted_grad(cc, values, weights, dtype)
        for b in rows:
            e1, g1 = weighted_grad(cc, values[b:b + 1], weights[b:b + 1], dtype)
            np.testing.assert_allclose(e[b], e1[0], atol=atol, err_msg=f"{dtype.name} row {b}")
            np.testing.assert_allclose(g[b], g1[0], atol=10 * atol, err_msg=f"{dtype.name} row {b}")
    expected = cirq_expectations(bare, observables, used, values[rows])
    e64, g64 = weighted_grad(cc, values, weights, tf.float64)
    np.testing.assert_allclose(e64[rows], expected, atol=1e-10)
    e32, _ = weighted_grad(cc, values, weights, tf.float32)
    np.testing.assert_allclose(e32[rows], expected, atol=1e-5)
    if num_qubits <= 5:  # finite differences of Cirq, two rows (one in the second group)
        for b in (1, 17):
            def f(row, b=b):
                return float(np.sum(weights[b] * cirq_expectations(bare, observables, used, row[None])[0]))
            np.testing.assert_allclose(g64[b], central_fd(f, values[b]), atol=1e-6, err_msg=f"row {b}")


@pytest.mark.parametrize("batch", WIDE_BATCHES)
def test_wide_batch_from_states_and_state_gradient(batch):
    """The from-state op in a wide batch: each row from its own state, and the
    gradient with respect to the state, row by row against the row run alone."""
    rng = np.random.default_rng(batch)
    n = 4
    q = cirq.LineQubit.range(n)
    a, b = sympy.symbols("a b")
    circuit = cirq.Circuit(cirq.rx(a)(q[0]), cirq.CNOT(q[0], q[1]), cirq.ry(b)(q[2]),
                           cirq.ISWAP(q[1], q[2]) ** 0.3, cirq.rz(a * b)(q[3]), cirq.CZ(q[3], q[0]))
    observables = [cirq.Z(q[0]) * cirq.X(q[2]), cirq.Y(q[1]) + 0.5 * cirq.Z(q[3])]
    cc = qh.compile_circuit(circuit, observables, qubits=q)
    psi = rng.normal(size=(batch, 2**n)) + 1j * rng.normal(size=(batch, 2**n))
    psi /= np.linalg.norm(psi, axis=1, keepdims=True)
    states = cirq_to_native_order(tf.constant(psi), n).numpy()
    values = rng.uniform(-2, 2, size=(batch, 2))
    weights = rng.normal(size=(batch, 2))

    def run(s, v, w):
        s, v = tf.constant(s), tf.constant(v)
        with tf.GradientTape() as tape:
            tape.watch([s, v])
            e = cc.expectation_from_state(s, v, dtype=tf.float64)
            loss = tf.reduce_sum(tf.constant(w) * e)
        ds, dv = tape.gradient(loss, [s, v])
        return e.numpy(), ds.numpy(), dv.numpy()

    e, ds, dv = run(states, values, weights)
    sim = cirq.Simulator(dtype=np.complex128)
    for r in (0, 16, batch - 1):
        e1, ds1, dv1 = run(states[r:r + 1], values[r:r + 1], weights[r:r + 1])
        np.testing.assert_allclose(e[r], e1[0], atol=1e-12)
        np.testing.assert_allclose(ds[r], ds1[0], atol=1e-12)
        np.testing.assert_allclose(dv[r], dv1[0], atol=1e-12)
        final = sim.simulate(circuit, cirq.ParamResolver({a: values[r, 0], b: values[r, 1]}),
                             qubit_order=q, initial_state=psi[r].astype(np.complex128)).final_state_vector
        index = {qq: i for i, qq in enumerate(q)}
        ref = [o.expectation_from_state_vector(final, index).real for o in observables]
        np.testing.assert_allclose(e[r], ref, atol=1e-10)
