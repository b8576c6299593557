"""Losses and metrics: one definition per loss, in a per-example and a batch-mean form.

* **Per-example** (:class:`PerExampleLoss`): ``loss(output, target) -> scalar`` for ONE example (no
  batch axis), carrying its output-Hessian-vector product ``loss.output_hvp(output, target, u) =
  ∇²_f ℓ(f, y) u`` (``u`` shaped like ``output``) in closed form. Curvature needs this form: the
  generalized Gauss–Newton matrix ``G = (1/N) Σ_i J_iᵀ H_i J_i`` (Schraudolph 2002; Martens 2020,
  "New insights and perspectives on the natural gradient method", §8) and the Fisher (Martens 2020,
  §9) take ``H_i u`` from what the loss declares; :func:`output_hessian_vp` falls back to the exact
  forward-over-reverse product for a per-example loss that declares none.
* **Batch-mean** (:class:`BatchMeanLoss`): ``loss(outputs, targets) -> scalar`` over a batch, the mean
  of the per-example loss over the leading (example) axis — what :func:`jaxlearn.train.make_step` and
  the experiments take. ``loss.per_example`` is its per-example form; a batch-mean loss passed where a
  per-example one is needed is a one-line ``TypeError`` (:func:`check_per_example_loss`).

Conventions (``N`` examples, ``C`` classes, ``K`` output entries per example):

* :data:`softmax_cross_entropy` — ``mean_n [logsumexp(f_n) − ⟨t_n, f_n⟩]``; targets are integer
  labels ``(N,)`` (``t_n = e_{y_n}``) or probability vectors ``(N, C)``. Output Hessian of one
  example: ``(Σ_c t_c)(diag(p) − p pᵀ)`` with ``p = softmax(f)`` (``diag(p) − p pᵀ`` for a label or
  a distribution).
* :data:`mse` — ``½ · mean over all entries of (f − y)²``: per example ``½ · mean_k (f_k − y_k)²``,
  output Hessian ``I / K``. This is the loss whose gradient-flow solution
  ``jaxlearn.kernels.gradient_descent_mse`` describes (with the mean over *all* entries, a network of
  ``C`` outputs sees each output's residual divided by ``N·C``).
* :data:`hinge` — binary ``mean max(0, 1 − y·f)`` for ``y ∈ {−1, +1}`` and outputs ``(N,)`` or
  ``(N, 1)``; multiclass (Crammer & Singer 2001) ``mean max(0, 1 + max_{j≠y} f_j − f_y)`` for integer
  labels and outputs ``(N, C)``. Piecewise linear: output Hessian ``0`` (almost everywhere).
* :func:`accuracy` — fraction of ``argmax f_n == y_n`` (integer or one-hot targets).

A per-example output with extra axes before the last (a sequence ``(T, C)`` with labels ``(T,)``) is
averaged over them, so the batch mean is the mean over all positions, as for a flat batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxlearn._checks import did_you_mean
from jaxlearn._types import Array, ArrayLike

__all__ = ["PerExampleLoss", "BatchMeanLoss", "per_example_softmax_cross_entropy", "per_example_mse",
           "per_example_hinge", "softmax_cross_entropy", "mse", "hinge", "accuracy", "output_hessian_vp",
           "check_per_example_loss", "LOSSES", "loss_by_name"]


@dataclasses.dataclass(frozen=True, repr=False)
class PerExampleLoss:
    """A loss of ONE example, ``loss(output, target) -> scalar``, with its output-Hessian-vector product.

    ``fn(output, target) -> scalar``: the loss (no batch axis; use ``jax.vmap`` for a batch).
    ``output_hvp(output, target, u) -> H u`` with ``H = ∇²_output fn(output, target)`` and ``u`` shaped
    like ``output``, in closed form; ``None``: not declared (Gauss–Newton products then take the exact
    ``jvp`` of ``grad``, :func:`output_hessian_vp`). ``name``: what ``__name__`` reports (default
    ``fn.__name__``). Calling the object calls ``fn``, so it composes with ``jit``/``vmap``/``grad``;
    it is immutable and hashable (usable as a static argument).
    """

    fn: Callable
    output_hvp: Callable | None = None
    name: str | None = None

    def __post_init__(self):
        check_per_example_loss("fn", self.fn)
        if self.output_hvp is not None and not callable(self.output_hvp):
            raise TypeError(f"output_hvp: expected None or a function (output, target, u) -> H u, got "
                            f"{type(self.output_hvp).__name__}")
        # the wrapped function's name and docstring, so that help(), jit's names and the API reference see them
        object.__setattr__(self, "__name__", self.name or getattr(self.fn, "__name__", "per_example_loss"))
        object.__setattr__(self, "__doc__", getattr(self.fn, "__doc__", None))

    def __call__(self, output: ArrayLike, target: ArrayLike) -> Array:
        return self.fn(output, target)

    def __repr__(self):
        return f"PerExampleLoss({self.__name__})"


@dataclasses.dataclass(frozen=True, repr=False)
class BatchMeanLoss:
    """``loss(outputs, targets) = mean_n per_example(outputs[n], targets[n])`` over the leading (example)
    axis ``N`` of ``outputs`` and ``targets`` — the form :func:`jaxlearn.train.make_step` takes.

    ``per_example``: the loss of one example (a :class:`PerExampleLoss` or any ``(output, target) ->
    scalar``); ``name``: what ``__name__`` reports. Being of this type is what marks a loss as a
    batch mean, so passing it where a per-example loss is needed fails early
    (:func:`check_per_example_loss`).
    """

    per_example: Callable
    name: str | None = None

    def __post_init__(self):
        check_per_example_loss("per_example", self.per_example)
        name = self.name or getattr(self.per_example, "__name__", "batch_mean_loss")
        object.__setattr__(self, "__name__", name)
        object.__setattr__(self, "__doc__", f"``{name}(outputs, targets)``: the mean over the leading (example) "
                                            f"axis of the per-example loss ``{name}.per_example`` (:class:"
                                            f"`BatchMeanLoss`). Per example: "
                                            f"{getattr(self.per_example, '__doc__', '')}")

    def __call__(self, outputs: ArrayLike, targets: ArrayLike) -> Array:
        n_out, n_tgt = jnp.shape(outputs)[:1], jnp.shape(targets)[:1]
        if not n_out or n_out != n_tgt:
            raise ValueError(f"{self.__name__}: outputs and targets need one common leading (example) axis, got "
                             f"shapes {jnp.shape(outputs)} and {jnp.shape(targets)}")
        return jnp.mean(jax.vmap(self.per_example)(outputs, targets))

    def __repr__(self):
        return f"BatchMeanLoss({self.__name__})"


def check_per_example_loss(name: str, loss) -> None:
    """A one-line ``TypeError`` naming the argument ``name`` unless ``loss`` can be a per-example loss:
    a callable that is not a :class:`BatchMeanLoss`. Runs in Python, before anything is traced."""
    if isinstance(loss, BatchMeanLoss):
        raise TypeError(f"{name}: expected a per-example loss (output, target) -> scalar for ONE example, got the "
                        f"batch-mean loss {loss.__name__!r} (outputs, targets) -> mean over a batch; pass its "
                        f"per-example form, {loss.__name__}.per_example")
    if not callable(loss):
        raise TypeError(f"{name}: expected a per-example loss (output, target) -> scalar, got {type(loss).__name__}")


def output_hessian_vp(loss: Callable, output, target, u):
    """``∇²_f ℓ(f, y) u`` for ONE example (``u`` shaped like ``output``): the closed form the loss
    declares (``loss.output_hvp``), else the exact forward-over-reverse product (``jvp`` of ``grad``,
    Pearlmutter 1994)."""
    declared = getattr(loss, "output_hvp", None)
    if declared is not None:
        return declared(output, target, u)
    return jax.jvp(jax.grad(lambda f: loss(f, target)), (output,), (u,))[1]


def _positions(output) -> int:
    """Entries of one example's output before its last (class) axis: 1 for logits ``(C,)``."""
    return max(jnp.size(output) // jnp.shape(output)[-1], 1) if jnp.ndim(output) else 1


def _is_integer(target) -> bool:
    return jnp.issubdtype(jnp.asarray(target).dtype, jnp.integer)


def _softmax_cross_entropy(logits, target):
    """Softmax cross-entropy of one example, ``logsumexp(f) − ⟨t, f⟩``: ``logits (C,)``, ``target`` an
    integer class or a probability vector ``(C,)``. Output Hessian ``(Σ_c t_c)(diag(p) − p pᵀ)``,
    ``p = softmax(logits)``."""
    if _is_integer(target):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, target))
    return jnp.mean(optax.softmax_cross_entropy(logits, target))


def _softmax_cross_entropy_hvp(logits, target, u):
    # ∇² logsumexp = diag(p) − p pᵀ, weighted by the targets' mass (1 for a label or a distribution)
    p = jax.nn.softmax(logits, axis=-1)
    hu = p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)
    if not _is_integer(target):
        hu = hu * jnp.sum(target, axis=-1, keepdims=True).astype(hu.dtype)
    positions = _positions(logits)
    return hu if positions == 1 else hu / positions


def _mse(output, target):
    """``½ · mean_k (f_k − y_k)²`` of one example (``target`` reshaped to ``output``'s shape; its batch
    mean is ``½ · mean`` over all entries). Output Hessian ``I / K`` for ``K`` output entries."""
    return 0.5 * jnp.mean(jnp.square(output - jnp.reshape(target, jnp.shape(output))))


def _mse_hvp(output, target, u):
    del target
    return u / jnp.size(output)


def _hinge(output, target):
    """Hinge loss of one example: multiclass (Crammer–Singer) ``max(0, 1 + max_{j≠y} f_j − f_y)`` for an
    integer label and ``output (C,)``, ``C > 1``; else binary ``max(0, 1 − y·f)`` for ``y ∈ {−1, +1}`` and
    ``output ()`` or ``(1,)``. Output Hessian ``0`` (piecewise linear)."""
    output, target = jnp.asarray(output), jnp.asarray(target)
    if _is_integer(target) and output.ndim == target.ndim + 1 and output.shape[-1] > 1:
        f_true = jnp.take_along_axis(output, target[..., None], axis=-1)[..., 0]
        masked = jnp.where(jnp.arange(output.shape[-1]) == target[..., None], -jnp.inf, output)
        return jnp.mean(jnp.maximum(0.0, 1.0 + jnp.max(masked, axis=-1) - f_true))
    f = output.reshape(target.shape) if output.size == target.size else output
    return jnp.mean(jnp.maximum(0.0, 1.0 - target * f))


def _hinge_hvp(output, target, u):
    del output, target
    return jnp.zeros_like(u)


per_example_softmax_cross_entropy = PerExampleLoss(_softmax_cross_entropy, _softmax_cross_entropy_hvp,
                                                   "per_example_softmax_cross_entropy")
per_example_mse = PerExampleLoss(_mse, _mse_hvp, "per_example_mse")
per_example_hinge = PerExampleLoss(_hinge, _hinge_hvp, "per_example_hinge")

softmax_cross_entropy = BatchMeanLoss(per_example_softmax_cross_entropy, "softmax_cross_entropy")
mse = BatchMeanLoss(per_example_mse, "mse")
hinge = BatchMeanLoss(per_example_hinge, "hinge")


def accuracy(logits: Array, targets: Array) -> Array:
    """Fraction of examples whose arg-max output is the label (integer or one-hot targets).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import train
        >>> logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
        >>> round(float(train.accuracy(logits, jnp.array([0, 1, 1]))), 4)
        0.6667
    """
    labels = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, axis=-1)
    # float64 for float64 logits (a mean of bools is float32 even under jax_enable_x64), else float32
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.promote_types(logits.dtype, jnp.float32))


LOSSES = {"softmax_cross_entropy": softmax_cross_entropy, "mse": mse, "hinge": hinge}


def loss_by_name(name: str) -> BatchMeanLoss:
    """The batch-mean loss registered under ``name`` (see ``LOSSES``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import train
        >>> mse = train.loss_by_name("mse")                      # ½ · mean over all entries
        >>> float(mse(jnp.array([[1.0, 3.0]]), jnp.zeros((1, 2))))
        2.5
    """
    if name not in LOSSES:
        raise ValueError(f"loss: unknown name {name!r}{did_you_mean(name, LOSSES)}; expected one of {sorted(LOSSES)}")
    return LOSSES[name]
