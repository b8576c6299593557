"""Model objectives: a loss over a whole dataset, evaluated in memory-bounded minibatch chunks.

A *model objective* ``(apply_fn, per_example_loss, data, batch_size)`` is what curvature needs
beyond a scalar ``loss_fn(params)``: the network outputs (for Gauss–Newton products with a
closed-form output Hessian), per-example losses, accuracy, and a dataset that may not fit in one
batch. Its loss is the exact mean over all ``N`` examples,

    L(θ) = (1/N) Σ_i ℓ(f(θ, x_i), y_i),

computed chunk by chunk (``lax.scan``; the last chunk is padded and masked), so chunked and
unchunked results agree to float rounding. Quantities that are sums over examples (the loss,
its gradient, Hessian- and GGN-vector products) are accumulated per chunk, so memory is bounded
by one chunk's activations, also for second derivatives.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxlearn._types import Array, PyTree
from jaxlearn.data.batching import row_blocks, split_rows
from jaxlearn.train.losses import check_per_example_loss

# the per-example losses (one definition, jaxlearn.train.losses), public here under their short names
from jaxlearn.train.losses import per_example_mse as mse
from jaxlearn.train.losses import per_example_softmax_cross_entropy as softmax_cross_entropy

__all__ = ["ModelObjective", "softmax_cross_entropy", "mse", "chunked_sum", "dataset_loss", "dataset_metrics",
           "as_loss_fn"]


class ModelObjective(NamedTuple):
    """``apply_fn(params, x) -> outputs`` (batched: leading axis = examples),
    ``per_example_loss(output, target) -> scalar`` for ONE example — :data:`softmax_cross_entropy` and
    :data:`mse` (= ``jaxlearn.train.per_example_*``) declare closed-form output Hessians that
    Gauss–Newton products use (any loss that declares ``output_hvp``, :class:`jaxlearn.train.PerExampleLoss`;
    others get the exact ``jvp`` of ``grad``); a batch-mean loss such as ``jaxlearn.train.mse`` is a
    ``TypeError`` — ``data = (x, y)`` with a leading example axis, and ``batch_size`` (examples per chunk;
    None: all at once)."""

    apply_fn: Callable
    per_example_loss: Callable
    data: tuple
    batch_size: int | None = None


# the ``loss`` of curvature, spectrum and sharpness functions: a scalar ``loss_fn(params)`` or a ModelObjective
Loss = ModelObjective | Callable[[PyTree], Array]


def _check(objective: ModelObjective) -> tuple[int, int]:
    if not isinstance(objective, ModelObjective):
        raise TypeError(f"objective: expected a ModelObjective, got {type(objective).__name__}")
    check_per_example_loss("objective.per_example_loss", objective.per_example_loss)
    x, y = objective.data
    n = jax.tree.leaves(x)[0].shape[0]
    if jax.tree.leaves(y)[0].shape[0] != n:
        raise ValueError(f"objective.data: x has {n} examples but y has {jax.tree.leaves(y)[0].shape[0]}")
    size = n if objective.batch_size is None else int(objective.batch_size)
    if size < 1:
        raise ValueError(f"objective.batch_size: expected a positive int or None, got {objective.batch_size!r}")
    return n, min(size, n)


def chunked_sum(objective: ModelObjective, chunk_fn: Callable):
    """``Σ_chunks chunk_fn(x_c, y_c, w_c)`` over the dataset, where ``w_c`` holds ``1/N`` for real
    examples and ``0`` for the padding of the last chunk (so weighted sums are dataset means).
    ``chunk_fn`` returns a pytree; the chunks run in a ``lax.scan``."""
    n, size = _check(objective)
    x, y = objective.data
    num, rows = row_blocks(n, size)  # equal chunks of at most batch_size examples
    dtype = jnp.result_type(float)
    weights = jnp.where(jnp.arange(num * rows) < n, 1.0 / n, 0.0).astype(dtype).reshape(num, rows)
    xs, ys = (jax.tree.map(lambda a: split_rows(a, size), t) for t in (x, y))
    if num == 1:
        return chunk_fn(jax.tree.map(lambda a: a[0], xs), jax.tree.map(lambda a: a[0], ys), weights[0])

    def body(total, chunk):
        out = chunk_fn(*chunk)
        return jax.tree.map(jnp.add, total, out), None

    first = chunk_fn(jax.tree.map(lambda a: a[0], xs), jax.tree.map(lambda a: a[0], ys), weights[0])
    rest = (jax.tree.map(lambda a: a[1:], xs), jax.tree.map(lambda a: a[1:], ys), weights[1:])
    total, _ = jax.lax.scan(body, first, rest)
    return total


def chunk_loss(objective: ModelObjective, params, x, y, w):
    """The chunk's contribution ``Σ_i w_i ℓ(f(θ, x_i), y_i)`` to the dataset loss."""
    outputs = objective.apply_fn(params, x)
    losses = jax.vmap(objective.per_example_loss)(outputs, y)
    if losses.ndim != 1:
        raise ValueError(f"objective.per_example_loss must return a scalar per example, got shape {losses.shape[1:]}")
    return jnp.sum(w * losses)


def dataset_loss(objective: ModelObjective, params: PyTree) -> Array:
    """The exact mean loss over the dataset (chunked)."""
    return chunked_sum(objective, lambda x, y, w: chunk_loss(objective, params, x, y, w))


def dataset_metrics(objective: ModelObjective, params: PyTree) -> dict:
    """``{"loss", "accuracy"}`` over the dataset (accuracy: arg-max of the outputs against integer
    labels or the arg-max of one-hot/probability targets)."""

    def chunk(x, y, w):
        outputs = objective.apply_fn(params, x)
        losses = jax.vmap(objective.per_example_loss)(outputs, y)
        labels = y if jnp.issubdtype(y.dtype, jnp.integer) else jnp.argmax(y, axis=-1)
        correct = (jnp.argmax(outputs, axis=-1) == labels).astype(w.dtype)
        return {"loss": jnp.sum(w * losses), "accuracy": jnp.sum(w * correct)}

    return chunked_sum(objective, chunk)


def as_loss_fn(objective: Loss) -> Callable[[PyTree], Array]:
    """A scalar ``loss_fn(params)`` from a loss function or a :class:`ModelObjective`."""
    if isinstance(objective, ModelObjective):
        return lambda params: dataset_loss(objective, params)
    if callable(objective):
        return objective
    raise TypeError(f"loss: expected a callable loss_fn(params) or a ModelObjective, got {type(objective).__name__}")
