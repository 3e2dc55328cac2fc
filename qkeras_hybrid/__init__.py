"""qkeras_hybrid: hybrid quantum-classical neural networks in Keras 3."""

__version__ = "0.1.0"

from qkeras_hybrid import circuits, ops
from qkeras_hybrid.circuits import CompiledCircuit, compile_circuit

__all__ = ["CompiledCircuit", "circuits", "compile_circuit", "ops", "__version__"]
