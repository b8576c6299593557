"""Forward-forward against per-layer jax.grad ground truth, a numpy inference loop and Jacobian structure."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, rules, train
from jaxlearn.rules.ff import NEGATIVES, ff_mlp, forward_forward, forward_forward_loss

N, K, THETA = 6, 3, 0.4
TOL = dict(rtol=1e-12, atol=1e-14)
close = functools.partial(np.testing.assert_allclose, **TOL)


def _data(dtype):
    x = np.asarray(jax.random.normal(jax.random.key(1), (N, 2, 2)), dtype)  # flattened to 4 features
    return x, np.arange(N) % K


@functools.cache  # one init (and its compile) shared by the tests
def _setup(skip_first=False):
    model = ff_mlp([5, 4], K, "tanh", b_std=0.3, skip_first=skip_first)
    params, state = model.init(jax.random.key(2), jax.ShapeDtypeStruct((1, 2, 2), jnp.float64))
    x, y = _data(np.float64)
    objective = train.make_objective(model.apply_with_state, forward_forward_loss)

    def closed(q):
        return objective(q, state, (x, y), None)

    return model, params, closed, x, y


def _layer_inputs(params, x, labels, xp=np):
    """Inputs a_{l-1} of every layer for one label per example, written out: [x, e_label], then
    h / √(mean h² + 1e-6) of the previous tanh layer."""
    a = xp.concatenate([xp.reshape(x, (x.shape[0], -1)), xp.eye(K)[labels]], axis=-1)
    inputs = []
    for (dense, _) in params:
        inputs.append(a)
        h = xp.tanh(a @ dense["W"] + dense["b"])
        a = h / xp.sqrt(xp.mean(h ** 2, axis=-1, keepdims=True) + 1e-6)
    return inputs


def _goodness_by_hand(params, x):
    """(layers, N, K): g_{l,c} = mean_j h_j² for every label c, by a loop over labels, in numpy."""
    params = jax.tree.map(np.asarray, params)
    out = np.zeros((len(params), N, K))
    for c in range(K):
        for l, (a, (dense, _)) in enumerate(zip(_layer_inputs(params, x, np.full(N, c)), params)):
            out[l, :, c] = np.mean(np.tanh(a @ dense["W"] + dense["b"]) ** 2, axis=-1)
    return out


@pytest.mark.float64
@pytest.mark.parametrize("skip_first", [False, True])
def test_inference_is_argmax_of_summed_goodness(skip_first):
    model, params, _, x, y = _setup(skip_first)
    G = jax.jit(model.apply)(params, x)
    want = _goodness_by_hand(params, x)[int(skip_first):].sum(0)
    close(G, want)
    np.testing.assert_array_equal(np.argmax(G, -1), np.argmax(want, -1))
    close(train.accuracy(G, y), np.mean(np.argmax(want, -1) == y))


def _negatives(params, x, y, negatives, key):
    """The wrong labels of each example, as a list of (N,) label arrays whose losses are averaged."""
    if negatives == "all":
        return [(y + r) % K for r in range(1, K)]
    if negatives == "random":
        return [(y + np.asarray(jax.random.randint(key, (N,), 1, K))) % K]
    total = _goodness_by_hand(params, x).sum(0)
    total[np.arange(N), y] = -np.inf
    return [np.argmax(total, -1)]


@pytest.mark.float64
@pytest.mark.parametrize("negatives", NEGATIVES)
def test_each_update_is_the_gradient_of_its_layer_loss(negatives):
    """Ground truth per layer l, with its inputs fixed (plain forward passes): jax.grad over θ_l of
    mean_n [softplus(θ - g(a_{l-1}(x, y))) + mean_ȳ softplus(g(a_{l-1}(x, ȳ)) - θ)]."""
    _, params, closed, x, y = _setup()
    key = jax.random.key(9)
    (loss, _), got = jax.jit(lambda p, k: forward_forward(THETA, negatives)(closed, p, k))(params, key)
    wrong = _negatives(params, x, y, negatives, key)

    @jax.jit
    def by_hand(params):
        pos_inputs = _layer_inputs(params, x, y, jnp)
        neg_inputs = [_layer_inputs(params, x, labels, jnp) for labels in wrong]

        def layer_loss(l, p):
            def g(a):
                return jnp.mean(jnp.tanh(a @ p[0]["W"] + p[0]["b"]) ** 2, axis=-1)
            negative = sum(jax.nn.softplus(g(inputs[l]) - THETA) for inputs in neg_inputs) / len(neg_inputs)
            return jnp.mean(jax.nn.softplus(THETA - g(pos_inputs[l])) + negative)

        grads = tuple(jax.grad(functools.partial(layer_loss, l))(params[l]) for l in range(len(params)))
        return grads, sum(layer_loss(l, params[l]) for l in range(len(params)))

    want, want_loss = by_hand(params)
    chex.assert_trees_all_close(got, want, **TOL)
    close(loss, want_loss)


@pytest.mark.float64
def test_no_signal_crosses_layers():
    """The update of layer l has zero Jacobian w.r.t. every other layer's params (its input is
    detached, and nothing flows back from later layers); backprop on the same loss has not."""
    _, params, closed, _, _ = _setup()
    flat, unravel = ravel_pytree(params)
    layer = np.asarray(ravel_pytree(tuple(jax.tree.map(lambda v, l=l: np.full(np.shape(v), l), p)
                                          for l, p in enumerate(params)))[0]).astype(int)

    def jacobian(estimator):
        return np.asarray(jax.jit(jax.jacfwd(lambda f: ravel_pytree(estimator(closed, unravel(f), None)[1])[0]))(flat))

    J = jacobian(forward_forward(THETA, "all"))
    for l in range(len(params)):
        assert np.all(J[np.ix_(layer == l, layer != l)] == 0) and np.any(J[np.ix_(layer == l, layer == l)] != 0)
    assert np.any(jacobian(train.backprop)[np.ix_(layer == 0, layer == 1)] != 0)  # the check can fail


@pytest.mark.float64
def test_loss_takes_labels_or_probabilities():
    scores = np.asarray(jax.random.normal(jax.random.key(0), (N, K)))
    y = np.arange(N) % K
    close(forward_forward_loss(scores, y), -np.mean(scores[np.arange(N), y]))
    close(forward_forward_loss(scores, np.eye(K)[y]), -np.mean(scores[np.arange(N), y]))


def test_training_separates_clusters_and_vmaps_over_seeds():
    """Gaussian clusters: a vmapped population of 2 seeds (init + 40 steps with random negatives
    drawn from each member's key, one jit) matches the same seed run alone, the loss falls and the
    goodness classifies clearly above chance."""
    centers = 2.0 * np.asarray(jax.random.normal(jax.random.key(3), (K, 4)), np.float32)
    y = np.arange(48) % K
    x = centers[y] + 0.5 * np.asarray(jax.random.normal(jax.random.key(4), (48, 4)), np.float32)
    model = ff_mlp([16], K)
    opt = train.optimizer("adam", learning_rate=3e-2)
    step = train.make_step(model.apply_with_state, forward_forward_loss, opt,
                           grad_estimator=forward_forward(1.0, "random"))

    def run(seed):
        state = train.init(model, opt, jax.random.key(seed), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        state, metrics = jax.lax.scan(lambda s, _: step(s, (x, y)), state, None, length=40)
        return metrics["loss"], train.accuracy(model.apply(state.params, x), y)

    losses, accs = jax.jit(jax.vmap(run))(jnp.arange(2))
    np.testing.assert_allclose(losses[1], jax.jit(run)(1)[0], rtol=1e-4, atol=1e-6)
    assert np.all(losses[:, -1] < 0.7 * losses[:, 0]) and np.all(accs > 0.8)  # chance: 1/3


@pytest.mark.parametrize("make, match", [
    (lambda: ff_mlp([], K), "widths must be a non-empty list of positive ints"),
    (lambda: ff_mlp(4, K), "widths must be a non-empty list of positive ints"),
    (lambda: ff_mlp([4], 1), "num_classes must be an int ≥ 2, got 1"),
    (lambda: ff_mlp([4], K, skip_first=True), "skip_first needs at least two layers"),
    (lambda: ff_mlp([4], K, skip_first="yes"), "skip_first must be a bool"),
    (lambda: ff_mlp([4], K).init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.int32)), "floating-point input"),
    (lambda: ff_mlp([4], K).init(jax.random.key(0), jax.ShapeDtypeStruct((4,), jnp.float32)), "with a batch axis"),
])
def test_bad_construction_is_one_line(make, match):
    with pytest.raises(nn.LayerError, match=match) as err:
        make()
    assert "\n" not in str(err.value)


def test_misuse_errors_name_the_problem():
    """Raised before or while tracing (abstractly: nothing compiles)."""
    with pytest.raises(ValueError, match=r"negatives must be one of \['all', 'hardest', 'random'\], got 'worst'"):
        forward_forward(negatives="worst")
    with pytest.raises(TypeError, match="threshold must be a real scalar"):
        forward_forward(threshold="1")
    x, y = np.zeros((N, 4), np.float32), np.arange(N) % K
    spec = jax.ShapeDtypeStruct((1, 4), jnp.float32)
    for other in (nn.mlp([4], K), rules.block_mlp([4], K)):
        objective = train.make_objective(other.apply_with_state, forward_forward_loss)
        params, state = jax.eval_shape(lambda k, m=other: m.init(k, spec), jax.random.key(0))
        with pytest.raises(ValueError, match="^forward_forward: the model must be a jaxlearn.rules.ff_mlp") as err:
            forward_forward()(lambda q: objective(q, state, (x, y), None), params, None)
        assert "\n" not in str(err.value).split("\n-----")[0]
    model = ff_mlp([4], K)
    objective = train.make_objective(model.apply_with_state, forward_forward_loss)
    params = jax.eval_shape(lambda k: model.init(k, spec)[0], jax.random.key(0))
    with pytest.raises(ValueError, match="negatives='random' needs a PRNG key"):
        forward_forward(negatives="random")(lambda q: objective(q, (), (x, y), None), params, None)
    with pytest.raises(ValueError, match=r"targets: expected integer labels of shape \[6\], got \[6, 1\]"):
        forward_forward_loss(jnp.zeros((N, K)), jnp.zeros((N, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"outputs: expected per-label scores \(N, C\)"):
        forward_forward_loss(jnp.zeros((N,)), jnp.zeros((N,), jnp.int32))
