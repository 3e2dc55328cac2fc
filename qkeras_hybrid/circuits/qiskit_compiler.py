"""Lowers a qiskit.QuantumCircuit with Parameters to `Primitive`s."""

import numpy as np
import sympy

from qkeras_hybrid.circuits.cirq_compiler import MAX_CHANNEL_QUBITS, UnsupportedGateError, channel_primitive
from qkeras_hybrid.circuits.program import MAX_GATE_QUBITS, Primitive, exponential

_X = np.array([[0, 1], [1, 0]], dtype=complex)
_Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
_Z = np.diag([1.0, -1.0]).astype(complex)
_ONE = np.diag([0.0, 1.0]).astype(complex)  # |1><1|
_I = np.eye(2, dtype=complex)

# name -> generator H of exp(-i * param * H); qubits in Qiskit's qarg order,
# the first qarg the most significant bit of H's index.
_ONE_PARAM = {
    "rx": _X / 2,
    "ry": _Y / 2,
    "rz": _Z / 2,
    "p": -_ONE,
    "u1": -_ONE,
    "crx": np.kron(_ONE, _X / 2),
    "cry": np.kron(_ONE, _Y / 2),
    "crz": np.kron(_ONE, _Z / 2),
    "cp": -np.kron(_ONE, _ONE),
    "cu1": -np.kron(_ONE, _ONE),
    "rxx": np.kron(_X, _X) / 2,
    "ryy": np.kron(_Y, _Y) / 2,
    "rzz": np.kron(_Z, _Z) / 2,
    "rzx": np.kron(_Z, _X) / 2,  # Qiskit: exp(-i t/2 Z_q0 X_q1)
}
_SKIPPED = {"measure", "barrier", "delay", "id", "global_phase"}
# Non-unitary instructions lowered to channels: Qiskit's reset and Kraus
# instructions (`Kraus(...).to_instruction()`, a SuperOp appended to a
# circuit), and Aer's quantum errors (`circuit.append(error, qubits)`,
# `error.to_instruction()`).
_CHANNELS = {"reset", "kraus", "superop", "quantum_channel"}


def parameter_expr(value):
    """A Qiskit parameter value (float or ParameterExpression) as sympy."""
    if hasattr(value, "sympify"):
        return sympy.sympify(value.sympify())
    return sympy.Float(float(value))


def _lower_u(qubits, theta, phi, lam):
    # U(theta, phi, lambda) = P(phi) RY(theta) P(lambda), exactly.
    return [
        exponential(qubits, -_ONE, lam),
        exponential(qubits, _Y / 2, theta),
        exponential(qubits, -_ONE, phi),
    ]


def _lower_channel(operation, indices):
    name = operation.name
    if len(indices) > MAX_CHANNEL_QUBITS:
        raise UnsupportedGateError(
            f"Qiskit channel {name!r} on qubits {list(indices)} acts on {len(indices)} qubits: the native "
            f"simulator runs channels on at most {MAX_CHANNEL_QUBITS} qubits"
        )
    from qiskit.quantum_info import Kraus

    try:
        kraus = Kraus(operation)
    except Exception as e:
        raise UnsupportedGateError(
            f"Qiskit channel {name!r} on qubits {list(indices)}: cannot get its Kraus operators ({e})"
        ) from e
    if isinstance(kraus.data, tuple) or not kraus.is_cptp(atol=1e-8):
        raise UnsupportedGateError(
            f"Qiskit channel {name!r} on qubits {list(indices)} is not completely positive and trace preserving"
        )
    # Little-endian Kraus matrices, as the gates' matrices: reverse the qargs.
    return channel_primitive(tuple(reversed(indices)), kraus.data)


def lower_instruction(operation, indices):
    name = operation.name
    if name in _SKIPPED:
        return []
    if name in _CHANNELS:
        return [_lower_channel(operation, indices)]
    params = list(operation.params)
    symbolic = any(hasattr(p, "parameters") and len(p.parameters) > 0 for p in params)
    if not symbolic and len(indices) <= MAX_GATE_QUBITS:
        try:
            from qiskit.quantum_info import Operator

            matrix = Operator(operation).data
        except Exception:  # no matrix: fall through to its definition
            matrix = None
        if matrix is not None:
            # Qiskit's matrices are little-endian: reverse to put qarg 0 first.
            return [Primitive(qubits=tuple(reversed(indices)), matrix=matrix)]
    if symbolic:
        if name in _ONE_PARAM:
            return [exponential(indices, _ONE_PARAM[name], parameter_expr(params[0]))]
        if name in ("u", "u3"):
            return _lower_u(indices, *[parameter_expr(p) for p in params])
        if name == "u2":
            return _lower_u(indices, sympy.pi / 2, *[parameter_expr(p) for p in params])
    definition = getattr(operation, "definition", None)
    if definition is None:
        raise UnsupportedGateError(
            f"Qiskit gate {name!r} on qubits {list(indices)} is not supported by the "
            "native simulator: no matrix, no known parametric form and no definition"
        )
    out = []
    for inst in definition.data:
        sub = [indices[definition.find_bit(q).index] for q in inst.qubits]
        out.extend(lower_instruction(inst.operation, tuple(sub)))
    return out


def lower_circuit(circuit):
    out = []
    for inst in circuit.data:
        indices = tuple(circuit.find_bit(q).index for q in inst.qubits)
        out.extend(lower_instruction(inst.operation, indices))
    return out
