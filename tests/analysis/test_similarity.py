"""HSIC and CKA against dense NumPy ground truth (float64): the biased HSIC from explicit ``H = I − 11ᵀ/n``
matrices, the debiased one from the U-statistic written as a Python loop over distinct index quadruples
(its definition, Song et al. 2012), RBF Gram matrices from pairwise-distance loops; the invariances CKA
must have (and one it must not); minibatch CKA against per-batch U-statistics and its large-batch limit;
jit/vmap and input errors (float32)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.analysis import similarity

# Jitted once: shapes repeat across tests, so most calls hit the cache.
hsic = jax.jit(similarity.hsic, static_argnames="debiased")
cka = jax.jit(similarity.cka, static_argnames="debiased")
linear_cka = jax.jit(similarity.linear_cka, static_argnames="debiased")
rbf_cka = jax.jit(similarity.rbf_cka, static_argnames="debiased")
minibatch_cka = jax.jit(similarity.minibatch_cka, static_argnames=("debiased", "kernel"))

float64 = pytest.mark.float64
DEBIASED = [False, True]


# -- NumPy ground truth ---------------------------------------------------------------------------------

def np_hsic_biased(k, l):
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_hsic_u_statistic(k, l):
    """Unbiased HSIC as a U-statistic: the mean over ordered distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr − 2 k_ij l_iq (population HSIC = E[kl] + E[k]E[l] − 2 E_{x,y}[E k · E l])."""
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(len(k)), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2.0 * k[i, j] * l[i, q]
        count += 1
    return total / count


def np_hsic_song_closed_form(k, l):
    """Song et al. 2012, eq. (5) on dense matrices (checked against the U-statistic for small n)."""
    n = len(k)
    kt, lt, one = k - np.diag(np.diag(k)), l - np.diag(np.diag(l)), np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def np_cka(k, l, hsic_fn):
    return hsic_fn(k, l) / np.sqrt(hsic_fn(k, k) * hsic_fn(l, l))


def np_rbf_gram(x, sigma):
    n = len(x)
    dist = np.array([[np.sqrt(np.sum((x[i] - x[j]) ** 2)) for j in range(n)] for i in range(n)])
    median = np.median([dist[i, j] for i in range(n) for j in range(i + 1, n)])
    return np.exp(-dist ** 2 / (2.0 * sigma ** 2 * median ** 2))


def representations(n, p, q, seed=0, noise=0.5):
    """``x`` with a nonzero mean and unequal feature scales, ``y`` a noisy linear map of ``x``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, size=p) + rng.normal(size=p)
    y = x @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q)) + 3.0
    return x, y


def orthogonal(p, seed=1):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q * np.sign(np.diag(r))


# -- HSIC and CKA on Gram matrices -----------------------------------------------------------------------

@float64
@pytest.mark.parametrize("n", [5, 6, 7])
def test_debiased_hsic_is_the_u_statistic(n):
    x, y = representations(n, 3, 2, seed=n)
    for k, l in [(x @ x.T, y @ y.T), (np_rbf_gram(x, 0.8), y @ y.T)]:
        expected = np_hsic_u_statistic(k, l)
        np.testing.assert_allclose(hsic(jnp.asarray(k), jnp.asarray(l), debiased=True), expected, rtol=1e-11)
        np.testing.assert_allclose(np_hsic_song_closed_form(k, l), expected, rtol=1e-11)
        np.testing.assert_allclose(cka(jnp.asarray(k), jnp.asarray(l), debiased=True),
                                   np_cka(k, l, np_hsic_u_statistic), rtol=1e-11)
        # the two estimators differ (else this test could not tell them apart)
        assert abs(np_hsic_biased(k, l) - expected) > 1e-3 * abs(expected)


@float64
@pytest.mark.parametrize("n", [4, 9])
def test_biased_hsic_and_cka_match_dense_centering(n):
    x, y = representations(n, 3, 5, seed=n)
    k, l = x @ x.T, np_rbf_gram(y, 0.5)
    np.testing.assert_allclose(hsic(jnp.asarray(k), jnp.asarray(l)), np_hsic_biased(k, l), rtol=1e-12)
    np.testing.assert_allclose(cka(jnp.asarray(k), jnp.asarray(l)), np_cka(k, l, np_hsic_biased), rtol=1e-12)


# -- linear and RBF CKA of representations ----------------------------------------------------------------

@float64
@pytest.mark.parametrize("debiased", DEBIASED)
@pytest.mark.parametrize("n, p, q", [(7, 2, 3), (48, 4, 6), (6, 10, 12)])  # feature space twice, then Gram
def test_linear_cka_equals_gram_form(n, p, q, debiased):
    x, y = representations(n, p, q, seed=p)
    k, l = x @ x.T, y @ y.T
    hsic_fn = np_hsic_song_closed_form if debiased else np_hsic_biased
    if debiased and n <= 7:
        hsic_fn = np_hsic_u_statistic
    got = linear_cka(jnp.asarray(x), jnp.asarray(y), debiased=debiased)
    np.testing.assert_allclose(got, np_cka(k, l, hsic_fn), rtol=1e-11)
    np.testing.assert_allclose(got, cka(jnp.asarray(k), jnp.asarray(l), debiased=debiased), rtol=1e-11)


@float64
@pytest.mark.parametrize("debiased", DEBIASED)
@pytest.mark.parametrize("n, sigma", [(5, 0.8), (7, 0.5)])  # 10 pairs: even count, median = mean of middle two
def test_rbf_cka_matches_pairwise_distance_loops(n, sigma, debiased):
    x, y = representations(n, 3, 4, seed=n)
    k, l = np_rbf_gram(x, sigma), np_rbf_gram(y, sigma)
    expected = np_cka(k, l, np_hsic_u_statistic if debiased else np_hsic_biased)
    got = rbf_cka(jnp.asarray(x), jnp.asarray(y), sigma=sigma, debiased=debiased)
    np.testing.assert_allclose(got, expected, rtol=1e-11)


# -- invariances ------------------------------------------------------------------------------------------

# linear: feature, then Gram space; p = q so that (x, y), (y, x) and (x, x) share one compiled program
CASES = [("linear", 32, 5, 5), ("linear", 12, 40, 40), ("rbf", 24, 5, 5)]


def _transform(kind, x):
    if kind == "orthogonal":
        return x @ orthogonal(x.shape[1])
    if kind == "isotropic":
        return 7.5 * x
    return x + np.random.default_rng(2).normal(size=x.shape[1]) * 10.0  # translation


def _cka_fn(kernel):
    return linear_cka if kernel == "linear" else rbf_cka


def _check_invariance(kernel, n, p, q, transform, debiased, dtype, rtol):
    x, y = representations(n, p, q, seed=3)
    x2 = _transform(transform, x)
    fn = _cka_fn(kernel)
    base = fn(jnp.asarray(x, dtype), jnp.asarray(y, dtype), debiased=debiased)
    assert base.dtype == dtype and base.shape == ()
    assert 0.2 < float(base) < 0.999  # a nontrivial value, so that relative tolerance means something
    np.testing.assert_allclose(fn(jnp.asarray(x2, dtype), jnp.asarray(y, dtype), debiased=debiased), base, rtol=rtol)
    np.testing.assert_allclose(fn(jnp.asarray(y, dtype), jnp.asarray(x2, dtype), debiased=debiased), base, rtol=rtol)


@float64
@pytest.mark.parametrize("transform", ["orthogonal", "isotropic", "translation"])
@pytest.mark.parametrize("debiased", DEBIASED)
@pytest.mark.parametrize("kernel, n, p, q", CASES)
def test_invariances_float64(kernel, n, p, q, transform, debiased):
    _check_invariance(kernel, n, p, q, transform, debiased, jnp.float64, rtol=1e-10)


@pytest.mark.parametrize("transform", ["orthogonal", "isotropic", "translation"])
@pytest.mark.parametrize("debiased", DEBIASED)
@pytest.mark.parametrize("kernel, n, p, q", CASES)
def test_invariances_float32(kernel, n, p, q, transform, debiased):
    _check_invariance(kernel, n, p, q, transform, debiased, jnp.float32, rtol=1e-6)


@float64
@pytest.mark.parametrize("debiased", DEBIASED)
@pytest.mark.parametrize("kernel, n, p, q", CASES)
def test_not_invariant_to_anisotropic_scaling(kernel, n, p, q, debiased):
    x, y = representations(n, p, q, seed=3)
    scales = np.ones(p)
    scales[0], scales[1] = 20.0, 0.05
    fn = _cka_fn(kernel)
    base = fn(jnp.asarray(x), jnp.asarray(y), debiased=debiased)
    stretched = fn(jnp.asarray(x * scales), jnp.asarray(y), debiased=debiased)
    assert abs(float(stretched) - float(base)) > 0.02


@pytest.mark.parametrize("debiased", DEBIASED)
@pytest.mark.parametrize("kernel, n, p, q", CASES)
def test_self_similarity_is_one(kernel, n, p, q, debiased):
    x, _ = representations(n, p, q, seed=4)
    got = _cka_fn(kernel)(jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32), debiased=debiased)
    np.testing.assert_allclose(got, 1.0, rtol=1e-6)


# -- minibatch CKA -----------------------------------------------------------------------------------------

@float64
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_cka_matches_per_batch_u_statistics(kernel):
    x, y = representations(18, 3, 2, seed=5)
    xs, ys = x.reshape(3, 6, 3), y.reshape(3, 6, 2)
    gram = (lambda a: a @ a.T) if kernel == "linear" else (lambda a: np_rbf_gram(a, 0.8))
    kl, kk, ll = (np.mean([np_hsic_u_statistic(gram(a[i]), gram(b[i])) for i in range(3)])
                  for a, b in ((xs, ys), (xs, xs), (ys, ys)))
    got = minibatch_cka(jnp.asarray(xs), jnp.asarray(ys), kernel=kernel)
    np.testing.assert_allclose(got, kl / np.sqrt(kk * ll), rtol=1e-11)
    # the ratio of averages, not the average of per-batch ratios
    mean_of_ckas = np.mean([np_cka(gram(xs[i]), gram(ys[i]), np_hsic_u_statistic) for i in range(3)])
    assert abs(float(got) - mean_of_ckas) > 1e-3


@float64
@pytest.mark.parametrize("kernel, n, p, q", [CASES[0], CASES[2]])
def test_minibatch_cka_of_one_batch_is_the_full_debiased_cka(kernel, n, p, q):
    x, y = representations(n, p, q, seed=6)
    full = _cka_fn(kernel)(jnp.asarray(x), jnp.asarray(y), debiased=True)
    got = minibatch_cka(jnp.asarray(x[None]), jnp.asarray(y[None]), kernel=kernel)
    np.testing.assert_allclose(got, full, rtol=1e-13)


@float64
def test_minibatch_cka_approaches_full_debiased_cka_as_batches_grow():
    """x ~ N(0, I_p), y = x W + ε (ε ~ N(0, I_q)): population linear CKA ‖W‖_F² / (‖I_p‖_F ‖WᵀW + I‖_F).

    Tolerance: minibatch and full estimators of each HSIC are U-statistics sharing their first-order
    Hoeffding projection (the same (4/N) Σ_i h_1(z_i)); they differ only in the degenerate remainder,
    which is O_p(1/b) per batch and averages over k = N/b independent batches to O_p(1/√(N b)). So the
    RMS gap over random splits is c/√(N b) with a constant c of order one for this fixture (measured
    0.7–1.8 over b = 16…1024 and seeds 7–9); we bound c by 4, ask for the 64× larger batches to close the
    gap at least 4× (theory 8×), and one batch of all N rows must give the full value exactly. (Biased
    per-batch HSICs keep an O(1/b) bias, c ≈ 26 at b = 16 here: that fails. The mean of per-batch CKAs is
    told apart by test_minibatch_cka_matches_per_batch_u_statistics.)"""
    n, p, q = 2048, 6, 4
    rng = np.random.default_rng(7)
    w = rng.normal(size=(p, q)) / np.sqrt(p)
    x = rng.normal(size=(n, p))
    y = x @ w + rng.normal(size=(n, q))
    full = float(linear_cka(jnp.asarray(x), jnp.asarray(y), debiased=True))
    population = np.sum(w ** 2) / (np.sqrt(p) * np.linalg.norm(w.T @ w + np.eye(q)))
    assert abs(full - population) < 0.05  # sampling error O(1/√N)
    splits = np.stack([rng.permutation(n) for _ in range(8)])
    over_splits = jax.jit(jax.vmap(similarity.minibatch_cka))
    gaps = []
    for b in (16, 64, 256, 1024):
        values = over_splits(jnp.asarray(x[splits].reshape(8, n // b, b, p)),
                             jnp.asarray(y[splits].reshape(8, n // b, b, q)))
        gaps.append(np.sqrt(np.mean((np.asarray(values) - full) ** 2)))
    assert all(gap * np.sqrt(n * b) < 4.0 for gap, b in zip(gaps, (16, 64, 256, 1024))), gaps
    assert gaps[-1] < gaps[0] / 4, gaps
    one_batch = minibatch_cka(jnp.asarray(x[None]), jnp.asarray(y[None]))
    np.testing.assert_allclose(one_batch, full, rtol=1e-12)


# -- jit / vmap / errors (float32) -----------------------------------------------------------------------

def _stacked_check(fn_batched, fn_single, stacked, rtol=2e-5):
    got = fn_batched(stacked)
    assert got.shape == (len(stacked),)
    np.testing.assert_allclose(got, np.array([fn_single(s) for s in stacked]), rtol=rtol)


def _stack_of_ys(n, p, seeds=(9, 10, 11)):
    return jnp.asarray(np.stack([representations(n, p, p, seed=s)[1] for s in seeds]), jnp.float32)


# the shapes of CASES, so that the un-vmapped reference calls reuse programs compiled above
@pytest.mark.parametrize("fn, jitted, debiased, case", [
    (similarity.linear_cka, linear_cka, False, CASES[0]), (similarity.linear_cka, linear_cka, True, CASES[1]),
    (similarity.rbf_cka, rbf_cka, True, CASES[2])])
def test_cka_of_representations_jit_and_vmap_over_stacked_y(fn, jitted, debiased, case):
    _, n, p, _ = case
    x, ys = jnp.asarray(representations(n, p, p, seed=8)[0], jnp.float32), _stack_of_ys(n, p)
    batched = jax.jit(jax.vmap(lambda x, y: fn(x, y, debiased=debiased), in_axes=(None, 0)))
    _stacked_check(lambda stack: batched(x, stack), lambda y: jitted(x, y, debiased=debiased), ys)
    assert batched(x, ys).dtype == jnp.float32


@pytest.mark.parametrize("fn, jitted, debiased", [(similarity.hsic, hsic, False), (similarity.hsic, hsic, True),
                                                  (similarity.cka, cka, True)])
def test_gram_functions_jit_and_vmap_over_stacked_l(fn, jitted, debiased):
    x, ys = jnp.asarray(representations(8, 3, 3, seed=8)[0], jnp.float32), _stack_of_ys(8, 3)
    k, grams = x @ x.T, jnp.einsum("snq,smq->snm", ys, ys)
    batched = jax.jit(jax.vmap(lambda l: fn(k, l, debiased=debiased)))
    _stacked_check(batched, lambda l: jitted(k, l, debiased=debiased), grams)


def test_rbf_cka_vmap_over_a_traced_bandwidth():
    _, n, p, _ = CASES[2]
    x, y = (jnp.asarray(a, jnp.float32) for a in representations(n, p, p, seed=8))
    sigmas = jnp.asarray([0.5, 0.8, 1.5], jnp.float32)
    over_sigma = jax.jit(jax.vmap(lambda s: similarity.rbf_cka(x, y, sigma=s, debiased=True)))
    _stacked_check(over_sigma, lambda s: rbf_cka(x, y, sigma=s, debiased=True), sigmas)
    assert len(set(np.asarray(over_sigma(sigmas)).tolist())) == 3  # the bandwidth matters


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_cka_jit_and_vmap(kernel):
    x, _ = representations(24, 5, 3, seed=10)
    xs = jnp.asarray(x.reshape(4, 6, 5), jnp.float32)
    yss = jnp.asarray(np.stack([representations(24, 5, 3, seed=11 + s)[1].reshape(4, 6, 3) for s in range(3)]),
                      jnp.float32)
    batched = jax.jit(jax.vmap(lambda ys: similarity.minibatch_cka(xs, ys, kernel=kernel)))
    _stacked_check(batched, lambda ys: minibatch_cka(xs, ys, kernel=kernel), yss)
    assert batched(yss).dtype == jnp.float32


X, Y = np.ones((5, 3), np.float32), np.ones((5, 2), np.float32)
ERRORS = [
    (similarity.linear_cka, (X[0], Y), {}, "x: expected a rank-2"),
    (similarity.linear_cka, (X, Y[:4]), {}, "y: expected the leading axes of x"),
    (similarity.linear_cka, (X[:3], Y[:3]), {"debiased": True}, "x: the debiased .* at least 4 examples, got 3"),
    (similarity.linear_cka, (X.astype(np.int32), Y), {}, "x: expected a real floating dtype"),
    (similarity.linear_cka, (X, Y), {"debiased": "yes"}, "debiased: expected a Python bool"),
    (similarity.rbf_cka, (X, Y), {"sigma": 0.0}, "sigma: expected a positive"),
    (similarity.rbf_cka, (X[:1], Y[:1]), {}, "x: the biased .* at least 2 examples, got 1"),
    (similarity.cka, (np.ones((5, 4)), np.ones((5, 4))), {}, "gram_k: expected a square"),
    (similarity.cka, (np.ones((5, 5)), np.ones((4, 4))), {}, "gram_l: expected the shape of gram_k"),
    (similarity.hsic, (np.ones((3, 3)), np.ones((3, 3))), {"debiased": True}, "gram_k: the debiased .* got 3"),
    (similarity.hsic, (np.ones(5), np.ones(5)), {}, "gram_k: expected a rank-2"),
    (similarity.minibatch_cka, (X, Y), {}, "xs: expected a rank-3"),
    (similarity.minibatch_cka, (X[None], Y[None, :, :]), {"kernel": "cosine"}, "kernel: expected one of"),
    (similarity.minibatch_cka, (np.ones((2, 3, 3)), np.ones((2, 3, 2))), {}, "xs: the debiased .* got 3"),
    (similarity.minibatch_cka, (np.ones((2, 5, 3)), np.ones((3, 5, 2))), {}, "ys: expected the leading axes"),
]


@pytest.mark.parametrize("fn, args, kwargs, match", ERRORS)
def test_input_errors(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)
