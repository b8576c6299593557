"""Parameter-free spatial layers: AvgPool, GlobalAvgPool, Flatten.

Inputs are NWC (1-D) or NHWC (2-D); Flatten accepts any rank.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn.nn.core import Layer, LayerError, _describe, _stateless
from jaxlearn.nn.linear import _as_tuple, _check_padding, _spatial_out, _tuple

__all__ = ["AvgPool", "GlobalAvgPool", "Flatten"]


def _single(name, spec):
    if isinstance(spec, tuple):
        raise LayerError(f"{name} expects one input, got a tuple {_describe(spec)}")


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
    """
    shape = _as_tuple(window_shape)
    if shape is None or len(shape) not in (1, 2):
        raise LayerError(f"AvgPool: window_shape must be a tuple of 1 or 2 ints, got {window_shape!r}")
    name = f"AvgPool({shape})"
    window = _tuple(name, "window_shape", shape, len(shape))
    n = len(window)
    strides = _tuple(name, "strides", strides if strides is not None else window, n)
    _check_padding(name, padding)
    dims, steps = (1,) + window + (1,), (1,) + strides + (1,)

    def out_spec(spec):
        _single(name, spec)
        spatial = _spatial_out(name, spec, window, strides, padding, what="window")
        return jax.ShapeDtypeStruct((spec.shape[0],) + spatial + (spec.shape[-1],), spec.dtype)

    def pool(x):
        total = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, dims, steps, padding)
        if count_include_pad or padding == "VALID":
            return total / math.prod(window)
        ones = jnp.ones((1,) + x.shape[1:-1] + (1,), x.dtype)
        count = lax.reduce_window(ones, np.zeros((), x.dtype), lax.add, dims, steps, padding)
        return total / count

    return _stateless(name, out_spec, pool)


def GlobalAvgPool() -> Layer:  # noqa: N802
    """Mean over all spatial axes: ``(N, ..., C) -> (N, C)``."""

    def out_spec(spec):
        _single("GlobalAvgPool", spec)
        if spec.ndim < 3:
            raise LayerError(f"GlobalAvgPool expects (N, spatial..., C) inputs, got {_describe(spec)}")
        return jax.ShapeDtypeStruct((spec.shape[0], spec.shape[-1]), spec.dtype)

    return _stateless("GlobalAvgPool", out_spec, lambda x: jnp.mean(x, axis=tuple(range(1, x.ndim - 1))))


def Flatten() -> Layer:  # noqa: N802
    """``(N, d1, d2, ...) -> (N, d1·d2·...)`` in row-major order."""

    def out_spec(spec):
        _single("Flatten", spec)
        if spec.ndim < 1:
            raise LayerError(f"Flatten expects inputs with a batch axis, got {_describe(spec)}")
        return jax.ShapeDtypeStruct((spec.shape[0], math.prod(spec.shape[1:])), spec.dtype)

    return _stateless("Flatten", out_spec, lambda x: x.reshape(x.shape[0], -1))
