"""The kurtosis estimator, its delta-method standard error and the closed form, against independent
ground truth: distributions of known excess kurtosis (Monte Carlo over replicates) and numerical
integration."""

import math
import pathlib

import numpy as np
import pytest
from scipy import integrate, special

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


def _study():
    return runner.load_experiment("finite_width_kurtosis", [REPO]).module


def _raw(x):
    return [np.mean(x ** k) for k in range(1, 9)]


# (draw, exact central moments μ_0..μ_8, excess kurtosis): Gaussian σ = 2, Laplace b = 1 (μ_2k = (2k)!),
# uniform on [0, 2] (μ_2k = 1/(2k+1)), exponential rate 1 (μ_k = !k, the derangement numbers)
KNOWN = {
    "gaussian": (lambda rng, size: rng.normal(1.5, 2.0, size), [1, 0, 4, 0, 48, 0, 960, 0, 26880], 0.0),
    "laplace": (lambda rng, size: rng.laplace(-0.5, 1.0, size), [1, 0, 2, 0, 24, 0, 720, 0, 40320], 3.0),
    "uniform": (lambda rng, size: rng.uniform(0.0, 2.0, size), [1, 0, 1 / 3, 0, 1 / 5, 0, 1 / 7, 0, 1 / 9], -1.2),
    "exponential": (lambda rng, size: rng.exponential(1.0, size), [1, 0, 1, 2, 9, 44, 265, 1854, 14833], 6.0),
}


@pytest.mark.float64
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_estimator_and_delta_method_se_on_known_distributions(name):
    """200 replicates of 10000 draws: the mean estimate is the true excess kurtosis (within 4 SE of the
    mean, plus the estimator's O(1/N) bias); the delta-method SE at the exact moments matches the
    replicates' spread (within 15%; the spread's own relative error is ~5%); the plug-in SE (at the
    sample moments) does too for the light-tailed distributions (for heavy tails its 8th moment is
    itself noisy, and it is only required within 40%)."""
    draw, central, excess = KNOWN[name]
    study, rng, n, reps = _study(), np.random.default_rng(0), 10000, 200
    samples = draw(rng, (reps, n))
    powers = np.cumprod(np.broadcast_to(samples, (8, reps, n)), axis=0)  # x, x², ..., x⁸
    raws = powers.mean(axis=2).T
    estimates = np.array([study.excess_kurtosis(raw) for raw in raws])
    spread = estimates.std(ddof=1)
    assert abs(estimates.mean() - excess) < 4 * spread / np.sqrt(reps) + 30 / n, (estimates.mean(), excess)
    exact_se = study.excess_kurtosis_se(central[1:], n)  # mean 0: raw moments = central moments
    assert exact_se == pytest.approx(spread, rel=0.15), (exact_se, spread)
    plug_in = np.median([study.excess_kurtosis_se(raw, n) for raw in raws])
    assert plug_in == pytest.approx(spread, rel=0.15 if name in ("gaussian", "uniform") else 0.4), (plug_in, spread)


@pytest.mark.float64
def test_gaussian_delta_method_se_is_sqrt_24_over_n():
    """At the exact moments of a Gaussian (μ₄ = 3σ⁴, μ₆ = 15σ⁶, μ₈ = 105σ⁸) the formula is √(24/N)."""
    study, sigma, mean = _study(), 1.7, 0.3
    central = {k: (sigma ** k * math.prod(range(k - 1, 0, -2)) if k % 2 == 0 else 0.0) for k in range(9)}
    raw = [sum(math.comb(k, j) * central[j] * mean ** (k - j) for j in range(k + 1)) for k in range(1, 9)]
    assert study.excess_kurtosis(raw) == pytest.approx(0.0, abs=1e-10)
    assert study.excess_kurtosis_se(raw, 1000) == pytest.approx(np.sqrt(24 / 1000), rel=1e-10)


@pytest.mark.float64
@pytest.mark.parametrize("activation, phi", [
    ("relu", lambda u: np.maximum(u, 0.0)),
    ("tanh", np.tanh),
    ("erf", special.erf),
])
@pytest.mark.parametrize("q", [0.5, 2.0])
def test_kurtosis_coefficient_against_numerical_integration(activation, phi, q):
    """3(E φ⁴ / (E φ²)² − 1), u ~ N(0, q), by adaptive quadrature of the Gaussian integrals (for ReLU: 15)."""
    def moment(k):
        return integrate.quad(lambda u: phi(u) ** k * np.exp(-u * u / (2 * q)) / np.sqrt(2 * np.pi * q),
                              -np.inf, np.inf, epsabs=1e-13)[0]
    expected = 3 * (moment(4) / moment(2) ** 2 - 1)
    assert _study().kurtosis_coefficient(activation, q) == pytest.approx(expected, rel=1e-6)
    if activation == "relu":
        assert expected == pytest.approx(15.0, rel=1e-6)
