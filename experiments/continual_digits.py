"""Continual learning on permuted digits: elastic weight consolidation against plain SGD.

Kirkpatrick et al. 2017 ("Overcoming catastrophic forgetting in neural networks", PNAS, §"EWC
extends to supervised learning", Fig. 2A: permuted MNIST), here on scikit-learn's 8x8 digits. Two
tasks in sequence: task A is the digits as they are, task B the digits with their 64 pixels
shuffled by one fixed permutation. An MLP trains ``steps_per_task`` SGD steps on A, then
``steps_per_task`` on B. Plain SGD on B overwrites what it learnt on A (*catastrophic
forgetting*); EWC (eq. 3) instead minimises ``L_B(θ) + Σ_i (λ/2) F_i (θ_i − θ*_{A,i})²`` with
``θ*_A`` the parameters at the end of task A and ``F`` the diagonal Fisher information at ``θ*_A``
on task A's training inputs (:func:`jaxlearn.rules.fisher_diagonal`, config field ``fisher``:
``"true"`` — labels sampled from the model with the member's key, as in the paper — ``"exact"`` or
``"empirical"``). The published claim: EWC keeps task A's accuracy far higher than SGD while still
learning task B.

The tasks. Task A is the identity permutation: for an MLP whose first layer is dense with i.i.d.
initial weights, any fixed input permutation of task A is the same problem in law (permuting the
first layer's rows maps one onto the other), so nothing is lost and task A stays the familiar
digits. Task B's permutation is ``numpy.random.default_rng(permutation_seed).permutation(64)``:
fixed by a static config field, the SAME for every member of a sweep, so that seeds measure
initialisation and data-order noise only, never a change of task. The pixel shuffle destroys the
spatial structure that A's features rely on, while keeping B exactly as hard as A for the MLP.

One member is one network (a ``seed``, a ``learning_rate``, an EWC ``strength`` λ — all dynamic, so
a sweep over λ × seeds is ONE vmapped program per rule). ``rule`` (static) names the gradient
estimator of task B: ``"sgd"`` — ``rules.estimator("backprop")`` — or ``"ewc"`` —
``rules.estimator("ewc", anchor=θ*_A, fisher=F, strength=λ)``. ``strength`` means nothing to
``sgd`` and is normalised to 0 there, so a grid over ``rule × strength`` runs each SGD member once.

The member's state (:class:`ContinualState`) is one fixed pytree: the
:class:`jaxlearn.train.TrainState` plus ``anchor`` (θ*_A) and ``fisher`` (F), both zeros until the
A→B boundary, and the key of the Fisher's label samples. The phase is a function of the global
step alone: the minibatch of step ``s`` comes from task A for ``s < steps_per_task`` and from task
B afterwards, and the segment that ends at step ``steps_per_task`` then consolidates (stores
``θ*_A`` and computes ``F``, in a ``lax.cond``), so the state saved at that step (a snapshot, a
checkpoint) already holds them. ``steps_per_task`` must therefore be a segment end
(a multiple of ``segment_steps`` or a snapshot step; checked by :func:`init`). During task A, F = 0
makes the EWC gradient backprop's (``g + λ·0·(θ − 0) = g``), so an ``ewc`` member follows the
``sgd`` member of the same seed up to the boundary. Both rules compute ``F`` (``sgd`` to report the
Fisher-weighted distance it travels). Under the runner's ``vmap`` the ``lax.cond`` on the
(batched) step becomes a ``select``: the Fisher is then evaluated at every segment and kept only
at the boundary — about one full-batch gradient over the 1438 training inputs per segment
(``kind="exact"``: ten), small next to a segment of training; fewer, longer segments make it smaller.

Metrics per segment (digits test split, both tasks): ``task_a_accuracy``, ``task_b_accuracy``,
``mean_accuracy``, ``train_loss`` (the current task's) and ``fisher_distance``
``Σ_i F_i (θ_i − θ*_{A,i})²`` (0 before the boundary; the EWC penalty is λ/2 times it). Final
metrics add ``task_a_accuracy_before_b`` (θ*_A on task A) and ``forgetting`` (that minus the final
task A accuracy).

Measured (``jaxlearn run configs/continual_digits.yaml``, CPU, 47 s: MLP 128-128, SGD lr 0.05,
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
gives A 0.905 ± 0.029, B 0.955 ± 0.015 (λ = 30: 0.849, 0.963), as the sampled Fisher does; with the
empirical Fisher (``empirical_fisher``) 0.863 ± 0.021 and 0.960 ± 0.012 (λ = 30: 0.749, 0.967) —
on a confidently and correctly classified example the data's label has the score ``e_y − p`` of
size ``ε = 1 − p_y``, squared into O(ε²), whereas the Fisher's ``diag(p) − p pᵀ`` is O(ε), so the
empirical Fisher is smaller at a well-fit θ*_A and needs a larger λ for the same protection.
λ = 300 diverges at lr 0.05: the penalty's curvature λ F_i must stay below 2 / lr for SGD to be
stable (the runner marks such members ``diverged``).
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

VERSION = "2"  # 2: the shared training base (a data_seed field; the run ids changed, the results did not)

RULES = ("sgd", "ewc")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an MLP trained on digits (task A), then on pixel-permuted digits (task B) by
    ``rule``. ``seed``, ``learning_rate`` and ``strength`` are dynamic (one vmapped program). The
    optimizer (plain SGD by default, as in the paper) and its schedule span both tasks: a stateful
    optimizer (momentum, Adam) carries its state across the boundary."""

    seed: int = runner.dynamic(0, min=0, help="initialisation and Fisher-sampling seed (and the data order unless "
                                              "data_seed is set)")
    learning_rate: float = runner.dynamic(0.05, min=0.0, help="peak learning rate (both tasks)")
    strength: float = runner.dynamic(100.0, min=0.0, help="EWC λ of eq. (3); normalised to 0 for rule='sgd'")
    rule: str = runner.static("ewc", choices=RULES, help="task B's estimator: sgd (backprop) or ewc")
    fisher: str = runner.static("true", choices=rules.FISHER_KINDS, help="Fisher diagonal: true, exact or empirical")
    fisher_batch_size: int = runner.static(128, min=1, help="examples per chunk of the Fisher (bounds memory)")
    permutation_seed: int = runner.static(0, min=0, help="seed of task B's pixel permutation (same for all members)")
    widths: tuple[int, ...] = runner.static((128, 128), min=1, help="hidden layer widths")
    steps_per_task: int = runner.static(500, min=1, help="steps on task A, then as many on task B")
    num_steps: int = runner.static(1000, min=2, help="total steps: must be 2 * steps_per_task")
    segment_steps: int = runner.static(50, min=1, help="steps per segment; steps_per_task must be a segment end")

    def __post_init__(self):
        if self.num_steps != 2 * self.steps_per_task:
            raise ValueError(f"num_steps: must be 2 * steps_per_task = {2 * self.steps_per_task} (task A then task B), "
                             f"got {self.num_steps}")
        if self.rule == "sgd":  # λ is unused by sgd: one run per seed in a rule × strength grid
            object.__setattr__(self, "strength", 0.0)


class ContinualState(NamedTuple):
    """One member: ``train_state`` (params, optimizer state, step, key), ``anchor`` θ*_A and
    ``fisher`` F (pytrees like the params, zeros before the A→B boundary), ``fisher_key`` (the
    labels sampled by ``fisher="true"``). ``params`` / ``model_state`` read through to the
    train state (so :func:`jaxlearn.runner.after_kernel` applies)."""

    train_state: train.TrainState
    anchor: Any
    fisher: Any
    fisher_key: jax.Array

    @property
    def params(self):
        return self.train_state.params

    @property
    def model_state(self):
        return self.train_state.model_state


def model(config: Config):
    """The network of a member (the ``model`` hook): ``Dense → ReLU → … → Dense(10)``, He init."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


def _permutation(config: Config) -> np.ndarray:
    return np.random.default_rng(config.permutation_seed).permutation(64)


def data(config: Config) -> dict:
    """Arrays shared by a group: both tasks' training and test inputs and the labels (the same for
    both tasks). Task A is the identity permutation, task B :func:`_permutation`."""
    ds = data_module.digits(seed=0)
    perm = _permutation(config)
    return {"x_train_a": jnp.asarray(ds.x_train), "x_train_b": jnp.asarray(ds.x_train[:, perm]),
            "y_train": jnp.asarray(ds.y_train), "x_test_a": jnp.asarray(ds.x_test),
            "x_test_b": jnp.asarray(ds.x_test[:, perm]), "y_test": jnp.asarray(ds.y_test)}


def init(config: Config, key) -> ContinualState:
    """One member's state at step 0: fresh network, zero anchor and Fisher."""
    if config.steps_per_task % config.segment_steps and config.steps_per_task not in config.snapshots:
        raise ValueError(f"steps_per_task: the A→B boundary must be a segment end (a multiple of segment_steps="
                         f"{config.segment_steps} or a snapshot step), got {config.steps_per_task}")
    k_train, k_fisher = jax.random.split(key)
    state = runner.study.init(config, k_train, model(config), data_module.digits(seed=0).input_spec)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    return ContinualState(state, zeros, zeros, k_fisher)


def _consolidate(state: ContinualState, config: Config, arrays) -> ContinualState:
    """θ*_A = the current params; F = their Fisher diagonal on task A's training inputs."""
    net, ts = model(config), state.train_state
    kind = config.fisher
    fisher = rules.fisher_diagonal(lambda p, x: net.apply(p, x, ts.model_state), ts.params, arrays["x_train_a"],
                                   kind=kind, y=arrays["y_train"] if kind == "empirical" else None,
                                   key=state.fisher_key if kind == "true" else None,
                                   batch_size=config.fisher_batch_size)
    return state._replace(anchor=ts.params, fisher=fisher)


def _estimator(state: ContinualState, config: Config):
    if config.rule == "ewc":  # F = 0 before the boundary: exactly backprop there
        return rules.estimator("ewc", anchor=state.anchor, fisher=state.fisher, strength=config.strength)
    return rules.estimator("backprop")


def _fisher_distance(state: ContinualState):
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * jnp.square(p - a)), state.params, state.anchor, state.fisher)
    return sum(jax.tree.leaves(terms))


def _accuracies(params, model_state, config: Config, arrays) -> dict:
    net = model(config)
    acc_a = train.accuracy(net.apply(params, arrays["x_test_a"], model_state), arrays["y_test"])
    acc_b = train.accuracy(net.apply(params, arrays["x_test_b"], model_state), arrays["y_test"])
    return {"task_a_accuracy": acc_a, "task_b_accuracy": acc_b, "mean_accuracy": (acc_a + acc_b) / 2}


def segment(state: ContinualState, config: Config, arrays):
    """Advances one member by ``config.segment_steps`` steps (task A before ``steps_per_task``,
    task B from it on); a segment that ends at the boundary consolidates task A afterwards."""
    step = train.make_step(model(config).apply_with_state, train.softmax_cross_entropy, config.build_optimizer(),
                           grad_estimator=_estimator(state, config))

    def batch_fn(key, step_index):
        (x_a, x_b), y = data_module.get_batch(train.order_key(key, config.data_seed), step_index,
                                              (arrays["x_train_a"], arrays["x_train_b"]), arrays["y_train"],
                                              config.batch_size)
        return jnp.where(step_index < config.steps_per_task, x_a, x_b), y

    ts, metrics = train.train(state.train_state, step, batch_fn, config.segment_steps)
    state = state._replace(train_state=ts)
    state = lax.cond(ts.step == config.steps_per_task, lambda s: _consolidate(s, config, arrays), lambda s: s, state)
    return state, {"train_loss": jnp.mean(metrics["train"]["loss"]), "fisher_distance": _fisher_distance(state),
                   **_accuracies(ts.params, ts.model_state, config, arrays)}


def evaluate(state: ContinualState, config: Config, arrays) -> dict:
    """Final metrics: test accuracies on both tasks, task A's accuracy at θ*_A (before task B) and
    the forgetting (that minus the final task A accuracy)."""
    final = _accuracies(state.params, state.model_state, config, arrays)
    before = _accuracies(state.anchor, state.model_state, config, arrays)["task_a_accuracy"]
    return {**final, "task_a_accuracy_before_b": before, "forgetting": before - final["task_a_accuracy"]}


# ----------------------------------------------------------------------------- analysis
_METRICS = ("task_a_accuracy", "task_b_accuracy", "mean_accuracy", "forgetting")


def summarize(results) -> list[dict]:
    """Final accuracies per (rule, λ): mean and std over seeds of task A's and task B's test
    accuracy, their mean and the forgetting; SGD first, then EWC by increasing λ."""
    runs = results.finished("rule", "strength", *_METRICS).runs
    rows = []
    for (rule, strength), part in runs.groupby(["rule", "strength"]):
        row = {"rule": rule, "strength": float(strength), "seeds": len(part)}
        for name in _METRICS:
            values = part[name].to_numpy(dtype=float)
            row[name], row[f"{name}_std"] = float(values.mean()), float(values.std())
        rows.append(row)
    return sorted(rows, key=lambda r: (RULES.index(r["rule"]) if r["rule"] in RULES else len(RULES), r["strength"]))


def _is_smoke(results) -> bool:
    return bool((results.finished("steps_per_task").runs.steps_per_task < 200).all())


def check(results) -> None:
    """The claim (Kirkpatrick et al. 2017, Fig. 2A): after task B, some EWC strength λ keeps task A's
    test accuracy at least ``margin`` above plain SGD's (less forgetting) while its task B accuracy
    stays within ``tolerance`` of SGD's (it still learns B) and far above chance (> 50%): margin 15
    points and tolerance 5 at full size; 10 and 8 for the tiny smoke networks (``steps_per_task <
    200``; measured there, 3 seeds, λ = 3, lr 0.2: task A 0.741 ± 0.028 against SGD's 0.540 ±
    0.007, task B 0.913 ± 0.020 against 0.949 ± 0.011). Also: SGD really forgets (its task A
    accuracy falls by more than ``margin``) and task A was learnt first (> 80%) in every run."""
    rows = summarize(results)
    sgd = [r for r in rows if r["rule"] == "sgd"]
    ewc = [r for r in rows if r["rule"] == "ewc"]
    assert sgd and ewc, f"check needs finished sgd and ewc runs, got rules {sorted({r['rule'] for r in rows})}"
    margin, tolerance = (0.10, 0.08) if _is_smoke(results) else (0.15, 0.05)
    base = sgd[0]
    before = results.finished("task_a_accuracy_before_b").runs["task_a_accuracy_before_b"]
    assert before.min() > 0.8, f"task A was not learnt before task B (accuracy {before.min():.3f} <= 0.8)"
    assert base["forgetting"] > margin, f"sgd barely forgets task A (forgetting {base['forgetting']:.3f})"
    report = []
    for r in ewc:
        gain = r["task_a_accuracy"] - base["task_a_accuracy"]
        cost = base["task_b_accuracy"] - r["task_b_accuracy"]
        report.append(f"λ={r['strength']:g}: A {gain:+.3f}, B {-cost:+.3f}")
        if gain > margin and cost < tolerance and r["task_b_accuracy"] > 0.5:
            return
    raise AssertionError(f"no EWC strength keeps task A >{margin:.2f} above sgd (A {base['task_a_accuracy']:.3f}) "
                         f"with task B within {tolerance:.2f} of sgd (B {base['task_b_accuracy']:.3f}): "
                         + "; ".join(report))


def plot(results):
    """Task A (left) and task B (right) test accuracy over steps, one line per rule and λ (mean ±
    std over seeds), the A→B boundary dashed."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    curves = results.finished("rule", "strength", "steps_per_task", "task_a_accuracy", "task_b_accuracy").curves
    settings = [(r["rule"], r["strength"]) for r in summarize(results)]
    colors = colormaps["viridis"](np.linspace(0, 0.85, max(len(settings), 1)))
    for (rule, strength), color in zip(settings, colors):
        part = curves[(curves.rule == rule) & np.isclose(curves.strength, strength)]
        label = "sgd" if rule == "sgd" else f"ewc λ={strength:g}"
        style = "--" if rule == "sgd" else "-"
        for ax, metric in zip(axes, ("task_a_accuracy", "task_b_accuracy")):
            stats = part.groupby("step")[metric].agg(["mean", "std"]).fillna(0.0)
            steps = stats.index.to_numpy()
            ax.plot(steps, stats["mean"], style, color="black" if rule == "sgd" else color, label=label)
            ax.fill_between(steps, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                            color="black" if rule == "sgd" else color, alpha=0.15)
    for ax, title in zip(axes, ("Task A (digits)", "Task B (permuted digits)")):
        for boundary in sorted(curves["steps_per_task"].unique()):
            ax.axvline(boundary, color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="step", title=title, ylim=(0, 1))
    axes[0].set(ylabel="test accuracy")
    legend(axes[0], fontsize=8)
    fig.suptitle("Catastrophic forgetting: SGD vs EWC (A→B boundary dotted)")
    fig.tight_layout()
    return fig
