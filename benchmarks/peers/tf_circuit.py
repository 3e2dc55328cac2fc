"""The case's circuit in Cirq, built as benchmarks/op_bench.py builds it (so
that our op compiles it into the same blocks), for the TF workers."""

import cirq
import sympy

from common import hea_gates


def hardware_efficient(n, layers):
    """(circuit, symbols in feed order, observables <Z_i>)."""
    qubits = cirq.LineQubit.range(n)
    symbols = [sympy.Symbol(f"x{i}") for i in range(n)]
    symbols += [sympy.Symbol(f"w_{l}_{i}") for l in range(layers) for i in range(n)]
    gates = hea_gates(n, layers)
    # One moment per Ry layer, CNOTs appended one by one, as in op_bench.
    circuit = cirq.Circuit(cirq.Moment(cirq.ry(symbols[s])(qubits[q]) for _, q, s in gates[:n]))
    rest = gates[n:]
    while rest:
        ry_layer, rest = rest[:n], rest[n:]
        circuit.append(cirq.Moment(cirq.ry(symbols[s])(qubits[q]) for _, q, s in ry_layer))
        for _, c, t in rest[: n - 1]:
            circuit.append(cirq.CNOT(qubits[c], qubits[t]))
        rest = rest[n - 1:]
    return circuit, symbols, [cirq.Z(q) for q in qubits]
