"""One training step against closed forms: SGD and heavy-ball on a linear model, the pluggable
gradient estimator, BatchNorm statistics and per-step dropout keys (float64).

Steps are jitted with the learning rate (and momentum) as traced arguments, so one compilation
serves every value a test tries.
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import nn, train

pytestmark = pytest.mark.float64

N, D, C = 6, 4, 3
SPEC = jax.ShapeDtypeStruct((1, D), np.float64)
LINEAR = nn.Dense(C, b_std=None)


def _batch(seed, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)) * scale + shift, rng.normal(size=(N, C))


def _mse_grad(W, batch):
    """d/dW ½·mean_{n,c}(XW - Y)² = Xᵀ(XW - Y)/(N·C) for the bias-free linear model."""
    X, Y = batch
    return X.T @ (X @ W - Y) / Y.size


def _half_mse(out, Y):
    return 0.5 * np.mean((np.asarray(out) - Y) ** 2)


def _key_bytes(key):
    return np.asarray(jax.random.key_data(key)).tobytes()


@functools.cache
def _init(model, optimizer):
    return jax.jit(lambda key: train.init(model, optimizer, key, SPEC))


def _linear_state(seed=0, momentum=False):
    """A TrainState of the linear model built from NumPy weights (no init to compile)."""
    params = {"W": jnp.asarray(np.random.default_rng(seed).normal(size=(D, C)) / np.sqrt(D))}
    # the optimizer state does not depend on the learning rate or momentum value
    opt_state = optax.sgd(1.0, momentum=0.5 if momentum else None).init(params)
    return train.TrainState(params, opt_state, (), jnp.zeros((), jnp.int32), jax.random.key(seed))


def _metrics(out, y):
    return {"mean_out": jnp.mean(out), "mae": jnp.mean(jnp.abs(out - y))}


@functools.cache
def _sgd_step(grad_estimator=train.backprop):
    """``step(state, batch, lr)`` with ``optax.sgd(lr)`` on the linear model."""

    def step(state, batch, lr):
        opt = optax.sgd(lr)
        fn = train.make_step(LINEAR.apply_with_state, train.mse, opt, grad_estimator=grad_estimator,
                             metrics_fn=_metrics)
        return fn(state, batch)

    return jax.jit(step)


@jax.jit
def _heavy_ball_step(state, batch, lr, beta):
    return train.make_step(LINEAR.apply_with_state, train.mse, optax.sgd(lr, momentum=beta))(state, batch)


@pytest.mark.parametrize("lr", [0.05, 0.5])
def test_sgd_step_is_closed_form(lr):
    state = _linear_state()
    W = np.asarray(state.params["W"])
    batch = _batch(0)
    new, metrics = _sgd_step()(state, batch, lr)
    np.testing.assert_allclose(new.params["W"], W - lr * _mse_grad(W, batch), rtol=1e-12, atol=1e-14)
    # metrics are those of the batch *before* the update
    X, Y = batch
    np.testing.assert_allclose(metrics["loss"], _half_mse(X @ W, Y), rtol=1e-12)
    np.testing.assert_allclose(metrics["mean_out"], np.mean(X @ W), rtol=1e-12)
    np.testing.assert_allclose(metrics["mae"], np.mean(np.abs(X @ W - Y)), rtol=1e-12)
    assert set(metrics) == {"loss", "mean_out", "mae"}
    assert int(new.step) == 1 and new.step.dtype == jnp.int32
    assert _key_bytes(new.key) == _key_bytes(state.key)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_momentum_two_steps_are_heavy_ball(beta):
    lr = 0.1
    s0 = _linear_state(momentum=True)
    b0, b1 = _batch(0), _batch(1)
    s1, _ = _heavy_ball_step(s0, b0, lr, beta)
    s2, m1 = _heavy_ball_step(s1, b1, lr, beta)
    # heavy ball: v₁ = g₀, W₁ = W₀ - lr·v₁;  v₂ = β·v₁ + g₁, W₂ = W₁ - lr·v₂
    W0 = np.asarray(s0.params["W"])
    v1 = _mse_grad(W0, b0)
    W1 = W0 - lr * v1
    v2 = beta * v1 + _mse_grad(W1, b1)
    W2 = W1 - lr * v2
    np.testing.assert_allclose(s1.params["W"], W1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s2.params["W"], W2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m1["loss"], _half_mse(b1[0] @ W1, b1[1]), rtol=1e-12)
    assert int(s2.step) == 2


# -- the pluggable gradient estimator ---------------------------------------------------------


def doubled_backprop(objective, params, key):
    (loss, aux), grads = train.backprop(objective, params, key)
    return (loss, aux), jax.tree.map(lambda g: 2 * g, grads)


def zero_grads(objective, params, key):
    loss, aux = objective(params)
    return (loss, aux), jax.tree.map(jnp.zeros_like, params)


def random_grads(objective, params, key):
    """Gradient noise drawn from the estimator's key; the key is reported through the metrics."""
    loss, (model_state, metrics) = objective(params)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    grads = treedef.unflatten([jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)])
    return (loss, (model_state, {**metrics, "key": jax.random.key_data(key)})), grads


def test_estimator_doubling_grads_equals_doubling_lr():
    lr = 0.07
    a = b = s0 = _linear_state()
    for seed in range(3):
        a, ma = _sgd_step(doubled_backprop)(a, _batch(seed), lr)
        b, mb = _sgd_step()(b, _batch(seed), 2 * lr)
        np.testing.assert_allclose(a.params["W"], b.params["W"], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-12)
    # and it is not plain SGD at lr: the estimator really replaced backprop
    plain, _ = _sgd_step()(s0, _batch(0), lr)
    doubled, _ = _sgd_step(doubled_backprop)(s0, _batch(0), lr)
    assert not np.allclose(plain.params["W"], doubled.params["W"])


def test_estimator_zero_grads_leaves_params_unchanged():
    s0 = _linear_state()
    s, metrics = _sgd_step(zero_grads)(s0, _batch(0), 0.5)
    s, _ = _sgd_step(zero_grads)(s, _batch(1), 0.5)
    np.testing.assert_array_equal(s.params["W"], s0.params["W"])
    assert int(s.step) == 2
    X, Y = _batch(0)
    np.testing.assert_allclose(metrics["loss"], _half_mse(X @ np.asarray(s0.params["W"]), Y), rtol=1e-12)


def test_estimator_gets_a_fresh_key_each_step():
    lr = 0.1
    step = functools.partial(_sgd_step(random_grads), lr=lr)
    s0 = _linear_state()
    batch = _batch(0)
    s1, m0 = step(s0, batch)
    s2, m1 = step(s1, batch)
    d0 = np.asarray(s1.params["W"]) - np.asarray(s0.params["W"])
    d1 = np.asarray(s2.params["W"]) - np.asarray(s1.params["W"])
    assert not np.array_equal(m0["key"], m1["key"])
    assert not np.allclose(d0, d1)
    # same state (same key and step) → same key and update, even on another batch
    again, m0_again = step(s0, _batch(5))
    np.testing.assert_array_equal(m0_again["key"], m0["key"])
    np.testing.assert_array_equal(again.params["W"], s1.params["W"])
    # another member seed → another key at the same step
    _, m_other = step(s0._replace(key=jax.random.key(99)), batch)
    assert not np.array_equal(m_other["key"], m0["key"])
    # the key is a function of the step counter, not of how the state was reached
    _, m_jump = step(s0._replace(step=jnp.int32(1)), _batch(3))
    np.testing.assert_array_equal(m_jump["key"], m1["key"])
    # it is the first of train.step_keys(state) (documented convention)
    assert _key_bytes(jax.jit(train.step_keys)(s1)[0]) == np.asarray(m1["key"]).tobytes()


# -- model state and model randomness ---------------------------------------------------------

BN_MOMENTUM = 0.8
BN_MODEL = nn.serial(nn.BatchNorm(momentum=BN_MOMENTUM), nn.Dense(C, b_std=None))


def test_batchnorm_running_statistics_and_batch_normalisation():
    opt = optax.sgd(0.1)
    state = _init(BN_MODEL, opt)(jax.random.key(0))
    assert set(state.params[1]) == {"W"} and state.model_state[1] == ()
    step = jax.jit(train.make_step(BN_MODEL.apply_with_state, train.mse, opt))
    mean, var = np.zeros(D), np.ones(D)
    for seed in range(3):
        # batch statistics far from the initial running (0, 1)
        X, Y = _batch(seed, scale=np.arange(1.0, D + 1), shift=3.0)
        gamma, beta = (np.asarray(state.params[0][k]) for k in ("scale", "offset"))
        W = np.asarray(state.params[1]["W"])
        state, metrics = step(state, (X, Y))
        mean = BN_MOMENTUM * mean + (1 - BN_MOMENTUM) * X.mean(axis=0)
        var = BN_MOMENTUM * var + (1 - BN_MOMENTUM) * X.var(axis=0, ddof=1)  # unbiased into the running var
        np.testing.assert_allclose(state.model_state[0]["mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(state.model_state[0]["var"], var, rtol=1e-12)
        # training mode normalises with the batch's own (biased) statistics
        xhat = (X - X.mean(0)) / np.sqrt(X.var(0) + 1e-5)
        np.testing.assert_allclose(metrics["loss"], _half_mse((xhat * gamma + beta) @ W, Y), rtol=1e-12)
    assert int(state.step) == 3


DROPOUT_MODEL = nn.serial(nn.Dense(16), nn.Dropout(0.5), nn.Dense(C))


def test_dropout_gets_a_per_step_key():
    opt = optax.sgd(0.0)  # params never move: the loss changes only through the dropout mask
    rng = np.random.default_rng(1)
    params = ({"W": jnp.asarray(rng.normal(size=(D, 16)) / 2), "b": jnp.asarray(rng.normal(size=16))}, (),
              {"W": jnp.asarray(rng.normal(size=(16, C)) / 4), "b": jnp.zeros(C)})
    state0 = train.TrainState(params, opt.init(params), ((), (), ()), jnp.zeros((), jnp.int32), jax.random.key(1))
    step = jax.jit(train.make_step(DROPOUT_MODEL.apply_with_state, train.mse, opt))
    batch = _batch(0)

    def run(state, n):
        losses = []
        for _ in range(n):
            state, m = step(state, batch)
            losses.append(float(m["loss"]))
        return state, losses

    final, losses = run(state0, 4)
    assert len(set(losses)) == 4, losses
    _, again = run(state0, 4)
    assert again == losses  # reproducible from the same state
    _, other_seed = run(state0._replace(key=jax.random.key(2)), 4)
    assert other_seed != losses
    chex.assert_trees_all_equal(final.params, state0.params)

    # the model key is the second of train.step_keys(state) (documented convention)
    X, Y = batch

    @jax.jit
    def forward(state):
        key = train.step_keys(state)[1]
        dropped = DROPOUT_MODEL.apply(state.params, X, state.model_state, key=key, train=True)
        return dropped, DROPOUT_MODEL.apply(state.params, X, state.model_state)

    for t in range(2):
        dropped, clean = forward(state0._replace(step=jnp.int32(t)))
        np.testing.assert_allclose(losses[t], _half_mse(dropped, Y), rtol=1e-12)
    # in eval mode the network is deterministic, and differs from every dropped-out pass
    assert _half_mse(clean, Y) not in losses


def test_step_data_and_base_keys_are_distinct():
    state = _linear_state()

    @jax.jit
    def keys(state):
        per_step = [train.step_keys(state._replace(step=jnp.int32(t))) for t in range(3)]
        flat = [k for pair in per_step for k in pair] + [train.data_key(state), state.key]
        later_data = train.data_key(state._replace(step=jnp.int32(7)))
        return jnp.stack([jax.random.key_data(k) for k in flat]), jax.random.key_data(later_data)

    all_keys, later_data = (np.asarray(a) for a in keys(state))
    assert len({row.tobytes() for row in all_keys}) == len(all_keys)
    # the data key does not depend on the step (batches do, through batch_fn's step argument)
    np.testing.assert_array_equal(later_data, all_keys[-2])
