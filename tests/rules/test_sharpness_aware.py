"""SAM / ASAM against ground truth: ε̂ attains the dual norm on the (rescaled) ρ-ball and beats a
brute-force search over it; the SAM gradient of a quadratic in closed form; SAM inside
``train.make_step`` equals a hand-written NumPy SAM update and ``optax.contrib.sam``; vmap over
ρ; argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

from jaxlearn import train
from jaxlearn.rules.sharpness_aware import sam, sam_perturbation


def _pair(seed, d=5):
    rng = np.random.default_rng(seed)
    def draw():
        return {"a": rng.normal(size=(d,)), "b": rng.normal(size=(2, 3))}

    return draw(), draw()


def _flat(tree):
    return np.concatenate([np.ravel(tree["a"]), np.ravel(tree["b"])])


@pytest.mark.float64
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("p", [2, np.inf])
@pytest.mark.parametrize("rho", [0.05, 1.0])
def test_perturbation_attains_the_dual_norm_on_the_ball(rho, p, adaptive):
    """max ⟨g, ε⟩ over ‖ε/T‖_p ≤ ρ is ρ‖T g‖_q (Hölder), attained by ε̂ on the boundary."""
    grads, params = _pair(0)
    eps = sam_perturbation(jax.tree.map(jnp.asarray, grads), rho, p=p, adaptive=adaptive,
                           params=jax.tree.map(jnp.asarray, params), eta=0.1)
    g, e = _flat(grads), _flat(jax.tree.map(np.asarray, eps))
    t = np.abs(_flat(params)) + 0.1 if adaptive else np.ones_like(g)
    q = 1 if p == np.inf else 2
    np.testing.assert_allclose(np.linalg.norm(e / t, ord=p), rho, rtol=1e-12)
    np.testing.assert_allclose(g @ e, rho * np.linalg.norm(t * g, ord=q), rtol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("p", [2, np.inf])
def test_perturbation_beats_brute_force_search_in_2d(p, adaptive):
    g, w = np.array([0.7, -1.9]), np.array([2.0, 0.3])
    t = np.abs(w) + 0.01 if adaptive else np.ones(2)
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200_000, 2))
    boundary = z / np.linalg.norm(z, ord=p, axis=1, keepdims=True)  # ‖·‖_p = 1
    candidates = 0.3 * boundary * t  # the rescaled ball's boundary ‖ε/T‖_p = ρ
    best = np.max(candidates @ g)
    eps = np.asarray(sam_perturbation(jnp.asarray(g), 0.3, p=p, adaptive=adaptive, params=jnp.asarray(w)))
    assert g @ eps >= best - 1e-12 and g @ eps - best < 1e-3 * abs(best)


@pytest.mark.float64
def test_zero_gradient_gives_zero_perturbation():
    eps = sam_perturbation({"w": jnp.zeros(3)}, 0.5)
    np.testing.assert_array_equal(eps["w"], 0.0)


def _quadratic(d=4, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(d, d))
    return m @ m.T / d + np.eye(d), rng.normal(size=d), rng.normal(size=d)


@pytest.mark.float64
@pytest.mark.parametrize("rho", [0.0, 0.1, 2.0])
def test_sam_gradient_of_a_quadratic_is_the_closed_form(rho):
    a, b, w = _quadratic()

    def objective(v):
        loss = 0.5 * v @ (jnp.asarray(a) @ v) - jnp.asarray(b) @ v
        return loss, {"loss": loss}

    (loss, aux), grads = jax.jit(lambda v: sam(rho)(objective, v, jax.random.key(0)))(jnp.asarray(w))
    g = a @ w - b
    expected = a @ (w + rho * g / np.linalg.norm(g)) - b  # ∇L at w + ε̂ (Foret et al., eq. 4)
    np.testing.assert_allclose(grads, expected, rtol=1e-12)
    np.testing.assert_allclose(loss, 0.5 * w @ a @ w - b @ w, rtol=1e-12)  # the unperturbed loss
    assert aux["loss"] == loss


def _linear_regression(seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(24, 4)), rng.normal(size=(24, 1))
    w0 = rng.normal(size=(4, 1))
    return x, y, w0


def _apply(params, x, state, *, key=None, train=True):
    return x @ params, state


def _numpy_sam_run(x, y, w, lr, rho, momentum, adaptive, num_steps):
    """SAM written out for L(w) = ½ mean((x w − y)²), heavy-ball momentum (optax convention)."""
    velocity = np.zeros_like(w)
    for _ in range(num_steps):
        g = x.T @ (x @ w - y) / len(x)
        t = np.abs(w) + 0.01 if adaptive else np.ones_like(w)
        eps = rho * t**2 * g / np.linalg.norm(t * g)
        w_adv = w + eps
        g_sam = x.T @ (x @ w_adv - y) / len(x)
        velocity = momentum * velocity + g_sam
        w = w - lr * velocity
    return w


@pytest.mark.float64
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sam_in_make_step_equals_a_hand_written_update(momentum, adaptive):
    x, y, w0 = _linear_regression()
    opt = optax.sgd(0.1, momentum=momentum or None)
    step = train.make_step(_apply, train.mse, opt, grad_estimator=sam(0.2, adaptive=adaptive))
    w0_ = jnp.asarray(w0)
    state = train.TrainState(w0_, opt.init(w0_), (), jnp.zeros((), jnp.int32), jax.random.key(0))
    batch = (jnp.asarray(x), jnp.asarray(y))
    state, metrics = jax.jit(lambda s: jax.lax.scan(lambda s, _: step(s, batch), s, None, length=6))(state)
    expected = _numpy_sam_run(x, y, w0, 0.1, 0.2, momentum, adaptive, 6)
    np.testing.assert_allclose(state.params, expected, rtol=1e-12)
    assert metrics["loss"].shape == (6,)
    np.testing.assert_allclose(metrics["loss"][0], 0.5 * np.mean((x @ w0 - y) ** 2), rtol=1e-12)


@pytest.mark.float64
def test_sam_estimator_matches_optax_contrib_sam_at_half_the_steps():
    """optax.contrib.sam alternates an ascent call and a descent call: 2n of its updates are n of ours."""
    x, y, w0 = _linear_regression(1)
    lr, rho, n = 0.05, 0.3, 5

    def loss(w):
        return 0.5 * jnp.mean((jnp.asarray(x) @ w - jnp.asarray(y)) ** 2)

    ours = jax.jit(train.make_step(_apply, train.mse, optax.sgd(lr), grad_estimator=sam(rho)))
    state = train.TrainState(jnp.asarray(w0), optax.sgd(lr).init(jnp.asarray(w0)), (), jnp.zeros((), jnp.int32),
                             jax.random.key(0))
    for _ in range(n):
        state, _ = ours(state, (jnp.asarray(x), jnp.asarray(y)))
    reference = optax.contrib.sam(optax.sgd(lr), optax.chain(optax.contrib.normalize(), optax.sgd(rho)), sync_period=2)

    @jax.jit
    def reference_step(w, opt_state):
        updates, opt_state = reference.update(jax.grad(loss)(w), opt_state, w)
        return optax.apply_updates(w, updates), opt_state

    w, opt_state = jnp.asarray(w0), reference.init(jnp.asarray(w0))
    for _ in range(2 * n):
        w, opt_state = reference_step(w, opt_state)
    np.testing.assert_allclose(state.params, w, rtol=1e-12)


def test_sam_vmaps_over_rho_and_rho_zero_is_backprop():
    x, y, w0 = (jnp.asarray(a, jnp.float32) for a in _linear_regression(2))

    def run(rho):
        step = train.make_step(_apply, train.mse, optax.sgd(0.1), grad_estimator=sam(rho))
        state = train.TrainState(w0, optax.sgd(0.1).init(w0), (), jnp.zeros((), jnp.int32), jax.random.key(0))
        return jax.lax.scan(lambda s, _: step(s, (x, y)), state, None, length=4)[0].params

    rhos = jnp.array([0.0, 0.1, 0.5])
    batched = jax.jit(jax.vmap(run))(rhos)
    for i, rho in enumerate(rhos):
        np.testing.assert_allclose(batched[i], jax.jit(run)(rho), rtol=1e-5, atol=1e-6)
    plain = train.make_step(_apply, train.mse, optax.sgd(0.1))
    state = train.TrainState(w0, optax.sgd(0.1).init(w0), (), jnp.zeros((), jnp.int32), jax.random.key(0))
    gd = jax.lax.scan(lambda s, _: plain(s, (x, y)), state, None, length=4)[0].params
    np.testing.assert_allclose(batched[0], gd, rtol=1e-5, atol=1e-6)


def test_base_estimator_is_called_at_both_points():
    calls = []

    def doubled(objective, params, key):
        calls.append(key)
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return (loss, aux), jax.tree.map(lambda g: 2 * g, grads)

    def objective(v):
        return jnp.sum(v**2), ()

    _, grads = sam(0.5, estimator=doubled)(objective, jnp.array([3.0, 4.0]), jax.random.key(0))
    # ε̂ from 2g has the direction of g: w + ε̂ = (3, 4)·(1 + 0.5/5); then 2 ∇L = 4 (w + ε̂)
    np.testing.assert_allclose(grads, 4 * np.array([3.0, 4.0]) * 1.1, rtol=1e-6)
    assert len(calls) == 2 and not bool(jnp.all(jax.random.key_data(calls[0]) == jax.random.key_data(calls[1])))


def test_argument_errors():
    with pytest.raises(ValueError, match="rho: expected a radius >= 0"):
        sam(-1.0)
    with pytest.raises(ValueError, match="p: expected 2 or numpy.inf"):
        sam(0.1, p=1)
    with pytest.raises(ValueError, match="eta"):
        sam(0.1, adaptive=True, eta=-1.0)
    with pytest.raises(TypeError, match="estimator"):
        sam(0.1, estimator="backprop")
    with pytest.raises(ValueError, match="params: adaptive"):
        sam_perturbation({"w": jnp.ones(2)}, 0.1, adaptive=True)
    with pytest.raises(ValueError, match="params"):
        sam_perturbation({"w": jnp.ones(2)}, 0.1, adaptive=True, params={"v": jnp.ones(2)})
