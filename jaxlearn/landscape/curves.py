"""Mode connectivity along curves: a quadratic Bézier curve or a polygonal chain with one bend
between two solutions, trained so that the loss stays low along the whole curve.

Garipov, Izmailov, Podoprikhin, Vetrov & Wilson 2018 ("Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs", §3): given two minima ``w₁`` and ``w₂`` and a bend ``θ`` (a point shaped like
the parameters), a curve ``φ_θ : [0, 1] → parameters`` with ``φ_θ(0) = w₁`` and ``φ_θ(1) = w₂``:

* ``"bezier"`` (§3.2, "Bezier curve"): ``φ_θ(t) = (1 − t)² w₁ + 2t(1 − t) θ + t² w₂``;
* ``"polychain"`` (§3.2, "Polygonal chain"): ``φ_θ(t) = 2(t θ + (½ − t) w₁)`` for ``t ∈ [0, ½]`` and
  ``2((t − ½) w₂ + (1 − t) θ)`` for ``t ∈ [½, 1]`` — two segments meeting at ``φ_θ(½) = θ``.

Only ``θ`` is trained (the endpoints are fixed), by minimising the loss averaged over the curve
under the uniform distribution on ``t`` — §3.1, where the loss averaged over the curve's
normalised arc length is replaced by the tractable ``ℓ(θ) = E_{t∼U[0,1]} L(φ_θ(t))`` — sampling one
``t`` per minibatch step. :func:`curve_model` wraps a model into a
:class:`jaxlearn.nn.Layer` whose params are ``θ`` and whose forward pass draws ``t`` from its key,
so the ordinary training loop trains the curve::

    curve, opt = curve_model(model, w1, w2, kind="bezier"), optax.adam(1e-3)
    state = train.init(curve, opt, key, input_spec)                     # θ starts at (w₁ + w₂)/2
    step = train.make_step(curve.apply_with_state, train.softmax_cross_entropy, opt)
    state, _ = train.train(state, step, batch_fn, num_steps)
    path = curve_path(objective, w1, state.params, w2, 25, kind="bezier")
    print(barrier(path["loss"], path["t"]).linear)

The gradient with respect to ``θ`` at a sampled ``t`` is ``c_θ(t) ∇L(φ_θ(t))`` with
``c_θ(t) = 2t(1 − t)`` (Bézier) or ``2 min(t, 1 − t)`` (chain): the bend learns most from the middle
of the curve. BatchNorm networks: statistics are not meaningful along a curve (Garipov et al.
recompute them at every ``t``); pass ``reset=batch_stats_reset(...)`` to :func:`curve_path`, as to
:func:`~jaxlearn.landscape.linear_path`.
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_choice, concrete, is_traced
from jaxlearn._types import ArrayLike, PyTree, Scalar
from jaxlearn.landscape.connectivity import path_positions
from jaxlearn.landscape.objective import ModelObjective, dataset_metrics
from jaxlearn.nn.core import Layer, as_spec
from jaxlearn.train.pytrees import check_like

__all__ = ["CURVES", "curve_point", "curve_model", "curve_path"]

CURVES = ("bezier", "polychain")


def _check_kind(kind) -> str:
    return check_choice(kind, "kind", CURVES)


def _coefficients(t, kind: str):
    """``(c₁, c_θ, c₂)`` with ``φ_θ(t) = c₁ w₁ + c_θ θ + c₂ w₂`` (exactly 0 or 1 at the endpoints
    and, for the chain, at the bend)."""
    if kind == "bezier":
        return (1 - t) ** 2, 2 * t * (1 - t), t ** 2
    first = t < 0.5
    return (jnp.where(first, 1 - 2 * t, 0), jnp.where(first, 2 * t, 2 - 2 * t), jnp.where(first, 0, 2 * t - 1))


def _check_t(t):
    t = jnp.asarray(t)
    if t.ndim != 0 or not (jnp.issubdtype(t.dtype, jnp.floating) or jnp.issubdtype(t.dtype, jnp.integer)):
        raise ValueError(f"t: expected a real scalar in [0, 1] (vmap over t for many points), got "
                         f"{t.dtype}{list(t.shape)}")
    if is_traced(t):
        return t  # traced: not checked
    value = float(np.asarray(t))
    if not 0 <= value <= 1:
        raise ValueError(f"t: expected a value in [0, 1] (the curve is defined there), got {value!r}")
    return t


def curve_point(w1: PyTree, bend: PyTree, w2: PyTree, t: Scalar,
                kind: Literal["bezier", "polychain"] = "bezier") -> PyTree:
    """The point ``φ_θ(t)`` of the curve with endpoints ``w1``, ``w2`` and bend ``θ = bend``
    (Garipov et al. 2018, §3.2; formulas in the module docstring).

    ``w1``, ``bend``, ``w2``: pytrees of the same structure and leaf shapes (a ValueError names the
    first differing leaf); ``t``: a real scalar in ``[0, 1]`` (checked when concrete; vmap over it
    for many points); ``kind``: ``"bezier"`` or ``"polychain"``. Floating leaves are combined in
    their own dtype as ``c₁ w₁ + c_θ θ + c₂ w₂``, so ``t = 0`` and ``t = 1`` give the endpoints
    exactly (and the chain's ``t = ½`` gives ``θ``); non-floating leaves are ``w1``'s.

    Pure: ``jit``, ``vmap`` (over ``t`` or any argument), ``grad`` and ``jvp``. The chain is not
    differentiable in ``t`` at ``½`` (``jnp.where`` gives the derivative of the second segment).
    """
    kind = _check_kind(kind)
    check_like("bend", bend, w1, "w1")
    check_like("w2", w2, w1, "w1")
    t = _check_t(t)

    def combine(a, m, b):
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            return a
        ca, cm, cb = (jnp.asarray(c, a.dtype) for c in _coefficients(t.astype(a.dtype), kind))
        return ca * a + cm * m + cb * b

    return jax.tree.map(combine, w1, bend, w2)


def curve_model(model: Layer, w1: PyTree, w2: PyTree, kind: Literal["bezier", "polychain"] = "bezier") -> Layer:
    """``model`` along the curve from ``w1`` to ``w2``: a :class:`jaxlearn.nn.Layer` whose params are
    the bend ``θ`` and whose forward pass is the model at ``φ_θ(t)`` for ``t ∼ U[0, 1]`` drawn from
    its key — the stochastic objective ``E_t L(φ_θ(t))`` of Garipov et al. 2018 (§3.1), trained by
    :func:`jaxlearn.train.make_step` + :func:`jaxlearn.train.train` like any model (one ``t`` per
    step, from the step's model key).

    * ``init(key, input_spec) -> (θ₀, state)``: ``θ₀ = (w₁ + w₂)/2`` (their initialisation), and
      ``state = {"w1": w1, "w2": w2, "model": model_state}`` — the endpoints travel in the
      non-trainable state (arguments of the compiled step, not constants baked into it;
      checkpointed with the run), ``model_state`` is the model's freshly initialised state
      (BatchNorm statistics, updated by training mode at mixed ``t``: reset them for evaluation).
      ``key`` only draws that state. A ValueError names ``w1``/``w2`` if they are not shaped like
      the model's params.
    * ``apply_with_state(θ, x, state, *, key, train) -> (y, new_state)``: splits ``key`` into the
      ``t`` key (``t = jax.random.uniform``) and the model's key (dropout). ``key`` is required, in
      both modes; to evaluate at a fixed ``t`` use :func:`curve_point` or :func:`curve_path`.

    ``model``: a :class:`jaxlearn.nn.Layer` (flax modules: :func:`jaxlearn.nn.from_linen` first);
    ``w1``, ``w2``: its params at the two ends; ``kind``: ``"bezier"`` or ``"polychain"``.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model: expected a jaxlearn.nn Layer (wrap flax modules with nn.from_linen), "
                        f"got {type(model).__name__}")
    kind = _check_kind(kind)
    check_like("w2", w2, w1, "w1")

    def init_fn(key, spec):
        out_spec, params, model_state = model.init_fn(key, as_spec(spec))
        check_like("w1", w1, params, "the model's params")
        bend = jax.tree.map(lambda a, b: a + 0.5 * (b - a) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
                            w1, w2)
        return out_spec, bend, {"w1": w1, "w2": w2, "model": model_state}

    def apply_fn(bend, state, x, key, train):
        if key is None:
            raise ValueError("key: the curve model draws t ~ U[0, 1] from its key (train.make_step passes one); "
                             "to evaluate at a fixed t use curve_point or curve_path")
        if not isinstance(state, dict) or set(state) != {"w1", "w2", "model"}:
            raise ValueError("state: expected the curve model's state {'w1', 'w2', 'model'} as init returns it, "
                             f"got {type(state).__name__}")
        k_t, k_model = jax.random.split(key)
        t = jax.random.uniform(k_t, dtype=jnp.result_type(float))
        point = curve_point(state["w1"], bend, state["w2"], t, kind)
        y, model_state = model.apply_fn(point, state["model"], x, k_model, train)
        return y, {"w1": state["w1"], "w2": state["w2"], "model": model_state}

    return Layer(init_fn, apply_fn, None, name=f"{kind}_curve({model.name})")


def curve_path(objective: ModelObjective, w1: PyTree, bend: PyTree, w2: PyTree, num_points: int = 25, *,
               kind: Literal["bezier", "polychain"] = "bezier", ts: ArrayLike | None = None,
               reset: Callable | None = None) -> dict:
    """Loss and accuracy along the curve ``φ_θ`` from ``w1`` (``t = 0``) to ``w2`` (``t = 1``) with
    bend ``θ = bend`` — :func:`~jaxlearn.landscape.linear_path` for curves (Garipov et al. 2018,
    §3, whose figures plot these loss profiles).

    At each ``t`` the point is :func:`curve_point` ``(w1, bend, w2, t, kind)``, then ``reset(point)``
    if given (e.g. :func:`~jaxlearn.landscape.batch_stats_reset` for BatchNorm networks, whose points
    are ``(params, state)`` pairs), and its metrics are exact dataset means in chunks of
    ``objective.batch_size`` (:func:`~jaxlearn.landscape.dataset_metrics`). The ``t`` loop is one
    ``lax.map``; wrap the call in ``jax.jit`` to compile the whole path once.

    Args:
      objective: a :class:`~jaxlearn.landscape.ModelObjective`.
      w1, bend, w2: the endpoints and the bend (same structure and shapes), e.g. the trained
        ``state.params`` of a :func:`curve_model` as ``bend``.
      num_points: ``P``, equally spaced ``t`` in [0, 1], endpoints included (≥ 2).
      kind: ``"bezier"`` or ``"polychain"``.
      ts: optional ``(P,)`` array of ``t`` values instead (from 0 to 1 for :func:`barrier`).
      reset: optional pure ``point -> point`` applied at every ``t``.

    Returns ``{"t": (P,), "loss": (P,), "accuracy": (P,)}``; the loss barrier along the curve is
    ``barrier(out["loss"], out["t"])`` (both the ``linear`` and ``mean`` conventions).
    """
    kind = _check_kind(kind)
    check_like("bend", bend, w1, "w1")
    check_like("w2", w2, w1, "w1")
    ts = path_positions(objective, num_points, ts, "ts", reset)
    known = concrete(ts)
    if known is not None and (known.min() < 0 or known.max() > 1):
        raise ValueError(f"ts: expected values in [0, 1], got {known.min()!r} ... {known.max()!r}")

    def at(t):
        point = curve_point(w1, bend, w2, t, kind)
        if reset is not None:
            point = reset(point)
        return dataset_metrics(objective, point)

    metrics = jax.lax.map(at, ts)
    return {"t": ts, **metrics}
