"""The native simulator op: thin wrappers and its registered gradient.

The wrappers check the dtypes of their inputs before TF builds the op, so a
wrong dtype is a TypeError naming the input (inside a `tf.function`, TF's
generated code would otherwise fail with `AssertionError: Unreachable` on a
captured tensor of the wrong dtype). Values, shapes and the program's
consistency are checked by the kernels (custom_ops/tf/kernels.cc).
"""

import numpy as np
import tensorflow as tf

from qkeras_hybrid.ops._loader import OpLibraryError, library_path, load

__all__ = [
    "OpLibraryError",
    "expectation",
    "expectation_adjoint_grad",
    "expectation_adjoint_grad_from_final_state",
    "expectation_and_state",
    "expectation_from_state",
    "expectation_from_state_adjoint_grad",
    "library_path",
    "load",
]

# TF op type names as REGISTER_OP spells them.
EXPECTATION_OP = "QkerasHybrid>Expectation"
GRAD_OP = "QkerasHybrid>ExpectationAdjointGrad"
FROM_STATE_OP = "QkerasHybrid>ExpectationFromState"
AND_STATE_OP = "QkerasHybrid>ExpectationAndState"

# The program inputs in op order, with the dtype each op input has.
_PROGRAM_DTYPES = (
    ("num_qubits", tf.int32),
    ("block_meta", tf.int32),
    ("gate_meta", tf.int32),
    ("gate_data", tf.float64),
    ("pauli_masks", tf.int64),
    ("pauli_coeffs", tf.float64),
)
_FLOAT_DTYPES = (tf.float32, tf.float64)


def _program(*values):
    """The six program inputs as tensors of the op's dtypes.

    Tensors must already have them; numpy arrays and Python values are
    converted when that loses nothing (integers that fit, real numbers).
    """
    out = []
    for (name, dtype), value in zip(_PROGRAM_DTYPES, values):
        if tf.is_tensor(value):
            if tf.as_dtype(value.dtype) != dtype:
                raise TypeError(
                    f"{name} must be a tensor of dtype {dtype.name} (as CompiledCircuit.program_inputs "
                    f"holds it), got {tf.as_dtype(value.dtype).name}")
            out.append(value)
            continue
        array = _numeric_array(name, value, dtype)
        if dtype.is_integer and array.size and array.dtype.kind == "f":
            if not np.all(np.isfinite(array) & (array == np.round(array))):
                raise TypeError(f"{name} must hold integers ({dtype.name}), got {array.dtype} values")
        if dtype.is_integer and array.size:
            info = np.iinfo(dtype.as_numpy_dtype)
            if array.min() < info.min or array.max() > info.max:
                raise ValueError(f"{name} holds values outside the range of {dtype.name} "
                                 f"([{array.min()}, {array.max()}])")
        out.append(tf.constant(array.astype(dtype.as_numpy_dtype)))
    return out



def _program_dict(program_inputs):
    """The six program inputs as the ops' keyword arguments (see `_program`)."""
    if len(program_inputs) != 6:
        raise ValueError(f"program_inputs must be the 6 program tensors of CompiledCircuit.program_inputs, "
                         f"got {len(program_inputs)} values")
    return dict(zip((name for name, _ in _PROGRAM_DTYPES), _program(*program_inputs)))

def _numeric_array(name, value, dtype):
    try:
        array = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array: {e}") from None
    if array.dtype.kind not in "iuf":  # bool, complex, strings, objects
        raise TypeError(f"{name} must hold real numbers ({dtype.name}), got {array.dtype}")
    return array


def _floats(**named):
    """initial_state / angles / upstream as tensors of one dtype T, float32 or
    float64: that of the first tensor given, else of the first float32 or
    float64 array, else float32 (TF's default for Python numbers)."""
    dtype = next((tf.as_dtype(v.dtype) for v in named.values() if tf.is_tensor(v)), None)
    if dtype is None:
        dtype = next((tf.as_dtype(np.asarray(v).dtype) for v in named.values()
                      if isinstance(v, np.ndarray) and v.dtype in (np.float32, np.float64)), tf.float32)
    out = []
    for name, value in named.items():
        if tf.is_tensor(value):
            got = tf.as_dtype(value.dtype)
            if got not in _FLOAT_DTYPES:
                raise TypeError(f"{name} must be a float32 or float64 tensor, got {got.name}")
            if got != dtype:
                first = next(iter(named))
                raise TypeError(f"{', '.join(named)} must all have one dtype (float32 or float64): "
                                f"{first} is {dtype.name}, {name} is {got.name}")
            out.append(value)
            continue
        array = _numeric_array(name, value, dtype)
        with np.errstate(over="ignore"):
            converted = array.astype(dtype.as_numpy_dtype)
        overflow = np.isfinite(array) & ~np.isfinite(converted)
        if np.any(overflow):
            index = tuple(int(i) for i in np.argwhere(overflow)[0])
            raise ValueError(f"{name}{list(index)} = {array[index]} overflows {dtype.name}")
        out.append(tf.constant(converted))
    return out


def expectation(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles):
    """Raw op: expectation values [B, O] of a compiled program at `angles` [B, A]."""
    program = _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_expectation(
        **program,
        angles=angles,
    )


def expectation_adjoint_grad(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles, upstream
):
    """Raw op: sum_o upstream[b, o] d<O_o>/d angles[b, a] by the adjoint method."""
    program = _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))
    angles, upstream = _floats(angles=angles, upstream=upstream)
    return load().qkeras_hybrid_expectation_adjoint_grad(
        **program,
        angles=angles,
        upstream=upstream,
    )


@tf.RegisterGradient(EXPECTATION_OP)
def _expectation_grad(op, upstream):
    d_angles = expectation_adjoint_grad(*op.inputs, upstream)
    return [None] * 6 + [d_angles]


def expectation_from_state(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, initial_state, angles
):
    """Raw op: <psi|U^dagger O U|psi> [B, O] from initial states psi.

    `initial_state` is [B, 2, 2**n]: real parts, then imaginary parts, with
    bit q of the amplitude index = register qubit q (qubit 0 is the least
    significant bit, the reverse of Cirq's state-vector order). The states
    are used as given, not renormalized. Differentiable with respect to the
    initial state and the angles.
    """
    program = _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))
    initial_state, angles = _floats(initial_state=initial_state, angles=angles)
    return load().qkeras_hybrid_expectation_from_state(
        **program,
        initial_state=initial_state,
        angles=angles,
    )


def expectation_from_state_adjoint_grad(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, initial_state, angles, upstream
):
    """Raw op: (d_initial_state, d_angles), the adjoint VJP of `expectation_from_state`."""
    program = _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))
    initial_state, angles, upstream = _floats(
        initial_state=initial_state, angles=angles, upstream=upstream)
    return load().qkeras_hybrid_expectation_from_state_adjoint_grad(
        **program,
        initial_state=initial_state,
        angles=angles,
        upstream=upstream,
    )


@tf.RegisterGradient(FROM_STATE_OP)
def _expectation_from_state_grad(op, upstream):
    d_state, d_angles = expectation_from_state_adjoint_grad(*op.inputs, upstream)
    return [None] * 6 + [d_state, d_angles]


def expectation_and_state(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles, max_state_bytes=None
):
    """Raw op: `(expectations [B, O], final_state [B, 2, 2**n])` at `angles` [B, A].

    `expectations` are those of `expectation`. `final_state` holds the state
    U|0...0> each sample ends in: real parts, then imaginary parts, with bit q
    of the amplitude index = register qubit q (the layout of
    `expectation_from_state`'s `initial_state`; the reverse of Cirq's order).
    The registered gradient un-applies the circuit from these states
    (`expectation_adjoint_grad_from_final_state`) instead of running it
    again, which saves the forward sweep at the cost of keeping B states
    until the gradient runs. So when the batch's states would take more than
    `max_state_bytes` (default: an eighth of the machine's memory),
    `final_state` is empty, `[0, 2, 2**n]`, and the gradient runs the forward
    sweep again. Inside a graph that uses only `expectations` (inference), the
    states are not copied out.

    Both outputs are differentiable with respect to `angles`. A gradient
    flowing into `final_state` (a loss that uses the state) costs a second
    adjoint sweep, from the co-state that gradient defines (the `State` op's
    gradient, `qkeras_hybrid.ops.measure`); one that does not (TF's zeros for
    an unused output) costs nothing.
    """
    program = _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))
    (angles,) = _floats(angles=angles)
    if max_state_bytes is None:
        max_state_bytes = -1
    elif not isinstance(max_state_bytes, (int, np.integer)) or isinstance(max_state_bytes, bool) \
            or max_state_bytes < 0:
        raise ValueError(f"max_state_bytes must be a non-negative integer or None, got {max_state_bytes!r}")
    return tuple(load().qkeras_hybrid_expectation_and_state(
        **program,
        angles=angles,
        max_state_bytes=int(max_state_bytes),
    ))


def expectation_adjoint_grad_from_final_state(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles, final_state, upstream
):
    """Raw op: `expectation_adjoint_grad` started from the circuit's final state.

    `final_state` [B, 2, 2**n] must be the `final_state` output of
    `expectation_and_state` at the same `angles`: the adjoint sweep un-applies
    the circuit from it, skipping the forward sweep. The result is exact only
    for that state. An empty `final_state` [0, 2, 2**n] (no states kept) runs
    the forward sweep again, like `expectation_adjoint_grad`.
    """
    program = _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))
    angles, final_state, upstream = _floats(angles=angles, final_state=final_state, upstream=upstream)
    return load().qkeras_hybrid_expectation_adjoint_grad_from_final_state(
        **program,
        angles=angles,
        final_state=final_state,
        upstream=upstream,
    )


@tf.RegisterGradient(AND_STATE_OP)
def _expectation_and_state_grad(op, upstream, upstream_state):
    program, angles, final_state = op.inputs[:6], op.inputs[6], op.outputs[1]
    parts = []
    # TF fills the gradient of an output that does not reach the loss with zeros:
    # such a part needs no sweep.
    if not _is_zero_gradient(upstream):
        parts.append(expectation_adjoint_grad_from_final_state(*program, angles, final_state, upstream))
    if not _is_zero_gradient(upstream_state):
        parts.append(_final_state_vjp(program, angles, final_state, upstream_state))
    d_angles = tf.add_n(parts) if parts else tf.zeros_like(angles)
    return [None] * 6 + [d_angles]


def _final_state_vjp(program, angles, final_state, upstream):
    """d sum(upstream * final_state) / d angles: the State op's adjoint sweep
    from the kept states. Without them (past `max_state_bytes`) the state
    output is empty, and so is its contribution."""
    def vjp():
        return load().qkeras_hybrid_state_adjoint_grad(
            *program, angles=angles, state=final_state, upstream=upstream)

    kept = tf.equal(tf.shape(final_state)[0], tf.shape(angles)[0])
    return tf.cond(kept, vjp, lambda: tf.zeros_like(angles))


def _is_zero_gradient(grad):
    """Whether `grad` is absent or zero: eagerly by its values; in a graph,
    whether it is one of the zero tensors TF's gradient code fills in for an
    output that does not reach the loss (ZerosLike, or zeros as a Const or a
    Fill)."""
    if grad is None:
        return True
    if tf.executing_eagerly():
        return not bool(tf.reduce_any(tf.not_equal(grad, 0)))
    op = grad.op
    if op.type == "ZerosLike":
        return True
    if op.type in ("Const", "Fill"):
        value = tf.get_static_value(op.inputs[1] if op.type == "Fill" else grad)
        return value is not None and not np.any(value)
    return False


# The measurement and density ops' modules register their gradients: imported
# with the package, a SavedModel reloaded in a fresh process can be
# differentiated (TF looks gradients up by op type).
from qkeras_hybrid.ops import density, measure  # noqa: E402,F401
