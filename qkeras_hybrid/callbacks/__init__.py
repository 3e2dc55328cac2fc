"""Keras callbacks for quantum layers."""

from qkeras_hybrid.callbacks.quantum_tensorboard import QuantumTensorBoard, find_quantum_layers

__all__ = ["QuantumTensorBoard", "find_quantum_layers"]
