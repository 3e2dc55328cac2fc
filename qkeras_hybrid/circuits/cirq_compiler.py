"""Lowers a cirq.Circuit with sympy parameters to `Primitive`s."""

import numpy as np
import sympy

import cirq

from qkeras_hybrid.circuits.program import MAX_GATE_QUBITS, Primitive, exponential

# Channels (non-unitary operations with Kraus operators) run on at most this
# many qubits: a 2-qubit channel is a 4-qubit superoperator on the doubled
# register of a density matrix.
MAX_CHANNEL_QUBITS = 2


class UnsupportedGateError(ValueError):
    """A gate the native simulator cannot run."""


def describe_operation(op, max_chars=120):
    """A short name of `op` for error messages.

    Its repr when that is short and informative, else the gate's type and
    the qubit count: a MatrixGate's repr holds its whole matrix, a custom
    gate's is `<module.G object at 0x...>`.
    """
    gate = op.gate if op.gate is not None else op
    text = repr(gate)
    if len(text) > max_chars or " object at 0x" in text:
        kind = type(gate)
        text = f"cirq.{kind.__name__}" if kind.__module__.startswith("cirq") else kind.__name__
    qubits = ", ".join(str(q) for q in op.qubits[:4]) + (", ..." if len(op.qubits) > 4 else "")
    plural = "s" if len(op.qubits) != 1 else ""
    return f"{text} on {len(op.qubits)} qubit{plural} ({qubits})"


def _eigen_generator(gate):
    """H with gate = exp(-i * exponent * H) for a cirq.EigenGate."""
    dim = int(np.prod(cirq.qid_shape(gate)))
    h = np.zeros((dim, dim), dtype=complex)
    shift = float(gate.global_shift)
    for half_turns, projector in gate._eigen_components():
        h += -np.pi * (float(half_turns) + shift) * np.asarray(projector)
    return h


def _control_projector(gate):
    """Projector on the control states that activate a cirq.ControlledGate."""
    sub_dim = int(np.prod(cirq.qid_shape(gate.sub_gate)))
    flip = cirq.ControlledGate(
        cirq.MatrixGate(-np.eye(sub_dim), qid_shape=cirq.qid_shape(gate.sub_gate)),
        control_values=gate.control_values,
        control_qid_shape=gate.control_qid_shape,
    )
    u = cirq.unitary(flip)
    return (np.eye(u.shape[0]) - u) / 2


def _symbolic_generator(gate):
    """(H, exponent) with gate = exp(-i exponent H), or None."""
    if isinstance(gate, cirq.EigenGate) and not cirq.is_parameterized(gate.global_shift):
        try:  # symbols in other parameters (e.g. PhasedISwap's phase) fail here
            return _eigen_generator(gate), gate.exponent
        except (TypeError, AttributeError, ValueError):
            return None
    if isinstance(gate, cirq.ControlledGate):
        inner = _symbolic_generator(gate.sub_gate)
        if inner is None:
            return None
        h_sub, exponent = inner
        control_dim = int(np.prod(gate.control_qid_shape))
        active = _control_projector(gate)
        return active @ np.kron(np.eye(control_dim), h_sub), exponent
    return None


def _lower_fsim(gate, qubits):
    # FSim(theta, phi) = exp(-i theta (XX + YY)/2) exp(-i phi |11><11|), exactly.
    xx_yy = np.zeros((4, 4), dtype=complex)
    xx_yy[1, 2] = xx_yy[2, 1] = 1.0
    n11 = np.diag([0.0, 0.0, 0.0, 1.0]).astype(complex)
    return [exponential(qubits, xx_yy, gate.theta), exponential(qubits, n11, gate.phi)]


def lower_operation(op, index_of):
    """Primitives for one cirq operation, in time order."""
    gate = op.gate
    if cirq.is_measurement(op) or isinstance(gate, (cirq.IdentityGate, cirq.GlobalPhaseGate)):
        return []
    if any(q.dimension != 2 for q in op.qubits):
        raise UnsupportedGateError(f"{describe_operation(op)}: only qubits (dimension 2) are supported")
    qubits = tuple(index_of[q] for q in op.qubits)
    parameterized = cirq.is_parameterized(op)
    if not parameterized and len(qubits) <= MAX_GATE_QUBITS and cirq.has_unitary(op):
        return [Primitive(qubits=qubits, matrix=cirq.unitary(op))]
    if not parameterized and len(qubits) <= MAX_CHANNEL_QUBITS and cirq.has_kraus(op):
        return [channel_primitive(qubits, cirq.kraus(op))]
    if gate is not None and parameterized:
        if isinstance(gate, cirq.FSimGate):
            return _lower_fsim(gate, qubits)
        diagonal = (cirq.DiagonalGate, cirq.TwoQubitDiagonalGate, cirq.ThreeQubitDiagonalGate)
        if isinstance(gate, diagonal) and len(qubits) <= MAX_GATE_QUBITS:
            # diag(e^{i a_k}): one exponential per basis state k (Cirq's own
            # decomposition of ThreeQubitDiagonalGate misorders the qubits).
            dim = 2 ** len(qubits)
            return [
                exponential(qubits, -np.diag(np.eye(dim)[k]), sympy.sympify(angle))
                for k, angle in enumerate(gate._diag_angles_radians)
            ]
        generator = _symbolic_generator(gate)
        if generator is not None and len(qubits) <= MAX_GATE_QUBITS:
            h, exponent = generator
            return [exponential(qubits, h, sympy.sympify(exponent))]
    decomposed = cirq.decompose_once(op, default=None)
    if decomposed is None:
        raise UnsupportedGateError(_unsupported_reason(op, parameterized))
    out = []
    for sub in cirq.flatten_to_ops(decomposed):
        out.extend(lower_operation(sub, index_of))
    return out


def channel_primitive(qubits, kraus):
    """A channel on `qubits` (the first the most significant bit of the Kraus matrices).

    A single unitary Kraus operator is a gate, and becomes one.
    """
    kraus = np.asarray(kraus, dtype=complex)
    if len(kraus) == 1 and np.allclose(kraus[0].conj().T @ kraus[0], np.eye(kraus.shape[-1]), atol=1e-10):
        return Primitive(qubits=tuple(qubits), matrix=kraus[0])
    return Primitive(qubits=tuple(qubits), kraus=kraus)


def _is_symbolic_channel(op):
    """Whether `op` is a channel once its symbols get numbers (its strengths are symbols)."""
    try:
        resolved = cirq.resolve_parameters(op, {s: 0.125 for s in cirq.parameter_names(op)})
        return not cirq.has_unitary(resolved) and cirq.has_kraus(resolved)
    except Exception:  # symbols in places no number fits
        return False


def _unsupported_reason(op, parameterized):
    """Why the native simulator cannot run `op` (which Cirq cannot decompose)."""
    name = describe_operation(op)
    if parameterized and _is_symbolic_channel(op):
        return (f"Channel {name} has symbolic strengths {sorted(cirq.parameter_names(op))}: the native simulator "
                "runs channels with numeric strengths only (resolve the symbols first, e.g. with "
                "cirq.resolve_parameters).")
    if parameterized:
        return (f"Gate {name} is not supported by the native simulator: its symbols are in no form it knows "
                "(EigenGate exponent, ControlledGate, FSimGate, diagonal gates) and Cirq cannot decompose it.")
    if cirq.has_unitary(op):
        return (f"Gate {name} is not supported by the native simulator: it runs constant gates on at most "
                f"{MAX_GATE_QUBITS} qubits, and Cirq cannot decompose this one into smaller gates.")
    if cirq.has_kraus(op):
        return (f"Channel {name} acts on {len(op.qubits)} qubits: the native simulator runs channels (noise, "
                f"reset, ...) on at most {MAX_CHANNEL_QUBITS} qubits, and Cirq cannot decompose this one.")
    return (f"Gate {name} has no unitary (_unitary_) and no decomposition (_decompose_), so the native simulator "
            "cannot run it: give the gate one of them.")


def lower_circuit(circuit, qubits):
    """Primitives of `circuit` with qubit q mapped to its index in `qubits`."""
    index_of = {q: i for i, q in enumerate(qubits)}
    missing = sorted(set(circuit.all_qubits()) - set(index_of))
    if missing:
        raise ValueError(f"Circuit acts on qubits {missing} that are not in the qubit order {list(qubits)}")
    out = []
    for op in circuit.all_operations():
        out.extend(lower_operation(op, index_of))
    return out
