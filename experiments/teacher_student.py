"""Teacher–student regression: how the student's width and learning rate set its excess risk.

A two-layer ReLU student, trained by minibatch SGD on the noisy outputs of a random two-layer
teacher (``jaxlearn.data.teacher_student``), is scored by its test MSE against the noise-free
teacher, i.e. the excess risk. In the classical picture (e.g. Goldt et al. 2019, "Dynamics of
stochastic gradient descent for two-layer neural networks in the teacher-student setup") a
student at least as wide as the teacher can drive the excess risk towards zero, and too large
a learning rate makes SGD diverge — the runner marks such members ``diverged`` and freezes them
while the rest of the group trains on. Cheap enough for seconds-long sweeps.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import nn, runner, train

VERSION = "2"  # 2: the shared training base (a data_seed field; the run ids changed, the results did not)


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    seed: int = runner.dynamic(0, min=0,
                               help="student initialisation seed (and the data order unless data_seed is set)")
    learning_rate: float = runner.dynamic(0.05, min=0.0, help="peak learning rate")
    init_scale: float = runner.dynamic(1.0, min=0.0, help="multiplies the student's weight std")
    width: int = runner.static(32, min=1, help="student hidden width")
    teacher_width: int = runner.static(8, min=1)
    d_in: int = runner.static(8, min=1)
    n_train: int = runner.static(256, min=1)
    noise_std: float = runner.static(0.1, min=0.0)
    batch_size: int | None = runner.static(32, min=1, help="examples per step (null: the whole training set)")
    num_steps: int = runner.static(300, min=1, help="training steps")


def _dataset(config: Config) -> data_module.Dataset:
    return data_module.teacher_student(seed=0, n_train=config.n_train, n_test=512, d_in=config.d_in,
                                       hidden=config.teacher_width, noise_std=config.noise_std)


def model(config: Config):
    """The student network (the ``model`` hook): Dense(width) → ReLU → Dense(1), standard
    parameterization, He-scaled by ``init_scale``."""
    std = config.init_scale * np.sqrt(2.0)
    return nn.serial(nn.Dense(config.width, W_std=std, b_std=0.0, parameterization="standard"), nn.Relu(),
                     nn.Dense(1, W_std=config.init_scale, b_std=0.0, parameterization="standard"))


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½·mean((f − y)²)``."""
    del config
    return train.mse


def data(config: Config) -> data_module.Arrays:
    """The teacher's noisy training set and noise-free test set, shared by every member of a group."""
    return _dataset(config).arrays()


def init(config: Config, key) -> train.TrainState:
    return runner.study.init(config, key, model(config), _dataset(config).input_spec)


def evaluate(state, config: Config, arrays) -> dict:
    """Excess risk: ``mean((f(x) - teacher(x))**2)`` on noise-free test points (2 × train.mse)."""
    prediction = model(config).apply(state.params, arrays.x_test)
    return {"test_mse": jnp.mean((prediction - arrays.y_test) ** 2)}


def segment(state, config: Config, arrays):
    return runner.study.segment(state, config, arrays, model(config), loss=loss(config), evaluate=evaluate)


def summarize(results) -> list[dict]:
    """Final excess risk per (width, learning rate): mean over seeds; diverged runs counted."""
    runs = results.select("width", "learning_rate", "test_mse", status=("finished", "diverged")).runs
    rows = []
    for (width, lr), part in runs.groupby(["width", "learning_rate"]):
        ok = part[part.status == "finished"]
        rows.append({"width": int(width), "learning_rate": float(lr),
                     "test_mse": float(ok["test_mse"].mean()) if len(ok) else float("nan"),
                     "seeds": len(ok), "diverged": int((part.status == "diverged").sum())})
    return rows


def check(results) -> None:
    """The claim: some trained student beats the trivial predictor (test MSE of f = 0, which
    is the teacher's output variance) by a factor of 4 or more."""
    finished = [r["test_mse"] for r in summarize(results) if r["seeds"]]
    assert finished, "no finished runs"
    ds_var = float(np.mean(_dataset(Config()).y_test ** 2))
    best = min(finished)
    assert best < ds_var / 4, f"best excess risk {best:.4f} is not 4x below the trivial {ds_var:.4f}"
