"""Lazy vs feature learning: how far wide networks move from their initial kernel while training.

Lee et al. 2019 ("Wide neural networks of any depth evolve as linear models under gradient
descent", §2.3–2.4, Fig. 1) and Chizat, Oyallon & Bach 2019 ("On lazy training in differentiable
programming"): in the NTK parameterization, trained with a width-independent learning rate, the
parameters move less and less relative to their initial size as the width grows, and the
empirical NTK stays at its initial value (the lazy regime): the network trains like its
linearization. Narrow networks move their kernel (Fort et al. 2020, "Deep learning versus kernel
learning", §3: the kernel distance ``1 − ⟨K_0, K_t⟩/(‖K_0‖‖K_t‖)``).

Each member: an MLP (ReLU, NTK parameterization) of width ``width`` trained by SGD on MSE to
one-hot digits labels. The state keeps ``θ_0`` and the empirical NTK ``K_0`` on a fixed probe set
of ``probe`` training images (``jaxlearn.kernels.empirical``, trace over the 10 outputs), and every
segment reports, inside the compiled program, ``relative_weight_change``, ``kernel_distance``
(``K_0`` vs the current empirical NTK) and ``kernel_alignment`` (the current NTK against the
probe labels' one-hot Gram matrix) next to ``train_loss`` and ``test_accuracy`` — the
diagnostics of :mod:`jaxlearn.kernels.linearize` used through the runner's periodic evaluation.
Seeds and learning rates are dynamic; widths are static (one compiled group per width).

Claim (``check``): the final relative weight change and kernel distance both fall with width —
the widest network's are at most a third of the narrowest's — while every width learns
(test accuracy above 0.5; chance is 0.1). Measured with configs/kernel_regimes.yaml (1000 steps of SGD,
lr 5, batch 64, 2 seeds; means):

=====  ======================  ===============  =============
width  relative weight change  kernel distance  test accuracy
=====  ======================  ===============  =============
   64  0.126                   7.1e-3           0.928
  256  0.041                   7.5e-4           0.957
 1024  0.012                   1.2e-4           0.950
 2048  0.0059                  3.8e-5           0.962
=====  ======================  ===============  =============

(about ``width^-0.9`` and ``width^-1.5``: the whole parameter vector's norm grows with the
number of parameters, and the cosine distance is second order in the kernel's change).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import kernels, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "2"  # 2: the shared training base (a data_seed field; the run ids changed, the results did not)


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an NTK-parameterized ReLU MLP of width ``width`` on digits (MSE, SGD)."""

    learning_rate: float = runner.dynamic(5.0, min=0.0, help="SGD step size (width-independent under NTK "
                                                                 "parameterization)")
    width: int = runner.static(256, min=1, help="hidden layer width")
    depth: int = runner.static(2, min=1, help="number of hidden layers")
    probe: int = runner.static(64, min=2, max=1437, help="training images on which the kernels are measured")
    segment_steps: int = runner.static(250, min=1, help="steps per segment (metrics and checkpoint after each)")


class LazyState(NamedTuple):
    """A member: its ``train_state``, its initial parameters ``params_0`` and its initial empirical
    NTK ``ntk_0`` on the probe set."""

    train_state: train.TrainState
    params_0: Any
    ntk_0: jax.Array


def model(config: Config):
    """The network of a member (the ``model`` hook)."""
    ntk = dict(parameterization="ntk", W_std=np.sqrt(2.0), b_std=0.1)
    layers = []
    for _ in range(config.depth):
        layers += [nn.Dense(config.width, **ntk), nn.Relu()]
    return nn.serial(*layers, nn.Dense(10, **ntk))


def loss(config: Config):
    """The training loss (the ``loss`` hook): ``½·mean((f − y)²)`` to one-hot labels."""
    del config
    return train.mse


def data(config: Config) -> data_module.Arrays:
    """The digits split shared by every member, training labels one-hot (MSE targets)."""
    del config
    arrays = data_module.digits(seed=0).arrays()
    return arrays._replace(y_train=jax.nn.one_hot(arrays.y_train, 10))


def _probe(config: Config):
    """The first ``probe`` training images and their one-hot labels (constants of the program)."""
    ds = data_module.digits(seed=0)
    return jnp.asarray(ds.x_train[:config.probe]), jax.nn.one_hot(ds.y_train[:config.probe], 10)


def _ntk(config: Config, params):
    return kernels.empirical(model(config).apply, params, _probe(config)[0])


def init(config: Config, key) -> LazyState:
    """The member's train state, its initial parameters and its initial NTK on the probe set."""
    state = runner.study.init(config, key, model(config), data_module.digits(seed=0).input_spec)
    return LazyState(state, state.params, _ntk(config, state.params))


def _diagnostics(member: LazyState, config: Config, arrays) -> dict:
    params = member.train_state.params
    ntk = _ntk(config, params)
    outputs = model(config).apply(params, arrays.x_test)
    return {
        "relative_weight_change": kernels.relative_weight_change(params, member.params_0),
        "kernel_distance": kernels.kernel_distance(member.ntk_0, ntk),
        "kernel_alignment": kernels.kernel_target_alignment(ntk, _probe(config)[1]),
        "test_accuracy": train.accuracy(outputs, arrays.y_test),
    }


def segment(member: LazyState, config: Config, arrays):
    """``segment_steps`` SGD steps on ½·mean((f − y)²), then the diagnostics."""
    state, metrics = runner.study.segment(member.train_state, config, arrays, model(config), loss=loss(config))
    member = member._replace(train_state=state)
    return member, {**metrics, **_diagnostics(member, config, arrays)}


_FINAL = ("relative_weight_change", "kernel_distance", "kernel_alignment", "test_accuracy")


def _final(results):
    return results.finished("width", *_FINAL).runs


def summarize(results) -> list[dict]:
    """Per width: final relative weight change, kernel distance, alignment and test accuracy
    (means over seeds and learning rates)."""
    rows = []
    for width, part in _final(results).groupby("width"):
        rows.append({"width": int(width), "runs": len(part),
                     **{k: float(part[k].mean()) for k in _FINAL}})
    return sorted(rows, key=lambda r: r["width"])


def check(results) -> None:
    """The lazy-regime claims: the widest network moves its weights and its kernel at most a
    third as much as the narrowest (relative weight change and kernel distance), and every width
    learns (test accuracy > 0.5; chance is 0.1)."""
    rows = summarize(results)
    assert len(rows) >= 2, "check needs at least two widths"
    narrow, wide = rows[0], rows[-1]
    for key in ("relative_weight_change", "kernel_distance"):
        assert wide[key] <= narrow[key] / 3, (f"{key}: width {wide['width']} gives {wide[key]:.4g}, more than a third "
                                              f"of width {narrow['width']}'s {narrow[key]:.4g}")
    for row in rows:
        assert row["test_accuracy"] > 0.5, f"width {row['width']}: test accuracy {row['test_accuracy']:.3f} <= 0.5"


def plot(results):
    """Relative weight change and kernel distance over training, one curve per width (mean over runs)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    curves = results.finished("width", "relative_weight_change", "kernel_distance").curves
    for width, part in curves.groupby("width"):
        mean = part.groupby("step")[["relative_weight_change", "kernel_distance"]].mean()
        axes[0].plot(mean.index, mean["relative_weight_change"], label=f"width {int(width)}")
        axes[1].plot(mean.index, mean["kernel_distance"], label=f"width {int(width)}")
    axes[0].set(xlabel="step", ylabel="‖θ_t − θ_0‖ / ‖θ_0‖", yscale="log", title="Relative weight change")
    axes[1].set(xlabel="step", ylabel="1 − cos(K_0, K_t)", yscale="log", title="Kernel distance (NTK)")
    legend(axes[0], fontsize=8)
    fig.tight_layout()
    return fig
