"""Each layer of jaxlearn.nn against a direct NumPy/SciPy implementation written here.

Numeric comparisons run in float64 (``@pytest.mark.float64``) at ~1e-12; the NumPy references
loop over output positions explicitly (convolution, pooling) so they share no code path with
``lax.conv_general_dilated`` / ``lax.reduce_window``.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import jaxlearn.nn as nn

F64 = pytest.mark.float64
TOL = dict(rtol=1e-12, atol=1e-12)


def spec(*shape, dtype=jnp.float64):
    return jax.ShapeDtypeStruct(shape, dtype)


def normal(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def run(layer, params, x, state=(), *, train=False, key=None, with_state=False):
    """``layer.apply_with_state`` under one jit (one compile per test instead of one per op)."""
    y, new_state = jax.jit(lambda p, x, s, k: layer.apply_with_state(p, x, s, key=k, train=train))(
        params, jnp.asarray(x), state, key
    )
    return (y, new_state) if with_state else y


# -- sliding-window references ----------------------------------------------------------------


def window_geometry(n, k, s, padding):
    """(out size, pad lo, pad hi) for one spatial axis; SAME follows the TF/XLA rule."""
    if padding == "VALID":
        return (n - k) // s + 1, 0, 0
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2, total - total // 2


def padded_windows(x, window, strides, padding):
    """Yields (output position, patch (N, *window, C), real-entry mask (*window,)) per output position."""
    geo = [window_geometry(n, k, s, padding) for n, k, s in zip(x.shape[1:-1], window, strides)]
    pads = [(lo, hi) for _, lo, hi in geo]
    xp = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    real = np.pad(np.ones(x.shape[1:-1]), pads)
    for pos in itertools.product(*(range(out) for out, _, _ in geo)):
        sl = tuple(slice(p * s, p * s + k) for p, s, k in zip(pos, strides, window))
        yield pos, xp[(slice(None),) + sl + (slice(None),)], real[sl]


def conv_ref(x, W, strides, padding):
    """Cross-correlation: y[n, o, c] = Σ_{k, i} x_pad[n, o·s + k, i] W[k, i, c]."""
    window, c_out = W.shape[:-2], W.shape[-1]
    ys = {}
    for pos, patch, _ in padded_windows(x, window, strides, padding):
        acc = np.zeros((x.shape[0], c_out))
        for k in itertools.product(*(range(w) for w in window)):
            acc += patch[(slice(None),) + k + (slice(None),)] @ W[k]
        ys[pos] = acc
    out_shape = tuple(max(p[d] for p in ys) + 1 for d in range(len(window)))
    y = np.zeros((x.shape[0],) + out_shape + (c_out,))
    for pos, v in ys.items():
        y[(slice(None),) + pos + (slice(None),)] = v
    return y


def avgpool_ref(x, window, strides, padding, count_include_pad):
    ys = {}
    for pos, patch, real in padded_windows(x, window, strides, padding):
        total = patch.sum(axis=tuple(range(1, 1 + len(window))))
        count = math.prod(window) if count_include_pad else real.sum()
        ys[pos] = total / count
    out_shape = tuple(max(p[d] for p in ys) + 1 for d in range(len(window)))
    y = np.zeros((x.shape[0],) + out_shape + (x.shape[-1],))
    for pos, v in ys.items():
        y[(slice(None),) + pos + (slice(None),)] = v
    return y


def test_window_geometry_reference_matches_hand_cases():
    # n=5, k=3, s=2 SAME: out 3, total pad (3-1)*2+3-5 = 2 -> (1, 1); n=6, k=3, s=2: out 3, pad 1 -> (0, 1)
    assert window_geometry(5, 3, 2, "SAME") == (3, 1, 1)
    assert window_geometry(6, 3, 2, "SAME") == (3, 0, 1)
    assert window_geometry(6, 4, 1, "SAME") == (6, 1, 2)
    assert window_geometry(7, 3, 2, "VALID") == (3, 0, 0)


# -- Dense ----------------------------------------------------------------------------------


@F64
@pytest.mark.parametrize("in_shape", [(4, 7), (2, 3, 7)])
def test_dense_standard_formula(in_shape):
    x, W, b = normal(0, *in_shape), normal(1, 7, 5), normal(2, 5)
    y = run(nn.Dense(5, W_std=1.3, b_std=0.4), {"W": jnp.asarray(W), "b": jnp.asarray(b)}, x)
    np.testing.assert_allclose(y, x @ W + b, **TOL)


@F64
@pytest.mark.parametrize("W_std, b_std", [(1.0, 0.0), (1.7, 0.3), (0.5, 2.0)])
def test_dense_ntk_formula(W_std, b_std):
    x, W, b = normal(0, 4, 7), normal(1, 7, 5), normal(2, 5)
    layer = nn.Dense(5, W_std=W_std, b_std=b_std, parameterization="ntk")
    y = run(layer, {"W": jnp.asarray(W), "b": jnp.asarray(b)}, x)
    np.testing.assert_allclose(y, W_std / np.sqrt(7) * (x @ W) + b_std * b, **TOL)


@F64
def test_dense_without_bias_has_no_b_and_is_linear():
    layer = nn.Dense(3, b_std=None)
    params, state = jax.eval_shape(lambda k: layer.init(k, spec(2, 4)), jax.random.key(1))
    assert set(params) == {"W"} and params["W"].shape == (4, 3) and state == ()
    x, W = normal(0, 2, 4), normal(1, 4, 3)
    np.testing.assert_allclose(run(layer, {"W": jnp.asarray(W)}, x), x @ W, **TOL)


# -- Conv -----------------------------------------------------------------------------------


CONV_CASES = [
    # (input shape NWC/NHWC, filter shape, strides); even filters give asymmetric SAME padding
    ((2, 8, 3), (4,), (1,)),
    ((2, 7, 3), (3,), (2,)),
    ((2, 6, 5, 3), (3, 2), (2, 2)),
    ((2, 7, 6, 2), (2, 3), (1, 2)),
]


@F64
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("in_shape, window, strides", CONV_CASES)
def test_conv_matches_loop_reference(in_shape, window, strides, padding):
    c_in, c_out = in_shape[-1], 4
    x, W, b = normal(0, *in_shape), normal(1, *window, c_in, c_out), normal(2, c_out)
    params = {"W": jnp.asarray(W), "b": jnp.asarray(b)}
    layer = nn.Conv(c_out, window, strides=strides, padding=padding, b_std=0.5)
    ntk = nn.Conv(c_out, window, strides=strides, padding=padding, W_std=1.4, b_std=0.2, parameterization="ntk")
    y_std, y_ntk = jax.jit(lambda p, x: (layer.apply(p, x), ntk.apply(p, x)))(params, jnp.asarray(x))
    ref = conv_ref(x, W, strides, padding)
    np.testing.assert_allclose(y_std, ref + b, **TOL)
    fan_in = c_in * math.prod(window)
    np.testing.assert_allclose(y_ntk, 1.4 / np.sqrt(fan_in) * ref + 0.2 * b, **TOL)


@F64
def test_conv_init_shapes_are_hwio():
    params, _ = jax.eval_shape(lambda k: nn.Conv(4, (3, 2), b_std=0.1).init(k, spec(2, 6, 5, 3)), jax.random.key(0))
    assert params["W"].shape == (3, 2, 3, 4) and params["b"].shape == (4,)


# -- pooling, flatten -----------------------------------------------------------------------


POOL_CASES = [
    ((2, 7, 3), (3,), (2,)),
    ((2, 8, 2), (2,), None),
    ((2, 6, 5, 3), (3, 2), (2, 1)),
    ((2, 5, 7, 2), (3, 3), (2, 2)),
]


@F64
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("in_shape, window, strides", POOL_CASES)
def test_avgpool_matches_loop_reference(in_shape, window, strides, padding, count_include_pad):
    x = normal(3, *in_shape)
    layer = nn.AvgPool(window, strides=strides, padding=padding, count_include_pad=count_include_pad)
    want = avgpool_ref(x, window, strides if strides is not None else window, padding, count_include_pad)
    np.testing.assert_allclose(run(layer, (), x), want, **TOL)


@F64
def test_avgpool_same_padding_counts_differ_at_the_border():
    # Guards against a reference (and layer) where count_include_pad has no effect.
    x = jnp.ones((1, 5, 1))
    incl = nn.AvgPool((2,), strides=(2,), padding="SAME", count_include_pad=True).apply((), x)
    excl = nn.AvgPool((2,), strides=(2,), padding="SAME", count_include_pad=False).apply((), x)
    np.testing.assert_allclose(excl[0, :, 0], [1.0, 1.0, 1.0], **TOL)
    np.testing.assert_allclose(incl[0, :, 0], [1.0, 1.0, 0.5], **TOL)


@F64
@pytest.mark.parametrize("in_shape", [(3, 5, 4), (3, 4, 6, 2)])
def test_global_avg_pool_is_spatial_mean(in_shape):
    x = normal(4, *in_shape)
    want = x.reshape(in_shape[0], -1, in_shape[-1]).mean(axis=1)
    np.testing.assert_allclose(run(nn.GlobalAvgPool(), (), x), want, **TOL)


@F64
@pytest.mark.parametrize("in_shape", [(3, 5), (3, 4, 2), (2, 3, 4, 5)])
def test_flatten_row_major(in_shape):
    x = normal(5, *in_shape)
    y = np.asarray(run(nn.Flatten(), (), x))
    assert y.shape == (in_shape[0], math.prod(in_shape[1:]))
    for i in range(in_shape[0]):
        np.testing.assert_array_equal(y[i], [x[i][idx] for idx in np.ndindex(*in_shape[1:])])


# -- LayerNorm, BatchNorm -------------------------------------------------------------------


def layernorm_ref(x, axes, eps, scale=None, offset=None):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y if scale is None else y * scale + offset


@F64
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("in_shape, axis", [((4, 6), -1), ((3, 4, 5), -1), ((3, 4, 5), (1, 2)),
                                            ((2, 3, 4, 5), (1, 2, 3))])
def test_layernorm(in_shape, axis, affine):
    eps = 1e-3
    x = 2.0 + 3.0 * normal(6, *in_shape)
    layer = nn.LayerNorm(axis=axis, eps=eps, affine=affine)
    params, state = layer.init(jax.random.key(0), spec(*in_shape))
    axes = (axis,) if isinstance(axis, int) else axis
    if affine:
        c = in_shape[-1]
        np.testing.assert_array_equal(params["scale"], np.ones(c))
        np.testing.assert_array_equal(params["offset"], np.zeros(c))
        scale, offset = normal(7, c), normal(8, c)
        params = {"scale": jnp.asarray(scale), "offset": jnp.asarray(offset)}
        want = layernorm_ref(x, axes, eps, scale, offset)
    else:
        assert params == {}
        want = layernorm_ref(x, axes, eps)
    np.testing.assert_allclose(run(layer, params, x, state), want, **TOL)


def batch_stats(x):
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    mean = x.mean(axis=axes)
    var_biased = ((x - mean) ** 2).mean(axis=axes)
    var_unbiased = ((x - mean) ** 2).sum(axis=axes) / (n - 1)
    np.testing.assert_allclose(var_unbiased, x.reshape(-1, x.shape[-1]).var(axis=0, ddof=1), rtol=1e-12)
    return mean, var_biased, var_unbiased


@F64
@pytest.mark.parametrize("in_shape, momentum", [((8, 3), 0.9), ((4, 5, 3), 0.0), ((2, 3, 4, 3), 0.5)])
def test_batchnorm_train_uses_batch_stats_and_updates_running_stats(in_shape, momentum):
    eps = 1e-4
    x = 1.5 + 2.0 * normal(9, *in_shape)
    layer = nn.BatchNorm(momentum=momentum, eps=eps)
    params, state = layer.init(jax.random.key(0), spec(*in_shape))
    np.testing.assert_array_equal(state["mean"], np.zeros(3))
    np.testing.assert_array_equal(state["var"], np.ones(3))
    scale, offset = normal(10, 3), normal(11, 3)
    run_mean, run_var = normal(12, 3), 0.5 + np.abs(normal(13, 3))
    params = {"scale": jnp.asarray(scale), "offset": jnp.asarray(offset)}
    state = {"mean": jnp.asarray(run_mean), "var": jnp.asarray(run_var)}

    y, new_state = run(layer, params, x, state, train=True, with_state=True)
    mean, var_b, var_u = batch_stats(x)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var_b + eps) * scale + offset, **TOL)
    np.testing.assert_allclose(new_state["mean"], momentum * run_mean + (1 - momentum) * mean, **TOL)
    np.testing.assert_allclose(new_state["var"], momentum * run_var + (1 - momentum) * var_u, **TOL)


@F64
def test_batchnorm_eval_uses_running_stats_and_keeps_state():
    eps = 1e-5
    x = normal(14, 4, 5, 3)
    layer = nn.BatchNorm(eps=eps)
    scale, offset, run_mean, run_var = normal(15, 3), normal(16, 3), normal(17, 3), 0.3 + np.abs(normal(18, 3))
    params = {"scale": jnp.asarray(scale), "offset": jnp.asarray(offset)}
    state = {"mean": jnp.asarray(run_mean), "var": jnp.asarray(run_var)}
    y, new_state = run(layer, params, x, state, train=False, with_state=True)
    np.testing.assert_allclose(y, (x - run_mean) / np.sqrt(run_var + eps) * scale + offset, **TOL)
    np.testing.assert_array_equal(new_state["mean"], run_mean)
    np.testing.assert_array_equal(new_state["var"], run_var)


# -- Embedding ------------------------------------------------------------------------------


@F64
@pytest.mark.parametrize("parameterization, factor, dtype", [("standard", 1.0, jnp.int32), ("ntk", 1.6, jnp.int64)])
def test_embedding_is_row_lookup(parameterization, factor, dtype):
    layer = nn.Embedding(11, 4, W_std=1.6, parameterization=parameterization)
    tokens = np.random.default_rng(19).integers(0, 11, size=(3, 5))
    params, _ = jax.eval_shape(lambda k: layer.init(k, spec(3, 5, dtype=dtype)), jax.random.key(2))
    W = normal(20, 11, 4)
    y = run(layer, {"W": jnp.asarray(W)}, jnp.asarray(tokens, dtype))
    assert y.shape == (3, 5, 4)
    for i, j in np.ndindex(3, 5):
        np.testing.assert_allclose(y[i, j], factor * W[tokens[i, j]], **TOL)
    assert params["W"].shape == (11, 4)


# -- Dropout (float32 process: statistics, not ulps) ----------------------------------------

# One input shape for every dropout test: every entry's mask is an independent Bernoulli draw,
# so K rows of the same 5 values are K Monte-Carlo samples (and one PRNG program is compiled).
DROP_X = np.array([-2.0, -0.5, 0.3, 1.0, 4.0], np.float32)
DROP_K = 20_000


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.75])
def test_dropout_train_zero_or_scaled_and_unbiased(rate, key):
    x = jnp.asarray(np.tile(DROP_X, (DROP_K, 1)))
    y = np.asarray(nn.Dropout(rate).apply((), x, key=key, train=True))
    xs = np.asarray(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], xs[kept] / (1 - rate), rtol=1e-6)
    # fraction dropped ≈ rate: binomial std over 1e5 entries ≤ 0.0016
    assert abs((~kept).mean() - rate) < 0.01
    # E[y] = x: std of the column mean is |x| sqrt(rate/(1-rate)) / sqrt(K); allow 5 sigma
    sigma = np.abs(DROP_X) * np.sqrt(rate / (1 - rate)) / np.sqrt(DROP_K)
    assert np.all(np.abs(y.mean(axis=0) - DROP_X) < 5 * sigma)


def test_dropout_eval_is_identity(key):
    x = jnp.asarray(DROP_X)
    np.testing.assert_array_equal(nn.Dropout(0.5).apply((), x, train=False), x)
    np.testing.assert_array_equal(nn.Dropout(0.5).apply((), x, key=key, train=False), x)


def test_dropout_keys_reproducible_and_distinct(key):
    x = jnp.asarray(np.tile(DROP_X, (DROP_K, 1)))
    d = nn.Dropout(0.5)
    y0 = np.asarray(d.apply((), x, key=key, train=True))
    np.testing.assert_array_equal(y0, d.apply((), x, key=key, train=True))
    y1 = np.asarray(d.apply((), x, key=jax.random.fold_in(key, 1), train=True))
    # independent masks agree on about half the entries
    assert 0.4 < np.mean((y0 == 0) == (y1 == 0)) < 0.6


def test_dropout_rate_may_be_traced(key):
    x = jnp.asarray(np.tile(DROP_X, (DROP_K, 1)))
    f = jax.jit(lambda r: nn.Dropout(r).apply((), x, key=key, train=True))
    np.testing.assert_array_equal(f(jnp.float32(0.0)), x)
    for r in (0.25, 0.5):
        y = np.asarray(f(jnp.float32(r)))
        kept = y != 0
        np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / (1 - r), rtol=1e-6)
        assert abs((~kept).mean() - r) < 0.01


# -- activations ----------------------------------------------------------------------------


def np_softplus(x):
    return np.log1p(np.exp(x))


def np_gelu(x):
    return x * 0.5 * (1.0 + special.erf(x / np.sqrt(2.0)))


ACTIVATION_CASES = [
    (nn.Relu(), lambda x: np.maximum(x, 0.0)),
    (nn.LeakyRelu(), lambda x: np.where(x >= 0, x, 0.01 * x)),
    (nn.LeakyRelu(0.2), lambda x: np.where(x >= 0, x, 0.2 * x)),
    (nn.ABRelu(), lambda x: np.maximum(x, 0.0)),
    (nn.ABRelu(-1.0, 1.0), np.abs),
    (nn.ABRelu(0.3, 2.0), lambda x: 0.3 * np.minimum(x, 0.0) + 2.0 * np.maximum(x, 0.0)),
    (nn.Erf(), special.erf),
    (nn.Erf(1.5, 0.7, -0.2), lambda x: 1.5 * special.erf(0.7 * x) - 0.2),
    (nn.Gelu(), np_gelu),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), lambda x: 1.0 / (1.0 + np.exp(-x))),
    (nn.Sin(), np.sin),
    (nn.Sin(2.0, 0.5, 0.3), lambda x: 2.0 * np.sin(0.5 * x + 0.3)),
    (nn.Softplus(), np_softplus),
    (nn.Identity(), lambda x: x),
]

X_GRID = np.concatenate([np.linspace(-8.0, 8.0, 161), [-30.0, -1e-3, 0.0, 1e-3, 30.0]])


@F64
@pytest.mark.parametrize("layer, ref", ACTIVATION_CASES, ids=lambda v: getattr(v, "name", ""))
def test_activation_formula(layer, ref):
    x = X_GRID.reshape(1, -1)
    params, state = layer.init(jax.random.key(0), spec(*x.shape))
    assert params == () and state == ()
    np.testing.assert_allclose(run(layer, params, x), ref(x), rtol=1e-12, atol=1e-14)


def test_gelu_is_exact_not_tanh_approximation():
    x = jnp.asarray([1.0, -1.5], jnp.float32)
    xs = np.asarray([1.0, -1.5])
    exact = np_gelu(xs)
    tanh_approx = 0.5 * xs * (1 + np.tanh(np.sqrt(2 / np.pi) * (xs + 0.044715 * xs**3)))
    y = np.asarray(nn.Gelu().apply((), x))
    np.testing.assert_allclose(y, exact, rtol=1e-6)
    assert np.all(np.abs(y - tanh_approx) > 1e-5)


ACTIVATION_DEFAULT_REFS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x >= 0, x, 0.01 * x),
    "abrelu": lambda x: np.maximum(x, 0.0),
    "erf": special.erf,
    "gelu": np_gelu,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "sin": np.sin,
    "softplus": np_softplus,
    "identity": lambda x: x,
}


def test_every_activation_name_has_a_reference():
    assert set(nn.ACTIVATIONS) == set(ACTIVATION_DEFAULT_REFS)


@F64
@pytest.mark.parametrize("name", sorted(ACTIVATION_DEFAULT_REFS))
def test_activation_by_name(name):
    x = X_GRID.reshape(2, -1)
    y = run(nn.activation(name), (), x)
    np.testing.assert_allclose(y, ACTIVATION_DEFAULT_REFS[name](x), rtol=1e-12, atol=1e-14)


@F64
@pytest.mark.parametrize(
    "name, kwargs, ref",
    [
        ("leaky_relu", {"alpha": 0.3}, lambda x: np.where(x >= 0, x, 0.3 * x)),
        ("abrelu", {"a": -0.5, "b": 2.0}, lambda x: -0.5 * np.minimum(x, 0) + 2.0 * np.maximum(x, 0)),
        ("erf", {"a": 2.0, "b": 0.5, "c": 1.0}, lambda x: 2.0 * special.erf(0.5 * x) + 1.0),
        ("sin", {"a": 0.5, "b": 3.0, "c": -1.0}, lambda x: 0.5 * np.sin(3.0 * x - 1.0)),
    ],
)
def test_activation_by_name_with_kwargs(name, kwargs, ref):
    x = X_GRID.reshape(1, -1)
    np.testing.assert_allclose(run(nn.activation(name, **kwargs), (), x), ref(x), rtol=1e-12, atol=1e-14)


# -- output_spec agrees with apply ----------------------------------------------------------


def spec_cases():
    return [
        ("dense", nn.Dense(5), (3, 7), "float"),
        ("dense-3d", nn.Dense(2, b_std=None), (3, 4, 7), "float"),
        ("conv1d-same-s2", nn.Conv(4, (3,), strides=2, padding="SAME"), (2, 7, 3), "float"),
        ("conv2d-valid", nn.Conv(4, (3, 2), strides=(2, 1)), (2, 7, 6, 3), "float"),
        ("avgpool1d-same", nn.AvgPool((3,), (2,), "SAME", count_include_pad=False), (2, 7, 3), "float"),
        ("avgpool2d", nn.AvgPool((2, 2)), (2, 6, 5, 3), "float"),
        ("gap", nn.GlobalAvgPool(), (2, 6, 5, 3), "float"),
        ("flatten", nn.Flatten(), (2, 6, 5, 3), "float"),
        ("layernorm", nn.LayerNorm(axis=(1, 2), affine=True), (2, 6, 3), "float"),
        ("batchnorm", nn.BatchNorm(), (4, 5, 3), "float"),
        ("embedding", nn.Embedding(10, 4), (3, 6), "int"),
        ("dropout", nn.Dropout(0.5), (3, 4), "float"),
        ("relu", nn.Relu(), (3, 4), "float"),
        ("gelu", nn.activation("gelu"), (3, 4), "float"),
        ("identity", nn.Identity(), (3, 4), "float"),
        ("serial", nn.serial(nn.Conv(3, (2, 2), padding="SAME"), nn.Relu(), nn.Flatten(), nn.Dense(2)), (2, 5, 5, 1),
         "float"),
        ("residual", nn.residual(nn.Dense(4), nn.Tanh()), (3, 4), "float"),
        ("fanout-parallel", nn.serial(nn.fanout(2), nn.parallel(nn.Dense(3), nn.Identity())), (3, 4), "float"),
        ("concat", nn.serial(nn.fanout(2), nn.parallel(nn.Dense(3), nn.Identity()), nn.fanin_concat()), (3, 4),
         "float"),
    ]


@pytest.mark.parametrize("precision", ["float32", pytest.param("float64", marks=F64)])
@pytest.mark.parametrize("case", spec_cases(), ids=lambda c: c[0])
def test_output_spec_matches_apply(case, precision):
    # Shapes only, so everything runs abstractly (eval_shape): output_spec comes from init's shape
    # rules, the other side from tracing the forward computation itself.
    _, layer, shape, kind = case
    dtype = jnp.dtype(precision) if kind == "float" else jnp.dtype("int32")
    in_spec = jax.ShapeDtypeStruct(shape, dtype)
    params, state = jax.eval_shape(lambda k: layer.init(k, in_spec), jax.random.key(0))
    out = layer.output_spec(in_spec)
    for train in (False, True):
        y = jax.eval_shape(
            lambda p, s, x, k: layer.apply(p, x, s, key=k, train=train), params, state, in_spec, jax.random.key(1)
        )
        assert jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype)), y) == jax.tree.map(
            lambda s: (tuple(s.shape), jnp.dtype(s.dtype)), out
        )
        leaves = jax.tree.leaves(y)
        assert leaves and all(jnp.dtype(a.dtype) == jnp.dtype(precision) for a in leaves)
