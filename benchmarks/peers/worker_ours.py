"""Peer benchmark worker: qkeras_hybrid's native op (runs in the project's .venv).

forward: CompiledCircuit.expectation(values, tf.float32) in a tf.function;
forward+gradient: the same under a GradientTape, d sum(expectations) / d values.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import common  # noqa: E402


def build(n, layers, batch, values, variant):
    import tensorflow as tf

    threads = os.environ.get("PEERS_TF_THREADS")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    import qkeras_hybrid
    from tf_circuit import hardware_efficient

    circuit, symbols, observables = hardware_efficient(n, layers)
    cc = qkeras_hybrid.compile_circuit(circuit, observables, symbols=symbols)
    spec = [tf.TensorSpec([None, len(symbols)], tf.float32)]

    @tf.function(input_signature=spec)
    def fwd(v):
        return cc.expectation(v, tf.float32)

    @tf.function(input_signature=spec)
    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            e = cc.expectation(v, tf.float32)
            total = tf.reduce_sum(e)
        return e, tape.gradient(total, v)

    x = tf.constant(values)
    fns = {
        "fwd": lambda: fwd(x).numpy(),
        "grad": lambda: tuple(t.numpy() for t in grad(x)),
    }
    versions = {"tensorflow": tf.__version__, "qkeras_hybrid": qkeras_hybrid.__version__}
    info = {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
    return fns, versions, info


if __name__ == "__main__":
    common.main_guard("ours", build)
