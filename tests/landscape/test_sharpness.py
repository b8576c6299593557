"""Sharpness against ground truth: λ_max tracked during GD equals the top eigenvalue of the dense
Hessian at the same step (float64); warm starts need fewer iterations; the residual bound and the
shift; SAM's first-order sharpness against closed forms on quadratics, brute-force maximization
over the ρ-disk (error O(ρ³)), m-sharpness against per-sub-batch closed forms, ASAM's
rescaling invariance; jit/vmap/grad; argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, train
from jaxlearn.landscape import sharpness as sh
from jaxlearn.landscape.objective import ModelObjective, mse


def _gd_problem(lr=0.5, dtype=jnp.float64, widths=(8, 8)):
    """A tanh MLP (122 parameters) under full-batch GD on 16 random regression points (MSE)."""
    model = nn.mlp(widths, 2, activation="tanh", W_std=1.5)
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(16, 3)), dtype), jnp.asarray(rng.normal(size=(16, 2)), dtype)
    step = train.make_step(model.apply_with_state, train.mse, optax.sgd(lr))
    # model.init's shapes, drawn with NumPy (1.5²/fan-in variance): no threefry program to compile
    spec = jax.ShapeDtypeStruct((1, 3), dtype)
    shapes, model_state = jax.eval_shape(lambda k: model.init(k, spec), jax.random.key(0))
    params = jax.tree.map(lambda a: jnp.asarray(1.5 * rng.normal(size=a.shape) / np.sqrt(a.shape[0]), dtype),
                          shapes)
    state = train.TrainState(params, optax.sgd(lr).init(params), model_state, jnp.zeros((), jnp.int32),
                             jax.random.key(1))

    def loss_fn(params):
        return train.mse(model.apply(params, x), y)

    return state, step, (lambda key, i: (x, y)), loss_fn


def _gd_step(lr, widths):
    return train.make_step(nn.mlp(widths, 2, activation="tanh").apply_with_state, train.mse, optax.sgd(lr))


def _dense_spectra(loss_fn, checkpoints):
    """eigvalsh of the dense Hessian (``jax.hessian`` of the raveled params) at each checkpoint."""
    def hessian(params):
        flat, unravel = ravel_pytree(params)
        return jax.hessian(lambda f: loss_fn(unravel(f)))(flat)

    return np.linalg.eigvalsh(np.asarray(jax.jit(jax.vmap(hessian))(checkpoints)))


@pytest.fixture(scope="module")
def gd_run():
    """Params after every 5 of 30 GD steps, with the dense Hessian spectrum at each."""
    state, step, batch_fn, loss_fn = _gd_problem()
    _, metrics = jax.jit(lambda s: train.train(s, step, batch_fn, 30, eval_every=5, eval_fn=lambda t: t.params))(state)
    return state, step, batch_fn, loss_fn, metrics["eval"], _dense_spectra(loss_fn, metrics["eval"])


@pytest.mark.float64
def test_tracked_lambda_max_equals_dense_hessian_top_eigenvalue(gd_run):
    state, step, batch_fn, loss_fn, _, spectra = gd_run
    assert np.all(spectra[:, -1] > np.abs(spectra[:, 0]))  # λ_max is also the largest in magnitude
    assert np.ptp(spectra[:, -1]) > 0.01 * spectra[0, -1]  # the sharpness moves: tracking is not trivial
    vector = sh.random_unit_vector(jax.random.key(2), state.params)
    run = jax.jit(lambda s, v: sh.track_sharpness(s, v, step, batch_fn, loss_fn, 30, every=5, num_iters=100))
    final, _, metrics = run(state, vector)
    assert int(final.step) == 30 and metrics["train"]["loss"].shape == (30,)
    np.testing.assert_allclose(metrics["lambda_max"], spectra[:, -1], rtol=1e-10)
    assert np.all(metrics["residual"] < 1e-6)


@pytest.mark.float64
def test_warm_start_tracks_with_few_iterations_where_a_cold_start_does_not(gd_run):
    state, step, batch_fn, loss_fn, checkpoints, spectra = gd_run
    vector = sh.random_unit_vector(jax.random.key(2), state.params)
    run = jax.jit(lambda s, v: sh.track_sharpness(s, v, step, batch_fn, loss_fn, 30, every=5, num_iters=8))
    _, _, metrics = run(state, vector)
    warm = np.abs(metrics["lambda_max"] / spectra[:, -1] - 1)
    # cold: the same 8 iterations from the same random vector at each checkpoint
    cold_values = jax.jit(jax.vmap(lambda p: sh.top_eigenpair(loss_fn, p, vector, num_iters=8).value))(checkpoints)
    cold = np.abs(np.asarray(cold_values) / spectra[:, -1] - 1)
    # 8 iterations per checkpoint. The first block starts from the same random vector (same
    # error); afterwards warm starts accumulate iterations and only chase the eigenvector's drift
    # (measured ~1e-6 relative error), while cold starts stay at the one-shot error (~4e-2..2e-1).
    np.testing.assert_allclose(warm[0], cold[0], rtol=1e-8)
    assert np.all(50 * warm[1:] < cold[1:]) and np.all(warm[2:] < 1e-5), (warm, cold)


@pytest.mark.float64
@pytest.mark.parametrize("num_iters", [1, 3, 10])
def test_residual_bounds_the_distance_to_an_eigenvalue(num_iters):
    rng = np.random.default_rng(num_iters)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    eigs = np.array([3.0, 2.5, 1.0, 0.2, -0.5, -1.0])
    a = (q * eigs) @ q.T
    pair = jax.jit(lambda v: sh.top_eigenpair(lambda w: 0.5 * w @ (a @ w), jnp.zeros(6), v,
                                              num_iters=num_iters))(jnp.asarray(rng.normal(size=6)))
    assert np.min(np.abs(eigs - pair.value)) <= pair.residual * (1 + 1e-12)
    np.testing.assert_allclose(np.linalg.norm(pair.vector), 1.0, rtol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("shift, expected", [(0.0, -5.0), (5.0, 2.0), (3.0, 2.0)])
def test_power_iteration_finds_largest_magnitude_and_a_shift_finds_largest(shift, expected):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a = (q * np.array([-5.0, 2.0, 1.0, 0.5])) @ q.T
    pair = jax.jit(lambda s: sh.top_eigenpair(lambda w: 0.5 * w @ (a @ w), jnp.zeros(4), jnp.ones(4), num_iters=300,
                                              shift=s))(shift)
    np.testing.assert_allclose(pair.value, expected, rtol=1e-10)
    np.testing.assert_allclose(a @ np.asarray(pair.vector), expected * np.asarray(pair.vector), atol=1e-8)


def test_track_sharpness_vmaps_over_learning_rates_and_segments_continue():
    state, _, batch_fn, loss_fn = _gd_problem(dtype=jnp.float32, widths=(4,))  # small: quick to compile
    vector = sh.random_unit_vector(jax.random.key(2), state.params)

    def run(state, vector, lr, num_steps):
        step = _gd_step(lr, (4,))
        return sh.track_sharpness(state, vector, step, batch_fn, loss_fn, num_steps, every=5, num_iters=10)

    lrs = jnp.array([0.1, 0.5])
    _, _, batched = jax.jit(jax.vmap(lambda lr: run(state, vector, lr, 20)))(lrs)
    assert batched["lambda_max"].shape == (2, 4) and batched["train"]["loss"].shape == (2, 20)
    # per learning rate, two segments of 10 steps (carrying state and vector) = the vmapped 20 steps
    segment = jax.jit(lambda s, v, lr: run(s, v, lr, 10))
    for i, lr in enumerate(lrs):
        mid_state, mid_vector, first = segment(state, vector, lr)
        _, _, second = segment(mid_state, mid_vector, lr)
        np.testing.assert_allclose(np.concatenate([first["lambda_max"], second["lambda_max"]]),
                                   batched["lambda_max"][i], rtol=1e-4)
    assert batched["lambda_max"][0, -1] != batched["lambda_max"][1, -1]


# ---------------------------------------------------------------------------------- SAM sharpness
def _quadratic(d, seed):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(d, d))
    a, b, w = m @ m.T / d + np.eye(d), rng.normal(size=d), rng.normal(size=d)
    return a, b, w


@pytest.mark.float64
@pytest.mark.parametrize("d", [2, 7])
def test_sam_sharpness_on_a_quadratic_is_the_closed_form(d):
    a, b, w = _quadratic(d, d)
    g = a @ w - b
    u = g / np.linalg.norm(g)
    curvature = u @ a @ u
    rhos = np.array([0.01, 0.3])

    def sharpness(rho):
        return sh.sam_sharpness(lambda v: 0.5 * v @ (jnp.asarray(a) @ v) - jnp.asarray(b) @ v, jnp.asarray(w), rho)

    values, slopes = jax.jit(jax.vmap(jax.value_and_grad(sharpness)))(jnp.asarray(rhos))
    # L(w + ρ ĝ) − L(w), exact for a quadratic, and its derivative in ρ (through jax.grad)
    np.testing.assert_allclose(values, rhos * np.linalg.norm(g) + 0.5 * rhos**2 * curvature, rtol=1e-12)
    np.testing.assert_allclose(slopes, np.linalg.norm(g) + rhos * curvature, rtol=1e-12)


def _smooth_2d(w0, w1, xp):
    return xp.log1p(xp.exp(w0)) + xp.sin(2 * w1) * w0 + 0.3 * w1**4 + 0.5 * w0 * w1


def _brute_force_sharpness(w, rho, num_angles=400_000):
    """max over ‖ε‖ ≤ ρ of L(w + ε) − L(w) on a fine grid of the circle ‖ε‖ = ρ (grid error
    ~ρ‖g‖(π/num_angles)² ≈ 1e-13) and of a few inner circles (the maximum is on the boundary)."""
    theta = np.linspace(0, 2 * np.pi, num_angles, endpoint=False)
    best = -np.inf
    for r, stride in ((rho, 1), (0.5 * rho, 100), (0.9 * rho, 100)):
        t = theta[::stride]
        best = max(best, np.max(_smooth_2d(w[0] + r * np.cos(t), w[1] + r * np.sin(t), np)))
    return best - _smooth_2d(w[0], w[1], np)


@pytest.mark.float64
def test_first_order_sharpness_error_against_brute_force_is_third_order_in_rho():
    w = np.array([0.3, -0.4])
    rhos = np.array([0.04, 0.02, 0.01, 0.005])
    approx = np.asarray(jax.jit(jax.vmap(lambda r: sh.sam_sharpness(lambda v: _smooth_2d(v[0], v[1], jnp),
                                                                      jnp.asarray(w), r)))(jnp.asarray(rhos)))
    truth = np.array([_brute_force_sharpness(w, r) for r in rhos])
    errors = truth - approx
    assert np.all(errors > -1e-12)  # ε̂ is feasible: a lower bound of the true maximum
    orders = np.log2(errors[:-1] / errors[1:])
    np.testing.assert_allclose(orders, 3.0, atol=0.25)
    assert np.all(errors / truth < rhos)  # and small relative to the sharpness itself


@pytest.mark.float64
@pytest.mark.parametrize("p", [2, np.inf])
def test_m_sharpness_is_the_mean_of_per_sub_batch_closed_forms(p):
    rng = np.random.default_rng(3)
    x, y, w = rng.normal(size=(12, 3)), rng.normal(size=(12, 1)), rng.normal(size=(3, 1))
    rho = 0.2

    def closed_form(m):
        values = []
        for k in range(12 // m):
            xb, yb = x[k * m:(k + 1) * m], y[k * m:(k + 1) * m]
            a, g = xb.T @ xb / m, (xb.T @ (xb @ w - yb) / m)[:, 0]  # L_B = ½ mean (x·w − y)², quadratic
            e = rho * g / np.linalg.norm(g) if p == 2 else rho * np.sign(g)
            values.append(g @ e + 0.5 * e @ a @ e)
        return np.mean(values)

    def batch_loss(params, batch):
        return 0.5 * jnp.mean((batch[0] @ params - batch[1]) ** 2)

    data = (jnp.asarray(x), jnp.asarray(y))
    for m in (1, 3, 12):
        value = jax.jit(lambda w: sh.m_sharpness(batch_loss, w, rho, m, data, p=p))(jnp.asarray(w))
        np.testing.assert_allclose(value, closed_form(m), rtol=1e-12)
    objective = ModelObjective(lambda params, xs: xs @ params, mse, data, batch_size=5)
    both = jax.jit(lambda w: (sh.m_sharpness(objective, w, rho, 4, p=p), sh.sam_sharpness(objective, w, rho, p=p)))
    from_objective, whole = both(jnp.asarray(w))
    np.testing.assert_allclose(from_objective, closed_form(4), rtol=1e-12)
    np.testing.assert_allclose(whole, closed_form(12), rtol=1e-12)  # m = n: SAM sharpness of the batch


def _relu_net(params, x):
    return jnp.maximum(x @ params["W"].T + params["b"], 0.0) @ params["v"]


@pytest.mark.float64
def test_adaptive_sharpness_is_invariant_to_relu_rescaling_and_plain_is_not():
    rng = np.random.default_rng(4)
    x, y = jnp.asarray(rng.normal(size=(20, 3))), jnp.asarray(rng.normal(size=20))
    params = {"W": jnp.asarray(rng.normal(size=(5, 3))), "b": jnp.asarray(rng.normal(size=5)),
              "v": jnp.asarray(rng.normal(size=5))}
    c = jnp.asarray(rng.uniform(0.2, 5.0, size=5))  # hidden unit j: (W_j, b_j, v_j) → (c_j W_j, c_j b_j, v_j/c_j)
    scaled = {"W": params["W"] * c[:, None], "b": params["b"] * c, "v": params["v"] / c}

    def loss(p):
        return 0.5 * jnp.mean((_relu_net(p, x) - y) ** 2)

    np.testing.assert_allclose(loss(scaled), loss(params), rtol=1e-12)  # same function
    both = jax.tree.map(lambda *a: jnp.stack(a), params, scaled)

    def four(q):  # (adaptive, plain) × (p = 2, p = ∞)
        return jnp.stack([sh.sam_sharpness(loss, q, 0.1, p=p, adaptive=adaptive, eta=0.0)
                          for adaptive in (True, False) for p in (2, np.inf)])

    values = jax.jit(jax.vmap(four))(both)  # (original, rescaled) × 4
    np.testing.assert_allclose(values[1, :2], values[0, :2], rtol=1e-10)
    assert np.all(np.abs(values[1, 2:] / values[0, 2:] - 1) > 0.05)


def test_sam_sharpness_vmaps_over_rho_and_jits():
    a, b, w = (jnp.asarray(t, jnp.float32) for t in _quadratic(3, 0))

    def loss(v):
        return 0.5 * v @ (a @ v) - b @ v

    rhos = jnp.array([0.0, 0.05, 0.2])
    batched = jax.jit(jax.vmap(lambda r: sh.sam_sharpness(loss, w, r)))(rhos)
    singles = [sh.sam_sharpness(loss, w, float(r)) for r in rhos]
    # a difference of two losses: absolute rounding ~ eps(float32)·|L|
    np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-6)
    assert abs(batched[0]) < 1e-6 and batched.dtype == jnp.float32


def test_argument_errors():
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    state = train.TrainState(params, optax.sgd(0.1).init(params), (), jnp.zeros((), jnp.int32), jax.random.key(0))
    step = train.make_step(lambda p, x, s, key, train: (x @ p["w"] + p["b"], s), train.mse, optax.sgd(0.1))
    batch_fn = lambda key, i: (jnp.ones((4, 3)), jnp.ones(4))  # noqa: E731

    def loss_fn(p):
        return jnp.sum(p["w"] ** 2) + p["b"] ** 2

    vector = {"w": jnp.ones(3), "b": jnp.ones(())}
    with pytest.raises(ValueError, match="num_iters"):
        sh.top_eigenpair(loss_fn, state.params, vector, num_iters=0)
    with pytest.raises(ValueError, match="vector"):
        sh.top_eigenpair(loss_fn, state.params, {"w": jnp.ones(2), "b": jnp.ones(())}, num_iters=3)
    with pytest.raises(ValueError, match="num_steps"):
        sh.track_sharpness(state, vector, step, batch_fn, loss_fn, 12, every=5)
    with pytest.raises(ValueError, match="every"):
        sh.track_sharpness(state, vector, step, batch_fn, loss_fn, 10, every=0)
    batch = (jnp.ones((6, 2)), jnp.ones((6,)))
    with pytest.raises(ValueError, match="m: expected a positive int dividing the batch size 6"):
        sh.m_sharpness(lambda w, b: jnp.sum(w), jnp.ones(2), 0.1, 4, batch)
    with pytest.raises(ValueError, match="batch: required"):
        sh.m_sharpness(lambda w, b: jnp.sum(w), jnp.ones(2), 0.1, 2)
    with pytest.raises(ValueError, match="rho"):
        sh.sam_sharpness(lambda w: jnp.sum(w**2), jnp.ones(2), -0.1)
    with pytest.raises(ValueError, match="p: expected 2 or numpy.inf"):
        sh.sam_sharpness(lambda w: jnp.sum(w**2), jnp.ones(2), 0.1, p=1)
