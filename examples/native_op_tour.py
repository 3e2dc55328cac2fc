"""A tour of the native op: compile a circuit once, print expectations and gradients.

Run: `.venv/bin/python examples/native_op_tour.py`.
"""

import cirq
import numpy as np
import sympy
import tensorflow as tf

import qkeras_hybrid as qh


def main():
    qubits = cirq.LineQubit.range(3)
    x, w0, w1 = sympy.symbols("x w0 w1")
    circuit = cirq.Circuit(
        cirq.ry(x).on_each(*qubits),
        cirq.ry(w0)(qubits[0]),
        cirq.CNOT(qubits[0], qubits[1]),
        cirq.rz(2 * w1 + x)(qubits[1]),
        cirq.CZ(qubits[1], qubits[2]) ** w1,
    )
    observables = [cirq.Z(q) for q in qubits] + [cirq.X(qubits[0]) * cirq.X(qubits[2])]
    compiled = qh.compile_circuit(circuit, observables, symbols=[x, w0, w1])
    print(circuit, "\n")
    values = tf.Variable(np.array([[0.1, 0.5, -0.3], [1.2, -0.4, 0.8]]), dtype=tf.float64)
    with tf.GradientTape() as tape:
        expectations = compiled.expectation(values, tf.float64)
        total = tf.reduce_sum(expectations)
    print("symbols:", compiled.symbol_names)
    print("expectations <Z0> <Z1> <Z2> <X0 X2>:\n", expectations.numpy())
    print("d(sum of expectations)/d(symbols) by the adjoint method:\n", tape.gradient(total, values).numpy())
    reference = cirq.Simulator(dtype=np.complex128).simulate_expectation_values(
        circuit, observables, cirq.ParamResolver(dict(zip("x w0 w1".split(), values.numpy()[0]))), qubit_order=qubits
    )
    print("cirq.Simulator on the first row:", np.real(reference))


if __name__ == "__main__":
    main()
