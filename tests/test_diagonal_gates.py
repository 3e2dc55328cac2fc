"""Symbolic diagonal gates (DiagonalGate, TwoQubitDiagonalGate, ThreeQubitDiagonalGate)
are lowered to one exponential per basis state, on any qubits in any order."""

import cirq
import numpy as np
import pytest
import sympy
import tensorflow as tf

import qkeras_hybrid
from conftest import cirq_expectations



@pytest.mark.parametrize("which", [0, 1, 2])
def test_symbolic_diagonal_gates_on_scattered_qubits_match_cirq(which):
    q = cirq.LineQubit.range(4)
    a = sympy.symbols("a0:8")
    gate, on = [
        (cirq.ThreeQubitDiagonalGate([a[0], 2 * a[1], 0.3, a[2], a[3] + a[4], 0.0, a[5], a[6]]), (q[3], q[0], q[2])),
        (cirq.TwoQubitDiagonalGate([a[0], a[1] * a[2], 0.1, a[3]]), (q[2], q[0])),
        (cirq.DiagonalGate([a[0], a[1]]), (q[1],)),
    ][which]
    circuit = cirq.Circuit(cirq.H.on_each(*q), cirq.ry(0.4)(q[1]), gate.on(*on), cirq.H.on_each(*q))
    observables = [cirq.Z(q[0]), cirq.Z(q[2]) * cirq.X(q[3]), cirq.Y(q[1])]
    symbols = sorted(cirq.parameter_symbols(circuit), key=str)
    compiled = qkeras_hybrid.compile_circuit(circuit, observables, symbols=symbols)
    values = np.random.default_rng(which).uniform(-2, 2, size=(2, len(symbols)))
    expected = cirq_expectations(circuit, observables, symbols, values)
    np.testing.assert_allclose(compiled.expectation(values, tf.float64), expected, atol=1e-10)
