"""The linear-model prediction of wide_linear_models against the linearized dynamics integrated
independently (matrix exponential, and many small explicit GD steps on ½·mean((f − y)²)), in
float64; the log-log slope against an exact power law."""

import pathlib

import jax
import numpy as np
import pytest
from scipy.linalg import expm

from jaxlearn import kernels, runner

REPO = pathlib.Path(__file__).resolve().parents[2]
study = runner.load_experiment("wide_linear_models", [REPO]).module


@pytest.mark.float64
@pytest.mark.parametrize("depth", [1, 2])
def test_linear_prediction_is_the_linearized_gradient_descent(depth):
    config = study.Config(width=64, depth=depth, n_train=12, n_test=5, learning_rate=0.3)
    arrays = jax.tree.map(lambda a: np.asarray(a, np.float64), study.data(config))
    net = study.model(config)
    theta = np.asarray(kernels.analytic(net, arrays.x_train, get="ntk"))
    theta_star = np.asarray(kernels.analytic(net, arrays.x_test, arrays.x_train, get="ntk"))
    rng = np.random.default_rng(0)
    f0_train, f0_test = rng.normal(size=(12, 1)), rng.normal(size=(5, 1))
    y, n, steps = arrays.y_train, 12, 40
    pred_train, pred_test = study.linear_prediction(config, arrays, f0_train, f0_test, steps)
    decay = expm(-config.learning_rate * steps / n * theta)
    np.testing.assert_allclose(pred_train, y + decay @ (f0_train - y), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(pred_test, f0_test + theta_star @ np.linalg.solve(theta, (np.eye(n) - decay) @
                                                                               (y - f0_train)), rtol=1e-7, atol=1e-9)
    # GD time: `steps` steps of size η on ½·mean((f − y)²) of the linear model, each split in 1000:
    # f ← f − (η/1000)·Θ·(f − y)/n (the gradient of ½·mean over the n entries is (f − y)/n)
    one_step = np.eye(n) - config.learning_rate / 1000 * theta / n
    f_train = y + np.linalg.matrix_power(one_step, steps * 1000) @ (f0_train - y)
    # the test outputs move by −(η'/n)·Θ_*x·Σ_s (f_s − y) and the train outputs by −(η'/n)·Θ·Σ_s (f_s − y):
    f_test = f0_test + theta_star @ np.linalg.solve(theta, f_train - f0_train)
    np.testing.assert_allclose(pred_train, f_train, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(pred_test, f_test, rtol=1e-3, atol=1e-4)


def test_standardized_inputs_have_unit_input_kernel_diagonal_and_zero_train_mean():
    x_train, x_test = np.random.default_rng(1).uniform(size=(2, 20, 7))
    a, b = study.standardize(x_train, x_test)
    np.testing.assert_allclose((a ** 2).sum(1) / 7, 1.0, rtol=1e-12)
    np.testing.assert_allclose((b ** 2).sum(1) / 7, 1.0, rtol=1e-12)
    centred = x_train - x_train.mean(0)
    np.testing.assert_allclose(a, centred / np.linalg.norm(centred, axis=1, keepdims=True) * np.sqrt(7))
