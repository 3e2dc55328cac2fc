"""qkeras_hybrid: hybrid quantum-classical neural networks in Keras 3."""

__version__ = "0.1.0"

from qkeras_hybrid import ops

# Register the simulator op now, so a SavedModel that uses it loads after
# `import qkeras_hybrid`; fails with instructions if the op is not built.
ops.load()

from qkeras_hybrid import backends, callbacks, circuits, datasets, distribute, layers, noise  # noqa: E402
from qkeras_hybrid.circuits import CompiledCircuit, compile_circuit  # noqa: E402
from qkeras_hybrid.layers import (  # noqa: E402
    ProbabilityLayer,
    QiskitLayer,
    QuantumConv2D,
    QuantumDataLayer,
    QuantumLayer,
    SampleLayer,
    StateLayer,
)

__all__ = [
    "CompiledCircuit",
    "ProbabilityLayer",
    "QiskitLayer",
    "QuantumConv2D",
    "QuantumDataLayer",
    "QuantumLayer",
    "SampleLayer",
    "StateLayer",
    "__version__",
    "backends",
    "callbacks",
    "circuits",
    "compile_circuit",
    "datasets",
    "distribute",
    "layers",
    "noise",
    "ops",
]
