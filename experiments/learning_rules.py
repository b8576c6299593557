"""Learning rules on digits: backprop vs feedback alignment, sign symmetry, DFA and forward gradients.

The same MLP (same initial weights for a given seed) trained by each rule, chosen by the config
field ``rule``: ``backprop`` (exact gradients); ``feedback_alignment`` (Lillicrap et al. 2016:
fixed random feedback matrices in every layer's backward pass); ``sign_symmetry`` (Liao et al.
2016: feedback ``sign(W)``); ``dfa`` (Nøkland 2016: every hidden layer receives the output error
through its own fixed random matrix); ``forward_gradient`` (Baydin et al. 2022: ``(∇L·v) v`` from
forward mode, ``num_tangents`` random directions per step). Feedback matrices are model state
drawn from the member's own key, so seeds vmap. The published claims, at this scale: the
feedback-based rules learn nearly as well as backprop; the forward gradient learns, but more
slowly (its variance grows with the number of parameters).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import nn, rules, runner, train

VERSION = "1"

RULES = ("backprop", "feedback_alignment", "sign_symmetry", "dfa", "forward_gradient")


@dataclasses.dataclass(frozen=True)
class Config:
    """One member: an MLP on digits trained by ``rule``. ``seed`` and ``learning_rate`` are dynamic
    (one vmapped program); ``rule`` and the rest shape the program."""

    seed: int = runner.dynamic(0, min=0, help="initialisation, feedback-matrix and data-order seed")
    learning_rate: float = runner.dynamic(1e-3, min=0.0, help="peak learning rate")
    rule: str = runner.static("backprop", choices=RULES, help="learning rule")
    num_tangents: int = runner.static(1, min=1, help="forward_gradient: random directions per step")
    widths: tuple[int, ...] = runner.static((128, 128), min=1, help="hidden layer widths")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adam"), help="optax optimizer and schedule")
    batch_size: int = runner.static(64, min=1)
    num_steps: int = runner.static(2000, min=1)
    segment_steps: int = runner.static(100, min=1, help="steps per segment (metrics and checkpoint after each)")
    snapshots: tuple[int, ...] = runner.static((), min=1, help="steps at which member states are kept")


def _model(config: Config):
    """The same block MLP for every rule; FA and sign symmetry swap Dense for FADense (same init)."""
    W_std = np.sqrt(2.0)
    if config.rule in ("feedback_alignment", "sign_symmetry"):
        feedback = "random" if config.rule == "feedback_alignment" else "sign"
        blocks = [nn.serial(rules.FADense(w, W_std, feedback=feedback), nn.Relu()) for w in config.widths]
        return rules.block_serial(*blocks, rules.FADense(10, W_std, feedback=feedback))
    return rules.block_mlp(config.widths, 10, "relu", W_std=W_std)


def _estimator(config: Config):
    if config.rule == "dfa":
        return rules.estimator("dfa")
    if config.rule == "forward_gradient":
        return rules.estimator("forward_gradient", num_tangents=config.num_tangents)
    return rules.estimator("backprop")  # FA and sign symmetry are layer rules under backprop


def _optimizer(config: Config):
    return config.optimizer.build(config.learning_rate, config.num_steps)


def data(config: Config):
    """The digits split shared by every member: (x_train, y_train, x_test, y_test)."""
    del config
    ds = data_module.digits(seed=0)
    return tuple(jnp.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def init(config: Config, key) -> train.TrainState:
    """One member's initial state (feedback matrices in ``model_state``, from the member's key)."""
    return train.init(_model(config), _optimizer(config), key, data_module.digits(seed=0).input_spec)


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Test accuracy and loss of a member."""
    x_test, y_test = arrays[2], arrays[3]
    logits = _model(config).apply(state.params, x_test, state.model_state)
    return {"test_accuracy": train.accuracy(logits, y_test), "test_loss": train.softmax_cross_entropy(logits, y_test)}


def segment(state: train.TrainState, config: Config, arrays):
    """Advances one member by ``config.segment_steps`` steps of its rule; returns it and its metrics."""
    model = _model(config)
    x_train, y_train = arrays[0], arrays[1]
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, _optimizer(config),
                           grad_estimator=_estimator(config))

    def batch_fn(key, step_index):
        return data_module.get_batch(key, step_index, x_train, y_train, config.batch_size)

    state, metrics = train.train(state, step, batch_fn, config.segment_steps)
    return state, {"train_loss": jnp.mean(metrics["train"]["loss"]), **evaluate(state, config, arrays)}


def _final(results):
    runs = results.runs
    return runs[runs.status == "finished"][["run_id", "rule", "seed", "learning_rate", "test_accuracy"]]


def summarize(results) -> list[dict]:
    """Per rule, the best learning rate's final test accuracy (mean and std over seeds)."""
    rows = []
    for rule, part in _final(results).groupby("rule"):
        by_lr = part.groupby("learning_rate")["test_accuracy"]
        means = by_lr.mean()
        best = float(means.idxmax())
        acc = part[np.isclose(part.learning_rate, best)]["test_accuracy"].to_numpy()
        rows.append({"rule": rule, "learning_rate": best, "test_accuracy": float(acc.mean()),
                     "std": float(acc.std()), "seeds": len(acc)})
    order = {r: i for i, r in enumerate(RULES)}
    return sorted(rows, key=lambda r: order.get(r["rule"], len(order)))


def check(results) -> None:
    """The claims, for the rules present: backprop > 90% test accuracy; feedback alignment, sign
    symmetry and DFA > 85% and within 8 points of backprop (Lillicrap et al. 2016; Liao et al. 2016;
    Nøkland 2016); the forward gradient learns (> 30%, chance is 10%) but not better than backprop."""
    rows = {r["rule"]: r["test_accuracy"] for r in summarize(results)}
    assert rows, "no finished runs"
    bp = rows.get("backprop")
    if bp is not None:
        assert bp > 0.9, f"backprop: test accuracy {bp:.3f} <= 0.9"
    for rule in ("feedback_alignment", "sign_symmetry", "dfa"):
        if rule in rows:
            assert rows[rule] > 0.85, f"{rule}: test accuracy {rows[rule]:.3f} <= 0.85"
            assert bp is None or rows[rule] > bp - 0.08, f"{rule}: {rows[rule]:.3f} is more than 8 points below backprop"
    if "forward_gradient" in rows:
        fg = rows["forward_gradient"]
        assert fg > 0.3, f"forward_gradient: test accuracy {fg:.3f} <= 0.3"
        assert bp is None or fg <= bp + 0.01, f"forward_gradient ({fg:.3f}) beats backprop ({bp:.3f})"


def plot(results):
    """Test-accuracy curves per rule at its best learning rate (mean ± std over seeds)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves = results.curves.merge(results.runs[["run_id", "rule", "learning_rate"]], on="run_id")
    for row in summarize(results):
        part = curves[(curves.rule == row["rule"]) & np.isclose(curves.learning_rate, row["learning_rate"])]
        stats = part.groupby("step")["test_accuracy"].agg(["mean", "std"]).fillna(0.0)
        steps = stats.index.to_numpy()
        ax.plot(steps, stats["mean"], label=f"{row['rule']} (lr={row['learning_rate']:g})")
        ax.fill_between(steps, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
    ax.set(xlabel="step", ylabel="test accuracy", title="Learning rules on digits", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
