"""The measurements of experiments/skip_connections.py against independent ground truth: the
extreme Lanczos Ritz values against the dense Hessian's eigenvalues, and the ring loss rise
against its closed form on a quadratic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import skip_connections as study
from jaxlearn import landscape, nn


def _tiny_net_loss():
    """A small tanh MLP's cross-entropy on random data: a non-convex loss with both signs of curvature."""
    net = nn.mlp([5], 3, activation="tanh")
    x = jax.random.normal(jax.random.key(0), (20, 4))
    y = jax.random.randint(jax.random.key(1), (20,), 0, 3)
    params, _ = net.init(jax.random.key(2), jax.ShapeDtypeStruct((1, 4), x.dtype))

    def loss_fn(p):
        logits = net.apply(p, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    return loss_fn, params


@pytest.mark.float64
def test_extreme_eigenvalues_equal_the_dense_hessians():
    loss_fn, params = _tiny_net_loss()
    flat, unravel = ravel_pytree(params)
    dense = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda v: loss_fn(unravel(v)))(flat)))
    assert dense[0] < 0 < dense[-1]  # the test needs both signs
    extremes = jax.jit(study.extreme_eigenvalues, static_argnums=(0, 3))
    lam_min, lam_max = extremes(loss_fn, params, jax.random.key(3), flat.shape[0])
    np.testing.assert_allclose([lam_min, lam_max], [dense[0], dense[-1]], rtol=1e-8, atol=1e-10)


@pytest.mark.float64
def test_extreme_eigenvalues_after_a_breakdown_ignore_the_dead_block():
    """A quadratic with three distinct positive eigenvalues in 8 dimensions: the Krylov space is
    invariant after 3 steps, and the trailing zero block must not report λ_min = 0."""
    eigs = jnp.array([1.0, 1.0, 2.0, 2.0, 2.0, 5.0, 5.0, 5.0])
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (8, 8)))
    hessian = q @ jnp.diag(eigs) @ q.T

    def loss_fn(theta):
        return 0.5 * theta @ hessian @ theta

    extremes = jax.jit(study.extreme_eigenvalues, static_argnums=(0, 3))
    lam_min, lam_max = extremes(loss_fn, jnp.zeros(8), jax.random.key(1), 8)
    np.testing.assert_allclose([lam_min, lam_max], [1.0, 5.0], rtol=1e-8)


@pytest.mark.float64
@pytest.mark.parametrize("num_angles", [3, 8, 16])
def test_ring_loss_rise_of_a_quadratic_is_its_closed_form(num_angles):
    k = jax.random.split(jax.random.key(0), 5)
    a = jax.random.normal(k[0], (6, 6))
    hessian, b = a @ a.T - 2.0 * jnp.eye(6), jax.random.normal(k[1], (6,))
    theta, d1, d2 = (jax.random.normal(key, (6,)) for key in k[2:])

    def loss_fn(p):
        return 0.5 * p @ hessian @ p + b @ p

    rise = study.ring_loss_rise(loss_fn, theta, d1, d2, 0.5, num_angles)
    expected = 0.5 ** 2 / 4 * (d1 @ hessian @ d1 + d2 @ hessian @ d2)
    np.testing.assert_allclose(rise, expected, rtol=1e-10)


def test_model_with_and_without_skips_has_depth_weight_layers_and_the_same_parameters():
    spec = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
    for depth in (4, 10):
        nets = [study.model(study.Config(depth=depth, skip=skip, channels=3)) for skip in (True, False)]
        shapes = [[leaf.shape for leaf in jax.tree.leaves(n.init(jax.random.key(0), spec)[0])] for n in nets]
        assert shapes[0] == shapes[1]  # the same layers in the same order; only the shortcuts differ
        assert sum(len(s) >= 2 for s in shapes[0]) == depth


def test_surface_centre_is_the_unperturbed_loss():
    loss_fn, params = _tiny_net_loss()
    d1, d2 = (landscape.random_direction(jax.random.key(i), params) for i in (4, 5))
    axis = landscape.symmetric_grid(5, 1.0)
    surface = landscape.surface_2d(loss_fn, params, d1, d2, axis, axis)
    np.testing.assert_allclose(surface[2, 2], loss_fn(params), rtol=1e-6)
