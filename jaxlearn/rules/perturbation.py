"""Forward gradients: unbiased gradient estimates from forward-mode directional derivatives.

Weight perturbation (Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without
backpropagation", eq. (1)–(2)): for a tangent ``v`` with ``E[v vᵀ] = I`` (standard normal or
Rademacher entries, independent across all parameters),

    ``g(θ) = (∇f(θ) · v) v``,     ``E[g(θ)] = E[v vᵀ] ∇f(θ) = ∇f(θ)``,

where ``∇f · v`` is one ``jax.jvp`` (a forward pass, no backward pass). With ``K`` tangents the
estimate is their mean, ``ĝ = (1/K) Σ_k (∇f · v_k) v_k = (VᵀV / K) ∇f`` (rows of ``V``: the
flattened tangents), still unbiased, with variance ∝ ``1/K``.

Activity perturbation (Ren, Kornblith, Liao & Hinton 2023, "Scaling forward gradient with local
losses", §3, "activity perturbation"): perturb the outputs ``h_l`` of the blocks of a
:func:`~jaxlearn.rules.block_serial` network instead of the weights. One ``jvp`` along independent
``u_l ~ N(0, I)`` (shape of ``h_l``, all blocks including the output) gives
``d = Σ_l ⟨∂L/∂h_l, u_l⟩``; the activity-gradient estimate ``d u_l`` (unbiased for ``∂L/∂h_l``) is
then pushed through block ``l`` alone, ``Δθ_l = (∂h_l/∂θ_l)ᵀ (d u_l)``, with no signal between
blocks. Unbiased for ``∇_{θ_l} L`` because ``θ_l`` enters the loss only through ``h_l``. The
perturbation has ``width`` entries per example instead of ``|θ_l|``, which is why its variance is
lower. (Ren et al. add local losses; with the network's one loss this is their global variant.)

Both need forward mode through the whole model: a ``custom_vjp`` rule inside (feedback alignment,
few-bit backward) makes them raise a one-line error naming it (:func:`jaxlearn.rules.forward_mode_safe`).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp

from jaxlearn import _random
from jaxlearn._checks import check_int
from jaxlearn._jaxpr.forward_mode import require_forward_mode
from jaxlearn._types import Array, PyTree
from jaxlearn.rules.blocks import BlockRequest, block_request_errors, routed_value_and_grad
from jaxlearn.train.step import Estimator

__all__ = [
    "DISTRIBUTIONS", "forward_gradient", "forward_gradient_from_tangents", "sample_tangents",
    "activity_forward_gradient",
]

DISTRIBUTIONS = ("normal", "rademacher")


def _check_num(who, num_tangents):
    check_int(num_tangents, "num_tangents", minimum=1, where=who)


def _check_distribution(who, distribution):
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"{who}: distribution must be one of {list(DISTRIBUTIONS)}, got {distribution!r}")


def sample_tangents(key: jax.Array, params: PyTree, num_tangents: int,
                    distribution: Literal["normal", "rademacher"] = "normal") -> PyTree:
    """``num_tangents`` tangents like ``params``: a pytree whose leaves have a leading axis of size
    ``num_tangents``, entries i.i.d. standard normal or Rademacher (±1), so ``E[v vᵀ] = I``."""
    _check_num("sample_tangents", num_tangents)
    _check_distribution("sample_tangents", distribution)
    leaves, treedef = jax.tree.flatten(params)
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"params: forward gradients need floating-point parameters, got a leaf of dtype "
                             f"{jnp.result_type(leaf)}")
    # One draw for all leaves, then cut: each random-number call costs compile time of its own.
    sizes = [int(jnp.size(leaf)) for leaf in leaves]
    dtype = jnp.result_type(*leaves)
    draw = _random.normal if distribution == "normal" else _random.rademacher
    flat = draw(key, (num_tangents, sum(sizes)), dtype=dtype)
    cuts = [sum(sizes[:i]) for i in range(1, len(sizes))]
    tangents = [part.reshape((num_tangents,) + jnp.shape(leaf)).astype(jnp.result_type(leaf))
                for part, leaf in zip(jnp.split(flat, cuts, axis=1), leaves)]
    return jax.tree.unflatten(treedef, tangents)


def forward_gradient_from_tangents(objective: Callable[[PyTree], tuple[Array, Any]], params: PyTree,
                                   tangents: PyTree) -> tuple[tuple[Array, Any], PyTree]:
    """``((loss, aux), ĝ)`` with ``ĝ = (1/K) Σ_k (∇f · v_k) v_k`` for the given tangents.

    ``objective(params) -> (loss, aux)`` (scalar loss); ``tangents``: like ``params`` with a leading
    axis ``K`` on every leaf. ``K`` jvps are vmapped: one primal pass, ``K`` tangent passes.
    """
    def directional(v):
        loss, slope, aux = jax.jvp(objective, (params,), (v,), has_aux=True)
        return loss, slope, aux

    loss, slopes, aux = jax.vmap(directional, out_axes=(None, 0, None))(tangents)
    num = jax.tree.leaves(tangents)[0].shape[0]
    grads = jax.tree.map(lambda V, p: (jnp.tensordot(slopes.astype(V.dtype), V, 1) / num).astype(jnp.result_type(p)),
                         tangents, params)
    return (loss, aux), grads


def forward_gradient(num_tangents: int = 1, distribution: Literal["normal", "rademacher"] = "normal") -> Estimator:
    """The weight-perturbed forward gradient (Baydin et al. 2022, eq. (2); module docstring) as a
    gradient estimator ``estimator(objective, params, key) -> ((loss, aux), grads)``.

    Each call draws ``num_tangents`` fresh tangents from ``key`` (``distribution``: ``"normal"`` or
    ``"rademacher"``) and returns their mean estimate; the loss and aux are exact. Raises a one-line
    error at trace time if a ``custom_vjp`` rule in the model blocks forward mode.
    """
    _check_num("forward_gradient", num_tangents)
    _check_distribution("forward_gradient", distribution)

    def estimator(objective, params, key):
        require_forward_mode("forward_gradient", lambda p: objective(p)[0], params)
        tangents = sample_tangents(key, params, num_tangents, distribution)
        return forward_gradient_from_tangents(objective, params, tangents)

    return estimator


def activity_forward_gradient(num_tangents: int = 1) -> Estimator:
    """The activity-perturbed forward gradient (Ren et al. 2023, §3; module docstring) as a gradient
    estimator for a :func:`~jaxlearn.rules.block_serial` network.

    With ``K = num_tangents`` perturbations ``u_{l,k} ~ N(0, I)`` of every block output (drawn from
    ``key``) and their directional derivatives ``d_k = Σ_l ⟨∂L/∂h_l, u_{l,k}⟩`` (one vmapped
    ``jvp``), block ``l``'s estimate is ``Δθ_l = (∂h_l/∂θ_l)ᵀ ((1/K) Σ_k d_k u_{l,k})``, computed by
    differentiating each block on its own (no backprop between blocks). The loss and aux are exact.
    """
    _check_num("activity_forward_gradient", num_tangents)

    def estimator(objective, params, key):
        keys = jax.random.split(key, num_tangents)
        t0 = jnp.zeros((num_tangents,), jnp.result_type(float))

        def perturbed(t):
            return objective(BlockRequest(params, (t, keys), "perturb"))

        with block_request_errors("activity_forward_gradient"):
            require_forward_mode("activity_forward_gradient", lambda t: perturbed(t)[0], t0)
            loss, slopes, aux = jax.vmap(lambda e: jax.jvp(perturbed, (t0,), (e,), has_aux=True),
                                         out_axes=(None, 0, None))(jnp.eye(num_tangents, dtype=t0.dtype))
        _, grads = routed_value_and_grad("activity_forward_gradient", objective, params, "local",
                                         (jax.lax.stop_gradient(slopes), keys))
        return (loss, aux), grads

    return estimator
