"""jaxlearn.train — pure training: state, step, scanned loops, populations, losses, optimizers."""

from jaxlearn.train.loop import train
from jaxlearn.train.losses import LOSSES, accuracy, hinge, loss_by_name, mse, softmax_cross_entropy
from jaxlearn.train.optim import SCHEDULES, OptimizerSpec, freeze, optimizer, scale_by_multipliers, schedule
from jaxlearn.train.population import grid, population, population_size
from jaxlearn.train.step import TrainState, backprop, data_key, init, make_objective, make_step, step_keys

__all__ = [
    "LOSSES", "SCHEDULES", "OptimizerSpec", "TrainState", "accuracy", "backprop", "data_key", "freeze", "grid", "hinge", "init",
    "loss_by_name", "make_objective", "make_step", "mse", "optimizer", "population",
    "population_size", "scale_by_multipliers", "schedule", "softmax_cross_entropy", "step_keys", "train",
]
