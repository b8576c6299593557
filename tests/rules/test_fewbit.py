"""jaxlearn.rules.fewbit against references written here.

* derivatives ``φ'`` in closed form (NumPy/SciPy, float64), not taken from the module;
* the per-interval error bound ``sup_{t ∈ interval} |φ'(t) − level|`` by dense sampling of each
  interval plus the largest change of ``φ'`` between neighbouring samples (so it is an upper bound);
* interval indices by ``np.searchsorted``; the bit layout by a Python loop over bytes;
* the levels as normal-weighted means by ``scipy.integrate.quad``; the 1-bit table's optimality
  by a brute-force scan over its single boundary;
* residual sizes from ``jax.ad_checkpoint.print_saved_residuals`` as well as ``residual_bytes``.
"""

import math
import re

import chex
import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

import jaxlearn.nn as nn
import jaxlearn.rules as rules
from jaxlearn.rules import fewbit

F64 = pytest.mark.float64
NAMES = ["relu", "gelu", "tanh", "sigmoid", "silu"]


def _pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


DERIVATIVE = {
    "relu": lambda x: (x > 0).astype(float),
    "gelu": lambda x: special.ndtr(x) + x * _pdf(x),  # d/dx x·Φ(x)
    "tanh": lambda x: 4 * np.exp(-2 * np.abs(x)) / (1 + np.exp(-2 * np.abs(x))) ** 2,  # sech²
    "sigmoid": lambda x: np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))) ** 2,
    "silu": lambda x: special.expit(x) + x * special.expit(x) * special.expit(-x),
    "softplus": special.expit,
}
FORWARD = {"relu": jax.nn.relu, "gelu": lambda x: jax.nn.gelu(x, approximate=False), "tanh": jnp.tanh,
           "sigmoid": jax.nn.sigmoid, "silu": jax.nn.silu, "softplus": jax.nn.softplus}


def interval_sup_errors(table, derivative, samples=2000, far=30.0):
    """Upper bound of ``|φ'(t) − levels[j]|`` over interval ``j = (b_{j-1}, b_j]`` (tails cut at ±far,
    where φ' has reached its limit to ~1e-12 for these activations)."""
    edges = np.concatenate([[-far], table.boundaries, [far]])
    sup = []
    for j, level in enumerate(table.levels):
        t = np.linspace(edges[j], edges[j + 1], samples + 1)[1:]  # left-open
        d = derivative(t)
        sup.append(np.abs(d - level).max() + (np.abs(np.diff(d)).max() if samples > 1 else 0))
    return np.array(sup)


def inputs(shape=(6, 50), seed=0):
    x = 1.5 * np.random.default_rng(seed).standard_normal(shape)
    return np.concatenate([x, np.full((1, shape[1]), 0.0)], 0).astype(np.float32)  # include x = 0


# 8-bit tables take ~0.5 s each to build: two activations suffice for the "many bits" claim
CASES = [(n, b) for n in NAMES for b in (1, 2, 4)] + [("softplus", 2), ("gelu", 8), ("tanh", 8)]


@pytest.fixture(scope="module")
def grads():
    """For every case: the few-bit grad of Σ c·g(x), g(x) and the exact φ(x), under one jit."""
    x, c = inputs(), np.random.default_rng(1).standard_normal((7, 50)).astype(np.float32)
    fns = {case: fewbit.few_bit(*case) for case in CASES}

    @jax.jit
    def run(x, c):
        return {(name, bits): (jax.grad(lambda x: jnp.sum(c * g(x)))(x), g(x), FORWARD[name](x))
                for (name, bits), g in fns.items()}

    return x, c, jax.tree.map(np.asarray, run(x, c))


@pytest.mark.parametrize("name,bits", CASES)
def test_backward_is_level_of_interval_within_bound(grads, name, bits):
    x, c, results = grads
    g_in, y, y_exact = results[(name, bits)]
    np.testing.assert_array_equal(y, y_exact)  # the forward is exactly φ(x)
    table = fewbit.few_bit_table(name, bits)
    code = np.searchsorted(table.boundaries.astype(np.float32), x, side="left")
    np.testing.assert_allclose(g_in, c * table.levels[code], rtol=1e-6, atol=1e-7)
    exact = c * DERIVATIVE[name](x.astype(np.float64))
    bound = interval_sup_errors(table, DERIVATIVE[name])[code] * np.abs(c)
    assert np.all(np.abs(g_in - exact) <= bound + 1e-5)
    if bits == 8:  # many bits: the exact gradient up to a small quantization error
        assert np.all(np.abs(g_in - exact) <= 0.01 * np.abs(c) + 1e-5)


@F64
@pytest.mark.parametrize("name,bits", [("gelu", 2), ("silu", 4)])
def test_backward_rule_in_float64(name, bits):
    x = inputs().astype(np.float64)
    c = np.random.default_rng(2).standard_normal(x.shape)
    g = fewbit.few_bit(name, bits)
    g_in, y = jax.jit(lambda x: (jax.grad(lambda x: jnp.sum(c * g(x)))(x), g(x)))(x)
    assert g_in.dtype == y.dtype == np.float64
    table = fewbit.few_bit_table(name, bits)
    np.testing.assert_array_equal(g_in, c * table.levels[np.searchsorted(table.boundaries, x, side="left")])
    np.testing.assert_array_equal(y, jax.jit(FORWARD[name])(x))


def test_one_bit_relu_is_exact():
    g = fewbit.few_bit("relu", 1)
    x = np.array([-2.0, -1e-30, -0.0, 0.0, 1e-30, 3.0], np.float32)
    got = jax.jit(jax.grad(lambda x: jnp.sum(g(x))))(x)
    np.testing.assert_array_equal(got, jax.grad(lambda x: jnp.sum(jax.nn.relu(x)))(x))
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 1, 1])


@F64
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("name", ["gelu", "tanh", "silu"])
def test_levels_are_normal_weighted_means(name, bits):
    table = fewbit.few_bit_table(name, bits)
    edges = np.concatenate([[-np.inf], table.boundaries, [np.inf]])
    d = DERIVATIVE[name]
    for level, a, b in zip(table.levels, edges[:-1], edges[1:]):
        mass = special.ndtr(b) - special.ndtr(a)
        mean = integrate.quad(lambda t: d(np.float64(t)) * _pdf(t), a, b)[0] / mass
        assert abs(level - mean) < 2e-3, (level, mean)  # midpoint-rule error on 1024 cells


FINE = np.linspace(-8, 8, 40001)  # quadrature grid, unrelated to the module's 1024 cells


def weighted_mse(boundaries, derivative):
    """E_{N(0,1)}[(φ' − q)²] for the best levels given ``boundaries``, by quadrature on FINE."""
    w, d = _pdf(FINE) * (FINE[1] - FINE[0]), derivative(FINE)
    code = np.searchsorted(boundaries, FINE, side="left")
    total = 0.0
    for j in range(len(boundaries) + 1):
        m = code == j
        total += np.sum(w[m] * (d[m] - np.sum(w[m] * d[m]) / np.sum(w[m])) ** 2)
    return total


def best_single_split_mse(derivative):
    """Brute force over every split point of FINE: the weighted error of the best 2-piece q."""
    w, d = _pdf(FINE) * (FINE[1] - FINE[0]), derivative(FINE)
    def sse(w, d):  # weighted squared error of the first i+1 points about their mean, for every i
        cw, c1, c2 = np.cumsum(w), np.cumsum(w * d), np.cumsum(w * d * d)
        return c2 - c1 ** 2 / cw

    left, right = sse(w, d)[:-1], sse(w[::-1], d[::-1])[::-1][1:]  # split after point i
    return np.min(left + right)


@F64
@pytest.mark.parametrize("name", ["gelu", "tanh", "sigmoid", "silu"])
def test_one_bit_boundary_is_optimal(name):
    table = fewbit.few_bit_table(name, 1)
    got = weighted_mse(table.boundaries, DERIVATIVE[name])
    assert got <= best_single_split_mse(DERIVATIVE[name]) + 1e-6
    assert abs(table.mse - got) < 1e-3
    # more bits never hurt, and 2 bits beat the equal-mass (quantile) partition
    two = fewbit.few_bit_table(name, 2)
    assert two.mse <= table.mse
    assert weighted_mse(two.boundaries, DERIVATIVE[name]) <= weighted_mse(special.ndtri([0.25, 0.5, 0.75]),
                                                                          DERIVATIVE[name])


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_pack_bits_layout_and_roundtrip(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, size=(7, 13))  # 91 codes: padding

    @jax.jit
    def run(codes):
        packed = fewbit.pack_bits(codes, bits)
        return packed, fewbit.unpack_bits(packed, bits, codes.size)

    packed, back = run(codes)
    assert packed.dtype == jnp.uint8 and packed.shape == (math.ceil(codes.size * bits / 8),)
    np.testing.assert_array_equal(back, codes.reshape(-1))
    want = np.zeros(packed.shape, np.int64)  # code i at stream bits i·bits …, little endian
    for i, code in enumerate(codes.reshape(-1)):
        for k in range(bits):
            pos = i * bits + k
            want[pos // 8] |= ((int(code) >> k) & 1) << (pos % 8)
    np.testing.assert_array_equal(packed, want)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_saved_residual_is_bit_packed(bits, capsys):
    x = np.zeros((64, 33), np.float32)  # 2112 entries
    g = fewbit.few_bit("gelu", bits)
    n_bytes = fewbit.residual_bytes(g, x)
    assert n_bytes == math.ceil(x.size * bits / 8)
    assert n_bytes / x.nbytes <= bits / 32 + 1e-3  # 2 bits: 1/16 of the float32 input
    # independently: JAX's own listing of the saved residuals is one uint8 array of that size
    jax.ad_checkpoint.print_saved_residuals(g, x)
    listed = re.findall(r"^(\w+)\[([\d,]*)\]", capsys.readouterr().out, re.M)
    assert listed == [("u8", str(n_bytes))]
    # the exact activation keeps at least one float32 array of the input's size
    assert fewbit.residual_bytes(FORWARD["gelu"], x) >= x.nbytes


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_compiled_gradient_keeps_only_the_packed_codes(bits):
    """XLA's buffers for ``grad`` of a few-bit activation (CPU): the temporaries of the compiled
    program are the packed codes (``n·bits/8`` bytes) up to a small constant, far below a float32
    copy of the input (``4n``). The interval search must not keep input-sized temporaries
    (``jnp.searchsorted``'s default scan kept five float32/int32 arrays: 20 MiB here)."""
    x = jax.ShapeDtypeStruct((1024, 1024), jnp.float32)
    g = fewbit.few_bit("gelu", bits)
    analysis = jax.jit(jax.grad(lambda x: jnp.sum(g(x) ** 2))).lower(x).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    packed = x.size * bits // 8
    assert analysis.temp_size_in_bytes <= packed + 64 * 1024, (analysis.temp_size_in_bytes, packed)


def test_vmap_jit_and_per_example_residuals():
    g = fewbit.few_bit("silu", 2)
    x, c = inputs((4, 9)), np.random.default_rng(2).standard_normal((5, 9)).astype(np.float32)
    full = jax.jit(jax.grad(lambda x: jnp.sum(c * g(x))))(x)
    per_row = jax.jit(jax.vmap(jax.grad(lambda x, c: jnp.sum(c * g(x)))))(x, c)
    np.testing.assert_array_equal(full, per_row)
    assert fewbit.residual_bytes(jax.vmap(g), x) == 5 * math.ceil(9 * 2 / 8)
    # second derivatives see a piecewise-constant φ': zero
    hess_diag = jax.jit(jax.grad(lambda x: jnp.sum(jax.grad(lambda x: jnp.sum(g(x)))(x))))(x)
    np.testing.assert_array_equal(hess_diag, np.zeros_like(x))


def test_forward_mode_raises():
    g = fewbit.few_bit("tanh", 2)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(g, (np.ones(3, np.float32),), (np.ones(3, np.float32),))
    # the documented way to find such rules before using forward mode
    report = rules.forward_mode_safe(nn.serial(nn.Dense(3), fewbit.FewBit("tanh", 2)),
                                     jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert not report.safe and "few_bit_tanh_2" in str(report)


def test_custom_callable_uses_its_autodiff_derivative():
    softsign = lambda x: x / (1 + jnp.abs(x))  # noqa: E731
    g = fewbit.few_bit(softsign, 4)
    table = fewbit.few_bit_table(softsign, 4)
    x, c = inputs((3, 40), 5), np.random.default_rng(6).standard_normal((4, 40)).astype(np.float32)
    g_in = jax.jit(jax.grad(lambda x: jnp.sum(c * g(x))))(x)
    deriv = lambda t: 1 / (1 + np.abs(t)) ** 2  # noqa: E731
    code = np.searchsorted(table.boundaries.astype(np.float32), x, side="left")
    bound = interval_sup_errors(table, deriv)[code] * np.abs(c)
    assert np.all(np.abs(g_in - c * deriv(x.astype(np.float64))) <= bound + 1e-5)


def test_fewbit_layer_in_serial_matches_relu_exactly():
    x = inputs((5, 50))
    exact = nn.serial(nn.Dense(8), nn.Relu(), nn.Dense(2))
    cheap = nn.serial(nn.Dense(8), fewbit.FewBit("relu", 1), nn.Dense(2))
    rng = np.random.default_rng(3)  # NumPy parameters: no jax.random program to compile
    dense = lambda n, m: {"W": rng.standard_normal((n, m)).astype(np.float32), "b": np.zeros(m, np.float32)}  # noqa: E731
    params = (dense(50, 8), (), dense(8, 2))

    @jax.jit
    def run(params):
        return [jax.value_and_grad(lambda p: jnp.sum(m.apply(p, x) ** 2))(params) for m in (exact, cheap)]

    (l1, g1), (l2, g2) = run(params)
    assert l1 == l2
    chex.assert_trees_all_equal(g1, g2)
    assert "FewBit(relu, 1)" in cheap.name


@pytest.mark.parametrize("call,match", [
    (lambda: fewbit.few_bit("relu", 0), "bits"),
    (lambda: fewbit.few_bit("relu", 9), "bits"),
    (lambda: fewbit.few_bit("relu", 2.0), "bits"),
    (lambda: fewbit.few_bit("rleu", 2), "did you mean 'relu'"),
    (lambda: fewbit.FewBit(3, 2), "fn must be an activation name or a callable"),
    (lambda: fewbit.few_bit_table("tanh", 10), "bits"),
])
def test_bad_arguments_raise_one_line_value_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
