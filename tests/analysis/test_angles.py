"""The angle between two updates against NumPy in float64 (arccos of the flat cosine, computed by
hand over the concatenated leaves), closed forms (parallel, opposite, orthogonal, a rotation by a
known small angle where arccos loses digits), the zero-vector convention, scale invariance,
jit/vmap and errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import analysis

float64 = pytest.mark.float64


def _tree(key, scale=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"W": scale * jax.random.normal(k1, (4, 3)), "b": scale * jax.random.normal(k2, (3,)),
            "blocks": (scale * jax.random.normal(k3, (5,)),)}


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


@float64
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_angle_is_the_arccos_of_the_flat_cosine(seed):
    u, v = _tree(jax.random.key(seed)), _tree(jax.random.key(seed + 10))
    a, b = _flat(u), _flat(v)
    cosine = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    assert float(jax.jit(analysis.gradient_angle)(u, v)) == pytest.approx(math.degrees(math.acos(cosine)), abs=1e-10)
    assert float(analysis.gradient_cosine(u, v)) == pytest.approx(cosine, abs=1e-14)


@float64
def test_closed_forms_and_scale_invariance():
    u = _tree(jax.random.key(3))
    neg = jax.tree.map(jnp.negative, u)
    assert float(analysis.gradient_angle(u, u)) == 0.0
    assert float(analysis.gradient_angle(u, neg)) == pytest.approx(180.0, abs=1e-12)
    scaled = jax.tree.map(lambda x: 1e-30 * x, u)
    assert float(analysis.gradient_angle(scaled, jax.tree.map(lambda x: 7.0 * x, u))) == pytest.approx(0.0, abs=1e-6)
    e1 = {"W": jnp.array([1.0, 0.0]), "b": jnp.zeros(1)}
    e2 = {"W": jnp.array([0.0, 0.0]), "b": jnp.ones(1)}
    assert float(analysis.gradient_angle(e1, e2)) == pytest.approx(90.0, abs=1e-12)


@float64
@pytest.mark.parametrize("theta", [1e-7, 1e-4, 0.3, 179.9999])
def test_rotation_by_a_known_angle_is_recovered_to_full_precision(theta):
    """``v = cos θ e₁ + sin θ e₂`` in a 5-d space split over two leaves: the angle is θ to ~1e-12
    relative (arccos of the cosine would give ~1e-5° at θ = 1e-7°)."""
    r = math.radians(theta)
    u = {"a": jnp.array([1.0, 0.0, 0.0]), "b": jnp.zeros(2)}
    v = {"a": jnp.array([math.cos(r), 0.0, 0.0]), "b": jnp.array([0.0, math.sin(r)])}
    assert float(analysis.gradient_angle(u, v)) == pytest.approx(theta, rel=1e-9)


@pytest.mark.parametrize("which", ["update", "gradient", "both"])
def test_a_zero_update_is_at_ninety_degrees(which):
    u = _tree(jax.random.key(4))
    zero = jax.tree.map(jnp.zeros_like, u)
    pair = {"update": (zero, u), "gradient": (u, zero), "both": (zero, zero)}[which]
    assert float(analysis.gradient_angle(*pair)) == 90.0
    assert float(analysis.gradient_cosine(*pair)) == 0.0


def test_vmaps_over_a_leading_axis():
    keys = jax.random.split(jax.random.key(5), 4)
    us = jax.vmap(_tree)(keys)
    vs = jax.vmap(lambda k: _tree(k, 2.0))(jax.random.split(jax.random.key(6), 4))
    batched = jax.jit(jax.vmap(analysis.gradient_angle))(us, vs)
    one_by_one = [analysis.gradient_angle(jax.tree.map(lambda x: x[i], us), jax.tree.map(lambda x: x[i], vs))
                  for i in range(4)]
    assert batched.shape == (4,) and batched.dtype == jnp.float32
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)


def test_mismatched_updates_raise():
    u = _tree(jax.random.key(7))
    with pytest.raises(ValueError, match="same pytree structure"):
        analysis.gradient_angle(u, {"W": u["W"]})
    with pytest.raises(ValueError, match="equal shapes"):
        analysis.gradient_angle({"W": jnp.ones(3)}, {"W": jnp.ones(4)})
