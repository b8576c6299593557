"""Hyperparameter transfer with muP: the best Adam learning rate stays put across widths under muP
and shrinks with width under the standard parameterization.

Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen & Gao 2021 ("Tensor Programs V:
Tuning large neural networks via zero-shot hyperparameter transfer", §1 and Fig. 1, §4 and
Table 3, App. B): in the maximal-update parameterization (muP) the training loss as a function
of the learning rate has its minimum at the same place at every width, so a learning rate tuned
on a narrow network transfers to a wide one; in the standard parameterization (SP) the optimum
moves. With Adam the per-coordinate update size is ``≈ η`` whatever the gradient's scale, so in SP
a layer of fan-in ``n`` changes its output by ``≈ η · n`` coordinated terms per step and the
largest useful ``η`` shrinks roughly like ``1/n``.

Parameterizations (:mod:`jaxlearn.nn.parameterization`), for a Dense layer ``z = x W + b`` of
fan-in ``n`` and width ``n`` (``W_std = √2``, ReLU):

* SP: ``W ~ N(0, 2/n)`` for every layer; one global Adam learning rate ``η``.
* muP (Table 3, Adam column, "with base shapes"): the readout is drawn ``N(0, 2/n²)`` and every
  parameter gets the learning rate ``η · m(n) / m(n₀)``, where ``m`` is
  :meth:`jaxlearn.nn.Layer.lr_multipliers` (``1`` for the input layer and biases, ``1/n`` for the
  hidden and output weights) and ``n₀ = base_width``: the multipliers are relative to a network
  of width ``n₀`` (TP V §4, "base shapes"), so ``η`` means the same for both parameterizations at
  width ``n₀`` and the two panels share one learning-rate axis.

Each member: an MLP of ``depth`` hidden layers of width ``width`` on MNIST-1D (4000 training
signals of length 40, 10 classes; Greydanus 2020), softmax cross-entropy, Adam at constant
learning rate ``η`` for ``num_steps`` steps of ``batch_size``. Metrics: the segment's mean
minibatch loss ``train_loss``, and after every segment the loss on the whole training set
``full_train_loss``, the ``test_loss`` and the ``test_accuracy`` (the last segment's are the final
metrics). Seeds, learning rates and the parameterization (``mup``, a bool) are dynamic: the two
parameterizations have the same forward pass (``z = x W + b``) and parameter shapes, and differ
only in the readout's init scale and in the learning-rate multipliers, which are selected inside
the program (:class:`ParameterizedDraw`, :func:`lr_multipliers`), so all members of a width are one
vmapped program; width and depth are static (one compiled group per width).

Claim (``check``, TP V Fig. 1): the learning rate that minimises the final ``full_train_loss``
(mean over ≥ 3 seeds, on a factor-2 grid) stays within one grid step across widths under muP,
and moves down by at least two grid steps from the narrowest to the widest network under SP.
Measured with ``configs/mup_transfer.yaml`` (paper variant: widths 64–1024, two hidden layers,
200 Adam steps of batch 32, η = 2^-11 … 2^-3, 3 seeds; best log2 η of the seed-mean curve, and in
brackets the mean [min, max] over seeds of each seed's own best; the training loss at the best η,
mean ± std over seeds):

=====  ===========================  ===========  ===========================  ===========
width  SP best log2 η               SP loss      muP best log2 η              muP loss
=====  ===========================  ===========  ===========================  ===========
   64  -7  (-7.0 [-7, -7])          1.32 ± 0.04  -7  (-7.0 [-7, -7])          1.33 ± 0.01
  128  -7  (-7.0 [-7, -7])          1.18 ± 0.03  -7  (-7.0 [-7, -7])          1.27 ± 0.02
  256  -8  (-8.0 [-8, -8])          1.07 ± 0.02  -7  (-6.7 [-7, -6])          1.19 ± 0.02
  512  -9  (-8.7 [-9, -8])          1.05 ± 0.02  -6  (-6.3 [-7, -6])          1.13 ± 0.05
 1024  -10 (-10.0 [-10, -10])       1.03 ± 0.03  -6  (-6.0 [-6, -6])          1.10 ± 0.02
=====  ===========================  ===========  ===========================  ===========

SP's optimum moves three grid steps down over 16× in width (≈ ``n^-0.75``); muP's stays within
one step (and there, wider is better at every η, as in the paper's Fig. 1).

Scale: the paper's Fig. 1 is a Transformer and its MLP runs train on CIFAR-10 for many epochs;
here MNIST-1D and 200 steps keep the sweep (2 × 5 widths × 9 learning rates × 3 seeds = 270
networks) within minutes on two CPU cores. Two hidden layers, not one: with one hidden layer the
input layer (fan-in 40 at every width) dominates SP's output change below width ~4000, and the
SP optimum moved only one grid step from width 64 to 1024 in a trial; the width × width layer is
what moves it.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import data as data_module
from jaxlearn import nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "2"  # 2: the parameterization is the dynamic bool `mup` (one program per width); the same math

_DATASET = dict(num_samples=5000, seed=42)  # the published MNIST-1D: 4000 training, 1000 test signals
_ADAM_LIKE = ("adam", "adamw", "adamax", "nadam", "nadamw", "radam", "amsgrad")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a ReLU MLP of ``depth`` hidden layers of ``width`` units, in muP or SP (``mup``),
    trained by Adam on MNIST-1D."""

    learning_rate: float = runner.dynamic(2.0 ** -6, min=0.0, help="Adam learning rate η (muP: at width "
                                                                     "base_width; multipliers scale it per layer)")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adam"), help="Adam-like optimizer")
    batch_size: int | None = runner.static(32, min=1, help="examples per step")
    num_steps: int = runner.static(200, min=1, help="training steps")
    width: int = runner.static(256, min=1, help="hidden layer width n")
    depth: int = runner.static(2, min=1, help="number of hidden layers")
    mup: bool = runner.dynamic(True, help="muP (true) or the standard parameterization (SP, false); "
                                          "the readout's init and the Adam lr multipliers differ, the forward "
                                          "pass does not: both are one vmapped program")
    base_width: int = runner.static(64, min=1, help="muP base width n₀: lr multipliers are m(n)/m(n₀)")

    def __post_init__(self):
        if self.optimizer.name not in _ADAM_LIKE:
            raise ValueError(f"optimizer: the muP multipliers here are Adam's (Table 3); expected one of "
                             f"{list(_ADAM_LIKE)}, got {self.optimizer.name!r}")

    def build_optimizer(self, **hyperparams):
        """Adam with the config's schedule, each update scaled by :func:`lr_multipliers`."""
        base = super().build_optimizer(**hyperparams)
        return optax.chain(base, train.scale_by_multipliers(lr_multipliers(self)))


def _network(config: Config, width: int, parameterization: str):
    return nn.mlp([width] * config.depth, 10, activation="relu", parameterization=parameterization,
                  W_std=np.sqrt(2.0))


def _select(mup, if_mup, if_sp):
    """``if_mup`` or ``if_sp`` (pytrees alike) as ``mup`` says: a Python choice for a concrete bool,
    a leafwise ``jnp.where`` for a traced one (inside the runner's vmapped group)."""
    if isinstance(mup, (bool, np.bool_)):
        return if_mup if mup else if_sp
    return jax.tree.map(lambda a, b: jnp.where(mup, a, b), if_mup, if_sp)


def model(config: Config):
    """The network of a member (the ``model`` hook), in its parameterization (``config.mup``
    concrete). Its ``apply`` is the same under both (:func:`forward`)."""
    return _network(config, config.width, "mup" if config.mup else "standard")


def forward(config: Config):
    """The network whose ``apply`` every member uses, whatever ``config.mup`` (which may be
    traced): SP's and muP's forward passes are the same function, ``z = x W + b`` per layer
    (:mod:`jaxlearn.nn.parameterization`)."""
    return _network(config, config.width, "standard")


class ParameterizedDraw(NamedTuple):
    """``init`` of a member's network in the parameterization ``config.mup`` says (may be traced):
    both parameterizations' networks are drawn from the same key — the same normal draws, which
    XLA computes once; only the readout's scale differs — and their params are selected leafwise,
    so a member gets exactly its parameterization's draw (``model(config).init``)."""

    config: Config

    def init(self, key, input_spec):
        sp, mup = (_network(self.config, self.config.width, p).init(key, input_spec) for p in ("standard", "mup"))
        return _select(self.config.mup, mup, sp)


def lr_multipliers(config: Config):
    """Per-parameter learning-rate multipliers relative to the base width (TP V §4, base shapes):
    ``m(width) / m(base_width)`` with ``m`` the Adam multipliers of
    :meth:`jaxlearn.nn.Layer.lr_multipliers` — ``base_width / width`` for hidden and output weights,
    1 for the input layer and biases under muP; all ones under SP. Python floats for a concrete
    ``config.mup``, arrays selected by a traced one."""
    spec = _input_spec()

    def relative(parameterization):
        here = _network(config, config.width, parameterization).lr_multipliers(spec, "adam")
        base = _network(config, config.base_width, parameterization).lr_multipliers(spec, "adam")
        return jax.tree.map(operator.truediv, here, base)

    return _select(config.mup, relative("mup"), relative("standard"))


def _input_spec():
    return data_module.mnist1d(**_DATASET).input_spec


def loss(config: Config):
    """The training loss (the ``loss`` hook): softmax cross-entropy."""
    del config
    return train.softmax_cross_entropy


data = runner.study.dataset("mnist1d", **_DATASET)


def init(config: Config, key) -> train.TrainState:
    """The member's network (drawn from its seed in its parameterization: :class:`ParameterizedDraw`)
    and its optimizer state."""
    return runner.study.init(config, key, ParameterizedDraw(config), _input_spec())


def measure(state: train.TrainState, config: Config, arrays) -> dict:
    """Loss on the whole training set, test loss and test accuracy. Run at the end of every
    segment; not the ``evaluate`` hook, whose program would compute again the last segment's
    values (a final metric is the last segment's)."""
    net = forward(config)
    train_out = net.apply(state.params, arrays.x_train)
    test_out = net.apply(state.params, arrays.x_test)
    return {"full_train_loss": train.softmax_cross_entropy(train_out, arrays.y_train),
            "test_loss": train.softmax_cross_entropy(test_out, arrays.y_test),
            "test_accuracy": train.accuracy(test_out, arrays.y_test)}


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` Adam steps (per-layer multipliers), then :func:`measure`."""
    return runner.study.segment(state, config, arrays, forward(config), loss=loss(config), evaluate=measure)


# ----------------------------------------------------------------------------- analysis

_COLUMNS = ("mup", "width", "learning_rate", "seed", "full_train_loss")


def _finished(results):
    """The finished runs with a finite final loss, and a ``parameterization`` column ("mup" or
    "standard", from the config's ``mup``)."""
    runs = results.finished(*_COLUMNS).runs
    runs = runs[np.isfinite(runs["full_train_loss"].astype(float))]
    return runs.assign(parameterization=np.where(runs["mup"].astype(bool), "mup", "standard"))


def loss_curves(results) -> dict:
    """``{(parameterization, width): table}`` of the final training loss against the learning rate:
    per learning rate, the mean, min and max over seeds and the number of seeds (finished runs)."""
    runs = _finished(results)
    curves = {}
    for (param, width), part in runs.groupby(["parameterization", "width"]):
        table = part.groupby("learning_rate")["full_train_loss"].agg(["mean", "min", "max", "count"])
        curves[(str(param), int(width))] = table.sort_index()
    return curves


def best_learning_rate(table):
    """The learning rate of the lowest seed-mean loss among those reached by every seed (a
    learning rate some seed did not finish, e.g. diverged, is no candidate); None when empty."""
    complete = table[table["count"] == table["count"].max()] if len(table) else table
    return None if complete.empty else float(complete["mean"].idxmin())


def _per_seed_best(results) -> dict:
    """``{(parameterization, width): [log2 of each seed's own best learning rate]}``."""
    runs, out = _finished(results), {}
    for (param, width, _), part in runs.groupby(["parameterization", "width", "seed"]):
        best = float(part.loc[part["full_train_loss"].idxmin(), "learning_rate"])
        out.setdefault((str(param), int(width)), []).append(round(float(np.log2(best)), 6))
    return out


def _grid_index(results) -> dict:
    """``{learning rate: position}`` in the sorted grid of swept learning rates (finished runs)."""
    lrs = sorted(set(float(v) for v in _finished(results)["learning_rate"]))
    return {lr: i for i, lr in enumerate(lrs)}


def summarize(results) -> list[dict]:
    """Per parameterization and width: the best learning rate of the seed-mean curve, the loss there
    (mean and std over seeds), and the spread of each seed's own best (log2 mean, min, max)."""
    per_seed, runs, rows = _per_seed_best(results), _finished(results), []
    for (param, width), table in loss_curves(results).items():
        best = best_learning_rate(table)
        at_best = runs[(runs["parameterization"] == param) & (runs["width"] == width)
                       & np.isclose(runs["learning_rate"], best)]["full_train_loss"]
        seeds = per_seed[(param, width)]
        rows.append({"parameterization": param, "width": width, "best_learning_rate": best,
                     "best_log2_lr": round(float(np.log2(best)), 6),
                     "seed_best_log2_lr": round(float(np.mean(seeds)), 6),
                     "seed_best_log2_lr_min": float(np.min(seeds)), "seed_best_log2_lr_max": float(np.max(seeds)),
                     "train_loss": float(at_best.mean()), "train_loss_std": float(at_best.std(ddof=0)),
                     "seeds": int(table["count"].max()), "learning_rates": len(table)})
    return sorted(rows, key=lambda r: (r["parameterization"], r["width"]))


def _shifts(results, min_seeds: int) -> dict:
    """``{parameterization: [(width, grid index of the best lr, best lr)]}`` by width, after asserting
    what the comparison needs: ≥ 2 widths, ``min_seeds`` seeds, the optimum inside the grid."""
    rows, index = summarize(results), _grid_index(results)
    shifts = {}
    for param in ("standard", "mup"):
        mine = [r for r in rows if r["parameterization"] == param]
        assert len(mine) >= 2, f"{param}: {len(mine)} finished widths, need >= 2"
        for r in mine:
            assert r["seeds"] >= min_seeds, f"{param} width {r['width']}: {r['seeds']} seeds, need >= {min_seeds}"
        shifts[param] = [(r["width"], index[r["best_learning_rate"]], r["best_learning_rate"]) for r in mine]
    return shifts


def check(results) -> None:
    """TP V Fig. 1 on a factor-2 learning-rate grid (best = lowest final training loss, mean over
    ≥ 3 seeds): under muP the best learning rates of all widths lie within one grid step; under SP
    the widest network's best is at least two grid steps below the narrowest's. Every best learning
    rate is inside the grid (not at its end), so that it is a minimum, not a bound."""
    shifts = _shifts(results, min_seeds=3)
    n_grid = len(_grid_index(results))
    for param, points in shifts.items():
        for width, i, lr in points:
            assert 0 < i < n_grid - 1, f"{param} width {width}: best lr {lr:g} is at the end of the grid"
    mup = [i for _, i, _ in shifts["mup"]]
    assert max(mup) - min(mup) <= 1, (f"muP: best lr moves by {max(mup) - min(mup)} grid steps across widths "
                                      f"(> 1): {[(w, f'{lr:g}') for w, _, lr in shifts['mup']]}")
    (narrow, i_narrow, lr_narrow), (wide, i_wide, lr_wide) = shifts["standard"][0], shifts["standard"][-1]
    assert i_narrow - i_wide >= 2, (f"SP: best lr moves from {lr_narrow:g} (width {narrow}) to {lr_wide:g} (width "
                                    f"{wide}), {i_narrow - i_wide} grid steps down, need >= 2")


def smoke_check(results) -> None:
    """At toy scale: every finished loss is finite and below chance (log 10) at the best learning
    rate; every width of both parameterizations has the whole learning-rate grid; and the SP
    optimum does not move up with width (it moves down in the paper)."""
    shifts = _shifts(results, min_seeds=1)
    curves = loss_curves(results)
    n_grid = len(_grid_index(results))
    for key, table in curves.items():
        assert len(table) == n_grid, f"{key}: {len(table)} of {n_grid} learning rates finished"
        assert table["mean"].min() < np.log(10), f"{key}: best loss {table['mean'].min():.3f} >= log 10 (chance)"
    sp = shifts["standard"]
    assert sp[-1][1] <= sp[0][1], f"SP: best lr rises with width: {sp[0][2]:g} (width {sp[0][0]}) -> {sp[-1][2]:g}"


def plot(results):
    """TP V Fig. 1: final training loss against the learning rate, one curve per width (mean over
    seeds, min–max band, the best marked), SP left and muP right."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    curves = loss_curves(results)
    widths = sorted({w for _, w in curves})
    colors = dict(zip(widths, colormaps["viridis"](np.linspace(0, 0.9, max(len(widths), 1)))))
    lows = [float(t["mean"].min()) for t in curves.values()]
    for ax, param, title in zip(axes, ("standard", "mup"), ("Standard parameterization", "muP")):
        for width in widths:
            table = curves.get((param, width))
            if table is None:
                continue
            x = np.log2(table.index.to_numpy(float))
            ax.plot(x, table["mean"], "o-", ms=3, color=colors[width], label=f"width {width}")
            ax.fill_between(x, table["min"], table["max"], color=colors[width], alpha=0.2, lw=0)
            best = best_learning_rate(table)
            ax.plot(np.log2(best), table.loc[best, "mean"], "*", ms=12, color=colors[width], mec="k")
        ax.set(xlabel="log2 learning rate (Adam)", title=title)
        legend(ax, fontsize=8)
    axes[0].set_ylabel("training loss after training")
    if lows:
        axes[0].set_ylim(0.8 * min(lows), np.log(10) + 0.5)  # above chance: SP's diverging losses off the top
    fig.tight_layout()
    return fig
