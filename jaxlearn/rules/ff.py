"""Forward-forward: every layer trained to tell positive from negative data by its own goodness.

Hinton 2022, "The Forward-Forward Algorithm: Some preliminary investigations", §2–3. Conventions:

* **Label embedding** (the supervised variant, §3.3): the input is flattened and the one-hot label
  ``e_c`` concatenated to it, ``[x, e_c]`` (Hinton instead overwrote the first 10 pixels of MNIST).
  Positive data carries the correct label, negative data a wrong one.
* **Layers**: ``h_{l,c} = φ(W_l a_{l-1,c} + b_l)`` with ``a_{0,c} = [x, e_c]`` and, between layers, the
  length-normalised activity ``a_{l,c} = h_{l,c} / rms(h_{l,c})`` (Hinton §2.1: "normalize the length of
  the hidden vector before using it as input to the next layer", so only its orientation passes on;
  ``rms(h) = √(mean_j h_j² + 10⁻⁶)``, i.e. length ``√width``, which keeps the next layer's inputs on the
  unit scale its ``Dense`` initialisation assumes).
* **Goodness**: ``g_{l,c} = mean_j h_{l,c,j}²`` (Hinton sums the squares; the mean makes the threshold
  ``θ`` independent of the width). Probability that the input is positive: ``σ(g − θ)`` (eq. (1)).
* **Layer loss** (for example ``n`` with label ``y``): ``ℓ_l = softplus(θ − g_{l,y}) + softplus(g_{l,ȳ} − θ)``,
  ``ȳ`` a wrong label chosen by ``negatives``: ``"all"`` — the mean over every wrong label
  (deterministic); ``"random"`` — ``ȳ = (y + r) mod C`` with ``r ~ U{1, …, C−1}`` per example,
  ``r = jax.random.randint(key, (N,), 1, C)`` from the estimator key (Hinton's random wrong label);
  ``"hardest"`` — the wrong label of highest inference score ``G`` (below) under the current params (the model's own
  top wrong prediction; Hinton §3.3 draws hard negatives from the network's predictions). The same
  ``ȳ`` serves every layer, as one negative image would.
* **No backward pass between layers**: ``a_{l-1}`` enters layer ``l`` stop-gradient'ed, so layer ``l`` is
  trained by ``∇_{θ_l} ℓ_l`` alone.
* **Inference** (§3.3): for every candidate label ``c``, ``G_c = Σ_l g_{l,c}`` (without the first layer
  if ``skip_first``, as Hinton does), prediction ``argmax_c G_c``.

Mechanism: the network's plain output is ``G`` ``(N, C)``, so ``train.accuracy`` evaluates it. The
estimator :func:`forward_forward` never sees the labels; it calls the objective with an
:class:`FFRequest` (threshold, negatives, key), and the network answers with the per-label
log-likelihoods ``S_c = Σ_l [log σ(g_{l,c} − θ) + log σ(θ − g_{l,ȳ(c)})]`` (``ȳ(c)``: the negative for
label ``c``; for ``"all"`` the second term is the mean over ``c' ≠ c``). The loss paired with this rule,
:func:`forward_forward_loss` ``= −mean_n S_{n, y_n}``, is then exactly ``Σ_l mean_n ℓ_l``, and its
gradient is the forward-forward update (layer ``l``'s params see only ``ℓ_l``). One forward pass over
all ``C`` labels, ``C`` times an ordinary one; one backward pass, inside each layer only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Sequence

import jax
import jax.numpy as jnp

from jaxlearn._checks import check_bool, check_int, is_int, is_real
from jaxlearn._types import Array, Scalar
from jaxlearn.nn import activation as activation_layer
from jaxlearn.nn.core import Layer, LayerError, describe_spec, serial
from jaxlearn.nn.linear import Dense
from jaxlearn.rules.blocks import Request
from jaxlearn.train.step import Estimator

__all__ = ["NEGATIVES", "FFRequest", "ff_mlp", "forward_forward", "forward_forward_loss"]

NEGATIVES = ("all", "hardest", "random")
_EPS = 1e-6


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FFRequest(Request):
    """The params of an :func:`ff_mlp` network and a request from :func:`forward_forward`: return the
    per-label log-likelihoods ``S`` (module docstring) for threshold ``threshold`` and negatives
    ``negatives`` (static), drawing random negatives from ``key``."""

    params: Any
    threshold: Any = 1.0
    key: Any = None
    negatives: str = dataclasses.field(default="all", metadata={"static": True})

    def _refusal(self) -> str:
        return ("forward_forward needs a jaxlearn.rules.ff_mlp network as the top-level model "
                "(FFRequest reached a layer that is not one)")


def _normalize(h):
    """``h / √(mean_j h_j² + 10⁻⁶)`` on the last axis: length ``√width`` (module docstring)."""
    return h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + _EPS)


def _log_likelihoods(goodness, total, request):
    """``S`` (N, C) from the per-layer goodness (N, C) and the summed inference goodness ``total``."""
    n, num = total.shape
    theta = request.threshold
    if request.negatives == "hardest":
        wrong = jnp.where(jnp.eye(num, dtype=bool), -jnp.inf, jax.lax.stop_gradient(total)[:, None, :])
        negative = jnp.argmax(wrong, axis=-1)  # (N, C): the negative label when c is the label
    elif request.negatives == "random":
        offset = jax.random.randint(request.key, (n,), 1, num)
        negative = (jnp.arange(num)[None, :] + offset[:, None]) % num
    score = 0.0
    for g in goodness:
        log_neg = jax.nn.log_sigmoid(theta - g)
        if request.negatives == "all":
            neg = (jnp.sum(log_neg, axis=-1, keepdims=True) - log_neg) / (num - 1)
        else:
            neg = jnp.take_along_axis(log_neg, negative, axis=-1)
        score = score + jax.nn.log_sigmoid(g - theta) + neg
    return score


def ff_mlp(widths: Sequence[int], num_classes: int, activation: str = "relu", W_std: Scalar = 1.0,
           b_std: Scalar | None = 0.0, skip_first: bool = False) -> Layer:
    """A forward-forward MLP (module docstring): layers ``serial(Dense(w_l, W_std, b_std), act)`` on the
    flattened input with the one-hot label concatenated, length-normalised activities between layers.

    ``apply(params, x)`` for ``x: (N, ...)`` returns the summed goodness ``G: (N, num_classes)`` of every
    candidate label (first layer left out if ``skip_first``, which needs two layers or more), so the
    prediction is ``argmax``. Params: a tuple with one entry per layer; no state; no infinite-width
    kernel. Train it with :func:`forward_forward` and :func:`forward_forward_loss`; as a plain
    differentiable function it also trains under ``backprop`` (normalisation then not detached).
    """
    widths = list(widths) if isinstance(widths, (tuple, list)) else widths
    if not isinstance(widths, list) or not widths or not all(is_int(w) and w > 0 for w in widths):
        raise LayerError(f"ff_mlp: widths must be a non-empty list of positive ints, got {widths!r}")
    check_int(num_classes, "num_classes", minimum=2, where="ff_mlp", error=LayerError, expected="an int ≥ 2")
    check_bool(skip_first, "skip_first", where="ff_mlp", error=LayerError)
    if skip_first and len(widths) < 2:
        raise LayerError(f"ff_mlp: skip_first needs at least two layers (the first is left out of the goodness), "
                         f"got widths {widths}")
    blocks = [serial(Dense(w, W_std, b_std), activation_layer(activation)) for w in widths]
    num, skip, name = num_classes, int(skip_first), f"ff_mlp({widths}, {num_classes}, {activation})"

    def embed(x):
        flat = x.reshape(x.shape[0], 1, -1)
        labels = jnp.broadcast_to(jnp.eye(num, dtype=flat.dtype), (x.shape[0], num, num))
        return jnp.concatenate([jnp.broadcast_to(flat, (x.shape[0], num, flat.shape[-1])), labels], axis=-1)

    def init_fn(key, spec):
        if isinstance(spec, tuple) or len(spec.shape) < 2 or not jnp.issubdtype(spec.dtype, jnp.floating):
            raise LayerError(f"{name}: expects one floating-point input with a batch axis, got {describe_spec(spec)}")
        s = jax.ShapeDtypeStruct((spec.shape[0], num, math.prod(spec.shape[1:]) + num), spec.dtype)
        params = []
        for i, block in enumerate(blocks):
            s, p, _ = block.init_fn(jax.random.fold_in(key, i), s)
            params.append(p)
        return jax.ShapeDtypeStruct((spec.shape[0], num), s.dtype), tuple(params), ()

    def apply_fn(params, state, x, key, train):
        request = params if isinstance(params, FFRequest) else None
        params = request.params if request is not None else params
        if not isinstance(params, (tuple, list)) or len(params) != len(blocks):
            raise LayerError(f"{name}: params must be a tuple with one entry per layer ({len(blocks)}), as init "
                             f"returns it; got {type(params).__name__}")
        h, goodness = embed(x), []
        for i, (block, p) in enumerate(zip(blocks, params)):
            a = _normalize(h) if i > 0 else h
            h, _ = block.apply_fn(p, (), jax.lax.stop_gradient(a) if request is not None else a, None, train)
            goodness.append(jnp.mean(jnp.square(h), axis=-1))
        total = sum(goodness[skip:])
        return (total if request is None else _log_likelihoods(goodness, total, request)), state

    return Layer(init_fn, apply_fn, None, name)


def _check_threshold(threshold):
    if not (is_real(threshold) or (hasattr(threshold, "shape") and jnp.shape(threshold) == ())):
        raise TypeError(f"forward_forward: threshold must be a real scalar, got {threshold!r}")


def forward_forward(threshold: Scalar = 1.0, negatives: Literal["all", "hardest", "random"] = "all") -> Estimator:
    """Forward-forward (Hinton 2022, §2–3, eq. (1); module docstring) as a gradient estimator for
    ``train.make_step(..., grad_estimator=...)``; the model must be an :func:`ff_mlp` network and the
    loss :func:`forward_forward_loss` (the two are selected together).

    Layer ``l``'s update is ``∇_{θ_l} mean_n [softplus(θ − g_{l,y}) + softplus(g_{l,ȳ} − θ)]`` with its input
    detached; ``threshold`` is ``θ`` for the mean-of-squares goodness (a float, or a traced scalar for
    sweeps); ``negatives`` in :data:`NEGATIVES` picks ``ȳ`` (``"random"`` draws from ``key``, the others
    ignore it). Returned ``(loss, aux)``: those of the objective on the log-likelihoods ``S``, i.e. the
    summed layer losses ``Σ_l mean_n ℓ_l``; metrics computed there (e.g. accuracy) see ``S``, not the
    goodness ``G`` that evaluation with plain params sees. No custom rule: ``jvp``/``grad`` of the
    estimate work.
    """
    _check_threshold(threshold)
    if negatives not in NEGATIVES:
        raise ValueError(f"forward_forward: negatives must be one of {list(NEGATIVES)}, got {negatives!r}")

    def estimator(objective, params, key):
        if negatives == "random" and key is None:
            raise ValueError("forward_forward: negatives='random' needs a PRNG key, got None")
        data_key = key if negatives == "random" else None
        try:
            return jax.value_and_grad(lambda p: objective(FFRequest(p, threshold, data_key, negatives)),
                                      has_aux=True)(params)
        except (LayerError, TypeError) as err:
            # a request reaching another model: it fails on the request's type (nn.serial, Dense, ...)
            # or, for block_serial, on params that are not a tuple
            if "FFRequest" not in str(err) and "params must be a tuple" not in str(err):
                raise
            raise ValueError("forward_forward: the model must be a jaxlearn.rules.ff_mlp network (the top-level "
                             "model), which answers with per-label goodness log-likelihoods") from None

    return estimator


def forward_forward_loss(outputs: Array, targets: Array) -> Array:
    """The loss paired with :func:`forward_forward`: ``−mean_n Σ_c t_{n,c} S_{n,c}``, the negative
    log-likelihood of the target label (integer labels ``(N,)`` or probabilities ``(N, C)``).

    On the log-likelihoods ``S`` that an :func:`ff_mlp` network returns to the estimator it is the
    forward-forward loss ``Σ_l mean_n ℓ_l`` (module docstring); on the plain output (evaluation) it is
    ``−mean_n G_{n, y_n}``, minus the summed goodness of the correct label.
    """
    if outputs.ndim != 2:
        raise ValueError(f"outputs: expected per-label scores (N, C), got shape {list(outputs.shape)}")
    if jnp.issubdtype(targets.dtype, jnp.integer):
        if targets.shape != outputs.shape[:1]:
            raise ValueError(f"targets: expected integer labels of shape {list(outputs.shape[:1])}, got "
                             f"{list(targets.shape)}")
        return -jnp.mean(jnp.take_along_axis(outputs, targets[:, None], axis=-1))
    if targets.shape != outputs.shape:
        raise ValueError(f"targets: expected probabilities of shape {list(outputs.shape)}, got {list(targets.shape)}")
    return -jnp.mean(jnp.sum(targets * outputs, axis=-1))
