"""kernels.monte_carlo against a loop of empirical kernels over the same initialisation keys."""

import jax
import numpy as np
import pytest

from jaxlearn import kernels, nn


def test_monte_carlo_is_the_average_over_the_same_initialisations():
    """A layer without a closed form (Tanh), two batches per loop, padding of the last batch."""
    model = nn.serial(nn.Dense(8), nn.Tanh(), nn.Dense(2))
    x1 = jax.random.normal(jax.random.key(0), (3, 4))
    x2 = jax.random.normal(jax.random.key(1), (2, 4))
    key = jax.random.key(2)
    nngp, ntk = jax.jit(lambda a, b: kernels.monte_carlo(model, key, a, b, n_samples=5, samples_per_batch=2))(x1, x2)
    one = jax.jit(lambda k: [kernels.empirical(model.apply, model.init(k, x1)[0], x1, x2, kind=kind)
                             for kind in ("nngp", "ntk")])
    loop = [one(k) for k in jax.random.split(key, 5)]
    np.testing.assert_allclose(nngp, np.mean([a for a, _ in loop], 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ntk, np.mean([b for _, b in loop], 0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"^n_samples: expected a positive int, got 0$"):
        kernels.monte_carlo(model, key, x1, n_samples=0)
