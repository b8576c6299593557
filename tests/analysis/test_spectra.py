"""Effective rank and participation ratio against closed forms (k equal singular values, rank one, the
identity and the centring matrix) and brute force in float64 (NumPy SVD / covariance eigendecomposition
written here, entropy and sums by Python loops); invariances, zero spectra, gradients against central
finite differences; jit/vmap and input errors (float32)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.analysis import spectra

effective_rank = jax.jit(spectra.effective_rank, static_argnames="center")
participation_ratio = jax.jit(spectra.participation_ratio, static_argnames="center")
spectrum_effective_rank = jax.jit(spectra.spectrum_effective_rank)
spectrum_participation_ratio = jax.jit(spectra.spectrum_participation_ratio)

float64 = pytest.mark.float64
CENTER = [False, True]


def np_erank_of_spectrum(s):
    total = sum(abs(v) for v in s)
    entropy = 0.0
    for v in s:
        if v != 0:
            pk = abs(v) / total
            entropy -= pk * math.log(pk)
    return math.exp(entropy)


def np_participation_ratio(eigenvalues):
    total, squares = 0.0, 0.0
    for lam in eigenvalues:
        total += lam
        squares += lam * lam
    return total * total / squares


def np_covariance_eigenvalues(x, center):
    n = len(x)
    xc = x - x.mean(axis=0) if center else x
    cov = xc.T @ xc / (n - 1 if center else n)
    return np.linalg.eigh(cov)[0]


def random_matrix(n, p, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)) * rng.uniform(0.1, 3.0, size=p) + rng.normal(size=p)


def orthogonal(p, seed=1):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q * np.sign(np.diag(r))


def with_singular_values(n, p, values, seed=2):
    """``U diag(values) Vᵀ`` with random orthonormal columns ``U (n, k)``, ``V (p, k)``."""
    k = len(values)
    u, v = orthogonal(n, seed)[:, :k], orthogonal(p, seed + 1)[:, :k]
    return (u * np.asarray(values)) @ v.T


# -- closed forms -----------------------------------------------------------------------------------------

@float64
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_equal_singular_values_give_k(k):
    x = jnp.asarray(with_singular_values(8, 6, [2.5] * k))
    np.testing.assert_allclose(effective_rank(x), k, rtol=1e-12)
    np.testing.assert_allclose(participation_ratio(x, center=False), k, rtol=1e-12)


@float64
def test_rank_one_and_identity():
    rank_one = jnp.asarray(np.outer(np.arange(1.0, 7.0), np.array([2.0, -1.0, 0.5])))
    np.testing.assert_allclose(effective_rank(rank_one), 1.0, rtol=1e-12)
    np.testing.assert_allclose(participation_ratio(rank_one, center=False), 1.0, rtol=1e-12)
    n = 5
    eye = jnp.eye(n)
    np.testing.assert_allclose(effective_rank(eye), n, rtol=1e-12)
    np.testing.assert_allclose(participation_ratio(eye, center=False), n, rtol=1e-12)
    # centring the identity leaves H = I − 11ᵀ/n: n − 1 unit singular values and one zero
    np.testing.assert_allclose(effective_rank(eye, center=True), n - 1, rtol=1e-12)
    np.testing.assert_allclose(participation_ratio(eye), n - 1, rtol=1e-12)


@float64
def test_zero_matrix_and_zero_spectrum_give_zero():
    for value in (effective_rank(jnp.zeros((4, 3))), participation_ratio(jnp.zeros((4, 3))),
                  spectrum_effective_rank(jnp.zeros(3)), spectrum_participation_ratio(jnp.zeros(3))):
        assert float(value) == 0.0


# -- brute force ------------------------------------------------------------------------------------------

@float64
@pytest.mark.parametrize("center", CENTER)
@pytest.mark.parametrize("n, p", [(9, 5), (5, 12)])
def test_matrix_forms_match_numpy(n, p, center):
    x = random_matrix(n, p, seed=n)
    xc = x - x.mean(axis=0) if center else x
    np.testing.assert_allclose(effective_rank(jnp.asarray(x), center=center),
                               np_erank_of_spectrum(np.linalg.svd(xc, compute_uv=False)), rtol=1e-12)
    np.testing.assert_allclose(participation_ratio(jnp.asarray(x), center=center),
                               np_participation_ratio(np_covariance_eigenvalues(x, center)), rtol=1e-12)


@float64
def test_spectrum_forms_with_zeros_match_loops():
    spectrum = np.array([3.0, 0.0, 1.0, 0.5, 0.0, 2.0])
    np.testing.assert_allclose(spectrum_effective_rank(jnp.asarray(spectrum)), np_erank_of_spectrum(spectrum),
                               rtol=1e-13)
    np.testing.assert_allclose(spectrum_participation_ratio(jnp.asarray(spectrum)),
                               np_participation_ratio(spectrum), rtol=1e-13)
    # zeros change neither measure
    nonzero = spectrum[spectrum > 0]
    np.testing.assert_allclose(spectrum_effective_rank(jnp.asarray(nonzero)), np_erank_of_spectrum(spectrum),
                               rtol=1e-13)


@float64
def test_kernel_matrix_through_eigvalsh():
    z = random_matrix(7, 3, seed=3)
    kernel = z @ z.T  # PSD of rank 3: eigvalsh returns four round-off eigenvalues, some negative
    eigenvalues = jnp.linalg.eigvalsh(jnp.asarray(kernel))
    np.testing.assert_allclose(spectrum_participation_ratio(eigenvalues),
                               np.trace(kernel) ** 2 / np.sum(kernel ** 2), rtol=1e-12)
    np.testing.assert_allclose(spectrum_effective_rank(eigenvalues),
                               np_erank_of_spectrum(np.linalg.svd(z, compute_uv=False) ** 2), rtol=1e-10)


@float64
def test_rank_deficient_matrix_has_no_nan():
    x = with_singular_values(6, 5, [3.0, 1.0])
    np.testing.assert_allclose(effective_rank(jnp.asarray(x)), np_erank_of_spectrum([3.0, 1.0]), rtol=1e-10)
    np.testing.assert_allclose(participation_ratio(jnp.asarray(x), center=False),
                               np_participation_ratio([9.0, 1.0]), rtol=1e-10)


# -- invariances ------------------------------------------------------------------------------------------

@float64
@pytest.mark.parametrize("center", CENTER)
def test_orthogonal_and_scaling_invariance(center):
    x = random_matrix(9, 5, seed=4)
    variants = [x @ orthogonal(5), 0.01 * x, 40.0 * x]
    if not center:
        variants.append(orthogonal(9, seed=5) @ x)  # left rotations keep the singular values
    for fn in (effective_rank, participation_ratio):
        base = fn(jnp.asarray(x), center=center)
        for other in variants:
            np.testing.assert_allclose(fn(jnp.asarray(other), center=center), base, rtol=1e-12)
    # and they do see an anisotropic stretch (a test that can fail)
    stretched = x * np.array([30.0, 1.0, 1.0, 1.0, 1.0])
    for fn in (effective_rank, participation_ratio):
        assert abs(float(fn(jnp.asarray(stretched), center=center)) - float(fn(jnp.asarray(x), center=center))) > 0.3


# -- gradients --------------------------------------------------------------------------------------------

@float64
@pytest.mark.parametrize("fn, center", [(spectra.effective_rank, False), (spectra.effective_rank, True),
                                        (spectra.participation_ratio, True)])
def test_gradient_matches_central_differences(fn, center):
    x = random_matrix(6, 4, seed=6)
    f = jax.jit(lambda a: fn(a, center=center))
    grad = jax.jit(jax.grad(lambda a: fn(a, center=center)))(jnp.asarray(x))
    eps = 1e-6
    fd = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            step = np.zeros_like(x)
            step[i, j] = eps
            fd[i, j] = (float(f(jnp.asarray(x + step))) - float(f(jnp.asarray(x - step)))) / (2 * eps)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


@float64
def test_gradients_finite_with_zeros_in_the_spectrum():
    spectrum = jnp.asarray([2.0, 0.0, 1.0, 0.0])
    for fn in (spectra.spectrum_effective_rank, spectra.spectrum_participation_ratio):
        grad = jax.jit(jax.grad(fn))
        assert np.all(np.isfinite(grad(spectrum)))
        assert np.all(np.isfinite(grad(jnp.zeros(4))))
    assert np.all(np.isfinite(jax.jit(jax.grad(spectra.participation_ratio))(jnp.zeros((4, 3)))))


# -- jit / vmap / errors (float32) -----------------------------------------------------------------------

@pytest.mark.parametrize("center", CENTER)
def test_jit_and_vmap_over_a_stack_of_matrices(center):
    xs = jnp.asarray(np.stack([random_matrix(8, 5, seed=s) for s in range(3)]), jnp.float32)
    for fn in (spectra.effective_rank, spectra.participation_ratio):
        batched = jax.jit(jax.vmap(lambda x, fn=fn: fn(x, center=center)))(xs)
        single = jax.jit(fn, static_argnames="center")
        assert batched.shape == (3,) and batched.dtype == jnp.float32
        np.testing.assert_allclose(batched, [single(x, center=center) for x in xs], rtol=1e-5)


def test_jit_and_vmap_over_a_stack_of_spectra():
    spectra_stack = jnp.asarray([[3.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], jnp.float32)
    for batched_fn, single in ((spectra.spectrum_effective_rank, spectrum_effective_rank),
                               (spectra.spectrum_participation_ratio, spectrum_participation_ratio)):
        batched = jax.jit(jax.vmap(batched_fn))(spectra_stack)
        assert batched.shape == (3,)
        np.testing.assert_allclose(batched, [single(s) for s in spectra_stack], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(spectra.spectrum_participation_ratio)(spectra_stack)[1:], [3.0, 0.0])


ERRORS = [
    (spectra.effective_rank, (np.ones(4, np.float32),), {}, "x: expected a rank-2"),
    (spectra.effective_rank, (np.ones((3, 2), np.int32),), {}, "x: expected a real floating dtype"),
    (spectra.effective_rank, (np.ones((3, 2), np.float32),), {"center": None}, "center: expected a Python bool"),
    (spectra.participation_ratio, (np.ones((3, 2, 1), np.float32),), {}, "x: expected a rank-2"),
    (spectra.participation_ratio, (np.ones((0, 2), np.float32),), {}, "x: expected a non-empty"),
    (spectra.spectrum_effective_rank, (np.ones((3, 2), np.float32),), {}, "singular_values: expected a rank-1"),
    (spectra.spectrum_participation_ratio, (np.ones(3, np.int32),), {}, "eigenvalues: expected a real floating"),
]


@pytest.mark.parametrize("fn, args, kwargs, match", ERRORS)
def test_input_errors(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
