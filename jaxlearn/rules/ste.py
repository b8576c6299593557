"""Straight-through estimators: quantize in the forward pass, pass a surrogate derivative backward.

A straight-through estimator (STE) replaces the derivative of a piecewise-constant quantizer
``q`` (zero almost everywhere) by the derivative of a surrogate ``s``: the forward value is
``q(x)``, the derivative used by autodiff is ``s'(x)`` (Bengio, Léonard & Courville 2013,
"Estimating or propagating gradients through stochastic neurons", arXiv:1308.3432). Two
surrogates, chosen by ``backward``:

* ``"identity"``: ``s(x) = x``, derivative ``1`` everywhere (Bengio et al. 2013).
* ``"clipped"``: ``s(x) = clip(x, lo, hi)`` (the hard tanh for ``[lo, hi] = [-1, 1]``),
  derivative ``1{lo ≤ x ≤ hi}`` with the end points *inside* (Courbariaux et al. 2015,
  "BinaryConnect"; Hubara et al. 2016, "Binarized neural networks": ``g_r = g_q·1{|r| ≤ 1}``).

The rules are ``jax.custom_jvp`` rules, so they hold in forward mode (``jax.jvp``,
``jax.jacfwd``) and reverse mode (``jax.grad``, ``jax.vjp``, by transposition) alike. Bounds
``lo``/``hi`` may be traced arrays (a population over clipping ranges is one vmapped program) but
are treated as constants: derivatives with respect to them are zero. ``bits`` and ``backward``
are static Python values. NaN inputs give NaN outputs.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import _random
from jaxlearn._checks import check_int, is_traced
from jaxlearn._types import Array, ArrayLike
from jaxlearn.nn.activations import Elementwise
from jaxlearn.nn.core import Layer, LayerError, describe_spec

__all__ = [
    "sign_ste",
    "quantize_ste",
    "stochastic_round_ste",
    "SignSTE",
    "QuantizeSTE",
    "StochasticRoundSTE",
]

_BACKWARDS = ("identity", "clipped")


# -- the straight-through rule ------------------------------------------------------------------

@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _straight_through(quantizer, clipped, x, lo, hi, noise):
    return quantizer(x, lo, hi, noise)


@_straight_through.defjvp
def _straight_through_jvp(quantizer, clipped, primals, tangents):
    x, lo, hi, noise = primals
    t = tangents[0]  # tangents of lo, hi and noise are dropped: the bounds are constants
    if clipped:
        t = jnp.where((x >= lo) & (x <= hi), t, jnp.zeros_like(t))
    return quantizer(x, lo, hi, noise), t


def _sign(x, lo, hi, noise):
    del lo, hi, noise
    one = jnp.ones_like(x)
    return jnp.where(x >= 0, one, jnp.where(x < 0, -one, x))  # the inner where keeps NaN


def _grid_index(x, lo, hi, levels, noise):
    """Index ``k`` of the grid point chosen for ``x``: ``u = (clip(x) - lo)/step`` rounded to the
    nearest integer (ties up) when ``noise is None``, else ``floor(u) + 1{noise < frac(u)}``."""
    if levels is None:  # the integer grid, clipped only where bounds were given
        u = x if lo is None else jnp.clip(x, lo, hi)
    else:
        u = (jnp.clip(x, lo, hi) - lo) * ((levels - 1) / (hi - lo))
    if noise is None:
        return jnp.floor(u + 0.5)
    floor = jnp.floor(u)
    return floor + (noise < u - floor).astype(u.dtype)


def _grid_value(k, lo, hi, levels):
    if levels is None:
        return k
    w = k / (levels - 1)
    return jnp.minimum(lo * (1 - w) + hi * w, hi)  # exact at both end points


@functools.lru_cache(maxsize=None)
def _grid_quantizer(levels, bounded):
    """The quantizer onto ``levels`` points of ``[lo, hi]`` (``levels=None``: the integers, clipped
    to ``[lo, hi]`` only if ``bounded``). Cached, so equal grids give the same (static) function."""

    def quantizer(x, lo, hi, noise):
        lo_, hi_ = (lo, hi) if bounded else (None, None)
        return _grid_value(_grid_index(x, lo_, hi_, levels, noise), lo_, hi_, levels).astype(x.dtype)

    return quantizer


def _round_to_grid(fn, x, key, levels, lo, hi, clipped):
    """Nearest (``key=None``) or stochastic rounding of ``x`` with the straight-through rule."""
    return _rounded(_check_x(fn, x), key, lo, hi, levels=levels, clipped=clipped)


# jitted so that eager calls compile once per shape instead of dispatching op by op
@functools.partial(jax.jit, static_argnames=("levels", "clipped"))
def _rounded(x, key, lo, hi, *, levels, clipped):
    noise = None if key is None else _random.uniform(key, x.shape, x.dtype)
    if lo is None:  # unbounded integer grid; the window of the jvp rule is then never used
        inf = jnp.asarray(jnp.inf, x.dtype)
        return _straight_through(_grid_quantizer(None, False), False, x, -inf, inf, noise)
    lo, hi = _bounds(x, lo, hi)
    return _straight_through(_grid_quantizer(levels, True), clipped, x, lo, hi, noise)


# -- argument checks ----------------------------------------------------------------------------

def _check_backward(fn, backward):
    if backward not in _BACKWARDS:
        raise ValueError(f"{fn}: backward must be one of {list(_BACKWARDS)}, got {backward!r}")
    return backward == "clipped"


def _check_bits(fn, bits, allow_none=False):
    if bits is None and allow_none:
        return None
    want = "None or an int >= 1" if allow_none else "an int >= 1"
    return 2 ** check_int(bits, "bits", minimum=1, where=fn, expected=f"{want} (static)")


def _check_range(fn, lo, hi):
    if (lo is None) != (hi is None):
        raise ValueError(f"{fn}: lo and hi must both be given or both be None, got lo={lo!r}, hi={hi!r}")
    if lo is not None and not is_traced((lo, hi)) and not np.all(np.asarray(lo) < np.asarray(hi)):
        raise ValueError(f"{fn}: lo must be < hi, got lo={lo!r}, hi={hi!r}")


def _check_x(fn, x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: x must be a floating-point array, got dtype {x.dtype}")
    return x


def _bounds(x, lo, hi):
    return jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype)


# -- public functions ---------------------------------------------------------------------------

def sign_ste(x: ArrayLike, backward: Literal["identity", "clipped"] = "identity") -> Array:
    """Binarization with a straight-through derivative (Hubara et al. 2016, "Binarized neural networks").

    Forward: ``sign(x)`` with the convention ``sign(0) = +1`` (so the output is always ±1,
    never 0; NaN stays NaN). Backward: ``1`` (``backward="identity"``) or the hard-tanh derivative
    ``1{|x| ≤ 1}`` (``backward="clipped"``, ``±1`` included).

    ``x``: any shape, floating dtype; the output has the shape and dtype of ``x``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import rules
        >>> x = jnp.array([-0.5, 0.3, 2.0])
        >>> rules.sign_ste(x).tolist(), jax.grad(lambda x: rules.sign_ste(x, "clipped").sum())(x).tolist()
        ([-1.0, 1.0, 1.0], [1.0, 1.0, 0.0])
    """
    clipped = _check_backward("sign_ste", backward)
    return _signed(_check_x("sign_ste", x), clipped=clipped)


@functools.partial(jax.jit, static_argnames="clipped")
def _signed(x, *, clipped):
    lo, hi = _bounds(x, -1.0, 1.0)
    return _straight_through(_sign, clipped, x, lo, hi, None)


def quantize_ste(x: ArrayLike, bits: int, lo: ArrayLike = -1.0, hi: ArrayLike = 1.0,
                 backward: Literal["identity", "clipped"] = "identity") -> Array:
    """``bits``-bit uniform quantization with a straight-through derivative (Hubara et al. 2016,
    "Quantized neural networks", arXiv:1609.07061, with deterministic rounding).

    Forward: clip ``x`` to ``[lo, hi]``, then round to the nearest of the ``2**bits`` equally
    spaced levels ``lo + k·(hi - lo)/(2**bits - 1)``, ``k = 0 … 2**bits - 1`` (both end points are
    levels). Tie rule: a value exactly halfway between two levels goes to the *upper* one, so with
    ``bits=1`` on ``[-1, 1]`` this is :func:`sign_ste` on ``[-1, 1]`` (``0 ↦ +1``). Backward: ``1``
    (``"identity"``) or ``1{lo ≤ x ≤ hi}`` (``"clipped"``).

    ``x``: any shape, floating dtype; ``lo < hi``: scalars or arrays broadcasting with ``x``, may
    be traced (their derivatives are zero); ``bits``, ``backward``: static.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import rules
        >>> x = jnp.array([-0.9, 0.1, 0.6])
        >>> [round(float(v), 4) for v in rules.quantize_ste(x, 2)]     # 4 levels in [-1, 1]
        [-1.0, 0.3333, 0.3333]
        >>> jax.grad(lambda x: rules.quantize_ste(x, 2).sum())(x).tolist()
        [1.0, 1.0, 1.0]
    """
    levels = _check_bits("quantize_ste", bits)
    clipped = _check_backward("quantize_ste", backward)
    _check_range("quantize_ste", lo, hi)
    return _round_to_grid("quantize_ste", x, None, levels, lo, hi, clipped)


def stochastic_round_ste(x: ArrayLike, key: jax.Array, bits: int | None = None, lo: ArrayLike | None = None,
                         hi: ArrayLike | None = None, backward: Literal["identity", "clipped"] = "identity") -> Array:
    """Unbiased stochastic rounding with a straight-through derivative (Gupta et al. 2015, "Deep
    learning with limited numerical precision"). With ``bits=1`` on ``[-1, 1]`` this is the stochastic
    binarization of Courbariaux et al. 2015 ("BinaryConnect"): ``+1`` with probability
    ``clip((x + 1)/2, 0, 1)`` (their hard sigmoid), ``-1`` otherwise.

    With grid step ``Δ``, a value ``u`` between grid points ``a = ⌊u⌋_Δ`` and ``a + Δ`` rounds up
    with probability ``(u - a)/Δ`` and down otherwise, so ``E[q(x)] = x`` for ``x`` in ``[lo, hi]``
    (for ``x`` outside, ``E[q(x)] = clip(x, lo, hi)``). Grid points are rounded to themselves.

    * ``bits`` an int: the ``2**bits`` levels of :func:`quantize_ste` on ``[lo, hi]``
      (default ``[-1, 1]``); ``x`` is clipped to ``[lo, hi]`` first.
    * ``bits=None``: the integers; ``x`` is clipped to ``[lo, hi]`` only if bounds are given (with
      integer bounds the output stays inside them).

    Backward: ``1`` (``"identity"``) or ``1{lo ≤ x ≤ hi}`` (``"clipped"``, needs bounds). ``key``:
    a PRNG key, one uniform draw per entry of ``x`` (vmap over keys for independent draws).
    ``x``: any shape, floating dtype; the output has its shape and dtype.
    """
    levels, lo, hi, clipped = _stochastic_arguments("stochastic_round_ste", bits, lo, hi, backward)
    return _round_to_grid("stochastic_round_ste", x, key, levels, lo, hi, clipped)


def _stochastic_arguments(who, bits, lo, hi, backward):
    """Checked ``(levels, lo, hi, clipped)`` of stochastic rounding; ``[-1, 1]`` when ``bits`` is
    given without bounds."""
    levels = _check_bits(who, bits, allow_none=True)
    clipped = _check_backward(who, backward)
    if levels is not None and lo is None and hi is None:
        lo, hi = -1.0, 1.0
    _check_range(who, lo, hi)
    if clipped and lo is None:
        raise ValueError(f"{who}: backward='clipped' needs bounds lo and hi (bits=None has none by default)")
    return levels, lo, hi, clipped


# -- layers -------------------------------------------------------------------------------------

def SignSTE(backward: Literal["identity", "clipped"] = "identity") -> Layer:  # noqa: N802
    """A parameter-free layer applying :func:`sign_ste` entrywise (no infinite-width kernel)."""
    _check_backward("SignSTE", backward)
    return Elementwise(lambda x: sign_ste(x, backward), f"SignSTE({backward})")


def QuantizeSTE(bits: int, lo: ArrayLike = -1.0, hi: ArrayLike = 1.0,  # noqa: N802
                backward: Literal["identity", "clipped"] = "identity") -> Layer:
    """A parameter-free layer applying :func:`quantize_ste` entrywise (no infinite-width kernel)."""
    _check_bits("QuantizeSTE", bits)
    _check_backward("QuantizeSTE", backward)
    _check_range("QuantizeSTE", lo, hi)
    return Elementwise(lambda x: quantize_ste(x, bits, lo, hi, backward), f"QuantizeSTE({bits})")


def StochasticRoundSTE(bits: int | None = None, lo: ArrayLike | None = None, hi: ArrayLike | None = None,  # noqa: N802
                       backward: Literal["identity", "clipped"] = "identity") -> Layer:
    """A parameter-free layer applying :func:`stochastic_round_ste` in training.

    Like ``Dropout`` it draws its randomness from the ``key`` passed to ``apply`` (needed when
    ``train=True``). With ``train=False`` it rounds deterministically to the *nearest* grid point
    (ties up, as :func:`quantize_ste`; integers when ``bits=None``), with the same backward rule.
    """
    levels, lo, hi, clipped = _stochastic_arguments("StochasticRoundSTE", bits, lo, hi, backward)
    name = f"StochasticRoundSTE({bits})"

    def init_fn(key, spec):
        if isinstance(spec, tuple):
            raise LayerError(f"{name} expects one input, got a tuple {describe_spec(spec)}")
        return spec, (), ()

    def apply_fn(params, state, x, key, train):
        if train and key is None:
            raise LayerError(f"{name} in training mode needs a PRNG key: call apply(..., key=key, train=True)")
        return _round_to_grid(name, x, key if train else None, levels, lo, hi, clipped), state

    return Layer(init_fn, apply_fn, None, name)
