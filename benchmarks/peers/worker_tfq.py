"""Peer benchmark worker: TensorFlow Quantum (runs in the project's .venv).

forward: tfq.get_expectation_op(); forward+gradient: the Adjoint
differentiator's differentiable op under a GradientTape. Programs, symbol
names and Pauli sums are converted to tensors before timing (as in op_bench).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402


def build(n, layers, batch, values, variant):
    import tensorflow as tf

    threads = os.environ.get("PEERS_TF_THREADS")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    import tensorflow_quantum as tfq
    from tf_circuit import hardware_efficient

    circuit, symbols, observables = hardware_efficient(n, layers)
    programs = tfq.convert_to_tensor([circuit] * batch)
    names = tf.constant([str(s) for s in symbols])
    pauli_sums = tfq.convert_to_tensor([observables] * batch)
    expectation = tfq.get_expectation_op()
    adjoint = tfq.differentiators.Adjoint().generate_differentiable_op(
        analytic_op=tfq.get_expectation_op())
    spec = [tf.TensorSpec([None], tf.string), tf.TensorSpec([len(symbols)], tf.string),
            tf.TensorSpec([None, len(symbols)], tf.float32), tf.TensorSpec([None, n], tf.string)]

    @tf.function(input_signature=spec)
    def fwd(p, s, v, o):
        return expectation(p, s, v, o)

    @tf.function(input_signature=spec)
    def grad(p, s, v, o):
        with tf.GradientTape() as tape:
            tape.watch(v)
            e = adjoint(p, s, v, o)
            total = tf.reduce_sum(e)
        return e, tape.gradient(total, v)

    x = tf.constant(values)
    fns = {
        "fwd": lambda: fwd(programs, names, x, pauli_sums).numpy(),
        "grad": lambda: tuple(t.numpy() for t in grad(programs, names, x, pauli_sums)),
    }
    versions = {"tensorflow": tf.__version__, "tensorflow_quantum": tfq.__version__}
    return fns, versions, {}


if __name__ == "__main__":
    common.main_guard("tfq", build)
