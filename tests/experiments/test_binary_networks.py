"""Binarized networks (Hubara et al. 2016) through the study's hooks: the binary model is the
explicit NumPy network with ±1 weights and ±1 activations, its twins have the same shapes, and a
segment of training keeps the latents in [-1, 1] with the sign flips it reports."""

import dataclasses
import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"widths": (16, 8), "batch_size": 32, "num_steps": 40, "segment_steps": 40,
        "optimizer": {"name": "adam", "schedule": "constant", "warmup_steps": 0}}


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("binary_networks", [REPO]).module


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_binary_forward(params, state, x, eps=1e-5):
    """Evaluation mode: [x sign(W) → BatchNorm(running stats) → sign] per hidden layer, then
    x sign(W) → BatchNorm; params/state as the serial model lays them out (3 entries per hidden layer)."""
    p = [jax.tree.map(np.asarray, e) for e in params]
    s = [jax.tree.map(np.asarray, e) for e in state]
    h = np.asarray(x, np.float64)
    n_layers = (len(p) + 1) // 3
    for layer in range(n_layers):
        dense, bn, bn_state = p[3 * layer], p[3 * layer + 1], s[3 * layer + 1]
        h = h @ np_sign(dense["W_latent"])
        h = (h - bn_state["mean"]) / np.sqrt(bn_state["var"] + eps) * bn["scale"] + bn["offset"]
        if layer < n_layers - 1:
            h = np_sign(h)
    return h


def test_binary_model_is_the_explicit_sign_network(module):
    config = runner.parse_config(module.Config, {**TINY, "network": "binary"})
    arrays = module.data(config)
    state = module.init(config, jax.random.key(0))
    # running statistics away from their init, so the test sees them
    model_state = jax.tree.map(lambda v: v + 0.3 if v.ndim else v, state.model_state)
    got = module.model(config).apply(state.params, arrays.x_test[:50], model_state)
    np.testing.assert_allclose(got, np_binary_forward(state.params, model_state, arrays.x_test[:50]),
                               rtol=1e-4, atol=1e-4)


def test_twins_have_the_same_shapes(module):
    shapes = {}
    for network in module.NETWORKS:
        config = runner.parse_config(module.Config, {**TINY, "network": network})
        params = module.init(config, jax.random.key(0)).params
        shapes[network] = [tuple(leaf.shape) for leaf in jax.tree.leaves(params)]
    assert shapes["binary"] == shapes["binary_weights"] == shapes["full"]


@pytest.mark.parametrize("network", ["binary", "full"])
def test_segment_keeps_latents_in_box_and_counts_flips(module, network):
    config = runner.parse_config(module.Config, {**TINY, "network": network, "learning_rate": 0.2})
    arrays = module.data(config)
    state = module.init(config, jax.random.key(1))
    before = [np.asarray(w) for w in module._latents(state.params)]
    state, metrics = jax.jit(lambda s: module.segment(s, config, arrays))(state)
    after = [np.asarray(w) for w in module._latents(state.params)]
    assert len(after) == (3 if network == "binary" else 0)
    if network == "full":
        assert float(metrics["sign_flips"]) == 0 and float(metrics["latents_at_bound"]) == 0
        return
    flat_before, flat_after = np.concatenate([w.ravel() for w in before]), np.concatenate([w.ravel() for w in after])
    assert np.abs(flat_after).max() <= 1.0
    at_bound = np.mean(np.abs(flat_after) == 1.0)
    assert at_bound > 0 and float(metrics["latents_at_bound"]) == pytest.approx(at_bound)
    flips = np.mean(np_sign(flat_after) != np_sign(flat_before))
    assert flips > 0 and float(metrics["sign_flips"]) == pytest.approx(flips)
    assert 0.1 < float(metrics["test_accuracy"]) <= 1.0


def test_check_needs_the_gap_within_five_points(module):
    def results(binary_acc):
        rows = [{"run_id": f"{n}{s}", "experiment": "binary_networks", "version": module.VERSION,
                 "status": "finished", "step": 10, "diverged_step": np.nan, "network": n, "seed": s,
                 "test_accuracy": acc + 0.001 * s, "train_accuracy": 1.0, "latents_at_bound": 0.0}
                for n, acc in (("binary", binary_acc), ("full", 0.98)) for s in range(3)]
        import pandas as pd
        return runner.Results(pd.DataFrame(rows), None, ("network", "seed"))

    module.check(results(0.95))
    row = {r["network"]: r for r in module.summarize(results(0.95))}["binary"]
    assert row["gap_to_full"] == pytest.approx(0.03) and row["gap_std"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(AssertionError, match="points below"):
        module.check(results(0.92))
    assert dataclasses.is_dataclass(module.Config)
