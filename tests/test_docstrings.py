"""The `Example:` sections of the layer and callback docstrings run as written."""

import doctest

import pytest

from qkeras_hybrid.callbacks import quantum_tensorboard
from qkeras_hybrid.layers import measurement, probabilities, quantum_layer


@pytest.mark.parametrize("module", [quantum_layer, probabilities, measurement, quantum_tensorboard], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
