"""Sharpness-aware minimization (SAM) as a gradient estimator for :func:`jaxlearn.train.make_step`
(by name: ``rules.estimator("sam", rho=0.05)``; also public as ``jaxlearn.landscape.sam``).

SAM (Foret, Kleiner, Mobahi & Neyshabur 2021, "Sharpness-Aware Minimization for Efficiently
Improving Generalization", §2) minimizes ``max_{‖ε‖_p ≤ ρ} L(w + ε)``. Linearizing ``L`` around
``w`` gives the worst-case perturbation in closed form (their eq. 2; ``1/p + 1/q = 1``)

    ε̂(w) = ρ · sign(g) |g|^{q−1} / (‖g‖_q^q)^{1/p},      g = ∇L(w),

i.e. ``ε̂ = ρ g/‖g‖₂`` for ``p = 2`` and ``ε̂ = ρ sign(g)`` for ``p = ∞``, and, dropping the term
with the Jacobian of ``ε̂`` (their eqs. 3–4), the SAM gradient ``∇L(w)|_{w + ε̂(w)}``.

ASAM (Kwon, Kim, Park & Choi 2021, "ASAM: Adaptive Sharpness-Aware Minimization for
Scale-Invariant Learning of Deep Neural Networks", §3) measures the ball in the rescaled
coordinates ``T_w⁻¹ ε`` with the normalization operator ``T_w = diag(|w|) + η I``: the
linearized maximizer over ``‖T_w⁻¹ ε‖_p ≤ ρ`` is ``ε̂ = T_w · ε̂_SAM(T_w g)``, e.g.
``ρ T_w² g / ‖T_w g‖₂`` for ``p = 2``. With ``η = 0`` it is invariant under the parameter
rescalings that leave a ReLU network's function unchanged.

Conventions: norms are over *all* parameters flattened (one global ``ε̂``, as in Foret et al.);
``ε̂ = 0`` where the gradient is exactly zero. ``rho`` (and ``eta``) may be traced arrays, so a
sweep over ``rho`` is one vmapped program; ``p`` and ``adaptive`` are static.

Relation to ``optax.contrib.sam``: optax implements SAM as an optimizer wrapper whose ``update``
alternates between an adversarial step (``w → w + ε̂``) and the outer step, so one SAM update takes
*two* calls (two train steps with our loop, each logging a loss at a different point), or needs a
``grad_fn`` argument that :func:`~jaxlearn.train.make_step` does not pass. Here SAM is a gradient
estimator: one train step = one SAM update with two gradient evaluations, the logged loss and the
model state (e.g. BatchNorm statistics) are those at the unperturbed ``w``, and any optax optimizer
(momentum, Adam, schedules) consumes the SAM gradient. ``tests/rules/test_sharpness_aware.py`` checks that
``sam(rho)`` + ``optax.sgd`` for ``n`` steps equals ``optax.contrib.sam(sgd, chain(normalize(),
sgd(rho)))`` for ``2n`` updates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn._checks import is_real
from jaxlearn._types import PyTree, Scalar
from jaxlearn.train.pytrees import check_like
from jaxlearn.train.step import Estimator, backprop

__all__ = ["sam_perturbation", "sam"]


def _check_options(rho, p, eta) -> None:
    if is_real(rho) and not rho >= 0:
        raise ValueError(f"rho: expected a radius >= 0, got {rho}")
    if p not in (2, np.inf):
        raise ValueError(f"p: expected 2 or numpy.inf (the norm of the perturbation ball), got {p!r}")
    if is_real(eta) and not eta >= 0:
        raise ValueError(f"eta: expected an offset >= 0 for the ASAM operator |w| + eta, got {eta}")


def sam_perturbation(grads: PyTree, rho: Scalar, *, p: float = 2, adaptive: bool = False, params: PyTree | None = None,
                     eta: Scalar = 0.01) -> PyTree:
    """The first-order worst-case perturbation ``ε̂`` (a pytree like ``grads``) of Foret et al.
    2021, eq. 2, or of ASAM (Kwon et al. 2021, §3) when ``adaptive``.

    ``grads``: ``∇L(w)``, any pytree of float arrays; ``rho``: radius (scalar, may be traced);
    ``p``: ``2`` or ``numpy.inf``. Non-adaptive: ``ε̂ = ρ g/‖g‖₂`` (``p=2``) or ``ρ sign(g)``
    (``p=∞``), the maximizer of ``⟨g, ε⟩`` over ``‖ε‖_p ≤ ρ`` (value ``ρ‖g‖_q``). Adaptive (needs
    ``params`` ``w``, like ``grads``): with ``T = |w| + eta`` elementwise and ``u = T g``,
    ``ε̂ = T · ρ u/‖u‖₂`` (``p=2``) or ``T · ρ sign(u)`` (``p=∞``), the maximizer of ``⟨g, ε⟩`` over
    ``‖ε/T‖_p ≤ ρ`` (value ``ρ‖T g‖_q``). Norms are global over all leaves; zero gradient → ``ε̂ = 0``.
    """
    _check_options(rho, p, eta)
    if adaptive:
        if params is None:
            raise ValueError("params: adaptive (ASAM) perturbations need the parameters w for T_w = |w| + eta")
        check_like("params", params, grads, ref_name="grads")
        scale = jax.tree.map(lambda w: jnp.abs(w) + jnp.asarray(eta, w.dtype), params)
        grads = jax.tree.map(jnp.multiply, scale, grads)
    if p == 2:
        norm = optax.tree_utils.tree_norm(grads)
        factor = jnp.where(norm > 0, rho / jnp.where(norm > 0, norm, 1.0), 0.0)
        eps = jax.tree.map(lambda g: (factor * g).astype(g.dtype), grads)
    else:
        eps = jax.tree.map(lambda g: (rho * jnp.sign(g)).astype(g.dtype), grads)
    if adaptive:
        eps = jax.tree.map(jnp.multiply, scale, eps)
    return eps


def sam(rho: Scalar, *, p: float = 2, adaptive: bool = False, eta: Scalar = 0.01,
        estimator: Estimator = backprop) -> Estimator:
    """SAM (Foret et al. 2021, eqs. 2–4) or ASAM (``adaptive``; Kwon et al. 2021) as a gradient
    estimator for ``train.make_step(..., grad_estimator=sam(rho))``.

    Returns ``estimator(objective, params, key) -> ((loss, aux), grads)`` (``objective(params) ->
    (loss, aux)``) that

    1. calls the base ``estimator`` at ``w``: ``((loss, aux), g)``;
    2. forms ``ε̂ = sam_perturbation(g, rho, p=p, adaptive=adaptive, params=w, eta=eta)``;
    3. calls the base ``estimator`` at ``w + ε̂`` and returns its gradient, with the ``(loss, aux)``
       of step 1 (the unperturbed loss and model state; the perturbed ones are discarded).

    The gradient of ``ε̂`` with respect to ``w`` is not taken (eq. 4). Both evaluations see the same
    batch and the same model key (the same dropout mask); a random base estimator gets independent
    keys ``fold_in(key, 0)`` and ``fold_in(key, 1)``. ``rho = 0`` gives the base estimator's
    gradient. See the module docstring for how this differs from ``optax.contrib.sam``.
    """
    _check_options(rho, p, eta)
    if not callable(estimator):
        raise TypeError(f"estimator: expected a gradient estimator (objective, params, key) -> ((loss, aux), grads), "
                        f"got {type(estimator).__name__}")

    def sam_estimator(objective, params, key):
        k_here, k_there = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        (loss, aux), grads = estimator(objective, params, k_here)
        eps = sam_perturbation(jax.lax.stop_gradient(grads), rho, p=p, adaptive=adaptive, params=params, eta=eta)
        perturbed = jax.tree.map(jnp.add, params, eps)
        _, sam_grads = estimator(objective, perturbed, k_there)
        return (loss, aux), sam_grads

    return sam_estimator
