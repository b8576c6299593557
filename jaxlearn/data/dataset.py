"""The ``Dataset`` container and the split-size check shared by the dataset constructors.

A dataset is four host-side numpy arrays plus two pieces of metadata. It stays on the host
(numpy, not jax) so that building one never allocates device memory and never compiles; the
training code moves batches to the device (see :mod:`jaxlearn.data.batching`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def batch_of_one(x) -> jax.ShapeDtypeStruct:
    """The ``jax.ShapeDtypeStruct`` of one example of ``x`` (leading axis: examples) as a batch of one."""
    return jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype)


class Arrays(NamedTuple):
    """The four splits of a :class:`Dataset` as jax arrays (:meth:`Dataset.arrays`): what an
    experiment's ``data(config)`` hands the runner, read by name (``arrays.x_train``), not by
    position. A pytree, so it crosses ``jit``/``vmap`` and the runner's device placement as it is."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array

    @property
    def input_spec(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of a batch of one input, ``(1, *x_train.shape[1:])`` (a model's ``init`` argument)."""
        return batch_of_one(self.x_train)


class Dataset(NamedTuple):
    """A supervised dataset: train and test splits as host-side numpy arrays.

    Fields:
      x_train: ``(n_train, *input_shape)`` inputs; float32, or int32 for token inputs.
      y_train: ``(n_train,)`` int32 class labels, or ``(n_train, d_out)`` float32 targets.
      x_test, y_test: the same for the test split.
      num_classes: number of classes (labels lie in ``[0, num_classes)``), or ``None`` for
        regression.
      name: a short human-readable identifier (used in logs and run names).

    ``input_spec`` is the ``jax.ShapeDtypeStruct`` of one batch-1 input, the argument a
    model's ``init(key, input_spec)`` expects.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int | None
    name: str

    @property
    def input_spec(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of a batch of one input: ``(1, *x_train.shape[1:])``."""
        return batch_of_one(self.x_train)

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    def arrays(self) -> Arrays:
        """The four splits as jax arrays, dtypes kept, named (:class:`Arrays`: ``x_train, y_train,
        x_test, y_test``): what an experiment's ``data(config)`` hands the runner (moved to the
        device once, shared by a group)."""
        return Arrays(*(jnp.asarray(a) for a in (self.x_train, self.y_train, self.x_test, self.y_test)))


def split_sizes(name: str, fraction: float, total: int) -> int:
    """``round(fraction * total)``, checked to leave both parts of the split non-empty."""
    size = int(round(fraction * total))
    if not 0 < size < total:
        raise ValueError(
            f"{name}={fraction} of {total} examples leaves an empty split "
            f"({size} vs {total - size})"
        )
    return size
