"""Representation similarity: HSIC and centered kernel alignment (CKA), biased and debiased.

Conventions: ``n`` examples; a representation is ``x: (n, p)`` (rows = examples, columns = features),
and two representations compared with each other hold the SAME ``n`` examples in the same order.
A Gram matrix is ``K: (n, n)``, symmetric (not checked: the values may be traced). ``H = I − 11ᵀ/n``.

* **Biased HSIC** (Gretton et al. 2005; Kornblith, Norouzi, Lee & Hinton 2019, "Similarity of Neural
  Network Representations Revisited", ICML, §3): ``HSIC_0(K, L) = tr(K H L H) / (n − 1)²``.
* **Debiased HSIC**: the unbiased estimator of Song, Smola, Gretton, Bedo & Borgwardt 2012 ("Feature
  Selection via Dependence Maximization", JMLR 13, eq. (5)). With ``K̃, L̃`` = ``K, L`` with zeroed
  diagonals, ``HSIC_1 = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))``; it equals
  the U-statistic ``mean over distinct (i, j, q, r) of K_ij L_ij + K_ij L_qr − 2 K_ij L_iq``, so it is
  unbiased for the population HSIC. Needs ``n ≥ 4``; it can be negative when the dependence is weak.
* **CKA** ``= HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (Kornblith et al. 2019, §3); debiased CKA puts
  ``HSIC_1`` in all three places (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the
  Same Things?", ICLR, §3 and the appendix on the unbiased estimator). It is NaN when a
  self-similarity is 0 (a constant representation) or, debiased, negative (tiny ``n``).
* **Linear kernel** ``K = x xᵀ``: computed in feature space when that is cheaper (decided from the static
  shapes). With column-centred ``x_c = H x`` and ``y_c``, ``HKH = x_c x_cᵀ``, hence
  ``tr(KHLH) = ‖y_cᵀ x_c‖_F²`` — the Gram form, exactly. ``HSIC_1`` is unchanged by centring (it is
  invariant to ``K_ij → K_ij + u_i + u_j + c``), and with ``d_x = diag(x_c x_cᵀ)`` (so ``K̃1 = −d_x``) it is
  ``[‖y_cᵀx_c‖_F² − d_x·d_y + (Σd_x)(Σd_y)/((n−1)(n−2)) − 2 d_x·d_y/(n−2)] / (n(n−3))``.
* **RBF kernel** ``k(a, b) = exp(−‖a − b‖² / (2 σ² m²))``: ``m`` is the median of the ``n(n−1)/2``
  Euclidean distances ``‖x_i − x_j‖``, ``i < j``, of THAT representation (``jnp.median``: the mean of the
  two middle values for an even count), so ``σ`` is a fraction of the median distance (Kornblith et
  al. 2019, §3, "we select σ as a fraction of the median distance between examples"; ``σ = 0.8`` as in
  their experiments). Distances are not squared before the median.

``debiased`` and ``kernel`` are static Python values; everything else may be traced, so ``jit`` (with
``static_argnames``) and ``vmap`` (over layers, seeds, ...) apply. Results are 0-d arrays of the
inputs' (promoted) floating dtype.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_bool, is_real
from jaxlearn._types import Array, ArrayLike, Scalar

__all__ = ["hsic", "cka", "linear_cka", "rbf_cka", "minibatch_cka"]

_KERNELS = ("linear", "rbf")


def _check_flag(name: str, value) -> None:
    check_bool(value, name, error=ValueError, expected="a Python bool (a static argument)")


def _check_matrix(name: str, a, what: str, rank: int = 2):
    a = jnp.asarray(a)
    if a.ndim != rank:
        raise ValueError(f"{name}: expected a rank-{rank} array {what}, got shape {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"{name}: expected a real floating dtype, got {a.dtype}")
    return a


def _check_examples(name: str, n: int, debiased: bool) -> None:
    need = 4 if debiased else 2
    if n < need:
        kind = "debiased HSIC estimator (Song et al. 2012)" if debiased else "biased HSIC (1/(n−1)²)"
        raise ValueError(f"{name}: the {kind} needs at least {need} examples, got {n}")


def _check_pair(names: tuple[str, str], x, y, rank: int, what: str, debiased: bool):
    """Two representations ``(…, n, p)``, ``(…, n, q)`` with equal leading axes, cast to one float dtype."""
    name_x, name_y = names
    x, y = _check_matrix(name_x, x, what, rank), _check_matrix(name_y, y, what, rank)
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(f"{name_y}: expected the leading axes of {name_x}, {x.shape[:-1]}, before the features, "
                         f"got {y.shape[:-1]}")
    _check_examples(name_x, x.shape[-2], debiased)
    dtype = jnp.result_type(x, y)
    return x.astype(dtype), y.astype(dtype)


def _check_grams(gram_k, gram_l, debiased: bool):
    k = _check_matrix("gram_k", gram_k, "(n, n)")
    l = _check_matrix("gram_l", gram_l, "(n, n)")
    for name, g in (("gram_k", k), ("gram_l", l)):
        if g.shape[0] != g.shape[1]:
            raise ValueError(f"{name}: expected a square (n, n) Gram matrix, got shape {g.shape}")
    if k.shape != l.shape:
        raise ValueError(f"gram_l: expected the shape of gram_k, {k.shape}, got {l.shape}")
    _check_examples("gram_k", k.shape[0], debiased)
    dtype = jnp.result_type(k, l)
    return k.astype(dtype), l.astype(dtype)


def _check_kernel(kernel, sigma) -> None:
    if kernel not in _KERNELS:
        raise ValueError(f"kernel: expected one of {_KERNELS}, got {kernel!r}")
    if is_real(sigma) and not sigma > 0:
        raise ValueError(f"sigma: expected a positive bandwidth fraction, got {sigma!r}")


# -- estimators on the parts of the formulas ----------------------------------------------------------

def _unbiased_from_parts(trace_kl, k_sum, l_sum, cross, n: int):
    """Song et al. 2012, eq. (5): ``trace_kl = tr(K̃L̃)``, ``k_sum = 1ᵀK̃1``, ``l_sum = 1ᵀL̃1``,
    ``cross = 1ᵀK̃L̃1``."""
    return (trace_kl + k_sum * l_sum / ((n - 1) * (n - 2)) - 2.0 * cross / (n - 2)) / (n * (n - 3))


def _center_gram(k):
    """``H K H``: subtract column means and row means, add back the grand mean."""
    return k - jnp.mean(k, axis=0, keepdims=True) - jnp.mean(k, axis=1, keepdims=True) + jnp.mean(k)


def _zero_diagonal(k):
    return jnp.where(jnp.eye(k.shape[0], dtype=bool), jnp.zeros((), k.dtype), k)


def _gram_hsic(k, l, debiased: bool):
    n = k.shape[0]
    if not debiased:
        return jnp.sum(_center_gram(k) * _center_gram(l)) / (n - 1) ** 2
    # HSIC_1 is unchanged by K → HKH (for symmetric K a shift K_ij + u_i + u_j + c), which removes the
    # large common offsets whose cancellation would otherwise cost float32 digits
    kt, lt = _zero_diagonal(_center_gram(k)), _zero_diagonal(_center_gram(l))
    rows_k, rows_l = jnp.sum(kt, axis=1), jnp.sum(lt, axis=1)
    # for symmetric K̃, L̃: tr(K̃L̃) = Σ K̃∘L̃ and 1ᵀK̃L̃1 = (K̃1)·(L̃1)
    return _unbiased_from_parts(jnp.sum(kt * lt), jnp.sum(rows_k), jnp.sum(rows_l), jnp.dot(rows_k, rows_l), n)


def _gram_hsic_triplet(k, l, debiased: bool):
    """``(HSIC(K, L), HSIC(K, K), HSIC(L, L))`` from Gram matrices."""
    return _gram_hsic(k, l, debiased), _gram_hsic(k, k, debiased), _gram_hsic(l, l, debiased)


def _linear_hsic_triplet(x, y, debiased: bool):
    """The triplet for ``K = x xᵀ``, ``L = y yᵀ`` in feature space (see the module docstring)."""
    n = x.shape[0]
    x = x - jnp.mean(x, axis=0)
    y = y - jnp.mean(y, axis=0)
    fro_xy, fro_xx, fro_yy = (jnp.sum(jnp.square(a.T @ b)) for a, b in ((x, y), (x, x), (y, y)))
    if not debiased:
        scale = (n - 1) ** 2
        return fro_xy / scale, fro_xx / scale, fro_yy / scale
    dx, dy = jnp.sum(x * x, axis=1), jnp.sum(y * y, axis=1)

    def unbiased(fro, da, db):
        # tr(K̃L̃) = ‖aᵀb‖² − d_a·d_b;  1ᵀK̃1 = −Σd_a (centred columns);  1ᵀK̃L̃1 = (K̃1)·(L̃1) = d_a·d_b
        dot = jnp.dot(da, db)
        return _unbiased_from_parts(fro - dot, -jnp.sum(da), -jnp.sum(db), dot, n)

    return unbiased(fro_xy, dx, dy), unbiased(fro_xx, dx, dx), unbiased(fro_yy, dy, dy)


def _feature_space_is_cheaper(n: int, p: int, q: int) -> bool:
    # feature space: xᵀy, xᵀx, yᵀy cost n(pq + p² + q²); Gram space: x xᵀ, y yᵀ and n×n sums, n²(p + q)
    return p * q + p * p + q * q <= n * (p + q)


def _sq_distances(x):
    x = x - jnp.mean(x, axis=0)  # translation-invariant; centring reduces cancellation below
    norms = jnp.sum(x * x, axis=1)
    sq = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * (x @ x.T), 0.0)
    return _zero_diagonal(sq)


def _rbf_gram(x, sigma):
    """``exp(−‖x_i − x_j‖² / (2 σ² m²))``, ``m`` = median pairwise distance ``i < j``."""
    sq = _sq_distances(x)
    upper = np.triu_indices(x.shape[0], k=1)
    median = jnp.median(jnp.sqrt(sq[upper]))
    return jnp.exp(-sq / (2.0 * jnp.square(jnp.asarray(sigma, x.dtype) * median)))


def _representation_triplet(x, y, kernel: str, sigma, debiased: bool):
    if kernel == "rbf":
        return _gram_hsic_triplet(_rbf_gram(x, sigma), _rbf_gram(y, sigma), debiased)
    n, p = x.shape
    if _feature_space_is_cheaper(n, p, y.shape[1]):
        return _linear_hsic_triplet(x, y, debiased)
    x, y = x - jnp.mean(x, axis=0), y - jnp.mean(y, axis=0)  # exact (HKH = x_c x_cᵀ), and fewer lost digits
    return _gram_hsic_triplet(x @ x.T, y @ y.T, debiased)


def _alignment(hsic_kl, hsic_kk, hsic_ll):
    return hsic_kl / jnp.sqrt(hsic_kk * hsic_ll)


# -- public API ----------------------------------------------------------------------------------------

def hsic(gram_k: ArrayLike, gram_l: ArrayLike, *, debiased: bool = False) -> Array:
    """HSIC of two Gram matrices ``gram_k, gram_l: (n, n)`` (symmetric) of the same ``n`` examples.

    ``debiased=False``: ``tr(K H L H) / (n − 1)²`` (Kornblith et al. 2019, §3; needs ``n ≥ 2``).
    ``debiased=True``: the unbiased estimator ``HSIC_1`` of Song et al. 2012, eq. (5) (needs ``n ≥ 4``).
    Returns a 0-d array.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> k = jnp.array([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(an.hsic(k, k)), 4)                          # tr(KHLH)/(n−1)²
        1.0
    """
    _check_flag("debiased", debiased)
    k, l = _check_grams(gram_k, gram_l, debiased)
    return _gram_hsic(k, l, debiased)


def cka(gram_k: ArrayLike, gram_l: ArrayLike, *, debiased: bool = False) -> Array:
    """Centered kernel alignment ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` of two Gram matrices
    ``(n, n)`` (Kornblith et al. 2019, §3; debiased: ``HSIC_1`` throughout, Nguyen et al. 2021).
    The ``1/(n−1)²`` (or ``1/(n(n−3))``) normalisation cancels. Returns a 0-d array.
    """
    _check_flag("debiased", debiased)
    k, l = _check_grams(gram_k, gram_l, debiased)
    return _alignment(*_gram_hsic_triplet(k, l, debiased))


def linear_cka(x: ArrayLike, y: ArrayLike, *, debiased: bool = False) -> Array:
    """CKA with linear kernels ``K = x xᵀ``, ``L = y yᵀ`` of representations ``x: (n, p)``, ``y: (n, q)``
    (rows = the same examples). Biased: ``‖y_cᵀx_c‖_F² / (‖x_cᵀx_c‖_F ‖y_cᵀy_c‖_F)`` with column-centred
    ``x_c, y_c``, which equals the Gram form ``cka(x xᵀ, y yᵀ)`` exactly; debiased: ``HSIC_1`` (Song et
    al. 2012, eq. (5)) in feature space. The feature- or Gram-space evaluation is chosen from the static
    shapes, whichever costs fewer flops. Invariant to orthogonal transforms, isotropic scaling and
    translation of either representation (Kornblith et al. 2019, §3). Returns a 0-d array.

    Examples:
        >>> import numpy as np
        >>> from jaxlearn import analysis as an
        >>> x = np.random.default_rng(0).normal(size=(50, 8))
        >>> round(float(an.linear_cka(x, 2.0 * x + 1.0)), 4)        # invariant to scale and translation
        1.0
    """
    _check_flag("debiased", debiased)
    x, y = _check_pair(("x", "y"), x, y, 2, "(n examples, features)", debiased)
    return _alignment(*_representation_triplet(x, y, "linear", None, debiased))


def rbf_cka(x: ArrayLike, y: ArrayLike, *, sigma: Scalar = 0.8, debiased: bool = False) -> Array:
    """CKA with RBF kernels ``k(a, b) = exp(−‖a − b‖² / (2 σ² m²))`` of ``x: (n, p)``, ``y: (n, q)``,
    where ``m`` is the median of the Euclidean distances ``‖x_i − x_j‖`` over pairs ``i < j`` of the
    representation the kernel is built on (its own ``m`` for ``x`` and for ``y``; Kornblith et al.
    2019, §3). ``sigma``: the bandwidth as a fraction of that median (may be traced). Invariant to
    orthogonal transforms, isotropic scaling and translation. NaN if all rows of a representation are
    equal (``m = 0``). Returns a 0-d array.
    """
    _check_flag("debiased", debiased)
    _check_kernel("rbf", sigma)
    x, y = _check_pair(("x", "y"), x, y, 2, "(n examples, features)", debiased)
    return _alignment(*_representation_triplet(x, y, "rbf", sigma, debiased))


def minibatch_cka(xs: ArrayLike, ys: ArrayLike, *, debiased: bool = True, kernel: Literal["linear", "rbf"] = "linear",
                  sigma: Scalar = 0.8) -> Array:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021, §3) of ``xs: (k, b, p)``, ``ys: (k, b, q)``: ``k``
    minibatches of the same ``b`` examples in both.

    ``mean_i HSIC(K_i, L_i) / sqrt(mean_i HSIC(K_i, K_i) · mean_i HSIC(L_i, L_i))`` — the three HSIC
    averages are accumulated first and divided once (NOT the mean of per-batch CKAs). With the default
    ``debiased=True`` each HSIC is the unbiased ``HSIC_1`` (Song et al. 2012; needs ``b ≥ 4``), so the
    averages are unbiased for the population HSICs; for a data set of ``N = k·b`` rows split into batches,
    the gap to its full-data debiased CKA is ``O(1/√(N b))`` (the two U-statistics share their first-order
    Hoeffding term), and for ``k = 1`` it IS ``linear_cka(xs[0], ys[0], debiased=True)``. ``kernel``:
    ``"linear"`` or ``"rbf"`` (bandwidth ``sigma`` times the median distance WITHIN each minibatch, as
    in :func:`rbf_cka`). Returns a 0-d array.
    """
    _check_flag("debiased", debiased)
    _check_kernel(kernel, sigma)
    xs, ys = _check_pair(("xs", "ys"), xs, ys, 3, "(minibatches, examples, features)", debiased)
    triplets = jax.vmap(lambda x, y: _representation_triplet(x, y, kernel, sigma, debiased))(xs, ys)
    return _alignment(*(jnp.mean(t) for t in triplets))
