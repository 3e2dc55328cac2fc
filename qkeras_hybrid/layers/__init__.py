"""Keras 3 quantum layers."""

from qkeras_hybrid.layers.probabilities import ExpectationToProbabilities
from qkeras_hybrid.layers.quantum_layer import QuantumLayer

__all__ = ["ExpectationToProbabilities", "QuantumLayer"]
