"""Measurement ops of the native simulator: probabilities, states, samples
and sampled expectations of a compiled circuit's final state U|0...0>.

Every function takes `program_inputs`, the six program tensors as
`CompiledCircuit.program_inputs` holds them, and `angles` `[B, A]` (float32
or float64, as from `CompiledCircuit.angles`). The program's observables are
used by `sampled_expectation` only.

Bit orders: `probabilities` and `sample` read in Cirq's order (the first
listed qubit is the most significant bit of an outcome index, and bit j of a
sample is qubit `qubits[j]`). `state` returns the simulator's layout
`[B, 2, 2**n]` (real parts, then imaginary parts; bit q of the amplitude
index is register qubit q, the reverse of Cirq's); `to_cirq_order` converts.

Randomness: `seed` is an int64 `[2]` key of a Philox4x32-10 counter-based
generator; the draw of batch row b, measurement setting g and shot s depends
on (seed, b, g, s) only, so results do not depend on threads or on how a
batch is split. Callers advance the seed between calls (e.g. with
`keras.random.SeedGenerator`).
"""

import numpy as np
import tensorflow as tf

from qkeras_hybrid.ops import _floats, _program_dict, load

__all__ = [
    "PROBABILITIES_OP",
    "SAMPLE_OP",
    "SAMPLED_EXPECTATION_OP",
    "STATE_OP",
    "probabilities",
    "probabilities_adjoint_grad",
    "sample",
    "sampled_expectation",
    "state",
    "state_adjoint_grad",
    "to_cirq_order",
]

PROBABILITIES_OP = "QkerasHybrid>Probabilities"
STATE_OP = "QkerasHybrid>State"
SAMPLE_OP = "QkerasHybrid>Sample"
SAMPLED_EXPECTATION_OP = "QkerasHybrid>SampledExpectation"


def _int_input(name, value, dtype, shape_text):
    """`value` as a tensor of integer dtype `dtype`: tensors must have it;
    Python and numpy integers are converted (checked for range)."""
    if tf.is_tensor(value):
        got = tf.as_dtype(value.dtype)
        if got != dtype:
            raise TypeError(f"{name} must be a {dtype.name} tensor ({shape_text}), got {got.name}")
        return value
    array = np.asarray(value)
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise TypeError(f"{name} must hold integers ({dtype.name}, {shape_text}), got {array.dtype} {value!r}")
    info = np.iinfo(dtype.as_numpy_dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"{name} holds values outside the range of {dtype.name}: {value!r}")
    return tf.constant(array.astype(dtype.as_numpy_dtype))


def _qubits(qubits):
    return _int_input("qubits", qubits, tf.int32, "a vector of distinct register indices")


def _shots(shots):
    return _int_input("shots", shots, tf.int32, "a positive scalar")


def _seed(seed):
    return _int_input("seed", seed, tf.int64, "shape [2]")


def probabilities(program_inputs, angles, qubits):
    """Probabilities `[B, 2**k]` of the basis states of `qubits` (k of them).

    Marginalized over the other qubits, in Cirq's order: the first listed
    qubit is the most significant bit of the outcome index. Differentiable
    with respect to `angles` by the adjoint method.

    Args:
      program_inputs: the six program tensors (`CompiledCircuit.program_inputs`).
      angles: `[B, A]`, float32 or float64.
      qubits: int32 `[k]`, distinct register indices, 1 <= k <= num_qubits.
    """
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_probabilities(**_program_dict(program_inputs), angles=angles,
                                              qubits=_qubits(qubits))


def probabilities_adjoint_grad(program_inputs, angles, qubits, upstream):
    """Raw op: `sum_m upstream[b, m] d probabilities[b, m] / d angles[b, a]`
    `[B, A]` by the adjoint method (the gradient of `probabilities`)."""
    angles, upstream = _floats(angles=angles, upstream=upstream)
    return load().qkeras_hybrid_probabilities_adjoint_grad(
        **_program_dict(program_inputs), angles=angles, qubits=_qubits(qubits), upstream=upstream)


@tf.RegisterGradient(PROBABILITIES_OP)
def _probabilities_grad(op, upstream):
    d_angles = probabilities_adjoint_grad(op.inputs[:6], op.inputs[6], op.inputs[7], upstream)
    return [None] * 6 + [d_angles, None]


def state(program_inputs, angles):
    """The final state `[B, 2, 2**n]` (real parts, then imaginary parts).

    Bit q of the amplitude index is register qubit q (the reverse of Cirq's
    order; see `to_cirq_order`). Differentiable with respect to `angles` for
    real-valued functions of the state (the adjoint method, from this output:
    no second forward sweep).
    """
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_state(**_program_dict(program_inputs), angles=angles)


def state_adjoint_grad(program_inputs, angles, state, upstream):
    """Raw op: `sum upstream[b] * d state[b] / d angles[b, a]` `[B, A]` (the
    gradient of `state`), by the adjoint sweep from `state`, the output of
    `state` at the same angles (exact only for that state)."""
    angles, state, upstream = _floats(angles=angles, state=state, upstream=upstream)
    return load().qkeras_hybrid_state_adjoint_grad(
        **_program_dict(program_inputs), angles=angles, state=state, upstream=upstream)


@tf.RegisterGradient(STATE_OP)
def _state_grad(op, upstream):
    d_angles = state_adjoint_grad(op.inputs[:6], op.inputs[6], op.outputs[0], upstream)
    return [None] * 6 + [d_angles]


def sample(program_inputs, angles, qubits, shots, seed):
    """`shots` measurements of `qubits` per batch row: int32 `[B, shots, k]`.

    `samples[b, s, j]` is the bit measured on `qubits[j]`, so a row reads in
    Cirq's order. Not differentiable: a gradient through it raises
    `LookupError` naming the alternatives.

    Args:
      program_inputs: the six program tensors.
      angles: `[B, A]`, float32 or float64.
      qubits: int32 `[k]`, distinct register indices.
      shots: int32 scalar > 0.
      seed: int64 `[2]`, the generator's key.
    """
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_sample(**_program_dict(program_inputs), angles=angles,
                                       qubits=_qubits(qubits), shots=_shots(shots), seed=_seed(seed))


@tf.RegisterGradient(SAMPLE_OP)
def _sample_grad(op, upstream):
    raise LookupError(
        f"Samples have no gradient ({SAMPLE_OP}, qkeras_hybrid.ops.measure.sample): bitstrings are not "
        "differentiable. Use ProbabilityLayer (exact probabilities with adjoint gradients, or frequencies "
        "with shots) or QuantumLayer with shots= (parameter-shift gradients) to train on measurements, or "
        "tf.stop_gradient the samples.")


def sampled_expectation(program_inputs, angles, shots, seed):
    """Expectations `[B, O]` of the program's observables from `shots` shots.

    Pauli terms are grouped into qubit-wise commuting groups (greedily); each
    group is one measurement setting that its terms share: a PauliSum costs
    `shots` times its number of groups (identity terms are exact). No
    gradient is registered: differentiate by the parameter-shift rule,
    calling this op at shifted angles.

    Args:
      program_inputs: the six program tensors.
      angles: `[B, A]`, float32 or float64.
      shots: int32 scalar > 0 (per measurement setting and batch row).
      seed: int64 `[2]`, the generator's key.
    """
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_sampled_expectation(**_program_dict(program_inputs), angles=angles,
                                                    shots=_shots(shots), seed=_seed(seed))


tf.no_gradient(SAMPLED_EXPECTATION_OP)


def to_cirq_order(state, n):
    """The `[B, 2, 2**n]` output of `state` as complex `[B, 2**n]` in Cirq's
    order (qubit 0 the most significant bit): complex64 for float32 input,
    complex128 for float64."""
    state = tf.convert_to_tensor(state)
    complex_state = tf.complex(state[:, 0], state[:, 1])
    batch = tf.shape(complex_state)[0]
    # Index bit q is qubit q: as a tensor [B, 2 (qubit n-1), ..., 2 (qubit 0)];
    # reversing the qubit axes puts qubit 0 first (most significant).
    tensor = tf.reshape(complex_state, tf.concat([[batch], tf.fill([n], 2)], 0))
    tensor = tf.transpose(tensor, [0] + list(range(n, 0, -1)))
    return tf.reshape(tensor, [batch, 2**n])
