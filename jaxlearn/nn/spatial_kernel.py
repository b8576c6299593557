"""Infinite-width kernel maps of the layers that mix positions or normalise: Conv's filter-window
average, AvgPool, GlobalAvgPool, Flatten and LayerNorm.

The arrays are the pair arrays of :class:`~jaxlearn.nn.kernel.Kernel`: ``nngp``/``ntk`` are
``(N1, N2, *S)`` and ``cov1``/``cov2`` are ``(N, *S)``, with ``S = (P1, P1', P2, P2', …)`` one pair of
axes per spatial dimension (unprimed: the position in the first argument, primed: in the second).
The window maps act on the trailing ``2·p`` axes only (``p`` the number of spatial dimensions), so
one function serves ``nngp``, ``ntk`` and the covariances. Every map is linear in the pair array
except LayerNorm's, which divides by the variances.

Padding follows XLA's (and so the layers' forward passes): ``SAME`` pads ``total = max((out - 1)·s
+ w - n, 0)`` zeros, ``total // 2`` before and the rest after (``lax.padtype_to_pads``).

References: Novak et al. 2019, "Bayesian deep convolutional networks with many channels are
Gaussian processes" (ICLR), §2.2 and eq. (6)–(8); Garriga-Alonso, Rasmussen & Aitchison 2019,
"Deep convolutional networks as shallow Gaussian processes"; Arora et al. 2019, "On exact
computation with an infinitely wide neural net" (CNTK), §4; neural-tangents 0.6.5 ``stax``
(Novak et al. 2020), whose conventions these are.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn.nn.core import LayerError
from jaxlearn.nn.kernel import Kernel, affine_kernel

__all__ = [
    "conv_window_average",
    "pool_window_average",
    "conv_kernel",
    "avg_pool_kernel",
    "global_avg_pool_kernel",
    "flatten_kernel",
    "layer_norm_kernel",
]


# -- checks ---------------------------------------------------------------------------------------


def _check_kernel(name: str, k, spatial_ndim: int | None = None) -> None:
    """Raises a one-line LayerError naming ``name`` unless ``k`` is one Kernel (with
    ``spatial_ndim`` spatial dimensions, when given)."""
    if not isinstance(k, Kernel):
        raise LayerError(f"{name} expects one Kernel, got {type(k).__name__}")
    if spatial_ndim is not None and k.spatial_ndim != spatial_ndim:
        layouts = {0: "vectors (N, d)", 1: "sequences (NWC)", 2: "images (NHWC)"}
        raise LayerError(f"{name} maps kernels of {layouts[spatial_ndim]}, got a kernel of "
                         f"{layouts.get(k.spatial_ndim, f'{k.spatial_ndim}-D inputs')} (nngp {list(k.nngp.shape)})")


# -- window averages on pair arrays ---------------------------------------------------------------


def _pair_axes(a, spatial_ndim):
    """The ``(unprimed, primed)`` axes of each spatial dimension: the trailing ``2·p`` axes."""
    lead = a.ndim - 2 * spatial_ndim
    return [(lead + 2 * d, lead + 2 * d + 1) for d in range(spatial_ndim)]


def _pads(name, size, window, stride, padding):
    lo, hi = lax.padtype_to_pads((size,), (window,), (stride,), padding)[0]
    if size + lo + hi < window:
        raise LayerError(f"{name}: spatial size {size} is smaller than the window {window} ({padding} padding)")
    return lo, hi


def _out_size(padded, window, stride):
    return (padded - window) // stride + 1


def _diagonal_window_sum(name, a, axes, window, stride, padding):
    """``Σ_i a[s·h + i, s·h' + i]`` over the pair ``axes`` (zero padded along both)."""
    ax1, ax2 = axes
    widths = [(0, 0)] * a.ndim
    widths[ax1] = _pads(name, a.shape[ax1], window, stride, padding)
    widths[ax2] = _pads(name, a.shape[ax2], window, stride, padding)
    a = jnp.pad(a, widths)
    n1, n2 = _out_size(a.shape[ax1], window, stride), _out_size(a.shape[ax2], window, stride)
    total = None
    for i in range(window):  # a loop over the filter's taps (few), each a strided slice of every pixel pair
        tap = lax.slice_in_dim(a, i, i + (n1 - 1) * stride + 1, stride, ax1)
        tap = lax.slice_in_dim(tap, i, i + (n2 - 1) * stride + 1, stride, ax2)
        total = tap if total is None else total + tap
    return total


def conv_window_average(a, spatial_ndim: int, filter_shape: Sequence[int], strides: Sequence[int], padding: str,
                        name: str = "Conv"):
    """``Ā[h, h'] = (1/|F|) Σ_{i ∈ F} A[s·h + i, s·h' + i]`` per spatial dimension: the average of a
    pair array over the filter window along the diagonal of each pair (the same tap ``i`` on both
    sides, since a convolution's weights are shared across positions and independent across taps).

    ``a (…, P1, P1', P2, P2')``: any leading axes. ``|F|`` is the full filter size, so ``SAME``'s
    padded taps count as zeros. Output ``(…, O1, O1', O2, O2')`` with the layer's output sizes."""
    for axes, window, stride in zip(_pair_axes(a, spatial_ndim), filter_shape, strides):
        a = _diagonal_window_sum(name, a, axes, window, stride, padding) / window
    return a


def _real_taps(name, size, window, stride, padding):
    """How many of each window's taps fall on real (unpadded) inputs: ``(out,)``."""
    lo, hi = _pads(name, size, window, stride, padding)
    starts = np.arange(_out_size(size + lo + hi, window, stride)) * stride - lo
    return np.minimum(starts + window, size) - np.maximum(starts, 0)


def pool_window_average(a, spatial_ndim: int, window_shape: Sequence[int], strides: Sequence[int], padding: str,
                        count_include_pad: bool = True, name: str = "AvgPool"):
    """``Ā[h, h'] = Σ_{i, j ∈ w} A[s·h + i, s·h' + j] / (c_h c_h')`` per spatial dimension: the
    covariance of window means, a box filter over the full ``(i, j)`` window of each pair.

    ``c_h = |w|`` when ``count_include_pad`` or ``VALID`` (padded taps are zeros in the sum), else
    the number of real inputs in window ``h`` — the divisors of :func:`jaxlearn.nn.AvgPool`."""
    dims, steps, pads = [1] * a.ndim, [1] * a.ndim, [(0, 0)] * a.ndim
    divisor = jnp.ones((), a.dtype)
    for (ax1, ax2), window, stride in zip(_pair_axes(a, spatial_ndim), window_shape, strides):
        for ax in (ax1, ax2):
            dims[ax], steps[ax] = window, stride
            pads[ax] = _pads(name, a.shape[ax], window, stride, padding)
    total = lax.reduce_window(a, np.zeros((), a.dtype), lax.add, dims, steps, pads)
    for (ax1, ax2), window, stride in zip(_pair_axes(a, spatial_ndim), window_shape, strides):
        if count_include_pad or padding == "VALID":
            divisor = divisor * window * window
            continue
        for ax, size in ((ax1, a.shape[ax1]), (ax2, a.shape[ax2])):
            shape = [1] * a.ndim
            shape[ax] = -1
            divisor = divisor * _real_taps(name, size, window, stride, padding).astype(a.dtype).reshape(shape)
    return total / divisor


def _map_pairs(k: Kernel, fn, channels=None) -> Kernel:
    """``fn`` applied to ``nngp``, ``ntk``, ``cov1`` and ``cov2`` (a linear map of the features)."""
    return k.replace(nngp=fn(k.nngp), ntk=fn(k.ntk), cov1=fn(k.cov1), cov2=None if k.cov2 is None else fn(k.cov2),
                     channels=k.channels if channels is None else channels)


# -- layer maps -----------------------------------------------------------------------------------


def conv_kernel(k: Kernel, name: str, filter_shape, strides, padding, W_std, b_std, parameterization: str,
                out_channels: int) -> Kernel:
    """Conv's map: :func:`~jaxlearn.nn.kernel.affine_kernel` after :func:`conv_window_average` of
    ``nngp``, ``ntk``, ``cov1``, ``cov2``, with fan-in ``n_in = channels × prod(filter_shape)``."""
    _check_kernel(name, k, len(filter_shape))
    if parameterization not in ("standard", "ntk"):
        raise LayerError(f"{name}: parameterization {parameterization!r} has no infinite-width NTK map; use "
                         f"'standard' or 'ntk'")
    p = k.spatial_ndim

    def average(a):
        return conv_window_average(a, p, filter_shape, strides, padding, name)

    fan_in = k.channels * math.prod(filter_shape)
    return affine_kernel(k, W_std, b_std, parameterization, fan_in, out_channels, average=average)


def avg_pool_kernel(k: Kernel, name: str, window_shape, strides, padding, count_include_pad) -> Kernel:
    """AvgPool's map: :func:`pool_window_average` of every pair array (pooling is linear and has no
    parameters, so ``Θ`` maps like ``K``)."""
    _check_kernel(name, k, len(window_shape))
    p = k.spatial_ndim
    return _map_pairs(k, lambda a: pool_window_average(a, p, window_shape, strides, padding, count_include_pad, name))


def global_avg_pool_kernel(k: Kernel, name: str = "GlobalAvgPool") -> Kernel:
    """GlobalAvgPool's map: the mean of each pair array over all its ``2·p`` spatial axes
    (``Cov(mean_h z_h, mean_h' z'_h') = mean_{h, h'} K[h, h']``); vectors out."""
    _check_kernel(name, k)
    p = k.spatial_ndim
    if p == 0:
        raise LayerError(f"{name} expects a kernel of sequences or images, got one of vectors (nngp "
                         f"{list(k.nngp.shape)})")
    return _map_pairs(k, lambda a: _trailing_mean(a, 2 * p))


def _trailing_mean(a, n):
    """The mean of ``a`` over its last ``n`` axes, as a matrix–vector product with a vector of ones
    (at full precision on every device) and a division. XLA compiles a ``reduce`` together with
    the elementwise work before it into one single-threaded loop on CPU, and the work before a
    pooling is an activation's dual (a square root, a polynomial and a division per entry): as a
    reduction, a depth-2 CNN's 32 × 32 analytic kernel took 152 ms; as a product, 76 ms."""
    lead = a.shape[:a.ndim - n]
    size = math.prod(a.shape[a.ndim - n:])
    total = jnp.dot(a.reshape(*lead, size), jnp.ones((size,), a.dtype), precision=lax.Precision.HIGHEST)
    return total / size


def _diagonal_mean(a, spatial_ndim):
    lead = a.ndim - 2 * spatial_ndim
    for _ in range(spatial_ndim):  # the pair at (lead, lead + 1) becomes a trailing axis
        a = jnp.diagonal(a, axis1=lead, axis2=lead + 1)
    return _trailing_mean(a, a.ndim - lead)


def flatten_kernel(k: Kernel, name: str = "Flatten") -> Kernel:
    """Flatten's map: the mean over the spatial diagonal (``h = h'``), ``channels ← channels × P``;
    with more than one position the result is a mean of different kernels (``mean_of``)."""
    _check_kernel(name, k)
    p = k.spatial_ndim
    pairs = k.nngp.shape[2:]
    if any(pairs[2 * d] != pairs[2 * d + 1] for d in range(p)):
        raise LayerError(f"{name}: x1 and x2 have different spatial shapes (nngp {list(k.nngp.shape)}), so their "
                         f"flattened features do not align")
    positions = math.prod(pairs[::2])
    out = _map_pairs(k, lambda a: _diagonal_mean(a, p), channels=k.channels * positions)
    return out if positions == 1 else out.replace(mean_of=name)


def _on_pairs(s, first: bool, two_batches: bool):
    """``s (N, *P)`` reshaped to broadcast against ``(N1, N2, P1, P1', …)`` (``two_batches``) or
    ``(N, P1, P1', …)``: on the first argument's axes (``first``) or the second's."""
    n = s.shape[0]
    shape = ([n, 1] if first else [1, n]) if two_batches else [n]
    for size in s.shape[1:]:
        shape += [size, 1] if first else [1, size]
    return s.reshape(shape)


def layer_norm_kernel(k: Kernel, axes, eps, affine: bool, name: str = "LayerNorm") -> Kernel:
    """LayerNorm's map: ``K ← K / √((q̃ + ε)(q̃' + ε))``, ``Θ`` likewise (``+ K_new + 1`` with
    ``affine``), ``q̃`` the variance of each position averaged over the normalised spatial axes.

    ``axes`` (ints, of the ``(N, *P, C)`` input) must contain the channel axis and not the batch
    axis; ``k`` must be Gaussian (see :func:`jaxlearn.nn.LayerNorm` for the derivation)."""
    _check_kernel(name, k)
    if not k.is_gaussian:
        raise LayerError(f"{name}: the infinite-width map is defined for Gaussian (pre-activation) inputs; place it "
                         f"after a Dense/Conv (or pooling/sums of them), not after a nonlinearity")
    p = k.spatial_ndim
    ndim = p + 2
    if any(not -ndim <= a < ndim for a in axes):
        raise LayerError(f"{name}: axis {tuple(axes)} is out of range for {ndim}-D inputs")
    axes = sorted({a % ndim for a in axes})
    if ndim - 1 not in axes or 0 in axes:
        raise LayerError(f"{name}: only normalisation over the channel axis (optionally with spatial axes) has an "
                         f"infinite-width map; got axes {tuple(axes)} of {ndim}-D inputs")
    spatial = tuple(a for a in axes if a != ndim - 1)  # already the axis numbers of q (N, *P)

    def scale(q):
        if spatial:
            q = jnp.mean(q, axis=spatial, keepdims=True)
        return jnp.sqrt(q + eps)

    q1, q2 = k.variances()
    s1, s2 = scale(q1), scale(q2)
    denominator = _on_pairs(s1, True, True) * _on_pairs(s2, False, True)
    nngp, ntk = k.nngp / denominator, k.ntk / denominator
    cov1 = k.cov1 / (_on_pairs(s1, True, False) * _on_pairs(s1, False, False))
    cov2 = None if k.cov2 is None else k.cov2 / (_on_pairs(s2, True, False) * _on_pairs(s2, False, False))
    if affine:  # gradients of the per-channel scale (ŷ·ŷ') and offset (1), shared by all positions
        ntk = ntk + nngp + 1.0
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)
