"""Local learning: every block trained by its own auxiliary head, no backward signal between blocks.

Nøkland & Eidnes 2019 ("Training neural networks with local error signals", §3: each hidden layer
trained by a classifier of its own — the "pred" loss, a linear head with the network's
cross-entropy — without a global backward pass); Belilovsky, Eickenberg & Oyallon 2019 ("Greedy
layerwise learning can scale to ImageNet", §3: one auxiliary problem per block, small CNN heads) and
2020 ("Decoupled greedy learning of CNNs", Algorithm 1: all blocks trained at once, each on its
auxiliary loss, its input detached).

Network (:func:`local_serial`): ``h_0 = x``, ``h_l = f_l(h_{l-1}; θ_l)`` for blocks ``l = 1, …, L``,
output ``y = h_L``; each hidden block ``l < L`` has a head ``a_l(·; φ_l)`` mapping ``h_l`` to the
output's shape. With the network's loss ``ℓ`` and targets ``t``, :func:`local_losses` returns

    ``Δ(θ_l, φ_l) = ∇_{θ_l, φ_l} ℓ(a_l(f_l(sg(h_{l-1}); θ_l); φ_l), t)``     (hidden blocks, ``l < L``),
    ``Δθ_L = ∇_{θ_L} ℓ(f_L(sg(h_{L-1}); θ_L), t)``                          (the output layer),

``sg`` = stop-gradient: block ``l`` sees no signal from any later block, and its loss sends none to
earlier ones. With ``detach=False`` the inputs are not detached and the update is the gradient of
``Σ_{l<L} ℓ(a_l(h_l)) + ℓ(y)`` (deep supervision: Lee, Xie, Gallagher, Zhang & Tu 2015,
"Deeply-supervised nets", eq. (3) with unit weights).

Mechanism: the estimator never sees the targets. It calls the objective once per block with a
:class:`LocalRequest` wrapping the params (the channel :class:`~jaxlearn.rules.BlockRequest` uses);
the network recognises it and returns head ``l``'s output as *the* network output (the output
layer's for ``l = L``), so the objective applies the configured loss to it. With plain params the
network is exactly ``nn.serial(*layers)`` (heads unused), so evaluation and accuracy are unchanged,
and ``backprop`` gives the heads zero gradients.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax

from jaxlearn._checks import check_bool
from jaxlearn._types import Scalar
from jaxlearn.nn import activation as activation_layer
from jaxlearn.nn.core import Layer, LayerError, serial
from jaxlearn.nn.linear import Dense
from jaxlearn.rules.blocks import Request
from jaxlearn.train.step import Estimator

__all__ = ["LocalRequest", "local_serial", "local_mlp", "local_losses"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LocalRequest(Request):
    """The params of a :func:`local_serial` network and a request from :func:`local_losses`: return the
    output of head ``block`` (0-based; ``block = L - 1``: the output layer's) as the network output,
    with every block input stop-gradient'ed unless ``detach`` is False (both static)."""

    params: Any
    block: int = dataclasses.field(default=0, metadata={"static": True})
    detach: bool = dataclasses.field(default=True, metadata={"static": True})

    def _refusal(self) -> str:
        return ("local_losses needs a jaxlearn.rules.local_serial network as the top-level model "
                "(LocalRequest reached a layer that is not one)")


def _check(layers, heads):
    if len(layers) < 1:
        raise LayerError("local_serial: expected hidden blocks and an output layer, got no layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise LayerError(f"local_serial: argument {i} must be a jaxlearn.nn Layer, got {type(layer).__name__}")
    if not isinstance(heads, (tuple, list)):
        raise LayerError(f"local_serial: heads must be a tuple of jaxlearn.nn Layers, got {type(heads).__name__}")
    if len(heads) != len(layers) - 1:
        raise LayerError(f"local_serial: heads must hold one head per hidden block ({len(layers) - 1}), "
                         f"got {len(heads)}")
    for i, head in enumerate(heads):
        if not isinstance(head, Layer):
            raise LayerError(f"local_serial: heads[{i}] must be a jaxlearn.nn Layer, got {type(head).__name__}")


def local_serial(*layers: Layer, heads: Sequence[Layer]) -> Layer:
    """``layers[-1] ∘ … ∘ layers[0]`` (hidden blocks, then the output layer) with auxiliary ``heads``,
    one per hidden block, each mapping that block's output to the network output's shape (e.g.
    ``nn.Dense(out_dim)``, or ``nn.serial(nn.GlobalAvgPool(), nn.Dense(out_dim))`` after conv blocks).

    ``params = {"blocks": (θ_1, …, θ_L), "heads": (φ_1, …, φ_{L-1})}`` with ``params["blocks"]`` drawn
    with the keys of ``nn.serial`` (``nn.serial(*layers)`` initialises the same blocks from one key) and
    head ``l`` (0-based) from ``fold_in(key, L + l)``; ``state`` likewise a dict. With plain params,
    ``apply`` is ``nn.serial(*layers)`` and its kernel map and block learning-rate multipliers are
    ``nn.serial``'s; a head's multipliers are its own. With no hidden blocks (``heads=()``) local learning
    is backprop. Must be the top-level model given to ``train.make_step`` (module docstring).
    """
    _check(layers, heads)
    heads, n = tuple(heads), len(layers)
    plain = serial(*layers)

    def init_fn(key, spec):
        block_params, block_states, hidden = [], [], []
        for i, layer in enumerate(layers):  # the keys of nn.serial
            try:
                spec, p, s = layer.init_fn(jax.random.fold_in(key, i), spec)
            except LayerError as e:
                raise LayerError(f"local_serial layer {i} ({layer.name}): {e}") from None
            block_params.append(p)
            block_states.append(s)
            hidden.append(spec)
        out = hidden.pop()
        head_params, head_states = [], []
        for l, (head, h) in enumerate(zip(heads, hidden)):
            try:
                head_out, p, s = head.init_fn(jax.random.fold_in(key, n + l), h)
            except LayerError as e:
                raise LayerError(f"local_serial heads[{l}] ({head.name}): {e}") from None
            if getattr(head_out, "shape", None) != out.shape:
                got = list(getattr(head_out, "shape", ()))
                raise LayerError(f"local_serial heads[{l}] ({head.name}): output shape {got} must be the network "
                                 f"output's {list(out.shape)}")
            head_params.append(p)
            head_states.append(s)
        return out, {"blocks": tuple(block_params), "heads": tuple(head_params)}, \
            {"blocks": tuple(block_states), "heads": tuple(head_states)}

    def apply_fn(params, state, x, key, train):
        request = params if isinstance(params, LocalRequest) else None
        params = request.params if request is not None else params
        if not (isinstance(params, dict) and set(params) == {"blocks", "heads"}):
            raise LayerError(f"local_serial: params must be the dict {{'blocks', 'heads'}} that init returns, "
                             f"got {type(params).__name__}")
        if request is not None and not 0 <= request.block < n:
            raise LayerError(f"local_serial: LocalRequest.block must be in [0, {n}), got {request.block}")
        states = state if isinstance(state, dict) else {"blocks": ((),) * n, "heads": ((),) * (n - 1)}
        last = n - 1 if request is None else request.block
        detach = request is not None and request.detach
        h, new_blocks = x, list(states["blocks"])
        for i in range(last + 1):
            inputs = jax.lax.stop_gradient(h) if detach else h
            h, new_blocks[i] = layers[i].apply_fn(params["blocks"][i], states["blocks"][i], inputs,
                                                  None if key is None else jax.random.fold_in(key, i), train)
        new_heads = list(states["heads"])
        if last < n - 1:
            h, new_heads[last] = heads[last].apply_fn(params["heads"][last], states["heads"][last], h,
                                                      None if key is None else jax.random.fold_in(key, n + last), train)
        new_state = {"blocks": tuple(new_blocks), "heads": tuple(new_heads)} if isinstance(state, dict) else state
        return h, new_state

    def lr_fn(spec, optimizer):
        blocks, head_mults = plain.lr_fn(spec, optimizer), []
        for layer, head in zip(layers, heads):
            spec = layer.output_spec(spec)
            head_mults.append(head.lr_multipliers(spec, optimizer))
        return {"blocks": blocks, "heads": tuple(head_mults)}

    name = "local_serial(" + ", ".join(layer.name for layer in layers) + "; heads: " + \
        ", ".join(head.name for head in heads) + ")"
    return Layer(init_fn, apply_fn, plain.kernel_fn, name, lr_fn)


def local_mlp(widths: Sequence[int], out_dim: int, activation: str = "relu", W_std: Scalar = 1.0,
              b_std: Scalar | None = 0.0, parameterization: str = "standard") -> Layer:
    """``nn.mlp`` as a :func:`local_serial`: blocks ``serial(Dense(w_l), act)``, the output layer
    ``Dense(out_dim)``, and a linear head ``Dense(out_dim)`` per hidden block (Nøkland & Eidnes 2019,
    §3, "pred" loss), drawn like the output layer (under ``mup``: the ``output`` role)."""
    widths = list(widths)
    roles = ["input"] + ["hidden"] * (len(widths) - 1) + ["output"] if parameterization == "mup" \
        else [None] * (len(widths) + 1)
    blocks = [serial(Dense(w, W_std, b_std, parameterization, role), activation_layer(activation))
              for w, role in zip(widths, roles)]
    heads = [Dense(out_dim, W_std, b_std, parameterization, roles[-1]) for _ in widths]
    return local_serial(*blocks, Dense(out_dim, W_std, b_std, parameterization, roles[-1]), heads=heads)


def local_losses(detach: bool = True) -> Estimator:
    """Local learning with auxiliary heads (module docstring: Nøkland & Eidnes 2019, §3; Belilovsky
    et al. 2020, Algorithm 1) as a gradient estimator for ``train.make_step(..., grad_estimator=...)``; the
    model must be a :func:`local_serial` network (e.g. :func:`local_mlp`), trained with its usual loss.

    Block ``l`` and head ``l`` are updated by the gradient of ``ℓ(a_l(f_l(sg(h_{l-1}))), t)``, the output
    layer by that of ``ℓ(f_L(sg(h_{L-1})), t)``; ``detach=False`` drops the ``sg`` (deep supervision,
    the gradient of the sum of all ``L`` losses). Returned ``(loss, aux)``: those of the real network
    output (the last call), so the model state (BatchNorm statistics) is the one that call returns:
    statistics inside heads are not updated. ``key`` is unused. No custom rule: ``jvp``/``grad`` of the
    estimate work.

    Cost: ``L`` calls of the objective inside one trace, call ``l`` a forward pass through blocks
    ``1..l`` and head ``l`` and (with ``detach``) a backward pass through block ``l`` and head ``l``
    only: ``L(L+1)/2`` block forwards as written. The prefixes are the same computation on the same
    inputs (``sg`` is the identity forward), which XLA's common-subexpression elimination may merge
    under ``jit``; without it, prefer few, wide blocks.
    """
    check_bool(detach, "detach", where="local_losses")

    def estimator(objective, params, key):
        del key
        if not (isinstance(params, dict) and set(params) == {"blocks", "heads"} and params["blocks"]):
            raise ValueError(f"local_losses: params must be those of a jaxlearn.rules.local_serial network (a "
                             f"dict with keys 'blocks' and 'heads'), got {type(params).__name__}")

        def local(block):
            return jax.value_and_grad(lambda p: objective(LocalRequest(p, block, detach)), has_aux=True)(params)

        grads = None
        for l in range(len(params["blocks"])):
            try:
                (loss, aux), g = local(l)
            except (LayerError, TypeError) as err:
                if "LocalRequest" not in str(err):
                    raise
                raise ValueError("local_losses: the model must be a jaxlearn.rules.local_serial network (the "
                                 "top-level model), whose heads give the blocks their local losses") from None
            grads = g if grads is None else jax.tree.map(lambda a, b: a + b, grads, g)
        return (loss, aux), grads

    return estimator
