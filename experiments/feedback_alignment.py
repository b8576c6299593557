"""Feedback alignment vs backprop on MNIST-1D (Lillicrap et al. 2016; Nøkland 2016).

Lillicrap, Cownden, Tweed & Akerman 2016 ("Random synaptic feedback weights support error
backpropagation for deep learning", Nat. Commun. 7:13276): a network whose backward pass sends the
error through *fixed random* matrices ``B`` instead of ``Wᵀ`` still learns, because the forward
weights come to align with the feedback — the angle between the feedback-alignment (FA) update and
the true gradient falls well below 90° during training (their Fig. 2, "ΔhFA ∠ ΔhBP"). Nøkland 2016
("Direct feedback alignment provides learning in deep neural networks", NeurIPS) sends the output
error straight to every hidden layer through its own random matrix (DFA) and finds the same.

Setting: a 40-256-256-10 tanh MLP (``W_std = 1``, standard parameterization) on MNIST-1D
(Greydanus 2020; 4000 train / 1000 test), Adam, minibatches. The rules (``rule``):

* ``backprop`` — exact gradients;
* ``feedback_alignment`` — every layer an :func:`jaxlearn.rules.FADense` with a fixed random ``B``
  drawn like ``W`` (:func:`jaxlearn.rules.block_mlp` with ``dense`` that layer; the same initial
  weights as backprop for a seed);
* ``dfa`` — :func:`jaxlearn.rules.dfa`: hidden layer ``l`` receives ``e B_l``, ``B_l ~ N(0, 1/10)``;
* ``readout`` — the control: only the output layer is trained (hidden layers frozen at their random
  initialisation), what a network learns when its hidden layers get no useful signal.

The alignment angle (:func:`jaxlearn.analysis.gradient_angle`) is measured after every segment on the
first ``angle_examples`` training examples: the angle between the update the rule prescribes for
the *hidden* layers (all their weights and biases as one vector; the output layer's FA/DFA update is
its true gradient) and the true backprop gradient of the same loss at the same parameters
(``angle``), and for the first and last hidden layer alone (``angle_first``, ``angle_last``);
``angle_start`` is the angle of the state a segment starts from, so the first segment's is the
angle at initialisation. Backprop's angle is 0 and the readout control's 90 (no hidden update) by
construction.

Criterion (:func:`check`; numbers the issue's authors measured for orientation: backprop 68.5%,
FA 58.5%, DFA 60.3%, readout 39.8%; FA angle from ≈ 85° to ≈ 36°): backprop > DFA and FA, which are
within 5 points of each other and ≥ 10 points above the readout control; the alignment angle of FA
and DFA falls below 60°.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import analysis, nn, rules, runner, train
from jaxlearn.runner.plots import legend, mean_band

VERSION = "1"

RULES = ("backprop", "feedback_alignment", "dfa", "readout")
CLASSES = 10
_ANGLES = ("angle", "angle_first", "angle_last")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: the MLP trained by ``rule``. ``seed``, ``data_seed`` and ``learning_rate`` are
    dynamic (one vmapped program per rule); the rest shapes the program."""

    seed: int = runner.dynamic(0, min=0, help="initialisation and feedback-matrix seed (and the data order unless "
                                              "data_seed is set)")
    learning_rate: float = runner.dynamic(1e-3, min=0.0, help="peak learning rate")
    rule: str = runner.static("backprop", choices=RULES, help="learning rule (readout: only the output layer trains)")
    widths: tuple[int, ...] = runner.static((256, 256), min=1, help="hidden layer widths")
    activation: str = runner.static("tanh", choices=("tanh", "relu"), help="hidden activation")
    angle_examples: int = runner.static(1000, min=1, help="training examples on which the alignment angle is "
                                                          "measured (the first ones)")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adam"),
                                                   help="optax optimizer and schedule")


def model(config: Config):
    """The network ``rule`` trains (the ``model`` hook): :func:`jaxlearn.rules.block_mlp` of the
    config's widths, FADense layers with random feedback for feedback alignment; the same initial
    weights for a seed under every rule."""
    dense = functools.partial(rules.FADense, feedback="random") if config.rule == "feedback_alignment" else nn.Dense
    return rules.block_mlp(config.widths, CLASSES, config.activation, W_std=1.0, dense=dense)


def _backprop_model(config: Config):
    """The same function with exact gradients: what the true gradient is taken of."""
    return rules.block_mlp(config.widths, CLASSES, config.activation, W_std=1.0)


def readout_only(objective, params, key):
    """Backprop's gradient of the output layer, zero for every hidden block (a frozen random
    feature map under a trained linear readout): the gradient estimator of the ``readout`` control."""
    (loss, aux), grads = train.backprop(objective, params, key)
    return (loss, aux), (*jax.tree.map(jnp.zeros_like, grads[:-1]), grads[-1])


def _estimator(config: Config):
    if config.rule == "dfa":
        return rules.dfa()
    return readout_only if config.rule == "readout" else train.backprop  # FA: a layer rule under backprop


data = runner.study.dataset("mnist1d")  # the published MNIST-1D (4000 train / 1000 test)


def init(config: Config, key) -> train.TrainState:
    """One member's initial state (FA and DFA feedback matrices in ``model_state``, from its key)."""
    return runner.study.init(config, key, model(config), data(config).input_spec)


def alignment_angles(state: train.TrainState, config: Config, arrays) -> dict:
    """The angles (degrees) between the rule's update of the hidden layers and the true gradient at
    ``state.params``, on the first ``angle_examples`` training examples (module docstring)."""
    batch = (arrays.x_train[:config.angle_examples], arrays.y_train[:config.angle_examples])
    objective = train.make_objective(model(config).apply_with_state, train.softmax_cross_entropy)
    _, update = _estimator(config)(lambda p: objective(p, state.model_state, batch, None), state.params, None)
    true = jax.grad(lambda p: train.softmax_cross_entropy(_backprop_model(config).apply(p, batch[0]), batch[1]))(
        state.params)
    hidden_update, hidden_true = update[:-1], true[:-1]
    return {"angle": analysis.gradient_angle(hidden_update, hidden_true),
            "angle_first": analysis.gradient_angle(hidden_update[0], hidden_true[0]),
            "angle_last": analysis.gradient_angle(hidden_update[-1], hidden_true[-1])}


def _metrics(state: train.TrainState, config: Config, arrays) -> dict:
    """Test accuracy and loss of the network's outputs, and the alignment angles (after every
    segment; the last segment's are the run's final metrics: no separate ``evaluate`` program)."""
    logits = model(config).apply(state.params, arrays.x_test, state.model_state)
    return {"test_accuracy": train.accuracy(logits, arrays.y_test),
            "test_loss": train.softmax_cross_entropy(logits, arrays.y_test),
            **alignment_angles(state, config, arrays)}


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` steps of the rule; metrics: ``train_loss``, :func:`_metrics` of the end
    state and ``angle_start``, the hidden-layer angle of the state the segment started from."""
    start = alignment_angles(state, config, arrays)["angle"]
    state, metrics = runner.study.segment(state, config, arrays, model(config), grad_estimator=_estimator(config),
                                          evaluate=_metrics)
    return state, {**metrics, "angle_start": start}


_COLUMNS = ("rule", "seed", "learning_rate", "test_accuracy", *_ANGLES)


def _best_rates(runs) -> dict:
    """Per rule, the learning rate of the best mean final test accuracy over seeds."""
    return {rule: float(part.groupby("learning_rate")["test_accuracy"].mean().idxmax())
            for rule, part in runs.groupby("rule")}


def summarize(results) -> list[dict]:
    """Per rule at its best learning rate: final test accuracy and alignment angles (mean and std
    over seeds), and the angle at initialisation."""
    finished = results.finished(*_COLUMNS)
    runs, curves = finished.runs, finished.curves
    rows = []
    for rule, lr in _best_rates(runs).items():
        part = runs[(runs.rule == rule) & np.isclose(runs.learning_rate, lr)]
        first = curves[curves.run_id.isin(part.run_id)].sort_values("step").groupby("run_id").head(1)
        rows.append({"rule": rule, "learning_rate": lr, "test_accuracy": float(part.test_accuracy.mean()),
                     "std": float(part.test_accuracy.std(ddof=0)),
                     "initial_angle": float(first.angle_start.mean()) if len(first) else float("nan"),
                     **{name: float(part[name].mean()) for name in _ANGLES}, "seeds": len(part)})
    order = {r: i for i, r in enumerate(RULES)}
    return sorted(rows, key=lambda r: order[r["rule"]])


def _rows(results) -> dict:
    rows = {r["rule"]: r for r in summarize(results)}
    assert rows, "no finished runs"
    return rows


def check(results) -> None:
    """The claim (Lillicrap et al. 2016; Nøkland 2016), on the best learning rate of each rule (mean
    over seeds): backprop beats FA and DFA; FA and DFA are within 5 points of each other and both
    ≥ 10 points above the readout-only control; the hidden-layer alignment angle of FA and of DFA
    ends below 60° (having started above it)."""
    rows = _rows(results)
    missing = set(RULES) - set(rows)
    assert not missing, f"check needs every rule, missing {sorted(missing)}"
    acc = {rule: rows[rule]["test_accuracy"] for rule in RULES}
    for rule in ("feedback_alignment", "dfa"):
        assert acc["backprop"] > acc[rule], f"backprop ({acc['backprop']:.3f}) does not beat {rule} ({acc[rule]:.3f})"
        assert acc[rule] >= acc["readout"] + 0.10, (f"{rule} ({acc[rule]:.3f}) is not 10 points above the readout "
                                                    f"control ({acc['readout']:.3f})")
        angle, start = rows[rule]["angle"], rows[rule]["initial_angle"]
        assert angle < 60, f"{rule}: final alignment angle {angle:.1f}° >= 60°"
        assert start > angle, f"{rule}: the alignment angle did not fall ({start:.1f}° -> {angle:.1f}°)"
    gap = abs(acc["feedback_alignment"] - acc["dfa"])
    assert gap <= 0.05, f"FA ({acc['feedback_alignment']:.3f}) and DFA ({acc['dfa']:.3f}) differ by {gap:.3f} > 0.05"


def smoke_check(results) -> None:
    """At toy scale: every rule learns above chance (10%); the angles are what they must be by
    construction (backprop ≈ 0°, readout 90°); FA and DFA updates point downhill (< 90°) and their
    angle falls from initialisation, and both beat the readout control."""
    rows = _rows(results)
    for rule, row in rows.items():
        assert row["test_accuracy"] > 0.2, f"{rule}: test accuracy {row['test_accuracy']:.3f} <= 0.2"
    if "backprop" in rows:
        assert rows["backprop"]["angle"] < 1.0, f"backprop: angle {rows['backprop']['angle']:.2f}° to its own gradient"
    if "readout" in rows:
        assert rows["readout"]["angle"] == 90.0, f"readout: angle {rows['readout']['angle']}°, expected 90°"
    for rule in ("feedback_alignment", "dfa"):
        if rule in rows:
            row = rows[rule]
            assert row["angle"] < min(row["initial_angle"], 90.0), \
                f"{rule}: angle {row['initial_angle']:.1f}° -> {row['angle']:.1f}° did not fall below 90°"
            assert "readout" not in rows or row["test_accuracy"] > rows["readout"]["test_accuracy"], \
                f"{rule} ({row['test_accuracy']:.3f}) does not beat readout ({rows['readout']['test_accuracy']:.3f})"


def plot(results):
    """Left: test accuracy against steps per rule at its best learning rate (mean ± std over seeds).
    Right: the hidden-layer alignment angle of FA and DFA against steps (from initialisation), with
    the first and last hidden layer dotted; 90° is no alignment."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(11, 4))
    ax_acc, ax_angle = fig.subplots(1, 2)
    finished = results.finished(*_COLUMNS)
    curves = finished.curves
    for row in summarize(results):
        color = f"C{RULES.index(row['rule'])}"
        part = curves[(curves.rule == row["rule"]) & np.isclose(curves.learning_rate, row["learning_rate"])]
        mean_band(ax_acc, part, "test_accuracy", color=color, label=f"{row['rule']} (lr={row['learning_rate']:g})")
        if row["rule"] in ("feedback_alignment", "dfa") and len(part):
            starts = part.sort_values("step").groupby("run_id").head(1)
            at_init = starts.assign(step=0, angle=starts.angle_start)
            mean_band(ax_angle, _with_start(part, at_init), "angle", color=color, label=f"{row['rule']} (all hidden)")
            for name, style in (("angle_first", ":"), ("angle_last", "--")):
                ax_angle.plot(*_mean_curve(part, name), style, color=color, label=f"{row['rule']} ({name[6:]} hidden)")
    ax_acc.axhline(0.1, color="gray", lw=0.5)
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="MNIST-1D, 40-256-256-10 tanh MLP", ylim=(0, 1))
    ax_angle.axhline(90, color="gray", lw=0.5)
    ax_angle.axhline(60, color="gray", lw=0.5, ls="--")
    ax_angle.set(xlabel="step", ylabel="angle to the true gradient (°)", title="Update vs backprop gradient",
                 ylim=(0, 100))
    legend(ax_acc, fontsize=8)
    legend(ax_angle, fontsize=7)
    fig.tight_layout()
    return fig


def _with_start(part, at_init):
    import pandas as pd

    return pd.concat([at_init[part.columns], part], ignore_index=True)


def _mean_curve(part, name):
    mean = part.groupby("step")[name].mean()
    return mean.index.to_numpy(), mean.to_numpy()
