"""Permutation matching (Git Re-Basin; Ainsworth, Hayase & Srinivasa 2022, §3): weight and
activation matching equal brute force over all permutations, planted permutations are recovered,
and matching two MNIST-1D MLPs lowers their loss barrier."""

import itertools
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlearn import data, nn
from jaxlearn import landscape as ls
from jaxlearn.landscape.connectivity import barrier, linear_path
from jaxlearn.landscape.matching import activation_matching, hidden_activations, weight_matching
from jaxlearn.landscape.permutation import apply_permutation, permutation_spec, spec_from_pairs
from tests.landscape.permuted_models import numpy_init, random_perms, setup


def _np_tree(tree):
    return jax.tree.map(np.asarray, tree)


# -- matching against brute force --------------------------------------------------------------
def _mlp_pair(widths, seeds=(0, 1)):
    model = nn.mlp(widths, 2, b_std=0.5)
    x = jnp.zeros((1, 3), jnp.result_type(float))
    return model, [numpy_init(model, x, s)[0] for s in seeds]


def _permute_by_hand(params, perms):
    """The MLP ``Dense → act → Dense → ... → Dense`` permuted with numpy indexing (groups "0", "2", ...)."""
    p = _np_tree(params)
    out = [dict(layer) if layer else layer for layer in p]
    for i in range(0, len(p) - 1, 2):
        pi = perms[str(i)]
        out[i]["W"], out[i]["b"] = out[i]["W"][:, pi], out[i]["b"][pi]
        out[i + 2]["W"] = out[i + 2]["W"][pi, :]
    return tuple(out)


def _inner(a, b):
    return sum(float(np.sum(u * v)) for u, v in zip(jax.tree.leaves(_np_tree(a)), jax.tree.leaves(b)))


@pytest.mark.float64
@pytest.mark.parametrize("seeds", [(0, 1), (2, 3), (4, 5)])
def test_weight_matching_of_one_hidden_layer_equals_brute_force(seeds):
    model, (a, b) = _mlp_pair([4], seeds)
    values = {pi: _inner(a, _permute_by_hand(b, {"0": np.array(pi)})) for pi in itertools.permutations(range(4))}
    best = max(values, key=values.get)
    result = weight_matching(permutation_spec(model, jax.ShapeDtypeStruct((1, 3), jnp.float64)), a, b)
    assert tuple(result.perms["0"]) == best
    chex.assert_trees_all_equal(result.params, _permute_by_hand(b, {"0": np.array(best)}))


@pytest.mark.float64
def test_weight_matching_of_two_layers_is_coordinatewise_optimal():
    model, (a, b) = _mlp_pair([3, 3], (0, 1))
    result = weight_matching(permutation_spec(model, jax.ShapeDtypeStruct((1, 3), jnp.float64)), a, b)
    perms = {g: np.asarray(p) for g, p in result.perms.items()}
    found = _inner(a, _permute_by_hand(b, perms))
    every = [np.array(p) for p in itertools.permutations(range(3))]
    best = max(_inner(a, _permute_by_hand(b, {"0": p, "2": q})) for p in every for q in every)
    assert found <= best + 1e-12
    for group in perms:  # no single group can improve it
        for p in every:
            assert _inner(a, _permute_by_hand(b, {**perms, group: p})) <= found + 1e-12


@pytest.mark.float64
@pytest.mark.parametrize("normalize", [False, True])
def test_activation_matching_equals_brute_force(normalize):
    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(2, 20, 4)) + rng.normal(size=4)  # per-unit offsets: correlation ≠ inner product
    params_b = {"w": jnp.arange(4.0)}
    spec = spec_from_pairs(params_b, {"h": [("w", 0)]})

    def standardize(z):
        return (z - z.mean(0)) / z.std(0) if normalize else z

    cost = {pi: np.sum((standardize(z_a) - standardize(z_b)[:, list(pi)]) ** 2)
            for pi in itertools.permutations(range(4))}
    best = min(cost, key=cost.get)
    result = activation_matching(spec, {"h": z_a}, {"h": [z_b[:7], z_b[7:]]}, params_b, normalize=normalize)
    assert tuple(result.perms["h"]) == best
    np.testing.assert_array_equal(result.params["w"], np.array(best, float))


@pytest.mark.float64
@pytest.mark.parametrize("method", ["weights", "activations"])
@pytest.mark.parametrize("name", ["mlp", "cnn_flatten", "resnet"])
def test_matching_recovers_a_planted_permutation(name, method):
    model, params, _, x = setup(name, 0, n=64)
    spec = permutation_spec(model, x[:1])
    perms = random_perms(spec, 1)
    params_b = apply_permutation(spec, perms, params)
    if method == "weights":
        result = weight_matching(spec, params, params_b, seed=3)
    else:
        acts = jax.jit(lambda p: hidden_activations(model, p, x))
        result = activation_matching(spec, acts(params), acts(params_b), params_b)
    for group, pi in perms.items():
        np.testing.assert_array_equal(result.perms[group], np.argsort(pi))  # the inverse permutation
    chex.assert_trees_all_equal(result.params, params)


def test_matching_bad_inputs_name_the_argument():
    model = nn.mlp([5], 3)
    params, _ = numpy_init(model, jnp.zeros((1, 4)), 0)
    spec = permutation_spec(model, jax.ShapeDtypeStruct((1, 4), jnp.float32))
    other = numpy_init(nn.mlp([5, 5], 3), jnp.zeros((1, 4)), 0)[0]
    with pytest.raises(ValueError, match=r"params_b: structure differs from params_a"):
        weight_matching(spec, params, other)
    with pytest.raises(ValueError, match=r"activations_a: no activations for group '0'"):
        activation_matching(spec, {}, {}, params)


# -- Git Re-Basin on MNIST-1D --------------------------------------------------------------------
def _train_mlp(model, x, y, seed, steps=300, batch=100):
    """Adam on fixed minibatches from a numpy-drawn init (W ~ N(0, 1/fan_in), b = 0)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: model.init(k, x[:1])[0], jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[0]) if len(s.shape) == 2
                                                else np.zeros(s.shape), s.dtype), shapes)
    return _fit(params, x.reshape(-1, batch, x.shape[-1]), y.reshape(-1, batch), model.apply, steps)


def _fit(params, xb, yb, apply, steps):
    opt = optax.adam(3e-3)

    def body(carry, i):
        p, o = carry
        g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, xb[i]), yb[i]).mean())(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    return jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps) % xb.shape[0])[0][0]


_fit = jax.jit(_fit, static_argnames=("apply", "steps"))


@pytest.mark.slow
def test_matching_lowers_the_barrier_between_two_mnist1d_mlps():
    start = time.perf_counter()
    ds = data.mnist1d(num_samples=1000, seed=0)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    model = nn.mlp([256, 256], 10, activation="relu")
    a, b = (_train_mlp(model, x, y, seed) for seed in (1, 2))
    objective = ls.ModelObjective(model.apply, ls.softmax_cross_entropy, (x, y), None)
    path = jax.jit(lambda p, q: linear_path(objective, p, q, 11))
    before = path(a, b)
    spec = permutation_spec(model, ds.input_spec)
    after = path(a, weight_matching(spec, a, b).params)
    acts = jax.jit(lambda p: hidden_activations(model, p, jnp.asarray(ds.x_test)))  # held-out inputs
    after_act = path(a, activation_matching(spec, acts(a), acts(b), b).params)
    b_before, b_after, b_act = (barrier(p["loss"], p["alpha"]) for p in (before, after, after_act))
    print(f"\nmnist1d 40-256-256-10 relu: endpoint losses {float(before['loss'][0]):.3f}, "
          f"{float(before['loss'][-1]):.3f}; barrier (linear) {float(b_before.linear):.3f} -> "
          f"{float(b_after.linear):.3f} (weight matching), {float(b_act.linear):.3f} (activation matching); "
          f"(mean) {float(b_before.mean):.3f} -> {float(b_after.mean):.3f}, {float(b_act.mean):.3f}; "
          f"{time.perf_counter() - start:.1f} s")
    for matched in (after, after_act):  # b itself is unchanged as a function
        np.testing.assert_allclose(matched["loss"][-1], before["loss"][-1], rtol=1e-5)
    assert float(before["loss"][0]) < 0.2 and float(b_before.linear) > 0.2  # trained, and a real barrier to remove
    for matched in (b_after, b_act):
        assert float(matched.linear) <= 0.5 * float(b_before.linear)
        assert float(matched.mean) <= 0.5 * float(b_before.mean)
