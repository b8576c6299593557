"""Instability analysis: children spawned late in training are linearly connected, early ones not.

Frankle, Dziugaite, Roy & Carbin 2020 ("Linear Mode Connectivity and the Lottery Ticket
Hypothesis", §2 for the definitions, §3 for standard networks): train a *parent* network for
``k`` steps, spawn ``C`` copies (*children*) and train each to the end of training (``T`` steps
in all) with different SGD noise — here a different data order. Their *instability* is the
error barrier between the children: the largest test error along the segment between two
children minus the mean of the children's test errors (:func:`jaxlearn.landscape.barrier`,
``mean`` convention). A network is *stable* at step ``k`` when its children are linearly
connected (instability ≈ 0; they used < 2%). Their finding: instability is high when spawning at
initialisation (``k = 0``) for all but the smallest networks and drops to ≈ 0 after an early
phase of training. The default (paper) sweep here, 3 seeds and T = 2000, gave 0.189 ± 0.103 at
``k = 0``, 0.013 ± 0.008 at ``k = 100`` and 0 at ``k = 1600`` (docs/reproductions.md).

One member of this experiment is ONE instability measurement — a parent seed and a spawn step
``k`` — and its state holds the ``C`` children, stacked (a leading axis on every leaf of the
:class:`jaxlearn.train.TrainState`). All children start from the parent's initialisation and
draw their minibatches with the parent's data key up to step ``k``; from step ``k`` on child
``c`` uses a key of its own (``fold_in(data_key, c + 1)``), so they are bitwise the parent up to
step ``k`` and differ afterwards (data order only: the model and estimator keys are shared;
the digits MLP has no dropout). ``same_data_order: true`` keeps the parent's data order after
the spawn — a control whose children are identical on deterministic hardware (instability 0).
The parent's first ``k`` steps are computed once per child (the price of a pure, vmapped,
resumable member; the children train as one vmapped program anyway). ``seed``, ``spawn_step``
and ``same_data_order`` are dynamic, so a sweep over spawn steps × seeds (× the control) is one
compiled group, checkpointed and resumed by the runner like any other experiment.

Final metrics (``evaluate``; on the digits test split, averaged over the ``C(C−1)/2`` pairs of
children, ``path_points`` points along each segment): ``instability`` (Frankle's error barrier,
``mean`` convention), ``error_barrier_linear`` (above the chord), ``loss_barrier_mean``,
``loss_barrier_linear`` and ``test_accuracy`` (mean over children). Per segment: ``train_loss``,
``test_accuracy`` and ``distance`` (the children's mean pairwise L2 distance in parameters).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import landscape, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "2"  # 2: the shared training base (a data_seed field; the run ids changed, the results did not)


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a parent MLP on digits, trained ``spawn_step`` steps, then ``num_children``
    children trained to ``num_steps`` with their own data orders; their barrier at the end."""

    seed: int = runner.dynamic(0, min=0, help="parent seed: initialisation (and the parent's data order unless "
                                              "data_seed is set)")
    spawn_step: int = runner.dynamic(0, min=0, help="step k at which the children are spawned (<= num_steps)")
    learning_rate: float = runner.dynamic(0.5, min=0.0, help="peak learning rate (cosine decay to 0 by default)")
    same_data_order: bool = runner.dynamic(False, help="control: children keep the parent's data order after the "
                                                       "spawn (identical children) instead of their own")
    num_children: int = runner.static(2, min=2, help="children per spawn (barriers averaged over all pairs)")
    widths: tuple[int, ...] = runner.static((32, 32), min=1, help="hidden layer widths")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(schedule="warmup_cosine"),
                                                   help="optax optimizer and schedule")
    batch_size: int | None = runner.static(16, min=1, help="examples per step (null: the whole training set)")
    num_steps: int = runner.static(2000, min=1, help="T: total training steps of parent + child")
    segment_steps: int = runner.static(500, min=1, help="steps per segment (metrics and checkpoint after each)")
    path_points: int = runner.static(25, min=3, help="points on the segment between two children (endpoints included)")

    def __post_init__(self):
        # spawn_step is traced inside the runner's vmapped program: checked only when concrete
        if isinstance(self.spawn_step, int) and self.spawn_step > self.num_steps:
            raise ValueError(f"spawn_step: must be <= num_steps={self.num_steps}, got {self.spawn_step}")


def model(config: Config):
    """The network of one child (the ``model`` hook; a member's state stacks ``num_children`` of them)."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


data = runner.study.dataset("digits", seed=0)  # the digits split shared by every member


def init(config: Config, key) -> train.TrainState:
    """The ``num_children`` children at step 0: copies of the parent's initial state (leading axis C)."""
    parent = runner.study.init(config, key, model(config), data(config).input_spec)
    return jax.vmap(lambda _: parent)(jnp.arange(config.num_children))


def _pairs(config: Config):
    pairs = np.array(list(itertools.combinations(range(config.num_children), 2)))
    return pairs[:, 0], pairs[:, 1]


def _distance(params, config: Config):
    first, second = _pairs(config)
    squares = [jnp.sum(jnp.square(leaf[first] - leaf[second]).reshape(len(first), -1), axis=1)
               for leaf in jax.tree.leaves(params)]
    return jnp.mean(jnp.sqrt(sum(squares)))


def segment(state: train.TrainState, config: Config, arrays):
    """Advances every child by ``config.segment_steps`` SGD steps: the parent's data order before
    ``spawn_step``, child ``c``'s own (``fold_in(data_key, c + 1)``) from it on; the parent's data
    key is the member's own, or that of ``data_seed`` when set (:func:`jaxlearn.train.order_key`)."""
    net = model(config)
    step = train.make_step(net.apply_with_state, train.softmax_cross_entropy, config.build_optimizer())

    def child(child_state, index):
        def batch_fn(key, step_index):
            own = (step_index >= config.spawn_step) & jnp.logical_not(config.same_data_order)
            stream = jnp.where(own, index + 1, 0)
            parent_key = train.order_key(key, config.data_seed)
            return data_module.get_batch(jax.random.fold_in(parent_key, stream), step_index, arrays.x_train,
                                         arrays.y_train, config.batch_size)

        child_state, metrics = train.train(child_state, step, batch_fn, config.segment_steps)
        return child_state, jnp.mean(metrics["train"]["loss"])

    state, losses = jax.vmap(child)(state, jnp.arange(config.num_children))
    logits = jax.vmap(lambda p: net.apply(p, arrays.x_test))(state.params)
    accuracy = jnp.mean(jax.vmap(train.accuracy, in_axes=(0, None))(logits, arrays.y_test))
    return state, {"train_loss": jnp.mean(losses), "test_accuracy": accuracy,
                   "distance": _distance(state.params, config)}


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Barriers between the children on the test split, averaged over pairs (module docstring)."""
    objective = landscape.ModelObjective(model(config).apply, landscape.softmax_cross_entropy,
                                         (arrays.x_test, arrays.y_test), None)
    first, second = _pairs(config)
    ends_a, ends_b = (jax.tree.map(lambda leaf, i=i: leaf[i], state.params) for i in (first, second))
    paths = jax.vmap(lambda a, b: landscape.linear_path(objective, a, b, config.path_points))(ends_a, ends_b)
    alphas = paths["alpha"][0]  # the same for every pair
    error = landscape.barrier(1 - paths["accuracy"], alphas)
    loss = landscape.barrier(paths["loss"], alphas)
    ends = jnp.concatenate([paths["accuracy"][:, 0], paths["accuracy"][:, -1]])
    return {"instability": jnp.mean(error.mean), "error_barrier_linear": jnp.mean(error.linear),
            "loss_barrier_mean": jnp.mean(loss.mean), "loss_barrier_linear": jnp.mean(loss.linear),
            "test_accuracy": jnp.mean(ends)}


def _final(results):
    return results.finished("same_data_order", "spawn_step", "instability", "loss_barrier_mean", "test_accuracy").runs


def summarize(results) -> list[dict]:
    """Per data order and spawn step: instability (test-error barrier) and loss barrier, mean
    and std over parent seeds, and the children's test accuracy."""
    rows = []
    for (same, k), part in _final(results).groupby(["same_data_order", "spawn_step"]):
        inst = part["instability"].to_numpy()
        rows.append({"data_order": "same" if same else "different", "spawn_step": int(k),
                     "instability": float(inst.mean()), "std": float(inst.std()),
                     "loss_barrier": float(part["loss_barrier_mean"].mean()),
                     "test_accuracy": float(part["test_accuracy"].mean()), "seeds": len(part)})
    return rows


def check(results) -> None:
    """The claim (Frankle et al. 2020, §3): with different data orders, children spawned at the
    earliest step are less stable than children spawned at the latest — the mean instability over
    seeds drops by more than half and by more than one percentage point of test error — and the
    same-data-order control (when run) has instability 0."""
    rows = summarize(results)
    assert rows, "no finished runs"
    different = sorted((r for r in rows if r["data_order"] == "different"), key=lambda r: r["spawn_step"])
    if len(different) >= 2:
        early, late = different[0], different[-1]
        assert early["instability"] > 2 * late["instability"] and early["instability"] - late["instability"] > 0.01, \
            (f"instability at k={early['spawn_step']} ({early['instability']:.4f}) is not clearly above that at "
             f"k={late['spawn_step']} ({late['instability']:.4f})")
    for r in rows:
        if r["data_order"] == "same":
            assert r["instability"] < 1e-6, f"same data order, k={r['spawn_step']}: instability {r['instability']:.4g}"


def plot(results):
    """Instability (test-error barrier, mean ± std over seeds) and loss barrier against the spawn step."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_err, ax_loss = fig.subplots(1, 2)
    rows = summarize(results)
    for order in sorted({r["data_order"] for r in rows}):
        part = [r for r in rows if r["data_order"] == order]
        steps = [max(r["spawn_step"], 1) for r in part]  # k = 0 drawn at 1 on the log axis
        ax_err.errorbar(steps, [r["instability"] for r in part], yerr=[r["std"] for r in part], marker="o",
                        capsize=3, label=f"{order} data order")
        ax_loss.plot(steps, [r["loss_barrier"] for r in part], marker="o", label=f"{order} data order")
    ax_err.set(xscale="log", xlabel="spawn step k (0 drawn at 1)", ylabel="instability (test-error barrier)",
               title="Instability of children spawned at step k")
    ax_loss.set(xscale="log", xlabel="spawn step k (0 drawn at 1)", ylabel="test-loss barrier (mean convention)",
                title="Loss barrier between children")
    legend(ax_err, fontsize=8)
    fig.tight_layout()
    return fig
