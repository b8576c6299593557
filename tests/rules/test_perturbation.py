"""Forward gradients: exact expectations for quadratics, statistical convergence for networks."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, rules, train

N, D, K = 8, 3, 3


def _quadratic(dtype):
    """f(θ) = ½ θᵀAθ + cᵀθ on θ = {"a": (2,), "b": (1,)}; ∇f = Aθ + c in closed form."""
    rng = np.random.default_rng(0)
    M = rng.normal(size=(3, 3))
    A, c = (M @ M.T + np.eye(3)).astype(dtype), rng.normal(size=3).astype(dtype)
    params = {"a": jnp.asarray([0.3, -1.2], dtype), "b": jnp.asarray([0.7], dtype)}

    def objective(p):
        theta = jnp.concatenate([p["a"], p["b"]])
        return 0.5 * theta @ A @ theta + c @ theta, {"aux": theta.sum()}

    theta = np.concatenate([np.asarray(params["a"]), np.asarray(params["b"])])
    return objective, params, A @ theta + c, A


def _as_tangents(rows, params):
    """Rows (K, 3) of flattened tangents as a pytree like params with a leading axis K."""
    unravel = ravel_pytree(params)[1]
    return jax.vmap(unravel)(jnp.asarray(rows))


def _expectation_points(distribution):
    """Points whose plain mean of (∇f·v)v is E[(∇f·v)v] exactly: all 2³ sign vectors (Rademacher),
    or the 3-point Gauss–Hermite product rule in 3-D, exact for polynomials of degree ≤ 5, with the
    weights folded in as √(n·w) (the estimate is quadratic in v)."""
    if distribution == "rademacher":
        return np.array(list(itertools.product([-1.0, 1.0], repeat=3)))
    nodes, weights = np.array([-np.sqrt(3.0), 0.0, np.sqrt(3.0)]), np.array([1 / 6, 2 / 3, 1 / 6])
    points = np.array(list(itertools.product(nodes, repeat=3)))
    w = np.prod(np.array(list(itertools.product(weights, repeat=3))), axis=1)
    return points * np.sqrt(len(points) * w)[:, None]


@pytest.mark.float64
@pytest.mark.parametrize("distribution", rules.DISTRIBUTIONS)
def test_exactly_unbiased_for_a_quadratic(distribution):
    objective, params, grad, _ = _quadratic(np.float64)
    tangents = _as_tangents(_expectation_points(distribution), params)
    (loss, aux), estimate = jax.jit(rules.forward_gradient_from_tangents, static_argnums=0)(objective, params, tangents)
    np.testing.assert_allclose(ravel_pytree(estimate)[0], grad, rtol=1e-12)
    np.testing.assert_allclose(loss, objective(params)[0], rtol=1e-14)
    assert aux == objective(params)[1]


@pytest.mark.float64
@pytest.mark.parametrize("num_tangents", [1, 5])
@pytest.mark.parametrize("distribution", rules.DISTRIBUTIONS)
def test_estimate_is_the_mean_of_directional_products(num_tangents, distribution):
    """ĝ = (1/K) Σ (∇f·v_k) v_k with ∇f from reverse mode, for the tangents the estimator draws."""
    objective, params, grad, _ = _quadratic(np.float64)
    key = jax.random.key(7)

    @jax.jit
    def estimate_and_tangents(p, k):
        estimate = rules.forward_gradient(num_tangents, distribution)(objective, p, k)[1]
        return estimate, jax.vmap(lambda v: ravel_pytree(v)[0])(rules.sample_tangents(k, p, num_tangents, distribution))

    estimate, V = estimate_and_tangents(params, key)
    V = np.asarray(V)
    np.testing.assert_allclose(ravel_pytree(estimate)[0], (V @ grad) @ V / num_tangents, rtol=1e-12)
    if distribution == "rademacher":
        assert set(np.unique(V)) <= {-1.0, 1.0}


@pytest.mark.float64
def test_derivative_of_the_estimate_is_closed_form():
    """For a quadratic ĝ(θ) = (VᵀV/K)(Aθ + c), so ∂(Σ ĝ)/∂θ = A (VᵀV/K) 1 — grad through the jvp."""
    objective, params, _, A = _quadratic(np.float64)  # θ = (a, b) flattened, Hessian A
    key = jax.random.key(1)

    def total(p):
        return sum(jnp.sum(g) for g in jax.tree.leaves(rules.forward_gradient(4)(objective, p, key)[1]))

    V = np.asarray(jax.vmap(lambda v: ravel_pytree(v)[0])(rules.sample_tangents(key, params, 4, "normal")))
    np.testing.assert_allclose(ravel_pytree(jax.jit(jax.grad(total))(params))[0], A @ (V.T @ V / 4) @ np.ones(3),
                               rtol=1e-12)


def _network(block):
    x = jax.random.normal(jax.random.key(1), (N, 4))
    y = jnp.arange(N) % K
    model = rules.block_mlp([5], K, "tanh", b_std=0.5) if block else nn.mlp([5], K, "tanh", b_std=0.5)
    params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float64))
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    return functools.partial(lambda p, s: objective(p, s, (x, y), None), s=state), params


@pytest.mark.float64
@pytest.mark.parametrize("estimator", ["forward_gradient", "activity_forward_gradient"])
def test_mean_over_many_tangents_converges_to_the_gradient(estimator):
    """Each coordinate of the mean of M independent estimates is within 5 standard errors of the
    reverse-mode gradient, and the standard errors are small (the test has power)."""
    objective, params = _network(block=estimator == "activity_forward_gradient")
    grad = ravel_pytree(jax.grad(lambda p: objective(p)[0])(params))[0]
    est = rules.estimator(estimator, num_tangents=2)
    M = 2000

    @jax.jit
    def samples(keys):
        return jax.vmap(lambda k: ravel_pytree(est(objective, params, k)[1])[0])(keys)

    draws = np.asarray(samples(jax.random.split(jax.random.key(3), M)))
    mean, se = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(M)
    assert np.all(np.abs(mean - grad) <= 5 * se + 1e-12), np.max(np.abs(mean - grad) / (se + 1e-300))
    assert np.max(se) < 0.25 * np.max(np.abs(grad))  # power: an error of a quarter of the gradient would show


@pytest.mark.parametrize("name, blocking", [
    ("forward_gradient", "feedback_alignment, sign_symmetry"),
    ("activity_forward_gradient", "sign_symmetry"),  # only rules downstream of a perturbed block output
])
def test_models_without_forward_mode_raise_naming_the_rule(name, blocking):
    x, y = jnp.ones((N, 4)), jnp.arange(N) % K
    model = rules.block_serial(nn.serial(rules.FADense(5), nn.Relu()), rules.FADense(K, feedback="sign"))
    params, state = jax.eval_shape(lambda k: model.init(k, jax.ShapeDtypeStruct((1, 4), jnp.float32)),
                                   jax.random.key(0))
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)
    objective = train.make_objective(model.apply_with_state, train.softmax_cross_entropy)
    with pytest.raises(ValueError, match=f"^{name}: needs forward-mode autodiff.*rule\\(s\\) {blocking} do not") as err:
        jax.eval_shape(lambda p: rules.estimator(name)(lambda q: objective(q, state, (x, y), None), p,
                                                       jax.random.key(0)),
                       params)
    assert "\n" not in str(err.value).split("\n-----")[0]  # jax appends its traceback note on a new line


@pytest.mark.parametrize("make, match", [
    (lambda: rules.forward_gradient(0), "num_tangents must be a positive int"),
    (lambda: rules.forward_gradient(2.0), "num_tangents must be a positive int"),
    (lambda: rules.forward_gradient(distribution="gaussian"), "distribution must be one of"),
    (lambda: rules.activity_forward_gradient(num_tangents=-1), "num_tangents must be a positive int"),
    (lambda: rules.sample_tangents(jax.random.key(0), {"w": jnp.ones(2, jnp.int32)}, 1), "floating-point parameters"),
])
def test_bad_arguments_are_one_line_errors(make, match):
    with pytest.raises(ValueError, match=match) as err:
        make()
    assert "\n" not in str(err.value)
