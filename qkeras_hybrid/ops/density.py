"""Exact noisy simulation on the native engine: the density-matrix ops, and
the helper that draws the Kraus choices of trajectory programs.

A density program (`circuits.program.density_primitives`, then
`build_program(2 * n, ...)`) runs rho on n qubits as the vector
vec(rho)[r + (c << n)] = rho[r, c] on 2n qubits. Every function here takes
its six program tensors positionally, like `ops.expectation`, then `angles`
`[B, A]` (float32 or float64). `num_qubits` is 2n; the Pauli masks, the
measured `qubits` and `readout` refer to the n physical qubits.

Bit orders are those of `ops.measure`: the first listed qubit is the most
significant bit of an outcome index, and bit j of a sample is `qubits[j]`.

Randomness: `seed` is an int64 `[2]` key of a Philox4x32-10 counter-based
generator; a draw depends on (seed, batch row, measurement setting, shot)
only, not on threads or on how a batch is split.

Readout errors: `readout` float64 `[n, 2]` holds, per physical qubit,
(P(read 1 | true 0), P(read 0 | true 1)); every sampled bit is flipped with
these probabilities (`None`: no readout error).

Trajectories run the ordinary ops on a program from
`circuits.program.trajectory_primitives`; `sample_kraus_choices` draws the
values of its selection slots.
"""

import numpy as np
import tensorflow as tf

from qkeras_hybrid.ops import _floats, _program_dict, load
from qkeras_hybrid.ops.measure import _qubits, _seed, _shots

__all__ = [
    "DENSITY_EXPECTATION_OP",
    "DENSITY_PROBABILITIES_OP",
    "DENSITY_SAMPLE_OP",
    "DENSITY_SAMPLED_EXPECTATION_OP",
    "density_expectation",
    "density_expectation_adjoint_grad",
    "density_probabilities",
    "density_probabilities_adjoint_grad",
    "density_sample",
    "density_sampled_expectation",
    "sample_kraus_choices",
]

DENSITY_EXPECTATION_OP = "QkerasHybrid>DensityExpectation"
DENSITY_PROBABILITIES_OP = "QkerasHybrid>DensityProbabilities"
DENSITY_SAMPLE_OP = "QkerasHybrid>DensitySample"
DENSITY_SAMPLED_EXPECTATION_OP = "QkerasHybrid>DensitySampledExpectation"

_PROGRAM_NAMES = ("num_qubits", "block_meta", "gate_meta", "gate_data", "pauli_masks", "pauli_coeffs")


def _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs):
    return _program_dict((num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs))


def _readout(readout, num_qubits):
    """readout as a float64 [n, 2] tensor; None: zeros (no readout error)."""
    if readout is None:
        n = tf.math.floordiv(num_qubits, 2)
        return tf.zeros(tf.stack([n, 2]), tf.float64)
    if tf.is_tensor(readout):
        if tf.as_dtype(readout.dtype) != tf.float64:
            raise TypeError(f"readout must be a float64 tensor [n, 2], got {tf.as_dtype(readout.dtype).name}")
        return readout
    array = np.asarray(readout)
    if array.dtype.kind not in "iuf" or array.dtype == np.bool_:
        raise TypeError(f"readout must hold probabilities (float64 [n, 2]), got {array.dtype}")
    return tf.constant(array.astype(np.float64))


def density_expectation(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles):
    """Exact expectation values tr(O_o rho) `[B, O]` of a density program.

    rho is the final density matrix of the noisy circuit at `angles` `[B, A]`
    (from |0...0><0...0|); the observables are Pauli sums over the n
    physical qubits. Differentiable with respect to `angles` by the adjoint
    method (`density_expectation_adjoint_grad`).
    """
    program = _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs)
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_density_expectation(**program, angles=angles)


def density_expectation_adjoint_grad(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs,
                                     angles, upstream):
    """Raw op: `sum_o upstream[b, o] d tr(O_o rho_b) / d angles[b, a]` `[B, A]`.

    The adjoint pass un-applies the unitary blocks and restores the state
    before each channel by its inverse (when well conditioned) or from a
    checkpoint that its forward sweep saves; the checkpoints count in the
    op's memory check.
    """
    program = _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs)
    angles, upstream = _floats(angles=angles, upstream=upstream)
    return load().qkeras_hybrid_density_expectation_adjoint_grad(**program, angles=angles, upstream=upstream)


@tf.RegisterGradient(DENSITY_EXPECTATION_OP)
def _density_expectation_grad(op, upstream):
    return [None] * 6 + [density_expectation_adjoint_grad(*op.inputs, upstream)]


def density_probabilities(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles,
                          qubits):
    """Probabilities `[B, 2**k]` of the basis states of `qubits` under rho.

    The diagonal of rho marginalized over the other qubits, in Cirq's order:
    the first listed qubit is the most significant bit of the outcome index
    (as `ops.measure.probabilities`). Differentiable with respect to
    `angles` by the adjoint method.

    Args:
      qubits: int32 `[k]`, distinct physical qubit indices, 1 <= k <= n.
    """
    program = _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs)
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_density_probabilities(**program, angles=angles, qubits=_qubits(qubits))


def density_probabilities_adjoint_grad(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs,
                                       angles, qubits, upstream):
    """Raw op: `sum_m upstream[b, m] d probabilities[b, m] / d angles[b, a]` `[B, A]`."""
    program = _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs)
    angles, upstream = _floats(angles=angles, upstream=upstream)
    return load().qkeras_hybrid_density_probabilities_adjoint_grad(
        **program, angles=angles, qubits=_qubits(qubits), upstream=upstream)


@tf.RegisterGradient(DENSITY_PROBABILITIES_OP)
def _density_probabilities_grad(op, upstream):
    d_angles = density_probabilities_adjoint_grad(*op.inputs[:6], op.inputs[6], op.inputs[7], upstream)
    return [None] * 6 + [d_angles, None]


def density_sample(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles, qubits,
                   shots, seed, readout=None):
    """`shots` measurements of `qubits` per batch row: int32 `[B, shots, k]`.

    Drawn from rho's marginal distribution of `qubits`, then read out with
    `readout` errors. `samples[b, s, j]` is the bit read on `qubits[j]`.
    Not differentiable.

    Args:
      qubits: int32 `[k]`, distinct physical qubit indices.
      shots: int32 scalar > 0.
      seed: int64 `[2]`, the generator's key (the draws of row b and shot s
        are those `ops.measure.sample` makes with that seed).
      readout: float64 `[n, 2]` or None (see the module docstring).
    """
    program = _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs)
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_density_sample(
        **program, angles=angles, qubits=_qubits(qubits), shots=_shots(shots), seed=_seed(seed),
        readout=_readout(readout, program["num_qubits"]))


@tf.RegisterGradient(DENSITY_SAMPLE_OP)
def _density_sample_grad(op, upstream):
    raise LookupError(
        f"Samples have no gradient ({DENSITY_SAMPLE_OP}): bitstrings are not differentiable. Use "
        "density_probabilities (exact, with adjoint gradients) or tf.stop_gradient the samples.")


def density_sampled_expectation(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles,
                                shots, seed, readout=None):
    """Expectations tr(O_o rho) `[B, O]` estimated from `shots` shots.

    Pauli terms are grouped into qubit-wise commuting groups exactly as
    `ops.measure.sampled_expectation` groups them; each group is one
    measurement setting (rho rotated into its basis) whose shots its terms
    share, with `readout` errors on every measured bit. Identity terms are
    exact. No gradient is registered (use parameter shifts).

    Args:
      shots: int32 scalar > 0 (per setting and batch row).
      seed: int64 `[2]`, the generator's key.
      readout: float64 `[n, 2]` or None (see the module docstring).
    """
    program = _program(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs)
    (angles,) = _floats(angles=angles)
    return load().qkeras_hybrid_density_sampled_expectation(
        **program, angles=angles, shots=_shots(shots), seed=_seed(seed),
        readout=_readout(readout, program["num_qubits"]))


tf.no_gradient(DENSITY_SAMPLED_EXPECTATION_OP)


def sample_kraus_choices(choices, num_rows, seed, dtype=tf.float32):
    """Draws the Kraus selections of a trajectory program: `[num_rows, C]`.

    Column c holds, per row, an index k drawn with probability
    `choices[c].probabilities[k]`, as a float of `dtype` (the op reads it from
    an angle slot); for a quantum-jump choice, a uniform draw in [0, 1) with
    which the op picks k from the state. Independent across rows and
    channels; stateless: the result is a function of `seed` only.

    Args:
      choices: the `KrausChoice`s of `circuits.program.trajectory_choices`.
      num_rows: the number of rows (trajectories times batch), an int or a
        scalar int tensor.
      seed: int32 or int64 `[2]`, as TF's stateless random ops take it.
      dtype: float32 or float64.
    """
    if not choices:
        return tf.zeros(tf.stack([num_rows, 0]), dtype)
    selections = [i for i, c in enumerate(choices) if not c.jump]
    jumps = [i for i, c in enumerate(choices) if c.jump]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    columns = []
    if selections:
        width = max(len(choices[i].probabilities) for i in selections)
        logits = np.full((len(selections), width), -np.inf)
        for row, i in enumerate(selections):
            p = np.asarray(choices[i].probabilities, dtype=np.float64)
            with np.errstate(divide="ignore"):
                logits[row, : len(p)] = np.log(p)
        draws = tf.random.stateless_categorical(tf.constant(logits), num_rows, seeds[0], dtype=tf.int32)
        columns.append(tf.cast(tf.transpose(draws), dtype))
    if jumps:
        # float64 draws below 1, then cast: a float32 cast may round up to 1.
        u = tf.random.stateless_uniform(tf.stack([num_rows, len(jumps)]), seeds[1], dtype=tf.float64)
        columns.append(tf.cast(tf.minimum(u, 1.0 - 2.0**-24), dtype))
    order = np.argsort(selections + jumps)
    return tf.gather(tf.concat(columns, axis=1), order, axis=1)
