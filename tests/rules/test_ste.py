"""jaxlearn.rules.ste against NumPy references written here.

Forward values: nearest-level search by distances over ``np.linspace`` levels (not the index
arithmetic of the implementation); derivatives: the surrogate's derivative as a NumPy mask,
checked in reverse mode (grad, jacrev) and forward mode (jvp, jacfwd); stochastic rounding: the
empirical mean over many keys against ``x`` with a tolerance of 5 standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn.nn as nn
from jaxlearn.rules import ste

F64 = pytest.mark.float64
BACKWARDS = ["identity", "clipped"]


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def np_quantize(x, bits, lo, hi):
    """Nearest of the 2**bits levels of [lo, hi]; among equally near levels, the upper one."""
    x, lo, hi = np.asarray(x, np.float64), float(lo), float(hi)
    levels = np.linspace(lo, hi, 2 ** bits)
    dist = np.abs(np.clip(x, lo, hi)[..., None] - levels)
    idx = len(levels) - 1 - np.argmin(dist[..., ::-1], axis=-1)  # last minimiser = upper level
    return levels[idx]


def np_mask(x, backward, lo, hi):
    return np.ones_like(x) if backward == "identity" else ((x >= lo) & (x <= hi)).astype(float)


def points(dtype):
    """Random points plus the edge cases: 0, ±1, ±lo/hi, values outside [-1, 1]."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-2, 2, 41), [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 3.0, -3.0]])
    return x.astype(dtype)


def rule_derivatives(make_f, x, seed=1):
    """For both backward rules, in one compiled program: ``f(x)`` and the derivative's diagonal
    as seen by grad-of-sum, jacrev, jacfwd and jvp (tangent / random tangent), plus the largest
    off-diagonal Jacobian entry (must be 0: the rule is elementwise)."""
    t = np.random.default_rng(seed).uniform(1, 2, x.shape).astype(x.dtype)

    @jax.jit
    def run(x, t):
        out = {}
        for backward in BACKWARDS:
            f = make_f(backward)
            jr, jf = jax.jacrev(f)(x), jax.jacfwd(f)(x)
            y, tangent = jax.jvp(f, (x,), (t,))
            off = jnp.maximum(jnp.abs(jr - jnp.diag(jnp.diag(jr))).max(), jnp.abs(jf - jnp.diag(jnp.diag(jf))).max())
            out[backward] = (y, [jax.grad(lambda x: jnp.sum(f(x)))(x), jnp.diag(jr), jnp.diag(jf), tangent / t], off)
        return out

    return jax.tree.map(np.asarray, run(x, t))


# -- sign ---------------------------------------------------------------------------------------

def test_sign_forward_and_surrogate_derivative():
    x = points(np.float32)
    for backward, (y, ds, off) in rule_derivatives(lambda b: lambda x: ste.sign_ste(x, b), x).items():
        np.testing.assert_array_equal(y, np_sign(x))
        for d in ds:  # reverse and forward mode agree with the surrogate derivative
            np.testing.assert_array_equal(d, np_mask(x, backward, -1.0, 1.0))
        assert off == 0.0


def test_sign_keeps_nan_and_dtype():
    y = ste.sign_ste(jnp.array([jnp.nan, 2.0, 0.0, -0.0], jnp.bfloat16))
    assert y.dtype == jnp.bfloat16 and bool(jnp.isnan(y[0]))
    np.testing.assert_array_equal(np.asarray(y[1:], np.float32), [1, 1, 1])  # sign(0) = sign(-0) = +1


# -- uniform quantization -----------------------------------------------------------------------

@F64
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.0, 3.0), (-0.3, 2.7)])
def test_quantize_matches_nearest_level(bits, lo, hi):
    x = np.random.default_rng(bits).uniform(lo - 1, hi + 1, 500)
    y = jax.jit(ste.quantize_ste, static_argnames=("bits", "backward"))(x, bits, lo, hi)
    np.testing.assert_allclose(y, np_quantize(x, bits, lo, hi), rtol=0, atol=1e-12)
    assert np.all((y >= lo) & (y <= hi))


@F64
def test_quantize_per_channel_bounds_broadcast():
    x = np.random.default_rng(4).uniform(-3, 4, (20, 3))
    lo, hi = np.array([-1.0, 0.0, -2.0]), np.array([1.0, 3.0, 2.0])
    y, g = jax.jit(lambda x: (ste.quantize_ste(x, 2, lo, hi),
                              jax.grad(lambda x: jnp.sum(ste.quantize_ste(x, 2, lo, hi, "clipped")))(x)))(x)
    for j in range(3):
        np.testing.assert_allclose(y[:, j], np_quantize(x[:, j], 2, lo[j], hi[j]), atol=1e-12)
        np.testing.assert_array_equal(g[:, j], np_mask(x[:, j], "clipped", lo[j], hi[j]))


@F64
def test_quantize_ties_go_up_and_one_bit_is_sign():
    x = np.array([0.5, 1.5, 2.5, 0.0, 3.0, -0.2, 3.4])  # levels 0, 1, 2, 3: exact ties at .5
    np.testing.assert_array_equal(ste.quantize_ste(x, 2, 0.0, 3.0), [1, 2, 3, 0, 3, 0, 3])
    z = np.linspace(-1, 1, 101)
    np.testing.assert_array_equal(ste.quantize_ste(z, 1), ste.sign_ste(z))


@pytest.mark.parametrize("bits,lo,hi", [(1, -1.0, 1.0), (3, 0.0, 3.0)])
def test_quantize_surrogate_derivative(bits, lo, hi):
    x = np.concatenate([points(np.float32) * 2, [lo, hi]]).astype(np.float32)
    results = rule_derivatives(lambda b: lambda x: ste.quantize_ste(x, bits, lo, hi, b), x)
    for backward, (y, ds, off) in results.items():
        np.testing.assert_allclose(y, np_quantize(x, bits, lo, hi), atol=1e-6)
        for d in ds:
            np.testing.assert_array_equal(d, np_mask(x, backward, lo, hi))
        assert off == 0.0


@F64
@pytest.mark.parametrize("backward", BACKWARDS)
def test_chain_rule_through_quantizer(backward):
    # L(x) = Σ c·q(x)²  ⇒  dL/dx = 2·c·q(x)·s'(x) with the surrogate derivative s'
    rng = np.random.default_rng(3)
    x, c = rng.uniform(-1.5, 1.5, 30), rng.normal(size=30)
    grad = jax.grad(lambda x: jnp.sum(c * ste.quantize_ste(x, 2, backward=backward) ** 2))(x)
    want = 2 * c * np_quantize(x, 2, -1.0, 1.0) * np_mask(x, backward, -1.0, 1.0)
    np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-12)


def test_quantize_traced_bounds_under_vmap():
    x = points(np.float32)
    los, his = np.array([-1.0, 0.0, -0.5], np.float32), np.array([1.0, 3.0, 0.25], np.float32)

    def member(lo, hi):
        return ste.quantize_ste(x, 2, lo, hi), jax.grad(lambda x: jnp.sum(ste.quantize_ste(x, 2, lo, hi, "clipped")))(x)

    ys, gs = jax.jit(jax.vmap(member))(los, his)
    for y, g, lo, hi in zip(ys, gs, los, his):
        np.testing.assert_allclose(y, np_quantize(x, 2, lo, hi), atol=1e-6)
        np.testing.assert_array_equal(g, np_mask(x, "clipped", lo, hi))
    # derivatives with respect to the bounds are zero (they are constants of the rule)
    g_lo, g_hi = jax.grad(lambda lo, hi: jnp.sum(ste.quantize_ste(x, 2, lo, hi)), argnums=(0, 1))(-1.0, 1.0)
    assert g_lo == 0 and g_hi == 0


# -- stochastic rounding ------------------------------------------------------------------------

ROUNDINGS = [(None, None, None), (1, -1.0, 1.0), (3, 0.0, 2.0), (None, -2, 3)]  # 1 bit: BinaryConnect
DRAWS = 4000


def rounding_inputs(bits, lo, hi):
    """A sweep through the range, the grid points themselves, and (when bounded) values outside."""
    a, b = (-2.5, 3.5) if lo is None else (lo, hi)
    sweep = np.clip(np.linspace(a, b, 23) + 0.013, a, b)
    grid = np.arange(-2.0, 4.0) if bits is None else np.linspace(a, b, 2 ** bits)
    outside = [] if lo is None else [a - 3.0, b + 0.4]
    return np.concatenate([sweep, grid, outside]).astype(np.float32)


GRID_Y = np.linspace(-1, 1, 50, dtype=np.float32)


@pytest.fixture(scope="module")
def draws():
    """All stochastic draws of this file in one program: DRAWS roundings of each ROUNDINGS case
    (rows of one array: entries draw independent uniforms), 64 draws of GRID_Y (3 bits) vmapped
    over keys, and GRID_Y rounded alone with the 6th of those keys."""

    @jax.jit  # inputs are arguments, not constants: XLA would spend seconds constant-folding them
    def run(key, xs, grid_y):
        cases = [ste.stochastic_round_ste(x, jax.random.fold_in(key, i), *c)
                 for i, (x, c) in enumerate(zip(xs, ROUNDINGS))]
        keys = jax.random.split(key, 64)
        batched = jax.vmap(lambda k: ste.stochastic_round_ste(grid_y, k, 3))(keys)
        return cases, batched, ste.stochastic_round_ste(grid_y, keys[5], 3)

    xs = [np.tile(rounding_inputs(*c), (DRAWS, 1)) for c in ROUNDINGS]
    cases, *rest = jax.tree.map(lambda a: np.asarray(a, np.float64), run(jax.random.key(7), xs, GRID_Y))
    return cases, rest


@pytest.mark.parametrize("case", range(len(ROUNDINGS)))
def test_stochastic_round_is_unbiased(draws, case):
    bits, lo, hi = ROUNDINGS[case]
    x, q = rounding_inputs(bits, lo, hi).astype(np.float64), draws[0][case]
    if lo is not None:
        x = np.clip(x, lo, hi)  # outside values: E[q(x)] = clip(x, lo, hi)
    origin = 0.0 if bits is None else lo
    step = 1.0 if bits is None else (hi - lo) / (2 ** bits - 1)
    down = np.floor((x - origin) / step + 1e-6) * step + origin  # grid points (up to float32) are their own floor
    # each draw is one of the two neighbouring grid points ...
    assert np.all(np.isclose(q, down, atol=1e-5) | np.isclose(q, down + step, atol=1e-5))
    # ... the mean is x, within 5 standard errors of a Bernoulli(p) up-rounding (grid points: exact)
    p = np.clip((x - down) / step, 0, 1)
    se = step * np.sqrt(p * (1 - p) / DRAWS)
    assert np.all(np.abs(q.mean(0) - x) <= 5 * se + 1e-5), np.abs(q.mean(0) - x) / np.maximum(se, 1e-12)


def test_stochastic_round_member_depends_only_on_its_key(draws):
    batched, single = draws[1]
    # a member's draw depends only on its own key, not on the vmap group (up to float rounding)
    np.testing.assert_allclose(batched[5], single, atol=1e-6)
    assert not np.array_equal(batched[0], batched[1])


def test_stochastic_round_surrogate_derivative():
    # reverse (grad) and forward (jvp) mode; the four modes of the shared rule are checked above
    x = points(np.float32)
    t = np.random.default_rng(1).uniform(1, 2, x.shape).astype(np.float32)

    @jax.jit
    def run(x, t, key):
        out = {}
        for backward in BACKWARDS:
            f = lambda x: ste.stochastic_round_ste(x, key, 2, -1.0, 1.0, backward)  # noqa: E731
            out[backward] = (jax.grad(lambda x: jnp.sum(f(x)))(x), jax.jvp(f, (x,), (t,))[1] / t)
        return out

    for backward, ds in run(x, t, jax.random.key(3)).items():
        for d in ds:
            np.testing.assert_array_equal(d, np_mask(x, backward, -1.0, 1.0))


# -- layers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backward", BACKWARDS)
def test_ste_layers_in_serial(backward):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    c = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    layers = [ste.SignSTE(backward), ste.QuantizeSTE(2, -1.0, 1.0, backward)]
    references = [np_sign, lambda z: np_quantize(z, 2, -1.0, 1.0)]
    models = [nn.serial(nn.Dense(3), layer) for layer in layers]
    rng = np.random.default_rng(2)  # NumPy parameters: no jax.random program to compile
    params = ({"W": 2 * rng.standard_normal((4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}, ())

    @jax.jit
    def run(params, x):
        return [(m.apply(params, x), jax.grad(lambda x: jnp.sum(c * m.apply(params, x)))(x)) for m in models]

    w, b = np.asarray(params[0]["W"], np.float64), np.asarray(params[0]["b"], np.float64)
    z = x @ w + b
    for (y, gx), q in zip(run(params, x), references):
        np.testing.assert_allclose(y, q(z), atol=1e-6)
        # dL/dx for L = Σ c·y is (c·s'(z)) Wᵀ
        np.testing.assert_allclose(gx, (c * np_mask(z, backward, -1, 1)) @ w.T, rtol=1e-5, atol=1e-6)


def test_stochastic_round_layer_uses_apply_key():
    layer = ste.StochasticRoundSTE(2)
    integer = ste.StochasticRoundSTE()
    x = np.linspace(-1.2, 1.2, 40, dtype=np.float32).reshape(4, 10)
    params = ()  # parameter-free
    k = jax.random.key(5)

    @jax.jit
    def run(x, k):
        return (layer.apply(params, x, key=k, train=True), ste.stochastic_round_ste(x, k, 2),
                layer.apply(params, x), integer.apply((), np.array([0.5, 1.49, -2.7], np.float32)))

    trained, direct, evaluated, rounded = run(x, k)
    np.testing.assert_array_equal(trained, direct)
    # evaluation rounds to the nearest level (ties up), without a key
    np.testing.assert_allclose(evaluated, np_quantize(np.asarray(x), 2, -1.0, 1.0), atol=1e-6)
    np.testing.assert_array_equal(rounded, [1, 1, -3])
    with pytest.raises(nn.LayerError, match="key"):
        layer.apply(params, x, train=True)


# -- errors -------------------------------------------------------------------------------------

X = np.ones(3, np.float32)


@pytest.mark.parametrize("call,arg", [
    (lambda: ste.sign_ste(X, "straight"), "backward"),
    (lambda: ste.quantize_ste(X, 0), "bits"),
    (lambda: ste.quantize_ste(X, 2.0), "bits"),
    (lambda: ste.quantize_ste(X, True), "bits"),
    (lambda: ste.quantize_ste(X, 2, 1.0, -1.0), "lo must be < hi"),
    (lambda: ste.quantize_ste(jnp.ones(3, jnp.int32), 2), "x must be a floating"),
    (lambda: ste.stochastic_round_ste(X, jax.random.key(0), None, backward="clipped"),
     "backward='clipped' needs bounds"),
    (lambda: ste.stochastic_round_ste(X, jax.random.key(0), 2, lo=0.0), "lo and hi"),
    (lambda: ste.SignSTE("hard"), "backward"),
    (lambda: ste.QuantizeSTE(-1), "bits"),
    (lambda: ste.StochasticRoundSTE(0), "bits"),
])
def test_bad_arguments_raise_one_line_value_error(call, arg):
    with pytest.raises(ValueError, match=arg) as info:
        call()
    assert "\n" not in str(info.value)
