"""Sharpness: the top Hessian eigenvalue tracked during training, and SAM's first-order sharpness.

* :func:`top_eigenpair` — power iteration for the eigenvalue of largest magnitude of the Hessian
  (or Gauss–Newton matrix) of a loss, *warm-started* from a given vector, with a residual bound.
* :func:`track_sharpness` — train for ``num_steps`` steps inside ``lax.scan`` and every ``every``
  steps update ``λ_max`` by :func:`top_eigenpair` started from the previous top eigenvector (carried
  in the scan), so sharpness is a metric of the training loop with no host round-trip. This is
  the measurement behind the edge of stability (Cohen, Kaur, Li, Kolter & Talwalkar 2021,
  "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability", §3): under
  full-batch GD with step size ``η`` the sharpness rises ("progressive sharpening") to ``≈ 2/η``
  and hovers there.
* :func:`sam_sharpness` — ``max_{‖ε‖_p ≤ ρ} L(w + ε) − L(w)`` in SAM's first-order approximation
  ``L(w + ε̂) − L(w)`` (Foret et al. 2021, §2 and eq. 2); ASAM's adaptive version (Kwon et al. 2021).
* :func:`m_sharpness` — the mean of that sharpness over disjoint sub-batches of size ``m``, each
  with its own ``ε̂`` (Foret et al. 2021, §4.1, "m-sharpness").

Vectors are pytrees like ``params``, unit norm in the flat inner product (all leaves raveled, as in
:mod:`jaxlearn.landscape.spectrum`). All functions are pure and compose with ``jit`` (``loss``,
``num_iters``, ``num_steps``, ``every``, ``m``, ``p`` static, e.g. by closure) and ``vmap`` (over
params, seeds, learning rates or ``rho``).
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxlearn._checks import check_int, is_int
from jaxlearn._types import Array, PyTree, Scalar
from jaxlearn.landscape import curvature
from jaxlearn.landscape.objective import Loss, ModelObjective, as_loss_fn
from jaxlearn.rules.sharpness_aware import sam_perturbation
from jaxlearn.train.loop import train
from jaxlearn.train.losses import BatchMeanLoss, check_per_example_loss
from jaxlearn.train.pytrees import check_like
from jaxlearn.train.step import TrainState

__all__ = ["TopEigenpair", "random_unit_vector", "top_eigenpair", "track_sharpness", "sam_sharpness",
           "m_sharpness"]


class TopEigenpair(NamedTuple):
    """``value``: the Rayleigh quotient ``vᵀ M v`` (scalar); ``vector``: unit ``v`` (pytree like
    params); ``residual``: ``‖M v − value · v‖``. ``M`` symmetric has an eigenvalue within
    ``residual`` of ``value`` (Krylov–Weinstein bound; Parlett, "The Symmetric Eigenvalue Problem",
    §4.5), so it bounds the error of an unconverged iteration."""

    value: jax.Array
    vector: object
    residual: jax.Array


def random_unit_vector(key: jax.Array, params: PyTree) -> PyTree:
    """A Gaussian direction like ``params`` scaled to unit flat norm: a start vector for
    :func:`top_eigenpair` / :func:`track_sharpness`. Works under ``vmap`` over keys."""
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(key, flat.shape, flat.dtype)
    return unravel(v / jnp.linalg.norm(v))


def top_eigenpair(loss: Loss, params: PyTree, vector: PyTree, *, num_iters: int = 20, shift: Scalar = 0.0,
                  kind: Literal["hessian", "ggn"] = "hessian", block: PyTree | None = None) -> TopEigenpair:
    """``num_iters`` steps of power iteration on ``M + shift·I`` from ``vector``.

    ``loss``: a scalar ``loss_fn(params)`` or a :class:`~jaxlearn.landscape.objective.ModelObjective`;
    ``M``: its Hessian (``kind="hessian"``, products by forward-over-reverse
    :func:`~jaxlearn.landscape.curvature.hvp`) or Gauss–Newton matrix (``kind="ggn"``), on ``block``.
    ``vector``: a nonzero pytree like ``params`` (e.g. the previous call's ``.vector`` — a warm
    start — or :func:`random_unit_vector`); it is normalized first. Iterates
    ``v ← (M + σI) v / ‖(M + σI) v‖`` and returns :class:`TopEigenpair` with ``value = vᵀ M v`` (of
    ``M``, not of the shifted matrix): ``num_iters + 1`` matrix-vector products.

    Power iteration converges to the eigenvalue of largest *magnitude* of ``M + σI``, with error of
    the value ``O((λ₂/λ₁)^{2 num_iters})`` in the magnitude ratio of the top two. With ``σ = 0``
    that is ``λ_max`` only while ``λ_max > |λ_min|`` (usually true for trained networks; check with
    ``spectrum.top_eigenvalues(..., which="smallest")``). If negative curvature dominates, pass a
    shift ``σ > −(λ_max + λ_min)/2`` (e.g. ``σ = |λ_min|``): then ``λ_max + σ`` is the dominant
    eigenvalue of ``M + σI`` and ``value`` is ``λ_max`` (slower: the ratio becomes
    ``(λ₂ + σ)/(λ_max + σ)``). ``num_iters`` is a static int; ``shift`` may be traced.
    """
    check_int(num_iters, "num_iters", minimum=1)
    check_like("vector", vector, params)
    flat, unravel = ravel_pytree(params)
    op = curvature.operator(loss, params, kind=kind, block=block)

    def matvec(v):
        return ravel_pytree(op(unravel(v)))[0].astype(flat.dtype)

    def normalise(v):
        norm = jnp.linalg.norm(v)
        return v / jnp.where(norm > 0, norm, 1.0)

    v0 = normalise(ravel_pytree(vector)[0].astype(flat.dtype))
    shift = jnp.asarray(shift, flat.dtype)
    v = lax.fori_loop(0, num_iters, lambda _, v: normalise(matvec(v) + shift * v), v0)
    mv = matvec(v)
    value = jnp.vdot(v, mv)
    return TopEigenpair(value, unravel(v), jnp.linalg.norm(mv - value * v))


def track_sharpness(state: TrainState, vector: PyTree, step_fn: Callable, batch_fn: Callable, loss: Loss,
                    num_steps: int, *, every: int, num_iters: int = 20, shift: Scalar = 0.0,
                    kind: Literal["hessian", "ggn"] = "hessian") -> tuple[TrainState, PyTree, dict]:
    """Trains ``num_steps`` steps and measures ``λ_max`` every ``every`` steps, all in ``lax.scan``.

    ``state``: a :class:`~jaxlearn.train.TrainState`; ``step_fn``/``batch_fn``: as in
    :func:`jaxlearn.train.train`; ``loss``: the objective whose curvature is tracked, as a function
    of params (``loss_fn(params)`` or a ModelObjective, e.g. the full-batch training loss for edge of
    stability studies); ``vector``: the start vector of the power iteration (pytree like params,
    e.g. :func:`random_unit_vector` or a previous call's returned vector).

    An outer scan over ``num_steps // every`` blocks runs ``every`` training steps
    (:func:`jaxlearn.train.train`), then :func:`top_eigenpair` with ``num_iters`` iterations
    warm-started from the previous block's top eigenvector; the vector is carried by the scan, so
    consecutive calls (segments) continue the warm start. Since the Hessian changes little over
    ``every`` steps, a few iterations per block track ``λ_max`` that a cold start would need many
    for. Returns ``(state, vector, metrics)`` with ``metrics["train"]`` the per-step metrics
    (leading axis ``num_steps``), ``metrics["lambda_max"]`` and ``metrics["residual"]`` of shape
    ``(num_steps // every,)`` (after steps ``every, 2·every, …`` of this call). ``num_steps``,
    ``every``, ``num_iters`` static; see :func:`top_eigenpair` for ``shift``, ``kind`` and the
    largest-magnitude caveat.
    """
    check_int(every, "every", minimum=1)
    check_int(num_iters, "num_iters", minimum=1)
    if not (is_int(num_steps) and num_steps >= 0 and num_steps % every == 0):
        raise ValueError(f"num_steps: expected a non-negative multiple of every={every}, got {num_steps!r}")
    check_like("vector", vector, state.params)

    def block(carry, _):
        state, vector = carry
        state, metrics = train(state, step_fn, batch_fn, every)
        pair = top_eigenpair(loss, state.params, vector, num_iters=num_iters, shift=shift, kind=kind)
        return (state, pair.vector), (metrics["train"], pair.value, pair.residual)

    (state, vector), (step_metrics, values, residuals) = lax.scan(block, (state, vector), None,
                                                                  length=num_steps // every)
    step_metrics = jax.tree.map(lambda a: a.reshape((num_steps,) + a.shape[2:]), step_metrics)
    return state, vector, {"train": step_metrics, "lambda_max": values, "residual": residuals}


def sam_sharpness(loss: Loss, params: PyTree, rho: Scalar, *, p: float = 2, adaptive: bool = False,
                  eta: Scalar = 0.01) -> Array:
    """First-order SAM sharpness ``L(w + ε̂) − L(w)`` (a scalar) of ``loss`` at ``params``.

    Foret et al. 2021 (§2) define the sharpness ``max_{‖ε‖_p ≤ ρ} L(w + ε) − L(w)`` and
    approximate the maximizer by ``ε̂ = ρ g/‖g‖₂`` (``p=2``) / ``ρ sign(g)`` (``p=∞``), ``g = ∇L(w)``
    (eq. 2; :func:`~jaxlearn.rules.sharpness_aware.sam_perturbation`). ``ε̂`` is feasible, so this
    under-estimates the true sharpness, by ``O(ρ³)`` for smooth ``L`` with ``g ≠ 0``. ``adaptive``:
    ASAM's ``ε̂`` over ``‖ε/(|w| + η)‖_p ≤ ρ`` (Kwon et al. 2021, §3), invariant for ``η = 0`` under
    rescalings that leave the network function unchanged. ``loss``: ``loss_fn(params)`` or a
    ModelObjective; ``rho``/``eta`` may be traced (differentiable in ``rho``). A difference of two
    loss values: its absolute rounding error is ``~eps·|L|`` (``~1e-7·|L|`` in float32).
    """
    loss_fn = as_loss_fn(loss)
    value, grads = jax.value_and_grad(loss_fn)(params)
    eps = sam_perturbation(grads, rho, p=p, adaptive=adaptive, params=params, eta=eta)
    return loss_fn(jax.tree.map(jnp.add, params, eps)) - value


def _batch_loss(loss) -> Callable:
    if isinstance(loss, ModelObjective):
        check_per_example_loss("loss.per_example_loss", loss.per_example_loss)
        batch_mean = BatchMeanLoss(loss.per_example_loss)

        def batch_loss(params, batch):
            x, y = batch
            return batch_mean(loss.apply_fn(params, x), y)

        return batch_loss
    if callable(loss):
        return loss
    raise TypeError(f"loss: expected loss_fn(params, batch) or a ModelObjective, got {type(loss).__name__}")


def m_sharpness(loss: ModelObjective | Callable[[PyTree, PyTree], Array], params: PyTree, rho: Scalar, m: int,
                batch: PyTree | None = None, *, p: float = 2, adaptive: bool = False, eta: Scalar = 0.01) -> Array:
    """m-sharpness (Foret et al. 2021, §4.1): the first-order SAM sharpness averaged over disjoint
    sub-batches of ``m`` examples, each with its own ``ε̂``,

        S_m(w) = (1/K) Σ_k [L_{B_k}(w + ε̂_k) − L_{B_k}(w)],   ε̂_k = ε̂(∇L_{B_k}(w)),   K = n/m,

    with ``B_k`` the consecutive rows ``k·m … (k+1)·m − 1`` of ``batch``. ``loss``: either
    ``loss_fn(params, batch) -> scalar`` (the mean loss of a batch of any size) with ``batch`` a
    pytree of arrays with a common leading axis ``n``, or a ModelObjective (per-example mean of
    ``per_example_loss``; ``batch`` defaults to its ``data``, chunking ignored). ``m`` must divide
    ``n``; ``m = n`` is :func:`sam_sharpness` of the whole batch. Sub-batches run under ``vmap``
    (memory: ``K`` per-sub-batch gradients at once). ``p``, ``adaptive``, ``eta`` as in
    :func:`sam_sharpness`.
    """
    batch_loss = _batch_loss(loss)
    if batch is None:
        if not isinstance(loss, ModelObjective):
            raise ValueError("batch: required unless loss is a ModelObjective (whose data is used)")
        batch = loss.data
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"batch: expected arrays with one common leading (example) axis, got leading sizes "
                         f"{sorted(map(str, sizes))}")
    n = sizes.pop()
    if not (is_int(m) and m >= 1 and n % m == 0):
        raise ValueError(f"m: expected a positive int dividing the batch size {n}, got {m!r}")
    sub_batches = jax.tree.map(lambda a: a.reshape((n // m, m) + a.shape[1:]), batch)

    def one(sub_batch):
        return sam_sharpness(lambda w: batch_loss(w, sub_batch), params, rho, p=p, adaptive=adaptive, eta=eta)

    return jnp.mean(jax.vmap(one)(sub_batches))
