"""The study protocol (``run(config)``, no training) through the runner, in float64, against
NumPy's least squares and pseudo-inverse on the same random features."""

import pathlib

import jax
import numpy as np
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.float64
def test_ridgeless_fit_is_least_squares_or_min_norm_interpolant(tmp_path):
    experiment = runner.load_experiment("random_features_double_descent", [REPO])
    axes = {"seed": runner.Axis((0, 1), "list"), "num_features": runner.Axis((30, 300), "list")}
    configs = runner.expand(experiment.config_cls, {"n_train": 100, "d_in": 10, "ridge": 0.0}, axes)
    report = runner.run_sweep(experiment, configs, root=tmp_path, progress=False)
    assert len(report.computed) == 4  # two groups (num_features is static), two seeds each
    runs = runner.load(tmp_path).runs.set_index("run_id")
    for config, rid in zip(configs, report.run_ids):
        x_train, y_train, x_test, y_test = (np.asarray(a, np.float64) for a in experiment.module.data(config))
        key = jax.random.key(config.seed)
        phi = np.asarray(experiment.module.features(key, x_train, config.num_features), np.float64)
        phi_test = np.asarray(experiment.module.features(key, x_test, config.num_features), np.float64)
        coef = np.linalg.pinv(phi) @ y_train  # least squares (p < n) / minimum-norm interpolant (p > n)
        row = runs.loc[rid]
        np.testing.assert_allclose(row.train_mse, 0.5 * np.mean((phi @ coef - y_train) ** 2), rtol=1e-3, atol=1e-10)
        np.testing.assert_allclose(row.test_mse, 0.5 * np.mean((phi_test @ coef - y_test) ** 2), rtol=1e-3)
        np.testing.assert_allclose(row.coef_norm, np.linalg.norm(coef), rtol=1e-3)
        if config.num_features > config.n_train:
            assert row.train_mse < 1e-8  # interpolates
