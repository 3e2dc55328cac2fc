"""Readout errors: per-qubit flip probabilities (P(read 1 | 0), P(read 0 | 1))."""

import numbers

import numpy as np

import cirq

from qkeras_hybrid.noise.channels import cirq_from_config, cirq_to_config, is_qiskit_object


def flip_pair(value, where):
    """(P(1|0), P(0|1)) from a float, a pair, or a 1-qubit Qiskit ReadoutError."""
    if is_qiskit_object(value) and hasattr(value, "probabilities"):
        probs = np.asarray(value.probabilities, dtype=float)
        if probs.shape != (2, 2):
            raise ValueError(
                f"{where}: a ReadoutError on {value.number_of_qubits} qubits (correlated readout) cannot be "
                "converted; only single-qubit readout errors are supported"
            )
        # Rows are the true state, columns the recorded outcome.
        return float(probs[0, 1]), float(probs[1, 0])
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        pair = (float(value), float(value))
    else:
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != (2,):
            raise ValueError(
                f"{where}: expected a flip probability p, a pair (P(read 1 | 0), P(read 0 | 1)) or a Qiskit "
                f"ReadoutError, got {value!r}"
            )
        pair = (float(arr[0]), float(arr[1]))
    for name, p in zip(("P(read 1 | 0)", "P(read 0 | 1)"), pair):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{where}: {name} must be a probability in [0, 1], got {p}")
    return pair


def check_qubit_key(q, where):
    if isinstance(q, (int, np.integer)) and not isinstance(q, bool):
        if q < 0:
            raise ValueError(f"{where}: qubit index must be >= 0, got {q}")
        return int(q)
    if isinstance(q, cirq.Qid):
        return q
    raise TypeError(f"{where}: a qubit must be a register index (int) or a cirq qubit, got {q!r}")


def qubit_to_config(q):
    return q if isinstance(q, int) else {"cirq": cirq_to_config(q, "Qubit")}


def qubit_from_config(c):
    return c if isinstance(c, int) else cirq_from_config(c["cirq"])


class Readout:
    """Readout flip probabilities: a default for every qubit and per-qubit overrides.

    Args:
      readout: None; a flip probability `p` (both ways); a pair
        `(P(read 1 | 0), P(read 0 | 1))` or a 1-qubit Qiskit `ReadoutError`
        for every qubit; a list of pairs, one per register qubit; or a dict
        `{qubit: pair | p | ReadoutError}` with qubits as register indices or
        cirq qubits.
    """

    def __init__(self, readout=None):
        self.default = None
        self.per_qubit = {}
        if readout is None:
            return
        where = "readout"
        if isinstance(readout, dict):
            for q, v in readout.items():
                key = check_qubit_key(q, f"readout of qubit {q!r}")
                self.per_qubit[key] = flip_pair(v, f"readout of qubit {q!r}")
            return
        if isinstance(readout, (list, tuple, np.ndarray)) and np.ndim(readout) == 2:
            arr = np.asarray(readout, dtype=float)
            if arr.shape[1] != 2:
                raise ValueError(f"{where}: a list of per-qubit pairs must have shape [n, 2], got {arr.shape}")
            for i, row in enumerate(arr):
                self.per_qubit[i] = flip_pair(row, f"readout of qubit {i}")
            return
        self.default = flip_pair(readout, where)

    def __bool__(self):
        return self.default is not None or bool(self.per_qubit)

    def array(self, qubit_order):
        """float64 [n, 2] of (P(read 1 | 0), P(read 0 | 1)) per qubit of `qubit_order`, or None."""
        if not self:
            return None
        if isinstance(qubit_order, (int, np.integer)):
            qubit_order = list(range(int(qubit_order)))
        qubit_order = list(qubit_order)
        ints = all(isinstance(q, (int, np.integer)) for q in qubit_order)
        if ints:
            cirq_keys = [k for k in self.per_qubit if not isinstance(k, int)]
            if cirq_keys:
                raise ValueError(
                    f"Readout errors are given for cirq qubits {cirq_keys}, but the register is indexed by "
                    "integers (a Qiskit circuit): give them by register index"
                )
        out = np.zeros((len(qubit_order), 2), dtype=np.float64)
        for i, q in enumerate(qubit_order):
            pair = self.per_qubit.get(q) if not ints else None
            if pair is None:
                pair = self.per_qubit.get(i, self.default)
            if pair is not None:
                out[i] = pair
        return out

    def get_config(self):
        if not self:
            return None
        return {
            "default": list(self.default) if self.default is not None else None,
            "per_qubit": [[qubit_to_config(q), list(p)] for q, p in self.per_qubit.items()],
        }

    @classmethod
    def from_config(cls, config):
        out = cls()
        if config:
            out.default = tuple(config["default"]) if config.get("default") is not None else None
            out.per_qubit = {qubit_from_config(q): tuple(p) for q, p in config.get("per_qubit", [])}
        return out

    def __eq__(self, other):
        return isinstance(other, Readout) and (self.default, self.per_qubit) == (other.default, other.per_qubit)

    def __repr__(self):
        return f"Readout(default={self.default}, per_qubit={self.per_qubit})"
