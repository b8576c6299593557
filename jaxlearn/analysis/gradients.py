"""Per-example gradients and the statistics of their noise: gradient noise scale and signal-to-noise ratio.

Conventions (``n`` examples; ``g_i = ∇_θ ℓ(f(θ, x_i), y_i)`` the gradient of ONE example's loss):

* ``apply_fn(params, x)`` takes a batch (a leading example axis on every leaf of ``x``). One example is
  passed as a batch of one and its output taken back out, ``ℓ_i(θ) = per_example_loss(apply_fn(θ,
  x_i[None])[0], y_i)``, so a model whose outputs mix examples (BatchNorm in training mode) sees each
  example alone. ``per_example_loss(output, target) -> scalar`` is the loss of ONE example
  (``jaxlearn.train.per_example_*``); a batch-mean loss such as ``jaxlearn.train.mse`` is a ``TypeError``.
* ``chunk_size``: examples evaluated at once (``None``: all ``n``). The data are cut into the fewest
  chunks of equal size ``≤ chunk_size`` (:func:`jaxlearn.data.row_blocks`); the last chunk is padded by
  repeating its last example and the padding is dropped (per-example results) or masked (sums). Chunks
  run in ``lax.map``/``lax.scan``, so memory is bounded by one chunk's per-example gradients; results
  equal the unchunked ones up to float rounding.
* Per-example gradients are a pytree like ``params`` with a leading axis ``n`` on every leaf. Norms,
  inner products and traces run over all leaves (``θ`` seen as one vector of ``P`` coordinates).
* ``Ĝ = (1/n) Σ_i g_i`` (mean gradient); ``tr(Σ̂) = (1/(n−1)) Σ_i |g_i − Ĝ|²`` (trace of the unbiased
  sample covariance of a single example's gradient).

Gradient noise scale (McCandlish, Kaplan, Amodei & OpenAI Dota Team 2018, "An Empirical Model of
Large-Batch Training", arXiv:1812.06162): with ``G`` the true gradient and ``Σ`` the covariance of one
example's gradient, the mean gradient ``G_B`` of a batch of ``B`` i.i.d. examples has

    E |G_B|² = |G|² + tr(Σ)/B,

so the plug-in ``|G_B|²`` is biased upward by ``tr(Σ)/B``. The *simple noise scale* is
``B_simple = tr(Σ)/|G|²`` (§2.2, eq. 2.8); Appendix A.1 estimates ``|G|²`` and ``tr(Σ)`` without bias
from two batch sizes (:func:`noise_scale_from_norms`). From ``n`` per-example gradients the same
estimates are ``tr(Σ̂)`` and ``|Ĝ|² − tr(Σ̂)/n`` (:func:`gradient_noise_scale`; this is A.1 with
``B_small = 1``, ``B_big = n``). ``B_simple`` is a ratio of two noisy estimates: the ``|G|²`` estimate can
be negative when noise dominates; average ``grad_sq`` and ``trace_cov`` over many batches before dividing
(as A.1 does with moving averages).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxlearn._checks import check_int, is_real
from jaxlearn._compile import jit_when_eager
from jaxlearn._types import Array, ArrayLike, PyTree
from jaxlearn.data import merge_rows, row_blocks, split_rows
from jaxlearn.train.losses import check_per_example_loss

__all__ = ["NoiseScale", "GradientSNR", "per_example_grads", "per_example_grad_norms", "gradient_noise_scale",
           "model_gradient_noise_scale", "noise_scale_from_norms", "gradient_snr"]


class NoiseScale(NamedTuple):
    """``grad_sq``: estimate of ``|G|²``; ``trace_cov``: estimate of ``tr(Σ)``; ``b_simple``:
    ``trace_cov / grad_sq`` (McCandlish et al. 2018, eq. 2.8). Scalars; a pytree, so it jits and vmaps."""

    grad_sq: jax.Array
    trace_cov: jax.Array
    b_simple: jax.Array


class GradientSNR(NamedTuple):
    """``per_parameter``: a pytree like ``params`` of ``Ĝ_j² / Var̂(g_ij)``; ``overall``: the scalar
    ``|Ĝ|² / tr(Σ̂)`` (see :func:`gradient_snr`)."""

    per_parameter: PyTree
    overall: jax.Array


# -- input checks (trace time, static shapes) ------------------------------------------------------------------

def _leading(name: str, tree) -> int:
    shapes = [jnp.shape(a) for a in jax.tree.leaves(tree)]
    if not shapes:
        raise ValueError(f"{name}: expected an array (or pytree of arrays) with a leading example axis, got none")
    sizes = {s[0] if s else None for s in shapes}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"{name}: every array needs the same leading (example) axis, got shapes {shapes}")
    return sizes.pop()


def _check_data(x, y, chunk_size) -> tuple[int, int]:
    n, m = _leading("x", x), _leading("y", y)
    if m != n:
        raise ValueError(f"y: expected {n} examples as in x, got {m}")
    if n < 1:
        raise ValueError("x: expected at least one example, got 0")
    if chunk_size is None:
        return n, n
    return n, min(check_int(chunk_size, "chunk_size", minimum=1, form="must", noun="integer"), n)


def _check_grads(name: str, grads, minimum: int) -> int:
    n = _leading(name, grads)
    for leaf in jax.tree.leaves(grads):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"{name}: expected floating-point gradients, got dtype {jnp.result_type(leaf)}")
    if n < minimum:
        raise ValueError(f"{name}: expected at least {minimum} examples (leading axis), got {n}")
    return n


# -- chunked evaluation ----------------------------------------------------------------------------------------

def _chunks(x, y, n: int, size: int):
    """Leaves ``(num, rows, …)`` and a mask ``(num, rows)``, True on real examples (False on padding)."""
    num, rows = row_blocks(n, size)
    xs, ys = (jax.tree.map(lambda a: split_rows(a, size), t) for t in (x, y))
    return xs, ys, (jnp.arange(num * rows) < n).reshape(num, rows)


def _map_chunks(fn: Callable, x, y, n: int, size: int):
    """``fn(x_c, y_c)`` (per-example outputs, leading axis ``rows``) for every chunk, padding dropped."""
    if size >= n:
        return fn(x, y)
    xs, ys, _ = _chunks(x, y, n, size)
    return jax.tree.map(lambda a: merge_rows(a, n), lax.map(lambda c: fn(*c), (xs, ys)))


def _sum_chunks(fn: Callable, x, y, n: int, size: int):
    """``Σ_chunks fn(x_c, y_c, mask_c)`` (a pytree), accumulated in a ``lax.scan``."""
    if size >= n:
        return fn(x, y, jnp.ones((n,), bool))
    xs, ys, mask = _chunks(x, y, n, size)
    first = jax.tree.map(lambda a: a[0], (xs, ys, mask))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *first))

    def body(total, chunk):
        return jax.tree.map(jnp.add, total, fn(*chunk)), None

    return lax.scan(body, zeros, (xs, ys, mask))[0]


def _example_loss(apply_fn, per_example_loss, params, x_i, y_i):
    """``ℓ(f(θ, x_i), y_i)``: one example passed to ``apply_fn`` as a batch of one."""
    output = apply_fn(params, jax.tree.map(lambda a: a[None], x_i))
    return per_example_loss(jax.tree.map(lambda a: a[0], output), y_i)


def _check_model(apply_fn, per_example_loss, params, x, y, chunk_size) -> tuple[int, int]:
    """``(n, chunk size)`` after checking the loss, the data, and (by tracing one example, outside any
    transformation so that the error stays one line) that the loss of one example is a scalar."""
    check_per_example_loss("per_example_loss", per_example_loss)
    n, size = _check_data(x, y, chunk_size)

    def spec(a, drop=0):
        return jax.ShapeDtypeStruct(jnp.shape(a)[drop:], jnp.result_type(a))

    first = [jax.tree.map(lambda a: spec(a, 1), t) for t in (x, y)]
    shape = jax.eval_shape(functools.partial(_example_loss, apply_fn, per_example_loss),
                           jax.tree.map(spec, params), *first).shape
    if shape != ():
        raise ValueError(f"per_example_loss: expected a scalar for one example, got shape {shape}")
    return n, size


def _chunk_grads(apply_fn, per_example_loss, params):
    """``(x_c, y_c) ->`` the per-example gradients of a chunk (``vmap`` of ``grad``)."""
    one = jax.grad(functools.partial(_example_loss, apply_fn, per_example_loss))
    return lambda x, y: jax.vmap(one, in_axes=(None, 0, 0))(params, x, y)


def _sq_norms(tree):
    """``Σ_leaves Σ_coords a_i²`` per example (leading axis): ``(n,)``."""
    return sum(jnp.sum(jnp.reshape(jnp.square(a), (jnp.shape(a)[0], -1)), axis=1) for a in jax.tree.leaves(tree))


# -- public ----------------------------------------------------------------------------------------------------

def per_example_grads(apply_fn: Callable, per_example_loss: Callable, params: PyTree, x: PyTree, y: PyTree, *,
                      chunk_size: int | None = None) -> PyTree:
    """``g_i = ∇_θ ℓ(apply_fn(θ, x_i[None])[0], y_i)`` for every example ``i``: a pytree like ``params``
    with a leading axis ``n`` on every leaf.

    ``x``, ``y``: arrays (or pytrees) with a leading example axis ``n``; ``chunk_size``: examples per
    ``vmap`` of ``grad`` (``None``: all at once; see the module docstring). The gradients of all ``n``
    examples are returned, so their memory is ``n`` times that of ``params``; for norms or the noise
    scale alone use :func:`per_example_grad_norms` / :func:`model_gradient_noise_scale`, which keep one
    chunk at a time.
    """
    n, size = _check_model(apply_fn, per_example_loss, params, x, y, chunk_size)
    return jit_when_eager(_per_example_grads, apply_fn, per_example_loss, params, x, y, n, size)


def _per_example_grads(apply_fn, per_example_loss, params, x, y, n, size):
    # one compiled program when called eagerly (jaxlearn._compile): 60 compilations otherwise
    return _map_chunks(_chunk_grads(apply_fn, per_example_loss, params), x, y, n, size)


def per_example_grad_norms(apply_fn: Callable, per_example_loss: Callable, params: PyTree, x: PyTree, y: PyTree, *,
                           chunk_size: int | None = None) -> Array:
    """``‖g_i‖₂`` over all leaves of the per-example gradient (:func:`per_example_grads`), shape ``(n,)``;
    only one chunk's gradients exist at a time."""
    n, size = _check_model(apply_fn, per_example_loss, params, x, y, chunk_size)
    return jit_when_eager(_per_example_grad_norms, apply_fn, per_example_loss, params, x, y, n, size)


def _per_example_grad_norms(apply_fn, per_example_loss, params, x, y, n, size):
    grads = _chunk_grads(apply_fn, per_example_loss, params)
    return _map_chunks(lambda xc, yc: jnp.sqrt(_sq_norms(grads(xc, yc))), x, y, n, size)


def _noise_scale(grad_sq_plugin, trace_cov, n):
    grad_sq = grad_sq_plugin - trace_cov / n
    return NoiseScale(grad_sq, trace_cov, trace_cov / grad_sq)


def gradient_noise_scale(per_example_grads: PyTree) -> NoiseScale:
    """Unbiased ``|G|²``, ``tr(Σ)`` and ``B_simple`` from ``n ≥ 2`` per-example gradients (a pytree
    with a leading axis ``n``, e.g. from :func:`per_example_grads`).

    ``trace_cov = tr(Σ̂) = (1/(n−1)) Σ_i |g_i − Ĝ|²`` and ``grad_sq = |Ĝ|² − tr(Σ̂)/n``, both unbiased
    for i.i.d. examples: the plug-in ``|Ĝ|²`` is biased upward by ``tr(Σ)/n`` (``E|G_B|² = |G|² + tr(Σ)/B``,
    McCandlish et al. 2018, App. A.1; the estimate equals :func:`noise_scale_from_norms` with
    ``B_small = 1``, ``B_big = n``). ``b_simple = trace_cov / grad_sq`` (eq. 2.8). Returns scalars.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> grads = {"w": jnp.array([[1.0, 0.0], [3.0, 0.0]])}     # two per-example gradients
        >>> ns = an.gradient_noise_scale(grads)
        >>> float(ns.trace_cov), float(ns.grad_sq), round(float(ns.b_simple), 4)
        (2.0, 3.0, 0.6667)
    """
    n = _check_grads("per_example_grads", per_example_grads, minimum=2)
    return jit_when_eager(_gradient_noise_scale, per_example_grads, n)


def _gradient_noise_scale(per_example_grads, n):
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), per_example_grads)
    deviations = jax.tree.map(lambda g, m: g - m, per_example_grads, mean)
    trace_cov = jnp.sum(_sq_norms(deviations)) / (n - 1)
    return _noise_scale(optax.tree_utils.tree_norm(mean, squared=True), trace_cov, n)


def model_gradient_noise_scale(apply_fn: Callable, per_example_loss: Callable, params: PyTree, x: PyTree, y: PyTree, *,
                               chunk_size: int | None = None) -> NoiseScale:
    """:func:`gradient_noise_scale` of the per-example gradients of the ``n ≥ 2`` examples ``(x, y)``
    (conventions of :func:`per_example_grads`), computed chunk by chunk without holding all gradients:
    a first pass accumulates ``Ĝ``, a second ``Σ_i |g_i − Ĝ|²`` (two passes, not ``Σ|g_i|² − n|Ĝ|²``,
    whose cancellation loses the covariance when the mean dominates)."""
    n, size = _check_model(apply_fn, per_example_loss, params, x, y, chunk_size)
    if n < 2:
        raise ValueError(f"x: expected at least 2 examples for a gradient covariance, got {n}")
    return jit_when_eager(_model_gradient_noise_scale, apply_fn, per_example_loss, params, x, y, n, size)


def _model_gradient_noise_scale(apply_fn, per_example_loss, params, x, y, n, size):
    example_losses = jax.vmap(functools.partial(_example_loss, apply_fn, per_example_loss), in_axes=(None, 0, 0))

    def chunk_grad_sum(xc, yc, mask):  # Σ_i∈chunk g_i / n by one backward pass of the masked sum
        return jax.grad(lambda p: jnp.sum(jnp.where(mask, example_losses(p, xc, yc), 0.0)) / n)(params)

    mean = _sum_chunks(chunk_grad_sum, x, y, n, size)
    grads = _chunk_grads(apply_fn, per_example_loss, params)

    def chunk_deviation(xc, yc, mask):
        deviations = jax.tree.map(lambda g, m: g - m, grads(xc, yc), mean)
        return jnp.sum(jnp.where(mask, _sq_norms(deviations), 0.0))

    trace_cov = _sum_chunks(chunk_deviation, x, y, n, size) / (n - 1)
    return _noise_scale(optax.tree_utils.tree_norm(mean, squared=True), trace_cov, n)


def _check_batch_sizes(b_small, b_big) -> None:
    for name, b in (("b_small", b_small), ("b_big", b_big)):
        if is_real(b) and not b > 0:
            raise ValueError(f"{name}: expected a positive batch size, got {b!r}")
    if is_real(b_small) and is_real(b_big) and not b_big > b_small:
        raise ValueError(f"b_big: expected a batch size larger than b_small={b_small!r}, got {b_big!r}")


def noise_scale_from_norms(g_small_sq: ArrayLike, g_big_sq: ArrayLike, b_small: ArrayLike,
                           b_big: ArrayLike) -> NoiseScale:
    """Unbiased ``|G|²`` and ``tr(Σ)`` from the squared norms of the mean gradients of two batch sizes
    (McCandlish et al. 2018, App. A.1).

    ``g_small_sq = |G_{B_small}|²``, ``g_big_sq = |G_{B_big}|²`` with ``0 < b_small < b_big``. Since
    ``E|G_B|² = |G|² + tr(Σ)/B``,

        |G|² ≈ (B_big |G_Bbig|² − B_small |G_Bsmall|²) / (B_big − B_small),
        tr(Σ) ≈ (|G_Bsmall|² − |G_Bbig|²) / (1/B_small − 1/B_big),

    unbiased (exact when fed the expectations); ``b_simple = tr(Σ)/|G|²``. Arrays broadcast
    elementwise; batch sizes that are Python numbers are checked, traced ones are not.
    """
    _check_batch_sizes(b_small, b_big)
    dtype = jnp.result_type(g_small_sq, g_big_sq, float)
    g_small_sq, g_big_sq, b_small, b_big = (jnp.asarray(a, dtype) for a in (g_small_sq, g_big_sq, b_small, b_big))
    grad_sq = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace_cov = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    return NoiseScale(grad_sq, trace_cov, trace_cov / grad_sq)


def gradient_snr(per_example_grads: PyTree) -> GradientSNR:
    """Gradient signal-to-noise ratio from ``n ≥ 2`` per-example gradients (a pytree, leading axis ``n``).

    Per parameter ``j`` (Liu et al. 2020, "Understanding Why Neural Networks Generalize Well Through
    GSNR of Parameters", ICLR, arXiv:2001.07384: the GSNR ``r_j = g̃_j² / ρ_j²`` of a parameter is the
    squared mean of its per-example gradient over that gradient's variance, over the data distribution):
    ``SNR_j = Ĝ_j² / Var̂_j`` with ``Ĝ_j = (1/n) Σ_i g_ij`` and the
    unbiased ``Var̂_j = (1/(n−1)) Σ_i (g_ij − Ĝ_j)²``. A coordinate of zero variance gives ``inf`` (``nan``
    if its mean is also zero), as IEEE division does. ``overall = Σ_j Ĝ_j² / Σ_j Var̂_j = |Ĝ|² / tr(Σ̂)``:
    the ratio of the summed numerators and denominators, i.e. the plug-in ``1/B_simple`` at batch size 1
    (biased upward by ``1/n``, see :func:`gradient_noise_scale`).
    """
    _check_grads("per_example_grads", per_example_grads, minimum=2)
    signal = jax.tree.map(lambda g: jnp.square(jnp.mean(g, axis=0)), per_example_grads)
    noise = jax.tree.map(lambda g: jnp.var(g, axis=0, ddof=1), per_example_grads)
    per_parameter = jax.tree.map(jnp.divide, signal, noise)
    return GradientSNR(per_parameter, optax.tree_utils.tree_sum(signal) / optax.tree_utils.tree_sum(noise))
