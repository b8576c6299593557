"""``jaxlearn._random`` draws the same numbers as ``jax.random`` (its docstring says why it exists)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import _random

SHAPES = [(), (4, 3), (3, 1, 2, 5)]


def _pairs(shape):
    f = jnp.result_type(float)
    return {
        "normal": (lambda k: _random.normal(k, shape, f), lambda k: jax.random.normal(k, shape, f)),
        "uniform": (lambda k: _random.uniform(k, shape, f, -2.0, 3.0),
                    lambda k: jax.random.uniform(k, shape, f, -2.0, 3.0)),
        "bernoulli": (lambda k: _random.bernoulli(k, 0.3, shape), lambda k: jax.random.bernoulli(k, 0.3, shape)),
        "rademacher": (lambda k: _random.rademacher(k, shape, f), lambda k: jax.random.rademacher(k, shape, f)),
        "randint": (lambda k: _random.randint(k, shape, 1, 7), lambda k: jax.random.randint(k, shape, 1, 7)),
    }


# Without partitionable threefry the counters are the flat index too: one shape checks it.
CASES = [(shape, True) for shape in SHAPES] + [(SHAPES[-1], False)]


@pytest.mark.parametrize(("shape", "partitionable"), CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("name", list(_pairs(())))
def test_same_numbers_as_jax_random_under_jit_and_vmap(name, shape, partitionable):
    ours, theirs = _pairs(shape)[name]
    keys = jax.random.split(jax.random.key(7), 3)
    with jax.threefry_partitionable(partitionable):
        a, va = jax.jit(lambda ks: (ours(ks[0]), jax.vmap(ours)(ks)))(keys)
        b, vb = jax.jit(lambda ks: (theirs(ks[0]), jax.vmap(theirs)(ks)))(keys)
    assert a.shape == b.shape == shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va, vb)


def test_bernoulli_broadcasts_p_and_keeps_its_dtype():
    key = jax.random.key(0)
    p = jnp.linspace(0.1, 0.9, 3, dtype=jnp.float32)
    np.testing.assert_array_equal(_random.bernoulli(key, p, (4, 3)), jax.random.bernoulli(key, p, (4, 3)))


def test_gradient_through_a_scaled_draw():
    # what init does: scale * normal(key, shape); the gradient in the scale is the draw itself
    key = jax.random.key(1)
    g = jax.grad(lambda s: jnp.sum(s * _random.normal(key, (2, 3, 4))))(1.5)
    np.testing.assert_allclose(g, jnp.sum(jax.random.normal(key, (2, 3, 4))), rtol=1e-6)
