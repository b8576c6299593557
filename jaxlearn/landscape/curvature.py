"""Curvature operators: Hessian- and Gauss–Newton-vector products, optionally on a block.

* :func:`hvp` — ``H v`` with ``H = ∇²L(θ)``, by forward-over-reverse (``jvp`` of ``grad``: one
  forward and one backward pass, no Hessian formed; Pearlmutter 1994). Where forward mode is
  unavailable (a ``custom_vjp`` rule that ``grad`` leaves in the program) it falls back to
  reverse-over-reverse (``grad`` of ``⟨∇L, v⟩``), decided at trace time. Through a ``custom_vjp``
  rule the "Hessian" is the derivative of the rule's backward pass (for feedback alignment, of
  the surrogate gradient).
* :func:`ggn_vp` — ``G v`` with the generalized Gauss–Newton matrix of a model objective
  (Schraudolph 2002; Martens 2020, "New insights and perspectives on the natural gradient method")

      G = (1/N) Σ_i J_iᵀ H_i J_i,     J_i = ∂f(θ, x_i)/∂θ,   H_i = ∂²ℓ/∂f² at f(θ, x_i),

  by ``jvp`` (J v), the output-Hessian-vector product ``H_i u`` the per-example loss declares
  (``loss.output_hvp``, :class:`jaxlearn.train.PerExampleLoss`; closed forms: softmax cross-entropy
  ``diag(p) − ppᵀ``, MSE ``½·mean_k``: ``I/K``) or, for a loss that declares none, the exact
  ``jvp`` of its ``grad`` (:func:`jaxlearn.train.losses.output_hessian_vp`), and ``vjp`` (Jᵀ u). For
  these two losses G equals the Fisher information of the model's predictive distribution (the
  "true" Fisher; Martens 2020, §9.2).
* :func:`quadratic_form` — ``vᵀ M v`` alone, cheaper than ``⟨v, M v⟩``: for the Hessian the second
  directional derivative ``d²/dt² L(θ + t v)`` at ``t = 0`` by forward-over-forward (two ``jvp``
  passes, no backward pass), for the Gauss–Newton matrix ``(1/N) Σ_i (J_i v)ᵀ H_i (J_i v)`` from a
  single ``jvp``. What Hutchinson's trace estimator needs.
* ``block`` — a pytree of bools like ``params`` (True: in the block). The operator becomes
  ``P M P`` with ``P`` the coordinate projection :func:`restrict`, i.e. the Hessian/GGN of one
  layer or module (its eigenvalues are the sub-matrix's, plus zeros).

Everything is a pure function of ``(loss, params, v)``: ``jit``/``vmap`` apply (e.g. ``vmap`` over
checkpoints or probe vectors). Model objectives are evaluated chunk by chunk, so memory stays
bounded by one chunk.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import optax

from jaxlearn._types import Array, PyTree
from jaxlearn.landscape.objective import Loss, ModelObjective, as_loss_fn, chunk_loss, chunked_sum
from jaxlearn.train.losses import output_hessian_vp
from jaxlearn.train.pytrees import check_like

__all__ = ["hvp", "ggn_vp", "quadratic_form", "operator", "restrict", "project", "has_forward_mode"]


def restrict(v: PyTree, block: PyTree | None) -> PyTree:
    """``v`` restricted to a parameter block: the leaves (or entries) outside ``block`` set to zero
    (the coordinate projection ``P v``); ``block=None`` keeps all. ``block``: a pytree of bools like
    ``v`` (leaves or arrays broadcastable to the leaves)."""
    if block is None:
        return v
    return jax.tree.map(lambda x, keep: jnp.where(keep, x, jnp.zeros_like(x)), v, block)


def project(v, block):
    """Deprecated alias of :func:`restrict` (renamed so that ``project`` means only
    :func:`jaxlearn.landscape.project`, coordinates in a plane); removed in the next release."""
    warnings.warn("jaxlearn.landscape.curvature.project is deprecated: use jaxlearn.landscape.curvature.restrict "
                  "(landscape.restrict)", DeprecationWarning, stacklevel=2)
    return restrict(v, block)


def has_forward_mode(fn: Callable, *args) -> bool:
    """Whether ``jax.jvp`` can differentiate ``fn(*args)``: False when a ``custom_vjp`` rule would
    have to be differentiated forward (:func:`jaxlearn.rules.forward_mode_safe`, tracing only, fine
    under ``jit``). (``grad`` of a ``custom_vjp`` function is ordinary code, so ``jvp`` of ``grad``
    — an HVP — works even through such rules.)"""
    from jaxlearn._jaxpr.forward_mode import forward_mode_safe

    return forward_mode_safe(fn, *args).safe


def check_kind(kind) -> None:
    """``kind`` is ``"hessian"`` or ``"ggn"`` (a ValueError naming ``kind`` otherwise)."""
    if kind not in ("hessian", "ggn"):
        raise ValueError(f"kind: expected 'hessian' or 'ggn', got {kind!r}")


def _check_objective(objective) -> None:
    if not isinstance(objective, ModelObjective):
        raise TypeError(f"objective: Gauss–Newton products need a ModelObjective (outputs and a per-example loss), "
                        f"got {type(objective).__name__}")


def check_scalar_loss(loss_fn, params):
    """``loss_fn(params)`` returns a scalar (checked by shape evaluation, nothing computed)."""
    out = jax.eval_shape(loss_fn, params)
    if out.shape != ():
        raise ValueError(f"loss_fn: must return a scalar, got shape {out.shape}")


def _hvp_scalar(loss_fn: Callable, params, v):
    grad = jax.grad(loss_fn)
    if has_forward_mode(grad, params):
        return jax.jvp(grad, (params,), (v,))[1]
    return jax.grad(lambda p: optax.tree_utils.tree_vdot(grad(p), v))(params)


def hvp(loss: Loss, params: PyTree, v: PyTree, *, block: PyTree | None = None) -> PyTree:
    """``H v`` (a pytree like ``params``) for ``loss`` = a scalar ``loss_fn(params)`` or a
    :class:`~jaxlearn.landscape.objective.ModelObjective` (accumulated over chunks).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> loss = lambda p: p[0] ** 2 + 3 * p[0] * p[1]          # H = [[2, 3], [3, 0]]
        >>> ls.hvp(loss, jnp.zeros(2), jnp.array([1.0, 0.0])).tolist()
        [2.0, 3.0]
    """
    check_like("v", v, params)
    v = restrict(v, block)
    if isinstance(loss, ModelObjective):
        def chunk(x, y, w):
            return _hvp_scalar(lambda p: chunk_loss(loss, p, x, y, w), params, v)

        return restrict(chunked_sum(loss, chunk), block)
    loss_fn = as_loss_fn(loss)
    check_scalar_loss(loss_fn, params)
    return restrict(_hvp_scalar(loss_fn, params, v), block)


def _output_hvp(per_example_loss: Callable, outputs, targets, u):
    """``H_i u_i`` per example (leading axis): the Hessian of the per-example loss w.r.t. the outputs,
    as the loss declares it (else the exact jvp of its grad)."""
    return jax.vmap(functools.partial(output_hessian_vp, per_example_loss))(outputs, targets, u)


def ggn_vp(objective: ModelObjective, params: PyTree, v: PyTree, *, block: PyTree | None = None) -> PyTree:
    """``G v``, the generalized Gauss–Newton (= true Fisher for softmax cross-entropy and MSE)
    times ``v``; see the module docstring. Models without forward mode (``custom_vjp`` rules)
    get ``J v`` as the transpose of their (rule-defined) ``vjp``."""
    _check_objective(objective)
    check_like("v", v, params)
    v = restrict(v, block)

    def chunk(x, y, w):
        def f(p):
            return objective.apply_fn(p, x)

        outputs, pullback = jax.vjp(f, params)
        jv = _output_jvp(f, params, v, (outputs, pullback))[1]
        hjv = _output_hvp(objective.per_example_loss, outputs, y, jv)
        weighted = hjv * w.reshape((-1,) + (1,) * (hjv.ndim - 1))
        return pullback(weighted.astype(outputs.dtype))[0]

    return restrict(chunked_sum(objective, chunk), block)


def _output_jvp(f, params, v, vjp=None):
    """``(f(params), J v)``: forward mode when the model has it, else the transpose of its ``vjp``
    (``vjp = (outputs, pullback)`` if already taken), which is what a ``custom_vjp`` rule defines."""
    if has_forward_mode(f, params):
        return jax.jvp(f, (params,), (v,))
    outputs, pullback = jax.vjp(f, params) if vjp is None else vjp
    return outputs, _transpose_vjp(pullback, outputs, v)


def _transpose_vjp(pullback, outputs, v):
    """``J v`` from the linear map ``u ↦ Jᵀu``: its transpose."""
    transpose = jax.linear_transpose(lambda u: pullback(u)[0], jax.ShapeDtypeStruct(outputs.shape, outputs.dtype))
    return transpose(v)[0]


def _second_directional(loss_fn: Callable, params, v):
    """``d²/dt² loss_fn(params + t v)`` at ``t = 0`` (= ``vᵀ H v``) by forward-over-forward."""
    def along(t):
        return loss_fn(jax.tree.map(lambda p, d: p + t.astype(p.dtype) * d.astype(p.dtype), params, v))

    def slope(t):
        return jax.jvp(along, (t,), (jnp.ones_like(t),))[1]

    t0 = jnp.zeros((), jnp.result_type(float))
    return jax.jvp(slope, (t0,), (jnp.ones_like(t0),))[1]


def quadratic_form(loss: Loss, params: PyTree, v: PyTree, *, kind: Literal["hessian", "ggn"] = "hessian",
                   block: PyTree | None = None) -> Array:
    """``vᵀ M v`` (a scalar) with ``M`` the Hessian or Gauss–Newton matrix (``kind="ggn"``, model
    objectives only) on ``block`` — equal to ``⟨v, operator(...)(v)⟩`` but cheaper: Hessian:
    ``d²/dt² L(θ + t v)|₀`` by two forward-mode passes (no backward pass); GGN:
    ``Σ_i w_i (J_i v)ᵀ H_i (J_i v)`` from one ``jvp`` and the closed-form output Hessian. Models
    without forward mode (``custom_vjp`` rules) fall back to ``⟨v, H v⟩`` (reverse-over-reverse)
    and, for the GGN, to ``J v`` as the transpose of the rule's ``vjp``."""
    check_kind(kind)
    check_like("v", v, params)
    v = restrict(v, block)
    if kind == "ggn":
        _check_objective(loss)

        def chunk(x, y, w):
            outputs, jv = _output_jvp(lambda p: loss.apply_fn(p, x), params, v)
            hjv = _output_hvp(loss.per_example_loss, outputs, y, jv)
            per_example = jnp.sum((jv * hjv).reshape(jv.shape[0], -1), axis=1)
            return jnp.sum(w * per_example)

        return chunked_sum(loss, chunk)
    if isinstance(loss, ModelObjective):
        def chunk(x, y, w):
            def chunk_fn(p):
                return chunk_loss(loss, p, x, y, w)

            if has_forward_mode(chunk_fn, params):
                return _second_directional(chunk_fn, params, v)
            return optax.tree_utils.tree_vdot(v, _hvp_scalar(chunk_fn, params, v))

        return chunked_sum(loss, chunk)
    loss_fn = as_loss_fn(loss)
    check_scalar_loss(loss_fn, params)
    if has_forward_mode(loss_fn, params):
        return _second_directional(loss_fn, params, v)
    return optax.tree_utils.tree_vdot(v, _hvp_scalar(loss_fn, params, v))


def operator(loss: Loss, params: PyTree, *, kind: Literal["hessian", "ggn"] = "hessian",
             block: PyTree | None = None) -> Callable[[PyTree], PyTree]:
    """The matrix-free operator ``v ↦ M v`` with ``M`` the Hessian (``kind="hessian"``) or the
    Gauss–Newton matrix (``kind="ggn"``, model objectives only), restricted to ``block``."""
    check_kind(kind)
    if kind == "ggn":
        return lambda v: ggn_vp(loss, params, v, block=block)
    if not isinstance(loss, ModelObjective):
        check_scalar_loss(as_loss_fn(loss), params)
    return lambda v: hvp(loss, params, v, block=block)
