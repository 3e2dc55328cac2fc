"""Peer benchmark worker: PennyLane default.qubit, interface jax (.venv-peers).

The QNode (diff_method="backprop", the default for default.qubit under JAX)
returns every <Z_i>; it is jit-compiled, and batched by
--variant vmap (default): jax.vmap over the rows, or
--variant broadcast: PennyLane's parameter broadcasting (each RY gets the
    column of B angles; the device simulates the batch as one broadcast state).
Gradient: jax.value_and_grad of the sum of expectations.
"""

import warnings

import common

# default.qubit asks for complex128, which JAX without x64 turns into complex64
# (the float32 comparison wants exactly that) with a warning per trace.
warnings.filterwarnings("ignore", message="Explicitly requested dtype complex128")


def build(n, layers, batch, values, variant):
    variant = variant or "vmap"
    if variant not in ("vmap", "broadcast"):
        raise SystemExit(f"worker_pl: --variant must be vmap or broadcast, got {variant!r}")
    import jax
    import jax.numpy as jnp
    import pennylane as qml

    from jax_common import jax_fns

    gates = common.hea_gates(n, layers)
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev, interface="jax", diff_method="backprop")
    def qnode(v):
        # v: [S] (vmap) or [S, B] (broadcast: v[k] is the batch of angle k).
        for kind, a, b in gates:
            if kind == "ry":
                qml.RY(v[b], wires=a)
            else:
                qml.CNOT(wires=[a, b])
        return [qml.expval(qml.PauliZ(i)) for i in range(n)]

    if variant == "vmap":
        fns = jax_fns(lambda v: jnp.stack(qnode(v)), values)
    else:
        def batched(v):  # [B, S] -> [B, n]
            return jnp.stack(qnode(v.T), axis=-1)

        fns = jax_fns(None, values, batched=batched)
    versions = {"jax": jax.__version__, "pennylane": qml.__version__}
    return fns, versions, {"batching": variant}


if __name__ == "__main__":
    common.main_guard("pl", build)
