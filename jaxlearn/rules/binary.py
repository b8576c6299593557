"""Binary-weight layers trained through real-valued latent weights, and the latents' clipping.

Hubara, Courbariaux, Soudry, El-Yaniv & Bengio 2016, "Binarized Neural Networks" (NeurIPS;
Algorithm 1), after BinaryConnect (Courbariaux, Bengio & David 2015). A binary layer keeps a real
*latent* weight matrix ``W_r`` and computes with its sign ``W_b = sign(W_r) ∈ {−1, +1}``:

* forward (:func:`BinaryDense`): ``z = m · x W_b + b`` on the last axis, ``x: (..., n)``,
  ``W_r: (n, out)``, ``sign(0) = +1`` (:func:`jaxlearn.rules.sign_ste`'s convention, so ``W_b``
  is never 0), ``m = 1`` (``scale="none"``, Hubara's: a BatchNorm follows every binary layer) or
  ``m = 1/√n`` (``scale="fan_in"``: unit-variance pre-activations for unit-variance inputs
  without a normalisation);
* backward, the straight-through estimator: the gradient of the latent is the gradient of the
  binary weight, ``∂L/∂W_r = ∂L/∂W_b`` (``backward="identity"``; Algorithm 1: "g_{W_k} ←
  g_{W_k^b}"), or that gradient cancelled where ``|W_r| > 1``, ``∂L/∂W_b · 1{|W_r| ≤ 1}``
  (``backward="clipped"``, the rule Hubara et al. apply to activations, §1.1). ``∂L/∂x`` and
  ``∂L/∂b`` are those of a Dense layer with weights ``W_b``;
* update: the latents are clipped to ``[−1, 1]`` after every optimizer step,
  ``W_r ← clip(W_r − η·u, −1, 1)`` (Algorithm 1), so that a sign can always flip back and the
  latents do not grow without bound; :func:`clip_latents` is that projection as an optax
  transform, chained *last*: ``optax.chain(optimizer, clip_latents())``. (With clipped latents
  the two backward rules agree: ``|W_r| ≤ 1`` always.)

A binarized network in Hubara's sense also binarizes its hidden activations:
``rules.SignSTE("clipped")`` (``g_r = g_q · 1{|r| ≤ 1}``) after a ``nn.BatchNorm``, e.g.
``serial(BinaryDense(h), BatchNorm(), SignSTE("clipped"), ..., BinaryDense(10), BatchNorm())``;
the input layer sees real inputs and the output layer's BatchNorm sets the logits' scale.

**Forward mode.** The rule is :func:`jaxlearn.rules.sign_ste`, a ``jax.custom_jvp``: ``jax.jvp``
and ``jax.jacfwd`` work and give the same straight-through derivative as reverse mode (the
tangent of ``W_b`` is that of ``W_r``, masked for ``"clipped"``). Unlike the ``custom_vjp`` rules
(few-bit backward, feedback alignment), a binary network is therefore forward-mode safe:
:func:`jaxlearn.rules.forward_mode_safe` reports it so, and forward gradients work on it.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn._checks import is_traced
from jaxlearn._types import PyTree, Scalar
from jaxlearn.nn import parameterization as P
from jaxlearn.nn.core import Layer, LayerError, describe_spec
from jaxlearn.rules.ste import sign_ste

__all__ = ["BinaryDense", "LATENT", "binary_latents", "clip_latents", "BINARY_SCALES"]

LATENT = "W_latent"  # the params key of a binary layer's latent weights (what clip_latents clips)
BINARY_SCALES = ("none", "fan_in")


def BinaryDense(  # noqa: N802 (layer constructors are capitalised, like classes)
    out_dim: int,
    b_std: Scalar | None = 0.0,
    *,
    latent_init: Scalar = 1.0,
    scale: Literal["none", "fan_in"] = "none",
    backward: Literal["identity", "clipped"] = "identity",
) -> Layer:
    """A fully connected layer with binary weights ``sign(W_latent)`` and straight-through
    gradients for its latent weights (module docstring: Hubara et al. 2016, Algorithm 1).

    ``(..., n) -> (..., out_dim)``: ``z = m · x sign(W_latent) + b``, ``m = 1`` (``scale="none"``)
    or ``1/√n`` (``"fan_in"``). Params ``{"W_latent": (n, out_dim), "b": (out_dim,)}`` (``"b"``
    absent when ``b_std is None``); the latents are drawn uniformly from ``[−latent_init,
    latent_init]`` (``0 < latent_init ≤ 1``, so inside the clipping box; ``1`` fills it), the
    bias from ``N(0, b_std²)``. ``backward``: ``"identity"`` (``∂L/∂W_latent = ∂L/∂W_b``) or
    ``"clipped"`` (that times ``1{|W_latent| ≤ 1}``). ``latent_init`` and ``b_std`` may be traced.

    Train with :func:`clip_latents` chained after the optimizer. No infinite-width kernel.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import rules
        >>> layer = rules.BinaryDense(3)
        >>> params, _ = layer.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> sorted(params), jnp.unique(jnp.sign(params["W_latent"])).tolist()
        (['W_latent', 'b'], [-1.0, 1.0])
        >>> x = jnp.ones((2, 4))
        >>> bool(jnp.all(layer.apply(params, x) == x @ jnp.where(params["W_latent"] >= 0, 1.0, -1.0)))
        True
    """
    name = f"BinaryDense({out_dim})"
    P.check_positive_int(name, "out_dim", out_dim)
    P.check_std(name, "b_std", b_std, allow_none=True)
    if scale not in BINARY_SCALES:
        raise LayerError(f"{name}: scale must be one of {list(BINARY_SCALES)}, got {scale!r}")
    if backward not in ("identity", "clipped"):
        raise LayerError(f"{name}: backward must be one of ['identity', 'clipped'], got {backward!r}")
    if not is_traced(latent_init) and not 0.0 < float(latent_init) <= 1.0:
        raise LayerError(f"{name}: latent_init must be in (0, 1] (inside the clipping box), got {latent_init!r}")

    def init_fn(key, spec):
        if isinstance(spec, tuple) or spec.ndim < 1 or spec.shape[-1] < 1:
            raise LayerError(f"{name} expects one input with a non-empty last axis, got {describe_spec(spec)}")
        dtype = P.param_dtype(spec)
        k_w, k_b = jax.random.split(key)
        bound = jnp.asarray(latent_init, dtype)
        params = {LATENT: jax.random.uniform(k_w, (spec.shape[-1], out_dim), dtype, -1.0, 1.0) * bound}
        if b_std is not None:
            params["b"] = jax.random.normal(k_b, (out_dim,), dtype) * jnp.asarray(b_std, dtype)
        return jax.ShapeDtypeStruct(spec.shape[:-1] + (out_dim,), dtype), params, ()

    def apply_fn(params, state, x, key, train):
        latent = params[LATENT]
        z = x @ sign_ste(latent, backward)
        if scale == "fan_in":
            z = z * jnp.asarray(1.0 / math.sqrt(latent.shape[0]), z.dtype)
        if b_std is not None:
            z = z + params["b"]
        return z, state

    return Layer(init_fn, apply_fn, None, name)


def binary_latents(params: PyTree) -> PyTree:
    """A pytree of bools like ``params``: ``True`` exactly at the latent weights of binary layers
    (leaves under a dict key ``"W_latent"``, :data:`LATENT`), ``False`` elsewhere."""
    def is_latent(path, leaf):
        del leaf
        return any(isinstance(k, jax.tree_util.DictKey) and k.key == LATENT for k in path)

    return jax.tree_util.tree_map_with_path(is_latent, params)


def _check_box(lo, hi):
    if is_traced((lo, hi)):
        return
    try:
        ok = float(lo) < float(hi)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"clip_latents: lo and hi must be scalars with lo < hi, got lo={lo!r}, hi={hi!r}")


def _projected_update(p, u, lo, hi):
    """``u'`` with ``p + u'`` (as ``optax.apply_updates`` rounds it) equal to ``clip(p + u, lo, hi)``
    up to rounding and never outside ``[lo, hi]``: ``clip(p + u) − p`` can be off by an ulp, which
    ``p + u'`` may then round past a bound (seen in float64 for ``hi = 0.3``); such an ``u'`` is
    moved one ulp inwards, which lands ``p + u'`` inside (checked in tests on 10⁶ random pairs)."""
    lo, hi = jnp.asarray(lo, p.dtype), jnp.asarray(hi, p.dtype)
    step = jnp.clip(p + u.astype(p.dtype), lo, hi) - p
    landed = p + step
    step = jnp.where(landed > hi, jnp.nextafter(step, jnp.asarray(-jnp.inf, p.dtype)), step)
    step = jnp.where(landed < lo, jnp.nextafter(step, jnp.asarray(jnp.inf, p.dtype)), step)
    return step.astype(u.dtype)


def clip_latents(lo: Scalar = -1.0, hi: Scalar = 1.0,
                 mask: PyTree | Callable[[PyTree], PyTree] | None = None) -> optax.GradientTransformation:
    """Clips parameters to the box ``[lo, hi]`` after the update: an optax transform whose update
    ``u'`` makes ``optax.apply_updates(params, u') = clip(params + u, lo, hi)`` on the selected
    leaves (Hubara et al. 2016, Algorithm 1: ``W_r ← clip(W_r − η g, −1, 1)``); other leaves'
    updates pass through unchanged.

    Chain it *last*, after everything that shapes the step (optimizer, schedule, weight decay):
    ``optax.chain(optimizer, clip_latents())``. Its ``update`` needs ``params``.

    ``mask``: which leaves to clip — ``None`` (the latent weights of :func:`BinaryDense` layers,
    :func:`binary_latents`), a pytree like the params of Python bools (whole leaves) or of boolean
    arrays broadcasting with each leaf (entrywise; may be traced), or a function ``params -> mask``
    (as in ``optax.masked``). ``lo < hi``: scalars, may be traced. Stateless
    (``optax.EmptyState``); ``optax.MaskedNode`` leaves (frozen parameters) pass through.
    The result lies in ``[lo, hi]`` exactly (not only up to rounding, see the module's
    ``_projected_update``).
    """
    _check_box(lo, hi)
    mask = binary_latents if mask is None else mask

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_latents: update needs params (call optimizer.update(grads, state, params))")
        selected = mask(params) if callable(mask) else mask

        def clip(u, p, keep):
            if isinstance(u, optax.MaskedNode):
                return u
            if isinstance(keep, (bool, np.bool_)):  # a static mask: unselected leaves are left alone
                return _projected_update(p, u, lo, hi) if keep else u
            return jnp.where(keep, _projected_update(p, u, lo, hi), u)  # an array mask (may be traced)

        clipped = jax.tree.map(clip, updates, params, selected, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
        return clipped, state

    return optax.GradientTransformation(init_fn, update_fn)
