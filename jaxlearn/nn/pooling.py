"""Parameter-free spatial layers: AvgPool, GlobalAvgPool, Flatten.

Inputs are NWC (1-D) or NHWC (2-D); Flatten accepts any rank. The infinite-width kernel maps
(formulas in each layer's docstring) are in :mod:`jaxlearn.nn.spatial_kernel`.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn.nn.core import Layer, LayerError, describe_spec, stateless_layer
from jaxlearn.nn.linear import check_padding, positive_ints, spatial_out_sizes, tuple_or_none
from jaxlearn.nn.spatial_kernel import avg_pool_kernel, flatten_kernel, global_avg_pool_kernel

__all__ = ["AvgPool", "GlobalAvgPool", "Flatten"]


def _single(name, spec):
    if isinstance(spec, tuple):
        raise LayerError(f"{name} expects one input, got a tuple {describe_spec(spec)}")


def AvgPool(  # noqa: N802
    window_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    count_include_pad: bool = True,
) -> Layer:
    """Average pooling over spatial windows of 1-D (NWC) or 2-D (NHWC) inputs.

    ``strides`` default to ``window_shape``. With ``padding="SAME"`` the zero padding is counted
    in each window's denominator when ``count_include_pad`` (every output divides by the window
    size), else each output divides by the number of real inputs in its window.

    Infinite-width kernel: the pooled value is a window mean, so its covariance is the box filter
    over the full ``(i, j)`` window of each spatial pair (Novak et al. 2019, §3.2; neural-tangents'
    ``stax.AvgPool``), per spatial dimension

        ``K[h, h'] ← Σ_{i, j ∈ w} K[s·h + i, s·h' + j] / (c_h c_h')``,

    with ``K`` zero padded like the input and ``c_h`` this layer's divisor (``|w|``, or the number of
    real inputs in window ``h`` when ``count_include_pad=False`` with ``SAME``): the exact covariance
    of the forward map. ``Θ``, ``cov1``, ``cov2`` map the same way (no parameters); ``channels`` and
    ``is_gaussian`` are unchanged.
    """
    shape = tuple_or_none(window_shape)
    if shape is None or len(shape) not in (1, 2):
        raise LayerError(f"AvgPool: window_shape must be a tuple of 1 or 2 ints, got {window_shape!r}")
    name = f"AvgPool({shape})"
    window = positive_ints(name, "window_shape", shape, len(shape))
    n = len(window)
    strides = positive_ints(name, "strides", strides if strides is not None else window, n)
    check_padding(name, padding)
    dims, steps = (1,) + window + (1,), (1,) + strides + (1,)

    def out_spec(spec):
        _single(name, spec)
        spatial = spatial_out_sizes(name, spec, window, strides, padding, what="window")
        return jax.ShapeDtypeStruct((spec.shape[0],) + spatial + (spec.shape[-1],), spec.dtype)

    def pool(x):
        total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, dims, steps, padding)
        if count_include_pad or padding == "VALID":
            return total / math.prod(window)
        ones = jnp.ones((1,) + x.shape[1:-1] + (1,), x.dtype)
        count = lax.reduce_window(ones, np.zeros((), x.dtype), lax.add, dims, steps, padding)
        return total / count

    def kernel_fn(k):
        return avg_pool_kernel(k, name, window, strides, padding, count_include_pad)

    return stateless_layer(name, out_spec, pool, kernel_fn)


def GlobalAvgPool() -> Layer:  # noqa: N802
    """Mean over all spatial axes: ``(N, ..., C) -> (N, C)``.

    Infinite-width kernel (Novak et al. 2019, eq. (8); Arora et al. 2019, §4):
    ``K[n, n'] ← mean_{h, h', w, w'} K[n, n', h, h', w, w']``, the mean of the full spatial covariance;
    the same for ``Θ``; ``cov1``/``cov2`` become ``(N,)`` (mean over all position pairs).
    ``channels`` is unchanged.
    """

    def out_spec(spec):
        _single("GlobalAvgPool", spec)
        if spec.ndim < 3:
            raise LayerError(f"GlobalAvgPool expects (N, spatial..., C) inputs, got {describe_spec(spec)}")
        return jax.ShapeDtypeStruct((spec.shape[0], spec.shape[-1]), spec.dtype)

    return stateless_layer("GlobalAvgPool", out_spec, lambda x: jnp.mean(x, axis=tuple(range(1, x.ndim - 1))),
                      global_avg_pool_kernel)


def Flatten() -> Layer:  # noqa: N802
    """``(N, d1, d2, ...) -> (N, d1·d2·...)`` in row-major order.

    Infinite-width kernel (neural-tangents' ``stax.Flatten``; Novak et al. 2019, eq. (8) "vectorize"):
    the kernel of the flattened vector in the ``x·x'/d`` normalisation the next weight layer sees,
    ``K[n, n'] ← mean_{h, w} K[n, n', h, h, w, w]`` (the spatial diagonal: a Dense layer after it has
    independent weights for each position, so only same-position covariances enter), likewise ``Θ``
    and ``cov1``/``cov2``; ``channels ← channels × H × W`` (the next layer's finite fan-in). Exact
    when a weight layer (or LayerNorm, then a weight layer) follows; an elementwise activation
    directly after it raises, since it would need each position's kernel, not their mean
    (``Kernel.mean_of``): apply it before Flatten, which gives the same network. Vectors map to
    themselves.
    """

    def out_spec(spec):
        _single("Flatten", spec)
        if spec.ndim < 1:
            raise LayerError(f"Flatten expects inputs with a batch axis, got {describe_spec(spec)}")
        return jax.ShapeDtypeStruct((spec.shape[0], math.prod(spec.shape[1:])), spec.dtype)

    return stateless_layer("Flatten", out_spec, lambda x: x.reshape(x.shape[0], -1), flatten_kernel)
