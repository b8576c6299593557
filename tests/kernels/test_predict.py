"""Closed-form kernel predictions against independent numpy/scipy ground truth.

Ground truth never calls the code under test: ODE integration (scipy.integrate.solve_ivp) of the
linearized dynamics, matrix exponentials (scipy.linalg.expm) and dense solves (numpy.linalg).
"""

from collections import namedtuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from jaxlearn.kernels.predict import Gaussian, gp_inference, gradient_descent_mse, gradient_descent_mse_ensemble

Kernel = namedtuple("Kernel", "nngp ntk")
N_TRAIN, N_TEST, N_OUT = 10, 4, 3
LR = 0.7


def _joint_kernels(seed=0, n=N_TRAIN + N_TEST):
    """Two different SPD kernels on n points, from random features (well-conditioned: d = 3n)."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 3 * n)), rng.normal(size=(n, 3 * n))
    nngp = a @ a.T / a.shape[1] + 1e-3 * np.eye(n)
    ntk = np.tanh(b) @ np.tanh(b).T / b.shape[1] + nngp
    return nngp, ntk


def _split(k):
    return k[:N_TRAIN, :N_TRAIN], k[N_TRAIN:, :N_TRAIN], k[N_TRAIN:, N_TRAIN:]


def _targets(seed=1, shape=(N_TRAIN, N_OUT)):
    return np.random.default_rng(seed).normal(size=shape)


@jax.jit
def _kernel_fn(x1, x2=None):
    """Toy infinite-width kernels: RBF NNGP, and NTK = NNGP + a tanh-feature kernel."""
    x2 = x1 if x2 is None else x2
    sq = jnp.sum((x1[:, None, :] - x2[None, :, :]) ** 2, axis=-1)
    nngp = jnp.exp(-sq / 2)
    w = jnp.linspace(-1.0, 1.0, 3 * 8).reshape(3, 8)
    return Kernel(nngp, nngp + jnp.tanh(x1 @ w) @ jnp.tanh(x2 @ w).T / 8)


def _inputs(seed=2):
    x = np.random.default_rng(seed).normal(size=(N_TRAIN + N_TEST, 3))
    return x[:N_TRAIN], x[N_TRAIN:]


def _reg(k, diag_reg, absolute):
    return k + (diag_reg if absolute else diag_reg * np.trace(k) / len(k)) * np.eye(len(k))


# ----------------------------------------------------------------------------- gradient_descent_mse


@pytest.mark.float64
@pytest.mark.parametrize("diag_reg", [0.0, 0.1])
def test_gradient_descent_matches_ode_integration(diag_reg):
    _, ntk = _joint_kernels()
    k_dd, k_td, _ = _split(ntk)
    y = _targets()
    f0_train, f0_test = _targets(3), _targets(4, (N_TEST, N_OUT))
    ts = np.array([0.5, 20.0, 150.0])
    k_rows = np.concatenate([_reg(k_dd, diag_reg, False), k_td])  # Θ_{·,x}, train block regularised

    def rhs(_, f_flat):  # df/dτ = −(η/n) Θ_{·,x} (f_x − y) on train ∪ test
        f = f_flat.reshape(N_TRAIN + N_TEST, N_OUT)
        return (-LR / y.size * k_rows @ (f[:N_TRAIN] - y)).ravel()

    sol = solve_ivp(rhs, (0, ts[-1]), np.concatenate([f0_train, f0_test]).ravel(), method="DOP853",
                    t_eval=ts, rtol=1e-13, atol=1e-13)
    want = sol.y.T.reshape(len(ts), N_TRAIN + N_TEST, N_OUT)
    got_train, got_test = gradient_descent_mse(k_dd, y, LR, diag_reg)(ts, f0_train, f0_test, k_td)
    np.testing.assert_allclose(got_train, want[:, :N_TRAIN], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(got_test, want[:, N_TRAIN:], rtol=1e-8, atol=1e-10)


@pytest.mark.float64
def test_array_t_equals_loop_over_scalars():
    _, ntk = _joint_kernels()
    k_dd, k_td, _ = _split(ntk)
    predict = gradient_descent_mse(k_dd, _targets(), LR)
    ts = np.linspace(0.0, 40.0, 5)
    got_train, got_test = predict(ts, 0.3, -0.2, k_td)
    assert got_train.shape == (5, N_TRAIN, N_OUT) and got_test.shape == (5, N_TEST, N_OUT)
    for i, t in enumerate(ts):
        want_train, want_test = predict(t, 0.3, -0.2, k_td)
        np.testing.assert_allclose(got_train[i], want_train, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(got_test[i], want_test, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(got_train[0], np.full((N_TRAIN, N_OUT), 0.3))  # t = 0: the initial outputs
    np.testing.assert_array_equal(got_test[0], np.full((N_TEST, N_OUT), -0.2))


@pytest.mark.float64
def test_infinite_time_is_interpolation_and_the_limit_of_finite_time():
    _, ntk = _joint_kernels()
    k_dd, k_td, _ = _split(ntk)
    y, f0_train, f0_test = _targets(), _targets(3), _targets(4, (N_TEST, N_OUT))
    predict = gradient_descent_mse(k_dd, y, LR)
    inf_train, inf_test = predict(None, f0_train, f0_test, k_td)
    np.testing.assert_array_equal(inf_train, y)
    np.testing.assert_allclose(inf_test, f0_test + k_td @ np.linalg.solve(k_dd, y - f0_train), rtol=1e-10)
    late_train, late_test = predict(1e7, f0_train, f0_test, k_td)  # a·λ_min ≈ 1e5: e^{−aΘ} underflows
    np.testing.assert_allclose(late_train, y, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(late_test, inf_test, rtol=1e-8, atol=1e-10)
    inf_float = predict(np.inf, f0_train, f0_test, k_td)  # t = inf is finite too (t=None is the solve)
    np.testing.assert_allclose(inf_float[0], y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inf_float[1], inf_test, rtol=1e-10)


@pytest.mark.float64
@pytest.mark.parametrize("absolute", [False, True])
def test_diag_reg_scalings(absolute):
    _, ntk = _joint_kernels()
    k_dd, k_td, _ = _split(ntk)
    y, f0 = _targets(), _targets(3)
    k_reg = _reg(k_dd, 0.05, absolute)
    predict = gradient_descent_mse(k_dd, y, LR, 0.05, absolute)
    inf_train, inf_test = predict(None, f0, 0.0, k_td)
    np.testing.assert_array_equal(inf_train, y)  # neural-tangents returns y_train even when regularised
    np.testing.assert_allclose(inf_test, k_td @ np.linalg.solve(k_reg, y - f0), rtol=1e-10)
    t = 60.0
    decay = expm(-LR * t / y.size * k_reg)
    got_train, got_test = predict(t, f0, 0.0, k_td)
    np.testing.assert_allclose(got_train, y + decay @ (f0 - y), rtol=1e-10)
    np.testing.assert_allclose(got_test, k_td @ np.linalg.solve(k_reg, (np.eye(N_TRAIN) - decay) @ (y - f0)),
                               rtol=1e-10)


# ----------------------------------------------------------------------------- gp_inference


def _gp_truth(get, k_nngp, k_ntk, y, diag_reg=0.0):
    (nngp_dd, nngp_td, nngp_tt), (ntk_dd, ntk_td, ntk_tt) = _split(k_nngp), _split(k_ntk)
    if get == "nngp":
        inv = np.linalg.inv(_reg(nngp_dd, diag_reg, False))
        return nngp_td @ inv @ y, nngp_tt - nngp_td @ inv @ nngp_td.T
    inv = np.linalg.inv(_reg(ntk_dd, diag_reg, False))
    mean = ntk_td @ inv @ y
    if get == "ntkgp":
        return mean, ntk_tt - ntk_td @ inv @ ntk_td.T
    cross = ntk_td @ inv @ nngp_td.T
    return mean, nngp_tt + ntk_td @ inv @ nngp_dd @ inv @ ntk_td.T - cross - cross.T


@pytest.mark.float64
@pytest.mark.parametrize("diag_reg", [0.0, 0.01])
@pytest.mark.parametrize("get", ["nngp", "ntk", "ntkgp"])
def test_gp_inference_matches_dense_linear_algebra(get, diag_reg):
    nngp, ntk = _joint_kernels()
    y = _targets()
    (nngp_dd, nngp_td, nngp_tt), (ntk_dd, ntk_td, ntk_tt) = _split(nngp), _split(ntk)
    predict = gp_inference(Kernel(nngp_dd, ntk_dd), y, diag_reg)
    mean, cov = predict(get, Kernel(nngp_td, ntk_td), Kernel(nngp_tt, ntk_tt))
    want_mean, want_cov = _gp_truth(get, nngp, ntk, y, diag_reg)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(cov, cov.T)
    assert np.linalg.eigvalsh(cov).min() > -1e-12  # a posterior covariance is PSD
    np.testing.assert_array_equal(predict(get, Kernel(nngp_td, ntk_td)), mean)  # no k_test_test: mean only


@pytest.mark.float64
def test_gp_inference_tuple_get_and_plain_arrays():
    nngp, ntk = _joint_kernels()
    y = _targets()
    (nngp_dd, nngp_td, nngp_tt), (ntk_dd, ntk_td, ntk_tt) = _split(nngp), _split(ntk)
    out = gp_inference(Kernel(nngp_dd, ntk_dd), y)(("ntk", "nngp"), Kernel(nngp_td, ntk_td),
                                                    Kernel(nngp_tt, ntk_tt))
    assert out._fields == ("ntk", "nngp") and isinstance(out.ntk, Gaussian)
    ntk_out, nngp_out = out  # unpacks in the order of `get`
    np.testing.assert_allclose(nngp_out.mean, _gp_truth("nngp", nngp, ntk, y)[0], rtol=1e-9)
    np.testing.assert_allclose(ntk_out.covariance, _gp_truth("ntk", nngp, ntk, y)[1], rtol=1e-9, atol=1e-12)
    plain = gp_inference(nngp_dd, y)("nngp", nngp_td, nngp_tt)  # a plain array: the one kernel asked for
    np.testing.assert_allclose(plain.covariance, nngp_out.covariance, rtol=1e-12, atol=1e-14)
    plain_ntkgp = gp_inference(ntk_dd, y)("ntkgp", ntk_td, ntk_tt)
    np.testing.assert_allclose(plain_ntkgp.covariance, _gp_truth("ntkgp", nngp, ntk, y)[1], rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- ensembles


def _ensemble_truth(get, t, k_dd, k_td, k_tt, y, train_set=False):
    """Lee et al. 2019 eqs. 14–15 with dense matrix exponentials; train_set: test points = train points."""
    dyn = {"nngp": k_dd.nngp, "ntk": k_dd.ntk}[get]
    decay = expm(-LR * t / y.size * dyn)
    if train_set:
        cov = dyn @ decay @ decay if get == "nngp" else decay @ k_dd.nngp @ decay
        return (np.eye(len(y)) - decay) @ y, cov
    transfer = np.linalg.solve(dyn, np.eye(len(y)) - decay)  # T(t) = Θ⁻¹(I − e^{−aΘ})
    g_td = getattr(k_td, get)
    mean = g_td @ transfer @ y
    cross = g_td @ transfer @ k_td.nngp.T
    cov = k_tt.nngp + g_td @ transfer @ k_dd.nngp @ transfer.T @ g_td.T - cross - cross.T
    return mean, cov


@pytest.mark.float64
@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_ensemble_finite_time_matches_closed_form(get):
    x_train, x_test = _inputs()
    y = _targets()
    k_dd, k_td, k_tt = _kernel_fn(x_train), _kernel_fn(x_test, x_train), _kernel_fn(x_test)
    k_dd, k_td, k_tt = (Kernel(*map(np.asarray, k)) for k in (k_dd, k_td, k_tt))
    predict = gradient_descent_mse_ensemble(_kernel_fn, x_train, y, LR)
    ts = np.array([3.0, 80.0])
    got = predict(ts, x_test, get, compute_cov=True)
    got_train = predict(ts, None, get, compute_cov=True)
    for i, t in enumerate(ts):
        mean, cov = _ensemble_truth(get, t, k_dd, k_td, k_tt, y)
        np.testing.assert_allclose(got.mean[i], mean, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(got.covariance[i], cov, rtol=1e-9, atol=1e-11)
        mean, cov = _ensemble_truth(get, t, k_dd, k_td, k_tt, y, train_set=True)
        np.testing.assert_allclose(got_train.mean[i], mean, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(got_train.covariance[i], cov, rtol=1e-9, atol=1e-11)
    # The ensemble mean is gradient descent from zero initial outputs.
    _, fx_test = gradient_descent_mse(getattr(k_dd, get), y, LR)(ts, 0.0, 0.0, getattr(k_td, get))
    np.testing.assert_allclose(got.mean, fx_test, rtol=1e-10, atol=1e-12)


@pytest.mark.float64
def test_ensemble_infinite_time_equals_gp_inference():
    x_train, x_test = _inputs()
    y = _targets()
    predict = gradient_descent_mse_ensemble(_kernel_fn, x_train, y, LR, diag_reg=1e-4)
    gp = gp_inference(_kernel_fn(x_train), y, diag_reg=1e-4)
    got = predict(None, x_test, compute_cov=True)
    want = gp(("nngp", "ntk"), _kernel_fn(x_test, x_train), _kernel_fn(x_test))
    late = predict(np.array([1e9, 1e9]), x_test, compute_cov=True)
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(got, g).mean, getattr(want, g).mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(getattr(got, g).covariance, getattr(want, g).covariance, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(getattr(late, g).mean[1], getattr(want, g).mean, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(getattr(late, g).covariance[1], getattr(want, g).covariance, rtol=1e-7, atol=1e-9)
    train_mean, train_cov = predict(None, None, "ntk", compute_cov=True)
    np.testing.assert_array_equal(train_mean, y)
    np.testing.assert_array_equal(train_cov, np.zeros((N_TRAIN, N_TRAIN)))


# ----------------------------------------------------------------------------- transformations


@pytest.mark.float64
def test_jit_equals_eager():
    nngp, ntk = _joint_kernels()
    (nngp_dd, nngp_td, nngp_tt), (ntk_dd, ntk_td, ntk_tt) = _split(nngp), _split(ntk)
    y, ts = _targets(), np.array([1.0, 30.0])
    x_train, x_test = _inputs()

    def everything(k_dd, k_td, k_tt, y, ts, x_train, x_test):
        gd = gradient_descent_mse(k_dd.ntk, y, LR, 0.01)
        gp = gp_inference(k_dd, y, 0.01)(("nngp", "ntk"), k_td, k_tt)
        ens = gradient_descent_mse_ensemble(_kernel_fn, x_train, y, LR)(ts, x_test, compute_cov=True)
        return gd(ts, 0.1, 0.2, k_td.ntk), gd(None, 0.1, 0.2, k_td.ntk), gp, ens

    args = (Kernel(nngp_dd, ntk_dd), Kernel(nngp_td, ntk_td), Kernel(nngp_tt, ntk_tt), y, ts, x_train, x_test)
    chex.assert_trees_all_close(jax.jit(everything)(*args), everything(*args), rtol=1e-11, atol=1e-13)


@pytest.mark.float64
def test_vmap_over_learning_rates_and_kernels():
    nngp, ntk = _joint_kernels()
    k_dd, k_td, _ = _split(ntk)
    y, lrs = _targets(), np.array([0.1, 0.7, 2.0])
    run = lambda lr, k: gradient_descent_mse(k, y, lr)(25.0, 0.1, 0.0, k_td)  # noqa: E731
    kernels = np.stack([k_dd, _split(nngp)[0], k_dd])
    by_lr = jax.jit(jax.vmap(run, (0, None)))(lrs, k_dd)
    by_kernel = jax.jit(jax.vmap(run, (None, 0)))(LR, kernels)
    for i in range(3):
        lr_i, kernel_i = jax.tree.map(lambda a: a[i], (by_lr, by_kernel))
        chex.assert_trees_all_close(lr_i, run(lrs[i], k_dd), rtol=1e-12, atol=1e-13)
        chex.assert_trees_all_close(kernel_i, run(LR, kernels[i]), rtol=1e-12, atol=1e-13)


def _weighted_test_output(t, k_dd, k_td, y, f0, weights):
    return jnp.sum(weights * gradient_descent_mse(k_dd, y, LR)(t, f0, 0.0, k_td)[1])


_output_jit = jax.jit(_weighted_test_output)
_output_dt = jax.jit(jax.grad(_weighted_test_output))
_output_along = jax.jit(lambda c, t, k_dd, direction, *rest: _weighted_test_output(t, k_dd + c * direction, *rest))
_output_dc = jax.jit(jax.grad(_output_along))


@pytest.mark.float64
@pytest.mark.parametrize("t", [1e-4, 0.3, 40.0])  # a·λ below and above the series radius of the derivative
def test_derivatives_in_time_and_kernel(t):
    _, ntk = _joint_kernels()
    k_dd, k_td, _ = _split(ntk)
    y, f0, weights = _targets(), _targets(3), _targets(5, (N_TEST, N_OUT))
    rest = (k_td, y, f0, weights)
    rate = LR / y.size
    want_dt = np.sum(weights * (rate * k_td @ expm(-rate * t * k_dd) @ (y - f0)))  # d f_test/dt, analytic
    np.testing.assert_allclose(_output_dt(t, k_dd, *rest), want_dt, rtol=1e-9)
    h = 1e-3 * max(t, 1.0)
    fd_dt = (_output_jit(t + h, k_dd, *rest) - _output_jit(t - h, k_dd, *rest)) / (2 * h)
    np.testing.assert_allclose(_output_dt(t, k_dd, *rest), fd_dt, rtol=1e-5)
    direction = _targets(6, (N_TRAIN, N_TRAIN))
    direction = (direction + direction.T) / 2
    fd_dk = (_output_along(1e-5, t, k_dd, direction, *rest) - _output_along(-1e-5, t, k_dd, direction, *rest)) / 2e-5
    np.testing.assert_allclose(_output_dc(0.0, t, k_dd, direction, *rest), fd_dk, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("y_shape", [(N_TRAIN,), (N_TRAIN, N_OUT)])
def test_float32_jit_shapes_and_dtypes(y_shape):
    nngp, ntk = _joint_kernels()
    k_dd, k_td, k_tt = (Kernel(*(jnp.asarray(k, jnp.float32) for k in pair)) for pair in zip(_split(nngp), _split(ntk)))
    y = jnp.asarray(_targets(shape=y_shape), jnp.float32)
    x_train, x_test = (jnp.asarray(x, jnp.float32) for x in _inputs())

    @jax.jit
    def everything(k_dd, k_td, k_tt, y, x_train, x_test):
        gd = gradient_descent_mse(k_dd.ntk, y, LR)(jnp.ones((2, 5)), 0.0, 0.0, k_td.ntk)
        gp = gp_inference(k_dd, y)("ntk", k_td, k_tt)
        return gd, gp, gradient_descent_mse_ensemble(_kernel_fn, x_train, y, LR)(jnp.ones(3), x_test, compute_cov=True)

    (fx_train, fx_test), (mean, cov), ens = everything(k_dd, k_td, k_tt, y, x_train, x_test)
    assert fx_train.shape == (2, 5) + y_shape and fx_test.shape == (2, 5, N_TEST) + y_shape[1:]
    assert mean.shape == (N_TEST,) + y_shape[1:] and cov.shape == (N_TEST, N_TEST)
    assert ens.ntk.mean.shape == (3, N_TEST) + y_shape[1:] and ens.nngp.covariance.shape == (3, N_TEST, N_TEST)
    for leaf in jax.tree.leaves((fx_train, fx_test, mean, cov, ens)):
        assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))


# ----------------------------------------------------------------------------- bad input


def _bad_kernel():
    return np.diag(np.array([1.0, 1.0, -0.5]))  # symmetric, not positive (semi)definite


def _error_cases():
    k, y, kt = np.eye(4), np.ones((4, 2)), np.ones((3, 4))
    pair = Kernel(k, k)
    gp = lambda *args: gp_inference(pair, y)(*args)  # noqa: E731
    return {
        "non-square": (lambda: gradient_descent_mse(np.ones((4, 3)), y), "k_train_train"),
        "y size": (lambda: gradient_descent_mse(k, np.ones(5)), "y_train"),
        "y size gp": (lambda: gp_inference(pair, np.ones(3)), "y_train"),
        "test dim": (lambda: gradient_descent_mse(k, y)(1.0, 0.0, 0.0, np.ones((3, 5))), "k_test_train"),
        "test dim gp": (lambda: gp("nngp", Kernel(np.ones((3, 5)), np.ones((3, 5)))), "k_test_train"),
        "test-test": (lambda: gp("nngp", Kernel(kt, kt), Kernel(np.eye(2), np.eye(2))), "k_test_test"),
        "fx_train_0": (lambda: gradient_descent_mse(k, y)(1.0, np.ones(3)), "fx_train_0"),
        "unknown get": (lambda: gp("gp", Kernel(kt, kt)), "get"),
        "ensemble get": (lambda: gradient_descent_mse_ensemble(_kernel_fn, np.ones((4, 3)), y)(1.0, get="ntkgp"),
                         "get"),
        "learning_rate": (lambda: gradient_descent_mse(k, y, learning_rate=-0.1), "learning_rate"),
        "diag_reg": (lambda: gradient_descent_mse(k, y, diag_reg=-1.0), "diag_reg"),
        "diag_reg gp": (lambda: gp_inference(pair, y, diag_reg=-1.0), "diag_reg"),
        "missing kind": (lambda: gp_inference(Kernel(k, None), y)("ntk", Kernel(kt, kt)), "k_train_train"),
        "ambiguous": (lambda: gp("ntk", kt, Kernel(np.eye(3), np.eye(3))), "k_test_train"),
    }


@pytest.mark.parametrize("case", list(_error_cases()))
def test_bad_input_raises_one_line_error_naming_the_argument(case):
    fn, argument = _error_cases()[case]
    with pytest.raises(ValueError, match=rf"^{argument}\b") as info:
        fn()
    assert "\n" not in str(info.value)


def test_non_positive_definite_kernel():
    k, y = _bad_kernel(), np.ones((3, 2))
    predict = gradient_descent_mse(k, y)
    assert bool(jnp.all(jnp.isfinite(predict(5.0, 0.0, 0.0, np.ones((2, 3)))[1])))  # finite t needs no solve
    with pytest.raises(ValueError, match="^k_train_train: expected a positive-definite"):
        predict(None, 0.0, 0.0, np.ones((2, 3)))
    with pytest.raises(ValueError, match="^k_train_train.nngp: expected a positive-definite"):
        gp_inference(Kernel(k, np.eye(3)), y)("nngp", Kernel(np.ones((2, 3)), np.ones((2, 3))))
    # Under jit (values traced) the outputs are NaN, as documented.
    traced = jax.jit(lambda k: gradient_descent_mse(k, y)(None, 0.0, 0.0, jnp.ones((2, 3)))[1])(k)
    assert bool(jnp.all(jnp.isnan(traced)))
    traced = jax.jit(lambda k: gp_inference(k, y)("nngp", jnp.ones((2, 3))))(k)
    assert bool(jnp.all(jnp.isnan(traced)))


@pytest.mark.parametrize("which", ["gradient_descent_mse", "gp_inference"])
def test_checkify_reports_non_positive_definite_kernel_under_jit(which):
    y, kt = np.ones((3, 2)), jnp.ones((2, 3))
    if which == "gradient_descent_mse":
        fn = lambda k: gradient_descent_mse(k, y, check=True)(None, 0.0, 0.0, kt)[1]  # noqa: E731
    else:
        fn = lambda k: gp_inference(k, y, check=True)("nngp", kt)  # noqa: E731
    checked = jax.jit(checkify.checkify(fn))
    error, _ = checked(_bad_kernel())
    assert "k_train_train: expected a positive-definite" in error.get()
    error, out = checked(np.eye(3))
    assert error.get() is None and bool(jnp.all(jnp.isfinite(out)))
