"""Equilibrium propagation: a layered Hopfield network trained by free and nudged relaxations.

Model (Scellier & Bengio 2017, "Equilibrium Propagation: Bridging the Gap between Energy-Based
Models and Backpropagation": the energy eq. (1) of §2, Theorem 1 of §3, and the layered networks of
the experiments, §5). The input ``x = h_0`` is clamped; the free units are the hidden layers ``h_1, …, h_{L-1}``
and the output layer ``y = h_L`` (``u = (h_1, …, h_L)``, the network's *state*). Adjacent layers are coupled by one
weight matrix ``W_l: (n_{l-1}, n_l)`` used in both directions (symmetric weights) and every free unit has a bias
``b_l: (n_l,)``. The Hopfield energy of eq. (1), ``E = ½ Σ u_i² − ½ Σ_{i≠j} W_ij ρ(u_i)ρ(u_j) −
Σ b_i ρ(u_i)``, is for this architecture and one example

    ``E(u; θ, x) = ½ Σ_{l≥1} ‖h_l‖² − Σ_{l≥1} ρ(h_{l-1})ᵀ W_l ρ(h_l) − Σ_{l≥1} b_lᵀ ρ(h_l)``,

with the convention ``ρ(h_0) := x``: the clamped input enters as given (it stands for the input
units' activity), without ``½‖x‖²`` (a constant). Examples are independent; a batch's energy is
the sum of theirs. ``ρ`` is ``hard_sigmoid`` (``clip(u, 0, 1)``, the paper's choice; the state is
then kept in the box ``[0, 1]`` by projection, and ``ρ' = 1`` on the closed box so a unit at a bound
can be driven back in; the fixed point is then only piecewise smooth in θ), ``sigmoid`` or ``tanh``
(smooth: the fixed point is a smooth function of θ, the setting of Theorem 1).

Relaxation (free phase, ``β = 0``): projected gradient descent ``u ← P(u − ε ∂E/∂u)`` from
``u = 0`` (``P`` = identity for smooth ρ, the box projection for hard_sigmoid) in a
``lax.while_loop`` until the residual ``max_examples ‖(u − P(u − ε ∂E/∂u))/ε‖₂`` (``‖∂E/∂u‖`` per
example for smooth ρ, the projected gradient for hard_sigmoid) is at most ``tol`` or ``max_steps``
steps are taken (``tol=0``: ``max_steps`` steps unless the residual is exactly 0; under ``vmap`` the loop runs until
every member has stopped, finished members keeping their state). The network's output is ``y`` at this
fixed point ``u⁰``; the layer's ``state`` reports ``{"residual", "steps"}`` of the last free
relaxation (the residual at the returned state), so users can check convergence.

Gradients. ``J(θ) = C(y(u⁰(θ)))``. The fixed point is a ``jax.custom_vjp`` function of
``(params, x)`` whose backward pass receives ``g = ∂C/∂y`` at ``u⁰``. Its loops stop at tolerances
scaled with the signal, ``tol·min(1, s)`` with ``s = max_examples ‖g‖`` (recurrent backprop) or
``max_examples ‖βg‖`` (nudged phases), floored at ``8·eps·s`` (recurrent backprop, a linear solve)
or ``8·eps`` (nudged phases), so that a small cotangent (a mean over a large batch) is resolved
rather than lost below an absolute ``tol``:

* plain params (``train.backprop``, ``jax.grad``): recurrent backprop / implicit differentiation
  (Almeida 1987; Pineda 1987): ``dJ/dθ = −(∂²E/∂θ∂u)ᵀ λ`` with ``(∂²E/∂u²) λ = ∂C/∂u``, solved by the
  linearised relaxation ``λ ← λ − ε M((∂²E/∂u²) λ − ∂C/∂u)`` from ``λ = 0`` (same ``ε`` and
  ``max_steps``); ``M`` masks hard_sigmoid units pinned at a bound of the box (the fixed point does
  not move them to first order). This is the exact gradient of the equilibrium loss.
* under :func:`equilibrium_propagation` (an :class:`EquilibriumRequest` in place of the params):
  nudged phases. With ``β > 0`` the nudged fixed point ``u^β`` minimises ``F = E + β ⟨g, y⟩``,
  relaxed from ``u⁰`` by the same loop (one-sided: ``u⁰`` is relaxed further, with ``β = 0``, to the
  same tolerance); the estimate of ``dJ/dθ`` is (Scellier & Bengio 2017,
  Theorem 1: the limit ``β → 0`` of the first line is ``dJ/dθ``)

      one-sided:  ``(∂E/∂θ(u^β) − ∂E/∂θ(u⁰)) / β``                   bias ``O(β)``,
      symmetric:  ``(∂E/∂θ(u^β) − ∂E/∂θ(u^{−β})) / (2β)``            bias ``O(β²)``
                  (Laborieux, Ernoult, Scellier, Bengio, Grollier & Querlioz 2021, "Scaling
                  Equilibrium Propagation to Deep ConvNets by Drastically Reducing its Gradient
                  Estimator Bias": symmetric ±β nudging).

  For ``W_l``, ``∂E/∂W_l = −ρ(h_{l-1})ᵀρ(h_l)``, so the one-sided estimate is
  ``−(ρ(h^β_{l-1})ᵀρ(h^β_l) − ρ(h⁰_{l-1})ᵀρ(h⁰_l))/β``: minus the paper's contrastive (Hebbian)
  update ``ΔW``, as a gradient for the optimizer to descend. The same differences of ``∂E/∂x`` give
  the input cotangent. The two phases of the symmetric estimate run as one vmapped relaxation.

*Convention: the cost is linearised at the free fixed point.* The estimator never sees the targets
(the estimator contract of ``train.make_step``); it sees ``g = ∂C/∂y`` at ``u⁰`` through the
backward pass, so the nudging force is ``β g`` instead of the paper's ``β ∂C/∂y(u)`` at the current
state. This is exact for a cost linear in ``y``; in general ``u^β`` differs from the paper's by
``O(β²)``, so the limit ``β → 0`` (Theorem 1: the true gradient) and the bias orders — ``O(β)``
one-sided, ``O(β²)`` symmetric (the symmetric difference of a smooth function of β) — are the
paper's. ``g`` is the gradient of the *batch* loss (e.g. it carries the ``1/N`` of a mean), so the
displacement ``u^β − u⁰`` is ``O(β‖g‖)``; in float32 it must stay well above the rounding floor
(``~1e-6``), or the estimate is noise: choose β accordingly.
With hard_sigmoid the energy is quadratic on the face of the box where the fixed point lies and the
nudge is linear, so ``u^β`` is linear in β while no unit changes face: the symmetric estimate is then
exact, the one-sided one keeps an ``O(β)`` bias.

Limitations: ``jax.jvp`` (forward mode) cannot pass through the ``custom_vjp`` fixed point — it
raises ``TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp function`` (so
forward-gradient estimators do not apply); ``jax.grad`` and ``jit``/``vmap`` work. A request only
reaches the network when it is the top-level model given to ``train.make_step``. The
``{"residual", "steps"}`` state describes the free phase only (nudged phases run in the backward
pass). The relaxation converges when ``ε`` is below ``2/λ_max(∂²E/∂u²)`` and the fixed point is a
strict local minimum; ``ε ≈ 0.5`` suits weights on the scale of ``W_std ≲ 1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from jaxlearn import _random
from jaxlearn._checks import check_bool, check_choice, check_int, check_real, is_int, is_real, is_traced
from jaxlearn._types import Array, ArrayLike, PyTree, Scalar
from jaxlearn.nn.core import Layer, LayerError, describe_spec
from jaxlearn.rules.blocks import Request
from jaxlearn.train.step import Estimator

__all__ = ["EQPROP_ACTIVATIONS", "EquilibriumRequest", "eqprop_network", "equilibrium_propagation", "hopfield_energy"]


def _hard_sigmoid(u):
    # Value clip(u, 0, 1); derivative 1 everywhere. States live in [0, 1] (projected relaxation), where
    # this is the clip's derivative, including at the bounds (so a unit at 0 can be driven into the box).
    return u + jax.lax.stop_gradient(jnp.clip(u, 0.0, 1.0) - u)


_RHO = {"hard_sigmoid": _hard_sigmoid, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh}
EQPROP_ACTIVATIONS = tuple(_RHO)


class _Config(NamedTuple):
    """Static settings of a network's relaxations (hashable: a ``nondiff_argnums`` argument)."""

    activation: str
    step_size: float
    max_steps: int
    tol: float
    mode: str = "implicit"  # "implicit" (recurrent backprop) | "one_sided" | "symmetric"


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EquilibriumRequest(Request):
    """The params of an :func:`eqprop_network` plus a request from :func:`equilibrium_propagation`:
    answer the backward pass with nudged phases of strength ``beta`` (a scalar, may be traced),
    one-sided or ``symmetric`` (static) ±β nudging, instead of recurrent backprop."""

    params: Any
    beta: Any
    symmetric: bool = dataclasses.field(default=True, metadata={"static": True})

    def _refusal(self) -> str:
        return ("equilibrium_propagation needs a jaxlearn.rules.eqprop_network as the top-level model "
                "(EquilibriumRequest reached a layer that is not one)")


# -- energy and relaxation ------------------------------------------------------------------------

def hopfield_energy(params: PyTree, x: ArrayLike, states: Sequence[Array], activation: str = "hard_sigmoid") -> Array:
    """The energy ``E(u; θ, x)`` of eq. (1) of Scellier & Bengio (2017) for a layered network
    (module docstring), summed over examples: a scalar.

    ``params``: ``({"W": (n_0, n_1), "b": (n_1,)}, …, {"W": (n_{L-1}, n_L), "b": (n_L,)})`` as
    :func:`eqprop_network` initialises them; ``x: (..., n_0)``; ``states = (h_1, …, h_L)`` with
    ``h_l: (..., n_l)``. ``hard_sigmoid`` is the clip with derivative 1 (states belong in ``[0, 1]``).
    """
    _check_activation("hopfield_energy", activation)
    if len(params) != len(states):
        raise ValueError(f"hopfield_energy: states must hold one array per layer of params ({len(params)}), "
                         f"got {len(states)}")
    rho = _RHO[activation]
    below, total = x, 0.0
    for p, h in zip(params, states):
        r = rho(h)
        total = total + 0.5 * jnp.sum(h * h) - jnp.sum((below @ p["W"]) * r) - jnp.sum(r * p["b"])
        below = r
    return total


def _per_example_norm(tree):
    return jnp.max(jnp.sqrt(sum(jnp.sum(t * t, axis=-1) for t in jax.tree.leaves(tree))), initial=0.0)


def _relax(cfg: _Config, params, x, states, force=None, tol=None):
    """Projected gradient descent on ``E + ⟨force, y⟩`` from ``states`` until the residual is ``<= tol``
    (default ``cfg.tol``; may be traced): ``(states, residual, steps)``."""
    tol = cfg.tol if tol is None else tol

    def grad(hs):
        g = jax.grad(hopfield_energy, argnums=2)(params, x, hs, cfg.activation)
        return g if force is None else g[:-1] + (g[-1] + force,)

    def descend(hs, g):
        hs = jax.tree.map(lambda h, d: h - cfg.step_size * d, hs, g)
        return jax.tree.map(lambda h: jnp.clip(h, 0.0, 1.0), hs) if cfg.activation == "hard_sigmoid" else hs

    def residual(hs, g):
        return _per_example_norm(jax.tree.map(lambda a, b: (a - b) / cfg.step_size, hs, descend(hs, g)))

    def body(carry):
        hs, g, _, i = carry
        hs = descend(hs, g)
        g = grad(hs)
        return hs, g, residual(hs, g), i + 1

    # The first iteration takes a zero step (hs ∈ the box already) and only evaluates the gradient: one
    # trace of the energy's gradient in the program instead of two, and an exact residual at the result.
    zeros = jax.tree.map(jnp.zeros_like, states)
    inf = jnp.asarray(jnp.inf, states[-1].dtype)
    carry = (states, zeros, inf, -jnp.ones((), jnp.int32))
    hs, _, res, steps = jax.lax.while_loop(lambda c: (c[3] < cfg.max_steps) & (c[2] > tol), body, carry)
    return hs, res, steps


def _backward_tol(cfg, scale, dtype, relative_floor):
    """The tolerance of a backward-pass solve whose solution scales like ``scale``: ``tol·min(1, scale)``,
    so a small cotangent (a mean over a large batch) is not lost below an absolute ``tol``; floored at
    ``8·eps`` (times ``scale`` for the linear adjoint solve, which is exact up to rounding at any
    scale; absolute for a relaxation, whose states are O(1)), where the loop would otherwise run to
    ``max_steps`` for nothing."""
    floor = 8 * jnp.finfo(dtype).eps * (scale if relative_floor else 1.0)
    return jnp.maximum(cfg.tol * jnp.minimum(1.0, scale), floor).astype(dtype)


def _energy_grad_theta(cfg, params, x, states):
    """``∂E/∂(params, x)`` at ``states``."""
    return jax.grad(hopfield_energy, argnums=(0, 1))(params, x, states, cfg.activation)


def _recurrent_backprop(cfg, params, x, states, g):
    """``−(∂²E/∂(θ,x)∂u)ᵀ λ`` with ``H λ = ∂C/∂u`` solved by the linearised relaxation (Almeida–Pineda)."""
    def grad_u(hs):
        return jax.grad(hopfield_energy, argnums=2)(params, x, hs, cfg.activation)

    _, hvp = jax.linearize(grad_u, states)
    if cfg.activation == "hard_sigmoid":  # units pinned at a bound of the box do not move to first order
        masks = tuple(((h > 0) & (h < 1)).astype(h.dtype) for h in states)
    else:
        masks = tuple(jnp.ones_like(h) for h in states)
    rhs = tuple(jnp.zeros_like(h) for h in states[:-1]) + (g.astype(states[-1].dtype),)

    def defect(lam):
        return jax.tree.map(lambda m, a, b: m * (a - b), masks, hvp(lam), rhs)

    def body(carry):
        lam, d, _, i = carry
        lam = jax.tree.map(lambda l_, e: l_ - cfg.step_size * e, lam, d)
        d = defect(lam)
        return lam, d, _per_example_norm(d), i + 1

    lam0 = tuple(jnp.zeros_like(h) for h in states)
    d0 = jax.tree.map(lambda m, b: -m * b, masks, rhs)  # defect(0), without a second trace of the HVP
    carry = (lam0, d0, _per_example_norm(d0), jnp.zeros((), jnp.int32))
    tol = _backward_tol(cfg, _per_example_norm(g), states[-1].dtype, relative_floor=True)
    lam = jax.lax.while_loop(lambda c: (c[3] < cfg.max_steps) & (c[2] > tol), body, carry)[0]

    def coupling(p, xx):
        gu = jax.grad(hopfield_energy, argnums=2)(p, xx, states, cfg.activation)
        return -optax.tree_utils.tree_vdot(gu, lam)

    return jax.grad(coupling, argnums=(0, 1))(params, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fixed_point(cfg: _Config, params, x, beta):
    """The free fixed point's output ``y`` and diagnostics ``(residual, steps)``; ``beta`` is read only
    by the backward pass of the nudged modes."""
    return _fixed_point_fwd(cfg, params, x, beta)[0]


def _free_phase(cfg, params, x):
    zeros = tuple(jnp.zeros(x.shape[:-1] + (p["b"].shape[-1],), jnp.result_type(x, p["W"])) for p in params)
    return _relax(cfg, params, x, zeros)


def _fixed_point_fwd(cfg, params, x, beta):
    states, res, steps = _free_phase(cfg, params, x)
    return (states[-1], res, steps.astype(res.dtype)), (params, x, beta, states)


def _fixed_point_bwd(cfg, saved, cotangents):
    params, x, beta, states = saved
    g = cotangents[0]
    if cfg.mode == "implicit":
        d_params, d_x = _recurrent_backprop(cfg, params, x, states, g)
    else:
        beta_ = jnp.asarray(beta, states[-1].dtype)
        force = beta_ * g.astype(states[-1].dtype)
        tol = _backward_tol(cfg, _per_example_norm(force), force.dtype, relative_floor=False)
        # Two phases from u⁰: ±β (symmetric), or β and β = 0 (one-sided: u⁰ refined to the same tolerance,
        # as the difference needs it). Vmapped, not written out: one trace of the relaxation and of ∂E/∂θ.
        second, scale = (-force, 2 * beta_) if cfg.mode == "symmetric" else (jnp.zeros_like(force), beta_)
        phases = jax.vmap(lambda f: _relax(cfg, params, x, states, f, tol)[0])(jnp.stack([force, second]))
        theta_grads = jax.vmap(lambda hs: _energy_grad_theta(cfg, params, x, hs))(phases)
        d_params, d_x = jax.tree.map(lambda t: (t[0] - t[1]) / scale.astype(t.dtype), theta_grads)
    d_params = jax.tree.map(lambda d, p: d.astype(p.dtype), d_params, params)
    return d_params, d_x.astype(x.dtype), jnp.zeros_like(beta)


_fixed_point.defvjp(_fixed_point_fwd, _fixed_point_bwd)


# -- the network layer ----------------------------------------------------------------------------

def _check_activation(who, activation):
    check_choice(activation, "activation", EQPROP_ACTIVATIONS, where=who, error=LayerError)


def _check_network_args(widths, out_dim, activation, W_std, b_std, step_size, max_steps, tol):
    who = "eqprop_network"
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise LayerError(f"{who}: widths must be a sequence of positive ints (hidden layer sizes), got {widths!r}")
    widths = list(widths)
    for arg, values in (("widths", widths), ("out_dim", [out_dim])):
        for w in values:
            if not is_int(w) or w < 1:
                raise LayerError(f"{who}: {arg} must hold positive ints, got {w!r}")
    _check_activation(who, activation)
    for name, v in (("W_std", W_std), ("b_std", b_std)):
        if is_real(v) and v < 0:
            raise LayerError(f"{who}: {name} must be >= 0, got {v!r}")
    check_real(step_size, "step_size", minimum=0, open_minimum=True, where=who, error=LayerError)
    check_int(max_steps, "max_steps", minimum=1, where=who, error=LayerError)
    check_real(tol, "tol", minimum=0, finite=False, where=who, error=LayerError)
    return widths


def eqprop_network(widths: Sequence[int], out_dim: int, activation: str = "hard_sigmoid", *, W_std: Scalar = 1.0,
                   b_std: Scalar = 0.0,
                   step_size: float = 0.5, max_steps: int = 500, tol: float = 1e-5) -> Layer:
    """A layered Hopfield network (Scellier & Bengio 2017, eq. (1); the layered networks of §5) as a
    jaxlearn.nn ``Layer`` whose
    output is the output layer ``y`` at the free fixed point (module docstring).

    ``widths``: hidden layer sizes (may be empty); ``out_dim``: output units; ``activation``: one of
    :data:`EQPROP_ACTIVATIONS`. Inputs ``x: (..., n_0)`` (floating); output ``(..., out_dim)``.
    ``params = ({"W": (n_{l-1}, n_l), "b": (n_l,)} for l = 1..L)`` with ``W ~ N(0, W_std²/n_{l-1})``,
    ``b ~ N(0, b_std²)`` (may be traced scalars). ``state = {"residual": scalar, "steps": scalar}`` —
    the convergence report of the last free relaxation (``apply_with_state``, both modes). Relaxation:
    step ``step_size`` (ε), at most ``max_steps`` steps, stop when the per-example residual is
    ``<= tol`` (``tol=0``: ``max_steps`` steps unless the residual is exactly 0); the backward pass
    scales the tolerance with its signal (module docstring). ``activation="hard_sigmoid"`` (the
    paper's) can leave units stuck at a bound (dead units, zero gradient); the smooth ones cannot.

    ``jax.grad`` (``train.backprop``) gives the exact gradient of the equilibrium loss by recurrent
    backprop; :func:`equilibrium_propagation` gives the EP estimate. Under a plain ``nn.serial`` the
    network is one layer trained by recurrent backprop. No infinite-width kernel.
    """
    widths = _check_network_args(widths, out_dim, activation, W_std, b_std, step_size, max_steps, tol)
    sizes = widths + [out_dim]
    base = _Config(activation, float(step_size), int(max_steps), float(tol))
    name = f"eqprop_network({sizes}, {activation})"

    def init_fn(key, spec):
        if isinstance(spec, tuple):
            raise LayerError(f"{name} expects one input, got a tuple {describe_spec(spec)}")
        if spec.ndim < 1 or spec.shape[-1] < 1 or not jnp.issubdtype(spec.dtype, jnp.floating):
            raise LayerError(f"{name} expects floating inputs with a non-empty last axis, got {describe_spec(spec)}")
        dtype = spec.dtype
        params, fan_in = [], spec.shape[-1]
        for l, n in enumerate(sizes):
            k_w, k_b = jax.random.split(jax.random.fold_in(key, l))
            W = W_std * _random.normal(k_w, (fan_in, n), dtype) / math.sqrt(fan_in)
            b = b_std * jax.random.normal(k_b, (n,), dtype)
            params.append({"W": W.astype(dtype), "b": b.astype(dtype)})
            fan_in = n
        state = {"residual": jnp.zeros((), dtype), "steps": jnp.zeros((), jnp.int32)}
        return jax.ShapeDtypeStruct(spec.shape[:-1] + (out_dim,), dtype), tuple(params), state

    def apply_fn(params, state, x, key, train):
        del key, train
        request = params if isinstance(params, EquilibriumRequest) else None
        if request is not None:
            params, beta = request.params, request.beta
            cfg = base._replace(mode="symmetric" if request.symmetric else "one_sided")
        else:
            beta, cfg = jnp.zeros(()), base
        if (not isinstance(params, (tuple, list)) or len(params) != len(sizes)
                or not all(isinstance(p, dict) and set(p) == {"W", "b"} for p in params)):
            raise LayerError(f"{name}: params must be a tuple of {len(sizes)} dicts {{'W', 'b'}}, as init returns them")
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != params[0]["W"].shape[0]:
            raise LayerError(f"{name}: x must have shape (..., {params[0]['W'].shape[0]}), got {list(x.shape)}")
        y, residual, steps = _fixed_point(cfg, tuple(params), x, jnp.asarray(beta, x.dtype))
        res_dtype = state["residual"].dtype if isinstance(state, dict) and "residual" in state else residual.dtype
        diagnostics = {"residual": jax.lax.stop_gradient(residual).astype(res_dtype),
                       "steps": jax.lax.stop_gradient(steps).astype(jnp.int32)}
        return y, diagnostics

    return Layer(init_fn, apply_fn, None, name, None)


# -- the estimator --------------------------------------------------------------------------------

@contextlib.contextmanager
def _request_errors():
    try:
        yield
    except (LayerError, TypeError) as err:
        if "EquilibriumRequest" in str(err) or "params must be" in str(err):
            raise ValueError("equilibrium_propagation: the model must be a jaxlearn.rules.eqprop_network (the "
                             "top-level model given to train.make_step)") from None
        raise


def equilibrium_propagation(beta: Scalar = 0.1, symmetric: bool = True) -> Estimator:
    """Equilibrium propagation (Scellier & Bengio 2017, Theorem 1; symmetric ±β nudging: Laborieux
    et al. 2021) as a gradient estimator ``estimator(objective, params, key) -> ((loss, aux),
    grads)`` for an :func:`eqprop_network` model (module docstring).

    ``grads`` estimates ``dJ/dθ`` by nudged phases of strength ``beta`` (> 0; a number, or a scalar
    array — traced values allow a vmap over β) with the cost linearised at the free fixed point:
    one-sided ``(∂E/∂θ(u^β) − ∂E/∂θ(u⁰))/β`` (bias ``O(β)``) or, with ``symmetric=True``,
    ``(∂E/∂θ(u^β) − ∂E/∂θ(u^{−β}))/(2β)`` (bias ``O(β²)``, two nudged phases). As ``β → 0`` both
    tend to the recurrent-backprop gradient. The loss and aux are exact; ``key`` is unused.
    """
    if is_traced(beta):
        if jnp.ndim(beta) != 0 or not jnp.issubdtype(beta.dtype, jnp.floating):
            raise TypeError(f"equilibrium_propagation: beta must be a scalar float, got a traced {beta.dtype} "
                            f"array of shape {jnp.shape(beta)}")
    elif is_real(beta) or (hasattr(beta, "shape") and jnp.ndim(beta) == 0
                           and jnp.issubdtype(jnp.result_type(beta), jnp.floating)):
        if not float(beta) > 0 or not math.isfinite(float(beta)):
            raise ValueError(f"equilibrium_propagation: beta must be a positive finite number, got {beta!r}")
    else:
        raise TypeError(f"equilibrium_propagation: beta must be a positive number (or scalar float array), "
                        f"got {beta!r}")
    check_bool(symmetric, "symmetric", where="equilibrium_propagation")

    def estimator(objective, params, key):
        del key
        with _request_errors():
            return jax.value_and_grad(lambda p: objective(EquilibriumRequest(p, beta, symmetric)), has_aux=True)(params)

    return estimator
