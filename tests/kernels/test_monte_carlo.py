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


@pytest.mark.float64
def test_monte_carlo_converges_to_the_analytic_kernels():
    """One hidden layer: the finite-width kernels are unbiased for the infinite-width ones (Kernels
    I's analytic map), so the Monte-Carlo error falls like 1/sqrt(samples): from 16 to 1024
    samples it must fall by well over a third of its expected factor 8, to a few percent (measured:
    NNGP 0.69 -> 0.040, NTK 0.082 -> 0.0085 relative to the largest entry)."""
    ntk = dict(parameterization="ntk")
    model = nn.serial(nn.Dense(64, W_std=1.5, b_std=0.1, **ntk), nn.Erf(), nn.Dense(8, W_std=1.2, b_std=0.2, **ntk))
    x1 = jax.random.normal(jax.random.key(0), (3, 5))
    x2 = jax.random.normal(jax.random.key(1), (2, 5))
    exact = kernels.analytic(model, x1, x2)
    estimate = jax.jit(lambda n: kernels.monte_carlo(model, jax.random.key(2), x1, x2, n_samples=n,
                                                     samples_per_batch=64), static_argnums=0)
    errors = []
    for n in (16, 1024):
        nngp, ntk_ = estimate(n)
        errors.append([float(np.abs(got - want).max() / np.abs(want).max())
                       for got, want in ((nngp, exact.nngp), (ntk_, exact.ntk))])
    (nngp_16, ntk_16), (nngp_1024, ntk_1024) = errors
    assert nngp_1024 < 0.08 and ntk_1024 < 0.02, errors
    assert nngp_1024 < nngp_16 / 3 and ntk_1024 < ntk_16 / 3, errors
