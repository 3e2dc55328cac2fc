"""Gate kinds of a per-gate noise table: names for Cirq operations and Qiskit instructions.

A kind is a lower-case name. A Qiskit instruction has the kind of its name
(`"cx"`, `"sx"`, `"measure"`, ...), exactly as Aer attaches errors. A Cirq
operation has every name of `CIRQ_KINDS` whose gate family accepts its gate:
`cirq.X` is `"x"` and `"xpow"`, `cirq.rx(t)` is `"rx"` and `"xpow"`,
`cirq.X**0.5` is `"sx"` and `"xpow"`, `cirq.CNOT` is `"cx"` and `"cxpow"`.
"""

import difflib
import functools

import cirq

# Family members are compared without ignoring global phase: cirq.rx(pi) is
# X up to a phase, but it is an "rx" (Qiskit's rx(pi) is no "x" either).
_EXACT = dict(ignore_global_phase=False)

CIRQ_KINDS = {
    "x": cirq.GateFamily(cirq.X, **_EXACT),
    "y": cirq.GateFamily(cirq.Y, **_EXACT),
    "z": cirq.GateFamily(cirq.Z, **_EXACT),
    "h": cirq.GateFamily(cirq.H, **_EXACT),
    "s": cirq.GateFamily(cirq.S, **_EXACT),
    "sdg": cirq.GateFamily(cirq.S**-1, **_EXACT),
    "t": cirq.GateFamily(cirq.T, **_EXACT),
    "tdg": cirq.GateFamily(cirq.T**-1, **_EXACT),
    "sx": cirq.GateFamily(cirq.X**0.5, **_EXACT),
    "sxdg": cirq.GateFamily(cirq.X**-0.5, **_EXACT),
    "rx": cirq.GateFamily(cirq.Rx),
    "ry": cirq.GateFamily(cirq.Ry),
    "rz": cirq.GateFamily(cirq.Rz),
    "xpow": cirq.GateFamily(cirq.XPowGate),
    "ypow": cirq.GateFamily(cirq.YPowGate),
    "zpow": cirq.GateFamily(cirq.ZPowGate),
    "hpow": cirq.GateFamily(cirq.HPowGate),
    "phasedx": cirq.GateFamily(cirq.PhasedXPowGate),
    "phasedxz": cirq.GateFamily(cirq.PhasedXZGate),
    "cx": cirq.GateFamily(cirq.CNOT, **_EXACT),
    "cxpow": cirq.GateFamily(cirq.CXPowGate),
    "cz": cirq.GateFamily(cirq.CZ, **_EXACT),
    "czpow": cirq.GateFamily(cirq.CZPowGate),
    "swap": cirq.GateFamily(cirq.SWAP, **_EXACT),
    "swappow": cirq.GateFamily(cirq.SwapPowGate),
    "iswap": cirq.GateFamily(cirq.ISWAP, **_EXACT),
    "iswappow": cirq.GateFamily(cirq.ISwapPowGate),
    "xx": cirq.GateFamily(cirq.XX, **_EXACT),
    "yy": cirq.GateFamily(cirq.YY, **_EXACT),
    "zz": cirq.GateFamily(cirq.ZZ, **_EXACT),
    "xxpow": cirq.GateFamily(cirq.XXPowGate),
    "yypow": cirq.GateFamily(cirq.YYPowGate),
    "zzpow": cirq.GateFamily(cirq.ZZPowGate),
    "fsim": cirq.GateFamily(cirq.FSimGate),
    "phasedfsim": cirq.GateFamily(cirq.PhasedFSimGate),
    "ccx": cirq.GateFamily(cirq.CCX, **_EXACT),
    "ccxpow": cirq.GateFamily(cirq.CCXPowGate),
    "ccz": cirq.GateFamily(cirq.CCZ, **_EXACT),
    "cczpow": cirq.GateFamily(cirq.CCZPowGate),
    "cswap": cirq.GateFamily(cirq.CSWAP, **_EXACT),
    "matrix": cirq.GateFamily(cirq.MatrixGate),
    "measure": cirq.GateFamily(cirq.MeasurementGate),
    "reset": cirq.GateFamily(cirq.ResetChannel),
    "id": cirq.GateFamily(cirq.IdentityGate),
}
ALIASES = {"cnot": "cx", "toffoli": "ccx", "fredkin": "cswap", "i": "id", "measurement": "measure"}
# Kinds that act on each of their qubits alone: a multi-qubit cirq measurement
# gets a 1-qubit channel on each qubit, as Qiskit's per-qubit measures do.
PER_QUBIT_KINDS = ("measure", "id", "reset", "delay")
# Aer applies a quantum error on a measurement before it, on anything else after.
BEFORE_KINDS = ("measure",)


@functools.lru_cache(maxsize=None)
def qiskit_arities():
    """{instruction name: qubit count} of Qiskit's standard instructions."""
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return {name: gate.num_qubits for name, gate in get_standard_gate_name_mapping().items()}


def _cirq_arity(name):
    family = CIRQ_KINDS.get(name)
    if family is None:  # a name from a Qiskit noise model: a custom instruction or a label
        return None
    if isinstance(family.gate, cirq.Gate):
        return cirq.num_qubits(family.gate)
    return {"rx": 1, "ry": 1, "rz": 1, "xpow": 1, "ypow": 1, "zpow": 1, "hpow": 1, "phasedx": 1,
            "phasedxz": 1, "cxpow": 2, "czpow": 2, "swappow": 2, "iswappow": 2, "xxpow": 2, "yypow": 2,
            "zzpow": 2, "fsim": 2, "phasedfsim": 2, "ccxpow": 3, "cczpow": 3, "reset": 1}.get(name)


def known_names():
    return sorted(set(CIRQ_KINDS) | set(qiskit_arities()) | set(ALIASES))


def canonical_name(name, where):
    """The kind a user's gate name stands for; ValueError for an unknown name."""
    key = ALIASES.get(name.lower(), name.lower())
    if key in CIRQ_KINDS or key in qiskit_arities():
        return key
    close = difflib.get_close_matches(name.lower(), known_names(), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"{where}: unknown gate name {name!r}.{hint} Known names: Cirq gate kinds {sorted(CIRQ_KINDS)} "
        f"(and aliases {sorted(ALIASES)}), or Qiskit instruction names {sorted(qiskit_arities())}; "
        "for other Cirq gates give the gate type (e.g. MyGate) or a cirq.GateFamily as the key"
    )


def arity(name):
    """Qubit count of a kind's gates, or None when it varies (matrix, measure, ...)."""
    if name in PER_QUBIT_KINDS:
        return 1
    if name in qiskit_arities():
        return qiskit_arities()[name]
    return _cirq_arity(name)


def cirq_matches(kind, gate):
    """Whether a cirq gate is of `kind` (a canonical name or a cirq.GateFamily)."""
    if gate is None:
        return False
    family = CIRQ_KINDS.get(kind) if isinstance(kind, str) else kind
    return family is not None and gate in family
