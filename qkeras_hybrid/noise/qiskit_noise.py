"""Conversion of a `qiskit_aer.noise.NoiseModel` to a `GateNoise` table."""

from qkeras_hybrid.noise.channels import qiskit_kraus
from qkeras_hybrid.noise.models import GateNoise, NoiseRule
from qkeras_hybrid.noise.readout import Readout, flip_pair

import cirq

# The channels the native simulator runs act on at most this many qubits.
MAX_CHANNEL_QUBITS = 2


def _channel(error, where):
    if error.num_qubits > MAX_CHANNEL_QUBITS:
        raise ValueError(
            f"Cannot convert the Qiskit noise model: {where} acts on {error.num_qubits} qubits; the native "
            f"simulator runs channels on at most {MAX_CHANNEL_QUBITS} qubits"
        )
    ops, _ = qiskit_kraus(error, f"Cannot convert the Qiskit noise model: {where}")
    return cirq.KrausChannel(list(ops))


def from_qiskit_noise_model(model, num_qubits=None):
    """A `GateNoise` with the semantics of a `qiskit_aer.noise.NoiseModel`.

    Args:
      model: the `qiskit_aer.noise.NoiseModel`.
      num_qubits: if given, errors and readout errors local to qubits outside
        `range(num_qubits)` are left out: they can match no instruction of a
        circuit on that many qubits, and a device model has many (converting
        them takes time and makes the config large).

    Quantum errors attach to instructions by name (all-qubit errors) or by
    name and exact qubits (local errors, which override the all-qubit error
    of their instruction on those qubits), after the instruction (before it
    for `measure`), as Aer applies them. Readout errors become per-qubit flip
    probabilities (local ones override the all-qubit one).

    Not converted: errors on more than 2 qubits and correlated (multi-qubit)
    readout errors raise a ValueError naming them; the relaxation noise that
    `NoiseModel.from_backend` adds to scheduled `delay` instructions is
    dropped (this library's circuits run delays as idle no-ops); other custom
    noise passes raise a ValueError.
    """
    for noise_pass in getattr(model, "_custom_noise_passes", []):
        if type(noise_pass).__name__ != "RelaxationNoisePass":
            raise ValueError(
                f"Cannot convert the Qiskit noise model: its custom noise pass {type(noise_pass).__name__} "
                "is not supported"
            )
    rules = []
    for name, error in model._default_quantum_errors.items():
        if not error.ideal():
            rules.append(NoiseRule(name, _channel(error, f"the all-qubit error on {name!r}")))
    for name, by_qubits in model._local_quantum_errors.items():
        for qubits, error in by_qubits.items():
            if num_qubits is not None and max(qubits) >= num_qubits:
                continue
            # Kept even when ideal: a local error overrides the all-qubit one.
            rules.append(NoiseRule(name, _channel(error, f"the error on {name!r} qubits {tuple(qubits)}"),
                                   tuple(int(q) for q in qubits)))
    readout = Readout()
    if model._default_readout_error is not None:
        readout.default = flip_pair(model._default_readout_error, "Cannot convert the all-qubit readout error")
    for qubits, error in model._local_readout_errors.items():
        if num_qubits is not None and max(qubits) >= num_qubits:
            continue
        where = f"Cannot convert the readout error on qubits {tuple(qubits)}"
        if len(qubits) != 1:
            raise ValueError(
                f"{where}: a correlated readout error on {len(qubits)} qubits cannot be converted; only "
                "single-qubit readout errors are supported"
            )
        readout.per_qubit[int(qubits[0])] = flip_pair(error, where)
    return GateNoise(rules, readout=readout, _strict_names=False)
