"""The native simulator op: thin wrappers and its registered gradient."""

import tensorflow as tf

from qkeras_hybrid.ops._loader import OpLibraryError, library_path, load

__all__ = ["OpLibraryError", "expectation", "expectation_adjoint_grad", "library_path", "load"]

# TF op type names as REGISTER_OP spells them.
EXPECTATION_OP = "QkerasHybrid>Expectation"
GRAD_OP = "QkerasHybrid>ExpectationAdjointGrad"


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
