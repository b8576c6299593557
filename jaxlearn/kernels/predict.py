"""Closed-form predictions of infinitely wide networks: linearized MSE training and GP posteriors.

Conventions are those of neural-tangents 0.6.5 ``nt.predict`` (``trace_axes=(-1,)``), so published
numbers carry over. Kernels act on the example axis, identically for every output column:
``k_train_train`` (N, N), ``k_test_train`` (M, N), ``k_test_test`` (M, M); targets ``y_train`` (N,)
or (N, ...); ``n = y_train.size`` counts all target entries. References: Jacot et al. 2018, "Neural
tangent kernel"; Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under
gradient descent"; He, Lakshminarayanan & Teh 2020, "Bayesian deep ensembles via the NTK".

* :func:`gradient_descent_mse` — gradient flow of a linearized network on ``½·mean((f − y)²)``.
* :func:`gp_inference` — t → ∞ Gaussians: NNGP posterior, NTK ensemble, NTK-GP.
* :func:`gradient_descent_mse_ensemble` — mean and covariance of the NTK ensemble at any time t.

Regularisation: kernels that are inverted or drive the dynamics become ``K + diag_reg·trace(K)/N·I``
(``diag_reg_absolute_scale=True``: ``K + diag_reg·I``).

Numerics: dynamics use one ``eigh`` of the regularised kernel; eigenvalues below zero (round-off of
a PSD kernel) are clamped to zero, and ``Θ⁻¹(I − e^{−aΘ})`` has eigenvalues ``(1 − e^{−aλ})/λ``,
via ``expm1``, with the limit ``a`` at λ = 0 (neural-tangents drops λ < 0 and gives NaN at λ = 0;
this only matters in directions a PSD joint kernel maps to zero). t=None solves need the regularised
kernel positive definite: with concrete values a ``ValueError`` names the argument; traced (under
``jit``/``vmap``) the outputs are NaN, unless ``check=True``, which adds a ``checkify.check`` (wrap
the caller in ``jax.experimental.checkify.checkify``). All of it works under jit, vmap and grad.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxlearn._checks import concrete
from jaxlearn._types import ArrayLike, Scalar
from jaxlearn.kernels.analytic import analytic
from jaxlearn.nn.core import Layer

__all__ = ["Gaussian", "gradient_descent_mse", "gp_inference", "gradient_descent_mse_ensemble"]

_KINDS = ("nngp", "ntk")
_HIGHEST = jax.lax.Precision.HIGHEST  # kernels are ill-conditioned: no TF32/bf16 passes


class Gaussian(NamedTuple):
    """``(mean, covariance)``; the covariance (…, M, M) is shared by all output columns."""
    mean: jax.Array
    covariance: jax.Array


# ----------------------------------------------------------------------------- numerics


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HIGHEST)


# φ'(x) = Σ_j (−1)^{j+1} (j+1) x^j / (j+2)!; 15 terms are exact to < 1e-16 for |x| < 0.5.
_SERIES_RADIUS = 0.5
_DPHI_COEFFS = tuple((-1) ** (j + 1) * (j + 1) / math.factorial(j + 2) for j in range(15))


@jax.custom_jvp
def _phi(x):
    """φ(x) = (1 − e^{−x})/x, φ(0) = 1; accurate everywhere thanks to expm1."""
    safe = jnp.where(x == 0, 1, x)
    return jnp.where(x == 0, 1, -jnp.expm1(-safe) / safe)


@_phi.defjvp
def _phi_jvp(primals, tangents):
    # Differentiating the quotient would cancel near 0 (error ~ eps/x²): Taylor series there,
    # (e^{−x} − φ(x))/x (error ~ eps/|x|) elsewhere.
    (x,), (dx,) = primals, tangents
    small = jnp.abs(x) < _SERIES_RADIUS
    safe = jnp.where(small, 1, x)
    series = functools.reduce(lambda acc, c: acc * x + c, _DPHI_COEFFS[::-1], jnp.zeros_like(x))
    return _phi(x), jnp.where(small, series, (jnp.exp(-safe) - _phi(safe)) / safe) * dx


def _gain(a, lam):
    """``(1 − e^{−aλ})/λ`` (= a at λ = 0): the eigenvalues of ``Θ⁻¹(I − e^{−aΘ})``."""
    x = a * lam
    far = x > 1  # there the quotient is well conditioned, and a·φ(aλ) would be inf·0 at t = inf
    return jnp.where(far, -jnp.expm1(-jnp.where(far, x, 1)) / jnp.where(far, lam, 1), a * _phi(x))


def _regularize(k_nn, diag_reg, absolute: bool):
    n = k_nn.shape[0]
    scale = diag_reg if absolute else diag_reg * jnp.trace(k_nn) / n
    return k_nn + jnp.asarray(scale, k_nn.dtype) * jnp.eye(n, dtype=k_nn.dtype)


# Numerical cores are jitted: eager use compiles a few programs instead of one per primitive.
@functools.partial(jax.jit, static_argnames=("absolute", "dtype"))
def _eigh(k_nn, diag_reg, *, absolute, dtype):
    """Eigenvalues (ascending), eigenvectors, and whether the regularised kernel is PD."""
    evals, evecs = jnp.linalg.eigh(_regularize(k_nn.astype(dtype), diag_reg, absolute))
    return evals, evecs, evals[0] > 0


@functools.partial(jax.jit, static_argnames=("absolute", "dtype"))
def _factor(k_nn, y, diag_reg, *, absolute, dtype):
    """Cholesky factor L (all NaN unless PD), whether PD, and ``K_reg⁻¹ y`` as (N, K)."""
    lower = jnp.linalg.cholesky(_regularize(k_nn.astype(dtype), diag_reg, absolute))
    ok = jnp.all(jnp.isfinite(jnp.diagonal(lower)))
    lower = jnp.where(ok, lower, jnp.nan)
    return lower, ok, cho_solve((lower, True), y.astype(dtype).reshape(y.shape[0], -1))


@jax.jit
def _gd_outputs(evals, evecs, y, fx_train_0, fx_test_0, k_mn, t, scale):
    """Train and test outputs at times t (None: t → ∞), ``scale = η/n``; test None without k_mn."""
    n, dtype, a = y.shape[0], evals.dtype, None if t is None else t * scale
    y_nk = y.astype(dtype).reshape(n, -1)
    f0_nk = fx_train_0.reshape(n, -1)
    rot_nk = _mm(evecs.T, y_nk - f0_nk)  # y − f_x(0) in the eigenbasis
    if a is None:
        fx_train, t_shape = y.astype(dtype), ()
        coeff_nk = jnp.where(evals[0] > 0, 1 / evals, jnp.nan)[:, None] * rot_nk  # NaN if not PD
    else:
        t_shape, a = a.shape, a[..., None]
        lam = jnp.maximum(evals, 0)  # negative eigenvalues are round-off of a PSD kernel
        # f0 + (e^{−aΘ} − I)(f0 − y): expm1 keeps small-t updates accurate.
        fx_train = (f0_nk - _mm(evecs, jnp.expm1(-a * lam)[..., :, None] * rot_nk)).reshape(t_shape + y.shape)
        coeff_nk = _gain(a, lam)[..., :, None] * rot_nk
    if k_mn is None:
        return fx_train, None
    test_shape = (k_mn.shape[0],) + y.shape[1:]
    dfx_test = _mm(_mm(k_mn.astype(dtype), evecs), coeff_nk).reshape(t_shape + test_shape)
    return fx_train, fx_test_0 + dfx_test


@functools.partial(jax.jit, static_argnames=("kind", "tail"))
def _gp_moments(factor, k_mn, k_mm, nngp_nn, nngp_mn, *, kind, tail):
    """Posterior mean (M,) + tail and, with k_mm, the covariance; k_* are the kernels of ``kind``."""
    lower, _, alpha_nk = factor
    k_mn = k_mn.astype(lower.dtype)
    mean = _mm(k_mn, alpha_nk).reshape(k_mn.shape[:1] + tail)
    if k_mm is None:
        return mean
    if kind == "ntk":  # K_** + Θ_*x Θ⁻¹ K Θ⁻¹ Θ_x* − (Θ_*x Θ⁻¹ K_x* + h.c.)
        proj_nm = cho_solve((lower, True), k_mn.T)  # Θ⁻¹ Θ_x*
        cross_mm = _mm(proj_nm.T, nngp_mn.astype(lower.dtype).T)
        middle_mm = _mm(proj_nm.T, _mm(nngp_nn.astype(lower.dtype), proj_nm))
        cov = k_mm.astype(lower.dtype) + middle_mm - cross_mm - cross_mm.T
    else:  # K_** − K_*x K⁻¹ K_x* = K_** − WᵀW with W = L⁻¹ K_x*
        white_nm = solve_triangular(lower, k_mn.T, lower=True)
        cov = k_mm.astype(lower.dtype) - _mm(white_nm.T, white_nm)
    return Gaussian(mean, (cov + cov.T) / 2)


@functools.partial(jax.jit, static_argnames=("kind", "compute_cov"))
def _ensemble_moments(evals, evecs, t, scale, y, g_mn, nngp_nn, nngp_mn, nngp_mm, *, kind, compute_cov):
    """Ensemble mean/covariance at times t, ``scale = η/n``; g_mn None: on the train set."""
    dtype, t_shape, a = evals.dtype, t.shape, (t * scale)[..., None]
    lam = jnp.maximum(evals, 0)
    rot_nk = _mm(evecs.T, y.astype(dtype).reshape(y.shape[0], -1))
    if g_mn is None:  # Θ_*x = Θ_reg: multiply T's eigenvalues by λ exactly, no cancellation
        m, mean = y.shape[0], _mm(evecs, -jnp.expm1(-a * lam)[..., :, None] * rot_nk)
    else:
        kv_mn = _mm(g_mn.astype(dtype), evecs)
        m, mean = g_mn.shape[0], _mm(kv_mn, _gain(a, lam)[..., :, None] * rot_nk)
    mean = mean.reshape(t_shape + (m,) + y.shape[1:])
    if not compute_cov:
        return mean
    nngp_nn = nngp_nn.astype(dtype)
    if g_mn is None and kind == "nngp":  # K_reg e^{−2aK_reg}
        cov = _mm(evecs * (lam * jnp.exp(-2 * a * lam))[..., None, :], evecs.T)
    elif g_mn is None:  # e^{−aΘ} K e^{−aΘ}
        decay_nn = _mm(evecs * jnp.exp(-a * lam)[..., None, :], evecs.T)
        cov = _mm(decay_nn, _mm(nngp_nn, decay_nn))
    elif kind == "nngp":  # K_** − K_*x K⁻¹(I − e^{−2aK}) K_x*
        cov = nngp_mm.astype(dtype) - _mm(kv_mn * _gain(2 * a, lam)[..., None, :], kv_mn.T)
    else:  # K_** + Θ_*x T K Tᵀ Θ_x* − (Θ_*x T K_x* + h.c.)
        b_mn = _mm(kv_mn * _gain(a, lam)[..., None, :], evecs.T)  # Θ_*x T
        cross_mm = _mm(b_mn, nngp_mn.astype(dtype).T)
        cov = nngp_mm.astype(dtype) + _mm(b_mn, _mm(nngp_nn, b_mn.mT)) - cross_mm - cross_mm.mT
    return Gaussian(mean, (cov + cov.mT) / 2)


# ----------------------------------------------------------------------------- checks


def _check_nonnegative(value, name: str) -> None:
    known = concrete(value)
    if known is not None and not np.all(known >= 0):
        got = known.item() if known.ndim == 0 else f"an array of shape {known.shape} with negative entries"
        raise ValueError(f"{name}: expected a non-negative number, got {got}")


def _require_pd(ok, name: str, check: bool) -> None:
    """Eager error when ``ok`` is concretely False; a checkify check when traced and ``check``."""
    msg = f"{name}: expected a positive-definite kernel (after diag_reg) for the solve; increase diag_reg"
    known = concrete(ok)
    if known is not None and not known:
        raise ValueError(msg)
    if known is None and check:
        checkify.check(ok, msg)


def _shape(k, name: str, rows: int | None, cols: int | None):
    """``k`` as an array after checking it is 2-D with the given sizes (None: any; rows=-1: square)."""
    shape = jnp.shape(k)
    ok = len(shape) == 2 and (rows is None or shape[0] == (shape[1] if rows == -1 else rows)) and (
        cols is None or shape[1] == cols)
    if not ok:
        want = "a square (N, N) array" if rows == -1 else f"shape ({'M' if rows is None else rows}, {cols})"
        raise ValueError(f"{name}: expected {want}, got shape {shape}")
    return jnp.asarray(k)


def _targets(y_train, n_train: int):
    y = jnp.asarray(y_train)
    if y.ndim < 1 or y.shape[0] != n_train:
        raise ValueError(f"y_train: expected a leading axis of size {n_train} (the number of train points), "
                         f"got shape {y.shape}")
    return y


def _float_dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _broadcast(value, shape: tuple, dtype, name: str):
    """``value`` broadcast to ``shape`` (done here, so the jitted cores see one signature)."""
    try:
        ok = np.broadcast_shapes(jnp.shape(value), shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a scalar or an array broadcastable to {shape}, "
                         f"got shape {jnp.shape(value)}")
    return jnp.broadcast_to(jnp.asarray(value, dtype), shape)


def _canonical_get(get, allowed: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    kinds = (get,) if isinstance(get, str) else tuple(get) if isinstance(get, (tuple, list)) else ()
    if not kinds or len(set(kinds)) != len(kinds) or any(g not in allowed for g in kinds):
        raise ValueError(f"get: expected one of {allowed} or a tuple of distinct ones, got {get!r}")
    return kinds, isinstance(get, str)


@functools.lru_cache(maxsize=None)
def _predictions_type(kinds: tuple[str, ...]):
    return collections.namedtuple("Predictions", kinds)


def _pack(out: dict, kinds: tuple[str, ...], single: bool):
    return out[kinds[0]] if single else _predictions_type(kinds)(**out)


def _is_plain(kernel) -> bool:
    return isinstance(kernel, (np.ndarray, jax.Array))


def _part(kernel, kind: str, name: str):
    """``kernel.<kind>``; a plain array stands for whichever kind is asked for."""
    value = kernel if _is_plain(kernel) else getattr(kernel, kind, None)
    if value is None:
        raise ValueError(f"{name}: expected an object with a .{kind} array (or a plain array when get needs "
                         f"a single kernel kind), got {type(kernel).__name__}")
    return value


# ----------------------------------------------------------------------------- public API


def gradient_descent_mse(k_train_train: ArrayLike, y_train: ArrayLike, learning_rate: Scalar = 1.0,
                         diag_reg: Scalar = 0.0,
                         diag_reg_absolute_scale: bool = False, *, check: bool = False) -> Callable:
    """Outputs of a linearized network trained by gradient flow on MSE, in closed form.

    With ``a = η·t/n``, ``n = y_train.size`` and Θ the regularised ``k_train_train`` (Lee et al.
    2019 §2.2): ``f_train(t) = y + e^{−aΘ}(f_train(0) − y)`` and ``f_test(t) = f_test(0) + Θ_*x Θ⁻¹
    (I − e^{−aΘ})(y − f_train(0))``; ``t`` counts steps of size ``learning_rate`` of gradient
    descent on ``½·mean((f − y)²)`` (continuous-time limit). Θ is eigendecomposed once, here.

    Args:
      k_train_train: (N, N) NTK (or any PSD kernel) of the training inputs.
      y_train: (N,) or (N, ...) targets.
      learning_rate, diag_reg: non-negative scalars; may be traced (e.g. ``vmap`` over them).
      diag_reg_absolute_scale: regularise with ``diag_reg·I`` instead of ``diag_reg·trace(Θ)/N·I``.
      check: report a non-positive-definite Θ in a traced t=None solve with ``checkify.check``.

    Returns:
      ``predict(t=None, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None)`` returning the tuple
      ``(fx_train_t, fx_test_t)``, shapes ``t.shape + y_train.shape`` and ``t.shape + (M,) +
      y_train.shape[1:]``; ``fx_test_t`` is None when ``k_test_train`` (M, N) is (``fx_test_0`` is
      then ignored). ``fx_*_0`` broadcast to the unbatched output shapes; ``t`` is a scalar or an
      array of any shape. ``t=None`` means t → ∞: ``fx_train_t`` is exactly ``y_train`` (as in
      neural-tangents, even when ``diag_reg > 0`` keeps the regularised flow from interpolating)
      and ``fx_test_t = f_test(0) + Θ_*x Θ⁻¹ (y − f_train(0))``, for which Θ must be PD.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import kernels
        >>> predict = kernels.gradient_descent_mse(jnp.eye(2), jnp.array([1.0, -1.0]), learning_rate=1.0)
        >>> f_train, _ = predict(t=jnp.array([0.0, 2.0]))          # a = η·t/n: e^{-1} of the residual left at t=2
        >>> [round(float(v), 3) for v in f_train[1]], f_train[0].tolist()
        ([0.632, -0.632], [0.0, 0.0])
    """
    k_nn = _shape(k_train_train, "k_train_train", -1, None)
    n_train = k_nn.shape[0]
    y = _targets(y_train, n_train)
    _check_nonnegative(learning_rate, "learning_rate")
    _check_nonnegative(diag_reg, "diag_reg")
    dtype = _float_dtype(k_nn, y)
    evals, evecs, is_pd = _eigh(k_nn, diag_reg, absolute=bool(diag_reg_absolute_scale), dtype=dtype)
    scale = learning_rate / y.size

    def predict(t=None, fx_train_0=0.0, fx_test_0=0.0, k_test_train=None):
        fx_train_0 = _broadcast(fx_train_0, y.shape, dtype, "fx_train_0")
        if k_test_train is None:
            fx_test_0 = None
        else:
            k_test_train = _shape(k_test_train, "k_test_train", None, n_train)
            fx_test_0 = _broadcast(fx_test_0, k_test_train.shape[:1] + y.shape[1:], dtype, "fx_test_0")
        if t is None:
            _require_pd(is_pd, "k_train_train", check)
        else:
            t = jnp.asarray(t, dtype)
        return _gd_outputs(evals, evecs, y, fx_train_0, fx_test_0, k_test_train, t, scale)

    return predict


# k_train_train: an object with .nngp and/or .ntk arrays (a Kernel, neural-tangents' Kernel, ...) or an array
def gp_inference(k_train_train: Any, y_train: ArrayLike, diag_reg: Scalar = 0.0,
                 diag_reg_absolute_scale: bool = False, *,
                 check: bool = False) -> Callable:
    """t → ∞ predictive Gaussians of infinitely wide networks: NNGP, NTK ensemble, NTK-GP.

    With K the NNGP and Θ the NTK (kernels that are inverted are regularised; as in neural-tangents
    the K between the two solves of "ntk" is not)::

        "nngp":  mean K_*x K⁻¹ y,  cov K_** − K_*x K⁻¹ K_x*                (Bayesian posterior)
        "ntk":   mean Θ_*x Θ⁻¹ y,  cov K_** + Θ_*x Θ⁻¹ K Θ⁻¹ Θ_x* − (Θ_*x Θ⁻¹ K_x* + h.c.)
        "ntkgp": mean Θ_*x Θ⁻¹ y,  cov Θ_** − Θ_*x Θ⁻¹ Θ_x*                (He et al. 2020)

    Args:
      k_train_train: an object with ``.nngp`` and/or ``.ntk`` (N, N) arrays (e.g. a NamedTuple
        ``Kernel(nngp, ntk)``), or a plain array, which then stands for whichever single kind a
        request needs ("nngp", "ntkgp", or "ntk" without covariance). Each kernel present is
        Cholesky-factorised once, here.
      y_train, diag_reg, diag_reg_absolute_scale, check: as in :func:`gradient_descent_mse`.

    Returns:
      ``predict(get, k_test_train, k_test_test=None)`` with kernels like ``k_train_train`` of
      shapes (M, N) and (M, M). Per kind the mean (M,) + y_train.shape[1:], or ``Gaussian(mean,
      covariance)`` when ``k_test_test`` is given. ``get`` is a kind (returns its value) or a tuple
      of distinct kinds (returns a namedtuple ``Predictions`` with those fields, in that order, so
      it unpacks like the result of neural-tangents).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import kernels
        >>> k = jnp.array([[1.0, 0.5], [0.5, 1.0]])
        >>> predict = kernels.gp_inference(k, jnp.array([1.0, 1.0]))
        >>> predict("nngp", k).round(4).tolist()                   # the posterior mean at the training points
        [1.0, 1.0]
    """
    names = ("k_train_train", "k_test_train", "k_test_test")
    return _gp_inference(k_train_train, y_train, diag_reg, diag_reg_absolute_scale, check, names)[0]


def _gp_inference(k_train_train, y_train, diag_reg, absolute, check, names):
    """``(predict, train kernels, targets, dtype)``; ``names`` of the three kernel arguments."""
    name, td_name, tt_name = names
    plain = _is_plain(k_train_train)
    present = ("ntk",) if plain else tuple(g for g in _KINDS if getattr(k_train_train, g, None) is not None)
    if not present:
        raise ValueError(f"{name}: expected an (N, N) array or an object with .nngp and/or .ntk arrays, "
                         f"got {type(k_train_train).__name__}")
    label = {g: name if plain else f"{name}.{g}" for g in _KINDS}
    n_train = _shape(_part(k_train_train, present[0], name), label[present[0]], -1, None).shape[0]
    train = {g: _shape(_part(k_train_train, g, name), label[g], n_train, n_train) for g in present}
    y = _targets(y_train, n_train)
    _check_nonnegative(diag_reg, "diag_reg")
    dtype = _float_dtype(y, *train.values())
    factors = {g: _factor(k, y, diag_reg, absolute=bool(absolute), dtype=dtype) for g, k in train.items()}
    if plain:  # one factorisation serves either kind
        train["nngp"], factors["nngp"] = train["ntk"], factors["ntk"]

    def predict(get, k_test_train, k_test_test=None):
        kinds, single = _canonical_get(get, ("nngp", "ntk", "ntkgp"))
        compute_cov = k_test_test is not None
        needed = {"nngp" if g == "nngp" else "ntk" for g in kinds}
        needed |= {"nngp"} if compute_cov and "ntk" in kinds else set()
        for arg, arg_name in ((k_train_train, name), (k_test_train, td_name), (k_test_test, tt_name)):
            if len(needed) > 1 and _is_plain(arg):
                raise ValueError(f"{arg_name}: a plain array is ambiguous when get={get!r} needs both nngp and "
                                 f"ntk kernels; pass an object with .nngp and .ntk")
        for kind in needed - set(train):
            _part(k_train_train, kind, name)  # raises: that train kernel is missing
        out = {}
        for g in kinds:
            solve_kind, prior = ("nngp" if g == "nngp" else "ntk"), ("ntk" if g == "ntkgp" else "nngp")
            _require_pd(factors[solve_kind][1], label[solve_kind], check)
            k_mn = _shape(_part(k_test_train, solve_kind, td_name), td_name, None, n_train)
            m = k_mn.shape[0]
            k_mm = nngp_mn = None
            if compute_cov:
                k_mm = _shape(_part(k_test_test, prior, tt_name), tt_name, m, m)
                if g == "ntk":
                    nngp_mn = _shape(_part(k_test_train, "nngp", td_name), td_name, m, n_train)
            nngp_nn = None if nngp_mn is None else train["nngp"]
            out[g] = _gp_moments(factors[solve_kind], k_mn, k_mm, nngp_nn, nngp_mn, kind=g, tail=y.shape[1:])
        return _pack(out, kinds, single)

    return predict, train, y, dtype


def gradient_descent_mse_ensemble(kernel_fn: Layer | Callable[[Any, Any], Any], x_train: ArrayLike,
                                  y_train: ArrayLike, learning_rate: Scalar = 1.0,
                                  diag_reg: Scalar = 0.0, diag_reg_absolute_scale: bool = False, *,
                                  check: bool = False) -> Callable:
    """Mean and covariance of an infinite ensemble of infinitely wide networks trained by GD on MSE.

    Over initialisations the network is a GP with NNGP kernel K and trains linearly with the NTK Θ
    (Lee et al. 2019 eqs. 14–15). With ``a = η·t/n`` and ``T(t) = Θ⁻¹(I − e^{−aΘ})``::

        mean(t) = Θ_*x T y,    cov(t) = K_** + Θ_*x T K T Θ_x* − (Θ_*x T K_x* + K_*x T Θ_x*)

    ``get="nngp"`` trains only the readout: K replaces Θ everywhere, and ``cov(t) = K_** − K_*x
    K⁻¹(I − e^{−2aK}) K_x*``. ``t=None`` (t → ∞) is :func:`gp_inference`.

    Args:
      kernel_fn: a :class:`jaxlearn.nn.Layer` model (its :func:`~jaxlearn.kernels.analytic` kernels)
        or ``kernel_fn(x1, x2)`` returning an object with ``.nngp`` and ``.ntk`` arrays of
        shape (N1, N2), ``x2=None`` meaning ``x1``. Called here on ``x_train`` (both kernels are
        then eigendecomposed and Cholesky-factorised) and per prediction on ``x_test``.
      x_train, y_train: training inputs and (N,) or (N, ...) targets.
      learning_rate, diag_reg, diag_reg_absolute_scale, check: as in :func:`gradient_descent_mse`.

    Returns:
      ``predict(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False)``: per kind the mean
      ``t.shape + (M,) + y_train.shape[1:]``, or ``Gaussian(mean, covariance)`` with covariance
      ``t.shape + (M, M)`` when ``compute_cov``; tuples ``get`` as in :func:`gp_inference`.
      ``x_test=None`` predicts the train outputs (as neural-tangents: the regularised train kernels
      stand in for the test ones, except the K inside the "ntk" covariance); at t=None their mean
      is exactly ``y_train`` and their covariance zero.
    """
    if isinstance(kernel_fn, Layer):  # a jaxlearn.nn model: its analytic kernels
        kernel_fn = functools.partial(analytic, kernel_fn)
    name, td_name, tt_name = "kernel_fn(x_train, None)", "kernel_fn(x_test, x_train)", "kernel_fn(x_test, None)"
    k_dd = kernel_fn(x_train, None)
    if _is_plain(k_dd):
        raise ValueError(f"{name}: expected an object with .nngp and .ntk arrays, got a plain array")
    absolute = bool(diag_reg_absolute_scale)
    gp, train, y, dtype = _gp_inference(k_dd, y_train, diag_reg, absolute, check, (name, td_name, tt_name))
    _check_nonnegative(learning_rate, "learning_rate")
    n_train = y.shape[0]
    eigens = {g: _eigh(k, diag_reg, absolute=absolute, dtype=dtype)[:2] for g, k in train.items()}
    scale = learning_rate / y.size

    def predict(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False):
        kinds, single = _canonical_get(get, _KINDS)
        for kind in (set(kinds) | ({"nngp"} if compute_cov else set())) - set(train):
            _part(k_dd, kind, name)  # raises: kernel_fn did not return that kind
        if x_test is None and t is None:  # the train outputs have converged to y_train exactly
            mean = y.astype(dtype)
            cov = jnp.zeros((n_train, n_train), dtype)
            return _pack({g: Gaussian(mean, cov) if compute_cov else mean for g in kinds}, kinds, single)
        k_td = k_tt = None
        if x_test is not None:
            k_td, k_tt = kernel_fn(x_test, x_train), kernel_fn(x_test, None) if compute_cov else None
            if t is None:
                return gp(get, k_td, k_tt)
        out = {}
        for g in kinds:
            g_mn = nngp_mn = nngp_mm = None
            if k_td is not None:
                g_mn = _shape(_part(k_td, g, td_name), td_name, None, n_train)
                if compute_cov:
                    m = g_mn.shape[0]
                    nngp_mn = _shape(_part(k_td, "nngp", td_name), td_name, m, n_train)
                    nngp_mm = _shape(_part(k_tt, "nngp", tt_name), tt_name, m, m)
            out[g] = _ensemble_moments(*eigens[g], jnp.asarray(t, dtype), scale, y, g_mn,
                                       train["nngp"] if compute_cov else None, nngp_mn, nngp_mm,
                                       kind=g, compute_cov=bool(compute_cov))
        return _pack(out, kinds, single)

    return predict
