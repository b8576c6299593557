"""Per-example gradients against a Python loop of ``jax.grad`` on single examples, a closed form (linear
model) and central finite differences of a NumPy forward pass; the noise-scale estimators against the
true ``|G|²`` and ``tr(Σ)`` of a synthetic gradient distribution (Monte Carlo) and against NumPy's
sample mean / covariance; the SNR against NumPy mean / var."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import nn, train
from jaxlearn.analysis import gradients as G

N, D, C = 8, 3, 2
MODEL = nn.serial(nn.Dense(4), nn.Tanh(), nn.Dense(C))
LOSSES = {"ce": train.per_example_softmax_cross_entropy, "mse": train.per_example_mse}
# the model's parameter shapes, by tracing only (jitted random init compiles slowly on CPU)
SHAPES = jax.eval_shape(lambda: MODEL.init(jax.random.key(0), jax.ShapeDtypeStruct((1, D), jnp.float32))[0])
x64 = pytest.mark.float64


def _params(seed, dtype):
    """NumPy weights ~ N(0, 1/fan_in), biases ~ N(0, 1/4), in MODEL's structure."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.normal(size=s.shape) * (s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.5))
                        .astype(dtype), SHAPES)


def _data(loss, dtype, n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(dtype)
    y = rng.integers(0, C, n).astype(np.int32) if loss == "ce" else rng.normal(size=(n, C)).astype(dtype)
    return x, y


@functools.lru_cache(maxsize=None)
def _compiled(loss, chunk_size):
    """One program per (loss, chunk size): per-example gradients, their norms and the model noise scale."""

    def fn(p, x, y):
        args = (MODEL.apply, LOSSES[loss], p, x, y)
        return (G.per_example_grads(*args, chunk_size=chunk_size),
                G.per_example_grad_norms(*args, chunk_size=chunk_size),
                G.model_gradient_noise_scale(*args, chunk_size=chunk_size))

    return jax.jit(fn)


@functools.lru_cache(maxsize=None)
def _one_grad(loss):
    return jax.jit(jax.grad(lambda p, xi, yi: LOSSES[loss](MODEL.apply(p, xi[None])[0], yi)))


@functools.lru_cache(maxsize=None)
def _case(loss, seed=1):
    """float64 params, data, and the gradient of each example's loss, one ``jax.grad`` call per example."""
    params, (x, y) = _params(seed, np.float64), _data(loss, np.float64, seed=seed)
    grads = [_one_grad(loss)(params, x[i], y[i]) for i in range(len(x))]
    return params, x, y, jax.tree.map(lambda *a: np.stack(a), *grads)


def _flat(grads):
    """Per-example gradients as an ``(n, P)`` matrix."""
    return np.concatenate([np.asarray(a).reshape(a.shape[0], -1) for a in jax.tree.leaves(grads)], axis=1)


def _numpy_noise_scale(grads):
    """``(|Ĝ|² − tr Σ̂ / n, tr Σ̂, ratio)`` with NumPy's sample covariance (ddof=1) of the flat gradients."""
    flat = _flat(grads)
    trace = np.trace(np.cov(flat.T, ddof=1))
    grad_sq = np.sum(flat.mean(0) ** 2) - trace / len(flat)
    return grad_sq, trace, trace / grad_sq


# -- per-example gradients and norms (float64) ----------------------------------------------------------------

@x64
@pytest.mark.parametrize("chunk_size", [None, 3])  # 3 does not divide n = 8: a padded last chunk
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_grads_norms_and_noise_scale_match_a_python_loop(loss, chunk_size):
    params, x, y, want = _case(loss)
    grads, norms, noise = _compiled(loss, chunk_size)(params, x, y)
    chex.assert_trees_all_close(grads, want, rtol=1e-12, atol=1e-14)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    np.testing.assert_allclose(norms, np.sqrt(np.sum(_flat(want) ** 2, axis=1)), rtol=1e-12)
    assert norms.shape == (N,)
    np.testing.assert_allclose(noise, _numpy_noise_scale(want), rtol=1e-10)


@x64
@pytest.mark.parametrize("chunk_size", [1, 4])  # both divide n = 8
def test_chunked_equals_unchunked(chunk_size):
    params, x, y, _ = _case("ce")
    chex.assert_trees_all_close(_compiled("ce", chunk_size)(params, x, y), _compiled("ce", None)(params, x, y),
                                rtol=1e-12, atol=1e-15)


@x64
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_linear_model_closed_form(loss):
    """Softmax regression ``f = x W + b``: ``∇_W ℓ_i = x_i (∂ℓ/∂f)ᵀ``, ``∇_b ℓ_i = ∂ℓ/∂f`` with ``∂ℓ/∂f =
    softmax(f) − e_y`` (cross-entropy) or ``(f − y)/C`` (``½·mean`` squared error)."""
    rng = np.random.default_rng(4)
    params = {"W": rng.normal(size=(D, C)), "b": rng.normal(size=C)}
    x, y = _data(loss, np.float64, seed=5)
    f = x @ params["W"] + params["b"]
    if loss == "ce":
        p = np.exp(f - f.max(1, keepdims=True))
        dldf = p / p.sum(1, keepdims=True) - np.eye(C)[y]
    else:
        dldf = (f - y) / C
    got = jax.jit(lambda p: G.per_example_grads(lambda q, xb: xb @ q["W"] + q["b"], LOSSES[loss], p, x, y,
                                                chunk_size=3 if loss == "ce" else 100))(params)  # 100 > n
    np.testing.assert_allclose(got["W"], np.einsum("nd,nc->ndc", x, dldf), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got["b"], dldf, rtol=1e-12, atol=1e-15)


def _numpy_losses(params, x, y, loss):
    (l1, _, l2) = params
    f = np.tanh(x @ np.asarray(l1["W"]) + np.asarray(l1["b"])) @ np.asarray(l2["W"]) + np.asarray(l2["b"])
    if loss == "mse":
        return 0.5 * np.mean((f - y) ** 2, axis=1)
    m = f.max(1)
    return m + np.log(np.exp(f - m[:, None]).sum(1)) - f[np.arange(len(y)), y]


@x64
@pytest.mark.parametrize("leaf, name, where", [(0, "W", (1, 2)), (2, "b", (1,))])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_finite_differences_on_one_coordinate(loss, leaf, name, where):
    params, x, y, _ = _case(loss)
    h = 1e-5  # central differences: truncation ~h², rounding ~1e-16/h, both below 1e-9 here

    def shifted(delta):
        p = jax.tree.map(np.array, params)
        p[leaf][name][where] += delta
        return _numpy_losses(p, x, y, loss)

    fd = (shifted(h) - shifted(-h)) / (2 * h)
    got = _compiled(loss, 3)(params, x, y)[0][leaf][name][(slice(None),) + where]
    assert np.max(np.abs(fd)) > 1e-3  # the coordinate matters
    np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-9)


# -- noise scale ------------------------------------------------------------------------------------------------

@x64
def test_noise_scale_is_unbiased_where_the_plug_in_is_not():
    """Gradients ``g = G + A z`` with ``z`` i.i.d. uniform of unit variance (not Gaussian): mean ``G``,
    covariance ``Σ = A Aᵀ``. ``R`` replicates of ``n`` examples; the average of each estimate over the
    replicates has standard error ``std / √R``, and by the CLT lies within 4 of them of its expectation
    (two-sided tail probability 6e-5; the seed is fixed). The plug-in ``|Ĝ|²`` has expectation
    ``|G|² + tr(Σ)/n``, many standard errors away from ``|G|²``."""
    rng = np.random.default_rng(0)
    reps, n = 4000, 8
    mean = np.array([0.6, -0.3, 0.5, 0.2, -0.4])
    a = 0.5 * rng.normal(size=(5, 5))
    grad_sq_true, trace_true = float(mean @ mean), float(np.sum(a * a))
    g = mean + ((rng.random((reps, n, 5)) - 0.5) * np.sqrt(12.0)) @ a.T
    grads = {"a": g[..., :2], "b": g[..., 2:]}
    est = jax.jit(jax.vmap(G.gradient_noise_scale))(grads)
    plug_in = np.sum(np.mean(g, axis=1) ** 2, axis=-1)  # |Ĝ|² per replicate

    def within(samples, value, k=4.0):
        se = np.std(samples, ddof=1) / np.sqrt(len(samples))
        return abs(np.mean(samples) - value) < k * se, se

    assert within(np.asarray(est.grad_sq), grad_sq_true)[0]
    assert within(np.asarray(est.trace_cov), trace_true)[0]
    ok, se = within(plug_in, grad_sq_true + trace_true / n)
    assert ok
    assert abs(np.mean(plug_in) - grad_sq_true) > 20 * se  # the bias tr(Σ)/n is plainly visible
    np.testing.assert_allclose(est.b_simple, np.asarray(est.trace_cov) / np.asarray(est.grad_sq), rtol=1e-14)


@x64
def test_noise_scale_from_per_example_grads_against_numpy_covariance():
    _, _, _, grads = _case("ce")
    want = _numpy_noise_scale(grads)
    np.testing.assert_allclose(jax.jit(G.gradient_noise_scale)(grads), want, rtol=1e-10)
    # App. A.1 with B_small = 1 (the mean over examples of |g_i|²) and B_big = n (|Ĝ|²) is the same estimate
    flat = _flat(grads)
    np.testing.assert_allclose(G.noise_scale_from_norms(np.mean(np.sum(flat ** 2, 1)), np.sum(flat.mean(0) ** 2), 1, N),
                               want, rtol=1e-10)


@x64
@pytest.mark.parametrize("b_small, b_big", [(1, 8), (4, 32), (3, 5), (64.0, 1024.0)])
def test_noise_scale_from_norms_recovers_the_truth_from_expectations(b_small, b_big):
    grad_sq, trace = 0.9, 6.25
    est = G.noise_scale_from_norms(grad_sq + trace / b_small, grad_sq + trace / b_big, b_small, b_big)
    np.testing.assert_allclose(est, (grad_sq, trace, trace / grad_sq), rtol=1e-12)


@x64
def test_snr_against_numpy_mean_and_var():
    rng = np.random.default_rng(10)
    grads = {"w": 0.5 + rng.normal(size=(9, 3, 2)), "b": rng.normal(size=(9, 2)) - 1.0}
    got = jax.jit(G.gradient_snr)(grads)
    for k in grads:
        mean, var = np.mean(grads[k], axis=0), np.var(grads[k], axis=0, ddof=1)
        np.testing.assert_allclose(got.per_parameter[k], mean ** 2 / var, rtol=1e-12)
    num = sum(np.sum(np.mean(g, 0) ** 2) for g in grads.values())
    den = sum(np.sum(np.var(g, 0, ddof=1)) for g in grads.values())
    np.testing.assert_allclose(got.overall, num / den, rtol=1e-12)


# -- jit / vmap (float32) ---------------------------------------------------------------------------------------

def _all(params, x, y):
    grads = G.per_example_grads(MODEL.apply, LOSSES["ce"], params, x, y, chunk_size=3)
    return (grads, G.per_example_grad_norms(MODEL.apply, LOSSES["ce"], params, x, y),
            G.model_gradient_noise_scale(MODEL.apply, LOSSES["ce"], params, x, y, chunk_size=3),
            G.gradient_noise_scale(grads), G.gradient_snr(grads))


def test_jit_and_vmap_over_the_params_of_several_seeds():
    x, y = _data("ce", np.float32)
    seeds = jax.tree.map(lambda *a: np.stack(a), *[_params(s, np.float32) for s in range(3)])
    batched = jax.jit(jax.vmap(_all, in_axes=(0, None, None)))(seeds, x, y)
    single = jax.jit(_all)
    for s in range(3):
        want = single(jax.tree.map(lambda a: a[s], seeds), x, y)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[s], batched), want, rtol=2e-4, atol=1e-6)
    grads, norms, model_ns, ns, snr = batched
    assert jax.tree.leaves(grads)[0].shape == (3, N, D, 4) and norms.shape == (3, N)
    assert model_ns.grad_sq.shape == ns.trace_cov.shape == snr.overall.shape == (3,)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(batched))
    got = jax.jit(jax.vmap(G.noise_scale_from_norms))(jnp.array([2.0, 3.0]), jnp.array([1.5, 2.0]),
                                                     jnp.array([1.0, 2.0]), jnp.array([4.0, 8.0]))
    np.testing.assert_allclose(got.trace_cov, [0.5 / 0.75, 1.0 / 0.375], rtol=1e-6)


def _bad_loss(output, target):
    return output - target


@pytest.mark.parametrize("make, match", [
    (lambda x, y: G.per_example_grads(MODEL.apply, train.softmax_cross_entropy, _params(0, np.float32), x, y),
     "^per_example_loss: expected a per-example loss"),
    (lambda x, y: G.per_example_grads(MODEL.apply, LOSSES["ce"], _params(0, np.float32), x, y[:6]),
     r"^y: expected 8 examples as in x, got 6$"),
    (lambda x, y: G.per_example_grad_norms(MODEL.apply, LOSSES["ce"], _params(0, np.float32), x, y, chunk_size=0),
     "^chunk_size must be an integer >= 1, got 0$"),
    (lambda x, y: G.per_example_grads(MODEL.apply, LOSSES["ce"], _params(0, np.float32), x, y, chunk_size=2.5),
     "^chunk_size must be an integer"),
    (lambda x, y: G.per_example_grads(MODEL.apply, LOSSES["ce"], _params(0, np.float32), (x, 1.0), y),
     "^x: every array needs the same leading"),
    (lambda x, y: G.per_example_grads(MODEL.apply, _bad_loss, _params(0, np.float32), x, np.zeros((N, C))),
     r"^per_example_loss: expected a scalar for one example, got shape \(2,\)$"),
    (lambda x, y: G.model_gradient_noise_scale(MODEL.apply, LOSSES["ce"], _params(0, np.float32), x[:1], y[:1]),
     "^x: expected at least 2 examples"),
    (lambda x, y: G.gradient_noise_scale({"a": np.zeros((1, 3))}),
     r"^per_example_grads: expected at least 2 examples \(leading axis\), got 1$"),
    (lambda x, y: G.gradient_snr({"a": np.zeros((4, 3), np.int32)}), "^per_example_grads: expected floating-point"),
    (lambda x, y: G.gradient_snr({"a": np.zeros((4, 3)), "b": np.zeros((5,))}),
     "^per_example_grads: every array needs the same leading"),
    (lambda x, y: G.noise_scale_from_norms(1.0, 0.5, 8, 4), "^b_big: expected a batch size larger than b_small=8"),
    (lambda x, y: G.noise_scale_from_norms(1.0, 0.5, 0, 4), "^b_small: expected a positive batch size, got 0$"),
])
def test_bad_input_is_a_one_line_error(make, match):
    x, y = _data("ce", np.float32)
    error = TypeError if "per-example loss" in match else ValueError
    with pytest.raises(error, match=match) as info:
        make(x, y)
    assert "\n" not in str(info.value)
