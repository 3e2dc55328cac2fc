"""Noise for the native engine: noise models and readout errors.

`resolve(noise)` accepts every form a layer's `noise=` takes and returns a
`NoiseSpec` (or None).
"""

from qkeras_hybrid.noise.models import CirqNoise, GateNoise, NoiseRule, NoiseSpec, resolve
from qkeras_hybrid.noise.qiskit_noise import from_qiskit_noise_model
from qkeras_hybrid.noise.readout import Readout

__all__ = ["CirqNoise", "GateNoise", "NoiseRule", "NoiseSpec", "Readout", "from_qiskit_noise_model", "resolve"]
