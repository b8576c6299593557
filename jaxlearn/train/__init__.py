"""jaxlearn.train — pure training: state, step, scanned loops, populations, losses, optimizers,
and the common supervised segment of a study (:func:`supervised_segment`, with its data-order seed).

Losses come in a batch-mean form (``softmax_cross_entropy``, ``mse``, ``hinge``: what ``make_step``
takes) built from a per-example form that declares its output Hessian (``per_example_*``,
:mod:`jaxlearn.train.losses`)."""

from jaxlearn.train.loop import train
from jaxlearn.train.losses import (
    LOSSES,
    BatchMeanLoss,
    PerExampleLoss,
    accuracy,
    hinge,
    loss_by_name,
    mse,
    per_example_hinge,
    per_example_mse,
    per_example_softmax_cross_entropy,
    softmax_cross_entropy,
)
from jaxlearn.train.optim import SCHEDULES, OptimizerSpec, freeze, optimizer, scale_by_multipliers, schedule
from jaxlearn.train.population import grid, population, population_size
from jaxlearn.train.step import (
    TrainState,
    backprop,
    data_key,
    init,
    make_objective,
    make_step,
    seed_data_key,
    step_keys,
)
from jaxlearn.train.supervised import order_key, supervised_segment

__all__ = [
    "BatchMeanLoss", "LOSSES", "PerExampleLoss", "SCHEDULES", "OptimizerSpec", "TrainState", "accuracy", "backprop",
    "data_key", "freeze", "grid", "hinge", "init", "loss_by_name", "make_objective", "make_step", "mse", "optimizer",
    "order_key", "per_example_hinge", "per_example_mse", "per_example_softmax_cross_entropy", "population",
    "population_size", "scale_by_multipliers", "schedule", "seed_data_key", "softmax_cross_entropy", "step_keys",
    "supervised_segment", "train",
]
