"""Channels as cirq gates: validation, Qiskit conversion and JSON.

A channel in a noise model is kept as a cirq gate with Kraus operators
(`cirq.depolarize(0.01)`, `cirq.KrausChannel(...)`, ...), whatever form the
user gave: Qiskit errors become a `cirq.KrausChannel` with Cirq's qubit order
(the first qubit is the most significant bit of the matrix index).
"""

import json

import numpy as np

import cirq

# Trace preservation is checked to this tolerance: Qiskit and Cirq store their
# Kraus operators in float64, products of a few of them stay well inside it.
CPTP_ATOL = 1e-8


def reverse_qubits(matrix, num_qubits):
    """`matrix` on k qubits with the order of its qubits reversed.

    Qiskit's matrices are little-endian (qarg 0 is the least significant bit),
    Cirq's big-endian; this maps one to the other (it is its own inverse).
    """
    if num_qubits <= 1:
        return np.asarray(matrix)
    k = num_qubits
    axes = list(range(k - 1, -1, -1))
    t = np.asarray(matrix).reshape([2] * (2 * k)).transpose(axes + [k + a for a in axes])
    return t.reshape(2**k, 2**k)


def is_qiskit_object(value):
    return type(value).__module__.split(".")[0] in ("qiskit", "qiskit_aer")


def qiskit_kraus(value, where):
    """Kraus operators (Cirq qubit order) of a Qiskit error or channel.

    Args:
      value: a `qiskit_aer.noise.QuantumError`, a `qiskit.quantum_info`
        channel (`Kraus`, `SuperOp`, `Choi`, ...) or an instruction that
        `qiskit.quantum_info.Kraus` accepts (`reset`, `kraus`, Aer's
        `quantum_channel`).
      where: what the value is, for error messages.

    Returns:
      `(kraus [m, d, d] complex, num_qubits)`.
    """
    from qiskit.quantum_info import Kraus

    try:
        kraus = Kraus(value)
    except Exception as e:
        raise ValueError(f"{where}: cannot get Kraus operators of {type(value).__name__} ({e})") from e
    if not kraus.is_cptp(atol=CPTP_ATOL):
        raise ValueError(f"{where}: the channel is not trace preserving and completely positive")
    if isinstance(kraus.data, tuple):  # pragma: no cover - is_cptp excludes it
        raise ValueError(f"{where}: the channel is not completely positive")
    k = kraus.num_qubits
    if k is None or kraus.input_dims() != (2,) * k:
        raise ValueError(f"{where}: only channels on qubits (dimension 2) are supported")
    ops = np.array([reverse_qubits(m, k) for m in kraus.data], dtype=complex)
    return ops, k


def check_channel(gate, where):
    """ValueError unless `gate` is a cirq gate with numeric, trace-preserving Kraus operators."""
    if isinstance(gate, cirq.Operation):
        raise TypeError(
            f"{where}: give the channel as a gate (e.g. cirq.depolarize(0.01)), not an operation on qubits: {gate!r}"
        )
    if not isinstance(gate, cirq.Gate):
        raise TypeError(
            f"{where}: expected a cirq channel (e.g. cirq.depolarize(0.01)) or a Qiskit error/channel, "
            f"got {type(gate).__name__}: {gate!r}"
        )
    if cirq.is_parameterized(gate):
        raise ValueError(
            f"{where}: channel {gate!r} has symbolic strengths {sorted(map(str, cirq.parameter_names(gate)))}; "
            "noise strengths must be numbers"
        )
    if any(d != 2 for d in cirq.qid_shape(gate)):
        raise ValueError(f"{where}: channel {gate!r} is not on qubits (dimension 2)")
    if not cirq.has_kraus(gate):
        raise ValueError(f"{where}: {gate!r} has no Kraus operators, so it is not a channel")
    ops = np.asarray(cirq.kraus(gate), dtype=complex)
    dim = ops.shape[-1]
    total = np.einsum("kji,kjl->il", ops.conj(), ops)
    if not np.allclose(total, np.eye(dim), atol=CPTP_ATOL):
        raise ValueError(
            f"{where}: channel {gate!r} is not trace preserving (sum_k K_k^dagger K_k != I); "
            "check its probabilities, they must lie in [0, 1] and sum to at most 1"
        )
    return gate


def as_channel(value, where):
    """A validated cirq channel gate from a cirq gate or a Qiskit error/channel."""
    if is_qiskit_object(value):
        ops, _ = qiskit_kraus(value, where)
        return cirq.KrausChannel(list(ops))
    return check_channel(value, where)


def to_qiskit_instruction(gate):
    """A Qiskit instruction for a cirq channel (a `kraus` instruction, or a unitary gate)."""
    from qiskit.quantum_info import Kraus

    k = cirq.num_qubits(gate)
    return Kraus([reverse_qubits(m, k) for m in cirq.kraus(gate)]).to_instruction()


def cirq_to_config(value, what):
    """`value` as a JSON-able dict (Cirq JSON); ValueError naming `what` if it cannot be read back."""
    try:
        text = cirq.to_json(value)
        cirq.read_json(json_text=text)
    except Exception as e:
        raise ValueError(
            f"{what} {value!r} cannot be serialized: Cirq JSON cannot write and read it back ({e}). "
            "Give it _json_dict_ and a Cirq JSON resolver, or use built-in Cirq channels / cirq.KrausChannel"
        ) from e
    return json.loads(text)


def cirq_from_config(config):
    return cirq.read_json(json_text=json.dumps(config))


def channel_to_config(gate, what):
    """A channel as JSON: Kraus channels as plain arrays (Cirq JSON spells out every complex number)."""
    if type(gate) is cirq.KrausChannel:
        ops = np.asarray(cirq.kraus(gate), dtype=complex)
        return {"kraus": {"real": ops.real.tolist(), "imag": ops.imag.tolist()}}
    return cirq_to_config(gate, what)


def channel_from_config(config):
    if "kraus" in config:
        ops = np.asarray(config["kraus"]["real"]) + 1j * np.asarray(config["kraus"]["imag"])
        return cirq.KrausChannel(list(ops))
    return cirq_from_config(config)
