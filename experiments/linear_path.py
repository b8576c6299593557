"""The straight path from initialisation to solution: the training loss falls monotonically along it.

Goodfellow, Vinyals & Saxe 2015 ("Qualitatively characterizing neural network optimization
problems", §2 and Fig. 1–2): for a network trained from ``θ₀`` to ``θ_T``, evaluate the loss on
the segment ``θ(α) = (1 − α) θ₀ + α θ_T`` (their Eq. 1), ``α ∈ [0, 1]``. For feed-forward networks
on MNIST the training loss decreases monotonically along it — no barrier between the
initialisation and the solution SGD found, although SGD itself took a curved route — and the
test loss follows it down (rising a little near ``α = 1`` once the network overfits).

Each member: a ReLU MLP of ``depth`` hidden layers of ``width`` units on scikit-learn's digits
(1437 training, 360 test images), softmax cross-entropy, SGD with momentum. The state keeps
``θ₀``; after training, :func:`jaxlearn.landscape.linear_path` evaluates the exact training- and
test-set loss at ``num_alphas`` equally spaced ``α`` (scalar metrics ``train_path_00`` …,
``test_path_00`` …, index ``k`` at ``α = k/(num_alphas − 1)``), and the non-monotonicity
:func:`path_bump` of the training-loss curve — the largest rise of the loss above its running
minimum along ``α`` — relative to ``L(θ₀)`` (``relative_bump``). Seeds are dynamic, ``depth``
static (one compiled group per architecture).

Claim (``check``): for the 2-hidden-layer MLP the loss along the path is monotone up to 1% of
``L(θ₀)``: the relative bump, mean over ≥ 3 seeds, is ≤ 0.01; and training succeeded (the end
point's training loss is below a tenth of ``L(θ₀)``). Measured with ``configs/linear_path.yaml``
(paper variant: width 128, SGD + momentum 0.9, η = 0.01, batch 64, 2000 steps, 3 seeds; mean ± std
over seeds):

=====  =============  =============  ===================  ===================  =============
depth  L(θ₀)          L(θ_T)         train bump / L(θ₀)   test-loss bump       test accuracy
=====  =============  =============  ===================  ===================  =============
    2  2.61 ± 0.16    0.0092 ± 2e-4  0 (every seed)       0.003 ± 0.004        0.983 ± 0.004
    8  2.55 ± 0.06    9.4e-5 ± 7e-6  0 (every seed)       0.019 ± 0.011        0.981 ± 0.002
=====  =============  =============  ===================  ===================  =============

The deeper network (reported, not asserted) is monotone too: it has no bump, only a flatter start
(its loss stays above the shallow network's for α ≲ 0.45, then falls faster), and its test loss
turns up after α ≈ 0.8 (minimum 0.092 at α = 0.8, 0.110 at α = 1): the overfitting rise of the
paper's Fig. 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import landscape, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a ReLU MLP (``depth`` hidden layers of ``width``) trained by SGD with momentum on
    digits; the loss along the straight line from its initialisation to its final parameters."""

    learning_rate: float = runner.dynamic(0.01, min=0.0, help="SGD learning rate")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="sgd", args={"momentum": 0.9}),
                                                   help="optax optimizer and schedule")
    width: int = runner.static(128, min=1, help="hidden layer width")
    depth: int = runner.static(2, min=1, help="number of hidden layers")
    num_alphas: int = runner.static(21, min=2, max=100, help="equally spaced α in [0, 1], both ends included")


class PathState(NamedTuple):
    """A member: its ``train_state`` and its initial parameters ``params_0`` (the path's start)."""

    train_state: train.TrainState
    params_0: Any


def model(config: Config):
    """The network of a member (the ``model`` hook)."""
    return nn.mlp([config.width] * config.depth, 10, activation="relu", W_std=np.sqrt(2.0), b_std=0.0)


def loss(config: Config):
    """The training loss (the ``loss`` hook): softmax cross-entropy."""
    del config
    return train.softmax_cross_entropy


data = runner.study.dataset("digits", seed=0)


def init(config: Config, key) -> PathState:
    """The member's train state and a copy of its initial parameters."""
    state = runner.study.init(config, key, model(config), data_module.digits(seed=0).input_spec)
    return PathState(state, state.params)


def path_bump(losses):
    """Non-monotonicity of a loss curve ``(P,)`` along increasing ``α``: the largest rise above the
    running minimum, ``max_k (L_k − min_{j ≤ k} L_j)`` (0 exactly when the curve never goes up).
    Goodfellow et al. 2015 read monotonicity off their Fig. 1; this is its one-number form."""
    losses = jnp.asarray(losses)
    return jnp.max(losses - jax.lax.cummin(losses))


def path_metric_names(prefix: str, num_alphas: int) -> list[str]:
    """``[prefix_00, prefix_01, …]``: the scalar metric names of one curve along the path."""
    return [f"{prefix}_{k:02d}" for k in range(num_alphas)]


def evaluate(member: PathState, config: Config, arrays) -> dict:
    """The training- and test-set loss along ``θ(α) = (1 − α) θ₀ + α θ_T`` (Goodfellow et al. Eq. 1),
    its bump, and the end point's test accuracy."""
    net = model(config)
    params = member.train_state.params

    def along(x, y):
        objective = landscape.ModelObjective(net.apply, train.per_example_softmax_cross_entropy, (x, y))
        return landscape.linear_path(objective, member.params_0, params, config.num_alphas)["loss"]

    train_curve = along(arrays.x_train, arrays.y_train)
    test_curve = along(arrays.x_test, arrays.y_test)
    bump = path_bump(train_curve)
    return {
        **dict(zip(path_metric_names("train_path", config.num_alphas), train_curve)),
        **dict(zip(path_metric_names("test_path", config.num_alphas), test_curve)),
        "bump": bump, "relative_bump": bump / train_curve[0], "test_bump": path_bump(test_curve),
        "initial_loss": train_curve[0], "final_loss": train_curve[-1],
        "test_accuracy": train.accuracy(net.apply(params, arrays.x_test), arrays.y_test),
    }


def segment(member: PathState, config: Config, arrays):
    """``segment_steps`` SGD steps (``θ₀`` carried along unchanged)."""
    state, metrics = runner.study.segment(member.train_state, config, arrays, model(config), loss=loss(config))
    return member._replace(train_state=state), metrics


# ----------------------------------------------------------------------------- analysis

_FINAL = ("relative_bump", "bump", "test_bump", "initial_loss", "final_loss", "test_accuracy")


def _finished(results):
    runs = results.finished("depth", "num_alphas", *_FINAL).runs
    return runs[np.isfinite(runs["relative_bump"].astype(float))]


def path_curves(results, prefix: str) -> dict:
    """``{depth: (alphas (P,), losses (seeds, P))}`` of the finished runs' curves along the path."""
    out = {}
    for depth, part in _finished(results).groupby("depth"):
        num = int(part["num_alphas"].iloc[0])
        names = path_metric_names(prefix, num)
        if all(n in part for n in names):
            out[int(depth)] = (np.linspace(0.0, 1.0, num), part[names].to_numpy(float))
    return out


def summarize(results) -> list[dict]:
    """Per depth: relative bump of the training loss along the path (mean, std, max over seeds),
    L(θ₀), L(θ_T), the test-loss bump and the test accuracy (means and stds)."""
    rows = []
    for depth, part in _finished(results).groupby("depth"):
        row = {"depth": int(depth), "seeds": len(part)}
        for key in _FINAL:
            row[key] = float(part[key].mean())
            row[f"{key}_std"] = float(part[key].std(ddof=0))
        row["relative_bump_max"] = float(part["relative_bump"].max())
        rows.append(row)
    return sorted(rows, key=lambda r: r["depth"])


def smoke_check(results) -> None:
    """At toy scale: every depth trained (L(θ_T) < L(θ₀)), the path's curves are finite, start at
    L(θ₀) and end at L(θ_T), and the bumps are ≥ 0."""
    rows = summarize(results)
    assert rows, "no finished runs"
    curves = path_curves(results, "train_path")
    for row in rows:
        depth = row["depth"]
        assert row["final_loss"] < row["initial_loss"], f"depth {depth}: L(θ_T) {row['final_loss']:.3f} >= L(θ₀)"
        assert row["relative_bump"] >= 0 and row["test_bump"] >= 0, f"depth {depth}: negative bump {row}"
        alphas, losses = curves[depth]
        assert np.all(np.isfinite(losses)), f"depth {depth}: non-finite loss on the path"
        assert np.allclose(losses[:, 0].mean(), row["initial_loss"]) and np.allclose(losses[:, -1].mean(),
                                                                                        row["final_loss"]), \
            f"depth {depth}: path ends {losses[:, 0].mean():.4f}, {losses[:, -1].mean():.4f} are not L(θ₀), L(θ_T)"


def check(results) -> None:
    """Goodfellow et al. 2015, Fig. 1, for the shallowest network (the MLP): trained (L(θ_T) below a
    tenth of L(θ₀)) and the training loss along the straight path monotone up to 1% of L(θ₀) (the
    relative bump, mean over ≥ 3 seeds, ≤ 0.01)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    mlp = rows[0]
    assert mlp["seeds"] >= 3, f"depth {mlp['depth']}: {mlp['seeds']} finished seeds, need >= 3"
    assert mlp["final_loss"] < 0.1 * mlp["initial_loss"], \
        f"depth {mlp['depth']}: L(θ_T) {mlp['final_loss']:.3f} is not below a tenth of L(θ₀) {mlp['initial_loss']:.3f}"
    assert mlp["relative_bump"] <= 0.01, (f"depth {mlp['depth']}: bump along the path {mlp['relative_bump']:.4f} "
                                          f"(max {mlp['relative_bump_max']:.4f}) of L(θ₀) > 0.01")


def plot(results):
    """Goodfellow et al. Fig. 1: training (solid) and test (dashed) loss along ``α``, one colour per
    depth (mean over seeds, min–max band)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    train_curves, test_curves = path_curves(results, "train_path"), path_curves(results, "test_path")
    depths = sorted(train_curves)
    colors = dict(zip(depths, colormaps["viridis"](np.linspace(0, 0.8, max(len(depths), 1)))))
    for depth in depths:
        for curves, style, what in ((train_curves, "-", "train"), (test_curves, "--", "test")):
            if depth not in curves:
                continue
            alphas, losses = curves[depth]
            ax.plot(alphas, losses.mean(0), style, color=colors[depth], label=f"depth {depth}, {what}")
            ax.fill_between(alphas, losses.min(0), losses.max(0), color=colors[depth], alpha=0.15, lw=0)
    ax.set(xlabel="α   (θ = (1 − α) θ₀ + α θ_T)", ylabel="loss", yscale="log",
           title="Loss on the straight path from initialisation to solution")
    legend(ax, fontsize=8)
    fig.tight_layout()
    return fig
