"""The native op against Cirq's complex128 simulator on random circuits."""

import functools

import numpy as np
import pytest
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid

from conftest import (cirq_expectations, random_cirq_circuit, random_pauli_sum,
                      single_gate_circuits)

NUM_SEEDS = 200
BATCH = 2
# 1 and 2 are the fuser's defaults; 3 (blocks as large as the op allows) on a subset.
CASES = [(seed, fuse) for seed in range(NUM_SEEDS) for fuse in (1, 2)]
CASES += [(seed, 3) for seed in range(0, NUM_SEEDS, 4)]


@functools.lru_cache(maxsize=8)
def _case(seed):
    """A random circuit, observables, symbol values and Cirq's expectations."""
    rng = np.random.default_rng(seed)
    num_qubits = 1 + seed % 10  # every size 1..10 appears equally often
    symbols = [sympy.Symbol(n) for n in ["a", "b", "c", "theta"][: int(rng.integers(0, 5))]]
    num_ops = int(rng.integers(3, 4 * num_qubits + 6))
    circuit, bare, qubits = random_cirq_circuit(rng, num_qubits, num_ops, symbols)
    observables = [random_pauli_sum(rng, qubits) for _ in range(int(rng.integers(1, 4)))]
    used = sorted(cirq.parameter_symbols(bare), key=str)
    values = rng.uniform(-np.pi, np.pi, size=(BATCH, len(used)))
    expected = cirq_expectations(bare, observables, used, values)
    return circuit, observables, used, values, expected


@pytest.mark.parametrize("seed,fuse", CASES)
def test_random_circuit_matches_cirq(seed, fuse):
    circuit, observables, used, values, expected = _case(seed)
    cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
    assert cc.symbol_names == [str(s) for s in used]
    assert cc.num_qubits == len(circuit.all_qubits())
    got64 = cc.expectation(values, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got64, expected, rtol=0, atol=1e-10,
                               err_msg=f"float64, seed={seed}, max_fused_qubits={fuse}\n{circuit}")
    got32 = cc.expectation(values, dtype=tf.float32).numpy()
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, expected, rtol=0, atol=1e-5,
                               err_msg=f"float32, seed={seed}, max_fused_qubits={fuse}\n{circuit}")


@pytest.mark.parametrize("seed", range(0, NUM_SEEDS, 7))
def test_default_fusion_matches_explicit(seed):
    circuit, observables, used, values, expected = _case(seed)
    default = qkeras_hybrid.compile_circuit(circuit, observables)
    one = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=1)
    two = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=2)
    a, b, c = (x.expectation(values, dtype=tf.float64).numpy() for x in (default, one, two))
    np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(a, c, atol=1e-12)
    np.testing.assert_allclose(a, expected, atol=1e-10)


@pytest.mark.parametrize("fuse", (1, 2, 3))
@pytest.mark.parametrize("circuit", [pytest.param(c, id=name) for name, c in single_gate_circuits()])
def test_each_gate_family_matches_cirq(circuit, fuse):
    qubits = sorted(circuit.all_qubits())
    rng = np.random.default_rng(0)
    observables = [cirq.X(q) for q in qubits] + [cirq.Y(q) for q in qubits] + [cirq.Z(q) for q in qubits]
    observables += [random_pauli_sum(rng, qubits, max_terms=4) for _ in range(3)]
    symbols = sorted(cirq.parameter_symbols(circuit), key=str)
    values = rng.uniform(-np.pi, np.pi, size=(2, len(symbols)))
    expected = cirq_expectations(circuit, observables, symbols, values)
    cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
    got = cc.expectation(values, dtype=tf.float64).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10, err_msg=str(circuit))


def test_explicit_qubit_register_and_symbol_order():
    """qubits= adds idle qubits and fixes the order; symbols= fixes the value order."""
    a, b = sympy.symbols("a b")
    q = cirq.LineQubit.range(4)
    circuit = cirq.Circuit(cirq.rx(a)(q[1]), cirq.CNOT(q[1], q[3]), cirq.ry(b)(q[3]))
    observables = [cirq.Z(q[3]), cirq.X(q[0]) + 0.5 * cirq.Z(q[2]), cirq.Z(q[1]) * cirq.Z(q[3])]
    register = [q[3], q[0], q[2], q[1]]
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=[b, "a"], qubits=register)
    assert cc.symbol_names == ["b", "a"] and cc.num_qubits == 4
    values_ba = np.array([[0.3, 1.2], [-2.0, 0.4]])
    full = cirq.Circuit(circuit, cirq.I.on_each(*q))
    expected = cirq_expectations(full, observables, [b, a], values_ba)
    np.testing.assert_allclose(cc.expectation(values_ba, dtype=tf.float64), expected, atol=1e-10)


def test_circuit_without_gates_and_constant_circuit():
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.I.on_each(*q), cirq.measure(*q))
    cc = qkeras_hybrid.compile_circuit(circuit, [cirq.Z(q[0]), cirq.X(q[1]), 2.0 * cirq.Z(q[0]) * cirq.Z(q[1]) - 0.5])
    np.testing.assert_allclose(cc.expectation(np.zeros((3, 0)), dtype=tf.float64), [[1, 0, 1.5]] * 3, atol=1e-12)
    circuit = cirq.Circuit(cirq.H(q[0]), cirq.CNOT(*q), cirq.S(q[1]))
    obs = [cirq.Y(q[0]) * cirq.X(q[1]), cirq.X(q[0]) * cirq.Y(q[1])]
    cc = qkeras_hybrid.compile_circuit(circuit, obs)
    expected = cirq_expectations(circuit, obs, [], np.zeros((1, 0)))
    np.testing.assert_allclose(cc.expectation(np.zeros((1, 0)), dtype=tf.float64), expected, atol=1e-12)


def test_batch_rows_are_independent():
    """Many rows, each its own sample: row b must equal a batch of one holding row b."""
    circuit, observables, used, values, _ = _case(19)
    cc = qkeras_hybrid.compile_circuit(circuit, observables)
    rng = np.random.default_rng(1)
    big = rng.uniform(-3, 3, size=(37, len(used)))
    whole = cc.expectation(big, dtype=tf.float64).numpy()
    expected = cirq_expectations(cirq.drop_terminal_measurements(circuit), observables, used, big[:5])
    np.testing.assert_allclose(whole[:5], expected, atol=1e-10)
    for b in (0, 17, 36):
        np.testing.assert_allclose(whole[b], cc.expectation(big[b:b + 1], dtype=tf.float64)[0], atol=1e-13)


def test_large_state_intra_state_parallelism():
    """From 14 qubits on, a small batch is parallelized inside the state vector
    (chunks of groups, vectorized runs); samples reuse the simulator's buffers."""
    rng = np.random.default_rng(123)
    symbols = [sympy.Symbol("a"), sympy.Symbol("b")]
    circuit, bare, qubits = random_cirq_circuit(rng, 14, 45, symbols)
    observables = [random_pauli_sum(rng, qubits, max_terms=4) for _ in range(2)]
    used = sorted(cirq.parameter_symbols(bare), key=str)
    values = rng.uniform(-3, 3, size=(3, len(used)))
    expected = cirq_expectations(bare, observables, used, values)
    for fuse in (1, 2, 3):
        cc = qkeras_hybrid.compile_circuit(circuit, observables, max_fused_qubits=fuse)
        np.testing.assert_allclose(cc.expectation(values, dtype=tf.float64), expected, atol=1e-10,
                                   err_msg=f"fuse={fuse}")
        np.testing.assert_allclose(cc.expectation(values, dtype=tf.float32), expected, atol=2e-5,
                                   err_msg=f"fuse={fuse}")
        np.testing.assert_allclose(cc.expectation(values[1:2], dtype=tf.float64), expected[1:2], atol=1e-10)


@pytest.mark.parametrize("name", ["lambda", "x-1", "θ", "v[0]", "in", "1abc", "tf", "sin", "exp"])
def test_unusual_symbol_names_in_nonlinear_expressions(name):
    """Symbol names need not be Python identifiers, nor avoid sympy's function names."""
    s, t = sympy.Symbol(name), sympy.Symbol("t")
    q = cirq.LineQubit.range(2)
    circuit = cirq.Circuit(cirq.rx(sympy.sin(s) * t)(q[0]), cirq.ry(s**2)(q[1]), cirq.rz(sympy.exp(t))(q[1]))
    observables = [cirq.Z(q[0]), cirq.Z(q[1]), cirq.X(q[1])]
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=[s, t])
    values = np.array([[0.7, 1.3], [-0.2, 0.5]])
    expected = cirq_expectations(circuit, observables, [s, t], values)
    np.testing.assert_allclose(cc.expectation(values, dtype=tf.float64), expected, atol=1e-10)
