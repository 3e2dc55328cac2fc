"""Quantum layers on a Keras backend other than TensorFlow: refused at construction, saying what to do.

Issue 12, item 7: on JAX or PyTorch an eager call used to work and `fit`
then failed with "'str' object has no attribute '_error_repr'".
"""

import importlib.util
import re

import cirq
import keras
import pytest
import sympy

from conftest import run_fresh_python
from qkeras_hybrid.layers import QiskitLayer, QuantumConv2D, QuantumDataLayer, QuantumLayer

MESSAGE = (r"needs Keras's TensorFlow backend \(it runs TensorFlow ops\), but Keras is running on the '{}' backend "
           r"\(keras.backend.backend\(\)\). Select TensorFlow with the environment variable KERAS_BACKEND=tensorflow")


def construct_each_layer():
    """Every quantum layer, constructed as a user would."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import SparsePauliOp

    q = cirq.LineQubit(0)
    x = sympy.Symbol("x")
    qc = QuantumCircuit(1)
    qc.ry(Parameter("t"), 0)
    return {
        "QuantumLayer": lambda: QuantumLayer(cirq.Circuit(cirq.rx(x)(q)), cirq.Z(q), input_symbols=[x]),
        "QuantumConv2D": lambda: QuantumConv2D(filters=1, kernel_size=2),
        "QuantumDataLayer": lambda: QuantumDataLayer(cirq.Circuit(cirq.rx(x)(q)), cirq.Z(q)),
        "QiskitLayer": lambda: QiskitLayer(qc, SparsePauliOp("Z")),
    }


@pytest.mark.parametrize("name", ["QuantumLayer", "QuantumConv2D", "QuantumDataLayer", "QiskitLayer"])
def test_other_backend_is_refused_at_construction(monkeypatch, name):
    """PyTorch is not installed here: the check reads keras.backend.backend(), so pretend."""
    make = construct_each_layer()[name]
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(NotImplementedError, match=f"^{name} " + MESSAGE.format("torch")):
        make()
    monkeypatch.undo()
    make()  # and on TensorFlow it constructs


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_backend_in_a_fresh_process():
    out = run_fresh_python(
        """
        import os
        os.environ["KERAS_BACKEND"] = "jax"
        import keras
        import qkeras_hybrid  # importing works on any backend
        import sys
        sys.path.insert(0, "tests")
        from test_layer_backends import construct_each_layer
        assert keras.backend.backend() == "jax"
        for name, make in construct_each_layer().items():
            try:
                make()
            except NotImplementedError as e:
                print(name, "|", e)
            else:
                print(name, "| constructed")
        """
    )
    lines = dict(line.split(" | ", 1) for line in out.strip().splitlines())
    assert sorted(lines) == ["QiskitLayer", "QuantumConv2D", "QuantumDataLayer", "QuantumLayer"]
    for name, message in lines.items():
        assert re.match(f"{name} " + MESSAGE.format("jax"), message), message
