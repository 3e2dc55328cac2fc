"""The native simulator op: thin wrappers and its registered gradient."""

import tensorflow as tf

from qkeras_hybrid.ops._loader import OpLibraryError, library_path, load

__all__ = [
    "OpLibraryError",
    "expectation",
    "expectation_adjoint_grad",
    "expectation_from_state",
    "expectation_from_state_adjoint_grad",
    "library_path",
    "load",
]

# TF op type names as REGISTER_OP spells them.
EXPECTATION_OP = "QkerasHybrid>Expectation"
GRAD_OP = "QkerasHybrid>ExpectationAdjointGrad"
FROM_STATE_OP = "QkerasHybrid>ExpectationFromState"


def expectation(num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles):
    """Raw op: expectation values [B, O] of a compiled program at `angles` [B, A]."""
    return load().qkeras_hybrid_expectation(
        num_qubits=num_qubits,
        block_meta=block_meta,
        gate_meta=gate_meta,
        gate_data=gate_data,
        pauli_masks=pauli_masks,
        pauli_coeffs=pauli_coeffs,
        angles=angles,
    )


def expectation_adjoint_grad(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, angles, upstream
):
    """Raw op: sum_o upstream[b, o] d<O_o>/d angles[b, a] by the adjoint method."""
    return load().qkeras_hybrid_expectation_adjoint_grad(
        num_qubits=num_qubits,
        block_meta=block_meta,
        gate_meta=gate_meta,
        gate_data=gate_data,
        pauli_masks=pauli_masks,
        pauli_coeffs=pauli_coeffs,
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
    return load().qkeras_hybrid_expectation_from_state(
        num_qubits=num_qubits,
        block_meta=block_meta,
        gate_meta=gate_meta,
        gate_data=gate_data,
        pauli_masks=pauli_masks,
        pauli_coeffs=pauli_coeffs,
        initial_state=initial_state,
        angles=angles,
    )


def expectation_from_state_adjoint_grad(
    num_qubits, block_meta, gate_meta, gate_data, pauli_masks, pauli_coeffs, initial_state, angles, upstream
):
    """Raw op: (d_initial_state, d_angles), the adjoint VJP of `expectation_from_state`."""
    return load().qkeras_hybrid_expectation_from_state_adjoint_grad(
        num_qubits=num_qubits,
        block_meta=block_meta,
        gate_meta=gate_meta,
        gate_data=gate_data,
        pauli_masks=pauli_masks,
        pauli_coeffs=pauli_coeffs,
        initial_state=initial_state,
        angles=angles,
        upstream=upstream,
    )


@tf.RegisterGradient(FROM_STATE_OP)
def _expectation_from_state_grad(op, upstream):
    d_state, d_angles = expectation_from_state_adjoint_grad(*op.inputs, upstream)
    return [None] * 6 + [d_state, d_angles]
