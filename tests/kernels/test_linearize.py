"""kernels.linearize and the feature-learning diagnostics.

Ground truth: NumPy formulas for the diagnostics; the Taylor remainder ``f(θ0 + εd) − f_lin(θ0 + εd)
= O(ε²)`` (finite differences) for the linearization.
"""

import jax
import numpy as np
import pytest

from jaxlearn import kernels, nn

F64 = pytest.mark.float64


def test_diagnostics_match_numpy():
    rng = np.random.default_rng(0)
    k0, kt = rng.standard_normal((2, 5, 5))
    y = rng.standard_normal((5, 2))
    p0 = {"a": rng.standard_normal(3), "b": rng.standard_normal((2, 2))}
    pt = {"a": rng.standard_normal(3), "b": rng.standard_normal((2, 2))}
    flat = lambda p: np.concatenate([np.ravel(p["a"]), np.ravel(p["b"])])  # noqa: E731
    np.testing.assert_allclose(kernels.relative_weight_change(pt, p0),
                               np.linalg.norm(flat(pt) - flat(p0)) / np.linalg.norm(flat(p0)), rtol=1e-5)
    np.testing.assert_allclose(kernels.kernel_distance(k0, kt),
                               1 - np.sum(k0 * kt) / (np.linalg.norm(k0) * np.linalg.norm(kt)), rtol=1e-5)
    np.testing.assert_allclose(kernels.kernel_distance(k0, 3 * k0), 0, atol=1e-6)
    yy = y @ y.T
    np.testing.assert_allclose(kernels.kernel_target_alignment(k0, y),
                               np.sum(k0 * yy) / (np.linalg.norm(k0) * np.linalg.norm(yy)), rtol=1e-5)
    np.testing.assert_allclose(kernels.kernel_target_alignment(yy, y), 1, rtol=1e-6)
    with pytest.raises(ValueError, match=r"^k_t: expected shape \(5, 5\) like k_0, got \(4, 5\)$"):
        kernels.kernel_distance(k0, kt[:4])
    with pytest.raises(ValueError, match=r"^k, y: expected k \(N, N\) and y"):
        kernels.kernel_target_alignment(k0, y[:3])
    jitted = jax.jit(lambda a, b: (kernels.kernel_distance(a, b), kernels.kernel_target_alignment(a, y)))
    assert all(np.isfinite(v) for v in jitted(k0, kt))


@F64
def test_linearize_is_the_first_order_taylor_expansion():
    """``f_lin(θ0) = f(θ0)``; the remainder ``f(θ0 + εd) − f_lin(θ0 + εd)`` shrinks as ``ε²``; the
    linearized model is linear in its parameters (second differences vanish)."""
    model = nn.serial(nn.Dense(6), nn.Erf(), nn.Dense(2))
    x = jax.random.normal(jax.random.key(0), (4, 3))
    p0, _ = model.init(jax.random.key(1), x)
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape, a.dtype), p0)
    f_lin = jax.jit(kernels.linearize(model.apply, p0))
    np.testing.assert_allclose(f_lin(p0, x), model.apply(p0, x), rtol=1e-14)

    def at(eps):
        return jax.tree.map(lambda a, b: a + eps * b, p0, d)

    remainders = [np.abs(model.apply(at(e), x) - f_lin(at(e), x)).max() for e in (1e-2, 1e-3)]
    assert 70 < remainders[0] / remainders[1] < 130, remainders  # ε² scaling: ratio 100
    second = f_lin(at(1.0), x) - 2 * f_lin(at(0.5), x) + f_lin(p0, x)
    np.testing.assert_allclose(second, 0, atol=1e-12)
