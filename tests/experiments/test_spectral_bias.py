"""spectral_bias's mathematics against independent ground truth, in float64: the circulant
eigenvalues of the analytic NTK against a dense eigendecomposition of the Gram matrix, Fourier
amplitudes of known sinusoids, and the interpolated crossing time of an exact exponential."""

import pathlib

import numpy as np
import pytest

from jaxlearn import kernels, runner

REPO = pathlib.Path(__file__).resolve().parents[2]
study = runner.load_experiment("spectral_bias", [REPO]).module


@pytest.mark.float64
@pytest.mark.parametrize("n_points", [33])
def test_circulant_eigenvalues_are_the_ntk_gram_eigenvalues_of_the_fourier_modes(n_points):
    config = study.Config(width=8, n_points=n_points, frequencies=(1, 2, 5, 7))
    x = np.asarray(study.data(config).x_train, np.float64)
    gram = np.asarray(kernels.analytic(study.model(config), x, get="ntk"))
    phi = study.angles(n_points)
    lam = np.asarray(study.ntk_eigenvalues(config))
    spectrum = np.linalg.eigvalsh(gram)
    for k, value in zip(config.frequencies, lam):
        for mode in (np.cos(k * phi), np.sin(k * phi)):  # an eigenvector, with that eigenvalue
            np.testing.assert_allclose(gram @ mode, value * mode, atol=1e-10 * np.abs(gram).max())
        assert np.sum(np.isclose(spectrum, value, rtol=1e-9, atol=1e-12)) >= 2  # cos and sin: multiplicity 2


@pytest.mark.float64
def test_fourier_amplitudes_of_a_sum_of_shifted_sinusoids():
    phi = study.angles(40)
    values = 0.7 * np.sin(3 * phi + 0.4) + 2.0 * np.cos(5 * phi - 1.0) + 0.3
    np.testing.assert_allclose(study.fourier_amplitudes(values, phi, (3, 5, 7)), [0.7, 2.0, 0.0], atol=1e-12)


@pytest.mark.float64
def test_crossing_time_of_an_exponential_decay():
    rate, target = 0.3, 0.1
    steps = np.arange(20)
    amplitude = np.exp(-rate * steps)
    fitted_at = np.array([-1.0])
    for s in steps[1:]:
        fitted_at = np.asarray(study.crossing_time(s, amplitude[s - 1:s], amplitude[s:s + 1], target, fitted_at))
    assert fitted_at[0] == pytest.approx(np.log(1 / target) / rate, rel=1e-12)  # log-linear interpolation is exact
    assert study.crossing_time(3, np.array([1.0]), np.array([0.01]), 0.1, np.array([2.5]))[0] == 2.5  # set once
