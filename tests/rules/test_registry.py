"""Gradient estimators chosen by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import rules, train


MODEL = rules.block_mlp([4], 2)
OPT = train.optimizer("sgd", learning_rate=0.1)


@pytest.fixture(scope="module")
def population():
    """Two members (seeds 0, 1) of one model, initialised once for every estimator."""
    init = jax.vmap(lambda k: train.init(MODEL, OPT, k, jax.ShapeDtypeStruct((1, 3), jnp.float32)))
    return jax.jit(init)(jax.random.split(jax.random.key(0), 2))


@pytest.mark.parametrize("name", sorted(rules.ESTIMATORS))
def test_every_named_estimator_trains_a_population_under_jit_and_vmap(name, population):
    step = train.make_step(MODEL.apply_with_state, train.softmax_cross_entropy, OPT, grad_estimator=rules.estimator(name))
    batch = (jax.random.normal(jax.random.key(1), (4, 3)), jnp.array([0, 1, 0, 1]))
    new, metrics = jax.jit(jax.vmap(step, in_axes=(0, None)))(population, batch)
    assert np.all(np.isfinite(metrics["loss"])) and np.all(new.step == 1)
    delta = [np.asarray(b - a) for a, b in zip(jax.tree.leaves(population.params), jax.tree.leaves(new.params))]
    assert all(np.any(d != 0) for d in delta)
    assert not np.allclose(delta[0][0], delta[0][1])  # each member its own update


def test_backprop_is_trains_default_and_arguments_pass_through():
    assert rules.estimator("backprop") is train.backprop
    objective = lambda p: (jnp.sum(p["w"] ** 2), ())  # noqa: E731
    params = {"w": jnp.arange(3.0)}
    one = rules.estimator("forward_gradient", num_tangents=3, distribution="rademacher")(objective, params, jax.random.key(0))
    ref = rules.forward_gradient(3, "rademacher")(objective, params, jax.random.key(0))
    np.testing.assert_array_equal(one[1]["w"], ref[1]["w"])


@pytest.mark.parametrize("name, kwargs, match", [
    ("forward_gradien", {}, r"unknown name 'forward_gradien' \(did you mean 'forward_gradient'\?\)"),
    ("DFA", {}, "expected one of"),
    ("forward_gradient", {"num_tangent": 2}, r"unknown argument 'num_tangent' \(did you mean 'num_tangents'\?\)"),
    ("dfa", {"num_tangents": 2}, "estimator 'dfa': unknown argument 'num_tangents'"),
    ("forward_gradient", {"num_tangents": 0}, "num_tangents must be a positive int"),
])
def test_bad_names_and_arguments_are_one_line_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        rules.estimator(name, **kwargs)
    assert "\n" not in str(err.value)
