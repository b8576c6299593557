"""jaxlearn._jaxpr.interpreter: the base Interpreter re-evaluates a program exactly (nested jit,
closed_call, checkpoint, custom_jvp/custom_vjp rules, loops, constants and literals), keeps custom
rules' derivatives, and applies a subclass's rules inside every call it enters.

Ground truth: the traced function itself, compiled (``jax.jit``): values bit for bit, derivatives
to rounding (entered calls are differentiated as part of the whole program)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr
from jax.extend.core.primitives import closed_call_p

from jaxlearn._jaxpr import Interpreter, trace
from jaxlearn._jaxpr.primitives import CALLS

SCALE = jnp.linspace(0.5, 1.5, 4)  # a program constant


@jax.custom_vjp
def halve_backward(x):
    return jnp.sin(x) * SCALE


halve_backward.defvjp(lambda x: (halve_backward(x), x), lambda x, g: (g * jnp.cos(x) * SCALE / 2,))


@jax.custom_jvp
def soft(x):
    return jnp.log1p(jnp.exp(x))


soft.defjvp(lambda p, t: (soft(p[0]), 3.0 * t[0]))  # deliberately not the derivative


@jax.jit
def inner(x):
    return jnp.tanh(x) @ jnp.ones((4, 4)) + 2.0


def fn(x):
    y = inner(x) * jax.nn.relu(x)                                  # jit; relu: custom_jvp with a jit inside
    y = jax.checkpoint(lambda v: jnp.sin(v) * v)(y)                # remat
    y = halve_backward(y) + soft(y)                                # custom_vjp, custom_jvp
    y, _ = jax.lax.scan(lambda c, _: (jnp.cos(c) + SCALE, None), y, None, length=2)  # a loop
    return jnp.sum(y ** 2)


def _with_closed_call(program):
    """``program`` with its first top-level jit equation turned into a closed_call."""
    jaxpr = program.jaxpr
    eqns = list(jaxpr.eqns)
    k = next(k for k, e in enumerate(eqns) if e.primitive.name == "jit")
    eqns[k] = eqns[k].replace(primitive=closed_call_p, params={"call_jaxpr": eqns[k].params["jaxpr"]})
    return ClosedJaxpr(jaxpr.replace(eqns=eqns), program.consts)


X = jnp.linspace(-1.0, 1.0, 4)


@pytest.mark.parametrize("precision", ["float32", pytest.param("float64", marks=pytest.mark.float64)])
@pytest.mark.parametrize("closed_call", [False, True])
def test_reevaluation_is_exact_and_keeps_custom_derivatives(closed_call, precision):
    x = X.astype(precision)
    program = trace(fn, x).program
    if closed_call:
        program = _with_closed_call(program)
        assert "closed_call" in str(program)

    def again(x):
        return Interpreter().run(program, [x])[0]

    both = jax.jit(lambda f, x: jax.value_and_grad(f)(x), static_argnums=0)
    (value, grad), (want, want_grad) = both(again, x), both(fn, x)
    assert value.dtype == grad.dtype == precision
    np.testing.assert_array_equal(value, want)
    # custom rules are bound whole, so their own derivatives survive (neither is the true one);
    # entered jit calls are differentiated as part of the whole, hence rounding may differ
    np.testing.assert_allclose(grad, want_grad, rtol=4 * jnp.finfo(precision).eps, atol=0)


class _EntersEverything(Interpreter):
    enters = frozenset(CALLS)


def test_entering_custom_rules_evaluates_their_primal_programs():
    program = trace(fn, X).program
    both = jax.jit(lambda f, x: jax.value_and_grad(f)(x), static_argnums=0)
    (value, grad), (want, rules_grad) = both(lambda x: _EntersEverything().run(program, [x])[0], X), both(fn, X)
    np.testing.assert_allclose(value, want, rtol=1e-6)
    # now the true derivative of the primal programs: differs from the rules' (halved, 3·t)
    assert not np.allclose(grad, rules_grad, rtol=1e-2)


class _SinIsCos(Interpreter):
    """A rule per primitive: every ``sin`` becomes ``cos``; constants and literals counted."""

    def __init__(self):
        self.constants = 0

    def constant(self, value):
        self.constants += 1
        return value

    def cos_instead(self, eqn, ins):
        return [jnp.cos(ins[0])]

    rules = {"sin": cos_instead}


def test_rules_apply_inside_entered_calls_only():
    def f(x, sin):
        return jax.jit(lambda v: sin(v) * 2.0)(x) + halve_backward(x).sum()

    program = trace(lambda x: f(x, jnp.sin), X).program
    interpreter = _SinIsCos()
    got = jax.jit(lambda x: interpreter.run(program, [x])[0])(X)
    # the jit call is entered (sin -> cos); the custom_vjp rule's sin is bound whole, unchanged
    np.testing.assert_array_equal(got, jax.jit(lambda x: f(x, jnp.cos))(X))
    assert interpreter.constants >= 1  # the literal 2.0


def test_a_rule_of_the_wrong_arity_fails_loudly():
    class Broken(Interpreter):
        rules = {"sin": lambda self, eqn, ins: []}

    with pytest.raises(ValueError):
        Broken().run(trace(jnp.sin, X).program, [X])
