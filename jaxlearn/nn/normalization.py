"""Normalisation and stochastic layers: LayerNorm, BatchNorm (explicit state), Dropout (explicit key)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlearn import _random
from jaxlearn._checks import is_traced
from jaxlearn._types import Scalar
from jaxlearn.nn.core import Layer, LayerError, describe_spec
from jaxlearn.nn.spatial_kernel import layer_norm_kernel

__all__ = ["LayerNorm", "BatchNorm", "Dropout"]


def _single(name, spec):
    if isinstance(spec, tuple):
        raise LayerError(f"{name} expects one input, got a tuple {describe_spec(spec)}")
    if not jnp.issubdtype(spec.dtype, jnp.floating):
        raise LayerError(f"{name} expects floating-point inputs, got {describe_spec(spec)}")


def _normalize(x, axes, eps):
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def LayerNorm(axis: int | tuple[int, ...] = -1, eps: float = 1e-6, affine: bool = False) -> Layer:  # noqa: N802
    """``y = (x - mean(x)) / sqrt(var(x) + eps)`` over ``axis`` (int or tuple), per example.

    ``var`` is the biased (1/n) variance. With ``affine=True`` a learnable per-feature scale
    (init 1) and offset (init 0) over the last axis follow, ``y·γ + β``. The default has no
    parameters.

    Infinite-width kernel (neural-tangents' ``stax.LayerNorm``), defined for Gaussian inputs
    (``k.is_gaussian``: after a Dense/Conv, pooling or sums of them). Their entries are i.i.d. over
    the infinitely many channels, so per position the mean over channels tends to 0 and the
    variance to ``q = K(x, x)[h, h]`` (law of large numbers): ``y = z / √(q + eps)``, and

        ``K[h, h'] ← K[h, h'] / √((q̃₁[h] + eps)(q̃₂[h'] + eps))``,   ``Θ`` and ``cov1``/``cov2`` likewise,

    with ``q̃ = q``, or ``q`` averaged over the normalised spatial axes when ``axis`` also holds some
    (e.g. ``(1, 2, 3)`` on NHWC: one mean/variance per example). ``eps`` is kept: this is the exact
    limit of this forward pass (neural-tangents drops it; the difference is ``O(eps/q)``). The NTK
    scales like ``K`` because the normalisation's Jacobian ``(I - 11ᵀ/n - ŷŷᵀ/n)/σ`` differs from
    ``I/σ`` by a rank-2 term that adds ``O(1/n)`` to the per-unit NTK. ``channels`` and
    ``is_gaussian`` are unchanged (``z/√q̃`` is Gaussian).

    ``affine=True``: at init ``scale = 1``, ``offset = 0``, so ``K`` is unchanged and the NTK gains the
    gradients of the per-channel parameters, shared by all positions: ``∂y_c/∂scale_c = ŷ_c`` (mean
    over channels of ``ŷ_c ŷ'_c`` → the normalised ``K``) and ``∂y_c/∂offset_c = 1``:
    ``Θ ← Θ/√(…) + K_new + 1``. That is the infinite-width NTK when a weight layer follows (it
    averages over channels); at the network's output the scale term of a single unit is one product
    ``ŷ_c ŷ'_c``, which does not concentrate, and the map gives its mean.

    Raises (LayerError) for non-Gaussian inputs, and for ``axis`` without the channel axis
    (normalising over positions only: finitely many terms, so the statistics stay random).
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)

    def init_fn(key, spec):
        _single("LayerNorm", spec)
        if any(not -spec.ndim < a < spec.ndim or a % spec.ndim == 0 for a in axes):
            raise LayerError(f"LayerNorm: axis {axis} is out of range or the batch axis for inputs "
                             f"{describe_spec(spec)}")
        params = {}
        if affine:
            c = spec.shape[-1]
            params = {"scale": jnp.ones((c,), spec.dtype), "offset": jnp.zeros((c,), spec.dtype)}
        return spec, params, ()

    def apply_fn(params, state, x, key, train):
        y = _normalize(x, axes, eps)
        if affine:
            y = y * params["scale"] + params["offset"]
        return y, state

    def kernel_fn(k):
        return layer_norm_kernel(k, axes, eps, affine, "LayerNorm")

    return Layer(init_fn, apply_fn, kernel_fn, "LayerNorm")


def BatchNorm(momentum: float = 0.9, eps: float = 1e-5) -> Layer:  # noqa: N802
    """Batch normalisation (Ioffe & Szegedy 2015) over all axes but the last (features/channels).

    Params: ``scale`` (init 1), ``offset`` (init 0). State: running ``mean`` (init 0) and ``var``
    (init 1). With ``train=True`` the batch statistics normalise (biased variance) and the new
    state is ``momentum·running + (1 - momentum)·batch`` (the unbiased batch variance enters the
    running estimate); with ``train=False`` the running statistics normalise and the state is
    unchanged. ``apply`` needs the state: pass ``state=`` from ``init``.
    """
    if not 0.0 <= momentum < 1.0:
        raise LayerError(f"BatchNorm: momentum must be in [0, 1), got {momentum!r}")

    def init_fn(key, spec):
        _single("BatchNorm", spec)
        c = spec.shape[-1]
        params = {"scale": jnp.ones((c,), spec.dtype), "offset": jnp.zeros((c,), spec.dtype)}
        state = {"mean": jnp.zeros((c,), spec.dtype), "var": jnp.ones((c,), spec.dtype)}
        return spec, params, state

    def apply_fn(params, state, x, key, train):
        if not isinstance(state, dict) or "mean" not in state:
            raise LayerError("BatchNorm needs its state (running statistics): pass state= as returned by init")
        axes = tuple(range(x.ndim - 1))
        if train:
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            n = x.size // x.shape[-1]
            unbiased = var * (n / max(n - 1, 1))
            new_state = {
                "mean": momentum * state["mean"] + (1 - momentum) * mean,
                "var": momentum * state["var"] + (1 - momentum) * unbiased,
            }
        else:
            mean, var, new_state = state["mean"], state["var"], state
        y = (x - mean) * jax.lax.rsqrt(var + eps)
        return y * params["scale"] + params["offset"], new_state

    return Layer(init_fn, apply_fn, None, "BatchNorm")


def Dropout(rate: Scalar) -> Layer:  # noqa: N802
    """Inverted dropout: in training, each entry is zeroed with probability ``rate`` and the rest
    are scaled by ``1/(1 - rate)`` (so ``E[y] = x``); identity when ``train=False``.

    Needs an explicit PRNG ``key`` in training. ``rate`` may be a traced scalar in [0, 1).
    """
    if not is_traced(rate):
        try:
            ok = 0.0 <= float(rate) < 1.0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LayerError(f"Dropout: rate must be a number in [0, 1), got {rate!r}")

    def init_fn(key, spec):
        if isinstance(spec, tuple):
            raise LayerError(f"Dropout expects one input, got a tuple {describe_spec(spec)}")
        return spec, (), ()

    def apply_fn(params, state, x, key, train):
        if not train:
            return x, state
        if key is None:
            raise LayerError("Dropout in training mode needs a PRNG key: call apply(..., key=key, train=True)")
        keep = 1.0 - rate
        mask = _random.bernoulli(key, keep, x.shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x)), state

    return Layer(init_fn, apply_fn, None, f"Dropout({rate})")
