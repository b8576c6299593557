"""The common segment of a supervised study: minibatch steps of one model on one dataset.

Most studies train a model on ``(x_train, y_train)`` with a loss, an optimizer and a gradient
estimator, then report the mean training loss of the segment and a few evaluation metrics.
:func:`supervised_segment` is that, as one pure function: it builds the step
(:func:`~jaxlearn.train.make_step`), draws minibatches with :func:`jaxlearn.data.get_batch` and
runs them in :func:`~jaxlearn.train.train`'s ``lax.scan``. A study that needs something else (a
second task, sharpness tracking, stacked children) writes its own segment from the same parts.

Data order. Minibatches are a pure function of ``(data key, step)``. By default the data key is
the state's own (:func:`~jaxlearn.train.data_key`, derived from the member's seed); with
``data_seed >= 0`` it is :func:`~jaxlearn.train.seed_data_key` of that seed instead — the data
order a member seeded ``data_seed`` would have — so initialisation and data order vary
independently (e.g. one initialisation under several data orders: the SGD-noise control of
instability studies, Frankle et al. 2020, §2). ``data_seed`` may be traced (a vmapped axis);
``data_seed = s`` for a member with ``seed = s`` is the default order exactly.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxlearn._checks import is_int
from jaxlearn._types import PyTree
from jaxlearn.data.batching import get_batch
from jaxlearn.nn.core import Layer
from jaxlearn.train.loop import train
from jaxlearn.train.step import TrainState, backprop, make_step, seed_data_key

__all__ = ["order_key", "supervised_segment"]


def order_key(key: jax.Array, data_seed: int | jax.Array) -> jax.Array:
    """The data key of a member: ``key`` (its own) when ``data_seed < 0``, else
    :func:`~jaxlearn.train.seed_data_key` of ``data_seed``. Both may be traced. A Python int
    ``data_seed >= 0`` gives a key that does not depend on ``key``: under ``vmap`` over members
    it stays unbatched, so their batches are computed once (the runner passes a ``data_seed``
    shared by a whole group this way)."""
    if is_int(data_seed):
        return key if data_seed < 0 else seed_data_key(data_seed)
    other = seed_data_key(jnp.maximum(data_seed, 0))
    chosen = jnp.where(jnp.asarray(data_seed) < 0, jax.random.key_data(key), jax.random.key_data(other))
    return jax.random.wrap_key_data(chosen, impl=jax.random.key_impl(key))


def supervised_segment(state: TrainState, model: Layer, loss: Callable, optimizer: optax.GradientTransformation,
                       x: PyTree, y: PyTree, *, batch_size: int | None, num_steps: int,
                       grad_estimator: Callable = backprop, data_seed: int | jax.Array = -1,
                       evaluate: Callable[[TrainState], dict] | None = None,
                       batch_sharding: jax.sharding.Sharding | None = None) -> tuple[TrainState, dict]:
    """``num_steps`` minibatch steps of ``model`` on ``(x, y)``; returns ``(state, metrics)``.

    ``model`` has ``apply_with_state`` (a :mod:`jaxlearn.nn` layer); ``loss(outputs, targets)`` is
    a batch-mean loss (:data:`jaxlearn.train.softmax_cross_entropy`, ...) and ``grad_estimator`` a
    gradient estimator (:mod:`jaxlearn.rules`; default: backprop), as for
    :func:`~jaxlearn.train.make_step`. ``batch_size`` examples per step (``None``: the full batch,
    full-batch gradient descent), epoch-wise shuffled by the data key (module docstring for
    ``data_seed``). ``metrics``: ``"train_loss"``, the mean over the segment's steps of the loss
    each step reported (before its update), and the entries of ``evaluate(state)`` on the
    final state when given. ``batch_sharding`` splits each step's batch over devices
    (:func:`~jaxlearn.train.make_step`). Pure: under ``jit`` and ``vmap`` (over states, and over
    traced hyperparameters inside ``optimizer`` or ``data_seed``) like the parts it is made of;
    ``batch_size`` and ``num_steps`` are static.
    """
    step = make_step(model.apply_with_state, loss, optimizer, grad_estimator=grad_estimator,
                     batch_sharding=batch_sharding)

    def batch_fn(key, index):
        return get_batch(order_key(key, data_seed), index, x, y, batch_size)

    state, metrics = train(state, step, batch_fn, num_steps)
    out = {"train_loss": jnp.mean(metrics["train"]["loss"])}
    if evaluate is not None:
        out.update(evaluate(state))
    return state, out
