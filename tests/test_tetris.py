"""The QCCNN Tetris data set: bricks, configurations, pixels, splits, subsets, TFDS builder."""

import itertools

import numpy as np
import pytest

from qkeras_hybrid.datasets import load_tetris
from qkeras_hybrid.datasets.tetris import BRICKS, configurations, generate

# The bricks as cell lists, written out independently of the module.
CELLS = {
    "S": {(0, 1), (0, 2), (1, 0), (1, 1)},
    "O": {(0, 0), (0, 1), (1, 0), (1, 1)},
    "I": {(0, 0), (0, 1), (0, 2)},
    "T": {(0, 0), (0, 1), (0, 2), (1, 1)},
    "L": {(0, 0), (1, 0), (2, 0), (2, 1)},
}


def _normalize(cells):
    top = min(r for r, _ in cells)
    left = min(c for _, c in cells)
    return frozenset((r - top, c - left) for r, c in cells)


def _symmetries(cells):
    """All rotations and reflections of a cell set, normalized."""
    out = set()
    for flip, turns in itertools.product((False, True), range(4)):
        shape = {(r, -c) if flip else (r, c) for r, c in cells}
        for _ in range(turns):
            shape = {(c, -r) for r, c in shape}
        out.add(_normalize(shape))
    return out


def brute_force_configurations(brick):
    """Every 3x3 mask whose cells are the brick up to rotation, reflection and translation."""
    shapes = _symmetries(CELLS[brick])
    found = set()
    for bits in range(512):
        cells = {(i // 3, i % 3) for i in range(9) if bits >> i & 1}
        if cells and _normalize(cells) in shapes:
            found.add(bits)
    return found


def _bits(mask):
    return sum(1 << i for i, v in enumerate(np.asarray(mask).reshape(-1)) if v)


def test_configuration_counts_and_distinctness():
    counts = {brick: len(configurations(brick)) for brick in BRICKS}
    assert counts == {"S": 8, "O": 4, "I": 6, "T": 8, "L": 16}
    assert sorted(counts.values()) == sorted([8, 16, 4, 8, 6])  # the multiset the paper quotes
    everything = [_bits(m) for brick in BRICKS for m in configurations(brick)]
    assert len(everything) == len(set(everything)) == 42  # distinct within and across bricks
    for brick in BRICKS:
        masks = configurations(brick)
        assert masks.shape[1:] == (3, 3) and set(np.unique(masks)) <= {0, 1}
        assert {_bits(m) for m in masks} == brute_force_configurations(brick)


def test_class_counts_pixel_ranges_and_labels():
    images, labels, config_index, is_test = generate(seed=0)
    assert images.shape == (1000, 3, 3, 1) and images.dtype == np.float32
    assert np.bincount(labels).tolist() == [200] * 5
    assert np.bincount(labels[is_test]).tolist() == [40] * 5
    for b, brick in enumerate(BRICKS):
        masks = configurations(brick)
        rows = labels == b
        expected = masks[config_index[rows]][..., None] == 1
        fg, bg = images[rows][expected], images[rows][~expected]
        assert fg.min() >= 0.7 and fg.max() <= 1.0 and bg.min() >= 0.0 and bg.max() <= 0.1
        # Uniform draws: means near the middle of each range, every configuration used.
        assert abs(fg.mean() - 0.85) < 0.02 and abs(bg.mean() - 0.05) < 0.01
        assert set(config_index[rows]) == set(range(len(masks)))
    # Thresholding any image recovers a configuration of its own brick, and only of it.
    lookup = {_bits(m): b for b, brick in enumerate(BRICKS) for m in configurations(brick)}
    assert [lookup[_bits(image > 0.4)] for image in images] == labels.tolist()


def test_five_label_split():
    (x_train, y_train), (x_test, y_test) = load_tetris(seed=0)
    assert x_train.shape == (800, 3, 3, 1) and x_test.shape == (200, 3, 3, 1)
    assert np.bincount(y_train).tolist() == [160] * 5 and np.bincount(y_test).tolist() == [40] * 5
    keys_train = {x.tobytes() for x in x_train}
    assert len(keys_train) == 800 and not keys_train & {x.tobytes() for x in x_test}
    assert len(set(y_train[:20].tolist())) > 1  # shuffled, not sorted by class
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0


def test_two_label_subset_is_the_s_and_t_images_of_the_same_data_set():
    (x_train, y_train), (x_test, y_test) = load_tetris(("S", "T"), seed=0)
    assert x_train.shape == (320, 3, 3, 1) and x_test.shape == (80, 3, 3, 1)
    assert np.bincount(y_train).tolist() == [160, 160] and np.bincount(y_test).tolist() == [40, 40]
    (full_train, full_y), (full_test, full_y_test) = load_tetris(seed=0)
    by_key = {x.tobytes(): BRICKS[y] for x, y in zip(np.concatenate([full_train, full_test]),
                                                      np.concatenate([full_y, full_y_test]))}
    train_keys = {x.tobytes() for x in full_train}
    for x, y, split in itertools.chain(zip(x_train, y_train, itertools.repeat(True)),
                                       zip(x_test, y_test, itertools.repeat(False))):
        assert by_key[x.tobytes()] == ("S", "T")[y]
        assert (x.tobytes() in train_keys) == split  # the subset keeps the split
    # Labels follow the order asked for.
    (_, y_swapped), _ = load_tetris(("T", "S"), seed=0)
    assert np.bincount(y_swapped).tolist() == [160, 160]


def test_one_hot_labels():
    (_, y), _ = load_tetris(("S", "O", "T"), seed=2, one_hot=True)
    (_, y_int), _ = load_tetris(("S", "O", "T"), seed=2)
    assert y.shape == (480, 3) and y.dtype == np.float32 and np.all(y.sum(axis=1) == 1)
    np.testing.assert_array_equal(np.argmax(y, axis=1), y_int)


def test_seeded():
    a, b, c = load_tetris(seed=3), load_tetris(seed=3), load_tetris(seed=4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bricks": ("S", "Z")}, r"bad: \['Z'\]"),
        ({"bricks": ()}, "non-empty sequence"),
        ({"bricks": ("S", "S")}, "must not repeat"),
        ({"bricks": 3}, "sequence of names"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_tetris(**kwargs)


def test_configurations_of_unknown_brick():
    with pytest.raises(ValueError, match="brick must be one of"):
        configurations("Z")


# ------------------------------------------------------------ TFDS builder


def test_tfds_builder_generates_the_loader_split_locally(tmp_path):
    from test_datasets import _import_tfds

    tfds = _import_tfds()
    from qkeras_hybrid.datasets import QkerasHybridTetris

    for config, bricks, sizes in (("s_t", ("S", "T"), (320, 80)), ("five_bricks", BRICKS, (800, 200))):
        builder = QkerasHybridTetris(config=config, data_dir=str(tmp_path))
        builder.download_and_prepare()
        assert builder.info.features["label"].names == list(bricks)
        assert (builder.info.splits["train"].num_examples, builder.info.splits["test"].num_examples) == sizes
        for split, (x, y) in zip(("train", "test"), load_tetris(bricks, seed=0)):
            pairs = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True)))
            got = sorted((image.tobytes(), int(label)) for image, label in pairs)
            assert pairs[0][0].dtype == np.float32 and pairs[0][0].shape == (3, 3, 1)
            assert got == sorted((image.tobytes(), int(label)) for image, label in zip(x, y))
    assert tfds.builder("qkeras_hybrid_tetris/s_t", data_dir=str(tmp_path)).info.splits["test"].num_examples == 80


def test_docstring_example_runs():
    import doctest

    from qkeras_hybrid.datasets import tetris

    result = doctest.testmod(tetris, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
