"""Curvature spectra without forming the matrix: extreme eigenpairs, the trace, and the density.

All routines see the curvature ``M`` (Hessian or Gauss–Newton, optionally restricted to a
parameter block; see :mod:`jaxlearn.landscape.curvature`) only through ``v ↦ M v`` and work in
the flat parameter space of dimension ``P`` (``jax.flatten_util.ravel_pytree`` order, the
params' dtype). The flat inner product is the one used for norms and orthogonality.

* :func:`lanczos` — ``m`` Lanczos steps with full reorthogonalization (Paige 1972; Parlett,
  "The Symmetric Eigenvalue Problem", ch. 13), giving ``Q_mᵀ M Q_m = T_m`` tridiagonal.
* :func:`top_eigenvalues` — the ``k`` extreme Ritz values of ``T_m`` (Lanczos) or deflated power
  iteration (largest *magnitude*).
* :func:`hessian_trace` — Hutchinson's estimator ``tr M = E[zᵀ M z]``, ``z`` Rademacher
  (Hutchinson 1989).
* :func:`spectral_density` / :func:`smooth_density` — stochastic Lanczos quadrature (Golub &
  Meurant 1994, "Matrices, moments and quadrature"; Ghorbani, Krishnan & Xiao 2019, "An
  investigation into neural net optimization via Hessian eigenvalue density", §2–3).

Every iteration runs in ``lax.fori_loop``/``lax.map``, so the public functions compose with
``jax.jit`` (``loss``, ``k``, ``num_steps``, ``method``, ``which``, ``kind`` static, e.g. by closure)
and ``jax.vmap`` over params (checkpoints), keys or probes. ``key=None`` means
``jax.random.key(0)``: results are deterministic unless a key is passed.
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlearn._checks import check_int, is_int, is_traced
from jaxlearn._compile import jit_when_eager
from jaxlearn._types import Array, ArrayLike, PyTree, Scalar
from jaxlearn.landscape import curvature
from jaxlearn.landscape.objective import Loss, ModelObjective, as_loss_fn
from jaxlearn.train.pytrees import check_like

__all__ = ["top_eigenvalues", "hessian_trace", "spectral_density", "smooth_density", "lanczos",
           "power_iteration"]


_DGKS = 1 / np.sqrt(2)


def lanczos(matvec: Callable[[Array], Array], v0: ArrayLike, num_steps: int, *,
            tol: float | None = None) -> tuple[Array, Array, Array]:
    """``num_steps = m`` Lanczos steps on a symmetric operator of flat vectors, from ``v0``.

    ``matvec: (P,) -> (P,)``; ``v0``: ``(P,)``, normalised here. Returns ``alphas (m,)`` (diagonal of
    ``T_m``), ``betas (m-1,)`` (off-diagonal) and ``basis (m, P)`` (orthonormal rows
    ``q_0 = v0/‖v0‖, q_1, …``) with ``basis @ M @ basis.T = T_m``. Each new vector is
    reorthogonalized against *all* previous ones (classical Gram–Schmidt), a second time when the
    first pass removed more than half of its squared norm (Daniel, Gragg, Kaufman & Stewart 1976;
    "twice is enough": Giraud, Langou & Rozložník 2005), so the basis stays orthonormal to
    rounding, no spurious copies of converged Ritz values appear, and ``m = P`` steps without
    breakdown give the whole spectrum.

    Breakdown: when ``β_j ≤ tol · max_i ‖M q_i‖`` (default ``tol = 100·eps`` of the dtype) the
    Krylov space is invariant and is not extended: ``β_j`` and all later betas are exactly 0 and
    the later rows of ``basis`` and ``alphas`` are 0. ``T_m`` is then block diagonal, its leading
    block holding the information and a trailing zero block (Ritz values 0 with zero first
    components); shapes stay static and everything stays finite.
    """
    v0 = jnp.asarray(v0)
    if v0.ndim != 1:
        raise ValueError(f"v0: expected a flat vector of shape (P,), got shape {v0.shape}")
    size = v0.shape[0]
    if not 1 <= num_steps <= size:
        raise ValueError(f"num_steps: expected an int in [1, P={size}], got {num_steps}")
    dtype = v0.dtype
    tol = 100 * jnp.finfo(dtype).eps if tol is None else tol
    norm = jnp.linalg.norm(v0)  # v0 = 0 is an immediate breakdown: all zeros
    basis = jnp.zeros((num_steps, size), dtype).at[0].set(v0 / jnp.where(norm > 0, norm, 1.0))
    alphas, betas = jnp.zeros(num_steps, dtype), jnp.zeros(max(num_steps - 1, 0), dtype)

    def step(j, carry):
        basis, alphas, betas, beta_prev, scale = carry
        q, q_prev = basis[j], basis[jnp.maximum(j - 1, 0)]
        w = matvec(q)
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        alpha = jnp.vdot(q, w)
        w = w - alpha * q - beta_prev * q_prev
        # Rows after j are still zero, so this is against q_0..q_j only. A second pass only when
        # the first removed most of w (DGKS criterion, ‖w'‖ < ‖w‖/√2), where one pass can leave
        # a rounding-sized component along the basis amplified.
        before = jnp.linalg.norm(w)
        w = w - basis.T @ (basis @ w)
        w = jax.lax.cond(jnp.linalg.norm(w) < _DGKS * before, lambda w: w - basis.T @ (basis @ w), lambda w: w, w)
        beta = jnp.linalg.norm(w)
        alive = beta > tol * scale
        beta = jnp.where(alive, beta, 0.0)
        q_next = jnp.where(alive, w / jnp.where(alive, beta, 1.0), 0.0)
        return (basis.at[j + 1].set(q_next, mode="drop"), alphas.at[j].set(alpha),
                betas.at[j].set(beta, mode="drop"), beta, scale)

    init = (basis, alphas, betas, jnp.zeros((), dtype), jnp.zeros((), dtype))
    basis, alphas, betas, _, _ = jax.lax.fori_loop(0, num_steps, step, init)
    return alphas, betas, basis


def _tridiagonal(alphas, betas):
    return jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)


def power_iteration(matvec: Callable[[Array], Array], v0: ArrayLike, num_iters: int, k: int = 1) -> tuple[Array, Array]:
    """The ``k`` eigenpairs of largest *magnitude* by power iteration with deflation.

    ``matvec: (P,) -> (P,)``, ``v0: (P,)``. Eigenvector ``i`` is iterated ``num_iters`` times on
    ``(I − U Uᵀ) M (I − U Uᵀ)`` with ``U`` the ``i`` vectors already found (orthogonalising each
    iterate against them, twice), starting from ``v0`` projected off ``U``. Returns ``values (k,)``
    (Rayleigh quotients ``uᵀ M u``, in the order found: decreasing magnitude) and unit
    ``vectors (k, P)``. Convergence is linear in ``|λ_{i+1}/λ_i|``: it needs a gap in magnitude,
    and fails for a ``±λ`` pair.
    """
    v0 = jnp.asarray(v0)
    size = v0.shape[0]
    if not 1 <= k <= size:
        raise ValueError(f"k: expected an int in [1, P={size}], got {k}")
    if num_iters < 1:
        raise ValueError(f"num_iters: expected a positive int, got {num_iters}")

    def normalise(v):
        norm = jnp.linalg.norm(v)
        return jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1.0), v)

    def deflate(found, v):
        for _ in range(2):
            v = v - found.T @ (found @ v)
        return v

    def one(i, carry):
        values, found = carry
        v = jax.lax.fori_loop(0, num_iters, lambda _, v: normalise(deflate(found, matvec(v))),
                              normalise(deflate(found, v0)))
        return values.at[i].set(jnp.vdot(v, matvec(v))), found.at[i].set(v)

    init = (jnp.zeros(k, v0.dtype), jnp.zeros((k, size), v0.dtype))
    return jax.lax.fori_loop(0, k, one, init)


def _block_size(params, block) -> int | None:
    """Number of coordinates in ``block`` (all of ``params`` for None); None when ``block`` is traced."""
    if block is None:
        return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
    if is_traced(block):
        return None
    counts = jax.tree.map(lambda leaf, keep: int(np.broadcast_to(np.asarray(keep), np.shape(leaf)).sum()),
                          params, block)
    return sum(jax.tree.leaves(counts))


def _flat_operator(loss, params, kind, block):
    flat, unravel = ravel_pytree(params)
    op = curvature.operator(loss, params, kind=kind, block=block)
    return flat, unravel, lambda v: ravel_pytree(op(unravel(v)))[0].astype(flat.dtype)


def _project_flat(v, unravel, block):
    return v if block is None else ravel_pytree(curvature.restrict(unravel(v), block))[0]


def _key(key):
    return jax.random.key(0) if key is None else key


def top_eigenvalues(loss: Loss, params: PyTree, k: int = 5, *, method: Literal["lanczos", "power"] = "lanczos",
                    num_iters: int | None = None, key: jax.Array | None = None,
                    which: Literal["largest", "smallest", "both"] = "largest",
                    kind: Literal["hessian", "ggn"] = "hessian", block: PyTree | None = None,
                    return_vectors: bool = False, tol: float | None = None,
                    ) -> Array | tuple[Array, PyTree] | tuple[Array | tuple[Array, PyTree], ...]:
    """The ``k`` extreme eigenvalues of the Hessian (``kind="hessian"``) or Gauss–Newton matrix
    (``kind="ggn"``, a ModelObjective) of ``loss`` at ``params``, optionally on ``block``.

    ``method="lanczos"`` (default): ``m = num_iters`` Lanczos steps (default ``min(max(4k, 64), P)``,
    ``P`` the block size) with full reorthogonalization from a random unit start vector (Gaussian
    from ``key``, projected onto the block); the ``k`` largest (``which="largest"``) or smallest
    (``"smallest"``) Ritz values of ``T_m``, or both ends from the same Krylov space
    (``"both"``: one run for the two ends, e.g. for the ratio ``|λ_min/λ_max|`` of Li et al.
    2018, §6). Extreme Ritz values converge first; with ``m = P``
    they are the eigenvalues (up to rounding). A single start vector sees each *distinct*
    eigenvalue once, so multiplicities (e.g. the GGN's many zeros) are not resolved, and when the
    Krylov space is invariant with dimension ``d < k`` (fewer than ``k`` distinct eigenvalues
    reachable) entries ``d…k−1`` are NaN. ``tol``: the relative breakdown threshold of
    :func:`lanczos`; the zero block of ``T_m`` after a breakdown never contributes Ritz values.

    ``method="power"``: deflated :func:`power_iteration`, ``num_iters`` (default 100) per
    eigenvalue. It finds the ``k`` largest in *magnitude*, so ``which="smallest"`` raises; ``tol``
    is unused.

    Returns ``values (k,)``, sorted decreasing (``"largest"``) or increasing (``"smallest"``); with
    ``return_vectors``, ``(values, vectors)`` where ``vectors`` is a pytree like ``params`` with a
    leading ``k`` axis, unit norm in the flat inner product (sign arbitrary). ``which="both"``
    returns the pair ``(smallest, largest)`` of those results (each as ``"smallest"`` and
    ``"largest"`` return them), from one set of ``m`` operator products.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> loss = lambda p: 0.5 * (3 * p[0] ** 2 + p[1] ** 2 - 2 * p[2] ** 2)   # H = diag(3, 1, -2)
        >>> ls.top_eigenvalues(loss, jnp.zeros(3), k=2).round(4).tolist()
        [3.0, 1.0]
        >>> ls.top_eigenvalues(loss, jnp.zeros(3), k=1, which="smallest").round(4).tolist()
        [-2.0]
    """
    if method not in ("lanczos", "power"):
        raise ValueError(f"method: expected 'lanczos' or 'power', got {method!r}")
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which: expected 'largest', 'smallest' or 'both', got {which!r}")
    if method == "power" and which != "largest":
        raise ValueError(f"which: power iteration finds the largest-magnitude eigenvalues; use method='lanczos' "
                         f"for which={which!r}")
    curvature.check_kind(kind)
    size = _block_size(params, None)  # the flat dimension P
    dim = _block_size(params, block)
    dim = size if dim is None else dim
    if not (is_int(k) and 1 <= k <= dim):
        raise ValueError(f"k: expected an int in [1, {dim}] (the number of {'block ' if block is not None else ''}"
                         f"parameters), got {k!r}")
    if method == "power":
        num_iters = 100 if num_iters is None else num_iters
    else:
        num_iters = min(max(4 * k, 64), dim) if num_iters is None else num_iters
        if not k <= num_iters <= size:
            raise ValueError(f"num_iters: expected an int in [k={k}, P={size}], got {num_iters}")
    return jit_when_eager(_top_eigenvalues, loss, params, k, method, num_iters, key, which, kind, block,
                          return_vectors, tol)


def _top_eigenvalues(loss, params, k, method, num_iters, key, which, kind, block, return_vectors, tol):
    """:func:`top_eigenvalues` after its checks; one compiled program when called eagerly
    (``jaxlearn._compile``: the README's Lanczos call took 61 compilations without it)."""
    flat, unravel, matvec = _flat_operator(loss, params, kind, block)
    v0 = _project_flat(jax.random.normal(_key(key), (flat.shape[0],), flat.dtype), unravel, block)
    if method == "power":
        values, vectors = power_iteration(matvec, v0, num_iters, k)
        order = jnp.argsort(-values)
        return _eigen_result(values[order], vectors[order], unravel, return_vectors)
    alphas, betas, basis = lanczos(matvec, v0, num_iters, tol=tol)
    wanted = ("smallest", "largest") if which == "both" else (which,)
    ends = [_eigen_result(*_ritz_end(alphas, betas, basis, k, end), unravel, return_vectors) for end in wanted]
    return tuple(ends) if which == "both" else ends[0]


def _ritz_end(alphas, betas, basis, k: int, which: str):
    """The ``k`` Ritz pairs of ``T_m`` at one end of the spectrum (``basis``-expanded vectors)."""
    m, dtype = alphas.shape[0], alphas.dtype
    # After a breakdown the trailing block of T_m is zero; move its (spurious) Ritz values
    # beyond the Gershgorin bound of the live block so they are never among the k extremes.
    live = jnp.concatenate([jnp.ones(1, bool), jnp.cumprod(betas > 0).astype(bool)])
    off = jnp.abs(jnp.concatenate([betas, jnp.zeros(1, dtype)]))
    off = off + jnp.abs(jnp.concatenate([jnp.zeros(1, dtype), betas]))
    sign = -1.0 if which == "largest" else 1.0
    bound = jnp.max(jnp.where(live, sign * alphas + off, -jnp.inf))
    alphas = jnp.where(live, alphas, sign * (bound + 1.0))
    ritz_values, ritz_vectors = jnp.linalg.eigh(_tridiagonal(alphas, betas))
    order = jnp.arange(m - 1, m - 1 - k, -1) if which == "largest" else jnp.arange(k)
    found = jnp.arange(k) < jnp.sum(live)  # False beyond the dimension of an invariant Krylov space
    values = jnp.where(found, ritz_values[order], jnp.nan)
    return values, jnp.where(found[:, None], (basis.T @ ritz_vectors[:, order]).T, jnp.nan)


def _eigen_result(values, vectors, unravel, return_vectors: bool):
    if not return_vectors:
        return values
    vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    return values, jax.vmap(unravel)(vectors)


def _map_over_probes(fn, probes, params, num_probes, key, dtype, size, distribution="rademacher"):
    """``lax.map`` of ``fn: (P,) -> out`` over the user's probes (a pytree like params with a
    leading axis) or over ``num_probes`` draws from ``key``, each drawn inside the loop so that
    memory holds one probe, not ``(n, P)``."""
    if probes is None:
        check_int(num_probes, "num_probes", minimum=1)
        draw = jax.random.normal if distribution == "gaussian" else jax.random.rademacher
        return jax.lax.map(lambda k: fn(draw(k, (size,), dtype)), jax.random.split(_key(key), num_probes))
    leading = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(probes)}
    if len(leading) != 1 or None in leading:
        raise ValueError(f"probes: expected a pytree like params with one common leading (probe) axis, "
                         f"got leading sizes {sorted(map(str, leading))}")
    check_like("probes", probes, params, leading=(next(iter(leading)),))
    return jax.lax.map(lambda z: fn(ravel_pytree(z)[0].astype(dtype)), probes)


def hessian_trace(loss: Loss, params: PyTree, *, num_probes: int = 100, key: jax.Array | None = None,
                  probes: PyTree | None = None, kind: Literal["hessian", "ggn"] = "hessian",
                  block: PyTree | None = None) -> tuple[Array, Array]:
    """Hutchinson's estimate of ``tr M`` (Hutchinson 1989): the mean of ``zᵢᵀ M zᵢ`` over probes.

    Default probes: ``num_probes`` Rademacher vectors (entries exactly ±1, ``E[z zᵀ] = I``) from
    ``key``. ``probes``: a pytree like ``params`` with a leading axis ``(n, …)`` (then
    ``num_probes`` is ignored); the estimator is unbiased for any probes with ``E[z zᵀ] = I``.
    Probes are projected onto ``block``, estimating the trace of that sub-matrix. Returns
    ``(estimate, standard_error)`` with ``standard_error = std(samples, ddof=1)/√n`` (nan for
    ``n = 1``). Probes are processed one at a time (``lax.map``), so memory is one product's. Each
    sample ``zᵀ M z`` comes from :func:`~jaxlearn.landscape.curvature.quadratic_form` (two forward
    passes instead of a full HVP; about 20% faster than ``⟨z, H z⟩``, see ``benchmarks/landscape.py``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> loss = lambda p: 0.5 * (3 * p[0] ** 2 + p[1] ** 2)    # tr H = 4; exact for a diagonal H
        >>> estimate, stderr = ls.hessian_trace(loss, jnp.zeros(2), num_probes=4)
        >>> round(float(estimate), 4), round(float(stderr), 4)
        (4.0, 0.0)
    """
    curvature.check_kind(kind)
    flat, unravel = ravel_pytree(params)
    if kind == "hessian" and not isinstance(loss, ModelObjective):
        curvature.check_scalar_loss(as_loss_fn(loss), params)

    def sample(z):
        return curvature.quadratic_form(loss, params, unravel(z), kind=kind, block=block).astype(flat.dtype)

    samples = _map_over_probes(sample, probes, params, num_probes, key, flat.dtype, flat.shape[0])
    n = samples.shape[0]
    stderr = jnp.std(samples, ddof=1) / np.sqrt(n) if n > 1 else jnp.full((), jnp.nan, samples.dtype)
    return jnp.mean(samples), stderr


def spectral_density(loss: Loss, params: PyTree, *, num_steps: int = 100, num_probes: int = 1,
                     key: jax.Array | None = None, kind: Literal["hessian", "ggn"] = "hessian",
                     block: PyTree | None = None, probes: PyTree | None = None,
                     distribution: Literal["rademacher", "gaussian"] = "rademacher") -> tuple[Array, Array]:
    """Stochastic Lanczos quadrature of the eigenvalue density of ``M`` (Golub & Meurant 1994;
    Ghorbani et al. 2019, §2–3).

    For each probe ``v`` (Rademacher, or ``distribution="gaussian"``, from ``key``; or the user's
    ``probes``, a pytree like ``params`` with a leading axis), projected onto ``block`` and
    normalised, ``m = num_steps`` Lanczos steps give ``T_m = V diag(θ) Vᵀ``; the ``m``-point Gauss
    quadrature of the measure ``Σ_i (vᵀu_i)² δ_{λ_i}`` has nodes ``θ_j`` and weights
    ``w_j = V_{0j}²`` (summing to 1), exact for polynomials of degree ``≤ 2m − 1``:
    ``Σ_j w_j θ_jᵏ = vᵀMᵏv / ‖v‖²``. Averaged over probes it estimates the density
    ``(1/P) Σ_i δ(t − λ_i)``. After a Lanczos breakdown the trailing nodes carry zero weight.

    Returns ``(nodes, weights)``, each ``(num_probes, m)`` (``(n, m)`` for ``n`` user probes), nodes
    ascending per probe.
    """
    if distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"distribution: expected 'rademacher' or 'gaussian', got {distribution!r}")
    flat, unravel, matvec = _flat_operator(loss, params, kind, block)
    size = flat.shape[0]
    if not (is_int(num_steps) and 1 <= num_steps <= size):
        raise ValueError(f"num_steps: expected an int in [1, P={size}], got {num_steps!r}")

    def quadrature(v):
        alphas, betas, _ = lanczos(matvec, _project_flat(v, unravel, block), num_steps)
        nodes, vectors = jnp.linalg.eigh(_tridiagonal(alphas, betas))
        return nodes, vectors[0] ** 2

    return _map_over_probes(quadrature, probes, params, num_probes, key, flat.dtype, size, distribution)


def smooth_density(nodes: ArrayLike, weights: ArrayLike, grid: ArrayLike, sigma: Scalar) -> Array:
    """The Gaussian-smoothed SLQ density on ``grid (G,)``: the mean over probes of
    ``Σ_j w_j N(t; θ_j, σ²)`` (Ghorbani et al. 2019, §3). ``nodes``/``weights``: ``(n, m)`` or
    ``(m,)`` from :func:`spectral_density`. Returns ``(G,)``; it integrates to 1 over a grid that
    covers the nodes by a few ``σ``."""
    nodes, weights, grid = jnp.atleast_2d(nodes), jnp.atleast_2d(weights), jnp.asarray(grid)
    if nodes.shape != weights.shape:
        raise ValueError(f"weights: expected the shape of nodes {nodes.shape}, got {weights.shape}")
    if isinstance(sigma, (int, float)) and not sigma > 0:
        raise ValueError(f"sigma: expected a positive width, got {sigma}")
    gauss = jnp.exp(-0.5 * ((grid[:, None, None] - nodes) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return jnp.sum(weights * gauss, axis=-1).mean(axis=-1)
