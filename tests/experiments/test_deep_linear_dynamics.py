"""The closed-form mode trajectory of experiments/deep_linear_dynamics.py against an ODE integration
of the paper's reduced 2-layer dynamics (float64), and the decoupled initialisation against its
definition."""

import jax
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from experiments import deep_linear_dynamics as dld


def _reduced_flow(s, tau):
    """Saxe et al. 2014's decoupled 2-layer dynamics of one mode: τ ȧ = b(s − ab), τ ḃ = a(s − ab)."""
    def rhs(t, ab):
        a, b = ab
        return [b * (s - a * b) / tau, a * (s - a * b) / tau]
    return rhs


@pytest.mark.float64
@pytest.mark.parametrize("s,u0,tau", [(3.0, 1e-3, 50.0), (1.5, 0.2, 7.0), (0.75, 1e-6, 1.0)])
def test_mode_strength_solves_the_reduced_dynamics(s, u0, tau):
    t = np.linspace(0, 3 * dld.half_time(s, u0, tau), 200)
    a0 = np.sqrt(u0)  # balanced start a = b
    sol = solve_ivp(_reduced_flow(s, tau), (0, t[-1]), [a0, a0], t_eval=t, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dld.mode_strength(t, s, u0, tau), sol.y[0] * sol.y[1], rtol=1e-7, atol=1e-12 * s)
    np.testing.assert_allclose(dld.mode_strength(jax.numpy.asarray(t), s, u0, tau), sol.y[0] * sol.y[1],
                               rtol=1e-7, atol=1e-12 * s)
    half = dld.half_time(s, u0, tau)
    crossing = solve_ivp(_reduced_flow(s, tau), (0, 2 * half), [a0, a0], rtol=1e-11, atol=1e-14,
                         events=lambda t, ab: ab[0] * ab[1] - s / 2).t_events[0][0]
    assert half == pytest.approx(crossing, rel=1e-7)


@pytest.mark.parametrize("scheme", [0, 1, 2])
def test_initial_layers(scheme, depth=3):
    """Decoupled schemes give W_tot = u0·U Vᵀ with every layer a scaled rotation; the random
    orthogonal scheme gives rotations (det +1); the mode strengths read u_αᵀ W_tot v_α."""
    config = dld.Config(depth=depth, init_scheme=scheme, init_strength=0.04)
    member = dld.init(config, jax.random.key(3))
    params = member.train_state.params
    u, s, v = dld.target_map(config.singular_values)
    scale = {0: 0.04, 1: 1.0}.get(scheme)
    for layer in params:
        w = np.asarray(layer["W"], np.float64)
        gram = w @ w.T
        np.testing.assert_allclose(gram, gram[0, 0] * np.eye(len(s)), atol=1e-5)
        assert np.linalg.det(w) > 0
    total = np.asarray(dld.product(params), np.float64)
    if scale is not None:
        np.testing.assert_allclose(total, scale * u @ v.T, atol=1e-5)
        np.testing.assert_allclose(dld.mode_strengths(params, config), scale * np.ones(3), atol=1e-5)
    x = np.asarray(dld.data(config).x_train, np.float64)
    np.testing.assert_allclose(x.T @ x / len(x), np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.linalg.svd(u @ np.diag(s) @ v.T, compute_uv=False), s, rtol=1e-12)
