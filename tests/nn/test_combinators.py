"""Combinators (serial, parallel, fanout, fanin_sum, fanin_concat, residual) against manual NumPy
composition; tree structure of params/state; PRNG key routing; jit/vmap/grad through a model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import jaxlearn.nn as nn

F64 = pytest.mark.float64
TOL = dict(rtol=1e-12, atol=1e-12)


def spec(*shape, dtype=jnp.float64):
    return jax.ShapeDtypeStruct(shape, dtype)


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def dense_params(seed, n_in, n_out):
    return {"W": jnp.asarray(normal(seed, n_in, n_out)), "b": jnp.asarray(normal(seed + 1000, n_out))}


def np_dense(p, x):
    return x @ np.asarray(p["W"]) + np.asarray(p["b"])


def jit_apply(model, params, x, state=(), *, train=False, key=None):
    return jax.jit(lambda p, x, s, k: model.apply_with_state(p, x, s, key=k, train=train))(params, x, state, key)


# -- numeric composition (float64) --------------------------------------------------------------


@F64
def test_serial_is_manual_composition_with_state():
    model = nn.serial(nn.Dense(5, b_std=0.1), nn.BatchNorm(momentum=0.8, eps=1e-3), nn.Tanh(), nn.Dense(3, b_std=0.1))
    params, state = model.init(jax.random.key(0), spec(6, 4))
    assert len(params) == 4 and len(state) == 4
    p0, p3 = dense_params(1, 4, 5), dense_params(2, 5, 3)
    scale, offset = normal(3, 5), normal(4, 5)
    params = (p0, {"scale": jnp.asarray(scale), "offset": jnp.asarray(offset)}, (), p3)
    x = normal(5, 6, 4)

    y, new_state = jit_apply(model, params, jnp.asarray(x), state, train=True)
    h = np_dense(p0, x)
    mean, var = h.mean(0), h.var(0)
    want = np_dense(p3, np.tanh((h - mean) / np.sqrt(var + 1e-3) * scale + offset))
    np.testing.assert_allclose(y, want, **TOL)
    assert new_state[0] == () and new_state[2] == () and new_state[3] == ()
    np.testing.assert_allclose(new_state[1]["mean"], 0.2 * mean, **TOL)
    np.testing.assert_allclose(new_state[1]["var"], 0.8 + 0.2 * h.var(0, ddof=1), **TOL)

    y_eval, same_state = jit_apply(model, params, jnp.asarray(x), new_state, train=False)
    rm, rv = np.asarray(new_state[1]["mean"]), np.asarray(new_state[1]["var"])
    want_eval = np_dense(p3, np.tanh((h - rm) / np.sqrt(rv + 1e-3) * scale + offset))
    np.testing.assert_allclose(y_eval, want_eval, **TOL)
    np.testing.assert_array_equal(same_state[1]["mean"], rm)


@F64
def test_parallel_fanout_and_fanins():
    x1, x2 = normal(6, 3, 4), normal(7, 3, 5)
    par = nn.parallel(nn.Dense(2), nn.Tanh())
    params, state = par.init(jax.random.key(0), (spec(3, 4), spec(3, 5)))
    assert state == ((), ()) and params[1] == ()
    p = (dense_params(8, 4, 2), ())
    y1, y2 = jit_apply(par, p, (jnp.asarray(x1), jnp.asarray(x2)))[0]
    np.testing.assert_allclose(y1, np_dense(p[0], x1), **TOL)
    np.testing.assert_allclose(y2, np.tanh(x2), **TOL)

    outs = nn.fanout(3).apply((), jnp.asarray(x1))
    assert isinstance(outs, tuple) and len(outs) == 3
    for o in outs:
        np.testing.assert_array_equal(o, x1)

    a, b, c = normal(9, 2, 3, 4), normal(10, 2, 3, 4), normal(11, 2, 3, 4)
    xs = tuple(jnp.asarray(v) for v in (a, b, c))
    np.testing.assert_allclose(nn.fanin_sum().apply((), xs), a + b + c, **TOL)
    np.testing.assert_array_equal(nn.fanin_concat().apply((), xs), np.concatenate([a, b, c], axis=-1))
    d = normal(12, 2, 5, 4)
    np.testing.assert_array_equal(nn.fanin_concat(axis=1).apply((), (xs[0], jnp.asarray(d))),
                                  np.concatenate([a, d], axis=1))


@F64
def test_residual_identity_and_projection_shortcut():
    x = normal(13, 4, 3)
    res = nn.residual(nn.Dense(3), nn.Sin())
    params, _ = res.init(jax.random.key(0), spec(4, 3))
    # serial(fanout, parallel(serial(branch...), shortcut), sum)
    assert len(params) == 3 and params[0] == () and params[2] == ()
    branch = dense_params(14, 3, 3)
    params = ((), ((branch, ()), ()), ())
    np.testing.assert_allclose(jit_apply(res, params, jnp.asarray(x))[0], np.sin(np_dense(branch, x)) + x, **TOL)

    proj = nn.residual(nn.Dense(5), nn.Tanh(), shortcut=nn.Dense(5, b_std=None))
    params, _ = proj.init(jax.random.key(1), spec(4, 3))
    branch, short = dense_params(15, 3, 5), {"W": jnp.asarray(normal(16, 3, 5))}
    params = ((), ((branch, ()), short), ())
    want = np.tanh(np_dense(branch, x)) + x @ np.asarray(short["W"])
    np.testing.assert_allclose(jit_apply(proj, params, jnp.asarray(x))[0], want, **TOL)


@F64
def test_nested_combinators():
    model = nn.serial(
        nn.fanout(2),
        nn.parallel(nn.serial(nn.Dense(4), nn.Relu()), nn.residual(nn.Dense(3), nn.Erf(), nn.Dense(3))),
        nn.fanin_concat(),
        nn.Dense(2),
    )
    x = normal(17, 5, 3)
    params, _ = model.init(jax.random.key(0), spec(5, 3))
    assert model.output_spec(spec(5, 3)).shape == (5, 2)
    a, r1, r2, out = dense_params(18, 3, 4), dense_params(19, 3, 3), dense_params(20, 3, 3), dense_params(21, 7, 2)
    params = ((), ((a, ()), ((), ((r1, (), r2), ()), ())), (), out)
    left = np.maximum(np_dense(a, x), 0)
    right = np_dense(r2, erf(np_dense(r1, x))) + x
    want = np_dense(out, np.concatenate([left, right], axis=-1))
    np.testing.assert_allclose(jit_apply(model, params, jnp.asarray(x))[0], want, **TOL)


# -- structure -------------------------------------------------------------------------------


def test_params_and_state_tree_structure(key):
    model = nn.serial(
        nn.Dense(4),
        nn.BatchNorm(),
        nn.residual(nn.Dense(4, b_std=None), nn.Relu()),
        nn.serial(nn.fanout(2), nn.parallel(nn.Identity(), nn.Dense(2)), nn.fanin_concat()),
    )
    params, state = jax.eval_shape(lambda k: model.init(k, spec(3, 5, dtype=jnp.float32)), key)
    dense, dense_nb, bn = {"W": 0, "b": 0}, {"W": 0}, {"scale": 0, "offset": 0}
    want_params = (dense, bn, ((), ((dense_nb, ()), ()), ()), ((), ((), dense), ()))
    want_state = ((), {"mean": 0, "var": 0}, ((), (((), ()), ()), ()), ((), ((), ()), ()))
    assert jax.tree.structure(params) == jax.tree.structure(want_params)
    assert jax.tree.structure(state) == jax.tree.structure(want_state)
    assert isinstance(params, tuple) and isinstance(params[2][1], tuple)
    assert params[0]["W"].shape == (5, 4) and params[3][1][1]["W"].shape == (4, 2)
    # lr multipliers follow the params tree exactly
    lrs = model.lr_multipliers(spec(3, 5, dtype=jnp.float32))
    assert jax.tree.structure(lrs) == jax.tree.structure(params)


# -- PRNG keys ---------------------------------------------------------------------------------


def test_serial_dropouts_get_different_keys(key):
    # ones -> Dropout -> +1 -> Dropout with keep 1/2: output 0 (2nd dropped), 2 (1st dropped), 6 (both kept),
    # so both masks can be read off one output.
    model = nn.serial(nn.Dropout(0.5), nn.Elementwise(lambda x: x + 1.0, "plus1"), nn.Dropout(0.5))
    x = jnp.ones((4000,), jnp.float32)
    y = np.asarray(model.apply((), x, key=key, train=True))
    assert set(np.unique(y).tolist()) <= {0.0, 2.0, 6.0}
    second_kept = y != 0
    first_kept = y == 6
    assert abs(second_kept.mean() - 0.5) < 0.05
    # with the same key in both layers the masks would coincide (no 2s); independent: P(2) = 1/4
    assert abs((y == 2).mean() - 0.25) < 0.04
    assert abs(first_kept[second_kept].mean() - 0.5) < 0.05
    np.testing.assert_array_equal(model.apply((), x, key=key, train=True), y)
    y_other = np.asarray(model.apply((), x, key=jax.random.fold_in(key, 7), train=True))
    assert np.mean(y_other != y) > 0.3
    np.testing.assert_array_equal(model.apply((), x, train=False), x + 1.0)


def test_parallel_branches_get_different_keys(key):
    model = nn.serial(nn.fanout(2), nn.parallel(nn.Dropout(0.5), nn.Dropout(0.5)))
    a, b = model.apply((), jnp.ones((4000,), jnp.float32), key=key, train=True)
    agree = np.mean((np.asarray(a) == 0) == (np.asarray(b) == 0))
    assert 0.45 < agree < 0.55


# -- transformations ---------------------------------------------------------------------------


def conv_model():
    return nn.serial(
        nn.Conv(3, (3, 3), padding="SAME", b_std=0.1),
        nn.Gelu(),
        nn.AvgPool((2, 2)),
        nn.Flatten(),
        nn.Dense(4, b_std=0.1),
    )


def random_params(model, in_spec, seed=0):
    """Params of the right tree/shape drawn with NumPy (no PRNG program to compile)."""
    shapes, _ = jax.eval_shape(lambda k: model.init(k, in_spec), jax.random.key(0))
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(treedef, [jnp.asarray(rng.standard_normal(a.shape) * 0.5, a.dtype) for a in leaves])


def test_jit_vmap_grad_through_composed_model():
    model = conv_model()
    in_spec = spec(2, 6, 6, 1, dtype=jnp.float32)
    params = random_params(model, in_spec)
    xs = jnp.asarray(normal(22, 3, 2, 6, 6, 1), jnp.float32)  # 3 batches of 2 examples

    ys = jax.jit(jax.vmap(lambda x: model.apply(params, x)))(xs)
    assert ys.shape == (3, 2, 4)
    apply = jax.jit(model.apply)
    for i in range(3):
        np.testing.assert_allclose(ys[i], apply(params, xs[i]), rtol=2e-5, atol=1e-6)

    def loss(p, x):
        return jnp.sum(model.apply(p, x) ** 2)

    g = jax.jit(jax.grad(loss))(params, xs[0])
    assert jax.tree.structure(g) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(leaf)) and np.any(leaf != 0) for leaf in jax.tree.leaves(g))
    # reverse mode agrees with forward mode along a random direction
    v = random_params(model, in_spec, seed=1)
    _, dl = jax.jit(lambda p, v: jax.jvp(lambda q: loss(q, xs[0]), (p,), (v,)))(params, v)
    gv = sum(np.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(v)))
    np.testing.assert_allclose(gv, dl, rtol=1e-4)
    # grad with respect to the input, batched over examples
    gx = jax.jit(jax.vmap(jax.grad(lambda x: loss(params, x[None]))))(xs[0])
    assert gx.shape == xs[0].shape and np.all(np.isfinite(gx))


def test_vmap_init_over_keys_gives_distinct_members(key):
    model = nn.serial(nn.Dense(8, b_std=None), nn.Tanh(), nn.Dense(8, b_std=None))
    in_spec = spec(2, 8, dtype=jnp.float32)
    init = jax.jit(lambda k: model.init(k, in_spec)[0])
    keys = jax.random.split(key, 8)
    pop = jax.jit(jax.vmap(init))(keys)
    assert all(leaf.shape == (8, 8, 8) for leaf in jax.tree.leaves(pop))
    for W in (pop[0]["W"], pop[2]["W"]):
        flat = np.asarray(W).reshape(8, -1)
        for i in range(8):
            for j in range(i + 1, 8):
                assert not np.allclose(flat[i], flat[j])
    # the two (same-shaped) layers of one member draw independently
    assert not np.allclose(pop[0]["W"][3], pop[2]["W"][3])
    # member 5 is exactly what a separate init with keys[5] draws (it does not depend on the group)
    single = init(keys[5])
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[5], pop), single, rtol=1e-6, atol=1e-7)
    # and the population applies in one program
    x = jnp.asarray(normal(23, 2, 8), jnp.float32)
    ys = jax.jit(jax.vmap(lambda p: model.apply(p, x)))(pop)
    assert ys.shape == (8, 2, 8) and not np.allclose(ys[0], ys[1])


def test_combinators_expose_their_children():
    """``Layer.children``: what serial/parallel were built from, in order; leaves have none."""
    a, b = nn.Dense(3), nn.Relu()
    assert nn.serial(a, b).children == (a, b)
    assert nn.parallel(b, a).children == (b, a)
    assert a.children == () and nn.serial(nn.serial(a), b).children[0].children == (a,)
