"""A study's member computed outside the runner, for the unit tests of studies that run as one segment."""

import pathlib
from typing import NamedTuple

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


class Member(NamedTuple):
    """One member of a study computed outside the runner (see :func:`compute_member`)."""

    module: object
    config: object
    arrays: object
    start: object    # the state init gives
    state: object    # after one segment, as NumPy arrays (keys left as they are)
    metrics: dict    # the segment's
    final: dict      # evaluate's


def compute_member(name: str, values: dict, seed: int) -> Member:
    """Study ``name``'s member for config ``values`` and ``seed``: ``init``, ONE segment and
    ``evaluate``, each jitted as the runner does (for studies that run as one segment)."""
    import jax
    import numpy as np

    module = runner.load_experiment(name, [REPO]).module
    config = runner.parse_config(module.Config, {**values, "seed": seed})
    arrays = module.data(config)
    start = jax.jit(lambda: module.init(config, jax.random.key(seed)))()
    state, metrics = jax.jit(lambda s: module.segment(s, config, arrays))(start)
    final = jax.jit(lambda s: module.evaluate(s, config, arrays))(state)
    as_numpy = jax.tree.map(lambda leaf: leaf if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
                            else np.asarray(leaf), state)
    return Member(module, config, arrays, start, as_numpy, metrics, final)
