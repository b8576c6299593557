"""Optimizers by name against optax itself and against per-leaf formulas; frozen leaves."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import nn, train


def _params(dtype):
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=(3, 2)), dtype), "b": jnp.asarray(rng.normal(size=(4,)), dtype)}


def _grads(params, t):
    """A different, parameter-dependent gradient at every step (so the optimizer state matters)."""
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1.0)) + 0.1 * t, params)


def _run(opt, params, num_steps=3):
    """Updates and params of ``num_steps`` steps, jitted as one program."""

    @jax.jit
    def go(params):
        state = opt.init(params)
        updates = []
        for t in range(num_steps):
            u, state = opt.update(_grads(params, t), state, params)
            params = optax.apply_updates(params, u)
            updates.append(u)
        return updates, params, state

    return go(params)


CASES = [
    ("sgd", {"learning_rate": 0.1}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("adam", {"learning_rate": 0.01, "b1": 0.8, "b2": 0.95}),
    ("adamw", {"learning_rate": 0.01, "weight_decay": 0.3}),
    ("sgd", {"learning_rate": optax.linear_schedule(0.1, 0.01, 3)}),
    # callables that are not schedules: a weight-decay mask (matrices only) and a moment dtype
    ("adamw", {"learning_rate": 0.01, "weight_decay": 0.3, "mask": lambda p: jax.tree.map(lambda x: x.ndim > 1, p)}),
    ("adam", {"learning_rate": 0.01, "mu_dtype": jnp.float32}),
]


@pytest.mark.float64
@pytest.mark.parametrize("name, hp", CASES, ids=["sgd", "nesterov", "adam", "adamw", "schedule", "mask", "mu_dtype"])
def test_optimizer_equals_optax(name, hp):
    params = _params(jnp.float64)
    want_updates, want_params, _ = _run(getattr(optax, name)(**hp), params)
    got_updates, got_params, state = _run(train.optimizer(name, **hp), params)
    rtol = 1e-6 if "mu_dtype" in hp else 1e-13  # first moment kept in float32: rounding differs
    for got, want in zip(got_updates, want_updates):
        chex.assert_trees_all_close(got, want, rtol=rtol, atol=1e-15)
    chex.assert_trees_all_close(got_params, want_params, rtol=rtol, atol=0)
    if not callable(hp["learning_rate"]):
        assert state.hyperparams["learning_rate"].dtype == jnp.float64


def test_hyperparams_live_in_the_state():
    params = _params(jnp.float32)
    opt = train.optimizer("adamw", learning_rate=0.03, weight_decay=0.2, b1=0.8)
    state = opt.init(params)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.03, rtol=1e-7)
    np.testing.assert_allclose(state.hyperparams["weight_decay"], 0.2, rtol=1e-7)
    np.testing.assert_allclose(state.hyperparams["b1"], 0.8, rtol=1e-7)
    assert state.hyperparams["learning_rate"].dtype == jnp.float32


def test_learning_rate_is_read_from_the_state():
    """Editing ``hyperparams`` in the state (as a checkpoint or a population does) changes the step."""
    params = _params(jnp.float32)
    g = _grads(params, 0)
    opt = train.optimizer("sgd", learning_rate=0.1)
    state = opt.init(params)
    u1, _ = opt.update(g, state, params)
    state.hyperparams["learning_rate"] = jnp.float32(0.4)
    u4, _ = opt.update(g, state, params)
    chex.assert_trees_all_close(u1, jax.tree.map(lambda gg: -0.1 * gg, g), rtol=1e-6, atol=0)
    chex.assert_trees_all_close(u4, jax.tree.map(lambda gg: -0.4 * gg, g), rtol=1e-6, atol=0)


def test_traced_hyperparameters_under_vmap():
    params = _params(jnp.float32)
    g = _grads(params, 0)
    lrs = jnp.array([0.0, 0.1, 1.0], jnp.float32)

    def update(lr):
        opt = train.optimizer("sgd", learning_rate=lr)
        return opt.update(g, opt.init(params), params)[0]

    updates = jax.jit(jax.vmap(update))(lrs)
    for i, lr in enumerate([0.0, 0.1, 1.0]):
        chex.assert_trees_all_close(jax.tree.map(lambda u: u[i], updates), jax.tree.map(lambda gg: -lr * gg, g),
                                    rtol=1e-6, atol=0)


@pytest.mark.parametrize("name, match", [
    ("adamm", r"unknown name 'adamm' \(did you mean 'adam'\?\)"),
    ("SGD", r"unknown name 'SGD'"),
    ("nonsense_optimizer", r"unknown name 'nonsense_optimizer'; expected an optax optimizer"),
    ("chain", r"unknown name 'chain'"),  # an optax function, but not an optimizer
])
def test_unknown_optimizer(name, match):
    with pytest.raises(ValueError, match=match):
        train.optimizer(name, learning_rate=0.1)


@pytest.mark.parametrize("name, kw, match", [
    ("sgd", {"learning_rte": 0.1},
     r"optimizer 'sgd': unknown argument 'learning_rte' \(did you mean 'learning_rate'\?\)"),
    ("adamw", {"learning_rate": 0.1, "weight_decy": 0.1},
     r"unknown argument 'weight_decy' \(did you mean 'weight_decay'\?\)"),
    ("adam", {"learning_rate": 0.1, "zzz": 1.0}, r"unknown argument 'zzz'; accepted: \["),
])
def test_unknown_argument(name, kw, match):
    with pytest.raises(ValueError, match=match):
        train.optimizer(name, **kw)


def test_no_hint_when_nothing_is_close():
    with pytest.raises(ValueError) as info:
        train.optimizer("qqqqqq", learning_rate=0.1)
    assert "did you mean" not in str(info.value)


# -- per-leaf learning-rate multipliers -----------------------------------------------------


def test_scale_by_multipliers_gives_per_leaf_sgd():
    lr = 0.1
    params = _params(jnp.float32)
    mults = {"w": 3.0, "b": 0.25}
    opt = optax.chain(optax.sgd(lr), train.scale_by_multipliers(mults))
    updates, params_after, _ = _run(opt, params, num_steps=2)
    for t, u in enumerate(updates):
        # params change between steps, so compute each step's gradient at the right params
        p = params if t == 0 else optax.apply_updates(params, updates[0])
        g = _grads(p, t)
        for k in ("w", "b"):
            np.testing.assert_allclose(u[k], -lr * mults[k] * np.asarray(g[k]), rtol=1e-6, atol=1e-7)
            assert u[k].dtype == jnp.float32


def test_scale_by_multipliers_with_mup_model():
    lr = 0.05
    spec = jax.ShapeDtypeStruct((1, 5), jnp.float32)
    model = nn.mlp([4], 2, parameterization="mup")
    mults = model.lr_multipliers(spec, "sgd")
    params, _ = jax.eval_shape(model.init, jax.random.key(0), spec)
    grads = jax.tree.map(lambda p: jnp.full(p.shape, 2.0, p.dtype), params)
    params = grads  # sgd ignores the params; only the structure matters
    opt = optax.chain(optax.sgd(lr), train.scale_by_multipliers(mults))
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    # Table 3 of Tensor Programs V (SGD): input W and biases ×fan_out, output W ×1/fan_in
    expected = ({"W": 4.0, "b": 4.0}, (), {"W": 1 / 4, "b": 2.0})
    for layer_u, layer_m in zip(updates, expected):
        for k, m in dict(layer_m).items():
            np.testing.assert_allclose(layer_u[k], -lr * m * 2.0, rtol=1e-6)


# -- frozen leaves --------------------------------------------------------------------------


@pytest.mark.parametrize("inner", ["adamw", "sgd_momentum"])
def test_freeze_keeps_frozen_leaves_bit_identical(inner):
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
              "fixed": jnp.asarray(rng.normal(size=(5, 7)), jnp.float32),
              "mask": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
    trainable = {"w": True, "fixed": False, "mask": False}
    if inner == "adamw":
        opt = train.optimizer("adamw", learning_rate=0.1, weight_decay=0.5)
    else:
        opt = train.optimizer("sgd", learning_rate=0.1, momentum=0.9)
    updates, final, state = _run(train.freeze(opt, trainable), params, num_steps=3)
    for k in ("fixed", "mask"):
        np.testing.assert_array_equal(final[k], params[k])
        for u in updates:
            np.testing.assert_array_equal(u[k], 0.0)
    assert not np.allclose(final["w"], params["w"])
    # the trainable leaf moves as under the unfrozen optimizer on that leaf alone (its gradient
    # does not depend on the other leaves: see _grads). Not optax.adamw itself: in float32 the
    # injected b2 = float32(0.999) makes 1 - b2 differ from Python's by 1e-5 relative.
    _, want, _ = _run(opt, {"w": params["w"]}, num_steps=3)
    np.testing.assert_allclose(final["w"], want["w"], rtol=1e-6, atol=1e-7)
    # frozen leaves carry no optimizer state
    assert all(np.shape(leaf) != (5, 7) for leaf in jax.tree.leaves(state))


def test_freeze_composes_with_scale_by_multipliers():
    """muP multipliers inside freeze: the multipliers act on trainable leaves, frozen ones stay."""
    lr = 0.1
    params = _params(jnp.float32)
    mults = {"w": 3.0, "b": 0.25}
    opt = train.freeze(optax.chain(optax.sgd(lr), train.scale_by_multipliers(mults)), {"w": True, "b": False})
    updates, final, _ = _run(opt, params, num_steps=1)
    np.testing.assert_allclose(updates[0]["w"], -lr * 3.0 * np.asarray(_grads(params, 0)["w"]), rtol=1e-6)
    np.testing.assert_array_equal(final["b"], params["b"])
