"""The dual activations of jaxlearn.nn.dual against quadrature written here.

References, and how independent they are of the closed forms:

* smooth activations (identity, erf, gelu, sin): 2-D Gauss–Hermite quadrature (120 nodes per
  axis) over ``z ~ N(0, I)``, mapped by the Cholesky factor of the 2×2 covariance, of NumPy/SciPy
  versions of ``φ`` and of ``φ'`` differentiated by hand. Covariances are kept where 120 nodes
  converge to ~1e-13 (``b²·q ≲ 2`` for erf, whose ``φ'`` is otherwise a narrow Gaussian).
* ReLU family (``a·min(x,0)+b·max(x,0)``): ``φφ`` has a kink and ``φ'φ'`` a jump, so Gauss–Hermite
  converges slowly. These ``φ`` are positively homogeneous, so in polar coordinates
  ``z = r(cos t, sin t)`` the radial integrals are exact (``∫ r³e^{-r²/2} dr = 2``,
  ``∫ r e^{-r²/2} dr = 1``) and what is left is an angular integral of a piecewise-trigonometric
  function; we split it at the angles where ``u`` or ``v`` vanishes and use Gauss–Legendre on each
  piece, which is exact to rounding. Also ReLU against Cho & Saul's formula written in ``ρ`` and
  ``arccos`` (the implementation uses ``atan2`` of covariances and the general ``a, b`` form).
* Price's theorem ``∂k/∂q12 = kdot`` links the two outputs through ``jax.grad``, on the boundary
  of the covariance cone too; other gradients are checked against central differences.
* The NumPy ``φ`` are pinned to the layers of ``jaxlearn.nn.activations`` (same names and
  parameters), so the duals' parameter conventions are the layers'.

Compile time dominates on CPU, so every dual is compiled once per dtype (values and Jacobians at
all test points together, parameters as traced arguments) and the tests share that evaluation.
"""

import functools
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import jaxlearn.nn as nn
from jaxlearn.nn import dual as D

F64 = pytest.mark.float64

# (registry name, parameters): each dual against NumPy φ, and each NumPy φ against the layer.
CASES = [
    ("identity", {}),
    ("relu", {}),
    ("leaky_relu", {"alpha": 0.2}),
    ("abrelu", {"a": -0.7, "b": 1.3}),
    ("abrelu", {"a": -1.0, "b": 1.0}),
    ("erf", {}),
    ("erf", {"a": 1.7, "b": 0.6, "c": -0.4}),
    ("gelu", {}),
    ("sin", {}),
    ("sin", {"a": 0.8, "b": 1.3, "c": 0.7}),
]
IDS = [name + "".join(f"-{k}={v}" for k, v in params.items()) for name, params in CASES]
RELU_FAMILY = {"relu", "leaky_relu", "abrelu"}

# (q11, q12, q22) inside the covariance cone, near its boundary (|ρ| → 1) and on it (|ρ| = 1).
COVS = [
    (1.0, 0.3, 2.0),                                # generic, unequal variances
    (0.5, -0.6, 0.9),                               # generic, ρ < 0
    (0.5, 0.0, 1.5),                                # ρ = 0
    (0.8, 0.999 * math.sqrt(0.8 * 1.0), 1.0),       # ρ = 0.999
    (1.5, -0.9999 * 1.5, 1.5),                      # ρ = -0.9999
    (0.7, 0.7, 0.7),                                # the diagonal, ρ = 1
    (0.5, 1.0, 2.0),                                # ρ = 1, unequal variances
    (1.3, -1.3, 1.3),                               # ρ = -1
]
# Where a naive formula divides by zero or differentiates sqrt/arccos at 0.
BOUNDARY = [
    (1.0, 1.0, 1.0),
    (0.5, 1.0, 2.0),
    (1.0, -1.0, 1.0),
    (0.5, -1.0, 2.0),
    (1.0, 0.0, 2.0),
    (0.0, 0.0, 0.0),
    (0.0, 0.0, 1.3),
    (2.0, 0.0, 0.0),
]
DIAGONAL = [(0.3, 0.3, 0.3), (1.7, 1.7, 1.7)]
POINTS = np.array(COVS + BOUNDARY + DIAGONAL)          # (18, 3): the one shape every test uses
IN_COVS = slice(0, len(COVS))
IN_BOUNDARY = slice(len(COVS), len(COVS) + len(BOUNDARY))
ZERO_VARIANCE = [i for i, (q11, _, q22) in enumerate(POINTS) if q11 * q22 == 0]
ON_DIAGONAL = [i for i, (q11, q12, q22) in enumerate(POINTS) if q11 == q12 == q22 > 0]


def param_names(name):
    return [p.name for p in list(inspect.signature(D.DUALS[name]).parameters.values())[3:]]


def param_vector(name, params):
    defaults = {p.name: p.default for p in inspect.signature(D.DUALS[name]).parameters.values()}
    return np.array([params.get(k, defaults[k]) for k in param_names(name)], dtype=float)


def _case_outputs(name, X, p):
    """``(values (N, 2), d/dq (N, 2, 3), d/dparams (N, 2, P))`` of ``(k, kdot)`` for one case."""
    fn = D.DUALS[name]
    keys = param_names(name)

    def call(q11, q12, q22, p):
        return fn(q11, q12, q22, **{k: p[i] for i, k in enumerate(keys)})

    def pair(x, p):
        return jnp.stack(call(x[0], x[1], x[2], p))

    values = jnp.stack(call(X[:, 0], X[:, 1], X[:, 2], p), -1)                      # batched path
    jac_q, jac_p = jax.vmap(jax.jacrev(pair, argnums=(0, 1)), in_axes=(0, None))(X, p)  # entrywise path
    return values, jac_q, jac_p


@functools.lru_cache(maxsize=None)
def _program():
    names = [name for name, _ in CASES]
    return jax.jit(lambda X, ps: [_case_outputs(name, X, p) for name, p in zip(names, ps)])


def evaluate(points=POINTS, params=None, dtype=None):
    """For every case (``params``: one parameter vector per case, default theirs), the outputs of
    :func:`_case_outputs` at ``points``, as NumPy arrays. One compiled program per dtype."""
    dtype = dtype or jnp.result_type(float)
    params = [param_vector(n, p) for n, p in CASES] if params is None else params
    out = _program()(jnp.asarray(points, dtype), [jnp.asarray(p, dtype) for p in params])
    return [tuple(np.asarray(o) for o in case) for case in out]


@functools.lru_cache(maxsize=None)
def results(dtype_name):
    """``evaluate()`` at the test points with the cases' parameters (shared by the tests)."""
    return evaluate(dtype=jnp.dtype(dtype_name))


# -- NumPy activations and references -----------------------------------------------------------


def numpy_phi(name, params):
    """``(φ, φ')`` in NumPy/SciPy, derivatives by hand."""
    p = dict(zip(param_names(name), param_vector(name, params)))
    if name == "identity":
        return (lambda x: x), (lambda x: np.ones_like(x))
    if name in RELU_FAMILY:
        a, b = {"relu": (0.0, 1.0), "leaky_relu": (p.get("alpha"), 1.0)}.get(name, (p.get("a"), p.get("b")))
        return (lambda x: a * np.minimum(x, 0) + b * np.maximum(x, 0)), (lambda x: np.where(x > 0, b, a))
    if name == "erf":
        a, b, c = p["a"], p["b"], p["c"]
        scale = a * b * 2 / math.sqrt(math.pi)
        return (lambda x: a * special.erf(b * x) + c), (lambda x: scale * np.exp(-((b * x) ** 2)))
    if name == "gelu":
        density = lambda x: np.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return (lambda x: x * special.ndtr(x)), (lambda x: special.ndtr(x) + x * density(x))
    if name == "sin":
        a, b, c = p["a"], p["b"], p["c"]
        return (lambda x: a * np.sin(b * x + c)), (lambda x: a * b * np.cos(b * x + c))
    raise AssertionError(name)


def cholesky_2x2(q11, q12, q22):
    l00 = math.sqrt(q11)
    # l11² = det / q11, with det = q11·q22 - q12² formed directly: exactly 0 when |ρ| = 1 exactly
    return l00, q12 / l00, math.sqrt(max(q11 * q22 - q12 * q12, 0.0) / q11)


def gauss_hermite_2d(phi, dphi, q11, q12, q22, n=120):
    """``(E[φ(u)φ(v)], E[φ'(u)φ'(v)])`` by tensor-product Gauss–Hermite quadrature."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    l00, l10, l11 = cholesky_2x2(q11, q12, q22)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    weights = np.outer(w, w)
    u, v = l00 * z1, l10 * z1 + l11 * z2
    return np.sum(weights * phi(u) * phi(v)), np.sum(weights * dphi(u) * dphi(v))


def polar_quadrature(phi, dphi, q11, q12, q22, n=40):
    """The same expectations for ``φ`` positively homogeneous of degree 1 (module docstring)."""
    l00, l10, l11 = cholesky_2x2(q11, q12, q22)
    t0 = math.atan2(-l10, l11) % math.pi             # v(t) = l10·cos t + l11·sin t = 0 at t0, t0 + π
    cuts = sorted({0.0, math.pi / 2, 3 * math.pi / 2, 2 * math.pi, t0, t0 + math.pi})  # u = 0 at π/2, 3π/2
    x, w = np.polynomial.legendre.leggauss(n)
    t = np.concatenate([(hi - lo) / 2 * x + (hi + lo) / 2 for lo, hi in zip(cuts[:-1], cuts[1:])])
    wt = np.concatenate([(hi - lo) / 2 * w for lo, hi in zip(cuts[:-1], cuts[1:])])
    u, v = l00 * np.cos(t), l10 * np.cos(t) + l11 * np.sin(t)
    return np.sum(wt * phi(u) * phi(v)) / math.pi, np.sum(wt * dphi(u) * dphi(v)) / (2 * math.pi)


# -- values ------------------------------------------------------------------------------------


@F64
@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_matches_independent_quadrature(i):
    name, params = CASES[i]
    phi, dphi = numpy_phi(name, params)
    reference = polar_quadrature if name in RELU_FAMILY else gauss_hermite_2d
    values = results("float64")[i][0]
    expected = np.array([reference(phi, dphi, *cov) for cov in COVS])
    np.testing.assert_allclose(values[IN_COVS], expected, rtol=1e-9, atol=1e-12)


@F64
def test_relu_matches_cho_saul_in_rho_and_arccos():
    """Cho & Saul 2009, degree 1 and 0: ``k = √(q11 q22)(sin θ + (π-θ)cos θ)/2π``, ``kdot = (π-θ)/2π``."""
    values = results("float64")[IDS.index("relu")][0]
    for (q11, q12, q22), got in zip(COVS, values):
        theta = math.acos(min(max(q12 / math.sqrt(q11 * q22), -1.0), 1.0))
        k = math.sqrt(q11 * q22) * (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi)
        np.testing.assert_allclose(got, [k, (math.pi - theta) / (2 * math.pi)], rtol=1e-12, atol=1e-15)


@F64
@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_diagonal_is_the_1d_expectation(i):
    """``dual(q, q, q) = (E[φ(√q z)²], E[φ'(√q z)²])`` by 1-D Gauss–Hermite of the even part of the
    integrand (``(g(z) + g(-z))/2``: a polynomial for the ReLU family, so exact there too)."""
    phi, dphi = numpy_phi(*CASES[i])
    z, w = np.polynomial.hermite_e.hermegauss(150)
    ww = np.concatenate([w, w]) / (2 * math.sqrt(2 * math.pi))
    q = POINTS[ON_DIAGONAL, 0]
    x = np.sqrt(q)[:, None] * np.concatenate([z, -z])
    expected = np.stack([np.sum(ww * phi(x) ** 2, 1), np.sum(ww * dphi(x) ** 2, 1)], 1)
    np.testing.assert_allclose(results("float64")[i][0][ON_DIAGONAL], expected, rtol=1e-12, atol=1e-14)


@F64
def test_relu_family_is_exact_on_the_diagonal():
    """``θ = 0`` exactly on the diagonal, also compiled with separate arguments (where XLA may fuse
    ``q11·q22 - q12²`` into a multiply-add): ``kdot = (a²+b²)/2`` and ``k = (a²+b²)q/2`` to rounding."""
    q = np.random.default_rng(0).uniform(0.0, 5.0, 64)
    a, b = -0.7, 1.3
    k, kdot = jax.jit(lambda x, y, z: D.ab_relu_dual(x, y, z, a=a, b=b))(q, q.copy(), q.copy())
    assert np.all(kdot == (a * a + b * b) * math.pi / (2 * math.pi))
    np.testing.assert_allclose(k, (a * a + b * b) * q / 2, rtol=4e-16)


@F64
@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_zero_variance_limits(i):
    """``u = 0`` or ``v = 0`` a.s. (independent of the other): ``k = E[φ(u)]·E[φ(v)]``; ``kdot`` is
    ``E[φ'(u)]·E[φ'(v)]`` for smooth ``φ`` and, for the ReLU family (``φ'`` jumps at 0), the
    documented diagonal limit ``(a² + b²)/2``."""
    name, params = CASES[i]
    phi, dphi = numpy_phi(name, params)
    z, w = np.polynomial.hermite_e.hermegauss(150)
    w = w / math.sqrt(2 * math.pi)
    values = results("float64")[i][0]
    for j in ZERO_VARIANCE:
        q11, _, q22 = POINTS[j]
        k = np.prod([np.sum(w * phi(math.sqrt(q) * z)) for q in (q11, q22)])
        if name in RELU_FAMILY:
            kdot = float(np.mean(dphi(np.array([-1.0, 1.0])) ** 2))
        else:
            kdot = np.prod([np.sum(w * dphi(math.sqrt(q) * z)) for q in (q11, q22)])
        np.testing.assert_allclose(values[j], [k, kdot], rtol=1e-12, atol=1e-14, err_msg=f"{POINTS[j]}")


@F64
def test_numpy_references_are_the_layers():
    """The NumPy ``φ`` used above are the layers ``activation(name, **params)`` (one compiled
    program for all cases), and the hand-written ``φ'`` are their derivatives (central differences,
    at points away from the ReLU kink)."""
    x = np.linspace(-3.1, 2.9, 13)
    layers = [nn.activation(name, **params) for name, params in CASES]
    ys = jax.jit(lambda x: [layer.apply((), x) for layer in layers])(jnp.asarray(x))
    h = 1e-6
    for (name, params), y in zip(CASES, ys):
        phi, dphi = numpy_phi(name, params)
        np.testing.assert_allclose(y, phi(x), rtol=1e-13, atol=1e-15, err_msg=name)
        np.testing.assert_allclose(dphi(x), (phi(x + h) - phi(x - h)) / (2 * h), rtol=1e-8, atol=1e-9, err_msg=name)


# -- gradients ---------------------------------------------------------------------------------


@F64
@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_price_theorem_holds_everywhere(i):
    """``∂k/∂q12 = kdot``, inside the cone and on its boundary (|ρ| = 1, zero variances)."""
    values, jac_q, _ = results("float64")[i]
    np.testing.assert_allclose(jac_q[:, 0, 1], values[:, 1], rtol=1e-10, atol=1e-12)


@F64
def test_gradients_match_central_differences():
    """Derivatives w.r.t. ``q11, q12, q22`` and each activation parameter vs central differences at
    the two generic points (the evaluation keeps its shapes, so nothing recompiles)."""
    h = 1e-5
    base = results("float64")
    params = [param_vector(n, p) for n, p in CASES]
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        plus, minus = evaluate(POINTS + step), evaluate(POINTS - step)
        for (name, _), b, pl, mi in zip(CASES, base, plus, minus):
            fd = (pl[0] - mi[0]) / (2 * h)
            np.testing.assert_allclose(b[1][:2, :, j], fd[:2], rtol=1e-7, atol=1e-9, err_msg=f"{name} q{j}")
    for j in range(3):
        shift = [np.where(np.arange(p.size) == j, h, 0.0) for p in params]
        plus = evaluate(params=[p + s for p, s in zip(params, shift)])
        minus = evaluate(params=[p - s for p, s in zip(params, shift)])
        for (name, _), p, b, pl, mi in zip(CASES, params, base, plus, minus):
            if j < p.size:
                fd = (pl[0] - mi[0]) / (2 * h)
                np.testing.assert_allclose(b[2][:2, :, j], fd[:2], rtol=1e-7, atol=1e-9,
                                           err_msg=f"{name} {param_names(name)[j]}")


def _finite_everywhere(dtype):
    """Values and all derivatives (covariances and parameters) are finite at every test point,
    boundary included, and keep the dtype."""
    for (name, params), outputs in zip(CASES, results(jnp.dtype(dtype).name)):
        for out in outputs:
            assert out.dtype == dtype, (name, out.dtype)
            assert np.all(np.isfinite(out)), (name, params, out)


def test_finite_values_and_gradients_float32():
    _finite_everywhere(jnp.float32)


@F64
def test_finite_values_and_gradients_float64():
    _finite_everywhere(jnp.float64)


def _angles_within_ulps(dtype):
    """The arcsine fraction (used by erf/gelu) over ``y ∈ [-1, 1]``, and the ReLU family's
    half-angle ``θ = arccos ρ`` over correlations in ``[-1, 1]`` with unequal variances, against
    NumPy's float64 ``arctan2``/``arccos``. The arcsine ``atan2(y, √w2)`` of the rounded inputs
    within 6 units of roundoff of ``dtype`` (relative); ``θ`` within 8 units of roundoff of ``ρ``
    propagated through ``|dθ/dρ| = 1/sin θ`` (plus 8 of ``θ`` itself): arccos is ill-conditioned
    near ``|ρ| = 1``, and forming ``ρ`` from the covariances already costs a few roundings. The
    endpoints are exact."""
    eps = np.finfo(dtype).eps
    rng = np.random.default_rng(3)
    y64 = np.concatenate([rng.uniform(-1, 1, 20000), np.linspace(-1, 1, 2001), [0.0, 1e-30, -1e-30]])
    y, w2 = y64.astype(dtype), np.maximum(1 - y64 ** 2, np.finfo(dtype).tiny).astype(dtype)
    n, d, _ = jax.jit(D._arcsin_fraction)(y, w2)
    got = np.asarray(n, np.float64) / np.asarray(d, np.float64)
    ref = np.arctan2(y.astype(np.float64), np.sqrt(w2.astype(np.float64)))
    assert np.max(np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)) < 6 * eps

    rho = np.concatenate([np.linspace(-1, 1, 2001), [-1.0, 1.0]]).astype(dtype)
    q11, q22 = dtype(0.7), dtype(2.3)
    q12 = (rho.astype(np.float64) * math.sqrt(float(q11) * float(q22))).astype(dtype)
    s, theta = jax.jit(D._sine_and_angle)(q11, q12, q22)
    theta = np.asarray(theta, np.float64)
    ref = np.arccos(np.clip(q12.astype(np.float64) / math.sqrt(float(q11) * float(q22)), -1, 1))
    inner = np.abs(rho.astype(np.float64)) < 1
    bound = 8 * eps * (ref + 1 / np.sin(ref, where=inner, out=np.ones_like(ref)))
    assert np.all((np.abs(theta - ref) <= bound)[inner])
    assert theta[-2] == np.float64(dtype(math.pi)) and theta[-1] == 0 and s[-1] == 0
    assert float(jax.jit(D._sine_and_angle)(dtype(0), dtype(0), dtype(1.0))[1]) == 0  # zero variance


def test_angles_float32():
    _angles_within_ulps(np.float32)


@F64
def test_angles_float64():
    _angles_within_ulps(np.float64)


# -- shapes, transformations, registry --------------------------------------------------------


def test_broadcasting_jit_and_vmap():
    """``(3, 1) × (3, 6) × (1, 6) → (3, 6)`` under jit and under vmap equals the evaluation of the
    flattened entries (float32, the dtype kept)."""
    q11 = np.array([[0.5], [1.0], [2.0]], np.float32)
    q22 = np.array([[0.3, 0.7, 1.1, 1.6, 0.0, 2.0]], np.float32)
    rho = np.linspace(-1.0, 1.0, 18, dtype=np.float32).reshape(3, 6)
    q12 = (rho * np.sqrt(q11 * q22)).astype(np.float32)
    flat = np.stack([a.ravel() for a in np.broadcast_arrays(q11, q12, q22)], 1)   # (18, 3), like POINTS
    first = {}
    for i, (name, _) in enumerate(CASES):
        first.setdefault(name, i)
    duals = [D.dual(*CASES[i][:1], **CASES[i][1]) for i in first.values()]

    def all_duals(q11, q12, q22):
        jitted = [f(q11, q12, q22) for f in duals]
        mapped = [jax.vmap(f, in_axes=(0, 0, None))(q11, q12, q22[0]) for f in duals]
        return jitted, mapped

    for f in duals:
        shapes = jax.eval_shape(f, q11, q12, q22)
        assert [(s.shape, s.dtype) for s in shapes] == [((3, 6), jnp.float32)] * 2
    jitted, mapped = jax.jit(all_duals)(q11, q12, q22)
    expected = evaluate(flat, dtype=jnp.float32)
    for i, jv, mv in zip(first.values(), jitted, mapped):
        for got in (jv, mv):
            assert got.k.dtype == got.kdot.dtype == jnp.float32
            np.testing.assert_allclose(np.stack([got.k, got.kdot], -1).reshape(-1, 2), expected[i][0],
                                       rtol=1e-5, atol=1e-6, err_msg=IDS[i])


def test_registry_pairs_with_the_activation_layers():
    assert set(D.DUALS) <= set(nn.ACTIVATIONS)
    for name, fn in D.DUALS.items():
        layer_params = {p.name: p.default for p in inspect.signature(nn.ACTIVATIONS[name]).parameters.values()}
        dual_params = {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[3:]}
        assert dual_params == layer_params, name
    f = D.dual("erf", a=2.0, c=0.5)
    assert f.func is D.erf_dual and f.keywords == {"a": 2.0, "c": 0.5}
    assert D.dual("relu") is D.relu_dual
    with pytest.raises(ValueError, match="did you mean 'relu'"):
        D.dual("rleu")
    with pytest.raises(ValueError, match="no closed-form dual for 'tanh'"):
        D.dual("tanh")
    with pytest.raises(ValueError, match="alpha"):
        D.dual("erf", alpha=0.1)
    # integer covariances are promoted to floats; Python-float parameters keep float32 inputs float32
    assert jnp.issubdtype(jax.eval_shape(D.relu_dual, 1, 0, 1).k.dtype, jnp.floating)
    x32 = jax.ShapeDtypeStruct((2,), jnp.float32)
    assert jax.eval_shape(lambda q: D.erf_dual(q, q, q, a=2.0), x32).kdot.dtype == jnp.float32


@F64
def test_sign_dual_is_sheppards_arcsine():
    """``E[sign(u)·sign(v)] = (2/π)·arcsin ρ`` (Sheppard 1899), written with NumPy's arcsin of the
    correlation (the implementation uses the half-angle atan2 of the covariances), and against 10⁶
    NumPy samples; ``kdot = 0`` (autodiff's derivative of sign); zero variance gives ``k = 0``."""
    q11 = np.array([1.0, 2.0, 0.5, 3.0, 1.0, 1.0])
    q22 = np.array([1.0, 0.5, 0.5, 1.0, 4.0, 1.0])
    rho = np.array([0.3, -0.7, 1.0, -1.0, 0.999, 0.0])
    q12 = rho * np.sqrt(q11 * q22)
    out = D.sign_dual(q11, q12, q22)
    np.testing.assert_allclose(out.k, 2 / np.pi * np.arcsin(rho), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(out.kdot, 0.0)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 1_000_000))
    for a, b, c in zip(q11[:2], q12[:2], q22[:2]):
        u = np.sqrt(a) * z[0]
        v = b / np.sqrt(a) * z[0] + np.sqrt(c - b * b / a) * z[1]
        assert abs(np.mean(np.sign(u) * np.sign(v)) - D.sign_dual(a, b, c).k) < 3e-3
    assert D.sign_dual(0.0, 0.0, 1.0).k == 0.0


def _full_size_passes(fn, n=48):
    """Elementwise passes XLA compiles over the full ``(n, n)`` array for ``fn`` on an
    ``(n, 1) × (n, n) × (1, n)`` triple (fusions, or unfused ops, whose result has that shape)."""
    q = jax.ShapeDtypeStruct((n, n), jnp.float32)
    hlo = jax.jit(fn).lower(jax.ShapeDtypeStruct((n, 1), jnp.float32), q,
                            jax.ShapeDtypeStruct((1, n), jnp.float32)).compile().as_text()
    entry = hlo[hlo.index("\nENTRY"):]
    return sum(f"= f32[{n},{n}]" in line and " parameter(" not in line and " tuple(" not in line
               for line in entry.splitlines())


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "abrelu", "erf", "gelu"])
def test_closed_forms_are_one_pass_per_output(name):
    """The ReLU family's, erf's and GELU's ``k`` and ``kdot`` compile to one elementwise pass
    each, ending in a division (``_affine_angle``, ``_arcsin_fraction``); formulated with a sine,
    an angle and divisions shared by both outputs, XLA made seven passes for ReLU. The duals marked
    ``one_pass`` are the ones :func:`jaxlearn.nn.kernel.elementwise_kernel` runs without its row
    loop."""
    assert _full_size_passes(D.dual(name)) == (3 if name == "gelu" else 2)  # gelu: also stores D
    assert D.one_pass(D.dual(name)) and D.one_pass(functools.partial(D.dual(name)))
    assert D.one_pass(D.sign_dual) and D.one_pass(D.sin_dual) and D.one_pass(D.identity_dual)
    assert D.one_pass(D.erf_dual) and D.one_pass(D.gelu_dual) and not D.one_pass(lambda *q: q)
