"""Continual learning on permuted digits: elastic weight consolidation against plain SGD.

Kirkpatrick et al. 2017 ("Overcoming catastrophic forgetting in neural networks", PNAS, §"EWC
extends to supervised learning", Fig. 2A: permuted MNIST), here on scikit-learn's 8x8 digits.
``num_tasks`` tasks in sequence (three by default: A, B, C): task A is the digits as they are, each
later task the digits with their 64 pixels shuffled by a fixed permutation of its own. An MLP
trains ``steps_per_task`` SGD steps on each task in turn. Plain SGD on a new task overwrites what
it learnt on the earlier ones (*catastrophic forgetting*); EWC (eq. 3) instead minimises the new
task's loss plus one quadratic penalty per previous task ``t``,
``Σ_t Σ_i (λ/2) F_{t,i} (θ_i − θ*_{t,i})²``, with ``θ*_t`` the parameters at the end of task ``t``
and ``F_t`` the diagonal Fisher information at ``θ*_t`` on task ``t``'s training inputs
(:func:`jaxlearn.rules.fisher_diagonal`, config field ``fisher``: ``"true"`` — labels sampled from
the model, as in the paper — ``"exact"`` or ``"empirical"``). The penalties of all previous tasks
are accumulated into one ``(anchor, F)`` pair by :func:`jaxlearn.rules.ewc_combine` (``F = Σ_t F_t``,
``θ* = Σ_t F_t θ*_t / F``: the same gradient as the sum; the paper's §2 "one penalty per previous
task"). The published claim: EWC keeps the old tasks' accuracy far higher than SGD while still
learning the new one.

The tasks. Task A is the identity permutation: for an MLP whose first layer is dense with i.i.d.
initial weights, any fixed input permutation of task A is the same problem in law (permuting the
first layer's rows maps one onto the other), so nothing is lost and task A stays the familiar
digits. Task ``t ≥ 1`` (B, C, …) uses ``numpy.random.default_rng([permutation_seed, t])
.permutation(64)``: fixed by a static config field, the SAME for every member of a sweep, so that
seeds measure initialisation and data-order noise only, never a change of task. A pixel shuffle
destroys the spatial structure that the earlier tasks' features rely on, while keeping each task
exactly as hard as A for the MLP.

One member is one network (a ``seed``, a ``learning_rate``, an EWC ``strength`` λ — all dynamic, so
a sweep over λ × seeds is ONE vmapped program per rule). ``rule`` (static) names the gradient
estimator: ``"sgd"`` — ``rules.estimator("backprop")`` — or ``"ewc"`` —
``rules.estimator("ewc", anchor=θ*, fisher=F, strength=λ)`` with the accumulated pair.
``strength`` means nothing to ``sgd`` and is normalised to 0 there, so a grid over
``rule × strength`` runs each SGD member once.

The member's state (:class:`ContinualState`) is one fixed pytree: the
:class:`jaxlearn.train.TrainState` plus ``anchor`` and ``fisher`` (the accumulated pair, zeros until
the end of task A), the key of the Fisher's label samples and ``learnt`` (each task's test accuracy
at the end of its own training, 0 until then). The task is a function of the global step alone:
the minibatch of step ``s`` comes from task ``s // steps_per_task``, and a segment that ends at a
task boundary ``k · steps_per_task`` (``k < num_tasks``) then consolidates the task just finished
(adds its ``(θ*, F)`` to the pair and records its accuracy, in a ``lax.cond``), so the state saved
at that step (a snapshot, a checkpoint) already holds them. ``steps_per_task`` must therefore be
a segment end (a multiple of ``segment_steps`` or a snapshot step; checked by :func:`init`). During
task A, F = 0 makes the EWC gradient backprop's (``g + λ·0·(θ − 0) = g``), so an ``ewc`` member
follows the ``sgd`` member of the same seed up to the first boundary. Both rules compute ``F``
(``sgd`` to report the Fisher-weighted distance it travels). Under the runner's ``vmap`` the
``lax.cond`` on the (batched) step becomes a ``select``: the Fisher is then evaluated at every
segment and kept only at the boundaries — about one full-batch gradient over the 1438 training
inputs per segment (``kind="exact"``: ten), small next to a segment of training; fewer, longer
segments make it smaller.

Metrics per segment (digits test split, every task): ``task_a_accuracy``, ``task_b_accuracy``, …,
``mean_accuracy`` (over all tasks), ``old_accuracy`` (mean over the tasks before the last: A and B
of three), ``train_loss`` (the current task's) and ``fisher_distance``
``Σ_i F_i (θ_i − θ*_i)²`` of the accumulated pair (0 before the first boundary; the EWC penalty is
λ/2 times it, up to a constant). Final metrics add ``task_a_accuracy_learnt``, … (each task at the
end of its own training) and ``forgetting`` (the mean over the old tasks of that minus their
final accuracy).

Measured with two tasks (VERSION 2; ``num_tasks: 2``, CPU, 47 s: MLP 128-128, SGD lr 0.05,
batch 64, 500 steps per task, 4 seeds; test accuracy after task B, mean ± std over seeds; task A
reached 0.969 ± 0.004 before B in every member):

=========  ===============  ===============  ============
rule, λ    task A           task B           forgetting
=========  ===============  ===============  ============
sgd        0.549 ± 0.050    0.969 ± 0.005    0.420
ewc 3      0.646 ± 0.056    0.969 ± 0.010    0.324
ewc 10     0.745 ± 0.042    0.967 ± 0.011    0.224
ewc 30     0.852 ± 0.023    0.964 ± 0.011    0.118
ewc 100    0.907 ± 0.026    0.953 ± 0.013    0.063
=========  ===============  ===============  ============

EWC trades a little of task B for much of task A, monotonically in λ: at λ = 100 it keeps 36 points
more of task A than SGD for 1.7 points less of task B. With the exact Fisher (variant
``exact_fisher``; several times slower, its ten vjps per example paid at every segment) λ = 100
gave A 0.905 ± 0.029, B 0.955 ± 0.015 (λ = 30: 0.849, 0.963), as the sampled Fisher does; with the
empirical Fisher (``empirical_fisher``) 0.863 ± 0.021 and 0.960 ± 0.012 (λ = 30: 0.749, 0.967) —
on a confidently and correctly classified example the data's label has the score ``e_y − p`` of
size ``ε = 1 − p_y``, squared into O(ε²), whereas the Fisher's ``diag(p) − p pᵀ`` is O(ε), so the
empirical Fisher is smaller at a well-fit θ*_A and needs a larger λ for the same protection.
λ = 300 diverges at lr 0.05: the penalty's curvature λ F_i must stay below 2 / lr for SGD to be
stable (the runner marks such members ``diverged``). The three-task numbers (the default) are in
docs/reproductions.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn import data as data_module
from jaxlearn import nn, rules, runner, train
from jaxlearn.runner.plots import legend

VERSION = "3"  # 3: num_tasks (three tasks by default, accumulated EWC penalty); task t's permutation seeded by
#                [permutation_seed, t]. 2: the shared training base (a data_seed field)

RULES = ("sgd", "ewc")
LETTERS = "abcdefghij"  # task names in metrics: task_a_accuracy, task_b_accuracy, ...


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an MLP trained on digits (task A), then on pixel-permuted digits (B, C, …), by
    ``rule``. ``seed``, ``learning_rate`` and ``strength`` are dynamic (one vmapped program). The
    optimizer (plain SGD by default, as in the paper) and its schedule span all tasks: a stateful
    optimizer (momentum, Adam) carries its state across the boundaries."""

    seed: int = runner.dynamic(0, min=0, help="initialisation and Fisher-sampling seed (and the data order unless "
                                              "data_seed is set)")
    learning_rate: float = runner.dynamic(0.05, min=0.0, help="peak learning rate (all tasks)")
    strength: float = runner.dynamic(100.0, min=0.0, help="EWC λ of eq. (3); normalised to 0 for rule='sgd'")
    rule: str = runner.static("ewc", choices=RULES, help="estimator: sgd (backprop) or ewc (penalty of earlier tasks)")
    fisher: str = runner.static("true", choices=rules.FISHER_KINDS, help="Fisher diagonal: true, exact or empirical")
    fisher_batch_size: int = runner.static(128, min=1, help="examples per chunk of the Fisher (bounds memory)")
    permutation_seed: int = runner.static(0, min=0, help="seed of the later tasks' pixel permutations (same for all "
                                                         "members)")
    num_tasks: int = runner.static(3, min=2, max=len(LETTERS), help="tasks in sequence: A (digits), then permuted")
    widths: tuple[int, ...] = runner.static((128, 128), min=1, help="hidden layer widths")
    steps_per_task: int = runner.static(500, min=1, help="steps on each task")
    num_steps: int = runner.static(1500, min=2, help="total steps: must be num_tasks * steps_per_task")
    segment_steps: int = runner.static(50, min=1, help="steps per segment; steps_per_task must be a segment end")

    def __post_init__(self):
        if self.num_steps != self.num_tasks * self.steps_per_task:
            raise ValueError(f"num_steps: must be num_tasks * steps_per_task = {self.num_tasks * self.steps_per_task} "
                             f"(the tasks in sequence), got {self.num_steps}")
        if self.rule == "sgd":  # λ is unused by sgd: one run per seed in a rule × strength grid
            object.__setattr__(self, "strength", 0.0)


class ContinualState(NamedTuple):
    """One member: ``train_state`` (params, optimizer state, step, key), ``anchor`` θ* and
    ``fisher`` F (the accumulated pair of the finished tasks, pytrees like the params, zeros before
    the first boundary), ``fisher_key`` (the labels sampled by ``fisher="true"``: task ``t`` uses
    ``fold_in(fisher_key, t)``) and ``learnt`` ``(num_tasks,)``: each task's test accuracy at the end
    of its own training (0 until then). ``params`` / ``model_state`` read through to the train
    state (so :func:`jaxlearn.runner.after_kernel` applies)."""

    train_state: train.TrainState
    anchor: Any
    fisher: Any
    fisher_key: jax.Array
    learnt: jax.Array

    params = runner.study.train_state_field("params")
    model_state = runner.study.train_state_field("model_state")


def model(config: Config):
    """The network of a member (the ``model`` hook): ``Dense → ReLU → … → Dense(10)``, He init."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


def permutation(config: Config, task: int) -> np.ndarray:
    """Task ``task``'s pixel permutation: the identity for task 0 (A), else
    ``default_rng([permutation_seed, task]).permutation(64)``."""
    if task == 0:
        return np.arange(64)
    return np.random.default_rng([config.permutation_seed, task]).permutation(64)


def task_names(config: Config) -> list[str]:
    """``["a", "b", …]``: the tasks' letters in metric and array names."""
    return list(LETTERS[:config.num_tasks])


def data(config: Config) -> dict:
    """Arrays shared by a group: every task's training and test inputs (``x_train_a``,
    ``x_test_a``, ``x_train_b``, …) and the labels (the same for all tasks)."""
    ds = data_module.digits(seed=0)
    arrays = {"y_train": jnp.asarray(ds.y_train), "y_test": jnp.asarray(ds.y_test)}
    for t, name in enumerate(task_names(config)):
        perm = permutation(config, t)
        arrays[f"x_train_{name}"] = jnp.asarray(ds.x_train[:, perm])
        arrays[f"x_test_{name}"] = jnp.asarray(ds.x_test[:, perm])
    return arrays


def init(config: Config, key) -> ContinualState:
    """One member's state at step 0: fresh network, zero anchor and Fisher, nothing learnt."""
    if config.steps_per_task % config.segment_steps and config.steps_per_task not in config.snapshots:
        raise ValueError(f"steps_per_task: the task boundaries must be segment ends (steps_per_task a multiple of "
                         f"segment_steps={config.segment_steps} or a snapshot step), got {config.steps_per_task}")
    if config.steps_per_task % config.segment_steps:
        missing = [k * config.steps_per_task for k in range(2, config.num_tasks)
                   if k * config.steps_per_task not in config.snapshots]
        if missing:
            raise ValueError(f"steps_per_task: every task boundary must be a segment end; {missing} are not "
                             f"(add them to snapshots or make steps_per_task a multiple of segment_steps)")
    k_train, k_fisher = jax.random.split(key)
    state = runner.study.init(config, k_train, model(config), data_module.digits(seed=0).input_spec)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    return ContinualState(state, zeros, zeros, k_fisher, jnp.zeros(config.num_tasks, jnp.result_type(float)))


def _stacked(config: Config, arrays, split: str) -> jax.Array:
    """``(num_tasks, n, 64)``: every task's inputs of ``split``, indexable by a traced task."""
    return jnp.stack([arrays[f"x_{split}_{name}"] for name in task_names(config)])


def _consolidate(state: ContinualState, config: Config, arrays) -> ContinualState:
    """At the end of task ``t``: its θ*_t = the current params and F_t = their Fisher diagonal on
    task ``t``'s training inputs, added to the accumulated pair (:func:`jaxlearn.rules.ewc_combine`);
    its test accuracy recorded in ``learnt``."""
    net, ts = model(config), state.train_state
    task = ts.step // config.steps_per_task - 1
    kind = config.fisher
    x_task = _stacked(config, arrays, "train")[task]
    fisher = rules.fisher_diagonal(lambda p, x: net.apply(p, x, ts.model_state), ts.params, x_task,
                                   kind=kind, y=arrays["y_train"] if kind == "empirical" else None,
                                   key=jax.random.fold_in(state.fisher_key, task) if kind == "true" else None,
                                   batch_size=config.fisher_batch_size)
    anchor, fisher = rules.ewc_combine([state.anchor, ts.params], [state.fisher, fisher])
    accuracy = train.accuracy(net.apply(ts.params, _stacked(config, arrays, "test")[task], ts.model_state),
                              arrays["y_test"])
    return state._replace(anchor=anchor, fisher=fisher, learnt=state.learnt.at[task].set(accuracy))


def _estimator(state: ContinualState, config: Config):
    if config.rule == "ewc":  # F = 0 before the first boundary: exactly backprop there
        return rules.estimator("ewc", anchor=state.anchor, fisher=state.fisher, strength=config.strength)
    return rules.estimator("backprop")


def _fisher_distance(state: ContinualState):
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)), state.params, state.anchor, state.fisher)
    return sum(jax.tree.leaves(terms))


def _accuracies(params, model_state, config: Config, arrays) -> dict:
    net = model(config)
    names = task_names(config)
    accs = [train.accuracy(net.apply(params, arrays[f"x_test_{name}"], model_state), arrays["y_test"])
            for name in names]
    return {**{f"task_{name}_accuracy": acc for name, acc in zip(names, accs)},
            "mean_accuracy": sum(accs) / len(accs), "old_accuracy": sum(accs[:-1]) / (len(accs) - 1)}


def segment(state: ContinualState, config: Config, arrays):
    """Advances one member by ``config.segment_steps`` steps (task ``step // steps_per_task``); a
    segment that ends at a task boundary consolidates the task just finished afterwards."""
    step = train.make_step(model(config).apply_with_state, train.softmax_cross_entropy, config.build_optimizer(),
                           grad_estimator=_estimator(state, config))
    x_tasks = _stacked(config, arrays, "train")

    def batch_fn(key, step_index):
        task = jnp.minimum(step_index // config.steps_per_task, config.num_tasks - 1)
        return data_module.get_batch(train.order_key(key, config.data_seed), step_index, x_tasks[task],
                                     arrays["y_train"], config.batch_size)

    ts, metrics = train.train(state.train_state, step, batch_fn, config.segment_steps)
    state = state._replace(train_state=ts)
    boundary = (ts.step % config.steps_per_task == 0) & (ts.step < config.num_steps)
    state = lax.cond(boundary, lambda s: _consolidate(s, config, arrays), lambda s: s, state)
    return state, {"train_loss": jnp.mean(metrics["train"]["loss"]), "fisher_distance": _fisher_distance(state),
                   **_accuracies(ts.params, ts.model_state, config, arrays)}


def evaluate(state: ContinualState, config: Config, arrays) -> dict:
    """Final metrics: every task's test accuracy, their mean and the old tasks' mean, each task's
    accuracy at the end of its own training (the last task's: its final accuracy) and the
    forgetting (the old tasks' mean of learnt minus final accuracy)."""
    final = _accuracies(state.params, state.model_state, config, arrays)
    names = task_names(config)
    learnt = state.learnt.at[-1].set(final[f"task_{names[-1]}_accuracy"])
    forgetting = jnp.mean(jnp.stack([learnt[t] - final[f"task_{name}_accuracy"] for t, name in enumerate(names[:-1])]))
    return {**final, **{f"task_{name}_accuracy_learnt": learnt[t] for t, name in enumerate(names)},
            "forgetting": forgetting}


# ----------------------------------------------------------------------------- analysis
def _metrics(results) -> tuple[str, ...]:
    """Task accuracy columns present (``task_a_accuracy``, …), then the aggregates."""
    columns = results.runs.columns
    tasks = [f"task_{name}_accuracy" for name in LETTERS if f"task_{name}_accuracy" in columns]
    return (*tasks, "mean_accuracy", "old_accuracy", "forgetting")


def summarize(results) -> list[dict]:
    """Final accuracies per (rule, λ): mean and std over seeds of each task's test accuracy, the
    mean over all tasks and over the old ones (all but the last) and the forgetting; SGD first,
    then EWC by increasing λ."""
    metrics = _metrics(results)
    runs = results.finished("rule", "strength", *metrics).runs
    rows = []
    for (rule, strength), part in runs.groupby(["rule", "strength"]):
        row = {"rule": rule, "strength": float(strength), "seeds": len(part)}
        for name in metrics:
            values = part[name].to_numpy(dtype=float)
            row[name], row[f"{name}_std"] = float(values.mean()), float(values.std())
        rows.append(row)
    return sorted(rows, key=lambda r: (RULES.index(r["rule"]) if r["rule"] in RULES else len(RULES), r["strength"]))


def _is_smoke(results) -> bool:
    return bool((results.finished("steps_per_task").runs.steps_per_task < 200).all())


def _last_task(results) -> str:
    tasks = [m for m in _metrics(results) if m.startswith("task_")]
    return tasks[-1] if tasks else "task_b_accuracy"


def check(results) -> None:
    """The claim (Kirkpatrick et al. 2017, Fig. 2A): after the last task (C of three), some EWC
    strength λ keeps the old tasks' mean test accuracy (A and B) at least ``margin`` above plain
    SGD's while its last-task accuracy stays within ``tolerance`` of SGD's (it still learns the
    new task) and far above chance (> 50%): margin 10 points and tolerance 5 at full size; 6 and
    10 for the tiny smoke networks (``steps_per_task < 200``; measured there, 2 seeds, λ = 3, lr
    0.2: old tasks 0.726 ± 0.005 against SGD's 0.632 ± 0.004, task C 0.866 ± 0.019 against
    0.935 ± 0.013). Also: SGD really forgets (its old
    tasks lose more than ``margin`` on average) and every task was learnt (> 80%) at the end of
    its own training in every run."""
    rows = summarize(results)
    sgd = [r for r in rows if r["rule"] == "sgd"]
    ewc = [r for r in rows if r["rule"] == "ewc"]
    assert sgd and ewc, f"check needs finished sgd and ewc runs, got rules {sorted({r['rule'] for r in rows})}"
    margin, tolerance = (0.06, 0.10) if _is_smoke(results) else (0.10, 0.05)
    base, last = sgd[0], _last_task(results)
    learnt = [c for c in results.runs.columns if c.startswith("task_") and c.endswith("_accuracy_learnt")]
    runs = results.finished(*learnt).runs
    worst = runs[learnt].to_numpy(float).min() if len(runs) and learnt else float("nan")
    assert worst > 0.8, f"a task was not learnt at the end of its training (accuracy {worst:.3f} <= 0.8)"
    assert base["forgetting"] > margin, f"sgd barely forgets the old tasks (forgetting {base['forgetting']:.3f})"
    report = []
    for r in ewc:
        gain = r["old_accuracy"] - base["old_accuracy"]
        cost = base[last] - r[last]
        report.append(f"λ={r['strength']:g}: old {gain:+.3f}, last {-cost:+.3f}")
        if gain >= margin and cost < tolerance and r[last] > 0.5:
            return
    raise AssertionError(f"no EWC strength keeps the old tasks >= {margin:.2f} above sgd (old "
                         f"{base['old_accuracy']:.3f}) with the last task within {tolerance:.2f} of sgd "
                         f"({base[last]:.3f}): " + "; ".join(report))


def plot(results):
    """Each task's test accuracy over steps (one panel per task), one line per rule and λ (mean ±
    std over seeds), the task boundaries dotted."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    tasks = [m for m in _metrics(results) if m.startswith("task_")] or ["task_a_accuracy", "task_b_accuracy"]
    fig = Figure(figsize=(4.5 * len(tasks), 4))
    axes = fig.subplots(1, len(tasks), sharey=True)
    curves = results.finished("rule", "strength", "steps_per_task", *tasks).curves
    settings = [(r["rule"], r["strength"]) for r in summarize(results)]
    colors = colormaps["viridis"](np.linspace(0, 0.85, max(len(settings), 1)))
    for (rule, strength), color in zip(settings, colors):
        part = curves[(curves.rule == rule) & np.isclose(curves.strength, strength)]
        label = "sgd" if rule == "sgd" else f"ewc λ={strength:g}"
        style = "--" if rule == "sgd" else "-"
        for ax, metric in zip(axes, tasks):
            stats = part.groupby("step")[metric].agg(["mean", "std"]).fillna(0.0)
            steps = stats.index.to_numpy()
            ax.plot(steps, stats["mean"], style, color="black" if rule == "sgd" else color, label=label)
            ax.fill_between(steps, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color="black" if rule == "sgd" else color, alpha=0.15)
    for t, (ax, metric) in enumerate(zip(axes, tasks)):
        for per_task in sorted(curves["steps_per_task"].dropna().unique()):
            for k in range(1, len(tasks)):
                ax.axvline(k * per_task, color="grey", linestyle=":", linewidth=1)
        title = "Task A (digits)" if t == 0 else f"Task {metric[5].upper()} (permuted digits)"
        ax.set(xlabel="step", title=title, ylim=(0, 1))
    axes[0].set(ylabel="test accuracy")
    legend(axes[0], fontsize=8)
    fig.suptitle("Catastrophic forgetting: SGD vs EWC (task boundaries dotted)")
    fig.tight_layout()
    return fig
