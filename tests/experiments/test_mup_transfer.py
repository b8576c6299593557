"""mup_transfer's study-specific pieces against independent ground truth: the per-layer Adam
learning rates relative to the base width (TP V Table 3, written out by hand), and the best
learning rate of a loss-vs-lr table (a hand-made table)."""

import pathlib

import jax
import pandas as pd
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("mup_transfer", [REPO]).module


@pytest.mark.parametrize("width,depth", [(64, 1), (256, 1), (1024, 2)])
def test_mup_adam_multipliers_are_base_width_over_width_for_hidden_and_output_weights(module, width, depth):
    config = module.Config(width=width, depth=depth, base_width=64, parameterization="mup")
    mults = module.lr_multipliers(config)
    dense = [layer for layer in mults if layer]  # Dense layers (activations have no params)
    assert len(dense) == depth + 1
    assert dense[0] == {"W": pytest.approx(1.0), "b": pytest.approx(1.0)}  # input layer: fan-in is the data's
    for layer in dense[1:]:  # hidden and output weights: Adam lr ∝ 1/fan-in, fan-in = width
        assert layer["W"] == pytest.approx(64 / width) and layer["b"] == pytest.approx(1.0)


def test_standard_parameterization_has_one_global_learning_rate(module):
    mults = module.lr_multipliers(module.Config(width=512, depth=2, parameterization="standard"))
    assert set(jax.tree.leaves(mults)) == {1.0}


def test_mup_readout_is_drawn_with_variance_two_over_width_squared(module):
    config = module.Config(width=1024, depth=1, parameterization="mup")
    params, _ = module.model(config).init(jax.random.key(0), module._input_spec())
    readout = params[-1]["W"]
    assert float(readout.var()) == pytest.approx(2.0 / 1024 ** 2, rel=0.05)


def test_best_learning_rate_ignores_learning_rates_that_some_seed_did_not_finish(module):
    table = pd.DataFrame({"mean": [1.0, 0.5, 0.2, 0.9], "count": [3, 3, 2, 3]}, index=[1e-3, 2e-3, 4e-3, 8e-3])
    assert module.best_learning_rate(table) == 2e-3
    assert module.best_learning_rate(table.iloc[:0]) is None


@pytest.mark.parametrize("kwargs", [{"parameterization": "ntk"}, {"optimizer": {"name": "sgd"}}])
def test_config_rejects_what_the_multipliers_do_not_cover(module, kwargs):
    from jaxlearn import train
    if "optimizer" in kwargs:
        kwargs = {"optimizer": train.OptimizerSpec(name="sgd")}
    with pytest.raises(ValueError):
        module.Config(**kwargs)
