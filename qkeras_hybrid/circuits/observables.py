"""Pauli-sum observables as (coefficient, x_mask, z_mask) terms; bit q = qubit q."""

import numbers

import numpy as np

import cirq


def _real(coeff, where):
    if isinstance(coeff, numbers.Number) or isinstance(coeff, np.number):
        c = complex(coeff)
    else:
        raise ValueError(f"{where}: coefficient {coeff!r} must be a number, not a symbol")
    if abs(c.imag) > 1e-12:
        raise ValueError(f"{where}: coefficient {coeff!r} is not real, so the observable is not Hermitian")
    return c.real


def cirq_terms(observable, index_of):
    """Terms of a cirq.PauliSum / PauliString (or anything PauliSum.wrap takes)."""
    try:
        pauli_sum = cirq.PauliSum.wrap(observable)
    except Exception as e:
        raise TypeError(
            f"Observable {observable!r} is not a cirq.PauliSum or cirq.PauliString"
        ) from e
    terms = []
    for string in pauli_sum:
        x = z = 0
        for qubit, pauli in string.items():
            if qubit not in index_of:
                raise ValueError(
                    f"Observable {observable} acts on qubit {qubit}, which is not one of "
                    f"the circuit's qubits {sorted(index_of)}"
                )
            bit = 1 << index_of[qubit]
            if pauli in (cirq.X, cirq.Y):
                x |= bit
            if pauli in (cirq.Z, cirq.Y):
                z |= bit
        terms.append((_real(string.coefficient, f"Observable {observable}"), x, z))
    return terms


def qiskit_terms(observable, num_qubits):
    """Terms of a qiskit SparsePauliOp or Pauli (little-endian labels)."""
    from qiskit.quantum_info import Pauli, SparsePauliOp

    if isinstance(observable, Pauli):
        observable = SparsePauliOp(observable)
    if not isinstance(observable, SparsePauliOp):
        raise TypeError(f"Observable {observable!r} is not a qiskit SparsePauliOp or Pauli")
    if observable.num_qubits != num_qubits:
        raise ValueError(
            f"Observable {observable} acts on {observable.num_qubits} qubits but the circuit has {num_qubits}"
        )
    terms = []
    for label, coeff in observable.to_list():
        x = z = 0
        for q, ch in enumerate(reversed(label)):
            if ch in "XY":
                x |= 1 << q
            if ch in "ZY":
                z |= 1 << q
        terms.append((_real(coeff, f"Observable {observable}"), x, z))
    return terms
