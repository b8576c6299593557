"""Weight layers: Dense, Conv (1-D/2-D) and Embedding.

Forward formulas and initialisations for each parameterization are in
:mod:`jaxlearn.nn.parameterization`. Params are dicts ``{"W": ..., "b": ...}`` (``"b"`` absent
when ``b_std is None``). Layouts: Dense ``W: (fan_in, out)`` acting on the last axis;
Conv inputs NWC (1-D) / NHWC (2-D), filters WIO / HWIO; Embedding ``W: (vocab, features)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxlearn._checks import is_int
from jaxlearn._types import Scalar
from jaxlearn.nn import parameterization as P
from jaxlearn.nn.core import Layer, LayerError, describe_spec
from jaxlearn.nn.kernel import affine_kernel
from jaxlearn.nn.spatial_kernel import conv_kernel

__all__ = ["Dense", "Conv", "Embedding"]


def _weight_layer(
    name, W_shape_fn, fan_in_fn, fan_out, out_spec_fn, linear_fn, W_std, b_std, parameterization, role,
    kernel_fn=None,
) -> Layer:
    """Shared machinery of Dense and Conv: ``z = mult_W · linear(x, W) + mult_b · b``."""
    P.check_parameterization(name, parameterization, role)
    P.check_std(name, "W_std", W_std, allow_none=False)
    P.check_std(name, "b_std", b_std, allow_none=True)

    def init_fn(key, spec):
        if isinstance(spec, tuple):
            raise LayerError(f"{name} expects one input, got a tuple {describe_spec(spec)}")
        out_spec = out_spec_fn(spec)
        dtype = P.param_dtype(spec)
        k_w, k_b = jax.random.split(key)
        params = {"W": P.init_weight(k_w, W_shape_fn(spec), fan_in_fn(spec), W_std, parameterization, role, dtype)}
        if b_std is not None:
            params["b"] = P.init_bias(k_b, (fan_out,), b_std, parameterization, dtype)
        return out_spec, params, ()

    def apply_fn(params, state, x, key, train):
        W = params["W"]
        z = linear_fn(x, W) * P.weight_multiplier(fan_in_from_W(W), W_std, parameterization, W.dtype)
        if b_std is not None:
            z = z + P.bias_multiplier(b_std, parameterization) * params["b"]
        return z, state

    def fan_in_from_W(W):
        return math.prod(W.shape[:-1])

    def lr_fn(spec, optimizer):
        fan_in = fan_in_fn(spec)
        mults = {"W": P.lr_multiplier_weight(parameterization, role, fan_in, fan_out, optimizer)}
        if b_std is not None:
            mults["b"] = P.lr_multiplier_bias(parameterization, fan_out, optimizer)
        return mults

    return Layer(init_fn, apply_fn, kernel_fn, name, lr_fn)


def Dense(  # noqa: N802
    out_dim: int,
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
    parameterization: str = "standard",
    role: str | None = None,
) -> Layer:
    """Fully connected layer on the last axis: ``(..., n) -> (..., out_dim)``.

    ``standard``: ``z = x W + b`` with ``W ~ N(0, W_std²/n)``, ``b ~ N(0, b_std²)``.
    ``ntk``: ``z = (W_std/√n) x W + b_std b`` with ``W, b ~ N(0, 1)``.
    ``mup``: as standard with the init and learning-rate scalings of its ``role``
    (:mod:`jaxlearn.nn.parameterization`). ``b_std=None`` omits the bias; under ``ntk`` a bias with
    ``b_std=0`` has no effect. ``W_std``/``b_std`` may be traced scalars (a population over them).

    Infinite-width kernel (:func:`jaxlearn.nn.kernel.affine_kernel`): ``K ← σ_w² K + σ_b²``;
    ``Θ ← K_new + σ_w² Θ`` (``ntk``) or ``Θ ← n_in·K + σ_w² Θ + 1`` (``standard``, ``+1`` only with a
    bias); ``mup`` has no NTK limit and raises.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import nn
        >>> layer = nn.Dense(3, W_std=2.0, b_std=0.1, parameterization="ntk")
        >>> params, state = layer.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> {k: v.shape for k, v in params.items()}, state
        ({'W': (4, 3), 'b': (3,)}, ())
        >>> layer.apply(params, jnp.ones((2, 4))).shape
        (2, 3)
    """
    name = f"Dense({out_dim})"
    P.check_positive_int(name, "out_dim", out_dim)

    def out_spec(spec):
        if spec.ndim < 1 or spec.shape[-1] < 1:
            raise LayerError(f"{name} expects inputs with a non-empty last axis, got {describe_spec(spec)}")
        return jax.ShapeDtypeStruct(spec.shape[:-1] + (out_dim,), P.param_dtype(spec))

    def kernel_fn(k):  # the same map for every entry, also on spatial inputs (acts on channels)
        return affine_kernel(k, W_std, b_std, parameterization, k.channels, out_dim)

    return _weight_layer(
        name,
        lambda s: (s.shape[-1], out_dim),
        lambda s: s.shape[-1],
        out_dim,
        out_spec,
        lambda x, W: x @ W,
        W_std,
        b_std,
        parameterization,
        role,
        kernel_fn,
    )


def tuple_or_none(value):
    """``tuple(value)``, or ``None`` when ``value`` is not iterable (so callers raise a LayerError)."""
    try:
        return tuple(value)
    except TypeError:
        return None


def positive_ints(name, arg, value, n):
    """``value`` (an int, repeated, or a sequence) as ``n`` positive ints, e.g. a window's shape or
    strides; a LayerError naming layer ``name`` and argument ``arg`` otherwise."""
    if isinstance(value, int):
        value = (value,) * n
    as_tuple = tuple_or_none(value)
    value = as_tuple if as_tuple is not None else (value,)
    if len(value) != n or not all(is_int(v) and v > 0 for v in value):
        raise LayerError(f"{name}: {arg} must be {n} positive int(s), got {value!r}")
    return value


def _dimension_numbers(n):
    return {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[n]


def check_padding(name, padding):
    """``padding`` is ``"SAME"`` or ``"VALID"`` (a LayerError naming layer ``name`` otherwise)."""
    if padding not in ("SAME", "VALID"):
        raise LayerError(f"{name}: padding must be 'SAME' or 'VALID', got {padding!r}")


def spatial_out_sizes(name, spec, window, strides, padding, what="filter"):
    """Output spatial sizes of a sliding ``window`` over ``spec`` (NWC or NHWC) with ``strides`` and
    ``padding`` (the same rule for conv and pooling); LayerErrors name layer ``name``."""
    n = len(window)
    if spec.ndim != n + 2:
        layout = "NWC" if n == 1 else "NHWC"
        raise LayerError(f"{name} expects {n + 2}-D inputs ({layout}), got {describe_spec(spec)}")
    sizes = spec.shape[1:-1]
    if padding == "VALID":
        if any(s < w for s, w in zip(sizes, window)):
            raise LayerError(f"{name}: input spatial shape {list(sizes)} is smaller than the {what} {list(window)}")
        return tuple((s - w) // st + 1 for s, w, st in zip(sizes, window, strides))
    return tuple(-(-s // st) for s, st in zip(sizes, strides))


def Conv(  # noqa: N802
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str = "VALID",
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
    parameterization: str = "standard",
    role: str | None = None,
) -> Layer:
    """1-D (NWC) or 2-D (NHWC) convolution, cross-correlation as in ``lax.conv_general_dilated``.

    ``len(filter_shape)`` sets the dimension. The fan-in is ``in_chan × prod(filter_shape)``;
    the forward formula is that of :func:`Dense` with ``x W`` replaced by the convolution.
    ``padding``: ``"SAME"`` (output size ``ceil(n/stride)``) or ``"VALID"``.

    Infinite-width kernel (Novak et al. 2019, eq. (7); Garriga-Alonso et al. 2019; Arora et al. 2019,
    §4): the map of :func:`Dense` (:func:`jaxlearn.nn.kernel.affine_kernel`) applied to the pair
    arrays averaged over the filter window along the diagonal of each spatial pair
    (:func:`jaxlearn.nn.spatial_kernel.conv_window_average`), per spatial dimension

        ``K̄[h, h'] = (1/|F|) Σ_{i ∈ F} K[s·h + i, s·h' + i]``,   ``K ← σ_w² K̄ + σ_b²``,

    ``Θ ← K_new + σ_w² Θ̄`` (``ntk``) or ``Θ ← n_in·K̄ + σ_w² Θ̄ + 1`` (``standard``, ``+1`` only with a
    bias), ``n_in = channels × prod(filter_shape)``; ``cov1``/``cov2`` are averaged like ``K``.
    ``|F|`` is the full filter size and ``SAME``'s padded taps are zeros (``K`` zero padded along both
    axes of each pair); strides subsample both. The same tap ``i`` on both sides: the weights are
    shared across positions and independent across taps. ``mup`` has no NTK limit and raises.
    """
    shape = tuple_or_none(filter_shape)
    name = f"Conv({out_chan}, {shape if shape is not None else filter_shape!r})"
    P.check_positive_int(name, "out_chan", out_chan)
    if shape is None or len(shape) not in (1, 2):
        raise LayerError(f"{name}: filter_shape must be a tuple of 1 or 2 ints, got {filter_shape!r}")
    window = positive_ints(name, "filter_shape", shape, len(shape))
    n = len(window)
    strides = positive_ints(name, "strides", strides if strides is not None else 1, n)
    check_padding(name, padding)

    def out_spec(spec):
        spatial = spatial_out_sizes(name, spec, window, strides, padding)
        return jax.ShapeDtypeStruct((spec.shape[0],) + spatial + (out_chan,), P.param_dtype(spec))

    def conv(x, W):
        return lax.conv_general_dilated(x, W, strides, padding, dimension_numbers=_dimension_numbers(n))

    def kernel_fn(k):
        return conv_kernel(k, name, window, strides, padding, W_std, b_std, parameterization, out_chan)

    return _weight_layer(
        name,
        lambda s: window + (s.shape[-1], out_chan),
        lambda s: s.shape[-1] * math.prod(window),
        out_chan,
        out_spec,
        conv,
        W_std,
        b_std,
        parameterization,
        role,
        kernel_fn,
    )


def Embedding(  # noqa: N802
    vocab_size: int, features: int, W_std: Scalar = 1.0, parameterization: str = "standard"
) -> Layer:
    """Token embedding: integer inputs ``(...)`` → ``(..., features)``, ``y = W[x]``.

    ``standard``/``mup``: ``W ~ N(0, W_std²)``; ``ntk``: ``y = W_std · w[x]`` with ``w ~ N(0,1)``
    (an embedding is a Dense layer on one-hot inputs, whose fan-in is 1 per active input). Under
    ``mup`` it is an input layer (SGD lr multiplier ``features``, Adam 1).
    """
    name = f"Embedding({vocab_size}, {features})"
    P.check_positive_int(name, "vocab_size", vocab_size)
    P.check_positive_int(name, "features", features)
    P.check_parameterization(name, parameterization, "input")
    P.check_std(name, "W_std", W_std, allow_none=False)

    def init_fn(key, spec):
        if isinstance(spec, tuple) or not jnp.issubdtype(spec.dtype, jnp.integer):
            raise LayerError(f"{name} expects integer token inputs, got {describe_spec(spec)}")
        dtype = jnp.result_type(float)
        W = P.init_weight(key, (vocab_size, features), 1, W_std, parameterization, "input", dtype)
        return jax.ShapeDtypeStruct(spec.shape + (features,), dtype), {"W": W}, ()

    def apply_fn(params, state, x, key, train):
        W = params["W"]
        return jnp.take(W, x, axis=0) * P.weight_multiplier(1, W_std, parameterization, W.dtype), state

    def lr_fn(spec, optimizer):
        return {"W": P.lr_multiplier_weight(parameterization, "input", 1, features, optimizer)}

    return Layer(init_fn, apply_fn, None, name, lr_fn)
