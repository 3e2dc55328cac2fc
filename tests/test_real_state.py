"""Circuits whose state stays real (Ry, H, CNOT, CZ, X, Z; observables with an
even number of Y factors) take the op's real-state path: check it against Cirq
and finite differences, including the blocks fused at 10+ qubits."""

import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid
from conftest import cirq_expectations


def real_circuit(n, seed):
    rng = np.random.default_rng(seed)
    q = cirq.LineQubit.range(n)
    symbols = sympy.symbols(f"s0:{3 * n}")
    ops = [cirq.H(q[0]), cirq.X(q[-1])]
    for k, s in enumerate(symbols):
        i = int(rng.integers(n))
        ops.append(cirq.ry(2 * s + 0.3)(q[i]))
        j = (i + 1 + int(rng.integers(n - 1))) % n
        ops.append([cirq.CNOT, cirq.CZ, cirq.SWAP][k % 3](q[i], q[j]))
        if k % 5 == 0:
            ops.append(cirq.Z(q[j]))
    observables = [cirq.Z(q[0]), cirq.X(q[1]) * cirq.Z(q[-1]), 0.5 * cirq.Y(q[0]) * cirq.Y(q[1]) + cirq.Z(q[1])]
    return cirq.Circuit(ops), observables, list(symbols), q


@pytest.mark.parametrize("n, seed", [(3, 0), (4, 1), (7, 2), (11, 3), (12, 4)])
def test_real_state_path_matches_cirq_and_finite_differences(n, seed):
    circuit, observables, symbols, _ = real_circuit(n, seed)
    compiled = qkeras_hybrid.compile_circuit(circuit, observables, symbols=symbols)
    kinds = set(compiled.program.block_meta[:, 4].tolist())
    assert kinds <= {2, 3}, f"expected only real blocks, got kinds {kinds}"
    values = np.random.default_rng(seed).uniform(-2, 2, size=(3, len(symbols)))
    expected = cirq_expectations(circuit, observables, symbols, values)
    np.testing.assert_allclose(compiled.expectation(values, tf.float64), expected, atol=1e-10)
    np.testing.assert_allclose(compiled.expectation(values, tf.float32), expected, atol=1e-5)

    weights = np.array([1.0, -0.7, 0.4])
    x = tf.constant(values)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(compiled.expectation(x, tf.float64) * weights)
    grad = tape.gradient(loss, x).numpy()

    def f(v):
        return float(np.sum(compiled.expectation(v, tf.float64).numpy() * weights))

    eps = 1e-6
    for idx in [(0, 0), (1, len(symbols) // 2), (2, len(symbols) - 1)]:
        d = np.zeros_like(values)
        d[idx] = eps
        assert grad[idx] == pytest.approx((f(values + d) - f(values - d)) / (2 * eps), abs=1e-6)

