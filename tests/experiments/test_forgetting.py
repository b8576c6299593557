"""Example forgetting (Toneva et al. 2019) on a tiny MLP: the scores equal forgetting events counted
in Python from correctness snapshots taken by a plain loop (never-learnt examples at the number of
checks), the removals keep the right examples, the retrained networks are trainings on those
subsets, and the final metrics equal NumPy / SciPy recomputations — one compile of the study's
segment, reused by every test."""

import itertools
import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import data, runner, train
from tests.experiments.members import compute_member

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"dataset": "mnist1d", "num_samples": 200, "widths": (8,), "num_networks": 3, "batch_size": 20, "num_steps": 24,
        "segment_steps": 24, "check_every": 4, "learning_rate": 0.3, "removed_fraction": 0.3}


@pytest.fixture(scope="module")
def tiny():
    return compute_member("forgetting", TINY, seed=5)


def _network(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def _logits(params, x):
    (l0, _, l2) = params
    return np.maximum(x @ l0["W"] + l0["b"], 0) @ l2["W"] + l2["b"]


@pytest.mark.slow  # one compile of the study (~5 s of CPU), shared by the module
def test_scores_are_forgetting_events_of_snapshots_taken_by_a_plain_loop(tiny):
    module, config, arrays, start, state, metrics, _ = tiny
    net, x, y = module.model(config), np.asarray(arrays.x_train, np.float64), np.asarray(arrays.y_train)
    segment = jax.jit(lambda ts: train.supervised_segment(ts, net, train.softmax_cross_entropy,
                                                         config.build_optimizer(), arrays.x_train, arrays.y_train,
                                                         batch_size=config.batch_size,
                                                         num_steps=config.check_every)[0])
    checks = config.num_steps // config.check_every
    for i in range(config.num_networks):
        ts, history = _network(start.train_state, i), []
        for _ in range(checks):
            ts = segment(ts)
            history.append(_logits(jax.tree.map(lambda a: np.asarray(a, np.float64), ts.params), x).argmax(-1) == y)
        for got, want in zip(jax.tree.leaves(_network(state.train_state.params, i)), jax.tree.leaves(ts.params)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # tracking leaves training alone
        history = np.array(history)
        for j in range(x.shape[0]):
            column = list(history[:, j])
            forgotten = sum(a and not b for a, b in zip(column, column[1:]))
            never = not any(column)
            assert state.scores[i, j] == (checks if never else forgotten)
            assert state.never_learned[i, j] == never and state.unforgettable[i, j] == (not never and forgotten == 0)
    assert state.scores.max() > 0 and state.unforgettable.any()  # not vacuous
    assert float(metrics["unforgettable_fraction"]) == pytest.approx(state.unforgettable.mean())


@pytest.mark.slow
def test_removals_keep_the_most_forgotten_and_a_random_subset(tiny):
    _, config, arrays, _, state, _, _ = tiny
    n = arrays.x_train.shape[0]
    n_kept = n - round(config.removed_fraction * n)
    k = config.num_networks
    assert state.kept.shape == (2 * k, n_kept)
    for i in range(k):
        fewest, random = state.kept[i], state.kept[k + i]
        for kept in (fewest, random):
            assert np.all(np.diff(kept) > 0) and kept.min() >= 0 and kept.max() < n  # sorted, distinct
        removed = np.setdiff1d(np.arange(n), fewest)
        assert state.scores[i, fewest].min() >= state.scores[i, removed].max()  # the lowest scores went
        assert not np.array_equal(fewest, random)


@pytest.mark.slow
def test_retrained_networks_train_on_their_subsets_from_the_same_initialisation(tiny):
    module, config, arrays, start, state, _, _ = tiny
    net, k = module.model(config), config.num_networks
    for j in (0, k + 1):  # a fewest-removed and a random-removed retraining
        kept = state.kept[j]
        ts, _ = train.supervised_segment(_network(start.train_state, j % k), net, train.softmax_cross_entropy,
                                         config.build_optimizer(), np.asarray(arrays.x_train)[kept],
                                         np.asarray(arrays.y_train)[kept], batch_size=config.batch_size,
                                         num_steps=config.num_steps)
        for got, want in zip(jax.tree.leaves(_network(state.retrained.params, j)), jax.tree.leaves(ts.params)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_final_metrics_equal_numpy_and_scipy(tiny):
    from scipy import stats

    _, config, arrays, _, state, _, final = tiny
    x, y, k = np.asarray(arrays.x_test, np.float64), np.asarray(arrays.y_test), config.num_networks

    def accuracy(params):
        return np.mean(_logits(jax.tree.map(lambda a: np.asarray(a, np.float64), params), x).argmax(-1) == y)

    full = np.array([accuracy(_network(state.train_state.params, i)) for i in range(k)])
    retrained = np.array([accuracy(_network(state.retrained.params, j)) for j in range(2 * k)])
    fewest, random = retrained[:k], retrained[k:]
    rho = [stats.spearmanr(state.scores[a], state.scores[b]).statistic for a, b in itertools.combinations(range(k), 2)]
    want = {"test_accuracy": full.mean(), "fewest_removed_accuracy": fewest.mean(),
            "random_removed_accuracy": random.mean(), "spearman": np.mean(rho), "spearman_min": np.min(rho),
            "never_learned_fraction": state.never_learned.mean()}
    for name, values in (("fewest_cost", full - fewest), ("random_cost", full - random),
                         ("paired_gain", fewest - random)):
        want[name], want[f"{name}_se"] = values.mean(), values.std(ddof=1) / np.sqrt(k)
    for i in range(k):
        want[f"full_accuracy_n{i}"] = full[i]
    learnt_counts = np.where(state.never_learned, -1, state.scores)
    for events in range(4):
        want[f"events_{events}_fraction"] = np.mean(learnt_counts == events)
    want["events_4_fraction"] = np.mean(learnt_counts >= 4)
    for name, value in want.items():
        assert float(final[name]) == pytest.approx(value, abs=1e-5), name


def test_bad_config_names_the_field():
    cls = runner.load_experiment("forgetting", [REPO]).config_cls
    with pytest.raises(ValueError, match="segment_steps: must equal num_steps=24"):
        runner.parse_config(cls, {**TINY, "segment_steps": 12})
    with pytest.raises(ValueError, match="check_every: must divide num_steps=24, got 5"):
        runner.parse_config(cls, {**TINY, "check_every": 5})
    with pytest.raises(runner.ConfigError, match="dataset"):
        runner.parse_config(cls, {**TINY, "dataset": "cifar"})
    assert data.digits(seed=0).x_train.shape[1] == 64  # the digits variant's input spec
