"""The training state and one pure training step with a pluggable gradient estimator.

Randomness: a member's :class:`TrainState` carries its own base ``key`` (drawn from the member's
seed, never from its position in a vmapped group). Everything random in training is derived from
it by ``fold_in``: :func:`data_key` for batching, :func:`step_keys` for the gradient estimator and
the model (dropout) at a given step. So a run is a pure function of (seed, hyperparameters) and
resumes exactly from any saved state.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlearn._types import PyTree
from jaxlearn.nn.core import Layer, Spec

__all__ = [
    "TrainState",
    "init",
    "backprop",
    "make_objective",
    "make_step",
    "data_key",
    "seed_data_key",
    "step_keys",
]

_DATA, _STEP = 0, 1


class TrainState(NamedTuple):
    """Everything a run needs to continue: a pytree, so it vmaps, scans and checkpoints.

    ``params``: trainable parameters; ``opt_state``: optimizer state (with the hyperparameters
    when built by :func:`jaxlearn.train.optimizer`); ``model_state``: non-trainable model
    variables (BatchNorm statistics, ``()`` if none); ``step``: int32 scalar, steps taken;
    ``key``: the member's base PRNG key.
    """

    params: PyTree
    opt_state: PyTree
    model_state: PyTree
    step: jax.Array
    key: jax.Array


def init(model: Layer, optimizer: optax.GradientTransformation, key: jax.Array, input_spec: Spec) -> TrainState:
    """Initialises ``model`` (anything with ``init(key, spec) -> (params, state)``) and ``optimizer``.

    ``key`` is split once: one half draws the parameters, the other becomes ``TrainState.key``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import nn, train
        >>> model = nn.mlp([16], 3)
        >>> state = train.init(model, train.optimizer("sgd", learning_rate=0.1), jax.random.key(0),
        ...                    jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> int(state.step), state.model_state
        (0, ((), (), ()))
    """
    k_params, k_run = jax.random.split(key)
    params, model_state = model.init(k_params, input_spec)
    return TrainState(params, optimizer.init(params), model_state, jnp.zeros((), jnp.int32), k_run)


def data_key(state: TrainState) -> jax.Array:
    """The key the batching function receives (the same at every step: batches depend on the step)."""
    return jax.random.fold_in(state.key, _DATA)


def seed_data_key(seed: int | jax.Array) -> jax.Array:
    """The data key (:func:`data_key`) of the state :func:`init` draws from ``jax.random.key(seed)``
    — the key the runner gives a member with that ``seed`` — computed from the seed alone. ``seed``
    may be traced, so a data-order seed can be a vmapped axis, independent of the initialisation:
    ``data_key(init(model, opt, jax.random.key(s), spec)) == seed_data_key(s)``."""
    return jax.random.fold_in(jax.random.split(jax.random.key(seed))[1], _DATA)


def step_keys(state: TrainState) -> jax.Array:
    """The keys of the current step as a key array of shape ``(2,)``: ``[estimator_key, model_key]``
    (unpack with ``k_estimator, k_model = step_keys(state)``)."""
    return jax.random.split(jax.random.fold_in(jax.random.fold_in(state.key, _STEP), state.step))


# a gradient estimator: ``estimator(objective, params, key) -> ((loss, aux), grads)`` (see backprop)
Estimator = Callable[[Callable[[PyTree], tuple[jax.Array, Any]], PyTree, jax.Array],
                     tuple[tuple[jax.Array, Any], PyTree]]


def backprop(objective: Callable[[PyTree], tuple[jax.Array, Any]], params: PyTree,
             key: jax.Array | None) -> tuple[tuple[jax.Array, Any], PyTree]:
    """The default gradient estimator: exact reverse-mode gradients.

    A gradient estimator is ``estimator(objective, params, key) -> ((loss, aux), grads)`` where
    ``objective(params) -> (loss, aux)``; ``grads`` has the structure of ``params``. Alternatives
    (feedback alignment, forward gradients, local losses, ...) live in ``jaxlearn.rules`` and plug
    in here without ``train`` knowing them.
    """
    del key
    return jax.value_and_grad(objective, has_aux=True)(params)


def make_objective(apply_with_state: Callable, loss_fn: Callable,
                   metrics_fn: Callable | None = None) -> Callable[..., tuple[jax.Array, tuple[PyTree, dict]]]:
    """``objective(params, model_state, batch, key) -> (loss, (new_model_state, metrics))``.

    ``apply_with_state(params, x, state, *, key, train) -> (outputs, new_state)`` (e.g.
    ``model.apply_with_state``); ``batch = (x, targets)``; ``loss_fn(outputs, targets)``;
    ``metrics_fn(outputs, targets) -> dict`` adds metrics next to ``"loss"``.
    """

    def objective(params, model_state, batch, key):
        x, targets = batch
        outputs, new_model_state = apply_with_state(params, x, model_state, key=key, train=True)
        loss = loss_fn(outputs, targets)
        metrics = {"loss": loss}
        if metrics_fn is not None:
            metrics.update(metrics_fn(outputs, targets))
        return loss, (new_model_state, metrics)

    return objective


def make_step(
    apply_with_state: Callable,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    grad_estimator: Callable = backprop,
    metrics_fn: Callable | None = None,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> Callable:
    """A pure training step ``step(state, batch) -> (new_state, metrics)``.

    Computes ``((loss, aux), grads) = grad_estimator(objective, params, key)`` on the batch with
    the model in training mode, then applies the optimizer. ``metrics`` holds ``"loss"`` (the loss
    *before* the update, on this batch) and whatever ``metrics_fn`` returns.

    Data parallelism: with ``batch_sharding`` (a :class:`jax.sharding.Sharding`, typically
    ``NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))``) every leaf of ``batch``
    is constrained (:func:`jax.lax.with_sharding_constraint`) to be split along its leading
    (example) axis, which must be divisible by the number of shards. Under ``jit`` — also inside
    ``lax.scan`` (:func:`~jaxlearn.train.train`) and ``vmap`` (the constraint applies to each
    member's batch; the vmapped axis is left unconstrained) — XLA's SPMD partitioner then runs the
    forward and backward pass of each shard on its own device and all-reduces what the batch
    mean needs (loss, gradients, BatchNorm statistics); parameters, optimizer and model state
    stay replicated. This is synchronous data parallelism: the step equals the single-device
    step up to the association of floating-point sums. Outside ``jit`` the constraint places
    the batch eagerly, which is correct but slow.
    """
    if batch_sharding is not None and not isinstance(batch_sharding, jax.sharding.Sharding):
        raise TypeError(f"make_step: batch_sharding must be a jax.sharding.Sharding or None, "
                        f"got {type(batch_sharding).__name__}")
    objective = make_objective(apply_with_state, loss_fn, metrics_fn)

    def shard(batch):
        for leaf in jax.tree.leaves(batch):
            shape = jnp.shape(leaf)
            try:
                ok = len(shape) >= 1 and batch_sharding.shard_shape(shape) is not None
            except (ValueError, IndexError):  # IndivisibleError is a ValueError
                ok = False
            if not ok:
                raise ValueError(f"make_step: every batch array needs a leading (example) axis divisible "
                                 f"into batch_sharding's shards ({batch_sharding}), got shape {shape}")
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, batch_sharding), batch)

    def step(state: TrainState, batch):
        if batch_sharding is not None:
            batch = shard(batch)
        k_estimator, k_model = step_keys(state)

        def closed(params):
            return objective(params, state.model_state, batch, k_model)

        (_, (model_state, metrics)), grads = grad_estimator(closed, state.params, k_estimator)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, model_state, state.step + 1, state.key), metrics

    return step
