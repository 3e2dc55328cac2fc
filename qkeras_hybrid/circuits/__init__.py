"""Circuit compilation for the native simulator."""

from qkeras_hybrid.circuits.cirq_compiler import UnsupportedGateError
from qkeras_hybrid.circuits.compiled import CompiledCircuit, compile_circuit

__all__ = ["CompiledCircuit", "UnsupportedGateError", "compile_circuit"]
