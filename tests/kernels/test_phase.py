"""Order–chaos phase diagram (jaxlearn.kernels.phase) against exact ReLU values and against the
mean-field recursions iterated here in NumPy with Gauss–Hermite quadrature of ``erf`` itself (no
closed-form dual is used by the references).

Compile time dominates on CPU: the float64 tests share one jitted scalar ``fixed_point`` for erf
and one ``phase_diagram`` program per activation and grid size.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import optimize, special

from jaxlearn.kernels.phase import PhasePoint, fixed_point, phase_diagram, plot_phase_diagram
from jaxlearn.nn.dual import erf_dual, relu_dual

F64 = pytest.mark.float64


@functools.lru_cache(maxsize=None)
def erf_point():
    """``fixed_point`` for ``erf`` (a=1, b=1, c=0), jitted once for scalar inputs."""
    return jax.jit(lambda w, b: fixed_point(erf_dual, w, b))


# -- NumPy references: the recursions with quadrature of erf ------------------------------------

Z, W = np.polynomial.hermite_e.hermegauss(200)
W = W / math.sqrt(2 * math.pi)


def erf_prime(x):
    return 2 / math.sqrt(math.pi) * np.exp(-x * x)


def numpy_q_star(w_std, b_std):
    q = 1.0
    for _ in range(10_000):
        new = w_std**2 * np.sum(W * special.erf(math.sqrt(q) * Z) ** 2) + b_std**2
        if abs(new - q) <= 1e-15 * new:
            return new
        q = new
    raise AssertionError("no convergence")


def numpy_chi_1(w_std, b_std):
    q = numpy_q_star(w_std, b_std)
    return w_std**2 * np.sum(W * erf_prime(math.sqrt(q) * Z) ** 2)


def numpy_correlation_fixed_point(w_std, b_std, c0, n=160):
    """Iterates ``c ← (σ_w² E[erf(u)erf(v)] + σ_b²)/q*`` by 2-D Gauss–Hermite; returns ``(c*, χ_c)``."""
    q = numpy_q_star(w_std, b_std)
    z, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    weights = np.outer(w, w)

    def pair(c):
        u = math.sqrt(q) * z1
        v = math.sqrt(q) * (c * z1 + math.sqrt(max(1 - c * c, 0.0)) * z2)
        return u, v

    c = c0
    for _ in range(10_000):
        u, v = pair(c)
        new = (w_std**2 * np.sum(weights * special.erf(u) * special.erf(v)) + b_std**2) / q
        if abs(new - c) <= 1e-15:
            break
        c = new
    u, v = pair(new)
    return new, w_std**2 * np.sum(weights * erf_prime(u) * erf_prime(v))


# -- ReLU: the exact critical line σ_w² = 2 at σ_b = 0 -----------------------------------------

RELU_W2 = np.array([1.0, 1.5, 1.9, 2.0, 2.1, 3.0])
RELU_B = np.array([0.0, 0.5])


@F64
def test_relu_critical_line_is_sigma_w_squared_2():
    """``E[relu'(√q z)²] = 1/2`` for every q, so ``χ₁ = σ_w²/2`` exactly: critical at ``σ_w² = 2``."""
    result = phase_diagram(relu_dual, np.sqrt(RELU_W2), RELU_B)
    assert all(f.shape == (RELU_W2.size, RELU_B.size) for f in result)
    np.testing.assert_allclose(result.chi_1, np.broadcast_to(RELU_W2[:, None] / 2, result.chi_1.shape), rtol=1e-14)
    critical = list(RELU_W2).index(2.0)
    assert abs(result.chi_1[critical, 0] - 1) <= 1e-12
    assert np.array_equal(np.sign(result.chi_1 - 1)[RELU_W2 != 2.0], np.sign(RELU_W2 - 2.0)[RELU_W2 != 2.0, None]
                          * np.ones((1, RELU_B.size)))
    # at criticality (σ_b = 0) every q is a fixed point: q* = q0 = 1 (up to sqrt(2)² = 2 + 4e-16), c* = 1, ξ_c = ∞
    assert abs(result.q_star[critical, 0] - 1) <= 1e-15
    assert result.c_star[critical, 0] == 1.0 and result.xi_c[critical, 0] == np.inf
    ordered = RELU_W2 < 2
    # ordered: c* = 1 and ξ_c = -1/ln χ₁; with σ_b > 0, q* = σ_b²/(1 - σ_w²/2); with σ_b = 0, q → 0
    np.testing.assert_array_equal(result.c_star[ordered], 1.0)
    np.testing.assert_allclose(result.xi_c[ordered], -1 / np.log(RELU_W2[ordered, None] / 2) * np.ones((1, 2)),
                               rtol=1e-13)
    np.testing.assert_allclose(result.q_star[ordered, 1], 0.25 / (1 - RELU_W2[ordered] / 2), rtol=1e-10)
    assert np.all(result.q_star[ordered, 0] < 1e-20)
    # σ_w² > 2 (and σ_w² = 2 with σ_b > 0): the length map diverges; no finite fixed point
    assert np.all(np.isinf(result.q_star[RELU_W2 > 2])) and np.isinf(result.q_star[critical, 1])
    assert np.all(np.isinf(result.xi_c[RELU_W2 >= 2]))


# -- erf: the critical curve and the fixed points against NumPy ---------------------------------


@F64
@pytest.mark.parametrize("b_std", [0.1, 0.5, 1.0])
def test_erf_critical_curve_matches_numpy_iteration(b_std):
    """The ``σ_w`` where ``χ₁ = 1``: bisection on :func:`fixed_point` vs ``brentq`` on the NumPy
    recursion (1-D Gauss–Hermite, 200 nodes)."""
    point = erf_point()
    lo, hi = 0.8, 4.0
    assert float(point(lo, b_std).chi_1) < 1 < float(point(hi, b_std).chi_1)
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(point(mid, b_std).chi_1) < 1:
            lo = mid
        else:
            hi = mid
    expected = optimize.brentq(lambda w: numpy_chi_1(w, b_std) - 1, 0.8, 4.0, xtol=1e-15, rtol=1e-15)
    assert abs((lo + hi) / 2 - expected) <= 1e-8


@F64
@pytest.mark.parametrize("w_std,b_std,chaotic", [(1.8, 0.2, True), (1.0, 0.6, False)])
def test_erf_fixed_points_match_numpy_iteration(w_std, b_std, chaotic):
    """q*, χ₁, c* and ξ_c at a chaotic and an ordered point vs the NumPy recursions (2-D
    Gauss–Hermite for the correlation map, iterated from c = 0.5)."""
    got = erf_point()(w_std, b_std)
    q = numpy_q_star(w_std, b_std)
    c_star, chi_c = numpy_correlation_fixed_point(w_std, b_std, c0=0.5)
    assert (float(got.chi_1) > 1) == chaotic and (c_star < 1 - 1e-6) == chaotic
    np.testing.assert_allclose(got.q_star, q, rtol=1e-12)
    np.testing.assert_allclose(got.chi_1, numpy_chi_1(w_std, b_std), rtol=1e-12)
    np.testing.assert_allclose(got.c_star, c_star, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got.xi_c, -1 / math.log(chi_c), rtol=1e-9)


@F64
def test_phase_diagram_equals_a_loop_of_fixed_point():
    w_stds = np.array([0.6, 1.0, 1.5, 2.5])
    b_stds = np.array([0.0, 0.4, 1.0])
    grid = phase_diagram(erf_dual, w_stds, b_stds)
    assert isinstance(grid, PhasePoint)
    point = erf_point()
    loop = [[point(w, b) for b in b_stds] for w in w_stds]
    for field in PhasePoint._fields:
        expected = np.array([[getattr(p, field) for p in row] for row in loop])
        np.testing.assert_allclose(getattr(grid, field), expected, rtol=1e-12, atol=1e-14, err_msg=field)
    # σ_b = 0 with odd erf: c* = 0 in the chaotic phase (χ₁ > 1), 1 in the ordered one
    chaotic = grid.chi_1[:, 0] > 1
    assert chaotic.any() and (~chaotic).any()
    np.testing.assert_allclose(grid.c_star[chaotic, 0], 0.0, atol=1e-14)
    np.testing.assert_array_equal(grid.c_star[~chaotic, 0], 1.0)


# -- float32 and the figure ---------------------------------------------------------------------

W_STDS = np.linspace(0.8, 2.0, 5, dtype=np.float32)
B_STDS = np.linspace(0.0, 1.0, 4, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def relu_grid_float32():
    return phase_diagram("relu", W_STDS, B_STDS)


def test_phase_diagram_float32():
    result = relu_grid_float32()
    for field in PhasePoint._fields:
        value = getattr(result, field)
        assert value.shape == (W_STDS.size, B_STDS.size) and value.dtype == jnp.float32, field
        assert not np.any(np.isnan(value)), field
    np.testing.assert_allclose(result.chi_1, np.broadcast_to(W_STDS[:, None] ** 2 / 2, result.chi_1.shape),
                               rtol=1e-6)


@pytest.mark.parametrize("field", ["chi_1", "xi_c"])
def test_plot_phase_diagram(field):
    result = relu_grid_float32()
    fig = plot_phase_diagram(result, W_STDS, B_STDS, field=field)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (r"$\sigma_w$", r"$\sigma_b$")
    assert fig.axes[1].get_ylabel() == {"chi_1": r"$\chi_1$", "xi_c": r"$\log_{10}\xi_c$"}[field]
    # the grid crosses σ_w = √2, so the critical contour is drawn, at σ_w ≈ √2
    contours = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(contours) == 1 and list(contours[0].levels) == [1.0]
    xs = np.concatenate([p.vertices[:, 0] for p in contours[0].get_paths()])
    np.testing.assert_allclose(xs, math.sqrt(2), atol=0.02)
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_plot_phase_diagram_rejects_bad_input():
    result = relu_grid_float32()
    with pytest.raises(ValueError, match="field"):
        plot_phase_diagram(result, W_STDS, B_STDS, field="q")
    with pytest.raises(ValueError, match="shape"):
        plot_phase_diagram(result, B_STDS, W_STDS)
