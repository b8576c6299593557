"""jaxlearn.train — pure training: state, step, scanned loops, populations, losses, optimizers.

Losses come in a batch-mean form (``softmax_cross_entropy``, ``mse``, ``hinge``: what ``make_step``
takes) built from a per-example form that declares its output Hessian (``per_example_*``,
:mod:`jaxlearn.train.losses`)."""

from jaxlearn.train.loop import train
from jaxlearn.train.losses import (
    LOSSES, BatchMeanLoss, PerExampleLoss, accuracy, hinge, loss_by_name, mse, per_example_hinge, per_example_mse,
    per_example_softmax_cross_entropy, softmax_cross_entropy,
)
from jaxlearn.train.optim import SCHEDULES, OptimizerSpec, freeze, optimizer, scale_by_multipliers, schedule
from jaxlearn.train.population import grid, population, population_size
from jaxlearn.train.step import TrainState, backprop, data_key, init, make_objective, make_step, step_keys

__all__ = [
    "BatchMeanLoss", "LOSSES", "PerExampleLoss", "SCHEDULES", "OptimizerSpec", "TrainState", "accuracy", "backprop",
    "data_key", "freeze", "grid", "hinge", "init", "loss_by_name", "make_objective", "make_step", "mse", "optimizer",
    "per_example_hinge", "per_example_mse", "per_example_softmax_cross_entropy", "population", "population_size",
    "scale_by_multipliers", "schedule", "softmax_cross_entropy", "step_keys", "train",
]
