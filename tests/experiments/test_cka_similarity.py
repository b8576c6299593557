"""cka_similarity's study-specific pieces against independent ground truth: the hidden representations
(a NumPy forward pass), the counterpart test (a loop over a hand-made matrix), the subset CKA (CKA
written out in NumPy from its Gram-matrix definition, block by block), and the geometry task's design."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("cka_similarity", [REPO]).module


def _numpy_cka(x, y):
    """Biased linear CKA from its definition: HSIC(K, L)/sqrt(HSIC(K, K) HSIC(L, L)), K = x xᵀ, HKH."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


@pytest.mark.float64
def test_hidden_representations_are_the_post_activation_outputs_of_an_mlp(module):
    config = module.Config(dataset="digits", architecture="mlp", widths=(5, 4, 3))
    net = module.model(config)
    params, _ = net.init(jax.random.key(0), module._input_spec(config))
    params = jax.tree.map(lambda p: np.asarray(p, np.float64) + 0.1, params)  # nonzero biases too
    x = np.random.default_rng(0).normal(size=(7, 64))
    reps = module.hidden_representations(net, params, x)
    dense = [p for p in params if p]
    h = x
    assert len(reps) == 3
    for layer, rep in zip(dense[:-1], reps):
        h = np.maximum(h @ layer["W"] + layer["b"], 0.0)
        np.testing.assert_allclose(rep, h, rtol=1e-12)


def test_hidden_representations_of_a_cnn_are_the_flattened_feature_maps_before_pooling(module):
    config = module.Config(dataset="digits", architecture="cnn", widths=(3, 2))
    net = module.model(config)
    params, _ = net.init(jax.random.key(0), module._input_spec(config))
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype(np.float32)
    reps = module.hidden_representations(net, params, x)
    assert [r.shape for r in reps] == [(5, 8 * 8 * 3), (5, 8 * 8 * 2)]
    # the global average of the last one, read out, is the network's output
    pooled = np.asarray(reps[-1]).reshape(5, 64, 2).mean(axis=1)
    readout = params[-1]
    np.testing.assert_allclose(pooled @ readout["W"] + readout["b"], net.apply(params, x), rtol=1e-5, atol=1e-6)


def test_counterpart_hits_match_a_loop_over_rows_and_columns(module):
    matrix = np.array([[0.9, 0.2, 0.1], [0.3, 0.5, 0.6], [0.1, 0.7, 0.8]])
    hits = np.asarray(module.counterpart_hits(matrix))
    rows = [int(np.argmax(matrix[i]) == i) for i in range(3)]        # 1, 0 (0.6 > 0.5), 1
    cols = [int(np.argmax(matrix[:, j]) == j) for j in range(3)]     # 1, 0 (0.7 > 0.5), 1
    assert hits.tolist() == [bool(v) for v in rows + cols] and hits.mean() == pytest.approx(4 / 6)


@pytest.mark.float64
@pytest.mark.parametrize("n", [4, 8, 10])
def test_subset_cka_is_the_mean_over_disjoint_blocks_and_layers(module, n):
    rng = np.random.default_rng(n)
    reps_a = [rng.normal(size=(23, 5)), rng.normal(size=(23, 3))]
    reps_b = [a @ rng.normal(size=(a.shape[1], 4)) + 0.5 * rng.normal(size=(23, 4)) for a in reps_a]
    blocks = 23 // n
    expected = np.mean([np.mean([_numpy_cka(a[i * n:(i + 1) * n], b[i * n:(i + 1) * n]) for i in range(blocks)])
                        for a, b in zip(reps_a, reps_b)])
    assert float(module.subset_cka(reps_a, reps_b, n, debiased=False)) == pytest.approx(expected, rel=1e-10)


def test_geometry_task_is_a_balanced_dichotomy_of_noisy_conditions_fixed_by_the_seed(module):
    config = module.Config(setting="geometry", num_conditions=8, input_dim=5, samples_per_condition=3, noise=0.1)
    t = module.task(config)
    assert t.centers.shape == (8, 5) and t.x.shape == (24, 5) and t.y.shape == (24,)
    assert int(t.labels.sum()) == 4                                          # balanced
    condition = np.repeat(np.arange(8), 3)
    np.testing.assert_array_equal(t.y, np.asarray(t.labels)[condition])
    assert np.abs(np.asarray(t.x) - np.asarray(t.centers)[condition]).max() < 1.0   # noise 0.1 around each center
    other_activation = module.task(module.Config(**{**config.__dict__, "activation": "tanh"}))
    np.testing.assert_array_equal(other_activation.x, t.x)                  # the task depends on the seed only
    assert not np.allclose(module.task(module.Config(**{**config.__dict__, "seed": 1})).x, t.x)
