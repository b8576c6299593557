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

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import nn, runner, train

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = runner.dynamic(0, min=0, help="student initialisation and data-order seed")
    learning_rate: float = runner.dynamic(0.05, min=0.0, help="peak learning rate")
    init_scale: float = runner.dynamic(1.0, min=0.0, help="multiplies the student's weight std")
    width: int = runner.static(32, min=1, help="student hidden width")
    teacher_width: int = runner.static(8, min=1)
    d_in: int = runner.static(8, min=1)
    n_train: int = runner.static(256, min=1)
    noise_std: float = runner.static(0.1, min=0.0)
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec())
    batch_size: int = runner.static(32, min=1)
    num_steps: int = runner.static(300, min=1)
    segment_steps: int = runner.static(100, min=1)
    snapshots: tuple[int, ...] = runner.static((), min=1, help="steps at which member states are kept")


def _dataset(config: Config) -> data_module.Dataset:
    return data_module.teacher_student(seed=0, n_train=config.n_train, n_test=512, d_in=config.d_in,
                                       hidden=config.teacher_width, noise_std=config.noise_std)


def _model(config: Config):
    std = config.init_scale * np.sqrt(2.0)
    return nn.serial(nn.Dense(config.width, W_std=std, b_std=0.0, parameterization="standard"), nn.Relu(),
                     nn.Dense(1, W_std=config.init_scale, b_std=0.0, parameterization="standard"))


def data(config: Config):
    """(x_train, y_train, x_test, y_test), shared by every member of a group."""
    return _dataset(config).arrays()


def init(config: Config, key) -> train.TrainState:
    optimizer = config.optimizer.build(config.learning_rate, config.num_steps)
    return train.init(_model(config), optimizer, key, jax.ShapeDtypeStruct((1, config.d_in), jnp.float32))


def evaluate(state, config: Config, arrays) -> dict:
    """Excess risk: ``mean((f(x) - teacher(x))**2)`` on noise-free test points (2 × train.mse)."""
    prediction = _model(config).apply(state.params, arrays[2])
    return {"test_mse": jnp.mean((prediction - arrays[3]) ** 2)}


def segment(state, config: Config, arrays):
    model = _model(config)
    step = train.make_step(model.apply_with_state, train.mse, config.optimizer.build(config.learning_rate, config.num_steps))

    def batch_fn(key, index):
        return data_module.get_batch(key, index, arrays[0], arrays[1], config.batch_size)

    state, metrics = train.train(state, step, batch_fn, config.segment_steps)
    return state, {"train_loss": jnp.mean(metrics["train"]["loss"]), **evaluate(state, config, arrays)}


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
