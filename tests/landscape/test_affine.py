"""``affine_vmap`` equals ``vmap`` on networks and on functions that exercise every rule (float64)."""

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxlearn import nn
from jaxlearn.landscape.affine import affine_vmap

pytestmark = pytest.mark.float64


def _mlp():
    model = nn.mlp([7, 5], 3, activation="relu")  # relu is a custom_jvp: batched as a whole
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float64))
    x = jax.random.normal(jax.random.key(1), (6, 4))
    return params, lambda p: jnp.sum(model.apply(p, x) ** 2)


def _cnn():
    model = nn.cnn([3, 4], 2, activation="tanh")
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 6, 6, 2), jnp.float64))
    x = jax.random.normal(jax.random.key(1), (3, 6, 6, 2))
    return params, lambda p: jnp.mean(model.apply(p, x))


def _chunked_objective():
    """A dataset loss in minibatch chunks: a lax.scan, batched as a whole."""
    from jaxlearn.landscape import ModelObjective, dataset_metrics, softmax_cross_entropy

    model = nn.mlp([5], 3, activation="tanh")
    params, _ = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float64))
    x, y = jax.random.normal(jax.random.key(1), (10, 4)), jnp.arange(10) % 3
    objective = ModelObjective(model.apply, softmax_cross_entropy, (x, y), batch_size=4)
    return params, lambda p: dataset_metrics(objective, p)


def _rules():
    """add/sub/neg/mul/div by constants, concatenate with a constant, slices, transposes,
    sums, dtype conversion, a nested jit, an integer leaf that must not move, a dict output with
    a purely affine entry (never materialised before the end) and a quadratic entry."""
    params = {"a": jnp.arange(6.0).reshape(2, 3) / 7, "b": jnp.linspace(-1, 1, 3), "n": jnp.arange(3)}

    @jax.jit
    def inner(a, b):
        return jnp.concatenate([a.T, b[None].T * 2.0, jnp.ones((3, 1))], axis=1) / 3.0

    def fn(p):
        z = inner(-p["a"], p["b"] - 1.0)[:, 1:] + p["n"][:, None]
        lin = jnp.sum(z.astype(jnp.float32).astype(jnp.float64)) - jnp.sum(p["a"][0])
        return {"lin": lin, "quad": jnp.sum(z * z) + jnp.prod(p["b"])}

    return params, fn


@pytest.mark.parametrize("case", [_mlp, _cnn, _chunked_objective, _rules])
def test_equals_vmap_and_its_gradient(case):
    params, fn = case()
    keys = jax.random.split(jax.random.key(2), 2)
    directions = [jax.tree.map(lambda a, k=k: jax.random.normal(k, jnp.shape(a)) if jnp.issubdtype(
        jnp.result_type(a), jnp.floating) else jnp.zeros_like(a), params) for k in keys]
    coords = jax.random.normal(jax.random.key(3), (5, 2))

    def direct(p, c):
        def move(a, u, v):
            return a + c[0] * u + c[1] * v if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

        return fn(jax.tree.map(move, p, *directions))

    want = jax.vmap(direct, in_axes=(None, 0))(params, coords)
    got = jax.jit(lambda p, c: affine_vmap(fn, p, directions, c))(params, coords)
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)
    if case not in (_mlp, _rules):  # gradients: two cases cover every rule (compile time)
        return

    def total(p, map_fn):
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(map_fn(p)))

    floats = {k: v for k, v in params.items() if k != "n"} if isinstance(params, dict) else params
    rest = {"n": params["n"]} if isinstance(params, dict) else {}

    def full(f):
        return {**f, **rest} if isinstance(params, dict) else f

    g_want = jax.grad(lambda f: total(full(f), lambda p: jax.vmap(direct, in_axes=(None, 0))(p, coords)))(floats)
    g_got = jax.jit(jax.grad(lambda f: total(full(f), lambda p: affine_vmap(fn, p, directions, coords))))(floats)
    chex.assert_trees_all_close(g_got, g_want, rtol=1e-12, atol=1e-12)


def test_affine_work_is_not_batched():
    """The first matmul runs on the base and K coefficients, not on each of B points."""
    params, fn = _mlp()
    directions = [jax.tree.map(jnp.ones_like, params)] * 2
    jaxpr = jax.make_jaxpr(lambda c: affine_vmap(fn, params, directions, c))(jnp.zeros((50, 2)))
    first = next(e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general")
    assert 50 not in first.outvars[0].aval.shape
