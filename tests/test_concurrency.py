"""The op called from several Python threads at once (TF runs the calls
concurrently, each spreading its lane groups over the shared thread pool)
gives exactly the results of one call at a time."""

import threading

import numpy as np
import sympy
import tensorflow as tf

import cirq
import qkeras_hybrid as qh


def test_concurrent_calls_match_sequential_results():
    qubits = cirq.LineQubit.range(6)
    x = sympy.symbols("x0:6")
    w = sympy.symbols("w0:12")
    circuit = cirq.Circuit(
        [cirq.ry(x[i])(q) for i, q in enumerate(qubits)],
        [cirq.rx(w[i])(q) for i, q in enumerate(qubits)],
        [cirq.CNOT(a, b) for a, b in zip(qubits, qubits[1:])],
        [cirq.rz(w[6 + i])(q) for i, q in enumerate(qubits)],
    )
    cc = qh.compile_circuit(circuit, [cirq.Z(q) for q in qubits] + [cirq.X(qubits[0]) * cirq.Y(qubits[5])])
    rng = np.random.default_rng(0)
    batches = [rng.uniform(-3, 3, size=(b, len(cc.symbols))) for b in (1, 7, 8, 9, 63, 300)]

    def value_and_grad(values):
        v = tf.constant(values)
        with tf.GradientTape() as tape:
            tape.watch(v)
            e = cc.expectation(v, tf.float64)
            loss = tf.reduce_sum(e * e)
        return e.numpy(), tape.gradient(loss, v).numpy()

    expected = [value_and_grad(v) for v in batches]
    mismatches = []

    def worker(k):
        for it in range(25):
            i = (k + it) % len(batches)
            e, g = value_and_grad(batches[i])
            if not (np.array_equal(e, expected[i][0]) and np.array_equal(g, expected[i][1])):
                mismatches.append((k, it, i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not mismatches
