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

    def reference():  # the same values in float64: what every library is checked against
        v = tf.constant(values, tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(v)
            e = cc.expectation(v, tf.float64)
            total = tf.reduce_sum(e)
        return e.numpy(), tape.gradient(total, v).numpy()

    fns = {
        "fwd": lambda: fwd(x).numpy(),
        "grad": lambda: tuple(t.numpy() for t in grad(x)),
        "reference": reference,
    }
    versions = {"tensorflow": tf.__version__, "qkeras_hybrid": qkeras_hybrid.__version__}
    info = {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
    try:  # which build was measured: the C++ changes often
        import hashlib

        from qkeras_hybrid import ops

        with open(ops.library_path(), "rb") as f:
            info["op_library_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    except Exception as e:  # reported, not fatal
        info["op_library_error"] = repr(e)
    return fns, versions, info


if __name__ == "__main__":
    common.main_guard("ours", build)
