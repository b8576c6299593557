"""jaxlearn.rules.noise: per-layer clipping against NumPy, and the documented use of
``optax.add_noise`` (annealed gradient noise) checked against its closed-form variance."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn.rules import noise

F64 = pytest.mark.float64


def grads_tree(dtype=np.float32, seed=0):
    """Shaped like ``serial(Dense, Relu, Dense)`` params: a tuple with one entry per layer."""
    rng = np.random.default_rng(seed)
    return (
        {"W": 3 * rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)},
        (),
        {"W": 0.01 * rng.standard_normal((3, 2)).astype(dtype), "b": np.zeros(2, dtype)},
    )


def np_clip(tree, max_norm, groups):
    """NumPy reference: ``groups`` lists the leaf paths ((layer, name), ...) clipped together."""
    out = [dict(layer) if isinstance(layer, dict) else layer for layer in tree]
    for group in groups:
        norm = np.sqrt(sum(np.sum(np.asarray(tree[i][k], np.float64) ** 2) for i, k in group))
        scale = min(1.0, max_norm / norm) if norm > 0 else 1.0
        for i, k in group:
            out[i][k] = np.asarray(tree[i][k], np.float64) * scale
    return tuple(out)


LEAVES = [(0, "W"), (0, "b"), (2, "W"), (2, "b")]
GROUPS = {None: [[leaf] for leaf in LEAVES], 1: [LEAVES[:2], LEAVES[2:]], 0: [LEAVES]}


@F64
@pytest.mark.parametrize("depth", [None, 0, 1])
@pytest.mark.parametrize("max_norm", [0.05, 1.0, 100.0])
def test_clip_by_layer_norm_matches_numpy(depth, max_norm):
    g = grads_tree(np.float64)
    t = noise.clip_by_layer_norm(max_norm, depth)
    out, state = jax.jit(t.update)(g, t.init(g))
    want = np_clip(g, max_norm, GROUPS[depth])
    chex.assert_trees_all_close(out, want, rtol=1e-12, atol=1e-15)
    assert state == optax.EmptyState()


@F64
def test_depth_zero_is_global_norm_clipping():
    g = grads_tree(np.float64)
    ours, theirs = jax.jit(lambda g: [t.update(g, t.init(g))[0] for t in (
        noise.clip_by_layer_norm(0.5, depth=0), optax.clip_by_global_norm(0.5))])(g)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-12)


@F64
def test_gradient_of_clipping_matches_finite_differences_and_is_finite_at_zero():
    g = grads_tree(np.float64)
    t = noise.clip_by_layer_norm(1.0, depth=1)
    c = grads_tree(np.float64, seed=1)

    def f(g):
        out = t.update(g, optax.EmptyState())[0]
        return sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(c)))

    flat, unravel = ravel_pytree(g)
    steps = 1e-6 * np.eye(flat.size)

    @jax.jit
    def run(flat):
        fd = (jax.vmap(lambda v: f(unravel(v)))(flat + steps) - jax.vmap(lambda v: f(unravel(v)))(flat - steps)) / 2e-6
        return ravel_pytree(jax.grad(f)(unravel(flat)))[0], fd, ravel_pytree(jax.grad(f)(unravel(0 * flat)))[0]

    grad, fd, grad_at_zero = run(flat)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert np.all(np.isfinite(grad_at_zero))


def test_traced_threshold_under_vmap_and_masked_leaves():
    g = grads_tree()
    thresholds = np.array([0.1, 1.0, 10.0], np.float32)

    @jax.jit
    def run(max_norm):
        t = noise.clip_by_layer_norm(max_norm, depth=1)
        return t.update(g, t.init(g))[0]

    out = jax.vmap(run)(thresholds)
    for m, max_norm in enumerate(thresholds):
        want = np_clip(g, float(max_norm), GROUPS[1])
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[m], out), want, rtol=2e-6, atol=1e-7)
    # optax.masked leaves pass through; the rest are clipped per leaf
    mask = jax.tree.map(lambda _: True, g)
    mask[0]["W"] = False
    masked = optax.masked(noise.clip_by_layer_norm(0.5), mask)
    got = jax.jit(lambda g: masked.update(g, masked.init(g))[0])(g)
    np.testing.assert_array_equal(got[0]["W"], g[0]["W"])
    np.testing.assert_allclose(np.linalg.norm(got[0]["b"]), 0.5, rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, "a", None])
def test_bad_threshold_raises(bad):
    with pytest.raises(ValueError, match="max_norm must be a positive scalar"):
        noise.clip_by_layer_norm(bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_depth_raises(bad):
    with pytest.raises(ValueError, match="depth must be None or an int"):
        noise.clip_by_layer_norm(1.0, bad)


def test_optax_add_noise_variance_schedule_and_vmap_over_seeds():
    """The module docstring recommends optax.add_noise, built inside the vmapped member function
    from the member's key: check that this vmaps over keys and follows σ_t² = η/(1+t)^γ."""
    eta, gamma, steps, members, dim = 0.3, 0.55, 4, 2000, 8
    zeros = np.zeros(dim, np.float32)

    @jax.jit
    def run(seeds):
        def member(seed):
            t = optax.add_noise(eta, gamma, key=jax.random.key(seed))

            def step(state, _):
                u, state = t.update(zeros, state)
                return state, u

            return jax.lax.scan(step, t.init(zeros), length=steps)[1]

        return jax.vmap(member)(seeds)

    draws = np.asarray(run(np.arange(members)), np.float64)  # (members, steps, dim)
    n = members * dim
    for t in range(steps):
        var = np.mean(draws[:, t] ** 2)  # the noise has mean 0
        want = eta / (1 + t) ** gamma
        assert abs(var - want) <= 5 * want * np.sqrt(2 / n), (t, var, want)  # SE of a Gaussian variance
    # independent members: their draws are uncorrelated across seeds
    corr = np.corrcoef(draws[:, 0, 0], draws[:, 0, 1])[0, 1]
    assert abs(corr) < 5 / np.sqrt(members)
    assert not np.array_equal(draws[0], draws[1])
