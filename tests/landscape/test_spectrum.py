"""Curvature spectra against ground truth: eigh of the dense Hessian/GGN of a small MLP,
closed-form quadratics, exact traces and Krylov moments (float64); shapes, dtypes, jit and vmap
(float32); argument errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.flatten_util import ravel_pytree
from threadpoolctl import threadpool_limits

from jaxlearn import landscape as ls
from jaxlearn import nn
from jaxlearn.landscape import spectrum
from jaxlearn.landscape.objective import ModelObjective, dataset_loss, softmax_cross_entropy


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    # NumPy's multithreaded OpenBLAS contends with XLA's thread pool: a 1.5k eigh then takes 0.5–15 s.
    with threadpool_limits(1):
        yield


def _mlp_problem(dtype):
    """A 1,476-parameter tanh MLP under softmax cross-entropy on 64 random points."""
    model = nn.mlp([32, 32], 4, activation="tanh")
    rng = np.random.default_rng(0)
    # model.init's shapes, drawn with NumPy (1/fan-in variance): nothing to compile
    shapes, _ = jax.eval_shape(lambda k: model.init(k, jax.ShapeDtypeStruct((1, 8), dtype)), jax.random.key(0))
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[0]), dtype), shapes)
    x, y = rng.normal(size=(64, 8)).astype(dtype), rng.integers(0, 4, 64)
    return model, params, ModelObjective(model.apply, softmax_cross_entropy, (x, y))


@pytest.fixture(scope="module")
def mlp():
    """The float64 MLP problem, its dense Hessian and the Hessian's eigendecomposition."""
    model, params, objective = _mlp_problem(jnp.float64)
    flat, unravel = ravel_pytree(params)
    hessian = np.asarray(jax.jit(jax.hessian(lambda f: dataset_loss(objective, unravel(f))))(flat))
    return model, params, objective, hessian, np.linalg.eigh(hessian)


def _flat_rows(tree):
    """A pytree with a leading axis -> ``(n, P)``, each row in ``ravel_pytree`` order (NumPy: no
    eager JAX ops to compile)."""
    return np.concatenate([np.asarray(leaf).reshape(leaf.shape[0], -1) for leaf in jax.tree.leaves(tree)], axis=1)


def _quadratic_loss(a, p):
    flat = ravel_pytree(p)[0]
    return 0.5 * flat @ a @ flat


def _quadratic(eigenvalues, seed=0, diagonal=False):
    """``A = Q diag(eigenvalues) Qᵀ`` (``Q`` random orthogonal, or ``I``) and params: a two-leaf dict
    whose last 10 coordinates are leaf ``"b"``. The loss is ``partial(_quadratic_loss, A)``."""
    eigenvalues = np.asarray(eigenvalues, np.float64)
    size = eigenvalues.size
    q = np.eye(size) if diagonal else np.linalg.qr(np.random.default_rng(seed).normal(size=(size, size)))[0]
    params = {"a": jnp.ones((size - 10,)), "b": jnp.ones((2, 5))}
    return (q * eigenvalues) @ q.T, params


def _quadratic_probes(rows):
    """``(n, P)`` rows -> probes like the quadratic's params with a leading axis ``n``."""
    return {"a": rows[:, :-10], "b": rows[:, -10:].reshape(-1, 2, 5)}


def _quartic(p):
    """A non-quadratic loss with the params-dependent diagonal Hessian ``diag(c + 3θ²)``."""
    flat = ravel_pytree(p)[0]
    return 0.5 * jnp.sum(jnp.linspace(-1.0, 2.0, flat.size) * flat**2) + 0.25 * jnp.sum(flat**4)


_SPREAD = np.concatenate([np.linspace(-1.0, 1.0, 27), [3.0, 6.0, -8.0, 10.0]])  # top |λ|: 10, -8, 6, 3


# float64: ground truth -------------------------------------------------------------------------


@pytest.mark.float64
def test_lanczos_extreme_eigenpairs_match_dense_hessian(mlp):
    _, params, objective, hessian, (true_values, true_vectors) = mlp
    results = jax.jit(lambda p: [spectrum.top_eigenvalues(objective, p, k=5, num_iters=200, which=which,
                                                          return_vectors=True) for which in ("largest", "smallest")])
    for (values, vectors), idx in zip(results(params), [np.arange(-1, -6, -1), np.arange(5)]):
        np.testing.assert_allclose(values, true_values[idx], rtol=1e-8)
        flat = _flat_rows(vectors)  # (5, P)
        np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(np.abs(np.sum(flat * true_vectors[:, idx].T, axis=1)), 1.0, atol=1e-6)
        residual = np.linalg.norm(flat @ hessian - values[:, None] * flat, axis=1)
        assert residual.max() <= 1e-7 * np.abs(true_values).max()


@pytest.mark.float64
def test_lanczos_on_last_layer_block_matches_sub_matrix_through_breakdown(mlp):
    # The last layer's CE Hessian has rank ≤ 33·3 < 132: 132 steps run into a Lanczos breakdown.
    _, params, objective, hessian, _ = mlp
    block = jax.tree.map(lambda _: False, params[:-1]) + (jax.tree.map(lambda _: True, params[-1]),)
    mask = _flat_rows(jax.tree.map(lambda p, b: np.full((1,) + p.shape, b), params, block))[0]
    sub = np.linalg.eigvalsh(hessian[np.ix_(mask, mask)])
    values, vectors = jax.jit(lambda p: spectrum.top_eigenvalues(objective, p, k=3, num_iters=132, block=block,
                                                                 return_vectors=True))(params)
    np.testing.assert_allclose(values, sub[::-1][:3], rtol=1e-8)
    assert np.all(_flat_rows(vectors)[:, ~mask] == 0.0)  # the iteration never leaves the block


@pytest.mark.float64
def test_ggn_top_eigenvalues_match_dense_gauss_newton(mlp):
    model, params, objective, _, _ = mlp
    flat, unravel = ravel_pytree(params)
    x, _ = objective.data
    outputs = jax.jit(lambda f: (jax.jacobian(lambda g: model.apply(unravel(g), x))(f), model.apply(unravel(f), x)))
    jac, logits = map(np.asarray, outputs(flat))  # (N, K, P), (N, K)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    h_out = p[:, :, None] * np.eye(p.shape[1]) - p[:, :, None] * p[:, None, :]  # diag(p) − ppᵀ per example
    ggn = jac.reshape(-1, flat.size).T @ np.einsum("nkl,nlq->nkq", h_out, jac).reshape(-1, flat.size) / x.shape[0]
    values = jax.jit(lambda p: spectrum.top_eigenvalues(objective, p, k=5, num_iters=200, kind="ggn"))(params)
    top = scipy.linalg.eigh(ggn, eigvals_only=True, subset_by_index=[flat.size - 5, flat.size - 1])
    np.testing.assert_allclose(values, top[::-1], rtol=1e-8)


@pytest.mark.float64
def test_power_iteration_finds_largest_magnitude_with_deflation():
    a, params = _quadratic(_SPREAD)
    loss_fn = functools.partial(_quadratic_loss, jnp.asarray(a))
    (values, vectors), top = jax.jit(lambda v, p: (
        spectrum.power_iteration(lambda u: jnp.asarray(a) @ u, v, 200, k=3),
        spectrum.top_eigenvalues(loss_fn, p, k=3, method="power")))(jnp.ones(a.shape[0]), params)
    np.testing.assert_allclose(values, [10.0, -8.0, 6.0], rtol=1e-8)  # in the order found
    np.testing.assert_allclose(np.linalg.norm(vectors @ a - values[:, None] * vectors, axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(top, [10.0, 6.0, -8.0], rtol=1e-8)  # sorted by value


@pytest.mark.float64
def test_block_eigenvalues_on_quadratic_match_sub_matrix():
    a, params = _quadratic(_SPREAD, seed=1)
    loss_fn, block = functools.partial(_quadratic_loss, jnp.asarray(a)), {"a": False, "b": True}
    sub = np.linalg.eigvalsh(a[-10:, -10:])
    largest, smallest = jax.jit(lambda p: [spectrum.top_eigenvalues(loss_fn, p, k=3, which=which, block=block)
                                           for which in ("largest", "smallest")])(params)  # default m = block size
    np.testing.assert_allclose(largest, sub[::-1][:3], rtol=1e-10)
    np.testing.assert_allclose(smallest, sub[:3], rtol=1e-10)


@pytest.mark.float64
@pytest.mark.parametrize("num_iters", [31, 12])  # 31 = P (breakdown-free, exact); 12 < P (Ritz values)
def test_both_ends_from_one_krylov_space_equal_separate_calls(num_iters):
    a, params = _quadratic(_SPREAD, seed=4)
    loss_fn = functools.partial(_quadratic_loss, jnp.asarray(a))
    calls = jax.jit(lambda p: [spectrum.top_eigenvalues(loss_fn, p, k=2, num_iters=num_iters, which=which,
                                                        return_vectors=True)
                               for which in ("both", "smallest", "largest")])
    ((both_small, vec_small), (both_large, vec_large)), (small, v_small), (large, v_large) = calls(params)
    np.testing.assert_array_equal(both_small, small)
    np.testing.assert_array_equal(both_large, large)
    for got, want in ((vec_small, v_small), (vec_large, v_large)):
        np.testing.assert_array_equal(_flat_rows(got), _flat_rows(want))
    if num_iters == a.shape[0]:
        np.testing.assert_allclose(both_small, [-8.0, -1.0], rtol=1e-10)
        np.testing.assert_allclose(both_large, [10.0, 6.0], rtol=1e-10)
    else:  # Ritz values lie inside the spectrum (Cauchy interlacing)
        assert -8.0 - 1e-9 <= both_small[0] <= both_small[1] and both_large[1] <= both_large[0] <= 10.0 + 1e-9


@pytest.mark.float64
def test_both_ends_through_a_breakdown_skip_the_zero_block():
    # A diagonal quadratic with the distinct eigenvalues 5, 2, -3 and 0 on the block: the Krylov space is
    # invariant after 4 steps (then the betas are 0), so both ends come from the live 4 x 4 block only.
    eigenvalues = np.zeros(31)
    eigenvalues[:3] = [5.0, 2.0, -3.0]
    a, params = _quadratic(eigenvalues, diagonal=True)
    loss_fn = functools.partial(_quadratic_loss, jnp.asarray(a))
    block = {"a": True, "b": False}
    smallest, largest = jax.jit(lambda p: spectrum.top_eigenvalues(loss_fn, p, k=2, num_iters=10, which="both",
                                                                   block=block))(params)
    np.testing.assert_allclose(smallest, [-3.0, 0.0], atol=1e-10)
    np.testing.assert_allclose(largest, [5.0, 2.0], rtol=1e-10)


@pytest.mark.float64
def test_hutchinson_within_three_standard_errors_and_exact_on_diagonals():
    _, params = _quadratic(_SPREAD)
    trace = jax.jit(lambda a: spectrum.hessian_trace(functools.partial(_quadratic_loss, a), params, num_probes=200,
                                                     key=jax.random.key(3)))
    dense = _quadratic(_SPREAD, seed=2)[0]
    estimate, stderr = trace(dense)
    assert 0 < stderr and abs(estimate - np.trace(dense)) <= 3 * stderr
    # zᵀDz = Σ d_i z_i² is tr D for every probe iff the probe entries are exactly ±1.
    diagonal = _quadratic(_SPREAD, diagonal=True)[0]
    estimate, stderr = trace(diagonal)
    np.testing.assert_allclose(estimate, np.trace(diagonal), rtol=1e-13)
    np.testing.assert_allclose(stderr, 0.0, atol=1e-12)


@pytest.mark.float64
@pytest.mark.parametrize("block", [None, {"a": False, "b": True}])
def test_hutchinson_with_identity_probes_gives_exact_trace(block):
    a, params = _quadratic(_SPREAD, seed=4)
    size, first = a.shape[0], 0 if block is None else a.shape[0] - 10
    loss_fn = functools.partial(_quadratic_loss, jnp.asarray(a))
    trace = jax.jit(lambda p, z: spectrum.hessian_trace(loss_fn, p, probes=z, block=block))
    estimate, _ = trace(params, _quadratic_probes(np.eye(size)))
    np.testing.assert_allclose(estimate * size, np.trace(a[first:, first:]), rtol=1e-12)


@pytest.mark.float64
def test_slq_gauss_quadrature_reproduces_krylov_moments():
    a, params = _quadratic(np.linspace(0.5, 2.0, 31), seed=5)
    v = np.random.default_rng(6).normal(size=(2, a.shape[0]))
    steps, loss_fn = 8, functools.partial(_quadratic_loss, jnp.asarray(a))
    density = jax.jit(lambda p, z: spectrum.spectral_density(loss_fn, p, num_steps=steps, probes=z))
    nodes, weights = density(params, _quadratic_probes(v))
    assert nodes.shape == weights.shape == (2, steps)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    for i in range(2):
        u, power = v[i] / np.linalg.norm(v[i]), np.eye(a.shape[0])
        for order in range(2 * steps):  # Gauss quadrature is exact up to degree 2m − 1
            np.testing.assert_allclose(np.sum(weights[i] * nodes[i] ** order), u @ power @ u, rtol=1e-10)
            power = power @ a


@pytest.mark.float64
def test_slq_with_full_steps_recovers_the_spectrum_and_smooths_to_unit_mass():
    eigenvalues = np.linspace(0.5, 2.0, 31)
    a, params = _quadratic(eigenvalues, seed=7)
    loss_fn = functools.partial(_quadratic_loss, jnp.asarray(a))
    nodes, weights = jax.jit(lambda p: spectrum.spectral_density(loss_fn, p, num_steps=31, num_probes=3,
                                                                 key=jax.random.key(1)))(params)
    np.testing.assert_allclose(np.sort(nodes, axis=1), np.broadcast_to(eigenvalues, (3, 31)), atol=1e-10)
    grid = np.linspace(-1.0, 3.5, 2001)
    density = jax.jit(spectrum.smooth_density)(nodes, weights, grid, 0.05)
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.trapezoid(density * grid, grid), np.mean(np.sum(weights * nodes, 1)), rtol=1e-6)


@pytest.mark.float64
def test_vmap_over_checkpoints_matches_per_params_calls_and_closed_form():
    params = jnp.stack([jnp.linspace(-1.0, 1.0, 12), jnp.linspace(0.5, -0.3, 12)])
    top = jax.jit(lambda p: spectrum.top_eigenvalues(_quartic, p, k=2))
    batched = jax.jit(jax.vmap(top))(params)
    for i in range(2):
        exact = np.sort(np.linspace(-1.0, 2.0, 12) + 3 * np.asarray(params[i]) ** 2)[::-1][:2]
        np.testing.assert_allclose(batched[i], top(params[i]), rtol=1e-12)
        np.testing.assert_allclose(batched[i], exact, rtol=1e-10)


# float32: runs, shapes, dtypes, jit and vmap; errors --------------------------------------------


def test_float32_model_spectrum_under_jit():
    _, params, objective = _mlp_problem(jnp.float32)

    def run(p):
        values, vectors = spectrum.top_eigenvalues(objective, p, k=3, return_vectors=True)
        hv = jax.vmap(lambda u: ls.hvp(objective, p, u))(vectors)
        return values, vectors, hv, spectrum.spectral_density(objective, p, num_steps=16, num_probes=2)

    values, vectors, hv, (nodes, weights) = jax.jit(run)(params)
    assert values.shape == (3,) and values.dtype == jnp.float32 and np.all(np.diff(values) < 0)
    assert all(leaf.shape[0] == 3 and leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(vectors))
    flat, hv = _flat_rows(vectors), _flat_rows(hv)
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), 1.0, rtol=1e-5)
    assert np.linalg.norm(hv - values[:, None] * flat, axis=1).max() <= 1e-4 * values[0]
    assert nodes.shape == weights.shape == (2, 16) and nodes.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert np.max(nodes) <= values[0] * (1 + 1e-5)  # Ritz values lie inside the spectrum


def test_float32_hessian_trace_vmaps_over_keys():
    params = jnp.linspace(-1.0, 1.0, 12)
    keys = jax.random.split(jax.random.key(0), 3)
    trace = jax.jit(lambda k: spectrum.hessian_trace(_quartic, params, num_probes=8, key=k))
    traces, errors = jax.jit(jax.vmap(trace))(keys)
    assert traces.shape == errors.shape == (3,) and traces.dtype == jnp.float32
    np.testing.assert_allclose(traces[1], trace(keys[1])[0], rtol=1e-6)
    exact = np.sum(np.linspace(-1.0, 2.0, 12) + 3 * np.asarray(params) ** 2)  # diagonal: every ±1 probe is exact
    np.testing.assert_allclose(traces, exact, rtol=1e-5)


def test_lanczos_breakdown_stays_finite_and_static():
    # diag(1, 1, 2, 2, 3, 3): a Krylov space of dimension 3, so steps 4–6 break down.
    matrix = jnp.diag(jnp.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]))
    (alphas, betas, basis), top = jax.jit(lambda v: (
        spectrum.lanczos(lambda u: matrix @ u, v, 6),
        spectrum.top_eigenvalues(lambda p: 0.5 * p @ matrix @ p, v, k=4, num_iters=6)))(jnp.ones(6))
    assert alphas.shape == (6,) and betas.shape == (5,) and basis.shape == (6, 6)
    assert np.all(np.asarray(betas[:2]) > 0.1) and np.all(np.asarray(betas[2:]) == 0)
    assert np.all(np.asarray(basis[3:]) == 0) and np.all(np.asarray(alphas[3:]) == 0)
    np.testing.assert_allclose(np.asarray(basis[:3]) @ np.asarray(basis[:3]).T, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.asarray(top[:3]), [3.0, 2.0, 1.0], rtol=1e-5)
    assert np.isnan(top[3])  # one start vector cannot see a 4th distinct eigenvalue


@pytest.mark.parametrize("call, match", [
    (lambda p: spectrum.top_eigenvalues(_quartic, p, k=13), "^k: "),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, k=0), "^k: "),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, k=2, block={"a": jnp.arange(12) < 1}), r"^k: .*\[1, 1\]"),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, method="arnoldi"), "^method: "),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, which="middle"), "^which: "),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, k=2, method="power", which="smallest"), "^which: .*lanczos"),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, k=2, method="power", which="both"), "^which: .*lanczos"),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, k=2, num_iters=20), "^num_iters: "),
    (lambda p: spectrum.top_eigenvalues(_quartic, p, kind="fisher"), "^kind: "),
    (lambda p: spectrum.top_eigenvalues(lambda q: jnp.ones(2) * _quartic(q), p), "^loss_fn: "),
    (lambda p: spectrum.spectral_density(_quartic, p, num_steps=13), "^num_steps: "),
    (lambda p: spectrum.hessian_trace(_quartic, p, probes={"a": jnp.ones((4, 11))}),
     r"^probes: leaf \['a'\] has shape \(4, 11\), expected \(4, 12\) as in params$"),
    (lambda p: spectrum.hessian_trace(_quartic, p, probes={"b": jnp.ones((4, 12))}),
     r"^probes: structure differs from params"),
    (lambda p: spectrum.hessian_trace(_quartic, p, num_probes=0), "^num_probes: "),
    (lambda p: spectrum.smooth_density(jnp.ones(3), jnp.ones(3), jnp.ones(5), 0.0), "^sigma: "),
])
def test_bad_arguments_raise_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call({"a": jnp.linspace(-1.0, 1.0, 12)})
    assert "\n" not in str(info.value)


def test_ggn_needs_a_model_objective():
    with pytest.raises(TypeError, match="^objective: "):
        spectrum.top_eigenvalues(_quartic, jnp.ones(12), k=2, kind="ggn")
