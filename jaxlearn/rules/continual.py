"""Elastic weight consolidation and the diagonal Fisher information it weighs parameters by.

Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks" (PNAS), eq. (3):
after a task A with parameters ``θ*_A``, learning task B minimises

    ``L(θ) = L_B(θ) + Σ_i (λ/2) F_i (θ_i − θ*_{A,i})²``,

with ``F`` the diagonal of the Fisher information of the model at ``θ*_A`` on task A's inputs.

The Fisher diagonal (Martens 2020, "New insights and perspectives on the natural gradient method",
§9; Kunstner, Balles & Hennig 2019, "Limitations of the empirical Fisher approximation") is an
average of *per-example* squared score functions,

    ``F_i = (1/N) Σ_n E_{ŷ ~ p(·|x_n, θ)} [(∂ log p(ŷ | x_n, θ) / ∂θ_i)²]``,

never the square of the mean gradient (which vanishes at a minimum). :func:`fisher_diagonal` offers

* ``kind="true"``: one ``ŷ_n`` sampled from the model's predictive distribution per example (an
  unbiased Monte-Carlo estimate of the above);
* ``kind="exact"``: the expectation in closed form — ``Σ_c p_c (∂ log p_c/∂θ_i)²`` over the classes for
  classification, ``Σ_k (∂f_k/∂θ_i)²`` over the outputs for unit-variance Gaussian regression — computed
  as ``F_n = diag(J_nᵀ H_n J_n)`` with ``H_n`` the Fisher of the predictive distribution in the output,
  which for these exponential families is the output Hessian of the negative log-likelihood (Martens
  2020, §9.2) that the per-example loss declares (:class:`jaxlearn.train.PerExampleLoss`:
  ``diag(p) − p pᵀ`` for softmax cross-entropy, ``I`` for ``N(f, I)``); ``C`` or ``K`` backward passes
  per example;
* ``kind="empirical"``: ``ŷ_n = y_n``, the data's labels — Kunstner et al.'s empirical Fisher, which is
  *not* the Fisher (it need not even share its eigenvectors) though it is often used in its place.

Predictive distributions: ``loss="softmax_cross_entropy"`` — categorical over ``softmax(f(x))``;
``loss="mse"`` — ``N(f(x), I)`` (unit variance on every output entry; a different variance ``σ²``
scales ``F`` by ``1/σ²``, which ``strength`` absorbs); or a callable log-likelihood (empirical only).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxlearn import _random
from jaxlearn._checks import check_int, is_real
from jaxlearn._types import Array, ArrayLike, PyTree, Scalar
from jaxlearn.train.losses import (
    PerExampleLoss,
    check_per_example_loss,
    output_hessian_vp,
    per_example_mse,
    per_example_softmax_cross_entropy,
)
from jaxlearn.train.pytrees import check_like
from jaxlearn.train.step import Estimator, backprop

__all__ = ["FISHER_KINDS", "FISHER_LOSSES", "fisher_diagonal", "ewc_penalty", "ewc", "ewc_combine"]

FISHER_KINDS = ("true", "exact", "empirical")
FISHER_LOSSES = ("softmax_cross_entropy", "mse")


def _gaussian_nll(output, target):
    """``−log N(target | output, I)`` up to a constant: ``½‖f − y‖² = K · mse(f, y)`` (the per-example
    ``mse`` is ``½ · mean`` over the ``K`` entries). Output Hessian ``I``."""
    return jnp.size(output) * per_example_mse(output, target)


def _gaussian_nll_hvp(output, target, u):
    return jnp.size(output) * per_example_mse.output_hvp(output, target, u)


class _Likelihood(NamedTuple):
    """A named predictive distribution ``p(ŷ | f)`` of one example's output ``f``: ``nll(f, ŷ) =
    −log p(ŷ | f)`` (a per-example loss declaring its output Hessian, which for these exponential
    families in their natural parameter is the Fisher of ``p`` in ``f`` and does not depend on ``ŷ``;
    Martens 2020, §9.2), ``sample(key, f) -> ŷ``, and ``any_target(f)``, a target to evaluate it at."""

    nll: Callable
    sample: Callable
    any_target: Callable


_LIKELIHOODS = {
    "softmax_cross_entropy": _Likelihood(per_example_softmax_cross_entropy, jax.random.categorical,
                                         lambda out: jnp.zeros((), jnp.int32)),
    "mse": _Likelihood(PerExampleLoss(_gaussian_nll, _gaussian_nll_hvp, "gaussian_nll"),
                       lambda key, out: out + _random.normal(key, out.shape, out.dtype),
                       lambda out: out),
}


def _sampled_score_cotangent(kind, loss, out, y_n, key_n):
    """The cotangent on one example's output whose vjp is the score ``∂ log p(ŷ_n | x_n, θ)/∂θ`` up to
    its sign (``ŷ_n`` sampled for ``kind="true"``, the label for ``"empirical"``): ``∇_f`` of the
    negative log-likelihood (or of the given log-likelihood function) at ``ŷ_n``."""
    if callable(loss):
        return jax.grad(loss)(out, y_n)
    likelihood = _LIKELIHOODS[loss]
    target = likelihood.sample(key_n, out) if kind == "true" else y_n
    return jax.grad(likelihood.nll)(out, target)


def _exact_fisher_example(vjp, out, loss):
    """``diag(Jᵀ H J)`` of one example as a pytree like the params: ``Σ_kl J_ki H_kl J_li`` with the
    ``K`` rows of ``J = ∂f/∂θ`` from ``K`` vjps and ``H`` (the Fisher of the predictive distribution in
    the output ``f``) applied to each parameter's column ``J_{:,i}`` by the declared output-Hessian
    product. Memory: two ``K × |θ|`` arrays per example."""
    likelihood = _LIKELIHOODS[loss]
    k = out.size
    rows = jax.vmap(lambda c: vjp(c)[0])(jnp.eye(k, dtype=out.dtype).reshape((k,) + out.shape))
    target = likelihood.any_target(out)

    def diagonal(r):  # r: (K, *leaf) = J restricted to one leaf
        columns = r.reshape(k, -1).T.reshape((-1,) + out.shape)
        h_columns = jax.vmap(lambda u: output_hessian_vp(likelihood.nll, out, target, u))(columns)
        return jnp.sum(r * h_columns.reshape(-1, k).T.reshape(r.shape), axis=0)

    return jax.tree.map(diagonal, rows)


def _check_fisher_args(apply_fn, params, x, kind, y, key, loss, batch_size):
    if not callable(apply_fn):
        raise TypeError(f"fisher_diagonal: apply_fn must be a function (params, x) -> outputs, got "
                        f"{type(apply_fn).__name__}")
    if kind not in FISHER_KINDS:
        raise ValueError(f"fisher_diagonal: kind must be one of {list(FISHER_KINDS)}, got {kind!r}")
    if callable(loss):
        check_per_example_loss("fisher_diagonal: loss", loss)
    elif loss not in FISHER_LOSSES:
        raise ValueError(f"fisher_diagonal: loss must be one of {list(FISHER_LOSSES)} or a log-likelihood function "
                         f"(output, target) -> scalar, got {loss!r}")
    if callable(loss) and kind != "empirical":
        raise ValueError(f"fisher_diagonal: kind={kind!r} samples from the model's predictive distribution, known only "
                         f"for loss in {list(FISHER_LOSSES)}; a log-likelihood function needs kind='empirical'")
    if not hasattr(x, "shape") or len(x.shape) < 1 or x.shape[0] < 1:
        raise ValueError(f"fisher_diagonal: x must be an array with a leading example axis of size >= 1, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    check_int(batch_size, "batch_size", minimum=1, optional=True, where="fisher_diagonal")
    if kind == "true" and key is None:
        raise ValueError("fisher_diagonal: kind='true' samples ŷ from the model and needs a PRNG key, got key=None")
    if kind != "empirical" and y is not None:
        raise ValueError(f"fisher_diagonal: y is used only by kind='empirical' (kind={kind!r} takes ŷ from the model); "
                         f"pass y=None")
    for leaf in jax.tree.leaves(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"fisher_diagonal: params must have floating-point leaves, got dtype "
                             f"{jnp.result_type(leaf)}")
    out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((1,) + tuple(x.shape[1:]), x.dtype))
    if not hasattr(out, "shape") or len(out.shape) < 1 or out.shape[0] != 1:
        raise ValueError(f"fisher_diagonal: apply_fn must map a batch (n, ...) to one output array (n, ...), got "
                         f"{out} for n = 1")
    if loss == "softmax_cross_entropy" and len(out.shape) != 2:
        raise ValueError(f"fisher_diagonal: loss='softmax_cross_entropy' needs logits of shape (n, classes), got "
                         f"{tuple(out.shape)} for n = 1")
    if kind == "empirical":
        if y is None:
            raise ValueError("fisher_diagonal: kind='empirical' uses the labels y; got y=None")
        if not hasattr(y, "shape") or len(y.shape) < 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"fisher_diagonal: y must have the leading size {x.shape[0]} of x, got "
                             f"{getattr(y, 'shape', type(y).__name__)}")
        if loss == "softmax_cross_entropy":
            if len(y.shape) != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
                raise ValueError(f"fisher_diagonal: y must hold integer class labels of shape ({x.shape[0]},), got "
                                 f"{y.dtype}{list(y.shape)}")
        elif loss == "mse" and tuple(y.shape[1:]) != tuple(out.shape[1:]):
            raise ValueError(f"fisher_diagonal: y must have the per-example output shape {tuple(out.shape[1:])}, got "
                             f"{tuple(y.shape[1:])}")


def fisher_diagonal(apply_fn: Callable, params: PyTree, x: ArrayLike, *,
                    kind: Literal["true", "exact", "empirical"] = "true", y: ArrayLike | None = None,
                    key: jax.Array | None = None, loss: Any = "softmax_cross_entropy",
                    batch_size: int | None = None) -> PyTree:
    """The diagonal of the Fisher information, ``F_i = (1/N) Σ_n E_ŷ[(∂ log p(ŷ|x_n, θ)/∂θ_i)²]``, as a
    pytree like ``params`` (module docstring; Martens 2020, §9; Kunstner et al. 2019).

    ``apply_fn(params, x_batch) -> outputs`` maps ``(n, ...)`` inputs to ``(n, ...)`` outputs (logits
    ``(n, C)`` for ``loss="softmax_cross_entropy"``); it is called on one example at a time
    (``n = 1``), so a model must act on examples independently (evaluation mode, e.g.
    ``lambda p, x: model.apply(p, x, state)``). ``x: (N, ...)``.

    ``kind``: ``"true"`` (``ŷ_n`` sampled with ``jax.random.categorical`` / ``normal`` from
    ``fold_in(key, n)``: the result does not depend on ``batch_size``), ``"exact"`` (the expectation in
    closed form; ``C`` or ``K`` vjps per example) or ``"empirical"`` (``ŷ_n = y_n``: integer labels
    ``(N,)``, or regression targets shaped like the per-example outputs). ``loss``:
    ``"softmax_cross_entropy"``, ``"mse"`` (``N(f, I)``) or, for ``"empirical"``, a log-likelihood
    ``log_p(output_n, y_n) -> scalar`` on one example (no batch axis).

    Per-example score vectors come from one forward pass and one vjp per example (vmapped), squared and
    summed — never the square of the mean gradient; ``exact`` takes the ``C`` (or ``K``) rows of the
    per-example Jacobian by vjps and contracts them with the declared output Hessian. ``batch_size`` bounds
    memory: examples are processed in chunks of that many (``lax.scan``; the last chunk padded and
    masked), so at most ``batch_size × |θ|`` (times ``2C`` for ``exact``) per-example numbers exist at once.
    Works under ``jit`` / ``vmap`` (over keys, params or data).
    """
    _check_fisher_args(apply_fn, params, x, kind, y, key, loss, batch_size)
    n = x.shape[0]
    chunk = n if batch_size is None else min(batch_size, n)
    chunks = math.ceil(n / chunk)
    pad = chunks * chunk - n
    index = jnp.arange(chunks * chunk)

    def padded(a):
        return jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a

    xs = padded(x).reshape((chunks, chunk) + tuple(x.shape[1:]))
    ys = None if y is None else padded(y).reshape((chunks, chunk) + tuple(y.shape[1:]))
    idx = index.reshape(chunks, chunk)

    def per_example(x_n, y_n, i):
        out, vjp = jax.vjp(lambda p: apply_fn(p, x_n[None])[0], params)
        if kind == "exact":
            squares = _exact_fisher_example(vjp, out, loss)
        else:
            key_n = None if key is None else jax.random.fold_in(key, i)
            score = vjp(_sampled_score_cotangent(kind, loss, out, y_n, key_n))[0]
            squares = jax.tree.map(jnp.square, score)
        real = i < n  # padding counts for nothing
        return jax.tree.map(lambda s: jnp.where(real, s, jnp.zeros_like(s)), squares)

    def body(total, inputs):
        x_c, y_c, i_c = inputs
        squares = jax.vmap(per_example)(x_c, y_c, i_c)
        return jax.tree.map(lambda t, s: t + jnp.sum(s, 0), total, squares), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(body, zeros, (xs, ys, idx))
    return jax.tree.map(lambda t, p: (t / n).astype(jnp.result_type(p)), total, params)


def _check_strength(who, strength):
    if not (is_real(strength) or hasattr(strength, "dtype")):
        raise TypeError(f"{who}: strength must be a number (λ >= 0), got {type(strength).__name__}")
    if is_real(strength) and not strength >= 0:
        raise ValueError(f"{who}: strength must be >= 0, got {strength!r}")
    if hasattr(strength, "dtype") and jnp.ndim(strength) != 0:
        raise ValueError(f"{who}: strength must be a scalar, got shape {jnp.shape(strength)}")


def ewc_penalty(params: PyTree, anchor: PyTree, fisher: PyTree, strength: Scalar) -> Array:
    """``(λ/2) Σ_i F_i (θ_i − θ*_i)²`` (Kirkpatrick et al. 2017, eq. (3)) summed over all leaves.

    ``anchor`` (``θ*``, the previous task's parameters) and ``fisher`` (``F``, e.g. from
    :func:`fisher_diagonal` at ``θ*``) are pytrees like ``params``; ``strength`` is ``λ >= 0`` (may
    be a traced scalar). Its gradient is ``λ F ⊙ (θ − θ*)``.
    """
    _check_strength("ewc_penalty", strength)
    check_like("ewc_penalty: anchor", anchor, params)
    check_like("ewc_penalty: fisher", fisher, params)
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)), params, anchor, fisher)
    return 0.5 * strength * sum(jax.tree.leaves(terms))


def ewc_combine(anchors: Sequence[PyTree], fishers: Sequence[PyTree]) -> tuple[PyTree, PyTree]:
    """One ``(anchor, fisher)`` whose penalty has the gradient of the sum of the per-task penalties
    ``Σ_t (λ/2) Σ_i F_{t,i} (θ_i − θ*_{t,i})²`` (Kirkpatrick et al. 2017, §2: one penalty per previous task):
    ``F = Σ_t F_t``, ``θ* = Σ_t F_t θ*_t / F`` (``θ*`` of the last task where ``F = 0``). The penalties differ
    by a constant in ``θ``, so training is the same."""
    anchors, fishers = list(anchors), list(fishers)
    if not anchors or len(anchors) != len(fishers):
        raise ValueError(f"ewc_combine: expected equally many (>= 1) anchors and fishers, got {len(anchors)} and "
                         f"{len(fishers)}")
    for a, f in zip(anchors, fishers):
        check_like("ewc_combine: every anchor", a, anchors[0], "the first anchor")
        check_like("ewc_combine: every fisher", f, anchors[0], "the first anchor")
    fisher = jax.tree.map(lambda *fs: sum(fs), *fishers)
    weighted = jax.tree.map(lambda *fa: sum(f * a for f, a in zip(fa[:len(fishers)], fa[len(fishers):])),
                            *fishers, *anchors)
    anchor = jax.tree.map(lambda w, f, last: jnp.where(f > 0, w / jnp.where(f > 0, f, 1), last),
                          weighted, fisher, anchors[-1])
    return anchor, fisher


def ewc(anchor: PyTree, fisher: PyTree, strength: Scalar, base: Estimator | None = None) -> Estimator:
    """Elastic weight consolidation (Kirkpatrick et al. 2017, eq. (3)) as a gradient estimator:
    the ``base`` estimator's gradients plus the penalty's, ``grads + λ F ⊙ (θ − θ*)``.

    ``anchor`` (``θ*``) and ``fisher`` (``F``, :func:`fisher_diagonal`) are pytrees like the params;
    ``strength`` is ``λ >= 0``; ``base``: ``None`` (exact backprop, :func:`jaxlearn.train.backprop`) or a
    gradient estimator; by name, ``jaxlearn.rules.estimator("ewc", ..., base="dfa")`` (the registry
    builds the named base with its defaults and wraps this function).
    Several previous tasks: sum their penalties with :func:`ewc_combine`.

    Returns ``((loss + penalty, aux), grads)``: the reported loss includes the penalty; ``aux`` is the
    objective's, unchanged, so ``make_step``'s ``metrics["loss"]`` remains the task loss alone.
    """
    _check_strength("ewc", strength)
    check_like("ewc: fisher", fisher, anchor, "anchor")
    if base is None:
        base_estimator = backprop
    elif isinstance(base, str):
        raise TypeError(f"ewc: base must be None or a gradient estimator, got the name {base!r}; by name: "
                        f"jaxlearn.rules.estimator('ewc', ..., base={base!r})")
    elif callable(base):
        base_estimator = base
    else:
        raise TypeError(f"ewc: base must be None or a gradient estimator, got {type(base).__name__}")

    def estimator(objective, params, key):
        check_like("ewc: anchor", anchor, params)
        (loss, aux), grads = base_estimator(objective, params, key)
        penalty = ewc_penalty(params, anchor, fisher, strength)
        grads = jax.tree.map(lambda g, p, a, f: g + (strength * f * (p - a)).astype(jnp.result_type(g)),
                             grads, params, anchor, fisher)
        return (loss + penalty.astype(jnp.result_type(loss)), aux), grads

    return estimator
