"""Memorising random labels: a network that generalises can also fit pure noise.

Zhang, Bengio, Hardt, Recht & Vinyals 2017 ("Understanding deep learning requires rethinking
generalization", §2 "Effective capacity of neural networks", Fig. 1a–c). The same network, with
the same training procedure, fits the true labels, partially corrupted labels, completely random
labels and random inputs to 100% training accuracy; fitting takes longer the more labels are
corrupted (Fig. 1b: "time to overfit" grows with the corruption level) and the test accuracy falls
to chance as the corruption reaches 100% (Fig. 1c). The randomisation test: whatever makes these
networks generalise on real data is not a limit on what they can fit.

Setting. The first ``num_train`` images of the digits training split (8×8, 10 classes) and its
test split, a ReLU MLP (``widths``, He init), minibatch SGD with momentum. A member's training set
is drawn from its own key (``fold_in(member key, 1)``, so it is fixed for the run and independent
of the group it trains in):

* labels — with probability ``corruption`` each training label is replaced by a class drawn
  uniformly from all ``K = 10`` (Zhang et al.'s convention, under which 1/K of the replaced labels
  keep their value). In law this is :func:`jaxlearn.data.corrupt_labels` — which moves a label to
  a uniformly drawn *different* class — at rate ``corruption · (K − 1)/K``, which is how it is
  drawn. ``corruption = 1`` gives completely random labels;
* inputs — with ``random_inputs`` every training image is replaced by Gaussian noise with the
  training images' mean and standard deviation (pixelwise over the whole set; Zhang et al.'s
  "Gaussian" setting), labels kept.

The test split is never changed. ``seed``, ``learning_rate``, ``corruption`` and ``random_inputs``
are dynamic, so every setting × seed is one vmapped program.

Steps to fit. Every ``eval_every`` steps inside the scan (nested ``lax.scan``) the training
accuracy on the member's whole (corrupted) training set is measured, and the state keeps
``fit_step``, the first evaluated step at which it is 100% (``-1`` until then; a run that never
fits by ``num_steps`` is reported, not dropped). Metrics per segment: ``train_loss`` (minibatch
mean), ``train_accuracy`` (on the member's training set), ``test_accuracy``; final metrics add
``fit_step`` and ``label_agreement`` (the fraction of the member's training labels equal to the
true ones: ``1 − corruption (K − 1)/K`` in expectation).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn import data as data_module
from jaxlearn import nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

NUM_CLASSES = 10
_LABELS, _INPUTS = 1, 2  # fold_in tags of the member's training-set keys


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an MLP trained on ``num_train`` digits whose labels (``corruption``) or inputs
    (``random_inputs``) are randomised. ``seed``, ``learning_rate``, ``corruption`` and
    ``random_inputs`` are dynamic."""

    seed: int = runner.dynamic(0, min=0, help="initialisation, data order and randomisation seed")
    learning_rate: float = runner.dynamic(0.03, min=0.0, help="SGD learning rate (constant)")
    corruption: float = runner.dynamic(0.0, min=0.0, max=1.0, help="probability that a training label is replaced "
                                                                    "by a uniformly random class")
    random_inputs: bool = runner.dynamic(False, help="replace every training image by Gaussian noise")
    num_train: int = runner.static(500, min=1, help="training images (the first of the digits training split)")
    widths: tuple[int, ...] = runner.static((512,), min=1, help="hidden layer widths")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="sgd", args={"momentum": 0.9}),
                                                   help="optax optimizer and schedule")
    batch_size: int | None = runner.static(50, min=1, help="examples per step (null: the whole training set)")
    num_steps: int = runner.static(2500, min=1, help="training steps (a run not fitted by then is reported)")
    segment_steps: int = runner.static(250, min=1, help="steps per segment (curves and checkpoint after each)")
    eval_every: int = runner.static(25, min=1, help="steps between training-accuracy checks inside the scan")

    def __post_init__(self):
        if self.segment_steps % self.eval_every or self.num_steps % self.eval_every:
            raise ValueError(f"eval_every: must divide segment_steps={self.segment_steps} and "
                             f"num_steps={self.num_steps}, got {self.eval_every}")


class MemoriseState(NamedTuple):
    """One member: its ``train_state``, the key of its randomised training set and ``fit_step``
    (``-1`` until the training set is fitted)."""

    train_state: train.TrainState
    data_key: jax.Array
    fit_step: jax.Array

    params = runner.study.train_state_field("params")
    model_state = runner.study.train_state_field("model_state")


def model(config: Config):
    """The network of a member (the ``model`` hook): ``Dense → ReLU → … → Dense(10)``, He init."""
    return nn.mlp(config.widths, NUM_CLASSES, activation="relu", W_std=np.sqrt(2.0))


def data(config: Config) -> data_module.Arrays:
    """The first ``num_train`` digits training images and the whole test split (shared by a group)."""
    ds = data_module.digits(seed=0)
    if config.num_train > ds.num_train:
        raise ValueError(f"num_train: at most {ds.num_train} digits training images, got {config.num_train}")
    return ds._replace(x_train=ds.x_train[:config.num_train], y_train=ds.y_train[:config.num_train]).arrays()


def init(config: Config, key) -> MemoriseState:
    """One member at step 0: a fresh network, the key of its training set, not fitted."""
    k_train, k_data = jax.random.split(key)
    state = runner.study.init(config, k_train, model(config), data(config).input_spec)
    return MemoriseState(state, k_data, jnp.asarray(-1, jnp.int32))


def training_set(state: MemoriseState, config: Config, arrays) -> tuple[jax.Array, jax.Array]:
    """The member's training inputs and labels ``(x (n, 64), y (n,))``: the true ones, with labels
    replaced by uniform classes at rate ``corruption`` and inputs by Gaussian noise where
    ``random_inputs`` (module docstring). A pure function of the member's key: the same at every step."""
    flip_rate = config.corruption * (NUM_CLASSES - 1) / NUM_CLASSES  # uniform replacement, in law
    y = data_module.corrupt_labels(jax.random.fold_in(state.data_key, _LABELS), arrays.y_train, flip_rate,
                                   NUM_CLASSES)
    x = arrays.x_train
    noise = jnp.mean(x) + jnp.std(x) * jax.random.normal(jax.random.fold_in(state.data_key, _INPUTS), x.shape, x.dtype)
    return jnp.where(config.random_inputs, noise, x), y


def segment(state: MemoriseState, config: Config, arrays):
    """``segment_steps`` minibatch steps on the member's training set, its training accuracy
    checked every ``eval_every`` steps (nested scans) to locate the fitting step."""
    net = model(config)
    step = train.make_step(net.apply_with_state, train.softmax_cross_entropy, config.build_optimizer())
    x, y = training_set(state, config, arrays)

    def batch_fn(key, step_index):
        return data_module.get_batch(train.order_key(key, config.data_seed), step_index, x, y, config.batch_size)

    def block(state: MemoriseState, _):
        ts, metrics = train.train(state.train_state, step, batch_fn, config.eval_every)
        fitted = train.accuracy(net.apply(ts.params, x, ts.model_state), y) >= 1.0
        fit = jnp.where((state.fit_step < 0) & fitted, ts.step, state.fit_step)
        return state._replace(train_state=ts, fit_step=fit), jnp.mean(metrics["train"]["loss"])

    state, losses = lax.scan(block, state, None, length=config.segment_steps // config.eval_every)
    return state, {"train_loss": jnp.mean(losses), **_accuracies(state, config, arrays, x, y)}


def _accuracies(state: MemoriseState, config: Config, arrays, x, y) -> dict:
    net = model(config)
    return {"train_accuracy": train.accuracy(net.apply(state.params, x, state.model_state), y),
            "test_accuracy": train.accuracy(net.apply(state.params, arrays.x_test, state.model_state), arrays.y_test)}


def evaluate(state: MemoriseState, config: Config, arrays) -> dict:
    """Final training (on the member's set) and test accuracy, ``fit_step`` and ``label_agreement``."""
    x, y = training_set(state, config, arrays)
    return {**_accuracies(state, config, arrays, x, y), "fit_step": state.fit_step,
            "label_agreement": jnp.mean(y == arrays.y_train)}


# ----------------------------------------------------------------------------- analysis
_SETTING = ("random_inputs", "corruption")


def _setting_name(random_inputs, corruption) -> str:
    if random_inputs:
        return "random inputs" if corruption == 0 else f"random inputs, {corruption:.0%} corrupted"
    return {0.0: "true labels", 1.0: "random labels"}.get(float(corruption), f"{corruption:.0%} corrupted")


def _runs(results):
    return results.finished(*_SETTING, "seed", "num_steps", "fit_step", "train_accuracy", "test_accuracy").runs


def summarize(results) -> list[dict]:
    """Per setting (true labels, corrupted labels by rate, random inputs): seeds, how many fitted
    100% of their training set, steps to fit (mean ± std over those that did), the final training
    and test accuracy (mean ± std)."""
    rows = []
    for (random_inputs, corruption), part in _runs(results).groupby(list(_SETTING)):
        fit = part["fit_step"].to_numpy(float)
        fitted = fit[fit >= 0]
        test = part["test_accuracy"].to_numpy(float)
        rows.append({"setting": _setting_name(bool(random_inputs), float(corruption)),
                     "random_inputs": bool(random_inputs), "corruption": float(corruption), "seeds": len(part),
                     "fitted": len(fitted), "fit_step": float(fitted.mean()) if len(fitted) else float("nan"),
                     "fit_step_std": float(fitted.std()) if len(fitted) else float("nan"),
                     "train_accuracy": float(part["train_accuracy"].mean()),
                     "test_accuracy": float(test.mean()), "test_accuracy_std": float(test.std()),
                     "cap": int(part["num_steps"].max())})
    return sorted(rows, key=lambda r: (r["random_inputs"], r["corruption"]))


def check(results, *, slowdown: float = 2.0, chance_margin: float = 0.05) -> None:
    """The claims (Zhang et al. 2017, Fig. 1): every run of every setting fits its training set to
    100% accuracy; with true inputs, the mean steps to fit grow strictly with the corruption rate,
    and at full corruption take at least ``slowdown`` (2) times as long as with true labels; the
    test accuracy at full corruption is chance (1/10) within ``chance_margin`` (5 points)."""
    runs, rows = _runs(results), summarize(results)
    assert len(runs), "no finished runs"
    unfitted = [f"{_setting_name(bool(r.random_inputs), float(r.corruption))} seed {int(r.seed)}"
                for r in runs.itertuples() if r.fit_step < 0]
    assert not unfitted, f"not fitted to 100% by the cap: {', '.join(unfitted)}"
    labels = [r for r in rows if not r["random_inputs"]]
    steps = [r["fit_step"] for r in labels]
    assert all(a < b for a, b in zip(steps, steps[1:])), \
        "steps to fit do not grow with the corruption: " + ", ".join(f"{r['setting']}: {r['fit_step']:g}"
                                                                      for r in labels)
    true = [r for r in labels if r["corruption"] == 0.0]
    full = [r for r in labels if r["corruption"] == 1.0]
    if true and full:
        ratio = full[0]["fit_step"] / true[0]["fit_step"]
        assert ratio >= slowdown, f"random labels take only {ratio:.2f}x the steps of true labels (< {slowdown:g}x)"
    if full:
        test = full[0]["test_accuracy"]
        assert abs(test - 1 / NUM_CLASSES) <= chance_margin, \
            f"test accuracy with random labels {test:.3f} is not chance ({1 / NUM_CLASSES:.2f} ± {chance_margin:g})"


def smoke_check(results) -> None:
    """At toy size (100 digits, one seed per setting) the direction of the effect: every run fits
    its training set, random labels take longer to fit than true labels (> 1.5×) and their test
    accuracy is far below that of true labels (by more than 30 points)."""
    runs, rows = _runs(results), summarize(results)
    assert len(runs), "no finished runs"
    assert (runs["fit_step"] >= 0).all(), "a smoke run did not fit its training set"
    by_name = {r["setting"]: r for r in rows}
    if {"true labels", "random labels"} <= set(by_name):
        true, rand = by_name["true labels"], by_name["random labels"]
        assert rand["fit_step"] > 1.5 * true["fit_step"], \
            f"random labels fitted at step {rand['fit_step']:g}, true labels at {true['fit_step']:g}"
        assert rand["test_accuracy"] < true["test_accuracy"] - 0.3, \
            f"test accuracy: random labels {rand['test_accuracy']:.3f}, true labels {true['test_accuracy']:.3f}"


def plot(results):
    """Left: training accuracy over steps, one line per setting (mean over seeds; Zhang et al.'s
    Fig. 1a shows the loss). Right: steps to fit (bars, mean ± std over seeds) and final test
    accuracy (dots) per setting, chance dashed."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    ax_curve, ax_bar = fig.subplots(1, 2)
    rows = summarize(results)
    curves = results.finished(*_SETTING, "train_accuracy").curves
    colors = colormaps["viridis"](np.linspace(0, 0.85, max(len(rows), 1)))
    for row, color in zip(rows, colors):
        part = curves[(curves.random_inputs == row["random_inputs"]) & np.isclose(curves.corruption, row["corruption"])]
        stats = part.groupby("step")["train_accuracy"].mean()
        ax_curve.plot(stats.index, stats.to_numpy(), color=color, label=row["setting"])
    ax_curve.set(xlabel="step", ylabel="training accuracy (own labels)", ylim=(0, 1.02),
                 title="Fitting true, corrupted and random data")
    legend(ax_curve, fontsize=8)
    positions = np.arange(len(rows))
    ax_bar.bar(positions, [r["fit_step"] for r in rows], yerr=[r["fit_step_std"] for r in rows], color=colors,
               capsize=3)
    ax_bar.set(xticks=positions, ylabel="steps to 100% training accuracy", title="Time to fit and test accuracy")
    ax_bar.set_xticklabels([r["setting"] for r in rows], rotation=15, fontsize=8)
    ax_test = ax_bar.twinx()
    ax_test.plot(positions, [r["test_accuracy"] for r in rows], "ko")
    ax_test.axhline(1 / NUM_CLASSES, color="grey", linestyle="--", linewidth=1)
    ax_test.set(ylabel="test accuracy (dots; chance dashed)", ylim=(0, 1))
    fig.tight_layout()
    return fig
