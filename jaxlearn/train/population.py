"""Populations: one training program ``vmap``ped over seeds and dynamic hyperparameters.

A *member* is a pure function of its own seed and hyperparameters. Because every random stream
of a member is derived from its seed (see :mod:`jaxlearn.train.step`) and members share no
state, a member's result does not depend on which other members share its group, on their
order, or on the group size — only on float rounding of batched kernels.
"""

from __future__ import annotations

import itertools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["grid", "population", "population_size"]


def grid(**axes) -> dict[str, np.ndarray]:
    """The Cartesian product of hyperparameter axes as flat arrays, one entry per member.

    ``grid(seed=[0, 1], learning_rate=[0.1, 0.3])`` gives 4 members in row-major order (the last
    axis varies fastest): ``{"seed": [0, 0, 1, 1], "learning_rate": [0.1, 0.3, 0.1, 0.3]}``.
    Integer axes become int32, real axes JAX's default float (float32, or float64 under x64).

    Examples:
        >>> from jaxlearn import train
        >>> hp = train.grid(seed=[0, 1], learning_rate=[0.1, 0.3])
        >>> hp["seed"].tolist(), [round(float(v), 6) for v in hp["learning_rate"]]
        ([0, 0, 1, 1], [0.1, 0.3, 0.1, 0.3])
    """
    if not axes:
        raise ValueError("grid: give at least one axis, e.g. grid(seed=[0, 1, 2])")
    values = {}
    for name, vals in axes.items():
        arr = np.asarray(vals)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"grid: axis {name!r} must be a non-empty 1-D list of values, got {vals!r}")
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.int32)
        elif np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(jnp.result_type(float))
        else:
            raise ValueError(f"grid: axis {name!r} must hold numbers, got dtype {arr.dtype}")
        values[name] = arr
    product = list(itertools.product(*[range(len(v)) for v in values.values()]))
    return {name: arr[[idx[i] for idx in product]] for i, (name, arr) in enumerate(values.items())}


def population_size(hparams: Mapping[str, np.ndarray]) -> int:
    """Number of members in a dict of per-member arrays (all must share the leading axis).

    Examples:
        >>> from jaxlearn import train
        >>> train.population_size(train.grid(seed=[0, 1, 2], learning_rate=[0.1, 0.3]))
        6
    """
    sizes = {name: np.shape(v)[0] if np.ndim(v) else None for name, v in hparams.items()}
    distinct = set(sizes.values())
    if len(distinct) != 1 or None in distinct:
        raise ValueError(f"population: every hyperparameter needs the same leading (member) axis, got sizes {sizes}")
    return distinct.pop()


def population(member_fn: Callable) -> Callable:
    """Turns ``member_fn(**hyperparams) -> result`` into ``run(hparams) -> results`` over members.

    ``hparams`` maps names to arrays with a leading member axis (e.g. from :func:`grid`); every
    result leaf gains that leading axis. The members run as one vmapped program; wrap the returned
    function in ``jax.jit`` to compile it once.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import train
        >>> run = train.population(lambda seed, scale: scale * (seed + 1))
        >>> run(train.grid(seed=[0, 1], scale=[1.0, 10.0])).tolist()
        [1.0, 10.0, 2.0, 20.0]
    """

    def run(hparams: Mapping[str, jax.Array]):
        population_size(hparams)
        # as arrays: a list passes the size check but vmap would map over its elements as leaves
        return jax.vmap(lambda h: member_fn(**h))({k: jnp.asarray(v) for k, v in hparams.items()})

    return run
