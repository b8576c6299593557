"""Equilibrium propagation against an independent dense implicit gradient, finite differences, and
the β → 0 error orders (O(β) one-sided, O(β²) symmetric)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, train
from jaxlearn.rules.equilibrium import EQPROP_ACTIVATIONS, eqprop_network, equilibrium_propagation, hopfield_energy

N, D, WIDTHS, K = 5, 4, (6, 5), 3
TOL64 = 1e-12
RHO = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "hard_sigmoid": lambda u: jnp.clip(u, 0.0, 1.0)}


@functools.lru_cache(maxsize=None)
def _network(activation, tol=TOL64, max_steps=5000):
    # One network object per setting, so jitted functions taking it as a static argument are shared.
    return eqprop_network(list(WIDTHS), K, activation, W_std=0.8, b_std=0.5, step_size=0.5, max_steps=max_steps,
                          tol=tol)


@functools.lru_cache(maxsize=None)
def _shared_problem():
    # One compiled program (eager ops each compile); init does not depend on the activation.
    def make():
        x = jax.random.uniform(jax.random.key(1), (N, D), jnp.float64, -1.0, 1.0)
        d = jax.random.uniform(jax.random.key(2), (N, K), jnp.float64)
        return (x, d, *_network("sigmoid").init(jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float64)))

    return jax.jit(make)()


def _problem(activation):
    """Inputs, targets, params and state of the float64 problem; hard_sigmoid inputs lie in [0, 1]."""
    x, d, params, state = _shared_problem()
    return ((x + 1) / 2 if activation == "hard_sigmoid" else x), d, params, state


# -- an independent reference: eq. (1) in matrix form over all units, Newton's fixed point, dense solve ---

def _dense_energy(params, x, s, activation):
    """E = ½‖s‖² − ½ ρ̃ᵀ 𝕎 ρ̃ − bᵀρ(s) for one example: ρ̃ = (x, ρ(s)) over input and free units,
    𝕎 symmetric with zero diagonal and blocks W_l, W_lᵀ between adjacent layers (Scellier & Bengio eq. (1))."""
    sizes = [D, *WIDTHS, K]
    offsets = np.cumsum([0, *sizes])
    big = jnp.zeros((offsets[-1], offsets[-1]), s.dtype)
    for l, p in enumerate(params):
        big = big.at[offsets[l]:offsets[l + 1], offsets[l + 1]:offsets[l + 2]].set(p["W"])
    big = big + big.T
    r = jnp.concatenate([x, RHO[activation](s)])
    b = jnp.concatenate([p["b"] for p in params])
    return 0.5 * s @ s - 0.5 * r @ big @ r - b @ RHO[activation](s)


@functools.partial(jax.jit, static_argnums=3)
def _dense_reference(params, x, d, activation):
    """Per example, the fixed point by the test's own plain gradient descent on the dense energy (from
    0, as the network starts; its convergence is asserted by the caller); then
    dJ/d(params, x) = −(∂²E/∂θ∂s)ᵀ (∂²E/∂s²)⁻¹ ∂C/∂s
    with C = train.mse, by dense solves. Also returns ‖∂E/∂s‖ and the smallest Hessian eigenvalue."""
    grad = jax.grad(_dense_energy, argnums=2)
    hess = jax.hessian(_dense_energy, argnums=2)

    def fixed_point(xe):
        s = jnp.zeros(sum(WIDTHS) + K, x.dtype)
        return jax.lax.fori_loop(0, 2000, lambda i, s: s - 0.5 * grad(params, xe, s, activation), s)

    states = jax.vmap(fixed_point)(x)
    y = states[:, -K:]
    dC_dy = jax.grad(train.mse)(y, d)
    H = jax.vmap(hess, (None, 0, 0, None))(params, x, states, activation)
    rhs = jnp.concatenate([jnp.zeros((N, sum(WIDTHS)), x.dtype), dC_dy], axis=1)
    lam = jnp.linalg.solve(H, rhs[..., None])[..., 0]

    def coupling(p, xx):
        gs = jax.vmap(grad, (None, 0, 0, None))(p, xx, states, activation)
        return -jnp.sum(gs * lam)

    residual = jnp.max(jnp.linalg.norm(jax.vmap(grad, (None, 0, 0, None))(params, x, states, activation), axis=1))
    return y, jax.grad(coupling, argnums=(0, 1))(params, x), residual, jnp.min(jnp.linalg.eigvalsh(H))


@functools.lru_cache(maxsize=None)
def _reference(activation):
    """(y, (dJ/dparams, dJ/dx)) for the float64 problem of ``activation``, checked to be a strict minimum."""
    x, d, params, _ = _problem(activation)
    y, grads, residual, min_eig = _dense_reference(params, x, d, activation)
    assert residual < 1e-13 and min_eig > 0
    return y, grads


@functools.partial(jax.jit, static_argnums=0)
def _backprop_grads(net, params, x, d, scale=np.float64(1.0)):
    """Gradients of ``scale · mse`` (``scale`` traced: one program for every scale)."""
    return jax.grad(lambda p, xx: scale * train.mse(net.apply(p, xx), d), argnums=(0, 1))(params, x)


@functools.partial(jax.jit, static_argnums=0)
def _ep_grads(net, params, x, d, betas):
    """EP estimates for every β, one-sided and symmetric (one program), flattened: ``(2, len(betas), P)``."""
    def objective(p):
        return train.mse(net.apply(p, x), d), None

    def estimates(b):
        return jnp.stack([ravel_pytree(equilibrium_propagation(b, symmetric)(objective, params, None)[1])[0]
                          for symmetric in (False, True)])

    return jnp.moveaxis(jax.vmap(estimates)(betas), 1, 0)


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


# -- float64: correctness -------------------------------------------------------------------------

@pytest.mark.float64
def test_energy_is_eq1_in_matrix_form():
    x, _, params, _ = _problem("sigmoid")

    @jax.jit
    def both(params, x):
        hs = tuple(jax.random.uniform(jax.random.key(3 + l), (N, n), jnp.float64) for l, n in enumerate((*WIDTHS, K)))
        dense = jax.vmap(_dense_energy, (None, 0, 0, None))
        return [(hopfield_energy(params, x, hs, a), jnp.sum(dense(params, x, jnp.concatenate(hs, axis=1), a)))
                for a in EQPROP_ACTIVATIONS]

    for activation, (got, want) in zip(EQPROP_ACTIVATIONS, both(params, x)):
        np.testing.assert_allclose(got, want, rtol=1e-13, err_msg=activation)


@pytest.mark.float64
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_fixed_point_and_recurrent_backprop_match_the_dense_implicit_gradient(activation):
    x, d, params, state = _problem(activation)
    net = _network(activation)
    y, diagnostics = jax.jit(net.apply_with_state)(params, x, state)
    want_y, (want_dp, want_dx) = _reference(activation)
    np.testing.assert_allclose(y, want_y, atol=1e-11)
    assert diagnostics["residual"] <= TOL64 and 0 < diagnostics["steps"] < 5000
    dp, dx = _backprop_grads(net, params, x, d)
    np.testing.assert_allclose(_flat(dp), _flat(want_dp), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-9, atol=1e-11)


@pytest.mark.float64
@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_recurrent_backprop_matches_finite_differences_of_the_equilibrium_loss(activation):
    """Directional central differences of J(θ, x) = C(y(u⁰(θ, x))) along random directions; for
    hard_sigmoid this checks the masking of units pinned at a bound of the box."""
    x, d, params, _ = _problem(activation)
    net = _network(activation)
    theta, unravel = ravel_pytree((params, x))
    J = jax.jit(lambda t: train.mse(net.apply(*unravel(t)), d))
    grad = _flat(_backprop_grads(net, params, x, d))
    h = 1e-5
    for k in range(3):
        v = np.asarray(jax.random.normal(jax.random.key(10 + k), theta.shape, theta.dtype))
        fd = (J(theta + h * v) - J(theta - h * v)) / (2 * h)
        np.testing.assert_allclose(grad @ v, fd, rtol=1e-7, atol=1e-12)
    if activation == "hard_sigmoid":  # the test has power: some units sit on a bound, others inside
        y = np.asarray(net.apply(params, x))
        assert np.any((y == 0) | (y == 1)) and np.any((y > 0) & (y < 1))


@pytest.mark.float64
def test_ep_error_vanishes_with_order_one_one_sided_and_two_symmetric():
    """Scellier & Bengio 2017 Theorem 1 (limit β → 0) and Laborieux et al. 2021 (O(β²) with ±β):
    the fitted slope of log ‖Δ_EP(β) − ∇J‖/‖∇J‖ against log β is ≈ 1 one-sided, ≈ 2 symmetric."""
    x, d, params, _ = _problem("sigmoid")
    grad = _flat(_reference("sigmoid")[1][0])
    betas = np.geomspace(1e-1, 5e-3, 5)
    one_sided, symmetric = np.asarray(_ep_grads(_network("sigmoid"), params, x, d, jnp.asarray(betas)))
    for estimates, lo, hi, floor in ((one_sided, 0.9, 1.1, 1e-3), (symmetric, 1.8, 2.2, 1e-5)):
        errors = np.linalg.norm(estimates - grad, axis=1) / np.linalg.norm(grad)
        slope = np.polyfit(np.log(betas), np.log(errors), 1)[0]
        assert lo <= slope <= hi and errors[-1] < floor, (slope, errors)


@pytest.mark.float64
def test_symmetric_ep_is_exact_for_hard_sigmoid_and_one_sided_is_not():
    """With ρ = clip on the box, E is quadratic on the active face and the nudging force linear, so
    u^β is linear in β: the symmetric difference is exact, the one-sided one has an O(β) bias."""
    x, d, params, _ = _problem("hard_sigmoid")
    grad = _flat(_backprop_grads(_network("hard_sigmoid"), params, x, d)[0])  # checked by finite differences above
    both = np.asarray(_ep_grads(_network("hard_sigmoid"), params, x, d, jnp.asarray([1e-2, 1e-3])))
    for symmetric, estimates in zip((False, True), both):
        errors = np.linalg.norm(estimates - grad, axis=1) / np.linalg.norm(grad)
        if symmetric:
            assert np.all(errors < 1e-6), errors
        else:
            assert errors[0] > 1e-4 and 5 < errors[0] / errors[1] < 20, errors


@pytest.mark.float64
def test_small_cotangents_are_resolved_not_lost_below_the_tolerance():
    """A loss scaled by a tiny factor (a mean over a huge batch) has a gradient scaled by the same factor:
    the adjoint solve stops at a tolerance relative to the cotangent (with the absolute tol = 1e-12 it
    would stop at once and return zero). (EP's nudged phases meet the rounding floor instead: their
    displacement β‖g‖ must stay far above eps.)"""
    x, d, params, _ = _problem("sigmoid")
    net = _network("sigmoid")
    grad = _flat(_backprop_grads(net, params, x, d, np.float64(1.0)))
    np.testing.assert_allclose(_flat(_backprop_grads(net, params, x, d, np.float64(1e-13))), 1e-13 * grad, rtol=1e-8)


@pytest.mark.float64
def test_convergence_report():
    """The state reports the free relaxation: converged (residual <= tol) for the tested networks
    above; stopped at max_steps with a large residual, and an output off the fixed point, here."""
    x, _, params, state = _problem("sigmoid")
    y, diagnostics = jax.jit(_network("sigmoid", TOL64, 3).apply_with_state)(params, x, state)
    assert diagnostics["steps"] == 3 and diagnostics["residual"] > 1e-3
    assert np.max(np.abs(y - _reference("sigmoid")[0])) > 1e-4


# -- float32: training, jit, vmap -----------------------------------------------------------------

def _train_problem():
    net = eqprop_network([8], K, "sigmoid", b_std=0.5)
    x = jax.random.uniform(jax.random.key(1), (12, D))
    d = jax.nn.one_hot(jnp.argmax((x - 0.5) @ jax.random.normal(jax.random.key(5), (D, K)), 1), K)  # a linear teacher
    opt = optax.adam(0.1)
    return net, x, d, opt


@pytest.mark.slow
def test_training_with_ep_decreases_the_loss_for_every_seed():
    net, x, d, opt = _train_problem()
    step = train.make_step(net.apply_with_state, train.mse, opt, grad_estimator=equilibrium_propagation(0.5))

    @jax.jit
    @jax.vmap
    def run(seed):
        state = train.init(net, opt, jax.random.key(seed), x[:1])
        state, losses = jax.lax.scan(lambda s, _: (lambda r: (r[0], r[1]["loss"]))(step(s, (x, d))), state, None, 60)
        return losses, state.model_state

    losses, model_state = run(jnp.arange(3))
    assert np.all(losses[:, -1] < 0.5 * losses[:, 0]), losses[:, [0, -1]]
    assert np.all(model_state["residual"] <= 1e-5) and np.all(model_state["steps"] < 500)


@pytest.mark.slow
def test_vmap_over_seeds_equals_each_seed_and_beta_enters_traced():
    net, x, d, opt = _train_problem()

    def grads(seed, beta):
        params, state = net.init(jax.random.key(seed), x[:1])
        def objective(p):
            return train.make_objective(net.apply_with_state, train.mse)(p, state, (x, d), None)

        return equilibrium_propagation(beta, symmetric=False)(objective, params, None)[1]

    f = jax.jit(grads)
    batched = jax.jit(jax.vmap(grads))(jnp.arange(2), jnp.asarray([0.5, 0.25]))
    for i, (seed, beta) in enumerate(((0, 0.5), (1, 0.25))):
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[i], batched), f(seed, beta), rtol=1e-4, atol=1e-6)


# -- misuse ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, error, match", [
    (lambda: equilibrium_propagation(0.0), ValueError, "beta must be a positive"),
    (lambda: equilibrium_propagation(-0.1), ValueError, "beta must be a positive"),
    (lambda: equilibrium_propagation(float("nan")), ValueError, "beta must be a positive"),
    (lambda: equilibrium_propagation("0.1"), TypeError, "beta must be a positive number"),
    (lambda: equilibrium_propagation(0.1, symmetric=1), TypeError, "symmetric must be a bool"),
    (lambda: eqprop_network([4], 3, "sigmod"), ValueError, "did you mean 'sigmoid'"),
    (lambda: eqprop_network(4, 3), ValueError, "widths must be a sequence"),
    (lambda: eqprop_network([4, 0], 3), ValueError, "widths must hold positive ints"),
    (lambda: eqprop_network([4], 0), ValueError, "out_dim must hold positive ints"),
    (lambda: eqprop_network([4], 3, step_size=0.0), ValueError, "step_size must be a positive"),
    (lambda: eqprop_network([4], 3, max_steps=0), ValueError, "max_steps must be a positive int"),
    (lambda: eqprop_network([4], 3, tol=-1.0), ValueError, "tol must be a number >= 0"),
    (lambda: eqprop_network([4], 3, W_std=-1.0), ValueError, "W_std must be >= 0"),
    (lambda: hopfield_energy((), jnp.zeros((1, 2)), (), "relu"), ValueError, "activation must be one of"),
    (lambda: hopfield_energy(({"W": 0, "b": 0},), jnp.zeros((1, 2)), ()), ValueError, "states must hold one array per"),
    (lambda: jax.vmap(equilibrium_propagation)(jnp.ones((2, 3))), TypeError, "beta must be a scalar float"),
])
def test_bad_arguments_are_one_line_errors(make, error, match):
    with pytest.raises(error, match=match) as info:
        make()
    assert "\n" not in str(info.value)


def test_misuse_of_the_network_and_the_estimator():
    net = eqprop_network([4], 3)
    with pytest.raises(ValueError, match="floating inputs"):
        net.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 2), jnp.int32))
    shapes = jax.eval_shape(lambda k: net.init(k, jax.ShapeDtypeStruct((1, 2), jnp.float32))[0], jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.full(s.shape, 0.1, s.dtype), shapes)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        net.apply(params, jnp.zeros((1, 5)))
    with pytest.raises(ValueError, match="params must be a tuple of 2 dicts"):
        net.apply(params[:1], jnp.zeros((1, 2)))
    x = jnp.zeros((3, 2))
    for model in (nn.Dense(3), nn.serial(nn.Dense(3), nn.Tanh())):
        p, _ = model.init(jax.random.key(0), x)
        with pytest.raises(ValueError, match="the model must be a jaxlearn.rules.eqprop_network"):
            equilibrium_propagation(0.1)(lambda q, m=model: (jnp.sum(m.apply(q, x)), None), p, None)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):  # documented: custom_vjp
        jax.jvp(lambda p: net.apply(p, x), (params,), (params,))
