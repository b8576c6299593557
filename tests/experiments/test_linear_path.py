"""linear_path's study-specific pieces against independent ground truth: the bump of a curve
(brute force over all pairs) and the path's end points (the network's own loss at θ₀ and θ_T)."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import data, runner, train

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("linear_path", [REPO]).module


def _bump_brute_force(losses):
    """max over pairs j <= k of L_k - L_j (0 when none rises)."""
    return max(max(losses[k] - losses[j] for j in range(k + 1)) for k in range(len(losses)))


@pytest.mark.float64
@pytest.mark.parametrize("seed", range(5))
def test_path_bump_is_the_largest_rise_over_any_earlier_point(module, seed):
    losses = np.random.default_rng(seed).normal(size=17).cumsum()
    assert float(module.path_bump(losses)) == pytest.approx(_bump_brute_force(losses), abs=1e-12)


@pytest.mark.float64
def test_path_bump_is_zero_exactly_on_non_increasing_curves(module):
    assert float(module.path_bump(np.array([3.0, 2.0, 2.0, 0.5, 0.1]))) == 0.0
    assert float(module.path_bump(np.array([3.0, 1.0, 1.5, 0.5]))) == pytest.approx(0.5)


def test_evaluate_path_ends_are_the_losses_at_init_and_at_the_trained_point(module):
    config = module.Config(width=8, depth=2, num_alphas=5, batch_size=16, num_steps=20, segment_steps=20)
    arrays = data.digits(seed=0).arrays()
    member = module.init(config, jax.random.key(0))
    member, _ = jax.jit(lambda m: module.segment(m, config, arrays))(member)
    metrics = module.evaluate(member, config, arrays)
    net = module.model(config)
    for params, k in ((member.params_0, 0), (member.train_state.params, 4)):
        loss = train.softmax_cross_entropy(net.apply(params, arrays.x_train), arrays.y_train)
        assert float(metrics[f"train_path_{k:02d}"]) == pytest.approx(float(loss), rel=1e-5)
    assert float(metrics["initial_loss"]) > float(metrics["final_loss"])
