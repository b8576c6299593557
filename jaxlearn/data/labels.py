"""Label corruption: random labels and symmetric label noise.

Two forms: host-side functions that return a new ``Dataset`` (fixed corruption, decided once
from a seed), and :func:`corrupt_labels`, a pure jax function that corrupts a batch inside a
traced program — the corruption rate can then be a traced, vmapped hyperparameter.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import _random
from jaxlearn._checks import check_int, is_real, is_traced
from jaxlearn._types import Scalar
from jaxlearn.data.dataset import Dataset


def _classification(ds: Dataset, fn: str) -> int:
    if ds.num_classes is None:
        raise ValueError(f"{fn} needs a classification dataset (num_classes set); "
                         f"{ds.name!r} has num_classes=None")
    if not np.issubdtype(np.asarray(ds.y_train).dtype, np.integer):
        raise ValueError(f"{fn} needs integer labels; {ds.name!r} has y_train dtype "
                         f"{np.asarray(ds.y_train).dtype}")
    return int(ds.num_classes)


def _check_concrete_rate(rate) -> None:
    if is_traced(rate):
        return  # traced: checked by whoever chose it
    if not (is_real(rate) or isinstance(rate, (np.ndarray, jax.Array))):
        raise ValueError(f"rate must be a number in [0, 1], got {rate!r}")
    values = np.asarray(rate)
    if values.dtype.kind not in "iuf":
        raise ValueError(f"rate must be a number in [0, 1], got dtype {values.dtype}")
    if not np.all((values >= 0) & (values <= 1)):
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")


def random_labels(ds: Dataset, seed: int = 0) -> Dataset:
    """Replace every training label by an independent uniform random class.

    The randomisation test of Zhang et al. 2017, "Understanding deep learning requires
    rethinking generalization": a network that fits these labels memorises, and its test
    accuracy (test labels are left unchanged) falls to chance. Labels are drawn with
    ``np.random.default_rng(seed).integers(0, num_classes)``, so about ``1/num_classes`` of
    them coincide with the original label.

    Returns:
      A new ``Dataset`` with ``y_train`` int32 of the same shape and name
      ``"<name>+random_labels"``; inputs and the test split are the same arrays.

    Examples:
        >>> from jaxlearn import data
        >>> ds = data.digits(seed=0)
        >>> shuffled = data.random_labels(ds, seed=1)
        >>> shuffled.x_train is ds.x_train, bool((shuffled.y_test == ds.y_test).all())
        (True, True)
    """
    num_classes = _classification(ds, "random_labels")
    seed = check_int(seed, "seed", minimum=0, where="random_labels", noun="integer")
    y = np.random.default_rng(seed).integers(0, num_classes, size=np.shape(ds.y_train))
    return ds._replace(y_train=y.astype(np.int32), name=f"{ds.name}+random_labels")


def label_noise(ds: Dataset, rate: float, seed: int = 0) -> Dataset:
    """Symmetric label noise with an exact count: ``round(rate * n)`` training labels, chosen
    uniformly without replacement, are each moved to a uniformly random *different* class.

    ``n`` is the number of training labels. Test labels are unchanged. Drawn with
    ``np.random.default_rng(seed)``: first which labels, then their offsets in
    ``[1, num_classes)``, the new label being ``(y + offset) mod num_classes``.

    Args:
      ds: a classification dataset (``num_classes`` set; at least 2 classes if any label is
        to change).
      rate: fraction of training labels to corrupt, in [0, 1].
      seed: seed of the corruption.

    Returns:
      A new ``Dataset`` with ``y_train`` int32 and name ``"<name>+label_noise(<rate>)"``.
    """
    num_classes = _classification(ds, "label_noise")
    _check_concrete_rate(rate)
    rate = float(rate)
    seed = check_int(seed, "seed", minimum=0, where="label_noise", noun="integer")
    y = np.asarray(ds.y_train).astype(np.int32).ravel()
    n_flip = round(rate * y.size)
    if n_flip and num_classes < 2:
        raise ValueError(f"label_noise needs num_classes >= 2 to change a label, "
                         f"got {num_classes}")
    rng = np.random.default_rng(seed)
    flip = rng.choice(y.size, size=n_flip, replace=False)
    offset = rng.integers(1, num_classes, size=n_flip) if n_flip else np.zeros(0, np.int64)
    y[flip] = (y[flip] + offset) % num_classes
    y = y.reshape(np.shape(ds.y_train))
    return ds._replace(y_train=y, name=f"{ds.name}+label_noise({rate:g})")


def corrupt_labels(key: jax.Array, labels: jax.Array, rate: Scalar, num_classes: int) -> jax.Array:
    """Independently replace each label, with probability ``rate``, by a uniformly random
    *different* class (symmetric label noise, drawn inside a traced program).

    Pure and traceable: usable under ``jit``, ``vmap`` (over keys, labels or ``rate``) and
    inside a differentiated loss. With ``k1, k2 = split(key)``::

        flip   ~ Bernoulli(k1, rate, labels.shape)
        offset ~ UniformInt(k2, [1, num_classes))
        new    = where(flip, (labels + offset) mod num_classes, labels)

    so the expected fraction changed is exactly ``rate`` and a flipped label never equals the
    original.

    Args:
      key: a ``jax.random`` key.
      labels: integer array of any shape, values in ``[0, num_classes)``.
      rate: flip probability in [0, 1]; a Python float or a (possibly traced) scalar array.
        Checked only when concrete.
      num_classes: number of classes, a static Python int >= 2.

    Returns:
      Array with the shape and dtype of ``labels``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import data
        >>> y = jnp.zeros(1000, jnp.int32)
        >>> noisy = data.corrupt_labels(jax.random.key(0), y, 0.0, 10)
        >>> bool((noisy == y).all())                               # rate 0: unchanged
        True
    """
    num_classes = check_int(num_classes, "num_classes", minimum=2, where="corrupt_labels", noun="integer")
    _check_concrete_rate(rate)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    return _corrupt(key, labels, rate, num_classes)


# Jitted so that eager calls compile once, not once per primitive; inlined under an outer jit.
@functools.partial(jax.jit, static_argnames="num_classes")
def _corrupt(key, labels, rate, num_classes):
    rate = jnp.asarray(rate)
    if not jnp.issubdtype(rate.dtype, jnp.floating):  # bernoulli wants a floating probability
        rate = rate.astype(float)
    k1, k2 = jax.random.split(key)
    flip = _random.bernoulli(k1, rate, labels.shape)
    offset = _random.randint(k2, labels.shape, 1, num_classes, dtype=labels.dtype)
    return jnp.where(flip, (labels + offset) % num_classes, labels)
