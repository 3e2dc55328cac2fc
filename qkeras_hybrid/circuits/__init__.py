"""Circuit compilation for the native simulator."""

from qkeras_hybrid.circuits.cirq_compiler import UnsupportedGateError
from qkeras_hybrid.circuits.compiled import CompiledCircuit, cirq_to_native_order, compile_circuit
from qkeras_hybrid.circuits import templates
from qkeras_hybrid.circuits.templates import (
    Template,
    amplitude_embedding,
    angle_embedding,
    basis_embedding,
    hardware_efficient,
    strongly_entangling,
)

__all__ = ["CompiledCircuit", "UnsupportedGateError", "cirq_to_native_order", "compile_circuit"]
__all__ += [
    "Template",
    "amplitude_embedding",
    "angle_embedding",
    "basis_embedding",
    "hardware_efficient",
    "strongly_entangling",
    "templates",
]
