"""Keras 3 quantum layers."""

from qkeras_hybrid.layers.measurement import ProbabilityLayer, SampleLayer, StateLayer
from qkeras_hybrid.layers.probabilities import ExpectationToProbabilities
from qkeras_hybrid.layers.qiskit_layer import QiskitLayer
from qkeras_hybrid.layers.quantum_conv2d import QuantumConv2D
from qkeras_hybrid.layers.quantum_data_layer import QuantumDataLayer
from qkeras_hybrid.layers.quantum_layer import QuantumLayer

__all__ = [
    "ExpectationToProbabilities",
    "ProbabilityLayer",
    "QiskitLayer",
    "QuantumConv2D",
    "QuantumDataLayer",
    "QuantumLayer",
    "SampleLayer",
    "StateLayer",
]
