"""Networks whose block boundaries are visible to network-level gradient estimators.

Direct feedback alignment (:func:`jaxlearn.rules.dfa`) and the activity-perturbed forward
gradient (:func:`jaxlearn.rules.activity_forward_gradient`) need what a black-box objective
``objective(params) -> (loss, aux)`` hides: the output of every hidden block and the output error.
:func:`block_serial` is ``nn.serial`` with that boundary made explicit, and the estimators reach it
through the one channel the estimator slot has, the ``params`` argument: they call the objective
with a :class:`BlockRequest` wrapping the params, which the network recognises and answers by
routing gradients its way. With plain params (the ``backprop`` estimator, evaluation) it is exactly
``nn.serial(*layers)`` — same params, same outputs, exact gradients — so one model trains under every
rule and results differ only by the rule.

Interface (one network: ``L`` layers, the last one the output layer):

* ``h_0 = x``, ``h_l = layer_l(h_{l-1})``; ``y = h_L`` with ``out_dim = y.shape[-1]``. Hidden blocks
  ``l < L`` are typically ``nn.serial(nn.Dense(w), nn.Relu())``; their outputs must have the
  leading (batch) shape of ``y``.
* ``state = {"layers": per-layer states, "feedback": (B_1, ..., B_{L-1})}`` with fixed DFA feedback
  matrices ``B_l: (out_dim, width_l)``, ``B_l ~ N(0, feedback_std² / out_dim)`` entrywise, drawn by
  ``init`` from the member's key. They are model *state*: the optimizer never sees them.
* The network must be the top-level model given to ``train.make_step`` (a request does not pass
  through an enclosing ``nn.serial``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxlearn import _random
from jaxlearn._types import Scalar
from jaxlearn.nn import activation as activation_layer
from jaxlearn.nn.core import Layer, LayerError, serial
from jaxlearn.nn.linear import Dense

__all__ = ["BlockRequest", "Request", "block_serial", "block_mlp", "routed_value_and_grad", "block_request_errors"]

_KINDS = ("dfa", "perturb", "local")


class Request:
    """Base of the params wrappers an estimator passes through ``objective(params)`` to the network
    that answers it (:class:`BlockRequest` and the requests of the other network-level rules).
    A layer that is not that network fails at once when it indexes, iterates or measures the
    request: a ``TypeError`` with the subclass's ``_refusal()`` message, naming the model needed."""

    def _refusal(self) -> str:
        return f"{type(self).__name__} reached a layer that is not the network it is meant for"

    def _refuse(self, *_):
        raise TypeError(self._refusal())

    __getitem__ = __iter__ = __len__ = _refuse

    def __bool__(self) -> bool:
        return True


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BlockRequest(Request):
    """The params of a :func:`block_serial` network plus a routing request from an estimator.

    ``kind`` (static): ``"dfa"`` — hidden blocks receive ``e B_l`` (``e = ∂L/∂y``) instead of the
    back-propagated signal; ``"perturb"`` — ``data = (t, keys)``, block outputs become
    ``h_l + Σ_k t_k u_{l,k}`` with ``u_{l,k} ~ N(0, I)`` drawn from ``keys[k]``; ``"local"`` —
    ``data = (coeffs, keys)``, each block is differentiated on its own with output cotangent
    ``Σ_k coeffs_k u_{l,k} / K`` (``K = len(keys)``) and nothing flows between blocks.
    """

    params: Any
    data: Any = None
    kind: str = dataclasses.field(default="dfa", metadata={"static": True})

    def _refusal(self) -> str:
        return (f"a {self.kind!r} gradient estimator needs a jaxlearn.rules.block_serial network as the "
                f"top-level model (BlockRequest reached a layer that is not one)")


def _noise(keys, index, like):
    """``u_{l,k}`` for layer ``index``: shape ``(K,) + like.shape``, standard normal."""
    return jax.vmap(lambda k: _random.normal(jax.random.fold_in(k, index), like.shape, like.dtype))(keys)


@jax.custom_vjp
def replace_cotangent(h, c):
    """``h`` in the forward pass; the backward pass returns ``c`` as ``h``'s cotangent, whatever
    arrives from downstream (how a block is trained on an estimated activity gradient)."""
    del c
    return h


def _replace_fwd(h, c):
    return h, c


def _replace_bwd(c, g):
    del g
    return c, jnp.zeros_like(c)


replace_cotangent.defvjp(_replace_fwd, _replace_bwd)


def _check_layers(layers):
    if len(layers) < 2:
        raise LayerError(f"block_serial: expected at least one hidden block and an output layer, "
                         f"got {len(layers)} layer(s)")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise LayerError(f"block_serial: argument {i} must be a jaxlearn.nn Layer, got {type(layer).__name__}")


def block_serial(*layers: Layer, feedback_std: Scalar = 1.0) -> Layer:
    """``layers[-1] ∘ … ∘ layers[0]`` with visible block boundaries (module docstring).

    Params are a tuple with one entry per layer, drawn with the keys ``nn.serial`` uses, so
    ``block_serial(*layers)`` and ``nn.serial(*layers)`` initialise identical params from one key;
    the infinite-width kernel map and learning-rate multipliers are ``nn.serial``'s. Layers with
    state of their own (BatchNorm) get it back only when ``state`` is the dict ``init`` returned.
    ``feedback_std`` scales the DFA feedback matrices (may be a traced scalar).
    """
    _check_layers(layers)
    n = len(layers)

    def init_fn(key, spec):
        params, states, hidden = [], [], []
        for i, layer in enumerate(layers):
            try:
                spec, p, s = layer.init_fn(jax.random.fold_in(key, i), spec)
            except LayerError as e:
                raise LayerError(f"block_serial layer {i} ({layer.name}): {e}") from None
            if isinstance(spec, tuple):
                raise LayerError(f"block_serial layer {i} ({layer.name}): blocks must output one array, got a tuple")
            params.append(p)
            states.append(s)
            hidden.append(spec)
        out = hidden.pop()
        for i, h in enumerate(hidden):
            if h.shape[:-1] != out.shape[:-1]:
                raise LayerError(f"block_serial layer {i} ({layers[i].name}): output shape {list(h.shape)} must "
                                 f"have the leading shape {list(out.shape[:-1])} of the network's output")
        k_feedback = jax.random.fold_in(key, n)
        out_dim = out.shape[-1]
        feedback = tuple(
            feedback_std * _random.normal(jax.random.fold_in(k_feedback, l), (out_dim, h.shape[-1]), h.dtype)
            / jnp.sqrt(jnp.asarray(out_dim, h.dtype))
            for l, h in enumerate(hidden)
        )
        return out, tuple(params), {"layers": tuple(states), "feedback": feedback}

    def apply_fn(params, state, x, key, train):
        request = params if isinstance(params, BlockRequest) else None
        params = request.params if request is not None else params
        if not isinstance(params, (tuple, list)) or len(params) != n:
            raise LayerError(f"block_serial: params must be a tuple with one entry per layer ({n}), as init returns it")
        layer_states = state["layers"] if isinstance(state, dict) else ((),) * n
        kind = None if request is None else request.kind
        if kind == "dfa" and not isinstance(state, dict):
            raise ValueError("dfa: the model state holds no feedback matrices; pass the state that init returned")
        h, hidden, new_states = x, [], []
        for i, (layer, p, s) in enumerate(zip(layers, params, layer_states)):
            inputs = jax.lax.stop_gradient(h) if kind in ("dfa", "local") else h
            h, s = layer.apply_fn(p, s, inputs, None if key is None else jax.random.fold_in(key, i), train)
            new_states.append(s)
            if kind == "perturb":
                t, keys = request.data
                h = h + jnp.tensordot(t.astype(h.dtype), _noise(keys, i, h), 1)
            elif kind == "local":
                coeffs, keys = request.data
                c = jnp.tensordot(coeffs.astype(h.dtype), _noise(keys, i, h), 1) / len(coeffs)
                h = replace_cotangent(h, jax.lax.stop_gradient(c))
            if i < n - 1:
                hidden.append(h)
        if kind == "local":
            # A zero (h - sg(h) = 0) that reaches the loss: a hidden block's output is otherwise only
            # seen through stop_gradient, and JAX would skip its backward pass as symbolically zero.
            h = h + sum(jnp.sum(h_l - jax.lax.stop_gradient(h_l)) for h_l in hidden).astype(h.dtype)
        if kind == "dfa":
            # Zero in value (h - sg(h) = 0 exactly); its gradient hands hidden block l the signal e B_l.
            for h_l, B in zip(hidden, state["feedback"]):
                h = h + (h_l - jax.lax.stop_gradient(h_l)) @ B.T.astype(h_l.dtype)
        new_state = {"layers": tuple(new_states), "feedback": state["feedback"]} if isinstance(state, dict) else state
        return h, new_state

    plain = serial(*layers)  # the same function: its kernel map and learning-rate multipliers apply
    name = "block_serial(" + ", ".join(layer.name for layer in layers) + ")"
    return Layer(init_fn, apply_fn, plain.kernel_fn, name, plain.lr_fn)


def block_mlp(widths: Sequence[int], out_dim: int, activation: str = "relu", W_std: Scalar = 1.0,
              b_std: Scalar | None = 0.0, parameterization: str = "standard", feedback_std: Scalar = 1.0,
              dense: Callable[..., Layer] = Dense) -> Layer:
    """``nn.mlp`` as a :func:`block_serial`: blocks ``serial(dense(w_l), act)`` and ``dense(out_dim)``.

    ``dense`` builds every linear layer, called as ``dense(out_dim, W_std, b_std, parameterization,
    role)`` like :func:`jaxlearn.nn.Dense` (the default). E.g. ``functools.partial(rules.FADense,
    feedback="random")`` gives a feedback-alignment network (Lillicrap et al. 2016) with the same
    params from the same key as the plain one, whose backward pass runs through the feedback
    matrices under every estimator.
    """
    widths = list(widths)
    if not widths:
        raise LayerError("block_mlp: widths must name at least one hidden layer, got []")
    # mup roles by position, as nn.mlp assigns them
    roles = (["input"] + ["hidden"] * (len(widths) - 1) + ["output"] if parameterization == "mup"
             else [None] * (len(widths) + 1))
    blocks = [serial(dense(w, W_std, b_std, parameterization, role), activation_layer(activation))
              for w, role in zip(widths, roles)]
    return block_serial(*blocks, dense(out_dim, W_std, b_std, parameterization, roles[-1]), feedback_std=feedback_std)


@contextlib.contextmanager
def block_request_errors(who: str):
    """Turns the error of a :class:`BlockRequest` reaching a model that is not a :func:`block_serial`
    network into a one-line ``ValueError`` naming the estimator ``who``."""
    try:
        yield
    except (LayerError, TypeError) as err:
        if "BlockRequest" in str(err):
            raise ValueError(f"{who}: the model must be a jaxlearn.rules.block_serial network (the top-level "
                             f"model), whose block boundaries carry the rule's signals") from None
        raise


def routed_value_and_grad(who: str, objective, params, kind: str, data=None):
    """``((loss, aux), grads)`` of ``objective(BlockRequest(params, data, kind))`` w.r.t. ``params``
    (the request's ``data`` is not differentiated)."""
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {list(_KINDS)}, got {kind!r}")
    with block_request_errors(who):
        return jax.value_and_grad(lambda p: objective(BlockRequest(p, data, kind)), has_aux=True)(params)
