"""The shared training protocol of a study: the common config fields, and ``init``/``segment`` for
the common case (one model trained on one dataset with a supervised loss).

A study's ``Config`` extends :class:`TrainingConfig` and declares only what is its own; a base
default changes in one line (a field redeclared with a new default keeps its place)::

    @dataclasses.dataclass(frozen=True)
    class Config(runner.TrainingConfig):
        learning_rate: float = runner.dynamic(1e-3, min=0.0, help="peak learning rate")
        widths: tuple[int, ...] = runner.static((128, 128), min=1, help="hidden layer widths")

    def model(config):                       # the public hook: after-kernels, CKA, pruning, landscapes
        return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))

    data = study.dataset("digits", seed=0)   # data(config): a jaxlearn.data.Arrays, shared by a group

    def init(config, key):
        return study.init(config, key, model(config), data(config).input_spec)

    def segment(state, config, arrays):
        return study.segment(state, config, arrays, model(config), evaluate=evaluate)

A study that needs something else (a second task, stacked children, sharpness tracking) keeps the
config base and writes its own ``segment`` from :func:`jaxlearn.train.supervised_segment` or the
parts below it; the template ``jaxlearn new-experiment NAME`` writes a working skeleton.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxlearn import data as data_module
from jaxlearn import train
from jaxlearn.runner.config import dynamic, static

__all__ = ["TrainingConfig", "check_full_batch_gd", "classifier_metrics", "dataset", "init", "loglog_slope",
           "segment", "train_state_field"]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The fields every training study shares (extend it; redeclare a field to change its default).

    ``seed`` draws the member's initialisation (and every other random stream of the member);
    ``data_seed`` fixes the data order separately: ``-1`` (the default) means the member's own
    order, derived from ``seed``; ``s >= 0`` the order of :func:`jaxlearn.train.seed_data_key`
    ``(s)`` — which is the default order of a member seeded ``s`` in a study whose ``init`` hands
    the member's key to :func:`jaxlearn.train.init` as it is (:func:`init` here does). Both are
    dynamic, so a sweep over initialisations at a fixed data order (or the reverse) is one vmapped
    program; a ``data_seed`` that every member of a group shares reaches the program as a constant
    (``shared_constant``), so that group's batches are computed once per step, not per member. A
    study's own segment applies it with :func:`jaxlearn.train.order_key`. ``learning_rate`` is the
    peak of ``optimizer``'s schedule over ``num_steps`` (:meth:`build_optimizer`)."""

    seed: int = dynamic(0, min=0, help="initialisation seed (and the data order unless data_seed is set)")
    data_seed: int = dynamic(-1, min=-1, help="data-order seed: -1 derives the order from seed; s >= 0 is the "
                                              "order a member seeded s has", shared_constant=True)
    learning_rate: float = dynamic(0.1, min=0.0, help="peak learning rate")
    optimizer: train.OptimizerSpec = static(train.OptimizerSpec(), help="optax optimizer and schedule")
    batch_size: int | None = static(64, min=1, help="examples per step (null: the whole training set)")
    num_steps: int = static(2000, min=1, help="training steps")
    segment_steps: int = static(100, min=1, help="steps per segment (metrics and checkpoint after each)")
    snapshots: tuple[int, ...] = static((), min=1, help="steps at which member states are kept")

    def build_optimizer(self, **hyperparams):
        """``optimizer.build(learning_rate, num_steps, **hyperparams)``: the member's optax optimizer
        (``learning_rate`` traced inside the runner's vmapped program)."""
        return self.optimizer.build(self.learning_rate, self.num_steps, **hyperparams)


def train_state_field(name: str) -> property:
    """A read-only property ``state.<name>`` that reads ``state.train_state.<name>``: for a study
    whose member state wraps its :class:`jaxlearn.train.TrainState` with fields of its own (an EWC
    anchor, located steps), so that ``state.params`` and ``state.model_state`` still work (what
    :func:`jaxlearn.runner.after_kernel` and analyses of saved states read)::

        class GrokState(NamedTuple):
            train_state: train.TrainState
            fit_step: jax.Array
            params = study.train_state_field("params")
            model_state = study.train_state_field("model_state")
    """
    if name not in train.TrainState._fields:
        raise ValueError(f"train_state_field: {name!r} is not a TrainState field; expected one of "
                         f"{list(train.TrainState._fields)}")
    return property(lambda state: getattr(state.train_state, name),
                    doc=f"``train_state.{name}`` (:class:`jaxlearn.train.TrainState`).")


def dataset(name: str, **kwargs) -> Callable:
    """The ``data`` hook of a study on one fixed dataset, ``data = study.dataset("digits", seed=0)``:
    ``data(config)`` is :func:`jaxlearn.data.load` ``(name, **kwargs).arrays()`` for every config
    (a :class:`jaxlearn.data.Arrays`, shared by all members; its ``input_spec`` is what
    :func:`init` takes). Arguments are checked when the hook is made."""
    data_module.load(name, **kwargs)  # a bad name or argument fails at import, in one line

    def data(config) -> data_module.Arrays:
        del config
        return data_module.load(name, **kwargs).arrays()

    data.__doc__ = f"The {name} dataset ({kwargs or 'default arguments'}) shared by every member, as named arrays."
    return data


def init(config: TrainingConfig, key, model, input_spec) -> train.TrainState:
    """A member's initial :class:`~jaxlearn.train.TrainState`: ``model`` drawn from ``key`` and the
    config's optimizer (:func:`jaxlearn.train.init`)."""
    return train.init(model, config.build_optimizer(), key, input_spec)


def segment(state: train.TrainState, config: TrainingConfig, arrays, model, *,
            loss: Callable = train.softmax_cross_entropy, grad_estimator: Callable = train.backprop,
            evaluate: Callable | None = None, batch_sharding=None):
    """``config.segment_steps`` steps of :func:`jaxlearn.train.supervised_segment` on
    ``(arrays.x_train, arrays.y_train)`` (a :class:`jaxlearn.data.Arrays`) with the config's
    optimizer, batch size and data order; metrics ``train_loss`` and, with ``evaluate``,
    ``evaluate(state, config, arrays)`` on the segment's final state."""
    return train.supervised_segment(
        state, model, loss, config.build_optimizer(), arrays.x_train, arrays.y_train, batch_size=config.batch_size,
        num_steps=config.segment_steps, grad_estimator=grad_estimator, data_seed=config.data_seed,
        evaluate=None if evaluate is None else (lambda s: evaluate(s, config, arrays)), batch_sharding=batch_sharding)


def classifier_metrics(model, params, arrays) -> dict:
    """``test_accuracy`` and ``test_loss`` (mean softmax cross-entropy, integer labels) of the
    classifier ``model.apply(params, ·)`` on ``(arrays.x_test, arrays.y_test)``: the usual
    ``evaluate`` of a classification study."""
    logits = model.apply(params, arrays.x_test)
    return {"test_accuracy": train.accuracy(logits, arrays.y_test),
            "test_loss": train.softmax_cross_entropy(logits, arrays.y_test)}


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (e.g. an error against the width: ``−½``
    for ``y ∝ x^−½``); NaN for fewer than two points."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def check_full_batch_gd(config: TrainingConfig, n_examples: int, examples_field: str, why: str) -> None:
    """For the ``__post_init__`` of a study whose claim is about plain full-batch gradient descent:
    raises a one-line ``ValueError`` unless ``config.optimizer`` is the default (sgd, no arguments,
    constant step, no warmup) and ``config.batch_size`` is null or ``n_examples`` (the value of the
    config field ``examples_field``). ``why`` (the reason the claim needs it) ends the optimizer's
    message."""
    if config.optimizer != train.OptimizerSpec():
        raise ValueError(f"optimizer: must be plain constant-step gradient descent (the default: sgd, no args, "
                         f"constant schedule, no warmup), {why}; got {config.optimizer}")
    if config.batch_size is not None and config.batch_size != n_examples:
        raise ValueError(f"batch_size: must be null (full batch, {examples_field}={n_examples}), "
                         f"got {config.batch_size}")
