"""Monte-Carlo NNGP/NTK: empirical kernels averaged over random initialisations.

For any model (layers without a closed form included, e.g. ``Tanh``) the infinite-width kernels
are the limits of the average empirical kernels as the width grows (Neal 1996; Lee et al. 2018;
Jacot et al. 2018); at finite width the average is the finite-width expectation, with an
``O(1/width)`` bias against :func:`jaxlearn.kernels.analytic`. The normalisation is neural-tangents'
(``monte_carlo_kernel_fn``): the same ``trace_axes`` mean over outputs as
:func:`jaxlearn.kernels.empirical`.
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp

from jaxlearn._checks import check_int
from jaxlearn._types import Array, ArrayLike
from jaxlearn.data.batching import split_rows
from jaxlearn.kernels.empirical import empirical
from jaxlearn.nn.core import Layer

__all__ = ["monte_carlo"]


def monte_carlo(model: Layer, key: jax.Array, x1: ArrayLike, x2: ArrayLike | None = None, *, n_samples: int = 64,
                kind: Literal["nngp", "ntk"] | Sequence[Literal["nngp", "ntk"]] = ("nngp", "ntk"),
                trace_axes: Sequence[int] = (-1,), diagonal_axes: Sequence[int] = (),
                method: Literal["auto", "jacobian", "ntvp", "structured"] = "auto",
                samples_per_batch: int = 8) -> Array | tuple[Array, ...]:
    """The NNGP and/or NTK of ``model`` averaged over ``n_samples`` initialisations.

    ``model``: anything with ``init(key, input_spec) -> (params, state)`` and
    ``apply(params, x, state)`` (a :class:`jaxlearn.nn.Layer`, or a flax module through
    :func:`jaxlearn.nn.from_linen`/``from_nnx``); BatchNorm statistics are used in evaluation mode
    (frozen at their initial values). ``key``: the initialisations are ``jax.random.split(key,
    n_samples)``. ``kind``: ``"nngp"``, ``"ntk"`` or a tuple of them (the result is then a tuple in
    that order). The samples are evaluated ``samples_per_batch`` at a time under ``vmap`` and summed
    in a ``lax.map`` loop (memory: one batch of kernels). Other arguments: :func:`empirical`.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    for k in kinds:
        if k not in ("nngp", "ntk"):
            raise ValueError(f"kind: expected 'nngp', 'ntk' or a tuple of them, got {kind!r}")
    for name, value in (("n_samples", n_samples), ("samples_per_batch", samples_per_batch)):
        check_int(value, name, minimum=1)
    if not (hasattr(model, "init") and hasattr(model, "apply")):
        raise TypeError(f"model: expected an object with init(key, input_spec) and apply(params, x, state) (e.g. a "
                        f"jaxlearn.nn Layer), got {type(model).__name__}")
    x1 = jnp.asarray(x1)
    spec = jax.ShapeDtypeStruct(x1.shape, x1.dtype)

    def one(k):
        params, state = model.init(k, spec)
        apply = lambda p, x: model.apply(p, x, state)  # noqa: E731
        return tuple(empirical(apply, params, x1, x2, kind=kk, trace_axes=trace_axes, diagonal_axes=diagonal_axes,
                               method=method) for kk in kinds)

    keys = jax.random.split(key, n_samples)
    size = min(samples_per_batch, n_samples)
    blocks = split_rows(keys, size)  # padded by repeating the last key: count each key once
    weights = (jnp.arange(blocks.shape[0] * size) < n_samples).reshape(blocks.shape[0], size)

    def batch(args):
        ks, w = args
        outs = jax.vmap(one)(ks)
        return tuple(jnp.tensordot(w.astype(o.dtype), o, axes=1) for o in outs)

    sums = jax.lax.map(batch, (blocks, weights))
    means = tuple(s.sum(0) / n_samples for s in sums)
    return means[0] if isinstance(kind, str) else means
