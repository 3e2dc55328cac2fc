"""Checks before any simulator runs: the register fits in memory, the values are finite.

A state vector of n qubits doubles with every qubit, so a circuit a little
too big does not slow down: it fails to allocate. The native op then raises
ResourceExhausted, but only when called; TFQ does not check its allocations
and crashes the process. Layers therefore refuse such circuits when they are
constructed.
"""

import os

import numpy as np
import tensorflow as tf

# Bytes per amplitude of the state vectors a simulation holds at once, in
# float32: the native op's simulator keeps 4 real arrays (its own run-time
# check, custom_ops/tf/kernels.cc); TFQ keeps a complex64 state and a scratch
# copy, and its adjoint gradient two more.
BYTES_PER_AMPLITUDE = {"native": 16, "tfq": 32}
# As the native op: leave a fifth of the memory to everything else.
MEMORY_FRACTION = 0.8


def physical_memory_bytes():
    """This machine's physical memory in bytes, or None where it is unknown."""
    try:
        size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # e.g. Windows
        return None
    return size if size > 0 else None


def max_qubits(backend, memory_bytes=None):
    """The most qubits `backend` can simulate in `memory_bytes` (default: this machine's)."""
    memory_bytes = physical_memory_bytes() if memory_bytes is None else memory_bytes
    if memory_bytes is None:
        return None
    budget = MEMORY_FRACTION * memory_bytes / BYTES_PER_AMPLITUDE[backend]
    return max(0, int(budget).bit_length() - 1)


def _gib(num_bytes):
    gib = num_bytes / 2**30
    return f"{gib:,.0f} GiB" if gib >= 100 else f"{gib:.1f} GiB"


def check_num_qubits(num_qubits, backend, what):
    """ValueError when `backend` cannot hold a circuit of `num_qubits` qubits here.

    Args:
      num_qubits: the size of the register.
      backend: `"native"` or `"tfq"`.
      what: who asks, for the message (e.g. "QuantumLayer").
    """
    memory = physical_memory_bytes()
    limit = max_qubits(backend, memory)
    if limit is not None and num_qubits > limit:
        needed = BYTES_PER_AMPLITUDE[backend] * 2.0**num_qubits
        raise ValueError(
            f"{what}: a circuit on {num_qubits} qubits needs about {_gib(needed)} of state vectors on "
            f"backend={backend!r}, more than this machine's memory ({_gib(memory)}) allows; at most {limit} "
            "qubits fit."
        )


def check_finite(values, describe):
    """`values`, checked that every entry is finite.

    Args:
      values: a float tensor.
      describe: `describe(index)` -> scalar tf.string naming the entry at
        `index` (an int64 [rank] tensor) in the user's terms; called only
        when a check fails.

    Raises (eagerly, or when the graph runs) InvalidArgumentError:
    "<describe(index)> is not finite (nan)", naming the first bad entry.
    The message is only formatted when the check fails: a passing check
    costs two small ops and a branch.
    """

    def message(checked):
        index = tf.where(tf.logical_not(tf.math.is_finite(checked)))[0]
        value = tf.strings.as_string(tf.gather_nd(checked, index))
        return tf.strings.join([describe(index), " is not finite (", value, ")"])

    if tf.executing_eagerly():
        # numpy on the tensor's own buffer: a few microseconds, where two TF ops cost tens.
        if not np.isfinite(values.numpy()).all():
            raise tf.errors.InvalidArgumentError(None, None, message(values).numpy().decode())
        return values
    # Apart from the gradient: a tape would make the branch keep its intermediates.
    checked = tf.stop_gradient(values)
    ok = tf.reduce_all(tf.math.is_finite(checked))

    def fail():
        with tf.control_dependencies([tf.raw_ops.Assert(condition=False, data=[message(checked)])]):
            return tf.constant(False)

    passed = tf.cond(ok, lambda: tf.constant(True), fail)
    with tf.control_dependencies([passed]):
        return tf.identity(values)
