"""Synthetic gradients: decoupled neural interfaces.

Jaderberg, Czarnecki, Osindero, Vinyals, Graves, Silver & Kavukcuoglu 2017, "Decoupled Neural
Interfaces using Synthetic Gradients" (§2, eq. (1)–(2); §3.1 for feed-forward networks). A network
``h_0 = x``, ``h_l = f_l(h_{l-1}; θ_l)`` for hidden blocks ``l < L`` and output ``y = f_L(h_{L-1}; θ_L)``
carries at every hidden block boundary a predictor ``M_l(h_l; φ_l) ≈ s · ∂L/∂h_l`` (``s``: the
estimator's ``gradient_scale``). With ``δ̂_l = M_l(h_l) / s`` the estimate is

    ``Δθ_l = (∂h_l/∂θ_l)ᵀ δ̂_l``          (hidden blocks: eq. (1), the synthetic gradient),
    ``Δθ_L = (∂y/∂θ_L)ᵀ ∂L/∂y``          (the output layer: its true gradient),
    ``Δφ_l = ∇_φ ℓ_l``,  ``ℓ_l = (1 / 2R) Σ ‖M_l(h_l) − sg(t_l)‖²``   (the predictor's regression),

with ``R`` the number of rows of ``h_l`` (all axes but the last: the examples) and the target

* ``target="true"``: ``t_l = s · ∂L/∂h_l``, the back-propagated gradient;
* ``target="bootstrap"`` (Jaderberg §2, eq. (2)): ``t_l = (∂h_{l+1}/∂h_l)ᵀ M_{l+1}(h_{l+1})`` — the next
  block's synthetic gradient carried one block back — for ``l < L − 1``, and ``t_{L−1} = s · ∂L/∂h_{L−1}``
  from the output layer.

Nothing back-propagates between blocks in ``bootstrap`` mode: block ``l`` sees only ``δ̂_l``
(Jaderberg's decoupling; the one vjp through block ``l+1`` with respect to its input makes the target).
In ``true`` mode the true gradient is back-propagated for the targets but the blocks are still
updated with ``δ̂_l`` only. A perfect predictor (``M_l(h_l) = s · ∂L/∂h_l``) gives back-propagation's
gradients in both modes.

Scale: ``∂L/∂h_l`` of a loss that is a mean over ``R`` examples is ``O(1/R)`` per row; with
``gradient_scale = R`` (the batch size) the predictor learns per-example gradients, ``O(1)`` and
independent of the batch size. Predictors are zero-initialised in their output layer (Jaderberg
§3): training starts with ``δ̂ = 0`` (hidden blocks frozen until the predictors learn). They are
not conditioned on the labels (Jaderberg's cDNI); ``M_l`` acts on the last axis of ``h_l``.

Cost: one ``value_and_grad`` per step. ``bootstrap``: a backward pass like backprop's plus the
predictors. ``true``: each hidden block is evaluated twice in the forward pass (one copy carries the
true gradient to its input, the other the synthetic one to its parameters); the two are the same
computation, which XLA merges under ``jit``. Forward mode: the boundary is a ``custom_vjp`` rule, so
``jax.jvp`` through a request (not through plain params) raises.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jaxlearn import _random
from jaxlearn._checks import check_real
from jaxlearn._types import Scalar
from jaxlearn.nn.core import Layer, LayerError, serial
from jaxlearn.rules.blocks import BlockRequest, Request, replace_cotangent
from jaxlearn.train.step import Estimator

__all__ = ["PREDICTORS", "TARGETS", "synthetic_serial", "synthetic_gradients"]

PREDICTORS = ("linear", "mlp")
TARGETS = ("bootstrap", "true")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _SyntheticRequest(Request):
    """The params of a :func:`synthetic_serial` network, ``scale`` (array ``s``) and the static target."""

    params: Any
    scale: Any
    target: str = dataclasses.field(default="bootstrap", metadata={"static": True})

    def _refusal(self) -> str:
        return ("SyntheticRequest reached a layer that is not a jaxlearn.rules.synthetic_serial network")


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _boundary(h, m, scale, bootstrap):
    """``h`` forward. Backward, with ``g`` arriving at ``h`` from the next block: the predictor output
    ``m`` receives ``(m − s·g) / R`` (the gradient of ``ℓ`` with target ``s·g``) and ``h`` receives
    ``m / s`` (``bootstrap``: the block is trained on the synthetic gradient and so is what reaches
    the previous boundary) or ``g`` (``true``: the true gradient flows on)."""
    del m, scale, bootstrap
    return h


def _boundary_fwd(h, m, scale, bootstrap):
    del bootstrap
    return h, (m, scale)


def _boundary_bwd(bootstrap, res, g):
    m, scale = res
    s = scale.astype(m.dtype)
    rows = max(m.size // m.shape[-1], 1)
    return (m / s if bootstrap else g).astype(g.dtype), (m - s * g) / rows, jnp.zeros_like(scale)


_boundary.defvjp(_boundary_fwd, _boundary_bwd)


def _predictor(kind: str, width: int, dtype):
    """``(init(key) -> φ, apply(φ, h) -> M(h))`` on the last axis, output layer zero-initialised."""
    if kind == "linear":
        def init(key):
            del key
            return {"W": jnp.zeros((width, width), dtype), "b": jnp.zeros((width,), dtype)}

        def apply(phi, h):
            return h @ phi["W"] + phi["b"]
    else:
        def init(key):
            W1 = _random.normal(key, (width, width), dtype) / jnp.sqrt(jnp.asarray(width, dtype))
            return {"W1": W1, "b1": jnp.zeros((width,), dtype), "W2": jnp.zeros((width, width), dtype),
                    "b2": jnp.zeros((width,), dtype)}

        def apply(phi, h):
            return jax.nn.relu(h @ phi["W1"] + phi["b1"]) @ phi["W2"] + phi["b2"]
    return init, apply


def synthetic_serial(*layers: Layer, predictor: str = "linear") -> Layer:
    """``layers[-1] ∘ … ∘ layers[0]`` with a synthetic-gradient predictor at every hidden block boundary
    (module docstring): the model for :func:`synthetic_gradients`.

    ``layers``: hidden blocks then the output layer (as :func:`~jaxlearn.rules.block_serial`); each
    must output one array. ``predictor``: ``"linear"`` (``M(h) = h W + b``, ``W: (width, width)``) or
    ``"mlp"`` (``M(h) = relu(h W₁ + b₁) W₂ + b₂``, hidden width ``width``, ``W₁ ~ N(0, 1/width)``);
    the output layer (``W``, ``b`` / ``W₂``, ``b₂``) starts at zero (Jaderberg et al. 2017, §3).

    Params: ``{"layers": (θ_1, …, θ_L), "predictors": (φ_1, …, φ_{L−1})}``; ``params["layers"]`` is
    what ``nn.serial(*layers).init`` draws from the same key. State: the tuple of layer states (as
    ``nn.serial``). With plain params the network is exactly ``nn.serial(*layers)`` (the predictors
    are unused; their ``backprop`` gradients are zero); the infinite-width kernel is ``nn.serial``'s
    and predictors have learning-rate multiplier 1.
    """
    if len(layers) < 2:
        raise LayerError(f"synthetic_serial: expected at least one hidden block and an output layer, got {len(layers)} "
                         f"layer(s)")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise LayerError(f"synthetic_serial: argument {i} must be a jaxlearn.nn Layer, got {type(layer).__name__}")
    if predictor not in PREDICTORS:
        raise LayerError(f"synthetic_serial: predictor must be one of {list(PREDICTORS)}, got {predictor!r}")
    n = len(layers)
    plain = serial(*layers)

    def init_fn(key, spec):
        out, layer_params, states = plain.init_fn(key, spec)
        hidden, s = [], spec
        for layer in layers[:-1]:
            s = layer.output_spec(s)
            if isinstance(s, tuple) or s.ndim < 1:
                raise LayerError(f"synthetic_serial: hidden blocks must output one array with a feature axis, got {s}")
            hidden.append(s)
        k_pred = jax.random.fold_in(key, n)
        predictors = tuple(_predictor(predictor, h.shape[-1], h.dtype)[0](jax.random.fold_in(k_pred, l))
                           for l, h in enumerate(hidden))
        return out, {"layers": layer_params, "predictors": predictors}, states

    def apply_fn(params, state, x, key, train):
        if isinstance(params, BlockRequest):
            raise TypeError(f"a {params.kind!r} gradient estimator needs a jaxlearn.rules.block_serial network "
                            f"(BlockRequest reached a synthetic_serial network)")
        request = params if isinstance(params, _SyntheticRequest) else None
        params = request.params if request is not None else params
        if not (isinstance(params, dict) and set(params) == {"layers", "predictors"}):
            raise LayerError("synthetic_serial: params must be the dict {'layers': ..., 'predictors': ...} that init "
                             "returns")
        if request is None:
            return plain.apply_fn(params["layers"], state, x, key, train)
        layer_states = state if isinstance(state, (tuple, list)) and len(state) == n else ((),) * n
        bootstrap = request.target == "bootstrap"
        h, new_states = x, []
        for i, (layer, p, s) in enumerate(zip(layers, params["layers"], layer_states)):
            k = None if key is None else jax.random.fold_in(key, i)
            if i == n - 1:  # the output layer: true gradients
                h, s = layer.apply_fn(p, s, h, k, train)
                new_states.append(s)
                break
            phi = params["predictors"][i]
            if bootstrap:
                h, s = layer.apply_fn(p, s, h, k, train)
                m = _predictor(predictor, h.shape[-1], h.dtype)[1](phi, jax.lax.stop_gradient(h))
            else:
                # One copy carries the true gradient to the block's input, the other the synthetic
                # one to its parameters; the sum has the value of either.
                hx, s = layer.apply_fn(jax.lax.stop_gradient(p), s, h, k, train)
                h_theta, _ = layer.apply_fn(p, layer_states[i], jax.lax.stop_gradient(h), k, train)
                m = _predictor(predictor, hx.shape[-1], hx.dtype)[1](phi, jax.lax.stop_gradient(hx))
                delta = jax.lax.stop_gradient(m / request.scale.astype(m.dtype))
                h = hx + (replace_cotangent(h_theta, delta) - jax.lax.stop_gradient(h_theta))
            new_states.append(s)
            h = _boundary(h, m, request.scale, bootstrap)
        return h, tuple(new_states)

    def lr_fn(spec, optimizer):
        params, _ = jax.eval_shape(lambda k: init_fn(k, spec)[1:], jax.random.key(0))
        return {"layers": plain.lr_fn(spec, optimizer), "predictors": jax.tree.map(lambda _: 1.0, params["predictors"])}

    name = f"synthetic_serial({', '.join(layer.name for layer in layers)}; {predictor})"
    return Layer(init_fn, apply_fn, plain.kernel_fn, name, lr_fn)


def synthetic_gradients(target: Literal["bootstrap", "true"] = "bootstrap", gradient_scale: Scalar = 1.0) -> Estimator:
    """Synthetic gradients (Jaderberg et al. 2017, §2, eq. (1)–(2); module docstring) as a gradient
    estimator for ``train.make_step(..., grad_estimator=synthetic_gradients())``; the model must be a
    :func:`synthetic_serial` network (the top-level model).

    Returns ``((loss, aux), grads)``: the exact loss and aux; ``grads["layers"]``: ``(∂h_l/∂θ_l)ᵀ
    M_l(h_l)/s`` for hidden blocks and the true gradient for the output layer; ``grads["predictors"]``:
    the gradients of the regressions ``ℓ_l`` onto ``target`` (``"bootstrap"`` or ``"true"``), which the
    optimizer descends with the rest. ``gradient_scale`` (``s > 0``): the predictors learn
    ``s · ∂L/∂h_l``; set it to the batch size for per-example gradients. ``key`` is unused.
    """
    if target not in TARGETS:
        raise ValueError(f"synthetic_gradients: target must be one of {list(TARGETS)}, got {target!r}")
    check_real(gradient_scale, "gradient_scale", minimum=0, open_minimum=True, finite=False,
               where="synthetic_gradients")

    def estimator(objective, params, key):
        del key
        scale = jnp.asarray(gradient_scale, jnp.result_type(float))
        try:
            return jax.value_and_grad(lambda p: objective(_SyntheticRequest(p, scale, target)), has_aux=True)(params)
        except (LayerError, TypeError) as err:
            message = str(err)
            # Another network meets the request where it expects its own params (a tuple, a dict).
            foreign = "params must be" in message and "synthetic_serial" not in message
            if "SyntheticRequest" in message or foreign:
                raise ValueError("synthetic_gradients: the model must be a jaxlearn.rules.synthetic_serial network "
                                 "(the top-level model), whose block boundaries carry the gradient "
                                 "predictors") from None
            raise

    return estimator
