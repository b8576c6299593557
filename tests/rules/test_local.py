"""Local learning with auxiliary heads against per-block jax.grad ground truth and Jacobian structure."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, rules, train
from jaxlearn.rules.local import LocalRequest, local_losses, local_mlp, local_serial

N, D, K = 6, 5, 3
TOL = dict(rtol=1e-12, atol=1e-15)
close = functools.partial(np.testing.assert_allclose, **TOL)


def _data(dtype):
    x = np.asarray(jax.random.normal(jax.random.key(1), (N, D)), dtype)
    return x, np.arange(N) % K


def _parts():
    """Three blocks (two hidden, tanh: smooth, so Jacobians are generic) and two different heads."""
    layers = (nn.serial(nn.Dense(4, b_std=0.3), nn.Tanh()), nn.serial(nn.Dense(3, b_std=0.3), nn.Tanh()),
              nn.Dense(K, b_std=0.3))
    heads = (nn.Dense(K, b_std=0.2), nn.serial(nn.Dense(2), nn.Tanh(), nn.Dense(K)))
    return layers, heads


@functools.cache  # one init (and its compile) shared by the tests
def _setup():
    layers, heads = _parts()
    model = local_serial(*layers, heads=heads)
    params, state = model.init(jax.random.key(2), jax.ShapeDtypeStruct((1, D), jnp.float64))
    x, y = _data(np.float64)
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)

    def closed(q):
        return objective(q, state, (x, y), None)

    return layers, heads, model, params, state, closed, x, y


def _ce(out, y):
    return train.softmax_cross_entropy(out, y)


@pytest.mark.float64
def test_each_update_is_the_gradient_of_its_own_local_loss():
    """Ground truth: for fixed inputs h_{l-1} (a plain forward pass), jax.grad of ℓ(a_l(f_l(h_{l-1})))."""
    layers, heads, _, params, _, closed, x, y = _setup()
    (loss, _), got = jax.jit(lambda p: local_losses()(closed, p, None))(params)

    @jax.jit
    def by_hand(params):
        h, want_blocks, want_heads = jnp.asarray(x), [], []
        for l, layer in enumerate(layers):
            if l < len(heads):
                g_block, g_head = jax.grad(lambda b, a: _ce(heads[l].apply(a, layer.apply(b, h)), y), argnums=(0, 1))(
                    params["blocks"][l], params["heads"][l])
                want_heads.append(g_head)
            else:
                g_block = jax.grad(lambda b: _ce(layer.apply(b, h), y))(params["blocks"][l])
            want_blocks.append(g_block)
            h = layer.apply(params["blocks"][l], h)  # a constant input to the next block's loss
        return {"blocks": tuple(want_blocks), "heads": tuple(want_heads)}, _ce(h, y)

    want, want_loss = by_hand(params)
    chex.assert_trees_all_close(got, want, **TOL)
    close(loss, want_loss)  # the loss of the real output


@pytest.mark.float64
def test_without_detach_it_is_deep_supervision():
    """detach=False: the gradient of Σ_l ℓ(a_l(h_l)) + ℓ(y), written with nn.serial prefixes."""
    layers, heads, _, params, _, closed, x, y = _setup()
    got = jax.jit(lambda p: local_losses(detach=False)(closed, p, None)[1])(params)

    def total(p):
        losses = [_ce(heads[l].apply(p["heads"][l], nn.serial(*layers[:l + 1]).apply(p["blocks"][:l + 1], x)), y)
                  for l in range(len(heads))]
        return sum(losses) + _ce(nn.serial(*layers).apply(p["blocks"], x), y)

    chex.assert_trees_all_close(got, jax.jit(jax.grad(total))(params), **TOL)


@pytest.mark.float64
def test_without_hidden_blocks_local_learning_is_backprop():
    x, y = _data(np.float64)
    model = local_serial(nn.Dense(K, b_std=0.5), heads=())
    params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float64))
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    closed = lambda q: objective(q, state, (x, y), None)  # noqa: E731
    (loss, _), got = jax.jit(lambda p: local_losses()(closed, p, None))(params)
    (want_loss, _), want = jax.jit(lambda p: train.backprop(closed, p, None))(params)
    chex.assert_trees_all_close(got, want, **TOL)
    close(loss, want_loss)


@pytest.mark.float64
def test_plain_params_give_nn_serial_and_unused_heads():
    layers, _, model, params, state, closed, x, y = _setup()
    ref_params, _ = nn.serial(*layers).init(jax.random.key(2), jax.ShapeDtypeStruct((1, D), jnp.float64))
    chex.assert_trees_all_equal(params["blocks"], ref_params)
    np.testing.assert_array_equal(model.apply(params, x, state), nn.serial(*layers).apply(ref_params, x))
    np.testing.assert_array_equal(model.apply(params, x), nn.serial(*layers).apply(ref_params, x))  # state=()
    grads = jax.jit(lambda p: train.backprop(closed, p, None)[1])(params)
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads["heads"]))
    spec, hidden, mup = jax.ShapeDtypeStruct((1, D), jnp.float32), jax.ShapeDtypeStruct((1, 4), jnp.float32), "mup"
    output = nn.Dense(K, parameterization=mup, role="output")
    assert local_mlp([4], K, parameterization=mup).lr_multipliers(spec, "adam") == {
        "blocks": nn.serial(nn.serial(nn.Dense(4, parameterization=mup, role="input"), nn.Relu()),
                            output).lr_multipliers(spec, "adam"),
        "heads": (output.lr_multipliers(hidden, "adam"),)}


def _groups(params):
    """The flat index of every parameter's owner: block l's params and head l's both belong to l;
    and whether it is a head."""
    def label(trees):
        return tuple(jax.tree.map(lambda v, l=l: np.full(np.shape(v), l), t) for l, t in enumerate(trees))

    owner = {"blocks": label(params["blocks"]), "heads": label(params["heads"])}
    is_head = {"blocks": jax.tree.map(lambda v: np.zeros(np.shape(v)), params["blocks"]),
               "heads": jax.tree.map(lambda v: np.ones(np.shape(v)), params["heads"])}
    return np.asarray(ravel_pytree(owner)[0]).astype(int), np.asarray(ravel_pytree(is_head)[0]).astype(bool)


@pytest.mark.float64
def test_no_signal_crosses_block_boundaries():
    """∂(update of block l)/∂(params of any other block or head) = 0 exactly — stop_gradient hides even
    the forward dependence on earlier blocks from jax.jacobian, so only block l and head l remain —
    while backprop's update depends on later blocks (the check can fail)."""
    _, _, _, params, _, closed, _, _ = _setup()
    flat, unravel = ravel_pytree(params)
    owner, _ = _groups(params)

    def jacobian(estimator):
        return np.asarray(jax.jit(jax.jacfwd(lambda f: ravel_pytree(estimator(closed, unravel(f), None)[1])[0]))(flat))

    J = jacobian(local_losses())
    for l in range(len(params["blocks"])):
        rows = owner == l
        assert np.all(J[np.ix_(rows, ~rows)] == 0) and np.any(J[np.ix_(rows, rows)] != 0)
    assert np.any(jacobian(train.backprop)[owner[None, :] > owner[:, None]] != 0)


@pytest.mark.float64
def test_a_local_loss_moves_only_its_own_block_and_head():
    """The gradient of block l's request alone is zero outside block l and head l; without detach
    it reaches the earlier blocks (the check can fail)."""
    _, heads, _, params, _, closed, _, _ = _setup()
    owner, is_head = _groups(params)
    blocks = range(len(params["blocks"]))

    @jax.jit
    def contributions(p):
        return [[ravel_pytree(jax.grad(lambda q: closed(LocalRequest(q, l, detach))[0])(p))[0] for l in blocks]
                for detach in (True, False)]

    detached, deep = contributions(params)
    for l in blocks:
        g = np.asarray(detached[l])
        assert np.all(g[owner != l] == 0) and np.any(g[(owner == l) & ~is_head] != 0)
        assert l == len(heads) or np.any(g[(owner == l) & is_head] != 0)  # the output layer has no head
        assert l == 0 or np.any(np.asarray(deep[l])[owner < l] != 0)


def test_training_decreases_the_loss_and_vmaps_over_seeds():
    """Gaussian clusters; a vmapped population of 2 seeds (init + 30 steps in one jit) matches the
    same seed run alone, and every member's loss falls."""
    centers = 2.0 * np.asarray(jax.random.normal(jax.random.key(3), (K, D)), np.float32)
    y = np.arange(48) % K
    x = centers[y] + 0.5 * np.asarray(jax.random.normal(jax.random.key(4), (48, D)), np.float32)
    model = local_mlp([8], K, "tanh")
    opt = train.optimizer("sgd", learning_rate=0.5)
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, opt, grad_estimator=local_losses())

    def run(seed):
        state = train.init(model, opt, jax.random.key(seed), jax.ShapeDtypeStruct((1, D), jnp.float32))
        state, metrics = jax.lax.scan(lambda s, _: step(s, (x, y)), state, None, length=30)
        return metrics["loss"], train.accuracy(model.apply(state.params, x, state.model_state), y)

    losses, accs = jax.jit(jax.vmap(run))(jnp.arange(2))
    alone = jax.jit(run)(1)
    np.testing.assert_allclose(losses[1], alone[0], rtol=1e-4, atol=1e-6)
    assert np.all(losses[:, -1] < 0.3 * losses[:, 0]) and np.all(accs > 0.9)


@pytest.mark.parametrize("make, match", [
    (lambda: local_serial(nn.Dense(4), nn.Dense(K), heads=()), r"one head per hidden block \(1\), got 0"),
    (lambda: local_serial(nn.Dense(4), nn.Dense(K), heads=nn.Dense(K)), "heads must be a tuple"),
    (lambda: local_serial(nn.Dense(4), nn.Dense(K), heads=("dense",)), r"heads\[0\] must be a jaxlearn.nn Layer"),
    (lambda: local_serial(nn.Dense(4), "relu", heads=(nn.Dense(K),)), "argument 1 must be a jaxlearn.nn Layer"),
    (lambda: local_serial(heads=()), "got no layers"),
    (lambda: local_serial(nn.Dense(4), nn.Dense(K), heads=(nn.Dense(2),)).init(
        jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float32)), r"output shape \[1, 2\] must be .*\[1, 3\]"),
])
def test_bad_construction_is_one_line(make, match):
    with pytest.raises(nn.LayerError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def test_misuse_errors_name_the_problem():
    """Raised before or while tracing (abstractly: nothing compiles)."""
    x, y = _data(np.float32)
    spec = jax.ShapeDtypeStruct((1, D), jnp.float32)
    with pytest.raises(TypeError, match="detach must be a bool"):
        local_losses(detach="yes")
    flat = nn.mlp([4], K)
    objective = train.make_objective(flat.apply_with_state, train.softmax_cross_entropy)
    flat_params = jax.eval_shape(lambda k: flat.init(k, spec)[0], jax.random.key(0))
    with pytest.raises(ValueError, match="^local_losses: params must be those of a jaxlearn.rules.local_serial"):
        local_losses()(lambda q: objective(q, (), (x, y), None), flat_params, None)
    # a LocalRequest reaching a model that is not local_serial (its params merely look like one's)
    dense = nn.Dense(K)
    look_alike = {"blocks": (jax.eval_shape(lambda k: dense.init(k, spec)[0], jax.random.key(0)),), "heads": ()}
    with pytest.raises(ValueError, match="^local_losses: the model must be a jaxlearn.rules.local_serial") as err:
        local_losses()(lambda q: (_ce(dense.apply(q, x), y), None), look_alike, None)
    assert "\n" not in str(err.value).split("\n-----")[0]
    # dfa's request reaching a local_serial network
    model = local_mlp([4], K)
    params, state = jax.eval_shape(lambda k: model.init(k, spec), jax.random.key(0))
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    with pytest.raises(ValueError, match="^dfa: the model must be a jaxlearn.rules.block_serial"):
        jax.eval_shape(lambda p: rules.dfa()(lambda q: objective(q, state, (x, y), None), p, None), params)
