"""Surfaces against a direct Python loop of ``fn`` on a non-square grid with an asymmetric loss
(a transposed or mis-chunked grid fails), chunked == unchunked, dict outputs, the exact grid."""

import gc
import weakref

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import landscape, nn
from jaxlearn.landscape.surface import surface_1d, surface_2d, symmetric_grid

FLOAT = jnp.result_type(float)
MODEL = nn.mlp([6], 2, activation="tanh")


def make_params(seed):
    shapes = jax.eval_shape(lambda k: MODEL.init(k, jax.ShapeDtypeStruct((1, 3), FLOAT))[0], jax.random.key(0))
    r = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.7 * r.normal(size=s.shape), s.dtype), shapes)


PARAMS, D1, D2 = make_params(0), make_params(1), make_params(2)
_r = np.random.default_rng(3)
X = jnp.asarray(_r.normal(size=(7, 3)), FLOAT)
Y = jnp.asarray(_r.normal(size=(7, 2)), FLOAT)
XS = jnp.asarray([-1.0, -0.4, 0.0, 0.3, 1.1], FLOAT)   # 5 × 3, neither symmetric nor square
YS = jnp.asarray([-0.5, 0.25, 0.9], FLOAT)


def loss(p):
    # Cubic term: f(θ + a d) ≠ f(θ − a d), so a flipped axis fails too.
    out = MODEL.apply(p, X)
    return jnp.mean(jnp.square(out - Y)) + jnp.sum(out[:, 0] ** 3) / 10


def metrics(p):
    out = MODEL.apply(p, X)
    return {"loss": loss(p), "max": jnp.max(out)}


def shifted(p, *terms):
    """``p + c1·d1 + c2·d2`` leaf by leaf, left to right."""
    out = p
    for c, d in terms:
        out = jax.tree.map(lambda a, b: a + c * b, out, d)
    return out


def loop_2d(fn):
    """The direct double loop (each point jitted on its own, so the loop is not op-by-op slow)."""
    at = jax.jit(lambda x, y: fn(shifted(PARAMS, (x, D1), (y, D2))))
    return np.array([[at(x, y) for y in YS] for x in XS])


@pytest.mark.float64
@pytest.mark.parametrize("chunk_size", [None, 4, 15, 100, "auto"])       # 15 points: 4 leaves a ragged chunk
def test_surface_2d_matches_loop(chunk_size):
    values = surface_2d(loss, PARAMS, D1, D2, XS, YS, chunk_size=chunk_size)
    assert values.shape == (5, 3)
    np.testing.assert_allclose(values, loop_2d(loss), rtol=1e-12, atol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_surface_2d_dict_output(chunk_size):
    values = surface_2d(metrics, PARAMS, D1, D2, XS, YS, chunk_size=chunk_size)
    assert set(values) == {"loss", "max"}
    for name in values:
        np.testing.assert_allclose(values[name], loop_2d(lambda p: metrics(p)[name]), rtol=1e-12, atol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_surface_1d_matches_loop(chunk_size):
    alphas = jnp.asarray([-0.8, 0.0, 0.5, 1.0, 1.5], FLOAT)
    values = surface_1d(loss, PARAMS, D1, alphas, chunk_size=chunk_size)
    at = jax.jit(lambda a: loss(shifted(PARAMS, (a, D1))))
    want = [at(a) for a in alphas]
    np.testing.assert_allclose(values, want, rtol=1e-12, atol=1e-12)


@pytest.mark.float64
def test_jit_and_grad_wrt_params():
    alphas = jnp.asarray([-0.5, 0.0, 1.5], FLOAT)
    jitted = jax.jit(lambda p: surface_2d(loss, p, D1, D2, XS, YS, chunk_size=4))(PARAMS)
    np.testing.assert_allclose(jitted, loop_2d(loss), rtol=1e-12, atol=1e-12)
    weights = jnp.asarray([1.0, -2.0, 0.5], FLOAT)
    g = jax.grad(lambda p: weights @ surface_1d(loss, p, D1, alphas, chunk_size=2))(PARAMS)
    grad_at = jax.jit(lambda a: jax.grad(loss)(shifted(PARAMS, (a, D1))))
    want = jax.tree.map(lambda *gs: sum(w * x for w, x in zip(weights, gs)), *[grad_at(a) for a in alphas])
    chex.assert_trees_all_close(g, want, rtol=1e-11, atol=1e-12)


@pytest.mark.float64
def test_centre_of_the_grid_is_theta():
    # θ + 0·d1 + 0·d2 is θ bit for bit, so a function of one parameter returns it exactly.
    values = surface_2d(lambda p: p[0]["W"][1, 2], PARAMS, D1, D2, symmetric_grid(5, 0.5), symmetric_grid(3, 2.0))
    assert values[2, 1] == PARAMS[0]["W"][1, 2]


@pytest.mark.float64
def test_non_floating_leaves_are_not_moved():
    params = {"w": jnp.asarray([0.5, -1.0, 2.0], FLOAT), "step": jnp.array(3, jnp.int32)}
    d = {"w": jnp.asarray([1.0, 0.5, -0.25], FLOAT), "step": jnp.array(0, jnp.int32)}

    def fn(p):
        return jnp.sum(p["w"] ** 3) + p["step"]

    alphas = jnp.asarray([-1.0, 0.5, 2.0], FLOAT)
    want = [np.sum((np.asarray(params["w"]) + a * np.asarray(d["w"])) ** 3) + 3 for a in np.asarray(alphas)]
    np.testing.assert_allclose(surface_1d(fn, params, d, alphas, chunk_size=2), want, rtol=1e-13)


@pytest.mark.parametrize("num", [1, 2, 3, 41, 51])
@pytest.mark.parametrize("extent", [1.0, 0.3])
def test_symmetric_grid(num, extent):
    g = np.asarray(symmetric_grid(num, extent))
    assert g.shape == (num,) and g.dtype == np.float32
    np.testing.assert_allclose(g, np.linspace(-extent, extent, num) if num > 1 else [0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(g, -g[::-1])
    if num % 2:
        assert g[num // 2] == 0.0
    if num > 1:
        assert g[0] == np.float32(-extent) and g[-1] == np.float32(extent)
    traced = jax.jit(lambda e: symmetric_grid(num, e))(extent)        # a traced extent
    np.testing.assert_allclose(traced, g, rtol=1e-6)
    if num % 2:
        assert traced[num // 2] == 0.0


def test_grid_is_a_deprecated_alias_of_symmetric_grid():
    with pytest.warns(DeprecationWarning,
                      match=r"landscape\.grid is deprecated: use jaxlearn\.landscape\.symmetric_grid"):
        old = landscape.grid(5, 0.5)
    np.testing.assert_array_equal(old, symmetric_grid(5, 0.5))


def test_integer_axes_and_float32():
    values = surface_2d(loss, PARAMS, D1, D2, jnp.arange(-1, 2), jnp.arange(2))
    assert values.shape == (3, 2) and values.dtype == jnp.float32


def test_programs_are_reused_and_do_not_keep_fn_alive():
    traces = []

    def fn(p):
        traces.append(1)                      # runs once per trace
        return loss(p)

    surface_1d(fn, PARAMS, D1, XS)
    first = len(traces)
    surface_1d(fn, PARAMS, D1, XS)
    assert len(traces) == first               # no retrace, no recompile
    ref = weakref.ref(fn)
    del fn
    gc.collect()
    assert ref() is None


def vector_fn(p):
    return MODEL.apply(p, X)[:, 0]


ERRORS = [
    ("vector-fn", lambda: surface_1d(vector_fn, PARAMS, D1, XS), ValueError,
     r"^fn must return a scalar or a pytree \(e.g. dict\) of scalars, got shape \(7,\)$"),
    ("dict-fn", lambda: surface_1d(lambda p: {"out": vector_fn(p)}, PARAMS, D1, XS), ValueError,
     r"got shape \(7,\) at \['out'\]"),
    ("alphas-2d", lambda: surface_1d(loss, PARAMS, D1, XS[:, None]), ValueError,
     r"^alphas must be a non-empty 1-D array, got shape \(5, 1\)$"),
    ("xs-2d", lambda: surface_2d(loss, PARAMS, D1, D2, XS[None], YS), ValueError,
     r"^xs must be a non-empty 1-D array, got shape \(1, 5\)$"),
    ("ys-0d", lambda: surface_2d(loss, PARAMS, D1, D2, XS, 0.5), ValueError,
     r"^ys must be a non-empty 1-D array, got shape \(\)$"),
    ("d2-structure", lambda: surface_2d(loss, PARAMS, D1, D2[:-1], XS, YS), ValueError,
     r"^d2: structure differs from params: missing leaf \[2\]\['W'\]$"),
    ("d-shape", lambda: surface_1d(loss, PARAMS, jax.tree.map(lambda x: x[..., :1], D1), XS), ValueError,
     r"^d: leaf \[0\]\['W'\] has shape \(3, 1\), expected \(3, 6\) as in params$"),
    ("chunk", lambda: surface_1d(loss, PARAMS, D1, XS, chunk_size=0), ValueError,
     r"^chunk_size must be a positive int, 'auto' or None, got 0$"),
    ("grid-num", lambda: symmetric_grid(0), ValueError, r"^num must be a positive int, got 0$"),
    ("grid-extent", lambda: symmetric_grid(3, -1.0), ValueError,
     r"^extent must be a positive finite number, got -1.0$"),
    ("fn", lambda: surface_1d("loss", PARAMS, D1, XS), TypeError, r"^fn must be callable, got str$"),
]


@pytest.mark.parametrize("case, call, error, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(case, call, error, match):
    with pytest.raises(error, match=match):
        call()
