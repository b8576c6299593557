"""Edge of stability: under full-batch GD the sharpness λ_max rises to 2/η and hovers there.

Cohen, Kaur, Li, Kolter & Talwalkar 2021 ("Gradient Descent on Neural Networks Typically Occurs at
the Edge of Stability", §3, Fig. 1): training a network by full-batch gradient descent with step
size ``η``, the top eigenvalue ``λ_max`` of the training-loss Hessian first increases
("progressive sharpening") until it reaches the stability threshold ``2/η`` of GD on a quadratic,
then stays near it while the loss keeps decreasing, non-monotonically. They saw it with MSE and
tanh/ELU MLPs; here a tanh MLP fits one-hot targets (MSE, ``½ · mean`` over all entries) of a
subset of scikit-learn's digits.

``λ_max`` is measured every ``sharpness_every`` steps inside the training scan by
``power_iters`` power-iteration steps warm-started from the previous top eigenvector (carried in
the run state across segments): :func:`jaxlearn.landscape.sharpness.track_sharpness`. Power
iteration finds the eigenvalue of largest magnitude; the MSE Hessians here have
``λ_max ≫ |λ_min|``, so that is ``λ_max`` (``residual`` bounds the distance to an eigenvalue).

Metrics per segment: ``lambda_max`` (at the segment's last measurement), ``lambda_max_start``
(its first, ``sharpness_every`` steps in), ``lambda_max_peak`` (the largest in the segment),
``residual``, ``two_over_lr`` (``2/η``), ``sharpness_ratio`` (``λ_max · η/2``) and
``train_loss``. Seeds and learning rates are dynamic: a sweep is one vmapped program.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import nn, runner, train
from jaxlearn.landscape import sharpness
from jaxlearn.runner.plots import legend

VERSION = "2"  # 2: the shared training base (a data_seed field; the run ids changed, the results did not)


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a tanh MLP trained by full-batch GD with step size ``learning_rate``."""

    seed: int = runner.dynamic(0, min=0, help="initialisation seed (and power-iteration start vector)")
    learning_rate: float = runner.dynamic(0.5, min=0.0, help="GD step size η; the stability threshold is 2/η")
    n_train: int = runner.static(256, min=1, max=1438, help="digits training examples (the full batch)")
    widths: tuple[int, ...] = runner.static((64, 64), min=1, help="hidden layer widths")
    activation: str = runner.static("tanh", help="activation (jaxlearn.nn.ACTIVATIONS name)")
    batch_size: int | None = runner.static(None, min=1, help="null: full-batch GD, the setting of the claim")
    num_steps: int = runner.static(5000, min=1, help="training steps")
    sharpness_every: int = runner.static(10, min=1, help="steps between λ_max measurements; divides segment_steps")
    power_iters: int = runner.static(20, min=1, help="warm-started power iterations per measurement")

    def __post_init__(self):
        if self.segment_steps % self.sharpness_every:
            raise ValueError(f"sharpness_every: must divide segment_steps={self.segment_steps}, "
                             f"got {self.sharpness_every}")
        runner.study.check_full_batch_gd(self, self.n_train, "n_train", "whose stability threshold is 2/η")


class SharpnessState(NamedTuple):
    """A member: its ``train_state`` and ``vector``, the current estimate of the top Hessian
    eigenvector (the warm start of the next measurement)."""

    train_state: train.TrainState
    vector: Any


def model(config: Config):
    """The network of a member (the ``model`` hook)."""
    return nn.mlp(config.widths, 10, activation=config.activation, W_std=1.0)


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½·mean((f − y)²)`` to one-hot labels."""
    del config
    return train.mse


def data(config: Config) -> data_module.Arrays:
    """The first ``n_train`` examples of the digits train split with one-hot labels (the full
    batch), and the test split; shared by all members."""
    arrays = data_module.digits(seed=0).arrays()
    x = arrays.x_train[:config.n_train]
    return arrays._replace(x_train=x, y_train=jax.nn.one_hot(arrays.y_train[:config.n_train], 10, dtype=x.dtype))


def init(config: Config, key) -> SharpnessState:
    """The member's train state and the top Hessian eigenvector at initialization (100 power
    iterations from a random vector), so that the first measurement is already converged — an
    unconverged Rayleigh quotient under-estimates λ_max."""
    k_train, k_vector = jax.random.split(key)
    state = runner.study.init(config, k_train, model(config), data_module.digits(seed=0).input_spec)
    start = sharpness.random_unit_vector(k_vector, state.params)
    pair = sharpness.top_eigenpair(_loss_fn(config, data(config)), state.params, start, num_iters=100)
    return SharpnessState(state, pair.vector)


def _loss_fn(config: Config, arrays):
    net, train_loss = model(config), loss(config)

    def loss_fn(params):
        return train_loss(net.apply(params, arrays.x_train), arrays.y_train)

    return loss_fn


def segment(state: SharpnessState, config: Config, arrays):
    """``segment_steps`` full-batch GD steps with λ_max measured every ``sharpness_every``."""
    step = train.make_step(model(config).apply_with_state, loss(config), config.build_optimizer())
    loss_fn = _loss_fn(config, arrays)
    full_batch = (arrays.x_train, arrays.y_train)
    train_state, vector, metrics = sharpness.track_sharpness(
        state.train_state, state.vector, step, lambda key, index: full_batch, loss_fn, config.segment_steps,
        every=config.sharpness_every, num_iters=config.power_iters)
    lam = metrics["lambda_max"]
    threshold = 2.0 / config.learning_rate
    return SharpnessState(train_state, vector), {
        "train_loss": loss_fn(train_state.params), "lambda_max": lam[-1], "lambda_max_start": lam[0],
        "lambda_max_peak": jnp.max(lam),
        "residual": metrics["residual"][-1], "two_over_lr": threshold, "sharpness_ratio": lam[-1] / threshold,
    }


def _curves(results):
    curves = results.finished("seed", "learning_rate", "lambda_max", "lambda_max_start", "train_loss").curves
    return curves.sort_values(["run_id", "step"])


def _per_run(results) -> list[dict]:
    """Per finished run: 2/η, the first λ_max (``sharpness_every`` steps in) and the mean of the
    logged λ_max over the last fifth of the run."""
    rows = []
    for run_id, part in _curves(results).groupby("run_id"):
        lam = part["lambda_max"].to_numpy()
        lr = float(part["learning_rate"].iloc[0])
        tail = lam[-max(1, len(lam) // 5):]
        rows.append({"run_id": run_id, "learning_rate": lr, "seed": int(part["seed"].iloc[0]), "two_over_lr": 2 / lr,
                     "first": float(part["lambda_max_start"].iloc[0]), "final": float(tail.mean())})
    return rows


def summarize(results) -> list[dict]:
    """Per learning rate: 2/η, the first and final (last-fifth mean) λ_max, means over seeds, and
    the final λ_max's standard deviation over seeds."""
    rows = []
    per_run = _per_run(results)
    for lr in sorted({r["learning_rate"] for r in per_run}):
        part = [r for r in per_run if r["learning_rate"] == lr]
        final = float(np.mean([r["final"] for r in part]))
        first = float(np.mean([r["first"] for r in part]))
        rows.append({"learning_rate": lr, "two_over_lr": 2 / lr, "first_lambda_max": first, "final_lambda_max": final,
                     "final_std": float(np.std([r["final"] for r in part])), "final_over_threshold": final * lr / 2,
                     "seeds": len(part)})
    return rows


def check(results) -> None:
    """The claim (Cohen et al. 2021, §3), for every run: it starts clearly below the threshold
    (first λ_max < 0.85 · 2/η), sharpens progressively (the rise closes more than half the gap
    to 2/η) and ends at the edge (the mean λ_max over the last fifth within 20% of 2/η)."""
    per_run = _per_run(results)
    assert per_run, "no finished runs"
    for r in per_run:
        where, threshold = f"lr={r['learning_rate']:g} seed={r['seed']}", r["two_over_lr"]
        assert r["first"] < 0.85 * threshold, \
            f"{where}: first λ_max {r['first']:.3f} is not below 0.85·2/η = {0.85 * threshold:.3f}"
        assert r["final"] - r["first"] > 0.5 * (threshold - r["first"]), \
            f"{where}: λ_max rose from {r['first']:.3f} to {r['final']:.3f}, less than half way to 2/η = " \
            f"{threshold:.3f}"
        assert abs(r["final"] / threshold - 1) < 0.2, \
            f"{where}: final λ_max {r['final']:.3f} is not within 20% of 2/η = {threshold:.3f}"


def plot(results):
    """λ_max against steps with the thresholds 2/η (dashed), and the training loss."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_sharp, ax_loss = fig.subplots(1, 2)
    curves = _curves(results)
    lrs = sorted(curves["learning_rate"].unique())
    colors = dict(zip(lrs, colormaps["viridis"](np.linspace(0, 0.9, max(len(lrs), 1)))))
    for run_id, part in curves.groupby("run_id"):
        lr = part["learning_rate"].iloc[0]
        ax_sharp.plot(part["step"], part["lambda_max"], color=colors[lr], lw=1)
        ax_loss.plot(part["step"], part["train_loss"], color=colors[lr], lw=1)
    for lr in lrs:
        ax_sharp.axhline(2 / lr, color=colors[lr], ls="--", lw=1, label=f"η={lr:g}: 2/η")
    ax_sharp.set(xlabel="step", ylabel="λ_max (training-loss Hessian)", title="Sharpness under full-batch GD")
    legend(ax_sharp, fontsize=8)
    ax_loss.set(xlabel="step", ylabel="training loss", yscale="log", title="Training loss")
    fig.tight_layout()
    return fig
