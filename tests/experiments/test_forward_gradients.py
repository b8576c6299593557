"""The forward-gradient study's estimator statistics against NumPy in float64: the same tangents
(drawn as the study draws them), each single-tangent forward gradient ``(g·v) v`` with ``g`` from
reverse mode, the group means and their squared errors written out by hand; the tangent counts;
the config's checks; the step timer."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import rules, runner, train

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study():
    return runner.load_experiment("forward_gradients", [REPO]).module


def test_group_sizes_and_config_checks(study):
    assert study.group_sizes(study.Config(estimator_draws=4, tangents_per_draw=64)) == (1, 4, 16, 64, 256)
    assert study.group_sizes(study.Config(estimator_draws=1, tangents_per_draw=16)) == (1, 4, 16)
    with pytest.raises(ValueError, match="power of 4"):
        study.Config(tangents_per_draw=32)


@pytest.mark.float64
def test_estimator_errors_are_the_hand_computed_errors(study):
    config = study.Config(widths=(3,), estimator_draws=3, tangents_per_draw=16)
    arrays = study.data(config)
    x, y = jnp.asarray(arrays.x_train[:8], jnp.float64), arrays.y_train[:8]
    params = study.model(config).init(jax.random.key(1), jax.ShapeDtypeStruct((1, 64), jnp.float64))[0]
    key = jax.random.key(2)
    got = jax.jit(lambda p: study.estimator_errors(p, config, x, y, key))(params)

    def loss(p):
        return train.softmax_cross_entropy(study.model(config).apply(p, x), y)

    g = np.asarray(ravel_pytree(jax.grad(loss)(params))[0], np.float64)
    singles = []
    for k_draw in jax.random.split(key, 3):
        V = rules.sample_tangents(k_draw, params, 16)
        V = np.stack([np.asarray(ravel_pytree(jax.tree.map(lambda leaf: leaf[j], V))[0]) for j in range(16)])
        singles.append((V @ g)[:, None] * V)  # (g·v) v, one row per tangent
    singles = np.stack(singles)  # (draws, 16, P)
    norm_sq = g @ g
    for k in (1, 4, 16):
        groups = singles.reshape(3, 16 // k, k, -1).mean(2)
        want = np.mean(np.sum((groups - g) ** 2, -1)) / norm_sq
        assert float(got[f"fg_rel_mse_k{k}"]) == pytest.approx(want, rel=1e-9)
    want_all = np.sum((singles.reshape(48, -1).mean(0) - g) ** 2) / norm_sq
    assert float(got["fg_rel_mse_k48"]) == pytest.approx(want_all, rel=1e-9)
    assert int(got["num_params"]) == g.size == 64 * 3 + 3 + 3 * 10 + 10


def test_seconds_per_step_is_positive_and_cached(study):
    config = study.Config(rule="backprop", widths=(4,), batch_size=8)
    first = study.seconds_per_step(config, steps=5)
    assert 0 < first < 1 and study.seconds_per_step(config, steps=5) == first
