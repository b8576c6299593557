"""The random-labels study's pieces: a member's randomised training set (labels replaced by
uniform classes at the corruption rate — agreement with the true labels 1 − r(K−1)/K, checked
against that closed form over many draws; Gaussian inputs with the data's moments), the config
checks, and the claim's ``check`` on hand-made results."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxlearn import data, runner

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"num_train": 500, "widths": (8,), "num_steps": 20, "segment_steps": 10, "eval_every": 5}


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("random_labels", [REPO])


def _config(experiment, **values):
    return runner.parse_config(experiment.config_cls, {**TINY, **values})


@pytest.mark.parametrize("corruption", [0.0, 0.5, 1.0])
def test_labels_replaced_by_uniform_classes_at_the_rate(experiment, corruption):
    module = experiment.module
    config = _config(experiment, corruption=corruption)
    arrays = module.data(config)
    draw = jax.jit(jax.vmap(lambda seed: module.training_set(module.init(config, jax.random.key(seed)), config,
                                                             arrays)))
    x, y = draw(jnp.arange(40))                                   # 40 members x 500 labels
    np.testing.assert_array_equal(x, np.broadcast_to(arrays.x_train, x.shape))  # inputs untouched
    agreement = np.mean(np.asarray(y) == np.asarray(arrays.y_train))
    expected = 1 - corruption * 9 / 10
    assert agreement == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / y.size) + 1e-9)
    if corruption == 1.0:  # uniform over all ten classes, whatever the true one
        counts = np.bincount(np.asarray(y).ravel(), minlength=10) / y.size
        np.testing.assert_allclose(counts, 0.1, atol=0.01)
    x2, y2 = draw(jnp.arange(40))
    np.testing.assert_array_equal(y, y2)                         # a pure function of the member's key


def test_random_inputs_are_gaussian_with_the_data_moments(experiment):
    module = experiment.module
    config = _config(experiment, random_inputs=True)
    arrays = module.data(config)
    x, y = module.training_set(module.init(config, jax.random.key(3)), config, arrays)
    np.testing.assert_array_equal(y, arrays.y_train)
    assert float(jnp.mean(x)) == pytest.approx(float(jnp.mean(arrays.x_train)), abs=0.01)
    assert float(jnp.std(x)) == pytest.approx(float(jnp.std(arrays.x_train)), rel=0.02)
    assert abs(np.corrcoef(np.asarray(x).ravel(), np.asarray(arrays.x_train).ravel())[0, 1]) < 0.02


def test_config_checks_and_data(experiment):
    with pytest.raises(runner.ConfigError, match="eval_every: must divide segment_steps=10"):
        _config(experiment, eval_every=3)
    with pytest.raises(runner.ConfigError, match="corruption"):
        _config(experiment, corruption=1.5)
    arrays = experiment.module.data(_config(experiment, num_train=100))
    ds = data.digits(seed=0)
    np.testing.assert_array_equal(arrays.x_train, ds.x_train[:100])
    np.testing.assert_array_equal(arrays.x_test, ds.x_test)
    with pytest.raises(ValueError, match="num_train: at most 1438"):
        experiment.module.data(_config(experiment, num_train=5000))


GOOD = [(0.0, False, 350), (0.5, False, 1200), (1.0, False, 1400), (0.0, True, 300)]


def _results(settings, test_random=0.09):
    rows = []
    for corruption, random_inputs, fit in settings:
        for seed in range(3):
            test = 0.97 - 0.87 * corruption if not random_inputs else 0.1
            rows.append({"corruption": corruption, "random_inputs": random_inputs, "seed": seed,
                         "fit_step": fit + 25 * seed if fit >= 0 else -1, "train_accuracy": 1.0,
                         "test_accuracy": test_random if corruption == 1.0 else test})
    runs = pd.DataFrame(rows)
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["status"], runs["num_steps"] = "finished", 2500
    return runner.Results(runs, None, ("corruption", "random_inputs", "seed", "num_steps"))


@pytest.mark.parametrize("settings, test_random, message", [
    (GOOD, 0.09, None),
    ([(0.0, False, 350), (0.5, False, 1500), (1.0, False, 1400)], 0.09, "do not grow with the corruption"),
    ([(0.0, False, 800), (0.5, False, 1200), (1.0, False, 1400)], 0.09, "only 1.73x"),
    (GOOD, 0.16, "is not chance"),
    ([(0.0, False, 350), (0.5, False, -1), (1.0, False, 1400)], 0.09, "not fitted to 100% by the cap: 50% corrupted"),
])
def test_check(experiment, settings, test_random, message):
    results = _results(settings, test_random)
    module = experiment.module
    if message is None:
        module.check(results)
        rows = module.summarize(results)
        assert [r["setting"] for r in rows] == ["true labels", "50% corrupted", "random labels", "random inputs"]
        assert rows[0]["fit_step"] == pytest.approx(375)
        assert rows[0]["fit_step_std"] == pytest.approx(np.std([0, 25, 50]))
        return
    with pytest.raises(AssertionError, match=message):
        module.check(results)
