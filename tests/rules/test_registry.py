"""Gradient estimators chosen by name."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import landscape, nn, rules, train

MODEL = rules.block_mlp([4], 2)
OPT = train.optimizer("sgd", learning_rate=0.1)
SPEC = jax.ShapeDtypeStruct((1, 3), jnp.float32)
# The model (and loss) each estimator needs; block_mlp and softmax cross-entropy otherwise.
MODELS = {
    "local_losses": (rules.local_mlp([4], 2), train.softmax_cross_entropy),
    "forward_forward": (rules.ff_mlp([4], 2), rules.forward_forward_loss),
    "equilibrium_propagation": (rules.eqprop_network([4], 2, "sigmoid"), train.softmax_cross_entropy),
    "synthetic_gradients": (rules.synthetic_serial(nn.serial(nn.Dense(4), nn.Relu()), nn.Dense(2)),
                            train.softmax_cross_entropy),
}


def _estimator(name, model):
    if name == "sam":
        return rules.estimator(name, rho=0.05)
    if name != "ewc":
        return rules.estimator(name)
    params, _ = model.init(jax.random.key(5), SPEC)  # a previous task's solution and its Fisher
    return rules.estimator(name, anchor=params, fisher=jax.tree.map(jnp.ones_like, params), strength=1.0)


@pytest.mark.parametrize("name", sorted(rules.ESTIMATORS))
def test_every_named_estimator_trains_a_population_under_jit_and_vmap(name):
    model, loss = MODELS.get(name, (MODEL, train.softmax_cross_entropy))
    population = jax.jit(jax.vmap(lambda k: train.init(model, OPT, k, SPEC)))(jax.random.split(jax.random.key(0), 2))
    step = train.make_step(model.apply_with_state, loss, OPT, grad_estimator=_estimator(name, model))
    batch = (jax.random.normal(jax.random.key(1), (4, 3)), jnp.array([0, 1, 0, 1]))
    # two steps: synthetic-gradient predictors start at zero, so hidden blocks first move on step 2
    new, metrics = jax.jit(jax.vmap(lambda s, b: step(step(s, b)[0], b), in_axes=(0, None)))(population, batch)
    assert np.all(np.isfinite(metrics["loss"])) and np.all(new.step == 2)
    delta = [np.asarray(b - a) for a, b in zip(jax.tree.leaves(population.params), jax.tree.leaves(new.params))]
    assert all(np.any(d != 0) for d in delta), name
    assert not np.allclose(delta[0][0], delta[0][1])  # each member its own update


def test_backprop_is_trains_default_and_arguments_pass_through():
    assert rules.estimator("backprop") is train.backprop
    objective = lambda p: (jnp.sum(p["w"] ** 2), ())  # noqa: E731
    params = {"w": jnp.arange(3.0)}
    one = rules.estimator("forward_gradient", num_tangents=3, distribution="rademacher")(objective, params,
                                                                                         jax.random.key(0))
    ref = rules.forward_gradient(3, "rademacher")(objective, params, jax.random.key(0))
    np.testing.assert_array_equal(one[1]["w"], ref[1]["w"])


@pytest.mark.parametrize("name, kwargs, match", [
    ("forward_gradien", {}, r"unknown name 'forward_gradien' \(did you mean 'forward_gradient'\?\)"),
    ("DFA", {}, "expected one of"),
    ("forward_gradient", {"num_tangent": 2}, r"unknown argument 'num_tangent' \(did you mean 'num_tangents'\?\)"),
    ("dfa", {"num_tangents": 2}, "estimator 'dfa': unknown argument 'num_tangents'"),
    ("forward_gradient", {"num_tangents": 0}, "num_tangents must be a positive int"),
    ("equilibrium_propagation", {"beta": 0.0}, "beta must be a positive"),
    ("ewc", {"anchor": {}, "fisher": {}, "strength": -1.0}, "strength"),
    ("sam", {"rho": 0.05, "adaptiv": True},
     r"estimator 'sam': unknown argument 'adaptiv' \(did you mean 'adaptive'\?\)"),
    ("sam", {"rho": -0.05}, "rho: expected a radius >= 0"),
])
def test_bad_names_and_arguments_are_one_line_errors(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        rules.estimator(name, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_by_name_is_landscape_sam(adaptive):
    """The registry's "sam" (Foret et al. 2021; ASAM, Kwon et al. 2021, with adaptive) is the estimator
    ``landscape.sam`` builds: the same loss and the same gradients on a small model and batch."""
    params, state = MODEL.init(jax.random.key(2), SPEC)
    objective = train.make_objective(MODEL.apply_with_state, train.softmax_cross_entropy)
    batch = (jax.random.normal(jax.random.key(3), (4, 3)), jnp.array([0, 1, 1, 0]))

    def closed(p):
        return objective(p, state, batch, jax.random.key(4))

    def run(estimator):
        (loss, (_, metrics)), grads = jax.jit(lambda p: estimator(closed, p, jax.random.key(5)))(params)
        return loss, metrics["loss"], grads

    assert landscape.sam is rules.sam and landscape.sam_perturbation is rules.sam_perturbation
    by_name = run(rules.estimator("sam", rho=0.05, adaptive=adaptive))
    direct = run(landscape.sam(0.05, adaptive=adaptive))
    chex.assert_trees_all_equal(by_name, direct)
    backprop = run(train.backprop)
    np.testing.assert_array_equal(by_name[0], backprop[0])  # the loss at w, unperturbed
    assert not np.allclose(ravel_pytree(by_name[2])[0], ravel_pytree(backprop[2])[0])  # the gradient at w + ε̂
