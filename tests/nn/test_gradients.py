"""Gradients through the layer algebra against central finite differences (float64).

One model strings together Conv, residual blocks, BatchNorm (training mode: batch statistics),
AvgPool, GlobalAvgPool, Dense, LayerNorm with affine params, and smooth activations, so the
check covers every differentiable path of the algebra in one loss. All finite differences of a
case are evaluated by a single vmapped program.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxlearn.nn as nn

pytestmark = pytest.mark.float64

H = 1e-6  # central-difference step: truncation O(H²) ≈ 1e-12, round-off O(eps/H) ≈ 1e-10
RTOL = 1e-6


def model(parameterization):
    kw = dict(b_std=0.3, parameterization=parameterization)
    return nn.serial(
        nn.Conv(4, (3, 3), padding="SAME", **kw),
        nn.Gelu(),
        nn.residual(nn.Conv(4, (3, 3), padding="SAME", **kw), nn.Tanh()),
        nn.BatchNorm(eps=1e-3),
        nn.Softplus(),
        nn.AvgPool((2, 2), strides=(2, 2), padding="SAME", count_include_pad=False),
        nn.GlobalAvgPool(),
        nn.Dense(6, **kw),
        nn.LayerNorm(affine=True),
        nn.Erf(0.8, 1.2, 0.1),
        nn.residual(nn.Dense(6, **kw), nn.Sin(1.1, 0.9, 0.2)),
        nn.Sigmoid(),
        nn.Dense(3, **kw),
    )


IN_SHAPE = (4, 5, 5, 2)


def random_params(net, parameterization, rng):
    shapes, state_shapes = jax.eval_shape(lambda k: net.init(k, jax.ShapeDtypeStruct(IN_SHAPE, jnp.float64)),
                                          jax.random.key(0))

    def draw(path, s):
        name = jax.tree_util.keystr(path[-1:])
        z = rng.standard_normal(s.shape)
        if "W" in name:  # unit-variance pre-activations under both parameterizations
            return z if parameterization == "ntk" else z / math.sqrt(math.prod(s.shape[:-1]))
        if "scale" in name:
            return 1.0 + 0.3 * z
        return 0.3 * z  # biases, offsets

    params = jax.tree_util.tree_map_with_path(lambda p, s: jnp.asarray(draw(p, s)), shapes)
    state = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), state_shapes)  # unused in training mode
    return params, state


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_gradients_match_finite_differences(parameterization):
    rng = np.random.default_rng(0)
    net = model(parameterization)
    params, state = random_params(net, parameterization, rng)
    flat, unravel = ravel_pytree(params)
    x = rng.standard_normal(IN_SHAPE)
    r = jnp.asarray(rng.standard_normal((IN_SHAPE[0], 3)))

    def loss(theta, x):
        y = net.apply(unravel(theta), x, state, train=True)  # BatchNorm uses batch statistics
        return jnp.sum(y * r) + 0.5 * jnp.sum(y**2)

    value, (g_theta, g_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(flat, jnp.asarray(x))
    g_theta, g_x = np.asarray(g_theta), np.asarray(g_x)

    # perturbations: a random direction in params, 12 param coordinates, every input coordinate
    v = rng.standard_normal(flat.size)
    v /= np.linalg.norm(v)
    coords = rng.choice(flat.size, size=12, replace=False)
    P, D = flat.size, x.size
    dthetas = [v] + [np.eye(1, P, i)[0] for i in coords] + [np.zeros(P)] * D
    dxs = [np.zeros(D)] * (1 + len(coords)) + list(np.eye(D))
    dtheta, dx = np.stack(dthetas), np.stack(dxs).reshape((-1,) + IN_SHAPE)
    theta0, x0 = np.asarray(flat), x
    batch_loss = jax.jit(jax.vmap(loss))
    plus = np.asarray(batch_loss(jnp.asarray(theta0 + H * dtheta), jnp.asarray(x0 + H * dx)))
    minus = np.asarray(batch_loss(jnp.asarray(theta0 - H * dtheta), jnp.asarray(x0 - H * dx)))
    fd = (plus - minus) / (2 * H)

    scale = max(np.abs(g_theta).max(), np.abs(g_x).max())
    atol = 1e-8 * scale  # coordinates whose derivative is (nearly) zero
    np.testing.assert_allclose(fd[0], g_theta @ v, rtol=RTOL)
    np.testing.assert_allclose(fd[1 : 1 + len(coords)], g_theta[coords], rtol=RTOL, atol=atol)
    np.testing.assert_allclose(fd[1 + len(coords) :], g_x.ravel(), rtol=RTOL, atol=atol)

    # the check has teeth: the gradient is far from zero in every group checked
    assert abs(g_theta @ v) > 1e-3 * np.linalg.norm(g_theta)
    assert np.count_nonzero(np.abs(g_theta[coords]) > 1e-4 * scale) >= 8
    assert np.abs(g_x).max() > 1e-3 * scale
    assert np.isfinite(value)
    # every param leaf takes part in the loss (none silently disconnected)
    for path, leaf in jax.tree_util.tree_leaves_with_path(unravel(jnp.asarray(g_theta))):
        assert np.abs(np.asarray(leaf)).max() > 1e-6 * scale, jax.tree_util.keystr(path)
