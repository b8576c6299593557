"""experiments/skip_connections.py against independent ground truth (its λ_min and λ_max are
jaxlearn.landscape.top_eigenvalues', tested in tests/landscape): the ring loss rise against its closed form on a
quadratic and the plane's surface against jaxlearn.landscape.surface_2d; the gated network
against the same network written out with lax.conv; its parameter draw against the formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import skip_connections as study
from jaxlearn import landscape


def _tiny_net_loss():
    """A one-hidden-layer tanh network's squared error on fixed data: a non-convex loss with both
    signs of curvature, its params a pytree of two leaves (written out: no layer init to compile)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3)))
    y = jnp.asarray(np.random.default_rng(1).normal(size=12))
    rng = np.random.default_rng(2)
    params = {"W": jnp.asarray(rng.normal(size=(3, 4))), "v": jnp.asarray(rng.normal(size=4))}

    def loss_fn(p):
        return jnp.mean((jnp.tanh(x @ p["W"]) @ p["v"] - y) ** 2)

    return loss_fn, params


@pytest.mark.float64
@pytest.mark.parametrize("num_angles", [3, 16])
def test_loss_rise_of_a_quadratic_is_its_closed_form(num_angles):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    hessian, b = jnp.asarray(a @ a.T - 2.0 * np.eye(6)), jnp.asarray(rng.normal(size=6))
    theta, d1, d2 = (jnp.asarray(rng.normal(size=6)) for _ in range(3))

    def loss_fn(p):
        return 0.5 * p @ hessian @ p + b @ p

    _, rise = study.plane_measures(loss_fn, theta, d1, d2, landscape.symmetric_grid(3), 0.5, num_angles)
    expected = 0.5 ** 2 / 4 * (d1 @ hessian @ d1 + d2 @ hessian @ d2)
    np.testing.assert_allclose(rise, expected, rtol=1e-10)


@pytest.mark.float64
def test_plane_surface_is_the_library_surface_and_its_centre_the_loss():
    loss_fn, params = _tiny_net_loss()
    rng = np.random.default_rng(4)
    d1, d2 = ({k: jnp.asarray(rng.normal(size=v.shape)) for k, v in params.items()} for _ in range(2))
    axis = landscape.symmetric_grid(5, 1.0)
    surface, _ = study.plane_measures(loss_fn, params, d1, d2, axis, 0.5, 4)
    np.testing.assert_allclose(surface, landscape.surface_2d(loss_fn, params, d1, d2, axis, axis), rtol=1e-12)
    np.testing.assert_allclose(surface[2, 2], loss_fn(params), rtol=1e-12)


def _plain_forward(params, x, skip: bool):
    """The network written out with lax.conv on the leaves of its params: stem, blocks (h + F(h))/√2
    or F(h), ReLU, global average pooling, readout."""
    weights = [leaf for leaf in jax.tree.leaves(params, is_leaf=lambda t: isinstance(t, dict) and "W" in t)
               if isinstance(leaf, dict)]

    def conv(h, layer, stride):
        out = jax.lax.conv_general_dilated(h, layer["W"], (stride, stride), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out + layer["b"]

    h = conv(x, weights[0], 2)
    for first, second in zip(weights[1:-1:2], weights[2:-1:2]):
        f = conv(jax.nn.relu(conv(jax.nn.relu(h), first, 1)), second, 1)
        h = (h + f) / np.sqrt(2.0) if skip else f
    pooled = jnp.mean(jax.nn.relu(h), axis=(1, 2))
    return pooled @ weights[-1]["W"] + weights[-1]["b"]


_SPEC = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
_DEPTH, _CHANNELS = 6, 24  # one draw shared by the tests below (its compile is cached); 24 channels for the statistics


@pytest.mark.parametrize("skip", [True, False])
def test_model_is_the_written_out_network(skip):
    config = study.Config(depth=_DEPTH, skip=skip, channels=_CHANNELS)
    x = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
    params, _ = study.HeDraw(study.model(config)).init(jax.random.key(1), _SPEC)
    assert sum(leaf.ndim >= 2 for leaf in jax.tree.leaves(params)) == config.depth  # weight layers, as the paper counts
    params = jax.tree.map(lambda p: p + 0.1 * (p.ndim == 1), params)  # non-zero biases, so they are tested too
    np.testing.assert_allclose(jax.jit(study.model(config).apply)(params, x), _plain_forward(params, x, skip),
                               rtol=1e-4, atol=1e-5)


def test_he_draw_has_the_layers_init_distribution():
    """Same shapes as the layers' own init; biases 0; every kernel's entries N(0, W_std²/fan_in)
    (sample mean and std of each kernel against the formula, 5 standard errors)."""
    net = study.model(study.Config(depth=_DEPTH, channels=_CHANNELS))
    drawn, _ = study.HeDraw(net).init(jax.random.key(1), _SPEC)
    own, _ = jax.eval_shape(net.init, jax.random.key(1), _SPEC)
    assert jax.tree.structure(drawn) == jax.tree.structure(own)
    assert [a.shape for a in jax.tree.leaves(drawn)] == [a.shape for a in jax.tree.leaves(own)]
    for w in jax.tree.leaves(drawn):
        w = np.asarray(w, np.float64)
        if w.ndim == 1:
            assert np.all(w == 0)
            continue
        fan_in = np.prod(w.shape[:-1])
        std = (study.CONV_W_STD if w.ndim == 4 else study.READOUT_W_STD) / np.sqrt(fan_in)
        assert abs(w.mean()) < 5 * std / np.sqrt(w.size)
        assert abs(w.std() / std - 1) < 5 / np.sqrt(2 * w.size) + 1e-3
