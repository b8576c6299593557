"""The study's finite-width posterior against an independent weight-space computation: exact Bayesian
linear regression of the readout (NumPy, float64), and its convergence to the analytic NNGP posterior
(a Monte-Carlo limit: the random-feature kernel of very wide hidden layers)."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


def _study():
    return runner.load_experiment("nngp_posterior", [REPO]).module


@pytest.mark.float64
def test_member_posterior_is_bayesian_linear_regression_of_the_readout():
    """Weight space: w ~ N(0, σ_w²/n I), b ~ N(0, σ_b²), y = φw + b + ε: the posterior over (w, b) is
    N(A⁻¹Φ̃ᵀy/σ², A⁻¹) with A = Φ̃ᵀΦ̃/σ² + diag(prior precisions), Φ̃ = [φ, 1]; the predictive mean
    and (noise-free) variance at x* are φ̃*ᵀ(mean) and φ̃*ᵀA⁻¹φ̃*."""
    study = _study()
    config = study.Config(width=12, n_train=9, n_test=7, noise_var=0.05)
    arrays = study.data(config)
    key = jax.random.key(3)
    mean, var = jax.jit(study.member_posterior, static_argnums=0)(config, arrays, key)
    net = study.hidden(config)
    params = net.init(key, jax.ShapeDtypeStruct((1, 1), arrays.x_train.dtype))[0]
    phi = np.c_[np.asarray(net.apply(params, arrays.x_train)), np.ones(config.n_train)]
    phi_star = np.c_[np.asarray(net.apply(params, arrays.x_test)), np.ones(config.n_test)]
    prior_precision = np.r_[np.full(config.width, config.width / config.W_std ** 2), 1 / config.b_std ** 2]
    a = phi.T @ phi / config.noise_var + np.diag(prior_precision)
    w_mean = np.linalg.solve(a, phi.T @ np.asarray(arrays.y_train)[:, 0] / config.noise_var)
    np.testing.assert_allclose(mean, phi_star @ w_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(var, np.einsum("ij,ji->i", phi_star, np.linalg.solve(a, phi_star.T)), rtol=1e-7,
                               atol=1e-12)


@pytest.mark.float64
def test_very_wide_member_is_close_to_the_nngp_posterior():
    """One hidden layer of width 2^16: the random-feature kernel is within ~1% of the analytic NNGP, so
    the member's posterior is, and a width-8 member is much further away."""
    study = _study()
    errors = {}
    member = jax.jit(study.member_posterior, static_argnums=0)
    arrays = study.data(study.Config(depth=1, n_test=9))
    mean_star, var_star = study.nngp_posterior(study.Config(depth=1, n_test=9), arrays)  # width-independent
    for width in (8, 2 ** 16):
        mean, var = member(study.Config(width=width, depth=1, n_test=9), arrays, jax.random.key(0))
        errors[width] = (np.linalg.norm(mean - mean_star) / np.linalg.norm(mean_star),
                         np.linalg.norm(var - var_star) / np.linalg.norm(var_star))
    assert max(errors[2 ** 16]) < 0.03 and min(errors[8]) > 3 * max(errors[2 ** 16]), errors


def test_readout_kernel_matches_the_prior_covariance_of_the_readout():
    """The kernel is the covariance of f = φw + b over 20000 readout draws (Monte Carlo, 5 σ; NumPy draws)."""
    study = _study()
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(3, 5))
    w = rng.normal(size=(5, 20000)) * 1.5 / np.sqrt(5)
    b = rng.normal(size=20000) * 0.5
    f = phi @ w + b
    empirical = f @ f.T / f.shape[1]
    np.testing.assert_allclose(study.readout_kernel(phi, phi, 1.5, 0.5), empirical,
                               atol=5 * np.sqrt(2 / 20000) * np.abs(empirical).max())
