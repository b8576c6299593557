"""The supervised segment against SGD written out in NumPy (a linear model, MSE), and the data-order
seed: its default is the member's own order, another seed changes only the order, and it vmaps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn, train

N, D, K, B = 20, 3, 2, 4


def _data(dtype):
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, D)).astype(dtype), rng.normal(size=(N, K)).astype(dtype)


MODEL = nn.Dense(K, b_std=0.5)


def _init(seed, dtype, lr=0.1):
    return train.init(MODEL, optax.sgd(lr), jax.random.key(seed), jax.ShapeDtypeStruct((1, D), dtype))


def _segment(state, x, y, lr=0.1, data_seed=-1, num_steps=7, batch_size=B, evaluate=None):
    return train.supervised_segment(state, MODEL, train.mse, optax.sgd(lr), x, y, batch_size=batch_size,
                                    num_steps=num_steps, data_seed=data_seed, evaluate=evaluate)


segment = jax.jit(_segment, static_argnames=("num_steps", "batch_size", "evaluate"))


def _numpy_sgd(params, x, y, key, start, num_steps, lr, batch_size):
    """SGD on ½·mean((x W + b − y)²) in float64 NumPy; minibatch indices from data.batch_indices."""
    W, b = (np.asarray(params[name], np.float64) for name in ("W", "b"))
    losses = []
    for step in range(start, start + num_steps):
        idx = np.asarray(data.batch_indices(key, step, N, batch_size)) if batch_size else np.arange(N)
        xb, yb = x[idx], y[idx]
        err = xb @ W + b - yb
        losses.append(0.5 * np.mean(err ** 2))
        W, b = W - lr * xb.T @ err / err.size, b - lr * err.sum(0) / err.size
    return W, b, np.mean(losses)


@pytest.mark.float64
@pytest.mark.parametrize("batch_size", [B, None])
def test_segment_is_sgd_written_out(batch_size):
    x, y = _data(np.float64)
    state = _init(3, np.float64)
    evaluate = lambda s: {"test_loss": train.mse(MODEL.apply(s.params, x), y)}  # noqa: E731
    first, _ = segment(state, x, y, batch_size=batch_size, evaluate=evaluate)
    second, metrics = segment(first, x, y, batch_size=batch_size, evaluate=evaluate)
    W, b, _ = _numpy_sgd(state.params, x, y, train.data_key(state), 0, 7, 0.1, batch_size)
    W, b, mean_loss = _numpy_sgd({"W": W, "b": b}, x, y, train.data_key(state), 7, 7, 0.1, batch_size)
    np.testing.assert_allclose(second.params["W"], W, rtol=1e-12)
    np.testing.assert_allclose(second.params["b"], b, rtol=1e-12)
    assert int(second.step) == 14
    np.testing.assert_allclose(metrics["train_loss"], mean_loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["test_loss"], 0.5 * np.mean((x @ W + b - y) ** 2), rtol=1e-12)


def test_seed_data_key_is_the_data_key_of_that_seed():
    for seed in (0, 5):
        expected = jax.random.key_data(train.data_key(_init(seed, np.float32)))
        np.testing.assert_array_equal(jax.random.key_data(train.seed_data_key(seed)), expected)
    traced = jax.jit(jax.vmap(lambda s: jax.random.key_data(train.seed_data_key(s))))(jnp.arange(3))
    np.testing.assert_array_equal(traced[2], jax.random.key_data(train.seed_data_key(2)))


def test_data_seed_fixes_the_data_order_apart_from_the_initialisation():
    x, y = _data(np.float32)
    a, b = _init(1, np.float32), _init(2, np.float32)
    same = [segment(a, x, y, data_seed=d)[0].params["W"] for d in (-1, 1)]
    np.testing.assert_array_equal(same[0], same[1])  # data_seed = seed: the member's own order
    other = segment(a, x, y, data_seed=2)[0].params["W"]
    assert not np.allclose(other, same[0])  # another data order, same initialisation
    # member a with b's data order: the same minibatches as b, so the same SGD updates' indices
    W, _, _ = _numpy_sgd(a.params, x.astype(np.float64), y.astype(np.float64), train.data_key(b), 0, 7, 0.1, B)
    np.testing.assert_allclose(other, W, rtol=1e-4, atol=1e-5)


def test_segment_vmaps_over_states_learning_rates_and_data_seeds():
    x, y = _data(np.float32)
    states = jax.vmap(lambda k: train.init(MODEL, optax.sgd(0.1), k, jax.ShapeDtypeStruct((1, D), jnp.float32)))(
        jax.random.split(jax.random.key(0), 3))
    lrs, seeds = jnp.array([0.05, 0.1, 0.2]), jnp.array([-1, 4, 9])
    batched, metrics = jax.jit(jax.vmap(_segment, in_axes=(0, None, None, 0, 0)))(states, x, y, lrs, seeds)
    for i in range(3):
        one = jax.tree.map(lambda leaf: leaf[i], states)
        alone, m = segment(one, x, y, lr=float(lrs[i]), data_seed=int(seeds[i]))
        np.testing.assert_allclose(batched.params["W"][i], alone.params["W"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["train_loss"][i], m["train_loss"], rtol=1e-5)
    assert metrics["train_loss"].shape == (3,)


def test_a_constant_data_seed_is_one_batch_for_a_vmapped_population():
    """A Python int ``data_seed >= 0`` gives a key that does not depend on the member's, so under
    ``vmap`` the batch indices and the gather run once, unbatched (a traced one: once per member);
    the batches are those of the traced seed, and ``-1`` is the member's own key."""
    x, y = _data(np.float32)
    keys = jax.random.split(jax.random.key(0), 3)
    own = keys[0]
    assert train.order_key(own, -1) is own

    def batch(key, data_seed):
        return data.get_batch(train.order_key(key, data_seed), 5, x, y, B)[0]

    def gather_shapes(fn, *args):
        jaxpr = jax.make_jaxpr(jax.vmap(fn))(*args)
        return [e.outvars[0].aval.shape for e in jaxpr.eqns if e.params.get("name") == "_gather"]

    assert gather_shapes(lambda k: batch(k, 2), keys) == [(B, D)]
    assert gather_shapes(batch, keys, jnp.array([2, 2, 2])) == [(3, B, D)]
    once = jax.vmap(lambda k: batch(k, 2))(keys)
    np.testing.assert_array_equal(once, jax.vmap(batch)(keys, jnp.array([2, 2, 2])))
    np.testing.assert_array_equal(once[0], batch(keys[2], jnp.asarray(2)))
