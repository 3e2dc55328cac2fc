"""Writes the reference SavedModel that backward-compatibility tests load.

Run once per format change only: the point of the artifact is that models
exported by an earlier version keep loading and serving the same values.
"""

import os

import cirq
import keras
import numpy as np
import sympy

import qkeras_hybrid as qh

HERE = os.path.dirname(os.path.abspath(__file__))


def build_model():
    keras.utils.set_random_seed(7)
    qubits = cirq.LineQubit.range(3)
    xs = sympy.symbols("x0:3")
    ws = sympy.symbols("w0:6")
    circuit = cirq.Circuit(
        [cirq.ry(x)(q) for x, q in zip(xs, qubits)],
        [cirq.ry(w)(q) for w, q in zip(ws[:3], qubits)],
        cirq.CNOT(qubits[0], qubits[1]),
        cirq.CNOT(qubits[1], qubits[2]),
        [cirq.rx(w)(q) for w, q in zip(ws[3:], qubits)],
    )
    observables = [cirq.Z(q) for q in qubits] + [cirq.X(qubits[0]) * cirq.Y(qubits[2])]
    inputs = keras.Input((5,))
    h = keras.layers.Dense(3, activation="tanh")(inputs)
    e = qh.QuantumLayer(circuit, observables, input_symbols=xs)(h)
    outputs = keras.layers.Dense(2)(e)
    return keras.Model(inputs, outputs)


def main():
    model = build_model()
    x = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
    model.export(os.path.join(HERE, "reference_v1"), verbose=False)
    model.save(os.path.join(HERE, "reference_v1.keras"))
    np.savez(os.path.join(HERE, "reference_v1_expected.npz"), x=x, y=model.predict(x, verbose=0))


if __name__ == "__main__":
    main()
