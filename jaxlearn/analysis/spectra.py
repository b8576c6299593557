"""Effective dimensionality of a representation or a spectrum: effective rank and participation ratio.

Two measures, each in a matrix form and a spectrum form:

* **Effective rank** (Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality",
  EUSIPCO, Def. 1–2) of a matrix with SINGULAR VALUES ``σ_1, …, σ_r``: ``p_k = σ_k / Σ_j σ_j`` and
  ``erank = exp(H(p))``, ``H(p) = −Σ_k p_k log p_k`` with ``0 log 0 = 0``. Between 1 (rank one) and the
  rank; ``k`` equal nonzero singular values give ``k``.
* **Participation ratio** of the EIGENVALUES ``λ_k`` of a covariance (or any PSD matrix):
  ``PR = (Σ_k λ_k)² / Σ_k λ_k²`` (Gao, Trautmann, Yu, Santhanam, Ryu, Shenoy & Ganguli 2017, "A theory of
  multineuronal dimensionality, dynamics and measurement", bioRxiv 214262, §2; Recanatesi, Farrell,
  Advani, Moore, Lajoie & Shea-Brown 2019, "Dimensionality compression and expansion in deep neural
  networks", arXiv:1906.00443, §2). For a representation ``x: (n, p)`` the covariance eigenvalues are
  ``σ_k(x_c)² / (n − 1)``, ``x_c`` = column-centred ``x``; the normalisation cancels, so
  ``PR = ‖x_c‖_F⁴ / ‖x_cᵀ x_c‖_F²`` — which is how it is computed (no decomposition, smooth gradients).

Centring: :func:`effective_rank` is a property of the matrix as given (``center=False``, Roy & Vetterli's
definition); :func:`participation_ratio` is a property of the covariance (``center=True``).
``center=False`` there uses the second-moment matrix ``xᵀx / n``, ``center=True`` in ``effective_rank``
the singular values of ``x_c``.

The zero matrix (all-zero spectrum) has both measures equal to 0, its rank; zeros inside a spectrum
contribute nothing and produce no NaN, in values or gradients (the effective rank's one-sided derivative
in a zero entry is +∞; the gradient returned there drops that entry's ``p log p`` term and is finite). A kernel
matrix ``K`` (PSD): pass its eigenvalues,
``spectrum_participation_ratio(jnp.linalg.eigvalsh(K))`` (= ``tr(K)² / ‖K‖_F²``) and
``spectrum_effective_rank(jnp.linalg.eigvalsh(K))`` (entries are taken in absolute value, so a symmetric
matrix's eigenvalues give its singular values, and round-off negatives do no harm).

``center`` is a static Python bool; everything else may be traced (``jit``, ``vmap``, ``grad``).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxlearn._checks import check_bool
from jaxlearn._types import Array, ArrayLike

__all__ = ["effective_rank", "participation_ratio", "spectrum_effective_rank", "spectrum_participation_ratio"]


def _check_array(name: str, a, rank: int, what: str):
    a = jnp.asarray(a)
    if a.ndim != rank:
        raise ValueError(f"{name}: expected a rank-{rank} array {what}, got shape {a.shape}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"{name}: expected a real floating dtype, got {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array {what}, got shape {a.shape}")
    return a


def _check_center(center) -> None:
    check_bool(center, "center", error=ValueError, expected="a Python bool (a static argument)")


def _centered(x, center: bool):
    return x - jnp.mean(x, axis=0) if center else x


def _safe_ratio(numerator, denominator):
    """``numerator / denominator`` where the denominator is positive, else 0 (with finite gradients)."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1), 0)


def spectrum_effective_rank(singular_values: ArrayLike) -> Array:
    """Effective rank ``exp(−Σ p_k log p_k)``, ``p_k = |s_k| / Σ|s_j|`` (Roy & Vetterli 2007, Def. 1–2), of a
    spectrum ``singular_values: (r,)`` (non-negative singular values; entries are taken in absolute value,
    so the eigenvalues of a symmetric matrix may be passed). Zeros contribute ``0 log 0 = 0``; an all-zero
    spectrum gives 0. Returns a 0-d array.

    Examples:
        >>> from jaxlearn import analysis as an
        >>> round(float(an.spectrum_effective_rank([1.0, 1.0, 0.0])), 4)
        2.0
    """
    s = jnp.abs(_check_array("singular_values", singular_values, 1, "(r,) of singular values"))
    total = jnp.sum(s)
    p = _safe_ratio(s, total)
    # the inner where keeps log away from 0, so that the gradient of a zero entry's term is 0, not NaN
    plogp = jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0)
    return jnp.where(total > 0, jnp.exp(-jnp.sum(plogp)), 0)


def spectrum_participation_ratio(eigenvalues: ArrayLike) -> Array:
    """Participation ratio ``(Σ λ_k)² / Σ λ_k²`` of ``eigenvalues: (r,)`` of a covariance or other PSD
    matrix (Gao et al. 2017; Recanatesi et al. 2019). An all-zero spectrum gives 0. Returns a 0-d
    array."""
    lam = _check_array("eigenvalues", eigenvalues, 1, "(r,) of eigenvalues")
    return _safe_ratio(jnp.square(jnp.sum(lam)), jnp.sum(jnp.square(lam)))


def effective_rank(x: ArrayLike, *, center: bool = False) -> Array:
    """Effective rank (Roy & Vetterli 2007) of a matrix ``x: (n, p)`` from its ``min(n, p)`` singular
    values (``jnp.linalg.svd``, ``compute_uv=False``). ``center=True``: of the column-centred ``x``
    (rows = examples), i.e. of the representation's spread about its mean. Invariant to orthogonal
    transforms on either side (``center=False``; right side only with centring) and to scaling. The
    gradient exists where the nonzero singular values are distinct (that of the SVD). Returns a 0-d
    array.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> round(float(an.effective_rank(jnp.eye(4))), 4), round(float(an.effective_rank(jnp.ones((4, 4)))), 4)
        (4.0, 1.0)
    """
    _check_center(center)
    x = _check_array("x", x, 2, "(n, p)")
    return spectrum_effective_rank(jnp.linalg.svd(_centered(x, center), compute_uv=False))


def participation_ratio(x: ArrayLike, *, center: bool = True) -> Array:
    """Participation ratio ``(Σ λ)² / Σ λ²`` of the eigenvalues ``λ`` of the covariance of a
    representation ``x: (n, p)`` (rows = examples; Gao et al. 2017; Recanatesi et al. 2019), computed
    as ``‖x_c‖_F⁴ / ‖x_cᵀx_c‖_F²`` (equal, since ``λ_k ∝ σ_k(x_c)²``). ``center=False``: of the
    uncentred second moment ``xᵀx / n`` instead. Invariant to orthogonal transforms of the features and
    to scaling. Returns a 0-d array.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import analysis as an
        >>> x = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])   # isotropic in 2-D
        >>> round(float(an.participation_ratio(x)), 4)
        2.0
    """
    _check_center(center)
    xc = _centered(_check_array("x", x, 2, "(n examples, p features)"), center)
    n, p = xc.shape
    second = xc.T @ xc if p <= n else xc @ xc.T  # same nonzero eigenvalues; take the smaller
    return _safe_ratio(jnp.square(jnp.sum(jnp.square(xc))), jnp.sum(jnp.square(second)))
