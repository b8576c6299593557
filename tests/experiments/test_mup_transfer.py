"""mup_transfer's study-specific pieces against independent ground truth: the per-layer Adam
learning rates relative to the base width (TP V Table 3, written out by hand), the best learning
rate of a loss-vs-lr table (a hand-made table), and the dynamic parameterization against each
parameterization's own network."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def module():
    return runner.load_experiment("mup_transfer", [REPO]).module


@pytest.mark.parametrize("width,depth", [(64, 1), (256, 1), (1024, 2)])
def test_mup_adam_multipliers_are_base_width_over_width_for_hidden_and_output_weights(module, width, depth):
    config = module.Config(width=width, depth=depth, base_width=64, mup=True)
    mults = module.lr_multipliers(config)
    dense = [layer for layer in mults if layer]  # Dense layers (activations have no params)
    assert len(dense) == depth + 1
    assert dense[0] == {"W": pytest.approx(1.0), "b": pytest.approx(1.0)}  # input layer: fan-in is the data's
    for layer in dense[1:]:  # hidden and output weights: Adam lr ∝ 1/fan-in, fan-in = width
        assert layer["W"] == pytest.approx(64 / width) and layer["b"] == pytest.approx(1.0)


def test_standard_parameterization_has_one_global_learning_rate(module):
    mults = module.lr_multipliers(module.Config(width=512, depth=2, mup=False))
    assert set(jax.tree.leaves(mults)) == {1.0}


def test_mup_readout_is_drawn_with_variance_two_over_width_squared(module):
    config = module.Config(width=1024, depth=1, mup=True)
    params, _ = module.model(config).init(jax.random.key(0), module._input_spec())
    readout = params[-1]["W"]
    assert float(readout.var()) == pytest.approx(2.0 / 1024 ** 2, rel=0.05)


def test_best_learning_rate_ignores_learning_rates_that_some_seed_did_not_finish(module):
    table = pd.DataFrame({"mean": [1.0, 0.5, 0.2, 0.9], "count": [3, 3, 2, 3]}, index=[1e-3, 2e-3, 4e-3, 8e-3])
    assert module.best_learning_rate(table) == 2e-3
    assert module.best_learning_rate(table.iloc[:0]) is None


def test_config_rejects_what_the_multipliers_do_not_cover(module):
    from jaxlearn import train
    with pytest.raises(ValueError, match="optimizer"):
        module.Config(optimizer=train.OptimizerSpec(name="sgd"))


def test_a_traced_mup_gives_each_member_its_parameterizations_draw_and_learning_rates(module):
    """Inside the runner's group ``mup`` is traced (one program for both parameterizations): a
    member's initial params are what its own network (``model(config)``, the parameterization
    fixed) draws from the same key, and its learning-rate multipliers are that parameterization's."""
    config = module.Config(width=32, depth=2, base_width=16)
    spec, key = module._input_spec(), jax.random.key(3)
    flags = jnp.array([False, True])

    def member(mup):
        member_config = dataclasses.replace(config, mup=mup)
        return module.ParameterizedDraw(member_config).init(key, spec)[0], module.lr_multipliers(member_config)

    drawn, multipliers = jax.jit(jax.vmap(member))(flags)
    for i, mup in enumerate((False, True)):
        member_config = dataclasses.replace(config, mup=mup)
        net = module.model(member_config)
        expected = jax.jit(lambda k, net=net: net.init(k, spec)[0])(key)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6), drawn, expected)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6), multipliers,
                     module.lr_multipliers(member_config))
    assert float(jax.tree.leaves(multipliers)[-2][1]) == pytest.approx(0.5)  # muP readout W: 16/32
