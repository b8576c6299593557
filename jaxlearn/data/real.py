"""Real datasets that need no network: scikit-learn's bundled digits, MNIST-1D generated
locally, and user arrays saved as ``.npz``."""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import pathlib
import random

import numpy as np

from jaxlearn._checks import check_int, check_real
from jaxlearn.data.dataset import Dataset, split_sizes

_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def digits(seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """The 8x8 handwritten digits bundled with scikit-learn (1797 images, 10 classes).

    Read from the copy shipped inside scikit-learn (the file ``sklearn.datasets.load_digits``
    reads, without importing scikit-learn), so it needs no network. Pixels (integers 0..16) are
    divided by 16.

    Args:
      seed: the examples are shuffled by ``np.random.default_rng(seed).permutation`` before
        the split, so the split and the order of each part depend only on ``seed``.
      test_fraction: share of examples in the test split, in (0, 1); the test split holds
        ``round(test_fraction * 1797)`` examples, the train split the rest.

    Returns:
      ``Dataset`` with ``x`` float32 ``(n, 64)`` in [0, 1] (row-major 8x8 images), ``y``
      int32 ``(n,)``, ``num_classes=10``, name ``"digits"``.

    Examples:
        >>> from jaxlearn import data
        >>> ds = data.digits(seed=0)
        >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes, ds.input_spec.shape
        ((1438, 64), (359, 64), 10, (1, 64))
    """
    seed = check_int(seed, "seed", minimum=0, where="digits", noun="integer")
    test_fraction = check_real(test_fraction, "test_fraction", minimum=0, maximum=1, open_minimum=True,
                               open_maximum=True, where="digits")
    x, y = _bundled_digits()
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    n_test = split_sizes("test_fraction", test_fraction, len(y))
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[:n_test], perm[n_test:]
    return Dataset(x[train], y[train], x[test], y[test], num_classes=10, name="digits")


@functools.lru_cache(maxsize=1)
def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits(return_X_y=True)`` gives them (float64 pixels
    ``(1797, 64)``, int labels), read-only: its bundled ``datasets/data/digits.csv.gz`` read as
    ``load_digits`` reads it (``np.loadtxt``, last column the label), without importing
    scikit-learn, which takes seconds; ``load_digits`` itself where the file is not there."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    path = pathlib.Path(locations[0], "datasets", "data", "digits.csv.gz") if locations else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            table = np.loadtxt(f, delimiter=",")
        x, y = table[:, :-1], table[:, -1].astype(int)
    else:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
    for a in (x, y):
        a.setflags(write=False)
    return x, y


def mnist1d(num_samples: int = 5000, seed: int = 42) -> Dataset:
    """MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439).

    Ten 1-D templates (one per digit) are padded, translated, scaled, sheared and noised into
    length-40 signals, with the reference generator ``mnist1d.data.make_dataset`` and its
    default arguments except ``num_samples`` and ``seed``. The data are *generated*, never
    downloaded, so ``num_samples=5000, seed=42`` reproduces the published dataset.

    The reference generator reseeds numpy's and Python's global random generators; their
    states are saved before and restored after, so the caller's global RNG state is unchanged.
    Generation takes a few seconds, so results are memoized per ``(num_samples, seed)`` in the
    process; the returned arrays are read-only so that the cached copy cannot be modified.

    Args:
      num_samples: total number of examples; ``num_samples // 10`` are made per class (so a
        count that is not a multiple of 10 is rounded down). At least 10.
      seed: seed of the reference generator.

    Returns:
      ``Dataset`` with ``x`` float32 ``(n, 40)`` (standardised over the whole dataset by the
      generator), ``y`` int32, the generator's own split (first 80% train, rest test),
      ``num_classes=10``, name ``"mnist1d"``.
    """
    num_samples = check_int(num_samples, "num_samples", minimum=10, where="mnist1d", noun="integer")
    seed = check_int(seed, "seed", minimum=0, where="mnist1d", noun="integer")
    return _mnist1d_cached(num_samples, seed)


@functools.lru_cache(maxsize=8)
def _mnist1d_cached(num_samples: int, seed: int) -> Dataset:
    # mnist1d imports matplotlib.pyplot at import time: keep it out of `import jaxlearn`.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    arrays = (
        np.asarray(raw["x"], dtype=np.float32),
        np.asarray(raw["y"], dtype=np.int32),
        np.asarray(raw["x_test"], dtype=np.float32),
        np.asarray(raw["y_test"], dtype=np.int32),
    )
    for a in arrays:
        a.setflags(write=False)
    return Dataset(*arrays, num_classes=10, name="mnist1d")


def from_npz(path: str | os.PathLike, name: str | None = None) -> Dataset:
    """Load a user dataset saved with ``np.savez(path, x_train=..., y_train=..., ...)``.

    Required keys: ``x_train``, ``y_train``, ``x_test``, ``y_test`` (leading axis = examples,
    train and test shapes equal beyond it). Optional key ``num_classes`` (0-d integer). The
    file is read with ``allow_pickle=False``: object arrays are refused.

    Conventions: floating arrays become float32 and integer arrays int32 (inputs and labels
    alike; integer inputs are tokens). If ``num_classes`` is stored, labels must be integers
    in ``[0, num_classes)``. If it is absent, integer 1-D labels mean classification with
    ``num_classes = max(label) + 1`` over both splits; floating labels mean regression
    (``num_classes=None``).

    Args:
      path: the ``.npz`` file.
      name: dataset name; defaults to the file name without its extension.

    Raises:
      ValueError: missing key(s) (all named, with the file), inconsistent shapes, labels
        outside ``[0, num_classes)``, or arrays of a non-numeric dtype.
    """
    path = os.fspath(path)
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"from_npz: {path!r} holds a single array, expected an .npz archive "
                         f"with keys {', '.join(_NPZ_REQUIRED)}")
    with loaded:
        missing = [k for k in _NPZ_REQUIRED if k not in loaded.files]
        if missing:
            raise ValueError(
                f"from_npz: {path!r} is missing required key(s) {', '.join(map(repr, missing))} "
                f"(found: {', '.join(map(repr, loaded.files)) or 'none'})"
            )
        arrays = {k: _numeric(path, k, loaded[k]) for k in _NPZ_REQUIRED}
        stored_classes = loaded["num_classes"] if "num_classes" in loaded.files else None

    x_train, y_train, x_test, y_test = (arrays[k] for k in _NPZ_REQUIRED)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
            raise ValueError(f"from_npz: {path!r}: x_{split} and y_{split} need the same leading "
                             f"(example) axis, got shapes {x.shape} and {y.shape}")
    for kind in ("x", "y"):
        train, test = arrays[f"{kind}_train"], arrays[f"{kind}_test"]
        if train.shape[1:] != test.shape[1:] or train.dtype != test.dtype:
            raise ValueError(f"from_npz: {path!r}: {kind}_train and {kind}_test differ per "
                             f"example: {train.shape[1:]} {train.dtype} vs "
                             f"{test.shape[1:]} {test.dtype}")

    num_classes = _num_classes(path, stored_classes, y_train, y_test)
    return Dataset(x_train, y_train, x_test, y_test, num_classes=num_classes, name=name)


def _numeric(path: str, key: str, a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int32)
    raise ValueError(f"from_npz: {path!r}: {key} must be a floating or integer array, "
                     f"got dtype {a.dtype}")


def _num_classes(path, stored, y_train, y_test) -> int | None:
    integer_labels = np.issubdtype(y_train.dtype, np.integer)
    if stored is None:
        if not integer_labels or y_train.ndim != 1:
            return None
        return int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    if stored.ndim != 0 or not np.issubdtype(stored.dtype, np.integer) or int(stored) < 1:
        raise ValueError(f"from_npz: {path!r}: num_classes must be a 0-d positive integer, "
                         f"got {stored!r}")
    num_classes = int(stored)
    if not integer_labels:
        raise ValueError(f"from_npz: {path!r}: num_classes={num_classes} is stored but the "
                         f"labels have dtype {y_train.dtype}, expected integers")
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"from_npz: {path!r}: {key} must lie in [0, {num_classes}), "
                             f"got range [{y.min()}, {y.max()}]")
    return num_classes
