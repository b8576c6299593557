"""Permutation specs and their application: permuted networks compute the same function
(float64), specs written out by hand, jit/vmap/grad, bad input. Matching (Git Re-Basin) is tested
in test_matching.py."""

import chex
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import nn
from jaxlearn.landscape.permutation import PermutationSpec, apply_permutation, permutation_spec, spec_from_pairs
from tests.landscape.permuted_models import models, numpy_init, random_perms, setup

MODELS = list(models())


@pytest.mark.float64
@pytest.mark.parametrize("name", MODELS)
def test_permuted_network_computes_the_same_function(name):
    model, params, state, x = setup(name, 0)
    spec = permutation_spec(model, x[:1])
    perms = random_perms(spec)
    new_params, new_state = apply_permutation(spec, perms, params, state)
    apply = jax.jit(model.apply, static_argnames="train")
    # with BatchNorm, train mode normalises by batch statistics, eval mode by the (permuted) running ones
    for train in (False, True) if jax.tree.leaves(state) else (False,):
        np.testing.assert_allclose(apply(new_params, x, new_state, train=train), apply(params, x, state, train=train),
                                   rtol=0, atol=1e-12)
    flat, new_flat = ({jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(t)[0]}
                      for t in ((params, state), (new_params, new_state)))
    moved = [k for k in flat if not np.array_equal(flat[k], new_flat[k])]
    assert len(moved) == len(spec.params) + len(spec.state)  # not vacuous: every listed leaf moved


def test_spec_of_an_mlp_and_of_conv_flatten_dense_written_out():
    model = nn.mlp([5, 6], 3)
    spec = permutation_spec(model, jax.ShapeDtypeStruct((1, 4), jnp.float32))
    assert spec.sizes == {"0": 5, "2": 6}
    assert spec.params == {"[0]['W']": (None, ("0", 1)), "[0]['b']": (("0", 1),),
                           "[2]['W']": (("0", 1), ("2", 1)), "[2]['b']": (("2", 1),), "[4]['W']": (("2", 1), None)}
    params, _ = numpy_init(model, jnp.zeros((1, 4)), 0)
    assert spec_from_pairs(params, {"0": [("0/W", 1), ("0/b", 0), ((2, "W"), 0)],
                                    "2": [("2/W", 1), ("2/b", 0), ("4/W", -2)]}) == spec
    model = nn.serial(nn.Conv(4, (3, 3)), nn.BatchNorm(), nn.Relu(), nn.Flatten(), nn.Dense(3))
    spec = permutation_spec(model, jax.ShapeDtypeStruct((1, 5, 6, 2), jnp.float32))
    assert spec.sizes == {"0": 4}
    assert spec.params == {"[0]['W']": (None, None, None, ("0", 1)), "[0]['b']": (("0", 1),),
                           "[1]['scale']": (("0", 1),), "[1]['offset']": (("0", 1),),
                           "[4]['W']": (("0", 3 * 4), None)}  # Flatten: 3x4 positions, channels fastest
    assert spec.state == {"[1]['mean']": (("0", 1),), "[1]['var']": (("0", 1),)}


class _FlaxMLP(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool = False):
        f64 = {"param_dtype": jnp.float64, "dtype": jnp.float64}
        h = linen.Dense(6, **f64)(x)
        h = jnp.tanh(linen.BatchNorm(use_running_average=not train, **f64)(h))
        h = jnp.tanh(linen.Dense(5, **f64)(h))
        return linen.Dense(3, **f64)(h)


@pytest.mark.float64
def test_flax_mlp_with_a_hand_written_spec():
    model = nn.from_linen(_FlaxMLP())
    x = jnp.asarray(np.random.default_rng(1).normal(size=(9, 4)))
    params, state = numpy_init(model, x, 0)
    spec = spec_from_pairs(params, {
        "h0": [("Dense_0/kernel", 1), ("Dense_0/bias", 0), ("BatchNorm_0/scale", 0), ("BatchNorm_0/bias", 0),
               ("batch_stats/BatchNorm_0/mean", 0), ("batch_stats/BatchNorm_0/var", 0), ("Dense_1/kernel", 0)],
        "h1": [("Dense_1/kernel", 1), ("Dense_1/bias", 0), ("Dense_2/kernel", 0)],
    }, state)
    assert spec.sizes == {"h0": 6, "h1": 5}
    assert spec.state["['batch_stats']['BatchNorm_0']['mean']"] == (("h0", 1),)
    new_params, new_state = apply_permutation(spec, random_perms(spec), params, state)
    for train in (False, True):
        np.testing.assert_allclose(model.apply(new_params, x, new_state, train=train),
                                   model.apply(params, x, state, train=train), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"model: layer <root> \(.*\) cannot be permuted.*spec_from_pairs"):
        permutation_spec(model, x[:1])


@pytest.mark.float64
def test_apply_permutation_under_jit_vmap_and_grad():
    model, params, _, x = setup("mlp", 0)
    spec = permutation_spec(model, x[:1])
    many = [random_perms(spec, s) for s in range(3)]
    stacked = {g: np.stack([p[g] for p in many]) for g in spec.sizes}
    batched = jax.jit(jax.vmap(lambda perms: apply_permutation(spec, perms, params)))(stacked)
    for i, perms in enumerate(many):
        chex.assert_trees_all_equal(jax.tree.map(lambda a: a[i], batched), apply_permutation(spec, perms, params))

    def loss(p):
        return jnp.sum(jnp.sin(model.apply(p, x)))

    grad = jax.jit(jax.grad(lambda p: loss(apply_permutation(spec, many[0], p))))(params)
    want_grad = jax.jit(jax.grad(loss))(params)  # the composite is the same function of p
    chex.assert_trees_all_close(grad, want_grad, rtol=1e-12, atol=1e-14)


# -- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_name_the_argument():
    spec_in = jax.ShapeDtypeStruct((1, 4), jnp.float32)
    concat = nn.serial(nn.Dense(3), nn.fanout(2), nn.parallel(nn.Dense(2), nn.Dense(2)), nn.fanin_concat(), nn.Dense(2))
    with pytest.raises(ValueError, match=r"model: layer 3 \(fanin_concat\(-1\)\) cannot be permuted"):
        permutation_spec(concat, spec_in)
    with pytest.raises(TypeError, match="model: expected a jaxlearn.nn Layer"):
        permutation_spec(lambda x: x, spec_in)
    model = nn.mlp([5], 3)
    params, _ = numpy_init(model, jnp.zeros((1, 4)), 0)
    spec = permutation_spec(model, spec_in)
    wide = numpy_init(nn.mlp([6], 3), jnp.zeros((1, 4)), 0)[0]
    with pytest.raises(ValueError, match=r"spec: leaf \[0\]\['W'\] of params has size 6 on axis 1, but group '0'"):
        apply_permutation(spec, {"0": np.arange(5)}, wide)
    with pytest.raises(ValueError, match=r"spec: names leaf \[0\]\['W'\] of params, which params does not have"):
        apply_permutation(spec, {"0": np.arange(5)}, {"W": params[0]["W"]})
    with pytest.raises(ValueError, match=r"perms: expected a dict with one permutation per group \['0'\]"):
        apply_permutation(spec, {"h": np.arange(5)}, params)
    with pytest.raises(ValueError, match=r"perms\['0'\]: not a permutation of 0..4"):
        apply_permutation(spec, {"0": np.array([0, 0, 1, 2, 3])}, params)
    with pytest.raises(TypeError, match="spec: expected a PermutationSpec"):
        apply_permutation({"0": 5}, {"0": np.arange(5)}, params)
    with pytest.raises(ValueError, match=r"pairs\['h'\]: 'Dense_9/kernel' names no leaf of params"):
        spec_from_pairs({"Dense_0": {"kernel": jnp.ones((2, 3))}}, {"h": [("Dense_9/kernel", 1)]})
    with pytest.raises(ValueError, match=r"pairs\['h'\]: 'b' axis 0 has 4 units, other pairs of the group 3"):
        spec_from_pairs({"a": jnp.ones((2, 3)), "b": jnp.ones(4)}, {"h": [("a", 1), ("b", 0)]})
    assert isinstance(spec, PermutationSpec)
