"""Peer benchmark worker: tensorcircuit-ng on JAX (runs in .venv-peers).

--variant ps (default): the documented form, one `c.expectation_ps(z=[i])`
    per qubit;
--variant state: "one state": `c.state()` once and every <Z_i> from it.
A "-auto" suffix (ps-auto, state-auto) sets tensorcircuit's "auto"
contractor instead of its default ("greedy"): it changes the contraction
order, hence the passes over the state (n=20 in the benchmark: no faster).
All: complex64, jax.jit + jax.vmap over the batch, gradient by
jax.value_and_grad of the sum of expectations.
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402


def build(n, layers, batch, values, variant):
    variant = variant or "ps"
    if variant not in ("ps", "state", "ps-auto", "state-auto"):
        raise SystemExit(f"worker_tc: --variant must be ps, state, ps-auto or state-auto, got {variant!r}")
    logging.getLogger("tensorcircuit").setLevel(logging.ERROR)  # "optax not installed"
    import jax
    import jax.numpy as jnp
    import tensorcircuit as tc

    from jax_common import jax_fns, z_expectations_from_state

    tc.set_backend("jax")
    tc.set_dtype("complex64")
    if variant.endswith("-auto"):
        tc.set_contractor("auto")
    gates = common.hea_gates(n, layers)

    def circuit(v):
        c = tc.Circuit(n)
        for kind, a, b in gates:
            if kind == "ry":
                c.ry(a, theta=v[b])
            else:
                c.cnot(a, b)
        return c

    if variant.startswith("ps"):
        def expectations(v):
            c = circuit(v)
            return jnp.stack([jnp.real(c.expectation_ps(z=[i])) for i in range(n)])
    else:
        def expectations(v):
            return z_expectations_from_state(circuit(v).state(), n)

    versions = {"jax": jax.__version__, "tensorcircuit_ng": tc.__version__}
    return jax_fns(expectations, values), versions, {"form": variant}


if __name__ == "__main__":
    common.main_guard("tc", build)
