"""noise_scale's study-specific pieces against independent ground truth: the fit of
``S = S_min(1 + B_crit/B)`` (exact data of known parameters), the interpolation of the noise scale at
the target loss (a power law, where log–log interpolation is exact), the first crossing kept in the
state (a loop), and the noise scale the segment reports (per-example gradients written out in NumPy)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("noise_scale", [REPO]).module


@pytest.mark.parametrize("s_min, b_crit", [(100.0, 50.0), (340.0, 180.0), (20.0, 2000.0)])
def test_fit_recovers_s_min_and_b_crit_of_exact_data(module, s_min, b_crit):
    b = np.array([16, 32, 64, 128, 256, 512, 1024])
    fit = module.fit_critical_batch(b, s_min * (1 + b_crit / b))
    assert fit["s_min"] == pytest.approx(s_min, rel=1e-9) and fit["b_crit"] == pytest.approx(b_crit, rel=1e-9)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)
    noisy = module.fit_critical_batch(b, s_min * (1 + b_crit / b) * np.array([1.3, 0.7, 1.2, 0.8, 1.1, 0.9, 1.0]))
    assert noisy["r2"] < 1.0


def test_noise_at_loss_is_exact_on_a_power_law_and_handles_the_edges(module):
    loss = np.array([2.0, 1.0, 0.5, 0.25])
    b_simple = 100.0 * loss ** -1.5                    # log B linear in log loss: interpolation is exact
    assert module.noise_at_loss(loss, b_simple, 0.7) == pytest.approx(100.0 * 0.7 ** -1.5, rel=1e-12)
    assert np.isnan(module.noise_at_loss(loss, b_simple, 0.1))           # never crossed
    assert module.noise_at_loss(loss, b_simple, 3.0) == b_simple[0]       # already below at the first point
    assert np.isnan(module.noise_at_loss(loss, np.array([1.0, -5.0, 1.0, 1.0]), 0.7))  # an unusable estimate


def test_first_crossing_is_the_first_evaluated_step_below_the_target_and_is_kept(module):
    config = module.Config(target_loss=0.5, eval_every=10, segment_steps=50)
    losses = jnp.array([0.9, 0.6, 0.5, 0.4, 0.7])
    assert int(module._first_crossing(jnp.asarray(-1), losses, jnp.asarray(100), config)) == 130
    assert int(module._first_crossing(jnp.asarray(-1), losses + 1, jnp.asarray(100), config)) == -1
    assert int(module._first_crossing(jnp.asarray(40), losses, jnp.asarray(100), config)) == 40


def test_segment_reports_the_unbiased_noise_scale_of_the_per_example_gradients(module):
    config = module.Config(widths=(4,), num_samples=200, batch_size=8, segment_steps=10, eval_every=5,
                           eval_examples=16, noise_examples=12, chunk_size=5, num_steps=10)
    arrays = module.data(config)
    state = module.init(config, jax.random.key(0))
    state, metrics = module.segment(state, config, arrays)
    net, params = module.model(config), state.train_state.params
    x, y = np.asarray(arrays.x_train[:12]), np.asarray(arrays.y_train[:12])

    def example_loss(p, xi, yi):
        logits = net.apply(p, xi[None])[0]
        return jax.nn.logsumexp(logits) - logits[yi]

    grads = [np.concatenate([np.ravel(g) for g in jax.tree.leaves(jax.grad(example_loss)(params, xi, yi))])
             for xi, yi in zip(x, y)]
    g = np.stack(grads)
    mean = g.mean(axis=0)
    trace_cov = np.sum((g - mean) ** 2) / (12 - 1)
    grad_sq = mean @ mean - trace_cov / 12
    assert float(metrics["trace_cov"]) == pytest.approx(trace_cov, rel=1e-5)  # float32 data
    assert float(metrics["grad_sq"]) == pytest.approx(grad_sq, rel=1e-4)
    assert float(metrics["b_simple"]) == pytest.approx(trace_cov / grad_sq, rel=1e-4)
