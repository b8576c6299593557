"""Example forgetting: some training examples are forgotten again and again, many never; the
never-forgotten ones can be removed from the training set at little cost.

Toneva, Sordoni, Combes, Trischler, Bengio & Gordon 2019 ("An Empirical Study of Example
Forgetting during Deep Neural Network Learning", ICLR). During training, each example's
correctness (arg-max output == label) is recorded at regular checks; a *forgetting event* is a
check at which an example goes from correct to misclassified (§3). Examples never forgotten once
learnt are *unforgettable*; an example never learnt counts as the most forgotten (§3, "we
assign them an infinite number of forgetting events"). The findings reproduced here: forgetting
counts are a property of the example rather than of the run — they correlate across seeds (§4) —
and removing a large fraction of the training set, taken among the least forgotten examples,
barely changes test accuracy, whereas removing the same number of random examples costs more
(§5, Fig. 5).

One member holds ``num_networks`` networks (the *seeds* of the claim; network ``i`` draws its
initialisation and data order from ``fold_in(key, i)`` of the member's key) and runs the whole
study in ONE segment (``segment_steps = num_steps``):

1. *tracking*: the networks train ``num_steps`` SGD steps on the whole training split as one vmapped
   program; every ``check_every`` steps the correctness of every training example is recorded
   inside the training scan (:func:`jaxlearn.analysis.correctness_eval_fn` with
   ``train.train(eval_every=...)``). Network ``i``'s *forgetting score* per example is its number
   of forgetting events (:func:`~jaxlearn.analysis.forgetting_events`), or the number of checks
   (more than any count) where it was never learnt (:func:`~jaxlearn.analysis.never_learned`);
2. *removal*: for each network, two training subsets of ``(1 − removed_fraction) · N`` examples
   (the counts are static): without the ``removed_fraction`` of examples with the *lowest* score of
   that network (ties — most of them unforgettable — broken at random), and without a uniformly
   random ``removed_fraction``; both retrain from the network's own initialisation for
   ``num_steps`` steps (the same number of steps and batch size: the same compute), the ``2 ×
   num_networks`` retrainings as one vmapped program.

The state (:class:`ForgettingState`) holds the tracked networks as one stacked
:class:`jaxlearn.train.TrainState` (``runner.load_networks`` gives them back), the retrained ones
(as :class:`Retrained`, stacked ``[fewest-forgotten removed…, random removed…]``), the scores and the
kept indices. Final metrics (``evaluate``; test split): per network ``i`` (``_nI``) the test
accuracy of the full, ``fewest_removed`` and ``random_removed`` networks; their means
(``test_accuracy`` is the full networks'); ``spearman`` (mean over pairs of networks of the rank
correlation of their scores, :func:`jaxlearn.analysis.spearman`) and ``spearman_min``;
``unforgettable_fraction`` and ``never_learned_fraction`` (means over networks); ``fewest_cost`` and
``random_cost`` (mean accuracy lost by the removal) with their standard errors over networks
(``_se``), ``paired_gain`` (mean over networks of fewest-removed minus random-removed accuracy)
with its standard error, and the histogram of forgetting events ``events_E_fraction`` (the
fraction of training examples learnt and forgotten ``E`` = 0, 1, 2, 3 times, ``E = 4``: four or
more; with ``never_learned_fraction`` they sum to 1).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import analysis, nn, runner, train
from jaxlearn import data as data_module
from jaxlearn.runner.plots import legend

VERSION = "1"

DATASETS = ("digits", "mnist1d")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: ``num_networks`` networks tracked on the whole training split, then each retrained
    without its least-forgotten examples and without random ones. ``num_steps`` is the length of
    every training; the member runs as one segment (``segment_steps = num_steps``)."""

    seed: int = runner.dynamic(0, min=0, help="member seed: network i draws its initialisation, data order and "
                                              "random removal from fold_in(key, i)")
    learning_rate: float = runner.dynamic(0.1, min=0.0, help="peak SGD learning rate")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(schedule="warmup_cosine"),
                                                   help="optax optimizer and schedule (cosine decay to 0)")
    num_networks: int = runner.static(10, min=2, help="networks (seeds) per member: scores are compared across them")
    dataset: str = runner.static("digits", choices=DATASETS, help="digits (8x8) or mnist1d (generated)")
    num_samples: int = runner.static(5000, min=10, help="MNIST-1D examples generated (80% train); unused by digits")
    widths: tuple[int, ...] = runner.static((100, 100), min=1, help="hidden layer widths (ReLU MLP, He init)")
    removed_fraction: float = runner.static(0.3, min=0.0, max=0.95, help="fraction of the training set removed")
    check_every: int = runner.static(15, min=1, help="steps between correctness checks of every training example")
    batch_size: int | None = runner.static(100, min=1, help="examples per step")
    num_steps: int = runner.static(1500, min=1, help="steps of every training (tracking and retraining)")
    segment_steps: int = runner.static(1500, min=1, help="must equal num_steps: the member is one segment")

    def __post_init__(self):
        if self.segment_steps != self.num_steps:
            raise ValueError(f"segment_steps: must equal num_steps={self.num_steps} (tracking and retraining run in "
                             f"one segment), got {self.segment_steps}")
        if self.num_steps % self.check_every:
            raise ValueError(f"check_every: must divide num_steps={self.num_steps}, got {self.check_every}")
        if self.num_steps // self.check_every < 2:
            raise ValueError(f"check_every: needs at least two checks in num_steps={self.num_steps}, "
                             f"got {self.check_every}")


class Retrained(NamedTuple):
    """The retrained networks' parameters and model state, stacked ``[fewest-forgotten removed (one per
    network)…, random removed…]`` (not TrainStates: the state's one TrainState is the tracked networks)."""

    params: Any
    model_state: Any


class ForgettingState(NamedTuple):
    """One member: ``train_state`` (the tracked networks, leading axis ``num_networks``), ``retrained``,
    ``scores`` (int32 ``(num_networks, N)``: forgetting events, never-learnt examples at the number of
    checks), ``unforgettable`` and ``never_learned`` (bool, same shape) and ``kept`` (int32 ``(2 ·
    num_networks, N_kept)``: the training indices of each retraining)."""

    train_state: train.TrainState
    retrained: Retrained
    scores: jax.Array
    unforgettable: jax.Array
    never_learned: jax.Array
    kept: jax.Array


def model(config: Config):
    """The network of one seed (the ``model`` hook): a ReLU MLP with He-scaled weights, 10 outputs."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


def data(config: Config) -> data_module.Arrays:
    """The dataset, shared by every member: MNIST-1D (the reference generator, ``seed=42``) or digits."""
    if config.dataset == "digits":
        return data_module.digits(seed=0).arrays()
    return data_module.mnist1d(num_samples=config.num_samples, seed=42).arrays()


def _input_spec(config: Config):
    """One input (without generating the data): 40 samples of MNIST-1D, or 64 digits pixels."""
    return jax.ShapeDtypeStruct((1, 64 if config.dataset == "digits" else 40), jnp.float32)


def _sizes(config: Config, arrays) -> tuple[int, int]:
    n = arrays.x_train.shape[0]
    return n, n - int(round(config.removed_fraction * n))


def init(config: Config, key) -> ForgettingState:
    """The ``num_networks`` networks at initialisation (network ``i`` from ``fold_in(key, i)``); the
    other fields zero-filled until the segment fills them."""
    def draw(i):
        return runner.study.init(config, jax.random.fold_in(key, i), model(config), _input_spec(config))

    states = jax.lax.map(draw, jnp.arange(config.num_networks))
    n, n_kept = _sizes(config, data(config))
    k = config.num_networks
    retrained = Retrained(jax.tree.map(lambda p: jnp.concatenate([p, p]), states.params),
                          jax.tree.map(lambda p: jnp.concatenate([p, p]), states.model_state))
    return ForgettingState(states, retrained, jnp.zeros((k, n), jnp.int32), jnp.zeros((k, n), bool),
                           jnp.zeros((k, n), bool), jnp.zeros((2 * k, n_kept), jnp.int32))


def _train(state: train.TrainState, config: Config, x, y, **tracking):
    """``num_steps`` minibatch steps on ``(x, y)`` with the member's optimizer and the state's own
    data order; ``tracking``: ``eval_every`` and ``eval_fn`` of :func:`jaxlearn.train.train`."""
    net = model(config)
    step = train.make_step(net.apply_with_state, train.softmax_cross_entropy, config.build_optimizer())

    def batch_fn(key, index):
        return data_module.get_batch(train.order_key(key, config.data_seed), index, x, y, config.batch_size)

    return train.train(state, step, batch_fn, config.num_steps, **tracking)


def _scores(history):
    """Forgetting events per example, never-learnt examples at the number of checks (more than any count)."""
    never = analysis.never_learned(history)
    return (jnp.where(never, history.shape[0], analysis.forgetting_events(history)), analysis.unforgettable(history),
            never)


def _kept(config: Config, key, scores, n_kept):
    """Training indices kept by the two removals: the highest scores (ties at random), and a random subset."""
    k_ties, k_random = jax.random.split(key)
    n = scores.shape[0]
    by_score = jnp.lexsort((jax.random.uniform(k_ties, (n,)), scores))  # ascending score, ties at random
    fewest = jnp.sort(by_score[n - n_kept:])
    random = jnp.sort(jax.random.permutation(k_random, n)[:n_kept])
    return fewest, random


def segment(state: ForgettingState, config: Config, arrays):
    """Tracking, scores, both removals and the retrainings (module docstring). Metrics:
    ``unforgettable_fraction`` and ``never_learned_fraction`` (means over the networks)."""
    net = model(config)
    n, n_kept = _sizes(config, arrays)
    tracker = analysis.correctness_eval_fn(net.apply, arrays.x_train, arrays.y_train)

    def track(ts):
        ts, metrics = _train(ts, config, arrays.x_train, arrays.y_train, eval_every=config.check_every,
                             eval_fn=tracker)
        return ts, metrics["eval"]

    trained, history = jax.vmap(track)(state.train_state)
    scores, unforgettable, never = jax.vmap(_scores)(history)
    removal_keys = jax.vmap(lambda ts: jax.random.fold_in(ts.key, 2))(state.train_state)
    fewest, random = jax.vmap(lambda k, s: _kept(config, k, s, n_kept))(removal_keys, scores)
    kept = jnp.concatenate([fewest, random])
    starts = jax.tree.map(lambda leaf: jnp.concatenate([leaf, leaf]), state.train_state)

    def retrain(ts, indices):
        return _train(ts, config, arrays.x_train[indices], arrays.y_train[indices])[0]

    retrained = jax.vmap(retrain)(starts, kept)
    new = ForgettingState(trained, Retrained(retrained.params, retrained.model_state), scores, unforgettable, never,
                          kept)
    return new, {"unforgettable_fraction": jnp.mean(unforgettable), "never_learned_fraction": jnp.mean(never)}


def _mean_se(values):
    return jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(values.shape[0])


def evaluate(state: ForgettingState, config: Config, arrays) -> dict:
    """Test accuracies, the cross-seed rank correlation of the scores, and the removal costs
    (module docstring)."""
    net, k = model(config), config.num_networks

    def accuracy(params):
        return train.accuracy(net.apply(params, arrays.x_test), arrays.y_test)

    full = jax.vmap(accuracy)(state.train_state.params)
    retrained = jax.vmap(accuracy)(state.retrained.params)
    fewest, random = retrained[:k], retrained[k:]
    pairs = np.array(list(itertools.combinations(range(k), 2)))
    rho = jax.vmap(analysis.spearman)(state.scores[pairs[:, 0]], state.scores[pairs[:, 1]])
    out = {"test_accuracy": jnp.mean(full), "fewest_removed_accuracy": jnp.mean(fewest),
           "random_removed_accuracy": jnp.mean(random), "spearman": jnp.mean(rho), "spearman_min": jnp.min(rho),
           "unforgettable_fraction": jnp.mean(state.unforgettable),
           "never_learned_fraction": jnp.mean(state.never_learned),
           "mean_forgetting_events": jnp.mean(jnp.where(state.never_learned, 0, state.scores))}
    learnt = ~state.never_learned
    for events in range(_HISTOGRAM):  # the last bin holds every count >= _HISTOGRAM - 1
        hit = state.scores == events if events < _HISTOGRAM - 1 else state.scores >= events
        out[f"events_{events}_fraction"] = jnp.mean(learnt & hit)
    for name, values in (("fewest_cost", full - fewest), ("random_cost", full - random),
                         ("paired_gain", fewest - random)):
        out[name], out[f"{name}_se"] = _mean_se(values)
    for i in range(k):
        out.update({f"full_accuracy_n{i}": full[i], f"fewest_removed_accuracy_n{i}": fewest[i],
                    f"random_removed_accuracy_n{i}": random[i]})
    return out


_HISTOGRAM = 5  # forgetting-event bins of the final metrics: 0, 1, 2, 3 and >= 4 (learnt examples)


# -- results -----------------------------------------------------------------------------------------------------
_COLUMNS = ("test_accuracy", "fewest_removed_accuracy", "random_removed_accuracy", "fewest_cost", "fewest_cost_se",
            "random_cost", "random_cost_se", "paired_gain", "paired_gain_se", "spearman", "spearman_min",
            "unforgettable_fraction", "never_learned_fraction", "mean_forgetting_events")


def summarize(results) -> list[dict]:
    """Per member (seed): the networks' mean test accuracy in full and after each removal, the costs
    and paired gain with their standard errors over networks, the cross-seed Spearman correlation
    (mean and min over pairs), and the unforgettable and never-learnt fractions."""
    runs = results.finished("seed", "num_networks", *_COLUMNS).runs
    rows = []
    for _, run in runs.sort_values("seed").iterrows():
        rows.append({"seed": int(run["seed"]), "networks": int(run["num_networks"]),
                     **{name: float(run[name]) for name in _COLUMNS}})
    return rows


def check(results) -> None:
    """The claim (Toneva et al. 2019, §4–5), for every finished member (≥ 5 networks): forgetting
    scores correlate across seeds (mean pairwise Spearman ≥ 0.3); removing the 30% least forgotten
    examples costs at most max(1 point, 2 standard errors) of test accuracy, and less than removing
    a random 30% (mean paired gain over networks > 0)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    for row in rows:
        where = f"seed {row['seed']}"
        assert row["networks"] >= 5, f"{where}: needs >= 5 networks (seeds), got {row['networks']}"
        assert row["spearman"] >= 0.3, f"{where}: mean pairwise Spearman {row['spearman']:.3f} < 0.3"
        allowed = max(0.01, 2 * row["fewest_cost_se"])
        assert row["fewest_cost"] <= allowed, \
            f"{where}: removing the least forgotten costs {row['fewest_cost']:.4f} > {allowed:.4f}"
        assert row["paired_gain"] > 0, \
            f"{where}: least-forgotten removal not better than random (paired gain {row['paired_gain']:.4f})"


def smoke_check(results) -> None:
    """The pipeline at toy size: the fractions are fractions (unforgettable and never-learnt exclusive,
    the histogram of forgetting events and the never-learnt sum to 1, its bin 0 is the unforgettable),
    the costs are the differences of the stored accuracies, and forgetting scores correlate across
    seeds (positive mean Spearman: the effect's direction)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    for row in rows:
        assert 0 <= row["unforgettable_fraction"] and 0 <= row["never_learned_fraction"]
        assert row["unforgettable_fraction"] + row["never_learned_fraction"] <= 1
        assert abs(row["fewest_cost"] - (row["test_accuracy"] - row["fewest_removed_accuracy"])) < 1e-5
        assert abs(row["paired_gain"] - (row["fewest_removed_accuracy"] - row["random_removed_accuracy"])) < 1e-5
        assert row["spearman"] > 0, f"seed {row['seed']}: scores do not correlate across seeds ({row['spearman']:.3f})"
    for _, run in results.finished("seed").runs.iterrows():
        total = sum(run[f"events_{e}_fraction"] for e in range(_HISTOGRAM)) + run["never_learned_fraction"]
        assert abs(total - 1) < 1e-5, f"seed {run['seed']}: the histogram of forgetting events sums to {total}"
        assert abs(run["events_0_fraction"] - run["unforgettable_fraction"]) < 1e-6


def plot(results):
    """Left: the histogram of forgetting events (log scale). Middle: test accuracy of every network in
    full and after each removal (paired lines per network). Right: the removal costs with ±2
    standard errors and the 1-point bound."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(14, 4))
    ax_hist, ax_acc, ax_cost = fig.subplots(1, 3)
    runs = results.finished("seed", "num_networks", *_COLUMNS).runs
    bins = [f"{e}" for e in range(_HISTOGRAM - 1)] + [f"≥{_HISTOGRAM - 1}", "never\nlearnt"]
    for j, (_, run) in enumerate(runs.iterrows()):
        heights = [run.get(f"events_{e}_fraction", np.nan) for e in range(_HISTOGRAM)] + [run["never_learned_fraction"]]
        ax_hist.bar(np.arange(len(bins)) + 0.8 * j / len(runs), heights, width=0.8 / len(runs), color=f"C{j}")
    ax_hist.set_xticks(range(len(bins)), bins)
    ax_hist.set(yscale="log", xlabel="forgetting events", ylabel="fraction of training examples (mean over seeds)",
                title="Forgetting events per example")
    labels = ("full training set", "least forgotten 30% removed", "random 30% removed")
    for _, run in runs.iterrows():
        for i in range(int(run["num_networks"])):
            values = [run.get(f"{name}_n{i}", np.nan) for name in
                      ("full_accuracy", "fewest_removed_accuracy", "random_removed_accuracy")]
            ax_acc.plot(range(3), values, marker="o", color="C0", alpha=0.5)
    ax_acc.set_xticks(range(3), labels, fontsize=8)
    ax_acc.set(ylabel="test accuracy", title="Each seed: full vs removals")
    for j, (_, run) in enumerate(runs.iterrows()):
        for x, name, color in ((0, "fewest_cost", "C2"), (1, "random_cost", "C3")):
            ax_cost.errorbar(x + 0.1 * j, run[name], yerr=2 * run[f"{name}_se"], marker="o", color=color, capsize=4,
                             label=(labels[1] if x == 0 else labels[2]) if j == 0 else None)
    ax_cost.axhline(0.01, color="0.5", linestyle=":", label="1 point")
    ax_cost.axhline(0.0, color="0.3", linewidth=0.8)
    ax_cost.set_xticks([0, 1], ["least forgotten", "random"])
    ax_cost.set(ylabel="test accuracy lost (mean ± 2 SE over seeds)", title="Cost of removing 30%")
    legend(ax_cost, fontsize=8)
    fig.tight_layout()
    return fig
