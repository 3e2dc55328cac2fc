"""JAX helpers shared by the tensorcircuit-ng and PennyLane workers."""

import numpy as np


def jax_fns(expectations, values, batched=None):
    """fwd and fwd+grad from expectations(v: [S]) -> [n], one row's circuit.

    Both are jit-compiled and vmapped over the batch (or use `batched(v: [B, S])
    -> [B, n]` when given, e.g. PennyLane's parameter broadcasting); the gradient is
    jax.value_and_grad of the sum of all rows' expectations (rows are
    independent, so its [B, S] gradient is every row's own), returning the
    expectations too (has_aux): one forward and one reverse pass per call.
    """
    import jax
    import jax.numpy as jnp

    batched = batched or jax.vmap(expectations)

    def total(v):
        e = batched(v)
        return jnp.sum(e), e

    fwd = jax.jit(batched)
    grad = jax.jit(jax.value_and_grad(total, has_aux=True))
    x = jax.device_put(jnp.asarray(values, jnp.float32))

    def run_fwd():
        return np.asarray(jax.block_until_ready(fwd(x)))

    def run_grad():
        (_, e), g = jax.block_until_ready(grad(x))
        return np.asarray(e), np.asarray(g)

    return {"fwd": run_fwd, "grad": run_grad}


def z_expectations_from_state(psi, n):
    """<Z_i> for every qubit from one state vector (qubit 0 = most significant
    index bit, tensorcircuit's and PennyLane's order)."""
    import jax.numpy as jnp

    p = jnp.real(psi) ** 2 + jnp.imag(psi) ** 2
    out = []
    for i in range(n):
        m = jnp.sum(p.reshape(2**i, 2, 2 ** (n - 1 - i)), axis=(0, 2))
        out.append(m[0] - m[1])
    return jnp.stack(out)
