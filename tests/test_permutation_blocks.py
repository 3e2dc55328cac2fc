"""Constant blocks that only move amplitudes: CNOT, SWAP, X, CCX, cyclic
MatrixGates, and fused products such as CNOT(a,b) CNOT(b,a) that are not
their own inverse, so a backward sweep that applied the block instead of its
inverse would be caught (the random-circuit tests mostly draw involutions).
Real and complex states both. References: Cirq's simulator and central
finite differences in float64.
"""

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid as qh

from conftest import central_fd, cirq_expectations, weighted_grad

a, b, c = sympy.symbols("a b c")
q = cirq.LineQubit.range(4)
CYCLE3 = cirq.MatrixGate(np.roll(np.eye(8), 1, axis=0))  # |x> -> |x+1 mod 8>
CYCLE2 = cirq.MatrixGate(np.eye(4)[[2, 0, 3, 1]])


def _circuits():
    rotations = [cirq.ry(a)(q[0]), cirq.ry(b)(q[1]), cirq.ry(c)(q[2]), cirq.ry(a + b)(q[3])]
    phases = [cirq.rz(b)(q[0]), cirq.rx(c)(q[2])]  # make the state complex
    permutations = {
        "cnot_pair": [cirq.CNOT(q[0], q[1]), cirq.CNOT(q[1], q[0])],
        "swap_then_cnot": [cirq.SWAP(q[1], q[2]), cirq.CNOT(q[2], q[1])],
        "cycle3": [CYCLE3(q[0], q[1], q[2])],
        "cycle2": [CYCLE2(q[3], q[1])],
        "ccx_x": [cirq.CCX(q[0], q[1], q[2]), cirq.X(q[3])],
    }
    for name, perm in permutations.items():
        for complex_state in (False, True):
            ops = rotations + (phases if complex_state else []) + perm
            ops += [cirq.ry(2 * c)(q[1]), cirq.CNOT(q[2], q[3])] + perm + [cirq.rx(a)(q[2])]
            yield pytest.param(cirq.Circuit(ops), id=f"{name}-{'complex' if complex_state else 'real'}")


@pytest.mark.parametrize("circuit", list(_circuits()))
def test_permutation_blocks_match_cirq_and_finite_differences(circuit):
    observables = [cirq.Z(q[0]) * cirq.X(q[1]), cirq.Y(q[2]) + 0.5 * cirq.Z(q[3]), cirq.X(q[0]) * cirq.Y(q[3])]
    symbols = [a, b, c]
    cc = qh.compile_circuit(circuit, observables, symbols=symbols, qubits=q)
    values = np.random.default_rng(3).uniform(-2, 2, size=(5, 3))
    got = cc.expectation(tf.constant(values), tf.float64).numpy()
    np.testing.assert_allclose(got, cirq_expectations(circuit, observables, symbols, values), atol=1e-10)
    weights = np.random.default_rng(4).normal(size=got.shape)
    _, grad = weighted_grad(cc, values, weights)
    fd = central_fd(lambda x: float(np.sum(weights * cc.expectation(tf.constant(x), tf.float64).numpy())), values)
    np.testing.assert_allclose(grad, fd, atol=1e-6)
