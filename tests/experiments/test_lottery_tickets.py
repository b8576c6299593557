"""Lottery tickets with rewinding (Frankle & Carbin 2019; Frankle et al. 2020, §5): on a tiny MLP,
round 0 is the dense network trained without interruption, every later mask keeps exactly the
largest trained weights of the previous round (NumPy sort), pruned weights stay 0 through
training, the controls have the ticket's sizes, and the stored accuracies equal NumPy forward
passes — one compile of the study's segment, reused by every test."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import runner, train
from tests.experiments.members import compute_member

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"widths": (8,), "num_samples": 200, "batch_size": 20, "num_steps": 12, "segment_steps": 12,
        "rewind_step": 4, "rounds": 2, "rate": 0.5, "learning_rate": 0.1,
        "optimizer": {"name": "sgd", "schedule": "warmup_cosine", "warmup_steps": 2}}


@pytest.fixture(scope="module")
def tiny():
    return compute_member("lottery_tickets", TINY, seed=3)


def _round(tree, r):
    return jax.tree.map(lambda leaf: leaf[r], tree)


def _kernels(tree):
    """The prunable leaves (Dense kernels, rank 2) in leaf order."""
    return [leaf for leaf in jax.tree.leaves(tree) if leaf.ndim == 2]


@pytest.mark.slow  # one compile of the study (~5 s of CPU), shared by the module
def test_round_zero_is_the_dense_network_trained_without_interruption(tiny):
    module, config, arrays, start, state, _, final = tiny
    dense, _ = train.supervised_segment(start.train_state, module.model(config), train.softmax_cross_entropy,
                                        config.build_optimizer(), arrays.x_train, arrays.y_train,
                                        batch_size=config.batch_size, num_steps=config.num_steps)
    for got, want in zip(jax.tree.leaves(_round(state.tickets, 0)), jax.tree.leaves(dense.params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # round 0's random mask is the full mask: that control is the dense network itself (trained by
    # another compiled program, the vmapped one of the controls: equal up to float rounding)
    assert all(m.all() for m in jax.tree.leaves(_round(state.random_masks, 0)))
    for got, want in zip(jax.tree.leaves(_round(state.random, 0)), jax.tree.leaves(_round(state.tickets, 0))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(final["dense_accuracy"]) == float(final["ticket_accuracy_r00"])


@pytest.mark.slow
def test_each_mask_keeps_the_largest_trained_weights_of_the_previous_round(tiny):
    _, config, _, _, state, metrics, final = tiny
    total = sum(k.size for k in _kernels(_round(state.masks, 0)))
    kept = total
    for r in range(1, config.rounds + 1):
        previous, mask = _kernels(_round(state.masks, r - 1)), _kernels(_round(state.masks, r))
        weights = np.concatenate([np.abs(w).ravel() for w in _kernels(_round(state.tickets, r - 1))])
        candidates = np.concatenate([m.ravel() for m in previous])
        chosen = np.concatenate([m.ravel() for m in mask])
        kept -= int(round(config.rate * kept))
        assert chosen.sum() == kept and not np.any(chosen & ~candidates)  # nested, with IMP's count
        assert weights[chosen].min() >= weights[candidates & ~chosen].max()  # the largest survive
        assert float(final[f"density_r{r:02d}"]) == pytest.approx(kept / total)
        for m in jax.tree.leaves(_round(state.masks, r)):  # biases are never pruned
            assert m.ndim == 2 or m.all()
    assert float(metrics["final_density"]) == pytest.approx(kept / total)


@pytest.mark.slow
def test_pruned_weights_stay_zero_and_the_controls_match_the_ticket_sizes(tiny):
    _, config, _, start, state, _, _ = tiny
    theta0 = jax.tree.leaves(jax.tree.map(np.asarray, start.train_state.params))
    for r in range(config.rounds + 1):
        masks = jax.tree.leaves(_round(state.masks, r))
        shuffled = jax.tree.leaves(_round(state.random_masks, r))
        for m, p, q, s, w in zip(masks, jax.tree.leaves(_round(state.tickets, r)),
                                 jax.tree.leaves(_round(state.reinit, r)), shuffled,
                                 jax.tree.leaves(_round(state.random, r))):
            assert np.all(p[~m] == 0) and np.all(q[~m] == 0) and np.all(w[~s] == 0)
            assert s.sum() == m.sum()  # the random mask has the ticket's count in every layer
            assert np.all(p[m] != 0)   # trained survivors moved off zero
        if r == config.rounds:
            assert any(not np.array_equal(s, m) for s, m in zip(shuffled, masks))
    # the random reinitialisation starts elsewhere: its trained weights are not the ticket's
    assert not np.allclose(jax.tree.leaves(_round(state.reinit, 1))[0], jax.tree.leaves(_round(state.tickets, 1))[0])
    assert not np.allclose(jax.tree.leaves(state.train_state.params)[0], theta0[0])
    np.testing.assert_array_equal(jax.tree.leaves(state.train_state.params)[0],
                                  jax.tree.leaves(_round(state.tickets, config.rounds))[0])


@pytest.mark.slow
def test_accuracies_equal_numpy_forward_passes(tiny):
    module, config, arrays, _, state, _, final = tiny
    x, y = np.asarray(arrays.x_test, np.float64), np.asarray(arrays.y_test)

    def accuracy(params):
        (l0, _, l2) = params
        logits = np.maximum(x @ l0["W"] + l0["b"], 0) @ l2["W"] + l2["b"]
        return np.mean(logits.argmax(-1) == y)

    for arm, stacked in (("ticket", state.tickets), ("reinit", state.reinit), ("random_mask", state.random)):
        for r in range(config.rounds + 1):
            assert float(final[f"{arm}_accuracy_r{r:02d}"]) == pytest.approx(accuracy(_round(stacked, r)), abs=1e-6)
    assert float(final["test_accuracy"]) == pytest.approx(accuracy(state.train_state.params), abs=1e-6)


def test_bad_config_names_the_field():
    cls = runner.load_experiment("lottery_tickets", [REPO]).config_cls
    with pytest.raises(ValueError, match="rewind_step: must be < num_steps=12, got 12"):
        runner.parse_config(cls, {**TINY, "rewind_step": 12})
    with pytest.raises(ValueError, match="segment_steps: must equal num_steps=12"):
        runner.parse_config(cls, {**TINY, "segment_steps": 6})
    with pytest.raises(runner.ConfigError, match="scope"):
        runner.parse_config(cls, {**TINY, "scope": "random"})
