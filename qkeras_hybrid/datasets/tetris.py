"""The Tetris dataset of QCCNN (Liu et al.): noisy 3x3 gray-scale images of 5 bricks.

Every image shows one brick in one of its configurations (a placement and
orientation inside the 3x3 frame): foreground pixels are drawn uniformly in
[0.7, 1], background pixels uniformly in [0, 0.1]. The bricks are the Tetris
pieces that fit a 3x3 frame:

  S: the S/Z tetromino, 2 orientations x 2 mirror images x 2 positions = 8
  O: the 2x2 square, 4 positions                                        = 4
  I: a straight line (3 cells: a 4-cell I does not fit), 2 x 3 positions = 6
  T: the T tetromino, 4 orientations x 2 positions                       = 8
  L: the L/J tetromino, 4 orientations x 2 mirror images x 2 positions   = 16

42 configurations in all, every one a distinct pixel pattern. (The counts
8, 16, 4, 8, 6 quoted for "S, O, I, T, L" are the same multiset in another
order: O has only 4 placements in a 3x3 frame and L has 16.)

The data set is 1000 images, 200 per brick, each brick's configuration drawn
uniformly; it is split 80/20 per brick (160 train, 40 test images each).
Everything is generated from `seed`, so a seed names one data set. Asking for
a subset of bricks, e.g. the 2-label set `("S", "T")`, keeps those bricks'
images of the same 1000-image data set (320 train, 80 test).
"""

import numpy as np

BRICKS = ("S", "O", "I", "T", "L")
IMAGE_SHAPE = (3, 3, 1)
FOREGROUND = (0.7, 1.0)
BACKGROUND = (0.0, 0.1)
NUM_IMAGES = 1000
TEST_FRACTION = 0.2
TWO_LABELS = ("S", "T")

# One orientation of each brick; the others come from rotations and mirrors.
_BASE_SHAPES = {
    "S": [[0, 1, 1], [1, 1, 0]],
    "O": [[1, 1], [1, 1]],
    "I": [[1, 1, 1]],
    "T": [[1, 1, 1], [0, 1, 0]],
    "L": [[1, 0], [1, 0], [1, 1]],
}


def configurations(brick):
    """The distinct 3x3 binary masks of `brick` (uint8 [n, 3, 3]), in a fixed order."""
    if brick not in _BASE_SHAPES:
        raise ValueError(f"brick must be one of {BRICKS}, got {brick!r}")
    base = np.array(_BASE_SHAPES[brick], dtype=np.uint8)
    masks = {}
    for shape in (base, np.fliplr(base)):
        for turns in range(4):
            piece = np.rot90(shape, turns)
            height, width = piece.shape
            for top in range(3 - height + 1):
                for left in range(3 - width + 1):
                    mask = np.zeros((3, 3), dtype=np.uint8)
                    mask[top : top + height, left : left + width] = piece
                    masks.setdefault(mask.tobytes(), mask)  # rotations of symmetric bricks repeat
    return np.stack([masks[key] for key in sorted(masks)])


def _check_bricks(bricks):
    if isinstance(bricks, str):
        bricks = (bricks,)
    try:
        bricks = tuple(bricks)
    except TypeError:
        raise ValueError(f"bricks must be a sequence of names from {BRICKS}, got {bricks!r}") from None
    bad = [b for b in bricks if b not in BRICKS]
    if bad or not bricks:
        raise ValueError(f"bricks must be a non-empty sequence of names from {BRICKS}, got {list(bricks)} (bad: {bad})")
    if len(set(bricks)) != len(bricks):
        raise ValueError(f"bricks must not repeat, got {list(bricks)}")
    return bricks


def generate(seed=0):
    """The full data set: (images float32 [1000, 3, 3, 1], brick index int64 [1000],
    configuration index int64 [1000], is_test bool [1000]), in generation order."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    per_brick = NUM_IMAGES // len(BRICKS)
    test_per_brick = int(round(per_brick * TEST_FRACTION))
    labels = np.repeat(np.arange(len(BRICKS), dtype=np.int64), per_brick)
    config_index = np.empty(NUM_IMAGES, dtype=np.int64)
    masks = np.empty((NUM_IMAGES, 3, 3), dtype=np.uint8)
    is_test = np.zeros(NUM_IMAGES, dtype=bool)
    for b, brick in enumerate(BRICKS):
        brick_masks = configurations(brick)
        rows = slice(b * per_brick, (b + 1) * per_brick)
        config_index[rows] = rng.integers(len(brick_masks), size=per_brick)
        masks[rows] = brick_masks[config_index[rows]]
        is_test[b * per_brick + rng.permutation(per_brick)[:test_per_brick]] = True
    foreground = rng.uniform(*FOREGROUND, size=masks.shape)
    background = rng.uniform(*BACKGROUND, size=masks.shape)
    images = np.where(masks == 1, foreground, background).astype(np.float32)[..., None]
    return images, labels, config_index, is_test


def load_tetris(bricks=BRICKS, seed=0, one_hot=False):
    """The QCCNN Tetris data set as `(x_train, y_train), (x_test, y_test)`.

    Args:
      bricks: the bricks to keep, from `("S", "O", "I", "T", "L")` (all five,
        the 5-label task, by default; `("S", "T")` is the paper's 2-label
        task). Labels are positions in this sequence.
      seed: the seed of the whole data set (pixels, configurations, split).
      one_hot: return labels one-hot (float32 [N, len(bricks)]) instead of
        integers.

    Returns:
      Images float32 `[N, 3, 3, 1]` with pixels in [0, 1] and labels; all five
      bricks give 800 training and 200 test images, each split shuffled.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = load_tetris(("S", "T"), seed=0)
    >>> x_train.shape, x_test.shape
    ((320, 3, 3, 1), (80, 3, 3, 1))
    """
    bricks = _check_bricks(bricks)
    images, labels, _, is_test = generate(seed)
    wanted = np.array([BRICKS.index(b) for b in bricks])
    relabel = np.full(len(BRICKS), -1, dtype=np.int64)
    relabel[wanted] = np.arange(len(bricks))
    keep = np.isin(labels, wanted)
    order_rng = np.random.default_rng([seed, len(bricks)] + wanted.tolist())
    splits = []
    for test in (False, True):
        rows = np.flatnonzero(keep & (is_test == test))
        rows = rows[order_rng.permutation(len(rows))]
        y = relabel[labels[rows]]
        if one_hot:
            y = np.eye(len(bricks), dtype=np.float32)[y]
        splits.append((images[rows].copy(), y))
    return tuple(splits)
