"""forward_mode_safe names the custom_vjp rules that block jax.jvp; jaxlearn's forward-mode users
(Hessian-vector products, quadratic forms, forward gradients) fall back or say so."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import landscape, nn, rules

SPEC = jax.ShapeDtypeStruct((1, 4), jnp.float32)


@jax.custom_vjp
def halve_backward(x):
    return x


halve_backward.defvjp(lambda x: (x, None), lambda _, g: (g / 2,))


@pytest.mark.parametrize("model, blocking", [
    (nn.mlp([5], 3), ()),
    (nn.serial(rules.FADense(5), nn.Relu(), nn.Dense(3)), ("feedback_alignment",)),
    (nn.serial(rules.FADense(5, feedback="sign"), nn.Relu(), rules.FADense(3)),
     ("feedback_alignment", "sign_symmetry")),
    (rules.block_mlp([5, 5], 3), ()),
    (rules.block_serial(nn.serial(nn.Dense(5), nn.Elementwise(halve_backward)), nn.Dense(3)), ("halve_backward",)),
    (nn.serial(nn.Dense(5), rules.FewBit("relu", 2), nn.Dense(3)), None),  # another rule file's custom_vjp
], ids=["mlp", "fa", "fa+sign", "block_mlp", "custom", "few_bit"])
def test_models(model, blocking):
    report = rules.forward_mode_safe(model, SPEC)
    if blocking is None:
        assert not report.safe and len(report.blocking) == 1
    else:
        assert report.safe == (blocking == ()) and bool(report) == report.safe and report.blocking == blocking


def test_functions_nested_in_jit_and_scan_and_jvp_really_raises():
    def fn(x):
        y = jax.jit(halve_backward)(x)
        return jax.lax.scan(lambda c, _: (halve_backward(c) * 2.0, None), y, None, length=3)[0]

    x = jnp.ones(3)
    report = rules.forward_mode_safe(fn, x)
    assert report == rules.ForwardModeReport(False, ("halve_backward",))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):  # the claim the report makes
        jax.jvp(fn, (x,), (x,))
    assert rules.forward_mode_safe(lambda x: halve_backward(jnp.ones(3)) * x, x).safe  # a rule off the tangent path
    # grad of a rule is plain
    assert rules.forward_mode_safe(jax.grad(lambda x: jnp.sum(halve_backward(x) ** 2)), x).safe


def test_require_forward_mode_is_a_one_line_error():
    rules.require_forward_mode("me", jnp.sin, jnp.ones(2))
    with pytest.raises(ValueError, match=r"^me: needs forward-mode autodiff \(jax.jvp\), which the custom_vjp "
                                         r"rule\(s\) halve_backward do not define") as err:
        rules.require_forward_mode("me", halve_backward, jax.ShapeDtypeStruct((2,), jnp.float32))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="example_args: a model takes exactly one input_spec"):
        rules.forward_mode_safe(nn.mlp([2], 2))
    with pytest.raises(TypeError, match="fn_or_model: expected a function or a jaxlearn.nn Layer"):
        rules.forward_mode_safe(3)


@pytest.mark.float64
@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_hessian_vector_products_through_fa_fall_back_to_reverse_mode(feedback):
    """landscape.hvp/quadratic_form on an FA model: the derivative of the rule's gradient, checked
    against central finite differences of that gradient (float64)."""
    model = nn.serial(rules.FADense(5, feedback=feedback), nn.Tanh(), rules.FADense(3, feedback=feedback))
    params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float64))
    x, y = jax.random.normal(jax.random.key(1), (7, 4)), jax.random.normal(jax.random.key(2), (7, 3))

    def loss(p):
        return 0.5 * jnp.mean((model.apply(p, x, state) - y) ** 2)

    assert not rules.forward_mode_safe(loss, params).safe
    v = jax.tree.map(lambda p: jax.random.normal(jax.random.key(3), p.shape, p.dtype), params)
    hv = jax.jit(lambda p, v: landscape.hvp(loss, p, v))(params, v)
    flat, unravel = ravel_pytree(params)
    dv = ravel_pytree(v)[0]
    grad = jax.jit(lambda t: ravel_pytree(jax.grad(loss)(unravel(t)))[0])
    eps = 1e-5
    fd = (grad(flat + eps * dv) - grad(flat - eps * dv)) / (2 * eps)
    np.testing.assert_allclose(ravel_pytree(hv)[0], fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jax.jit(lambda p, v: landscape.quadratic_form(loss, p, v))(params, v), dv @ fd,
                               rtol=1e-6)
