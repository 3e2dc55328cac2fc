"""A TensorFlow Datasets builder for the QCCNN Tetris data set (generated locally).

The examples come from `load_tetris`, so `tfds` splits and `load_tetris`
agree image for image. Nothing is downloaded.

Example:

>>> import tensorflow_datasets as tfds
>>> builder = QkerasHybridTetris(config="s_t", data_dir="/tmp/tfds")
>>> builder.download_and_prepare()
>>> train = builder.as_dataset(split="train", as_supervised=True)
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from qkeras_hybrid.datasets import tetris


@dataclasses.dataclass
class TetrisConfig(tfds.core.BuilderConfig):
    """Which bricks, and the seed of the 1000-image data set they come from."""

    bricks: tuple = tetris.BRICKS
    seed: int = 0


class QkerasHybridTetris(tfds.core.GeneratorBasedBuilder):
    """Noisy 3x3 gray-scale images of Tetris bricks (Liu et al., QCCNN), generated locally."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: the QCCNN Tetris data set, 5 bricks and the (S, T) subset."}
    BUILDER_CONFIGS = [
        TetrisConfig(
            name="five_bricks",
            description="All five bricks S, O, I, T, L: 800 train and 200 test images.",
        ),
        TetrisConfig(
            name="s_t",
            description="The 2-label task, bricks S and T (labels 0, 1): 320 train and 80 test images.",
            bricks=tetris.TWO_LABELS,
        ),
    ]
    DEFAULT_CONFIG_NAME = "five_bricks"

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=tetris.IMAGE_SHAPE, dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=list(self.builder_config.bricks)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://arxiv.org/abs/1911.02998",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated from the seed; nothing to download
        config = self.builder_config
        (x_train, y_train), (x_test, y_test) = tetris.load_tetris(config.bricks, seed=config.seed)
        return {
            "train": self._generate_examples(x_train, y_train),
            "test": self._generate_examples(x_test, y_test),
        }

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}
