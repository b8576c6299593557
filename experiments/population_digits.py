"""Default experiment: a population of MLPs on scikit-learn's digits, seeds × learning rates.

Every member (one seed, one learning rate) trains as part of ONE vmapped program: the runner
groups the sweep's runs (they share every static field) into a single ``jit(vmap(...))`` call per
segment. The study answers a basic question of the science of training: how does test accuracy
after a fixed budget depend on the learning rate, and how much of the spread is seed noise?

Run with ``make run`` (``jaxlearn run configs/population_digits.yaml``); it prints a table of test
accuracy per learning rate (mean ± std over seeds) and saves a plot of the learning curves.
A large single run can instead split each step's batch over local devices: ``--set
data_parallel=4`` (synchronous data parallelism; same results up to float round-off).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlearn import nn, runner, train
from jaxlearn.runner.plots import legend, mean_band

VERSION = "3"  # 3: the shared training base (a data_seed field; the run ids changed, the results did not)


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an MLP on digits. ``seed``, ``data_seed`` and ``learning_rate`` are dynamic (a
    sweep over them is one vmapped program); the rest shapes the program."""

    widths: tuple[int, ...] = runner.static((128, 128), min=1, help="hidden layer widths")
    data_parallel: int = runner.static(1, min=1, help="local devices each step's batch is split over (synchronous "
                                                      "data parallelism, same results up to round-off; must divide "
                                                      "batch_size; > 1: the runner does not also shard a group's runs "
                                                      "over devices)")

    def __post_init__(self):
        if (isinstance(self.batch_size, int) and isinstance(self.data_parallel, int) and self.data_parallel >= 1
                and self.batch_size % self.data_parallel):
            raise ValueError(f"data_parallel ({self.data_parallel}) must divide batch_size ({self.batch_size})")


def model(config: Config):
    """The network of a member (the ``model`` hook: after-kernels and landscapes of saved runs)."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


data = runner.study.dataset("digits", seed=0)  # the digits split shared by every member


def init(config: Config, key) -> train.TrainState:
    """One member's initial state."""
    return runner.study.init(config, key, model(config), data(config).input_spec)


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Test accuracy and loss of a member."""
    return runner.study.classifier_metrics(model(config), state.params, arrays)


def batch_sharding(config: Config):
    """The sharding of a step's batch: ``None`` for ``data_parallel == 1``, else its leading axis
    split over the first ``data_parallel`` local devices (a 1-D mesh ``"data"``). Checked here,
    at trace time, rather than in ``Config`` so that stored runs load on any machine."""
    n = config.data_parallel
    if n == 1:
        return None
    if n > jax.local_device_count():
        raise ValueError(f"data_parallel ({n}) exceeds the {jax.local_device_count()} local devices")
    return NamedSharding(Mesh(np.asarray(jax.local_devices()[:n]), ("data",)), PartitionSpec("data"))


def segment(state: train.TrainState, config: Config, arrays):
    """Advances one member by ``config.segment_steps`` SGD steps; returns it and its metrics.
    With ``data_parallel > 1`` each step's batch is split over that many devices."""
    return runner.study.segment(state, config, arrays, model(config), evaluate=evaluate,
                                batch_sharding=batch_sharding(config))


def _final(results):
    """Final test accuracy per run with its learning rate (finished runs only)."""
    return results.finished("seed", "learning_rate", "test_accuracy").runs[["run_id", "seed", "learning_rate",
                                                                             "test_accuracy"]]


def summarize(results) -> list[dict]:
    """Final test accuracy per learning rate: mean and std over seeds."""
    final = _final(results)
    rows = []
    for lr, part in final.groupby("learning_rate"):
        acc = part["test_accuracy"].to_numpy()
        rows.append({"learning_rate": float(lr), "test_accuracy": float(acc.mean()), "std": float(acc.std()),
                     "seeds": len(acc)})
    return rows


def check(results) -> None:
    """The claim: a well-chosen learning rate reaches > 90% test accuracy on digits, and the
    accuracy-vs-learning-rate curve is not flat (the learning rate matters)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    best = max(r["test_accuracy"] for r in rows)
    worst = min(r["test_accuracy"] for r in rows)
    assert best > 0.9, f"best mean test accuracy {best:.3f} <= 0.9"
    assert len(rows) < 2 or best - worst > 0.02, (f"accuracy barely depends on the learning rate "
                                                  f"({worst:.3f}..{best:.3f})")


def plot(results):
    """Test accuracy curves (mean ± std over seeds, one line per learning rate) and final
    accuracy against the learning rate."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    fig = Figure(figsize=(10, 4))
    ax_curve, ax_final = fig.subplots(1, 2)
    curves = results.finished("learning_rate", "test_accuracy").curves
    lrs = sorted(curves["learning_rate"].unique())
    colors = colormaps["viridis"](np.linspace(0, 0.9, max(len(lrs), 1)))
    for lr, color in zip(lrs, colors):
        mean_band(ax_curve, curves[curves.learning_rate == lr], "test_accuracy", color=color, label=f"lr={lr:g}")
    ax_curve.set(xlabel="step", ylabel="test accuracy", title="Learning curves (mean ± std over seeds)", ylim=(0, 1))
    legend(ax_curve, fontsize=8)
    rows = summarize(results)
    ax_final.errorbar([r["learning_rate"] for r in rows], [r["test_accuracy"] for r in rows],
                      yerr=[r["std"] for r in rows], marker="o", capsize=3)
    ax_final.set(xscale="log", xlabel="learning rate", ylabel="final test accuracy",
                 title="Final accuracy vs learning rate")
    fig.tight_layout()
    return fig
