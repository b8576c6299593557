"""jaxlearn._jaxpr.primitives: every set names primitives the installed JAX emits for the
operation it stands for, and each set has its property, checked numerically on the operations.

Ground truth: the primitive names in ``jax.make_jaxpr`` of plain jax code, and the defining
property (linearity, acting entry by entry, a bijection of entries) evaluated on random inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn._jaxpr import primitives as prims
from jaxlearn._jaxpr import walk


def _names(fn, *args):
    return {eqn.primitive.name for eqn in walk(jax.make_jaxpr(fn)(*args))}


X = jax.random.normal(jax.random.key(0), (3, 4))
Y = jax.random.normal(jax.random.key(1), (3, 4))


@jax.custom_vjp
def _rule(x):
    return x


_rule.defvjp(lambda x: (x, None), lambda _, g: (g,))

# set -> operations, each emitting (among others) a primitive of that set
EMITTED = {
    "RESHAPES": [lambda x: x.reshape(12), lambda x: jnp.squeeze(x[:1], 0)],
    "REARRANGEMENTS": [lambda x: x.T, lambda x: jnp.flip(x, 0)],
    "BROADCASTS": [lambda x: jnp.broadcast_to(x[0], (3, 4))],
    "CONVERSIONS": [lambda x: x.astype(jnp.float16)],
    "LINEAR_UNARY": [lambda x: x[1:], lambda x: jnp.sum(x, 0), lambda x: -x],
    "PRODUCTS": [lambda x: x @ x.T, lambda x: jax.lax.conv(x[None, None], x[None, None, :2, :2], (1, 1), "VALID")],
    "ELEMENTWISE": [jnp.tanh, jnp.abs, lambda x: jnp.where(x > 0, x, 2 * x), lambda x: x ** 3, jax.lax.erf],
    "TRANSPARENT_CALLS": [jax.jit(jnp.sin)],
    "CUSTOM_RULE_CALLS": [jax.nn.relu, _rule],
    "CUSTOM_VJP_CALLS": [_rule],
    "REMAT_CALLS": [jax.checkpoint(jnp.sin)],
}


@pytest.mark.parametrize("name", list(EMITTED))
def test_each_set_names_what_jax_emits(name):
    for op in EMITTED[name]:
        assert _names(op, X) & getattr(prims, name), (name, _names(op, X))
    assert _names(lambda x: jax.jvp(_rule, (x,), (x,)), X) >= {prims.CUSTOM_LINEARIZATION}


def test_the_calls_partition_and_the_sets_nest():
    kinds = (prims.TRANSPARENT_CALLS, prims.CUSTOM_RULE_CALLS, prims.REMAT_CALLS)
    assert frozenset().union(*kinds) == set(prims.CALLS) and sum(map(len, kinds)) == len(prims.CALLS)
    assert prims.CUSTOM_VJP_CALLS <= prims.CUSTOM_RULE_CALLS
    assert prims.RESHAPES <= prims.REARRANGEMENTS <= prims.LINEAR_UNARY and prims.BROADCASTS <= prims.LINEAR_UNARY
    assert prims.PRODUCTS <= prims.BILINEAR


def _ops_only_in(ops, allowed):
    """``ops``, checked to use only primitives of ``allowed`` (the ones the property covers) and
    calls (jnp functions are often jitted)."""
    for op in ops:
        assert _names(op, X) - prims.TRANSPARENT_CALLS <= allowed, _names(op, X) - allowed
    return ops


def test_linear_unary_are_linear():
    ops = _ops_only_in([lambda x: x.reshape(12), lambda x: x.T, lambda x: jnp.flip(x, 1), lambda x: x[1:, ::2],
                        lambda x: jnp.sum(x, 1), lambda x: -x, lambda x: jnp.broadcast_to(x, (2, 3, 4))],
                       prims.LINEAR_UNARY)
    for op in ops:
        np.testing.assert_allclose(op(2.0 * X - 3.0 * Y), 2.0 * op(X) - 3.0 * op(Y), rtol=1e-5, atol=1e-5)


def test_rearrangements_keep_every_entry_once():
    ops = _ops_only_in([lambda x: x.reshape(2, 6), lambda x: x.T, lambda x: jnp.flip(x, 0),
                        lambda x: x.reshape(1, 3, 4)], prims.REARRANGEMENTS)
    for op in ops:
        np.testing.assert_array_equal(np.sort(np.ravel(op(X))), np.sort(np.ravel(X)))


def test_elementwise_commute_with_a_permutation_of_entries():
    perm = jax.random.permutation(jax.random.key(2), X.size)
    ops = _ops_only_in([lambda x: jnp.where(x > 0, jnp.tanh(x), 2 * jnp.abs(x)), jax.nn.relu,
                        lambda x: jnp.clip(x, -0.5, 0.5) ** 3 + jax.lax.erf(x)],
                       prims.ELEMENTWISE | {"custom_jvp_call"})
    for op in ops:
        np.testing.assert_array_equal(op(X.ravel()[perm]), op(X).ravel()[perm])
