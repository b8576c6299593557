"""Few-bit backward: activations whose backward pass keeps a ``bits``-bit code instead of ``x``.

Novikov, Bykov, Oseledets et al. (2023), "Few-bit backward: quantized gradients of activation
functions for memory footprint reduction", ICML. The backward pass of an elementwise activation
``φ`` only needs ``φ'(x)``; replacing ``φ'`` by a piecewise-constant ``q`` with ``2**bits``
levels lets the forward pass save, per entry, the *index* of the interval holding ``x`` — a
``bits``-bit integer, bit-packed into ``uint8`` — instead of the float ``x``: a 2-bit code is 1/16
of a float32 residual. The forward value is exactly ``φ(x)``; the backward pass returns
``g_in = g_out · level[code]``.

**Choice of the approximation** (computed once, on the host, when the activation is built;
deterministic). Following the paper's criterion, pre-activations are modelled as standard normal
and ``q`` minimises the weighted L2 error ``E_{x∼N(0,1)}[(φ'(x) − q(x))²]`` over all
piecewise-constant functions with ``2**bits`` *contiguous* intervals of ``x``, with boundaries on
the edges of 1024 equal cells of ``[-6, 6]`` (the two outer cells extend to ±∞ and carry the tail
mass; ``φ'`` is evaluated at cell midpoints, in float64). For fixed boundaries the optimal level
of an interval is the normal-weighted mean of ``φ'`` on it; the boundaries are then found exactly
(on the grid) by dynamic programming over the cells, ``D_k(j) = min_i D_{k-1}(i) + C(i, j)`` with
``C(i, j)`` the weighted squared deviation of ``φ'`` over cells ``i … j-1`` (from prefix sums):
``O(2**bits · 1024²)`` work, ~0.1 s for ≤ 4 bits and ~0.5 s for 8 bits (named activations are
cached). Intervals are left-open, right-closed: ``code(x) = #{boundaries < x}``, so ``x`` on a
boundary takes the level on its left (for ReLU, ``φ'(0) = 0`` like ``jax.nn.relu``). The grid has
an edge at 0, so 1 bit is exact for ReLU (``φ'`` is the step ``1{x > 0}``).

**Forward mode.** The rule is a ``jax.custom_vjp``, and JAX gives custom_vjp functions no forward
-mode derivative: ``jax.jvp``/``jax.jacfwd`` of a model using it raise ``TypeError``. Use
``jaxlearn.rules.forward_mode_safe`` to detect custom_vjp rules in a model before using a
forward-mode estimator. Second derivatives treat ``q`` as piecewise constant (``q' = 0``).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from jaxlearn._checks import check_int, did_you_mean
from jaxlearn._types import Array, ArrayLike
from jaxlearn.nn.activations import Elementwise
from jaxlearn.nn.core import Layer

__all__ = ["few_bit", "few_bit_table", "FewBitTable", "FewBit", "residual_bytes", "pack_bits", "unpack_bits",
           "FEW_BIT_ACTIVATIONS"]

_GRID_RADIUS = 6.0
_GRID_CELLS = 1024  # even, so 0 is a cell edge


def _normal_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _sigmoid(x):
    return special.expit(x)


# name -> (forward in JAX, φ' in float64 NumPy). GELU is the exact erf form, as jaxlearn.nn.Gelu.
FEW_BIT_ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (jax.nn.relu, lambda x: (x > 0).astype(np.float64)),
    "gelu": (lambda x: jax.nn.gelu(x, approximate=False), lambda x: special.ndtr(x) + x * _normal_pdf(x)),
    "tanh": (jnp.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "sigmoid": (jax.nn.sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "silu": (jax.nn.silu, lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    "softplus": (jax.nn.softplus, _sigmoid),
}


class FewBitTable(NamedTuple):
    """The piecewise-constant approximation of ``φ'`` used by :func:`few_bit`.

    ``boundaries``: float64 ``(2**bits - 1,)``, increasing; interval ``j`` is
    ``(boundaries[j-1], boundaries[j]]`` (``-∞``/``+∞`` at the ends). ``levels``: float64
    ``(2**bits,)``, the value of ``q`` on each interval. ``mse``: ``E_{x∼N(0,1)}[(φ' − q)²]`` on the grid.
    """

    boundaries: np.ndarray
    levels: np.ndarray
    mse: float


def _resolve(fn, name_hint="few_bit"):
    """``(forward, derivative or None, name)`` for an activation name or callable."""
    if isinstance(fn, str):
        if fn not in FEW_BIT_ACTIVATIONS:
            raise ValueError(f"{name_hint}: unknown activation {fn!r}{did_you_mean(fn, FEW_BIT_ACTIVATIONS)}; "
                             f"expected a callable or one of "
                             f"{sorted(FEW_BIT_ACTIVATIONS)}")
        forward, derivative = FEW_BIT_ACTIVATIONS[fn]
        return forward, derivative, fn
    if not callable(fn):
        raise ValueError(f"{name_hint}: fn must be an activation name or a callable, got {type(fn).__name__}")
    return fn, None, getattr(fn, "__name__", "fn")


def _check_bits(fn_name, bits):
    check_int(bits, "bits", minimum=1, maximum=8, where=fn_name, expected="an int in 1..8 (static)")


def _grid():
    edges = np.linspace(-_GRID_RADIUS, _GRID_RADIUS, _GRID_CELLS + 1)
    cdf = special.ndtr(edges)
    cdf[0], cdf[-1] = 0.0, 1.0  # outer cells carry the tails
    return edges, np.diff(cdf), 0.5 * (edges[:-1] + edges[1:])


def _jax_derivative(fn):
    def derivative(x):
        # one compiled program evaluated now, also when few_bit is called inside a trace
        with jax.ensure_compile_time_eval():
            d = jax.jit(jax.vmap(jax.grad(fn)))(np.asarray(x, jnp.result_type(float)))
        return np.asarray(d, np.float64)

    return derivative


def _optimal_partition(weights, values, segments):
    """Cut ``len(values)`` weighted cells into ``segments`` contiguous runs minimising the sum of
    within-run weighted squared deviations; returns the cut indices ``(segments-1,)``.

    Run costs come from float64 prefix sums; the DP then runs in float32 (half the memory
    traffic of its ``O(segments·cells²)`` work), which can only swap near-ties within ~1e-7."""
    n = len(values)
    pw, p1, p2 = (np.concatenate([[0.0], np.cumsum(weights * values ** p)]) for p in range(3))
    j, i = np.arange(n + 1)[:, None], np.arange(n + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.maximum(p2[j] - p2[i] - (p1[j] - p1[i]) ** 2 / (pw[j] - pw[i]), 0.0)
    cost = np.where(j > i, cost, np.inf).astype(np.float32)  # cost[j, i]: cells i … j-1, rows contiguous
    best = cost[:, 0].copy()  # best[j]: cells 0 … j-1 in k runs (k = 1 here)
    back = np.zeros((segments, n + 1), np.int64)
    for k in range(1, segments):
        # k+1 runs need j ≥ k+1 cells and a last cut i ≥ k
        total = cost[k + 1:, k:] + best[None, k:]
        arg = np.argmin(total, axis=1)
        back[k, k + 1:] = arg + k
        best = np.concatenate([np.full(k + 1, np.inf, np.float32), total[np.arange(n - k), arg]])
    cuts, j = [], n
    for k in range(segments - 1, 0, -1):
        j = back[k, j]
        cuts.append(j)
    return np.array(cuts[::-1], np.int64)


@functools.lru_cache(maxsize=64)
def _named_table(name, bits):
    return _table(FEW_BIT_ACTIVATIONS[name][1], bits)


def _table(derivative, bits):
    edges, weights, mids = _grid()
    values = np.asarray(derivative(mids), np.float64)
    cuts = _optimal_partition(weights, values, 2 ** bits)
    runs = np.split(np.arange(_GRID_CELLS), cuts)
    levels = np.array([np.sum(weights[r] * values[r]) / np.sum(weights[r]) for r in runs])
    mse = sum(np.sum(weights[r] * (values[r] - level) ** 2) for r, level in zip(runs, levels))
    return FewBitTable(edges[cuts], levels, float(mse))


def few_bit_table(fn: str | Callable, bits: int, derivative: Callable | None = None) -> FewBitTable:
    """The boundaries and levels :func:`few_bit` uses for ``fn`` with ``bits`` bits (module
    docstring: the normal-weighted L2-optimal piecewise-constant approximation of ``φ'``).

    ``fn``: an activation name (``FEW_BIT_ACTIVATIONS``) or a scalar-to-scalar JAX callable.
    ``derivative``: optional ``φ'`` as a float64 NumPy function; by default the closed form for
    named activations and ``jax.grad(fn)`` for callables.
    """
    _check_bits("few_bit_table", bits)
    forward, named_derivative, name = _resolve(fn, "few_bit_table")
    if derivative is None and named_derivative is not None:
        return _named_table(name, bits)
    return _table(derivative or _jax_derivative(forward), bits)


def pack_bits(codes: ArrayLike, bits: int) -> Array:
    """Bit-packs integer codes in ``[0, 2**bits)`` into ``uint8``: code ``i`` of the flattened
    array occupies bits ``i·bits … (i+1)·bits - 1`` of a little-endian bit stream (for ``bits`` in
    {1, 2, 4, 8}: ``8/bits`` codes per byte, code ``i`` at shift ``bits·(i mod 8/bits)`` of byte
    ``⌊i·bits/8⌋``). Returns ``uint8[ceil(codes.size·bits/8)]`` (the stream is zero-padded).

    For ``bits`` dividing 8 the bytes are assembled from ``8/bits`` shifted codes each (no
    intermediate larger than the codes); other widths go through the explicit bit stream, an
    intermediate of ``codes.size·bits`` bytes."""
    flat = codes.reshape(-1).astype(jnp.uint8)
    if 8 % bits == 0:
        per_byte = 8 // bits
        flat = jnp.pad(flat, (0, (-flat.size) % per_byte))
        shifts = jnp.arange(per_byte, dtype=jnp.uint8) * jnp.uint8(bits)
        # the shifted codes occupy disjoint bits, so their sum is their bitwise or
        return jnp.sum(flat.reshape(-1, per_byte) << shifts, axis=1, dtype=jnp.uint8)
    stream = (flat[:, None] >> jnp.arange(bits, dtype=jnp.uint8)) & 1
    stream = stream.reshape(-1)
    stream = jnp.pad(stream, (0, (-stream.size) % 8))
    return jnp.sum(stream.reshape(-1, 8) << jnp.arange(8, dtype=jnp.uint8), axis=1, dtype=jnp.uint8)


def unpack_bits(packed: ArrayLike, bits: int, size: int) -> Array:
    """Inverse of :func:`pack_bits`: the first ``size`` codes as ``int32[size]``."""
    if 8 % bits == 0:
        per_byte = 8 // bits
        shifts = jnp.arange(per_byte, dtype=jnp.uint8) * jnp.uint8(bits)
        codes = (packed[:, None] >> shifts) & jnp.uint8(2 ** bits - 1)
        return codes.reshape(-1)[:size].astype(jnp.int32)
    stream = ((packed[:, None] >> jnp.arange(8, dtype=jnp.uint8)) & 1).reshape(-1)[: size * bits]
    return jnp.sum(stream.reshape(size, bits).astype(jnp.int32) << jnp.arange(bits, dtype=jnp.int32), axis=1)


def few_bit(fn: str | Callable, bits: int, *, derivative: Callable | None = None) -> Callable:
    """An activation ``g`` with ``g(x) = fn(x)`` exactly and a ``bits``-bit backward pass.

    ``fn``: an activation name (``"relu"``, ``"gelu"`` (exact erf form), ``"tanh"``, ``"sigmoid"``,
    ``"silu"``, ``"softplus"``) or an elementwise JAX callable; ``bits``: static int in 1..8.
    ``g(x)``: any shape and floating dtype; the forward saves ``uint8[ceil(x.size·bits/8)]``
    (:func:`pack_bits` of the interval codes) and the backward returns ``g_out · levels[code]``,
    with boundaries and levels from :func:`few_bit_table` (levels cast to ``g_out``'s dtype).
    Works under ``jit``, ``vmap`` and ``grad``; *not* under ``jax.jvp`` (module docstring).
    """
    _check_bits("few_bit", bits)
    forward, _, label = _resolve(fn, "few_bit")
    table = few_bit_table(fn, bits, derivative)
    boundaries, levels = table.boundaries, table.levels

    def g(x):
        return forward(x)

    g.__name__ = g.__qualname__ = f"few_bit_{label}_{bits}"  # how forward_mode_safe names the rule
    g = jax.custom_vjp(g)

    def g_fwd(x):
        codes = jnp.searchsorted(jnp.asarray(boundaries, x.dtype), x, side="left", method="compare_all")
        return forward(x), pack_bits(codes, bits)

    def g_bwd(packed, g_out):
        codes = unpack_bits(packed, bits, g_out.size).reshape(g_out.shape)
        return (g_out * jnp.asarray(levels, g_out.dtype)[codes],)

    g.defvjp(g_fwd, g_bwd)
    return g


def FewBit(activation: str | Callable, bits: int) -> Layer:  # noqa: N802
    """A parameter-free layer applying :func:`few_bit` ``(activation, bits)`` entrywise.

    ``activation``: a name from ``FEW_BIT_ACTIVATIONS`` or an elementwise callable. The layer has
    no infinite-width kernel map (its forward equals the activation's, but kernels of
    ``jaxlearn.kernels`` assume exact derivatives for the NTK).
    """
    g = few_bit(activation, bits)
    return Elementwise(g, f"FewBit({_resolve(activation, 'FewBit')[2]}, {bits})")


def residual_bytes(fn: Callable, *args) -> int:
    """Bytes of the residuals ``jax.vjp(fn, *args)`` keeps for the backward pass.

    The function ``jax.vjp`` returns is a pytree whose leaves are exactly its residuals (in JAX
    0.10: the ``VJP`` object's saved arguments and opaque residuals); their shapes are found with
    ``jax.eval_shape``, so nothing is computed and ``args`` may be arrays or
    ``jax.ShapeDtypeStruct``s (pytrees of them). These are the residuals of the un-optimised
    linearisation (e.g. ``jax.nn.relu`` keeps a bool mask and a broadcast zero: 1.25× a float32
    input); under ``jit`` XLA may eliminate some of them, such as broadcast constants.
    """
    vjp_shapes = jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1], *args)
    return int(sum(math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(vjp_shapes)))
