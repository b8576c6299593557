"""Mode connectivity: interpolation, paths and barriers against NumPy forward passes; BatchNorm
statistics reset against statistics recomputed by hand."""

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import landscape as ls
from jaxlearn import nn
from jaxlearn.landscape.connectivity import barrier, batch_stats_reset, interpolate, linear_path, reset_batch_stats

EPS = 1e-5  # BatchNorm's default


def _np_ce(logits, labels):
    shifted = logits - logits.max(-1, keepdims=True)
    return -(shifted - np.log(np.exp(shifted).sum(-1, keepdims=True)))[np.arange(len(labels)), labels]


def _numpy_init(model, spec, seed):
    """Random params (weights ~ N(0, 1/fan_in), other leaves ~ N(0, 1/4)) and state (~ U(0.5, 1.5))
    drawn with numpy: no per-shape compilation of jax.random."""
    rng = np.random.default_rng(seed)
    params, state = jax.eval_shape(lambda k: model.init(k, spec), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) * (
        1 / np.sqrt(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 0.5), s.dtype), params)
    return params, jax.tree.map(lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype), state)


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.result_type(float))


def _mlp_params(seed):
    model = nn.mlp([5], 3, activation="tanh")
    return model, _numpy_init(model, jax.ShapeDtypeStruct((1, 4), jnp.result_type(float)), seed)[0]


def _np_mlp(params, x):
    (l0, _, l2) = [jax.tree.map(np.asarray, p) for p in params]
    return np.tanh(x @ l0["W"] + l0["b"]) @ l2["W"] + l2["b"]


@pytest.mark.float64
def test_interpolate_vmaps_over_alpha_and_has_exact_endpoints():
    a = {"w": _normal(0, (3, 2)), "n": jnp.int32(7)}
    b = {"w": _normal(1, (3, 2)), "n": jnp.int32(9)}
    alphas = jnp.array([-0.5, 0.0, 0.3, 0.5, 0.7, 1.0, 1.5])
    out = jax.jit(jax.vmap(lambda t: interpolate(a, b, t)))(alphas)
    want = (1 - alphas[:, None, None]) * np.asarray(a["w"]) + alphas[:, None, None] * np.asarray(b["w"])
    np.testing.assert_allclose(out["w"], want, rtol=1e-14, atol=1e-15)
    assert np.array_equal(out["w"][1], a["w"]) and np.array_equal(out["w"][5], b["w"])  # bitwise endpoints
    assert np.array_equal(out["n"], np.full(7, 7))  # integer leaves are params_a's
    assert np.array_equal(interpolate(a, a, 0.3)["w"], a["w"])  # a = b: no rounding
    grad = jax.grad(lambda t: jnp.sum(interpolate(a, b, t)["w"]))(0.3)
    np.testing.assert_allclose(grad, np.sum(np.asarray(b["w"]) - np.asarray(a["w"])), rtol=1e-13)


@pytest.mark.float64
@pytest.mark.parametrize("batch_size", [None, 4])  # 4: chunks 4, 4, 3 (padded)
def test_linear_path_equals_numpy_forward_passes(batch_size):
    model, a = _mlp_params(0)
    _, b = _mlp_params(1)
    x = np.asarray(_normal(2, (11, 4)))
    y = np.arange(11) % 3
    objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (jnp.asarray(x), jnp.asarray(y)), batch_size)
    run = jax.jit(lambda p, q: (linear_path(objective, p, q, 7), ls.dataset_metrics(objective, p),
                                ls.dataset_metrics(objective, q), linear_path(objective, p, q, alphas=[0.0, 0.5, 1.0])))
    path, metrics_a, metrics_b, coarse = run(a, b)
    for i, t in enumerate(np.linspace(0, 1, 7)):
        point = jax.tree.map(lambda u, v: (1 - t) * np.asarray(u) + t * np.asarray(v), a, b)
        logits = _np_mlp(point, x)
        np.testing.assert_allclose(path["loss"][i], _np_ce(logits, y).mean(), rtol=1e-13)
        np.testing.assert_allclose(path["accuracy"][i], np.mean(logits.argmax(-1) == y), rtol=1e-13)
    for end, metrics in ((0, metrics_a), (-1, metrics_b)):  # the endpoints are the endpoint losses
        np.testing.assert_allclose(path["loss"][end], metrics["loss"], rtol=1e-14)
        assert path["accuracy"][end] == metrics["accuracy"]
    np.testing.assert_allclose(coarse["loss"], path["loss"][::3], rtol=1e-14)


@pytest.mark.float64
def test_loss_along_path_differentiates_in_alpha():
    model, a = _mlp_params(0)
    _, b = _mlp_params(1)
    x, y = _normal(2, (9, 4)), jnp.arange(9) % 3
    objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (x, y), 4)

    loss = jax.jit(jax.value_and_grad(lambda t: ls.dataset_loss(objective, interpolate(a, b, t))))
    h = 1e-5
    np.testing.assert_allclose(loss(0.4)[1], (loss(0.4 + h)[0] - loss(0.4 - h)[0]) / (2 * h), rtol=1e-8)


def test_barrier_hand_values_both_conventions():
    alphas = jnp.array([0.0, 1 / 3, 2 / 3, 1.0])
    values = jnp.array([[1.0, 3.0, 2.0, 0.5],     # bump: chord 1 - α/2
                        [1.0, 0.5, 0.5, 1.0],     # below the chord: no barrier
                        [2.0, 2.0, 2.0, 2.0]])
    out = jax.jit(barrier)(values, alphas)
    np.testing.assert_allclose(out.linear, [3 - (1 - 1 / 6), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out.mean, [3 - 0.75, 0.0, 0.0], rtol=1e-6)
    single = jax.vmap(barrier, in_axes=(0, None))(values, alphas)
    np.testing.assert_allclose(single.linear, out.linear, rtol=1e-6)


@pytest.mark.float64
def test_barrier_of_a_network_with_itself_is_zero():
    model, a = _mlp_params(0)
    x, y = _normal(2, (10, 4)), jnp.arange(10) % 3
    objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (x, y), 3)
    path = jax.jit(lambda p: linear_path(objective, p, p, 9))(a)
    out = barrier(path["loss"], path["alpha"])
    assert np.all(path["loss"] == path["loss"][0])
    assert float(out.linear) == 0.0 and float(out.mean) == 0.0


# -- BatchNorm reset ----------------------------------------------------------------------------
def _bn_model(momentum):
    return nn.serial(nn.Dense(5, b_std=0.5), nn.BatchNorm(momentum), nn.Tanh(), nn.Dense(4, b_std=0.5),
                     nn.BatchNorm(momentum), nn.Relu(), nn.Dense(3))


def _np_bn_stats(params, x, chunk, ddof):
    """Train-mode passes over equal chunks; the running statistics each BatchNorm feeds
    (``ddof=1``: unbiased variance), averaged over chunks; and the eval-mode forward with them."""
    p = [jax.tree.map(np.asarray, q) for q in params]
    means, variances = [], []
    for c in x.reshape(-1, chunk, x.shape[-1]):
        h1 = c @ p[0]["W"] + p[0]["b"]
        z1 = np.tanh((h1 - h1.mean(0)) / np.sqrt(h1.var(0) + EPS) * p[1]["scale"] + p[1]["offset"])
        h2 = z1 @ p[3]["W"] + p[3]["b"]
        means.append([h1.mean(0), h2.mean(0)])
        variances.append([h1.var(0, ddof=ddof), h2.var(0, ddof=ddof)])
    mean = [np.mean([m[i] for m in means], axis=0) for i in range(2)]
    var = [np.mean([v[i] for v in variances], axis=0) for i in range(2)]

    def forward(x):
        h1 = x @ p[0]["W"] + p[0]["b"]
        z1 = np.tanh((h1 - mean[0]) / np.sqrt(var[0] + EPS) * p[1]["scale"] + p[1]["offset"])
        h2 = z1 @ p[3]["W"] + p[3]["b"]
        z2 = np.maximum((h2 - mean[1]) / np.sqrt(var[1] + EPS) * p[4]["scale"] + p[4]["offset"], 0)
        return z2 @ p[6]["W"] + p[6]["b"]

    return mean, var, forward


def _random_bn_params(model, seed):
    """Scales/offsets away from 1/0 and stale running statistics, which a reset must ignore."""
    return _numpy_init(model, jax.ShapeDtypeStruct((1, 3), jnp.float64), seed)


@pytest.mark.float64
@pytest.mark.parametrize("momentum", [0.9, 0.5])
@pytest.mark.parametrize("batch_size", [None, 6, 3])
def test_reset_batch_stats_equals_statistics_by_hand(momentum, batch_size):
    model = _bn_model(momentum)
    params, state = _random_bn_params(model, 0)
    x = np.asarray(_normal(3, (12, 3)))
    reset = jax.jit(lambda p, s: reset_batch_stats(model.apply_with_state, p, s, jnp.asarray(x), batch_size))
    new = reset(params, state)
    mean, var, _ = _np_bn_stats(params, x, batch_size or 12, ddof=1)
    for i, layer in enumerate((1, 4)):
        np.testing.assert_allclose(new[layer]["mean"], mean[i], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(new[layer]["var"], var[i], rtol=1e-12)


@pytest.mark.float64
def test_reset_batch_stats_of_flax_batchnorm():
    class Net(linen.Module):
        @linen.compact
        def __call__(self, x, train: bool = False):
            h = linen.Dense(4, param_dtype=jnp.float64)(x)
            h = linen.BatchNorm(use_running_average=not train, momentum=0.8, param_dtype=jnp.float64)(h)
            return linen.Dense(2, param_dtype=jnp.float64)(jnp.tanh(h))

    model = nn.from_linen(Net())
    params, state = _numpy_init(model, jax.ShapeDtypeStruct((1, 3), jnp.float64), 0)
    x = _normal(1, (8, 3))
    new = jax.jit(lambda p, s: reset_batch_stats(model.apply_with_state, p, s, x, 4))(params, state)
    h = np.asarray(x) @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(params["Dense_0"]["bias"])
    chunks = h.reshape(2, 4, 4)
    stats = new["batch_stats"]["BatchNorm_0"]  # flax keeps batch statistics in float32
    np.testing.assert_allclose(stats["mean"], chunks.mean(1).mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["var"], chunks.var(1).mean(0), rtol=1e-6)  # flax feeds the biased variance
    np.testing.assert_allclose(stats["var"], chunks.var(1, ddof=1).mean(0) * 3 / 4, rtol=1e-6)


@pytest.mark.float64
def test_linear_path_with_batchnorm_reset_equals_numpy():
    model = _bn_model(0.9)
    a, b = _random_bn_params(model, 0), _random_bn_params(model, 1)
    x = np.asarray(_normal(3, (12, 3)))
    y = np.arange(12) % 3
    objective = ls.ModelObjective(lambda pt, x: model.apply(pt[0], x, pt[1]), ls.softmax_cross_entropy,
                                  (jnp.asarray(x), jnp.asarray(y)), 5)
    path = jax.jit(lambda p, q: linear_path(objective, p, q, 5,
                                            reset=batch_stats_reset(model.apply_with_state, jnp.asarray(x))))(a, b)
    for i, t in enumerate(np.linspace(0, 1, 5)):
        point = jax.tree.map(lambda u, v: (1 - t) * np.asarray(u) + t * np.asarray(v), a[0], b[0])
        _, _, forward = _np_bn_stats(point, x, 12, ddof=1)
        np.testing.assert_allclose(path["loss"][i], _np_ce(forward(x), y).mean(), rtol=1e-12)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    a = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"params_b: structure differs from params_a at leaf \['c'\]"):
        interpolate(a, {"w": jnp.ones((2, 3)), "c": jnp.ones(3)}, 0.5)
    with pytest.raises(ValueError, match=r"params_b: leaf \['w'\] has shape \(3, 2\), expected \(2, 3\)"):
        interpolate(a, {"w": jnp.ones((3, 2)), "b": jnp.ones(3)}, 0.5)
    objective = ls.ModelObjective(lambda p, x: x @ p["w"] + p["b"], ls.softmax_cross_entropy,
                                  (jnp.ones((4, 2)), jnp.zeros(4, jnp.int32)))
    with pytest.raises(ValueError, match="num_points: expected an int >= 2"):
        linear_path(objective, a, a, 1)
    with pytest.raises(TypeError, match="objective: expected a ModelObjective"):
        linear_path(lambda p: 0.0, a, a)
    with pytest.raises(ValueError, match="alphas: expected increasing values from 0 to 1"):
        barrier(jnp.ones(3), jnp.array([0.0, 0.5, 0.9]))
    with pytest.raises(ValueError, match=r"values, alphas: expected values of shape \(..., P\)"):
        barrier(jnp.ones(4), jnp.array([0.0, 0.5, 1.0]))
    model = _bn_model(0.9)
    params, state = _numpy_init(model, jax.ShapeDtypeStruct((1, 3), jnp.float32), 0)
    with pytest.raises(ValueError, match="batch_size: expected None or a positive int dividing the 10 examples"):
        reset_batch_stats(model.apply_with_state, params, state, jnp.ones((10, 3)), 4)
    with pytest.raises(ValueError, match=r"point: expected a \(params, state\) pair"):
        batch_stats_reset(model.apply_with_state, jnp.ones((10, 3)))(params)
