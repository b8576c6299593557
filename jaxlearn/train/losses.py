"""Losses and metrics: ``fn(outputs, targets) -> scalar``, means over examples.

Conventions (``N`` examples, ``C`` classes):

* :func:`softmax_cross_entropy` — ``mean_n [logsumexp(f_n) - f_n[y_n]]``; targets are integer
  labels ``(N,)`` or probability vectors ``(N, C)``.
* :func:`mse` — ``½ · mean over all entries of (f - y)²``. This is the loss whose gradient-flow
  solution ``jaxlearn.kernels.gradient_descent_mse`` describes (with the mean over *all* entries,
  a network of ``C`` outputs sees each output's residual divided by ``N·C``).
* :func:`hinge` — binary ``mean max(0, 1 - y·f)`` for ``y ∈ {-1, +1}`` and outputs ``(N,)`` or
  ``(N, 1)``; multiclass (Crammer & Singer 2001) ``mean max(0, 1 + max_{j≠y} f_j - f_y)`` for integer
  labels and outputs ``(N, C)``.
* :func:`accuracy` — fraction of ``argmax f_n == y_n`` (integer or one-hot targets).
"""

from __future__ import annotations

import difflib

import jax.numpy as jnp
import optax

__all__ = ["softmax_cross_entropy", "mse", "hinge", "accuracy", "LOSSES", "loss_by_name"]


def softmax_cross_entropy(logits, targets):
    """Mean softmax cross-entropy; ``targets`` integer ``(N,)`` or probabilities ``(N, C)``."""
    if jnp.issubdtype(targets.dtype, jnp.integer):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def mse(outputs, targets):
    """``½ · mean((outputs - targets)²)`` over all entries."""
    return 0.5 * jnp.mean(jnp.square(outputs - targets))


def hinge(outputs, targets):
    """Binary hinge for ±1 targets, multiclass (Crammer–Singer) hinge for integer labels."""
    if jnp.issubdtype(targets.dtype, jnp.integer) and outputs.ndim == targets.ndim + 1 and outputs.shape[-1] > 1:
        f_true = jnp.take_along_axis(outputs, targets[..., None], axis=-1)[..., 0]
        masked = jnp.where(jnp.arange(outputs.shape[-1]) == targets[..., None], -jnp.inf, outputs)
        return jnp.mean(jnp.maximum(0.0, 1.0 + jnp.max(masked, axis=-1) - f_true))
    f = outputs.reshape(targets.shape) if outputs.size == targets.size else outputs
    return jnp.mean(jnp.maximum(0.0, 1.0 - targets * f))


def accuracy(logits, targets):
    """Fraction of examples whose arg-max output is the label (integer or one-hot targets)."""
    labels = targets if jnp.issubdtype(targets.dtype, jnp.integer) else jnp.argmax(targets, axis=-1)
    # float64 for float64 logits (a mean of bools is float32 even under jax_enable_x64), else float32
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.promote_types(logits.dtype, jnp.float32))


LOSSES = {"softmax_cross_entropy": softmax_cross_entropy, "mse": mse, "hinge": hinge}


def loss_by_name(name: str):
    """The loss function registered under ``name`` (see ``LOSSES``)."""
    if name not in LOSSES:
        close = difflib.get_close_matches(str(name), LOSSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"loss: unknown name {name!r}{hint}; expected one of {sorted(LOSSES)}")
    return LOSSES[name]
