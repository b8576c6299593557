"""Grokking: validation accuracy jumps long after the training set is memorised.

Power, Burda, Edwards, Babuschkin & Misra 2022 ("Grokking: generalization beyond overfitting on
small algorithmic datasets", §3, Figs. 1, 2 and 4). A network trained on a fraction of the table
of a binary operation modulo ``p`` first fits its training pairs — training accuracy near 100% —
while validation accuracy (the held-out pairs) stays at or below chance, and only much later,
with no change in training accuracy, generalises: validation accuracy rises to near 100%. Their
Fig. 2 shows the delay growing as the training fraction shrinks; their Fig. 4 (and Nanda et al.
2023; Liu, Michaud & Tegmark 2023) shows weight decay as the strongest lever: the larger it is,
the sooner the network groks.

Setting. Modular addition ``c = (a + b) mod p`` (:func:`jaxlearn.data.modular_arithmetic`; its
``split_seed`` shuffle, the same for every member, picks the ``train_fraction`` of the ``p²`` pairs
used for training). The network is :func:`jaxlearn.nn.embedding_mlp`: each token embedded
(``embed_dim``), the two embeddings concatenated, a ReLU MLP (``widths``) and ``p`` logits;
He-normal init. Training is full-batch AdamW (β = (0.9, 0.98), decoupled weight decay as in
optax: ``θ ← θ − η (m̂/(√v̂ + ε) + λ θ)``) on the softmax cross-entropy, at a constant learning
rate. ``seed`` and ``weight_decay`` λ (and ``learning_rate``) are dynamic, so a sweep over seeds ×
weight decay is one vmapped program per training fraction.

Locating the steps. Every ``eval_every`` steps inside the scan (a nested ``lax.scan``: an outer
scan over blocks of ``eval_every`` steps, the evaluation after each) the member's training and
validation accuracy are measured on the whole splits, and the state (:class:`GrokState`) keeps

* ``fit_step``: the first evaluated step with training accuracy ≥ :data:`FIT_ACCURACY` (99%);
* ``test_at_delay``: validation accuracy at the first evaluated step ≥ :data:`DELAY` × ``fit_step``
  (10× the fitting time, the claim's "long after");
* ``grok_step``: the first evaluated step with validation accuracy ≥ :data:`GROK_ACCURACY` (95%);

``-1`` until reached. A run that has not grokked by ``num_steps``
(the cap) keeps ``grok_step = -1`` and is reported as not grokked, never dropped. The steps are
resolved to ``eval_every``.

Metrics per segment: ``train_loss`` (mean over the segment), ``train_accuracy``,
``test_accuracy``, ``test_loss`` and ``weight_norm`` (the global L2 norm of the parameters, which
weight decay shrinks while the network moves from memorising to generalising). Final metrics add
``fit_step``, ``grok_step`` (``-1``: not grokked by the cap) and ``test_at_delay``.

Measured (``jaxlearn run configs/grokking.yaml``, p = 97, embed 128, hidden 256, lr 3·10⁻³, seeds
0–2; docs/reproductions.md): at fraction 0.3 the training pairs are fitted by step 100 (λ = 2) or
150 (λ = 4); at λ = 2 validation is 0.007 at step 1000 and reaches 95% at 2600 ± 319; at λ = 4 at
1917 ± 118; at fraction 0.5, λ = 2, at 567 ± 24. Variant ``issue_setting`` (λ = 1, cap 5500): fit
by step 50, validation 0.000 at step 500, 95% at 4417 ± 660.
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
from jaxlearn.data.synthetic import MODULAR_OPS
from jaxlearn.runner.plots import legend

VERSION = "1"

FIT_ACCURACY = 0.99     # training accuracy at which the training set counts as fitted
GROK_ACCURACY = 0.95    # validation accuracy at which a run counts as grokked
DELAY = 10              # the claim's "long after": validation still low at DELAY x the fitting step
MEMORISED_TEST_MAX = 0.2  # ... "low" meaning below this validation accuracy


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an embedding MLP trained on a ``train_fraction`` of the table of ``(a + b) mod
    p`` by full-batch AdamW. ``seed``, ``learning_rate`` and ``weight_decay`` are dynamic."""

    seed: int = runner.dynamic(0, min=0, help="initialisation seed")
    learning_rate: float = runner.dynamic(3e-3, min=0.0, help="AdamW learning rate (constant)")
    weight_decay: float = runner.dynamic(1.0, min=0.0, help="AdamW decoupled weight decay λ")
    p: int = runner.static(97, min=2, help="modulus: p² pairs (a, b), p classes")
    op: str = runner.static("+", choices=MODULAR_OPS, help="the binary operation modulo p")
    train_fraction: float = runner.static(0.3, min=0.0, max=1.0, help="share of the p² pairs used for training")
    split_seed: int = runner.static(0, min=0, help="shuffle of the pairs into train and validation (all members)")
    embed_dim: int = runner.static(128, min=1, help="token embedding width")
    widths: tuple[int, ...] = runner.static((256,), min=1, help="hidden layer widths of the MLP on the embeddings")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adamw", args={"b1": 0.9, "b2": 0.98}),
                                                   help="optax optimizer (takes weight_decay) and schedule")
    batch_size: int | None = runner.static(None, min=1, help="examples per step (null: full batch, as in the paper)")
    num_steps: int = runner.static(5500, min=1, help="training steps (the cap: a run not grokked by then is reported)")
    segment_steps: int = runner.static(250, min=1, help="steps per segment (curves and checkpoint after each)")
    eval_every: int = runner.static(50, min=1, help="steps between evaluations inside the scan (step resolution)")

    def __post_init__(self):
        if self.segment_steps % self.eval_every or self.num_steps % self.eval_every:
            raise ValueError(f"eval_every: must divide segment_steps={self.segment_steps} and "
                             f"num_steps={self.num_steps}, got {self.eval_every}")
        train.optimizer(self.optimizer.name, learning_rate=1.0, weight_decay=0.0, **self.optimizer.args)

    def build_optimizer(self, **hyperparams):
        """The member's optimizer with its (traced) weight decay."""
        return super().build_optimizer(weight_decay=self.weight_decay, **hyperparams)


class GrokState(NamedTuple):
    """One member: its ``train_state`` and the located steps (module docstring), ``-1`` until
    reached. ``params`` / ``model_state`` read through to the train state."""

    train_state: train.TrainState
    fit_step: jax.Array
    grok_step: jax.Array
    test_at_delay: jax.Array

    params = runner.study.train_state_field("params")
    model_state = runner.study.train_state_field("model_state")


def model(config: Config):
    """The network of a member (the ``model`` hook): ``Embedding(p, embed_dim) → Flatten → Dense →
    ReLU → … → Dense(p)``, He init."""
    return nn.embedding_mlp(config.p, config.embed_dim, config.widths, config.p, activation="relu",
                            W_std=np.sqrt(2.0))


def data(config: Config) -> data_module.Arrays:
    """The operation table split into training and validation pairs (shared by a group)."""
    return data_module.modular_arithmetic(p=config.p, op=config.op, train_fraction=config.train_fraction,
                                          seed=config.split_seed).arrays()


def init(config: Config, key) -> GrokState:
    """One member at step 0: a fresh network, no step located yet."""
    state = runner.study.init(config, key, model(config), data(config).input_spec)
    never = jnp.asarray(-1, jnp.int32)
    return GrokState(state, never, never, jnp.asarray(-1.0, jnp.result_type(float)))


def _accuracies(params, model_state, config: Config, arrays) -> tuple[jax.Array, jax.Array]:
    net = model(config)
    return (train.accuracy(net.apply(params, arrays.x_train, model_state), arrays.y_train),
            train.accuracy(net.apply(params, arrays.x_test, model_state), arrays.y_test))


def locate(state: GrokState, train_accuracy, test_accuracy) -> GrokState:
    """``state`` with its located steps updated by one evaluation at ``state.train_state.step``:
    the first step with training accuracy ≥ :data:`FIT_ACCURACY`, the validation accuracy at the
    first evaluation ≥ :data:`DELAY` × that step, the first step with validation accuracy ≥
    :data:`GROK_ACCURACY`. Pure and traceable (``where``, no branch)."""
    step = state.train_state.step
    fit = jnp.where((state.fit_step < 0) & (train_accuracy >= FIT_ACCURACY), step, state.fit_step)
    due = (fit >= 0) & (step >= DELAY * fit) & (state.test_at_delay < 0)
    grok = jnp.where((state.grok_step < 0) & (test_accuracy >= GROK_ACCURACY), step, state.grok_step)
    return state._replace(fit_step=fit, grok_step=grok,
                          test_at_delay=jnp.where(due, test_accuracy, state.test_at_delay))


def segment(state: GrokState, config: Config, arrays):
    """``segment_steps`` full-batch AdamW steps, evaluated every ``eval_every`` (nested scans)."""
    net = model(config)
    step = train.make_step(net.apply_with_state, train.softmax_cross_entropy, config.build_optimizer())

    def batch_fn(key, step_index):
        return data_module.get_batch(train.order_key(key, config.data_seed), step_index, arrays.x_train,
                                     arrays.y_train, config.batch_size)

    def block(state: GrokState, _):
        ts, metrics = train.train(state.train_state, step, batch_fn, config.eval_every)
        acc_train, acc_test = _accuracies(ts.params, ts.model_state, config, arrays)
        return locate(state._replace(train_state=ts), acc_train, acc_test), jnp.mean(metrics["train"]["loss"])

    state, losses = lax.scan(block, state, None, length=config.segment_steps // config.eval_every)
    return state, {"train_loss": jnp.mean(losses), **_final_metrics(state, config, arrays)}


def _final_metrics(state: GrokState, config: Config, arrays) -> dict:
    net = model(config)
    logits_test = net.apply(state.params, arrays.x_test, state.model_state)
    acc_train, _ = _accuracies(state.params, state.model_state, config, arrays)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(state.params)))
    return {"train_accuracy": acc_train, "test_accuracy": train.accuracy(logits_test, arrays.y_test),
            "test_loss": train.softmax_cross_entropy(logits_test, arrays.y_test), "weight_norm": norm}


def evaluate(state: GrokState, config: Config, arrays) -> dict:
    """Final accuracies and norm, and the located steps (``-1``: not reached by the cap)."""
    return {**_final_metrics(state, config, arrays), "fit_step": state.fit_step, "grok_step": state.grok_step,
            "test_at_delay": state.test_at_delay}


# ----------------------------------------------------------------------------- analysis
_SETTING = ("train_fraction", "weight_decay")


def _runs(results):
    return results.finished(*_SETTING, "seed", "num_steps", "fit_step", "grok_step", "test_at_delay",
                            "test_accuracy").runs


def summarize(results) -> list[dict]:
    """Per (train fraction, weight decay): seeds, how many fitted and grokked by the cap, fitting
    and grokking steps (mean ± std over the runs that reached them), the validation accuracy at
    10× the fitting step (mean and max), the final validation accuracy and the cap."""
    rows = []
    for (fraction, decay), part in _runs(results).groupby(list(_SETTING)):
        fit, grok = part["fit_step"].to_numpy(float), part["grok_step"].to_numpy(float)
        at_delay = part["test_at_delay"].to_numpy(float)
        at_delay = at_delay[at_delay >= 0]
        fitted, grokked = fit[fit >= 0], grok[grok >= 0]
        rows.append({"train_fraction": float(fraction), "weight_decay": float(decay), "seeds": len(part),
                     "fitted": len(fitted), "grokked": len(grokked),
                     "fit_step": float(fitted.mean()) if len(fitted) else float("nan"),
                     "grok_step": float(grokked.mean()) if len(grokked) else float("nan"),
                     "grok_step_std": float(grokked.std()) if len(grokked) else float("nan"),
                     "test_at_delay": float(at_delay.mean()) if len(at_delay) else float("nan"),
                     "test_at_delay_max": float(at_delay.max()) if len(at_delay) else float("nan"),
                     "test_accuracy": float(part["test_accuracy"].mean()), "cap": int(part["num_steps"].max())})
    return sorted(rows, key=lambda r: (r["train_fraction"], r["weight_decay"]))


def _grok_time(row) -> float:
    """Mean grokking step of a setting; ∞ unless every seed grokked (a run that did not grok by
    its cap took longer than any that did)."""
    return row["grok_step"] if row["grokked"] == row["seeds"] else float("inf")


def _delayed(run) -> str | None:
    """Why one run is not a grokking run (None when it is): train fitted, validation below
    :data:`MEMORISED_TEST_MAX` at 10× the fitting step, ≥ :data:`GROK_ACCURACY` later."""
    if run.fit_step < 0:
        return "never fitted the training set"
    if run.test_at_delay < 0:
        return f"the cap came before {DELAY}x the fitting step {int(run.fit_step)}"
    if not run.test_at_delay < MEMORISED_TEST_MAX:
        return f"validation {run.test_at_delay:.3f} at {DELAY}x the fitting step {int(run.fit_step)}"
    if not run.grok_step > DELAY * run.fit_step:
        return "did not grok by the cap" if run.grok_step < 0 else f"grokked at {int(run.grok_step)}, too early"
    return None


def check(results, *, fraction: float = 0.3, decay: float | None = None) -> None:
    """The claims. (1) Power et al. 2022, Fig. 1: at train fraction 0.3 and weight decay ``decay``
    (default: the smallest in the sweep at that fraction, whose grokking is the most delayed), every
    seed fits the training set (≥ 99%), has validation accuracy < 20% at 10× that step, and reaches
    ≥ 95% validation later (by the cap). (2) Fig. 4 / weight decay: at that fraction the mean
    grokking step falls strictly as weight decay grows (a setting with a run that did not grok
    counts as slower than any that did). (3) Fig. 2: at that weight decay, a smaller training
    fraction groks later. (2) and (3) are asserted where the sweep has more than one setting to
    compare."""
    runs, rows = _runs(results), summarize(results)
    if decay is None:
        decays = runs.weight_decay[np.isclose(runs.train_fraction, fraction)]
        assert len(decays), f"no finished run at train_fraction={fraction}"
        decay = float(decays.min())
    main = runs[np.isclose(runs.train_fraction, fraction) & np.isclose(runs.weight_decay, decay)]
    assert len(main), f"no finished run at train_fraction={fraction}, weight_decay={decay}"
    failures = [f"seed {int(r.seed)}: {why}" for r in main.itertuples() if (why := _delayed(r))]
    assert not failures, "no grokking: " + "; ".join(failures)
    by_decay = [r for r in rows if np.isclose(r["train_fraction"], fraction)]
    times = [_grok_time(r) for r in by_decay]
    assert all(a > b for a, b in zip(times, times[1:])), \
        "grokking does not come sooner with more weight decay: " + ", ".join(
            f"λ={r['weight_decay']:g}: {t:g}" for r, t in zip(by_decay, times))
    by_fraction = [r for r in rows if np.isclose(r["weight_decay"], decay)]
    times = [_grok_time(r) for r in by_fraction]
    assert all(a > b for a, b in zip(times, times[1:])), \
        "a smaller training fraction does not grok later: " + ", ".join(
            f"fraction {r['train_fraction']:g}: {t:g}" for r, t in zip(by_fraction, times))


def smoke_check(results) -> None:
    """At toy size (a small p, a few hundred steps), what shows is the order of the two phases:
    every run fits the training set, and at the step it does its validation accuracy is still far
    below its training accuracy — it memorised first. Also the located steps agree with the
    curves: the first logged step with training accuracy ≥ 99% is not before ``fit_step``."""
    runs = _runs(results)
    assert len(runs), "no finished runs"
    curves = results.finished("fit_step").curves
    for run in runs.itertuples():
        assert run.fit_step >= 0, f"seed {int(run.seed)}: never fitted the training set"
        curve = curves[curves.run_id == run.run_id].sort_values("step")
        at_fit = curve[curve.step >= run.fit_step]
        assert len(at_fit), f"seed {int(run.seed)}: no curve point after its fitting step {int(run.fit_step)}"
        first = at_fit.iloc[0]
        assert first.test_accuracy < first.train_accuracy - 0.3, \
            f"seed {int(run.seed)}: validation {first.test_accuracy:.3f} already near train at the fitting step"
        fitted = curve[curve.train_accuracy >= FIT_ACCURACY]
        assert not len(fitted) or fitted.step.min() >= run.fit_step, \
            f"seed {int(run.seed)}: curve fitted at {fitted.step.min()} before fit_step {int(run.fit_step)}"


def plot(results):
    """Left: training (dashed) and validation (solid) accuracy over steps at the claim's setting,
    one colour per weight decay (mean over seeds; Power et al.'s Fig. 1 has log steps). Right:
    grokking step against weight decay, one line per training fraction (mean ± std over the seeds
    that grokked; settings where a seed did not grok are marked at the cap with an open marker)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = Figure(figsize=(11, 4))
    ax_curve, ax_time = fig.subplots(1, 2)
    curves = results.finished(*_SETTING, "train_accuracy", "test_accuracy").curves
    rows = summarize(results)
    fractions = sorted({r["train_fraction"] for r in rows})
    main = min(fractions, key=lambda f: abs(f - 0.3)) if fractions else None
    decays = sorted({r["weight_decay"] for r in rows if r["train_fraction"] == main})
    colors = colormaps["viridis"](np.linspace(0, 0.85, max(len(decays), 1)))
    for decay, color in zip(decays, colors):
        part = curves[np.isclose(curves.train_fraction, main) & np.isclose(curves.weight_decay, decay)]
        stats = part.groupby("step")[["train_accuracy", "test_accuracy"]].mean()
        ax_curve.plot(stats.index, stats["train_accuracy"], "--", color=color)
        ax_curve.plot(stats.index, stats["test_accuracy"], "-", color=color, label=f"λ={decay:g}")
    ax_curve.set(xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02),
                 title=f"train (dashed) / validation (solid), fraction {main}")
    for fraction in fractions:
        part = [r for r in rows if r["train_fraction"] == fraction]
        done = [r for r in part if r["grokked"] == r["seeds"]]
        line = ax_time.errorbar([r["weight_decay"] for r in done], [r["grok_step"] for r in done],
                                yerr=[r["grok_step_std"] for r in done], marker="o", capsize=3,
                                label=f"fraction {fraction:g}")
        late = [r for r in part if r["grokked"] < r["seeds"]]
        if late:
            ax_time.plot([r["weight_decay"] for r in late], [r["cap"] for r in late], "o", mfc="none",
                         color=line.lines[0].get_color())
    ax_time.set(xscale="log", yscale="log", xlabel="weight decay λ", ylabel="step of ≥ 95% validation",
                title="Grokking time (open: not every seed grokked by the cap)")
    all_decays = sorted({r["weight_decay"] for r in rows})
    if all_decays:
        ax_time.set_xticks(all_decays, [f"{d:g}" for d in all_decays])
    ax_time.xaxis.set_minor_formatter(NullFormatter())
    ax_time.yaxis.set_major_formatter(ScalarFormatter())
    ax_time.yaxis.set_minor_formatter(ScalarFormatter())
    legend(ax_curve, fontsize=8)
    legend(ax_time, fontsize=8)
    fig.tight_layout()
    return fig
