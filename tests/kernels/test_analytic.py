"""Analytic NNGP/NTK of nn models vs closed forms and vs averages of finite-width networks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxlearn import kernels, nn

F64 = pytest.mark.float64


def _x(n=4, d=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d))


def _relu_closed_form(x, w_std, b_std, parameterization):
    """Dense → ReLU → Dense written out with Cho & Saul's arc-cosine formulas (arccos form)."""
    x = np.asarray(x)
    d = x.shape[1]
    k0 = x @ x.T / d
    k1 = w_std ** 2 * k0 + b_std ** 2
    q = np.sqrt(np.diag(k1))
    rho = np.clip(k1 / np.outer(q, q), -1, 1)
    np.fill_diagonal(rho, 1.0)  # exactly 1 (k/(√k√k) rounds; arccos(1 − ε) ≈ √(2ε) would dominate)
    theta = np.arccos(rho)
    relu_k = np.outer(q, q) * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    relu_kdot = (np.pi - theta) / (2 * np.pi)
    nngp = w_std ** 2 * relu_k + b_std ** 2
    if parameterization == "ntk":
        theta1 = k1
        ntk = nngp + w_std ** 2 * theta1 * relu_kdot
    else:  # standard: Θ1 = d·K0 + 1, Θ2 = n·K(relu) + σ_w²Θ1·K̇ + 1 with n the hidden width
        theta1 = d * k0 + 1.0
        ntk = 7 * relu_k + w_std ** 2 * theta1 * relu_kdot + 1.0
    return nngp, ntk


@F64
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_one_hidden_layer_closed_form(parameterization):
    w_std, b_std = 1.5, 0.3
    model = nn.serial(nn.Dense(7, W_std=w_std, b_std=b_std, parameterization=parameterization), nn.Relu(),
                      nn.Dense(1, W_std=w_std, b_std=b_std, parameterization=parameterization))
    x = _x()
    k = kernels.analytic(model, x)
    nngp, ntk = _relu_closed_form(x, w_std, b_std, parameterization)
    np.testing.assert_allclose(k.nngp, nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(k.ntk, ntk, rtol=1e-12, atol=1e-14)


def _empirical(model, x, width_key, n_seeds):
    """Average over ``n_seeds`` inits of the per-output empirical NNGP (f fᵀ) and NTK (J Jᵀ)."""
    def one(key):
        params, _ = model.init(key, jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
        flat, unravel = ravel_pytree(params)
        f = model.apply(params, x)                                   # (N, K)
        jac = jax.jacobian(lambda v: model.apply(unravel(v), x))(flat)  # (N, K, P)
        k = f.shape[1]
        return f @ f.T / k, jnp.einsum("nkp,mkp->nm", jac, jac) / k

    # memory: one Jacobian
    nngp, ntk = jax.jit(lambda keys: jax.lax.map(one, keys))(jax.random.split(width_key, n_seeds))
    return nngp.mean(0), ntk.mean(0)


def _relative_errors(model, x, widths, n_seeds):
    """``{width: (NNGP error, NTK error)}``: relative Frobenius errors of the init-averaged
    empirical kernels of ``model(width)`` against its analytic kernels."""
    errors = {}
    for width in widths:
        k = jax.jit(lambda a, m=model(width): kernels.analytic(m, a))(x)
        nngp, ntk = _empirical(model(width), x, jax.random.key(width), n_seeds=n_seeds)
        errors[width] = (np.linalg.norm(nngp - k.nngp) / np.linalg.norm(k.nngp),
                         np.linalg.norm(ntk - k.ntk) / np.linalg.norm(k.ntk))
    return errors


@F64
@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
def test_finite_width_average_converges_to_analytic(parameterization):
    """Error of the init-average at width w: O(1/w) bias + O(1/√(n·w)) sampling noise → 0."""
    def model(width):
        p = dict(parameterization=parameterization)
        return nn.serial(nn.Dense(width, W_std=1.4, b_std=0.2, **p), nn.Erf(),
                         nn.Dense(width, W_std=1.2, b_std=0.1, **p), nn.Relu(),
                         nn.Dense(32, W_std=1.1, b_std=0.3, **p))

    errors = _relative_errors(model, _x(n=3, d=4), (16, 256), n_seeds=32)
    # 32 outputs × 32 inits = 1024 samples: NNGP noise ~ 1/√1024 ≈ 0.03, and the NTK
    # (a sum over width-many units) concentrates further at width 256.
    assert errors[256][0] < 0.06 and errors[256][1] < 0.03, errors
    assert errors[256][0] < errors[16][0] and errors[256][1] < errors[16][1], errors


@F64
def test_cnn_finite_width_average_converges_to_analytic():
    """The same for a CNN (Conv SAME → ReLU → Conv stride 2 → ReLU → GlobalAvgPool → Dense)."""
    def model(width):
        p = dict(W_std=1.4, b_std=0.1, parameterization="ntk")
        return nn.serial(nn.Conv(width, (2, 2), padding="SAME", **p), nn.Relu(),
                         nn.Conv(width, (2, 2), strides=(2, 2), padding="SAME", **p), nn.Relu(),
                         nn.GlobalAvgPool(), nn.Dense(16, **p))

    errors = _relative_errors(model, jax.random.normal(jax.random.key(0), (3, 4, 4, 2)), (4, 128), n_seeds=16)
    # 16 outputs × 16 inits: NNGP noise ~ 1/16; the NTK concentrates with width.
    assert errors[128][0] < 0.12 and errors[128][1] < 0.05, errors
    assert errors[128][1] < errors[4][1], errors


@F64
def test_x2_none_and_blocks_and_get():
    model = nn.serial(nn.Dense(5, W_std=1.3, b_std=0.1, parameterization="ntk"), nn.Gelu(),
                      nn.Dense(5, parameterization="ntk"), nn.Sin(), nn.Dense(1))
    x1, x2 = _x(n=7), _x(n=5, seed=1)
    full = kernels.analytic(model, x1)
    same = kernels.analytic(model, x1, x1)
    np.testing.assert_allclose(full.nngp, same.nngp, rtol=1e-13)
    np.testing.assert_allclose(full.ntk, same.ntk, rtol=1e-13)
    cross = kernels.analytic(model, x1, x2)
    for batch_size in (2, 3):   # ragged blocks: 7 = 3 + 3 + 1, 5 = 3 + 2
        blocked = kernels.analytic(model, x1, x2, batch_size=batch_size)
        np.testing.assert_allclose(blocked.nngp, cross.nngp, rtol=1e-13)
        np.testing.assert_allclose(blocked.ntk, cross.ntk, rtol=1e-13)
        np.testing.assert_allclose(blocked.cov1, cross.cov1, rtol=1e-13)
        np.testing.assert_allclose(blocked.cov2, cross.cov2, rtol=1e-13)
        square = kernels.analytic(model, x1, batch_size=batch_size)
        np.testing.assert_allclose(square.ntk, full.ntk, rtol=1e-13)
        assert square.cov2 is None
    np.testing.assert_allclose(np.diag(full.nngp), full.cov1, rtol=1e-13)
    nngp, ntk = kernels.analytic(model, x1, x2, get=("nngp", "ntk"))
    np.testing.assert_array_equal(kernels.analytic(model, x1, x2, get="ntk"), ntk)
    np.testing.assert_array_equal(nngp, cross.nngp)


@F64
def test_auto_blocks_and_row_loops_equal_one_pass(monkeypatch):
    """Force both loops the defaults only use on large inputs: row blocks of x1 (analytic) and
    row blocks inside each activation's map (nn.kernel)."""
    import importlib

    analytic_module = importlib.import_module("jaxlearn.kernels.analytic")  # the attribute is the function
    kernel_module = importlib.import_module("jaxlearn.nn.kernel")

    model = nn.serial(nn.Dense(5, W_std=1.3, b_std=0.1), nn.Relu(), nn.Dense(5), nn.Erf(), nn.Dense(1))
    x1, x2 = _x(n=7), _x(n=5, seed=1)
    want = [kernels.analytic(model, x1, b, batch_size=None) for b in (x2, None)]
    monkeypatch.setattr(analytic_module, "_AUTO_ENTRIES", 15)        # 3 rows of x1 per block
    monkeypatch.setattr(kernel_module, "_row_block", lambda n1: 2)   # ragged: 3 = 2 + 1
    for b, w in zip((x2, None), want):
        got = kernels.analytic(model, x1, b)
        for name in ("nngp", "ntk", "cov1", "cov2"):
            if getattr(w, name) is None:
                assert getattr(got, name) is None
            else:
                np.testing.assert_allclose(getattr(got, name), getattr(w, name), rtol=1e-13)


@pytest.mark.parametrize("activation, loops", [
    (nn.Relu(), 0), (nn.LeakyRelu(0.1), 0), (nn.Sin(), 0), (nn.Erf(), 0), (nn.Gelu(), 0),
    (nn.Elementwise(jax.nn.relu, "Relu, own dual", lambda q11, q12, q22: nn.dual.relu_dual(q11, q12, q22)), 1)])
def test_row_loops_only_for_duals_not_one_pass(activation, loops):
    """An activation's map runs in row blocks of a loop (so that XLA reads each layer's stored
    kernel instead of recomputing it inside the next layer) unless its dual is marked
    ``one_pass`` (jaxlearn.nn.dual.one_pass; every closed form of jaxlearn.nn.dual is): a loop's
    stacked outputs cost a third of the depth-3 ReLU kernel's time."""
    model = nn.serial(nn.Dense(4), activation, nn.Dense(4), activation, nn.Dense(1))
    jaxpr = jax.make_jaxpr(lambda a: kernels.analytic(model, a, get="ntk", batch_size=None))(_x(n=40))
    assert str(jaxpr).count(" scan[") == 2 * loops   # lax.map: a scan in the jaxpr, a while loop in XLA


def test_a_warm_eager_call_is_one_cached_program_with_the_same_checks():
    """An eager call on JAX arrays (a jaxlearn model, one device) runs a jitted ``analytic`` cached
    per model and arguments (``_analytic_program``): the same values as under the caller's own
    ``jit``, one cached program reused across inputs, and bad input still raises the one-line error
    naming the argument."""
    import importlib

    analytic_module = importlib.import_module("jaxlearn.kernels.analytic")
    model = nn.serial(nn.Dense(3, W_std=1.3, b_std=0.1), nn.Relu(), nn.Dense(1))
    x1, x2 = _x(n=5), _x(n=4, seed=1)
    for get in (None, "ntk", ("nngp", "ntk")):
        for b in (x2, None):
            got = kernels.analytic(model, x1, b, get=get)
            want = jax.jit(lambda a, c, g=get: kernels.analytic(model, a, c, get=g))(x1, b)
            chex.assert_trees_all_equal(got, want)
    program = analytic_module._analytic_program(model, "ntk", "auto")
    kernels.analytic(model, x1 + 1.0, x2, get="ntk")
    assert analytic_module._analytic_program(model, "ntk", "auto") is program
    with pytest.raises(ValueError, match="x2: expected shape"):
        kernels.analytic(model, x1, _x(n=4, d=2), get="ntk")
    with pytest.raises(ValueError, match="get: expected"):
        kernels.analytic(model, x1, get="nnpg")


@F64
def test_jit_vmap_over_hyperparameters_and_grad():
    x = _x(n=5)

    def ntk(w_std, b_std):
        model = nn.serial(nn.Dense(3, W_std=w_std, b_std=b_std, parameterization="ntk"), nn.Relu(),
                          nn.Dense(1, W_std=w_std, b_std=b_std, parameterization="ntk"))
        return kernels.analytic(model, x, get="ntk")

    ws, bs = jnp.linspace(0.5, 2.0, 3), jnp.linspace(0.0, 0.5, 2)
    chex.clear_trace_counter()
    grid_fn = jax.jit(jax.vmap(jax.vmap(chex.assert_max_traces(ntk, n=1), in_axes=(None, 0)), in_axes=(0, None)))
    grid = grid_fn(ws, bs)
    # W_std is traced: another grid of the same size runs the same program, not a recompiled one
    np.testing.assert_allclose(grid_fn(ws[::-1], bs), grid[::-1], rtol=1e-13)
    for i, w in enumerate(ws):
        for j, b in enumerate(bs):
            np.testing.assert_allclose(grid[i, j], ntk(w, b), rtol=1e-13)
    g = jax.grad(lambda w: ntk(w, 0.2)[0, 1])(1.3)
    fd = (ntk(1.3 + 1e-6, 0.2)[0, 1] - ntk(1.3 - 1e-6, 0.2)[0, 1]) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-7)


def test_float32_shapes_and_dtype():
    model = nn.serial(nn.Dense(4), nn.LeakyRelu(0.1), nn.Dense(4), nn.ABRelu(-0.5, 1.0), nn.Dense(2))
    k = jax.jit(lambda a, b: kernels.analytic(model, a, b))(_x(n=6), _x(n=3, seed=2))
    assert k.nngp.shape == k.ntk.shape == (6, 3) and k.nngp.dtype == jnp.float32
    assert np.all(np.isfinite(k.ntk))


def test_gradient_descent_mse_ensemble_takes_a_model():
    model = nn.serial(nn.Dense(4, parameterization="ntk"), nn.Relu(), nn.Dense(1, parameterization="ntk"))
    x, y = _x(n=6), jnp.arange(6.0)[:, None] / 6
    predict = kernels.gradient_descent_mse_ensemble(model, x, y, diag_reg=1e-3)
    mean = predict(t=None, x_test=_x(n=2, seed=3), get="ntk")
    k_train, k_test = kernels.analytic(model, x), kernels.analytic(model, _x(n=2, seed=3), x)
    want = kernels.gp_inference(k_train, y, diag_reg=1e-3)("ntk", k_test)
    np.testing.assert_allclose(mean, want, rtol=1e-4)


@pytest.mark.parametrize("call, error, match", [
    (lambda x: kernels.analytic(nn.serial(nn.Dense(3), nn.Tanh(), nn.Dense(1)), x), nn.LayerError,
     r"^layer Tanh has no closed-form infinite-width kernel; .*monte_carlo"),
    (lambda x: kernels.analytic(nn.Dense(1), x, jnp.ones((2, 4))), ValueError,
     r"^x2: expected shape \(N2,\) \+ \(3,\)"),
    (lambda x: kernels.analytic(nn.Dense(1), x[0]), ValueError, r"^x1: expected a batch"),
    (lambda x: kernels.analytic(nn.Dense(1), x, get="fisher"), ValueError, r"^get: "),
    (lambda x: kernels.analytic(nn.Dense(1), x, batch_size=0), ValueError, r"^batch_size: "),
    (lambda x: kernels.analytic(nn.Dense(1, parameterization="mup", role="output"), x), ValueError,
     r"^parameterization 'mup' has no infinite-width NTK map"),
    (lambda x: kernels.analytic(lambda p, a: a, x), TypeError, r"^model: expected a jaxlearn.nn.Layer"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match) as info:
        call(_x())
    assert "\n" not in str(info.value)



@pytest.mark.parametrize("n1, n2, batch_size", [(160_020, 256, "auto"), (4096, 4096, 256)])
def test_blocked_kernels_hold_the_result_once(n1, n2, batch_size):
    """Blocks are reassembled without a second copy of the result: XLA's temporary memory is a small
    fraction of the output (compiled only, not run). Before, a ragged row split (whose padding was
    cut off the result) or a grid of square blocks (transposed into place) held it twice. "auto"
    picks rows dividing N1 (160,020 → 42 blocks of 3,810 rather than 40 of 4,001 with 20 rows of
    padding)."""
    model = nn.serial(nn.Dense(16), nn.Relu(), nn.Dense(1))
    x1, x2 = jax.ShapeDtypeStruct((n1, 8), jnp.float32), jax.ShapeDtypeStruct((n2, 8), jnp.float32)
    program = jax.jit(lambda a, b: kernels.analytic(model, a, b, get=("nngp", "ntk"), batch_size=batch_size))
    memory = program.lower(x1, x2).compile().memory_analysis()
    assert memory.temp_size_in_bytes < 0.25 * memory.output_size_in_bytes, (memory.temp_size_in_bytes,
                                                                            memory.output_size_in_bytes)
