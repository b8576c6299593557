"""Synthetic gradients: updates against hand-computed vjps, backprop with a perfect predictor, and the
predictor's convergence to the true activity gradient on a linear network."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import nn, rules, train
from jaxlearn.rules.synthetic import synthetic_gradients, synthetic_serial

N, D, H, K = 6, 5, 8, 3


def _data(dtype):
    rng = np.random.default_rng(1)
    return rng.normal(size=(N, D)).astype(dtype), rng.normal(size=(N, K)).astype(dtype)


def _layers():
    return [nn.serial(nn.Dense(H, b_std=0.1), nn.Tanh()), nn.serial(nn.Dense(H, b_std=0.1), nn.Tanh()),
            nn.Dense(K, b_std=0.1)]


def _linear_predictor(phi, h):
    return h @ phi["W"] + phi["b"]


@functools.lru_cache(maxsize=None)
def _estimator_jit(model, target, scale):
    objective = train.make_objective(model.apply_with_state, train.mse)
    estimator = synthetic_gradients(target, scale)
    return jax.jit(lambda p, x, y: estimator(lambda q: objective(q, (), (x, y), None), p, None))


def _estimate(model, params, x, y, target, scale):
    return _estimator_jit(model, target, scale)(params, x, y)


def _hidden(layers, theta, x):
    """h_1, …, h_{L-1} of the plain network."""
    hs = [x]
    for layer, p in zip(layers[:-1], theta[:-1]):
        hs.append(layer.apply(p, hs[-1]))
    return hs[1:]


def _true_activity_grads(layers, theta, x, y):
    """∂L/∂h_l by jax.grad of the rest of the network, one block boundary at a time."""
    hs = _hidden(layers, theta, x)

    def rest(h, l):
        for layer, p in zip(layers[l + 1:], theta[l + 1:]):
            h = layer.apply(p, h)
        return train.mse(h, y)

    return [jax.grad(rest)(h, l) for l, h in enumerate(hs)]


@functools.lru_cache(maxsize=None)
def _init_jit(model):
    return jax.jit(model.init, static_argnums=1)


def _init(model, seed, dtype):
    """Params from one compiled init per model (the seed is traced)."""
    return _init_jit(model)(jax.random.key(seed), jax.ShapeDtypeStruct((1, D), dtype))[0]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _reference(layers, target, s, params, x, y):
    """Ground truth, block by block: jax.vjp of each block alone with cotangent M_l(h_l)/s, the output
    layer's true gradient, and jax.grad of ½‖M_l(h_l) − t_l‖²/R with t_l = s·∂L/∂h_l (``true``) or the
    bootstrap (∂h_{l+1}/∂h_l)ᵀ M_{l+1}(h_{l+1}); plus the raw pieces for hand checks."""
    theta, phi = params["layers"], params["predictors"]
    hs = _hidden(layers, theta, x)
    ms = [_linear_predictor(p, h) for p, h in zip(phi, hs)]
    ins = [x] + hs
    want_layers = [jax.vjp(lambda p, l=l: layers[l].apply(p, ins[l]), theta[l])[1](ms[l] / s)[0] for l in range(2)]
    want_layers.append(jax.grad(lambda p: train.mse(layers[2].apply(p, hs[1]), y))(theta[2]))
    true = _true_activity_grads(layers, theta, x, y)
    targets = [s * true[0] if target == "true" else jax.vjp(lambda h: layers[1].apply(theta[1], h), hs[0])[1](ms[1])[0],
               s * true[1]]
    want_pred = [jax.grad(lambda p, l=l: 0.5 * jnp.sum((_linear_predictor(p, hs[l]) - targets[l]) ** 2) / N)(phi[l])
                 for l in range(2)]
    backprop = jax.grad(lambda p: train.mse(nn.serial(*layers).apply(p, x), y))(theta)
    return {"layers": tuple(want_layers), "predictors": tuple(want_pred)}, hs, ms, targets, true, backprop


LAYERS = tuple(_layers())
MODEL, SERIAL = synthetic_serial(*LAYERS), nn.serial(*LAYERS)


@pytest.mark.float64
@pytest.mark.parametrize("target", ["bootstrap", "true"])
def test_updates_are_block_vjps_and_predictor_regressions(target):
    x, y = _data(np.float64)
    s, model = 2.5, MODEL
    params = _init(model, 0, jnp.float64)
    chex.assert_trees_all_equal(params["layers"], _init(SERIAL, 0, jnp.float64))
    assert all(np.all(a == 0) for a in jax.tree.leaves(params["predictors"]))  # zero-initialised output
    rng = np.random.default_rng(7)
    params["predictors"] = jax.tree.map(lambda a: 0.3 * rng.normal(size=a.shape), params["predictors"])
    (loss, (_, metrics)), got = _estimate(model, params, x, y, target, s)
    want, hs, ms, targets, _, _ = _reference(LAYERS, target, s, params, x, y)
    tol = dict(rtol=1e-12, atol=1e-15)
    close = functools.partial(np.testing.assert_allclose, **tol)
    chex.assert_trees_all_close(got, want, **tol)
    # a linear predictor's regression gradient by hand: hᵀ(m − t)/R, Σ(m − t)/R
    close(got["predictors"][1]["W"], np.asarray(hs[1]).T @ (ms[1] - targets[1]) / N)
    close(got["predictors"][1]["b"], np.sum(ms[1] - targets[1], 0) / N)
    np.testing.assert_allclose(loss, train.mse(nn.serial(*LAYERS).apply(params["layers"], x), y), rtol=1e-14)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-14)


@pytest.mark.float64
@pytest.mark.parametrize("target", ["bootstrap", "true"])
def test_perfect_predictor_gives_backprop(target):
    """N = 6 points in general position in R^8: an affine map interpolates any targets on them, so the
    linear predictor can be solved to return s·∂L/∂h_l exactly; then every update is backprop's and the
    predictor gradients vanish."""
    x, y = _data(np.float64)
    s, model = float(N), MODEL
    params = _init(model, 3, jnp.float64)
    _, hs, _, _, true, backprop = _reference(LAYERS, target, s, params, x, y)
    perfect = []
    for h, g in zip(hs, true):
        A = np.concatenate([np.asarray(h), np.ones((N, 1))], 1)
        sol = np.linalg.lstsq(A, s * np.asarray(g), rcond=None)[0]
        np.testing.assert_allclose(A @ sol, s * np.asarray(g), atol=1e-13)
        perfect.append({"W": sol[:-1], "b": sol[-1]})
    params = {"layers": params["layers"], "predictors": tuple(perfect)}
    _, got = _estimate(model, params, x, y, target, s)
    chex.assert_trees_all_close(got["layers"], backprop, rtol=1e-9, atol=1e-14)
    zeros = jax.tree.map(np.zeros_like, got["predictors"])
    chex.assert_trees_all_close(got["predictors"], zeros, rtol=1e-7, atol=1e-13)
    # plain params: the network is nn.serial, and backprop leaves the predictors alone
    g = jax.jit(jax.grad(lambda p: train.mse(model.apply(p, x), y)))(params)
    chex.assert_trees_all_close(g["layers"], backprop, rtol=1e-14, atol=1e-16)
    assert all(np.all(a == 0) for a in jax.tree.leaves(g["predictors"]))


@pytest.mark.parametrize("target", ["bootstrap", "true"])
def test_predictor_converges_to_true_gradient_on_a_linear_network(target):
    """Linear blocks (identity activations), MSE, realisable teacher: ∂L/∂h_l is affine in h_l, so the
    zero-initialised linear predictors trained by the estimator (SGD through ``make_step``; blocks held
    fixed by the optimizer so the target stands still) reach it. Whitened inputs and orthogonal blocks
    make the regression's Hessian the identity: the error contracts geometrically."""
    n, d = 16, 4
    layers = [nn.Dense(d, b_std=None), nn.Dense(d, b_std=None), nn.Dense(K, b_std=None)]
    model = synthetic_serial(*layers)
    rng = np.random.default_rng(100)
    x = rng.normal(size=(n, d))
    x = (np.linalg.qr(x - x.mean(0))[0] * np.sqrt(n)).astype(np.float32)
    y = (x @ rng.normal(size=(d, K))).astype(np.float32)
    opt = optax.multi_transform({"fixed": optax.set_to_zero(), "learn": optax.sgd(0.5)},
                                {"layers": "fixed", "predictors": "learn"})
    s = float(n * K)
    step = train.make_step(model.apply_with_state, train.mse, opt, grad_estimator=synthetic_gradients(target, s))
    theta = tuple({"W": np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)} for _ in range(2)) + \
        ({"W": rng.normal(size=(d, K)).astype(np.float32)},)

    @jax.jit
    def run():
        state = train.init(model, opt, jax.random.key(0), jax.ShapeDtypeStruct((1, d), jnp.float32))
        state = state._replace(params={"layers": theta, "predictors": state.params["predictors"]})
        end = jax.lax.fori_loop(0, 60, lambda i, st: step(st, (x, y))[0], state)
        true = _true_activity_grads(layers, theta, x, y)
        errors = [[jnp.linalg.norm(_linear_predictor(p, h) / s - g) / jnp.linalg.norm(g)
                   for p, h, g in zip(st.params["predictors"], _hidden(layers, theta, x), true)] for st in (state, end)]
        return jnp.asarray(errors), end.params["layers"]

    (start, end), layers_after = run()
    np.testing.assert_allclose(start, 1.0)  # M = 0 at init
    assert np.all(end < 1e-4), end
    chex.assert_trees_all_equal(layers_after, theta)


def test_jit_vmap_over_seeds_trains():
    """A jitted step vmapped over two seeds: the loss falls, members differ, hidden blocks learn once
    their predictors do. (Both targets run under jit in the float64 tests.)"""
    x, y = _data(np.float32)
    model = MODEL
    opt = optax.adam(1e-2)
    spec = jax.ShapeDtypeStruct((1, D), jnp.float32)
    step = train.make_step(model.apply_with_state, train.mse, opt, grad_estimator=synthetic_gradients("bootstrap", N))
    start = jax.vmap(lambda k: train.init(model, opt, k, spec))(jax.random.split(jax.random.key(0), 2))
    run = jax.jit(jax.vmap(lambda st: jax.lax.scan(lambda c, _: step(c, (x, y)), st, length=100)))
    end, metrics = run(start)
    losses = metrics["loss"]
    assert np.all(losses[:, -1] < 0.5 * losses[:, 0]), losses[:, [0, -1]]
    assert not np.allclose(losses[0], losses[1])
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), start.params, end.params)
    assert all(jax.tree.leaves(moved))


def test_mlp_predictor_starts_at_zero_and_has_lr_multipliers():
    model = synthetic_serial(*LAYERS, predictor="mlp")
    spec = jax.ShapeDtypeStruct((1, D), jnp.float32)
    params = _init(model, 0, jnp.float32)
    x, y = _data(np.float32)
    assert set(params["predictors"][0]) == {"W1", "b1", "W2", "b2"}
    _, g = _estimate(model, params, x, y, "bootstrap", 1.0)
    for block in g["layers"][:-1]:  # δ̂ = 0 at init: hidden blocks receive nothing
        assert all(np.all(a == 0) for a in jax.tree.leaves(block))
    assert np.any(g["predictors"][1]["W2"] != 0)
    mults = model.lr_multipliers(spec)
    assert jax.tree.structure(mults) == jax.tree.structure(params)


@pytest.mark.parametrize("make, match", [
    (lambda: synthetic_serial(nn.Dense(3)), "at least one hidden block"),
    (lambda: synthetic_serial(nn.Dense(3), "relu"), "argument 1 must be a jaxlearn.nn Layer"),
    (lambda: synthetic_serial(nn.Dense(3), nn.Dense(2), predictor="conv"), "predictor must be one of"),
    (lambda: synthetic_gradients("sampled"), "target must be one of"),
    (lambda: synthetic_gradients(gradient_scale=0.0), "gradient_scale must be a positive number"),
    (lambda: synthetic_gradients(gradient_scale="8"), "gradient_scale must be a positive number"),
])
def test_bad_construction_is_one_line(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def test_wrong_model_errors_name_the_problem():
    """Raised while tracing (abstractly: nothing compiles)."""
    x, y = _data(np.float32)
    spec = jax.ShapeDtypeStruct((1, D), jnp.float32)
    for other in (nn.mlp([4], K), rules.block_mlp([4], K)):
        params = jax.eval_shape(lambda k, m=other: m.init(k, spec)[0], jax.random.key(0))
        objective = train.make_objective(other.apply_with_state, train.mse)
        with pytest.raises(ValueError,
                           match="^synthetic_gradients: the model must be a jaxlearn.rules.synthetic_serial"):
            jax.eval_shape(lambda p: synthetic_gradients()(lambda q: objective(q, (), (x, y), None), p, None), params)
    model = MODEL
    params = jax.eval_shape(lambda k: model.init(k, spec)[0], jax.random.key(0))
    objective = train.make_objective(model.apply_with_state, train.mse)
    with pytest.raises(ValueError, match="^dfa: the model must be a jaxlearn.rules.block_serial"):
        jax.eval_shape(lambda p: rules.dfa()(lambda q: objective(q, (), (x, y), None), p, None), params)
    with pytest.raises(nn.LayerError, match="params must be the dict"):
        jax.eval_shape(lambda p: model.apply(p["layers"], x), params)
