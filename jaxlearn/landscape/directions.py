"""Directions in parameter space for loss-landscape plots.

A *direction* is a pytree with the structure and leaf shapes of ``params``. Inner products and
norms of whole directions are the Euclidean ones of the parameters flattened over all leaves
(``⟨a, b⟩ = Σ_leaves Σ_i a_i b_i``, in full matmul precision). Non-floating leaves (integer/bool
counters, masks; also complex ones) are not trainable: every direction is zero there, with the
leaf's dtype, and they enter no inner product.

* :func:`random_direction` / :func:`normalize_direction` — Gaussian directions rescaled per
  filter or per layer (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", §4).
* :func:`pca_directions` — principal directions of an optimisation trajectory (Li et al. §6).
* :func:`plane` — the plane through three parameter points (Garipov et al. 2018, "Loss Surfaces,
  Mode Connectivity, and Fast Ensembling of DNNs", §3).
* :func:`project` — coordinates of parameter points in the span of some directions.
"""

from __future__ import annotations

from functools import partial
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlearn._checks import is_int
from jaxlearn._types import Array, PyTree
from jaxlearn.train.pytrees import check_like

__all__ = ["NORMALIZATIONS", "random_direction", "normalize_direction", "pca_directions", "plane", "project"]

NORMALIZATIONS = ("filter", "layer", "none")
_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes in inner products on accelerators
_SMALL = 4096  # leaves up to this size share one padded random draw


def _is_float(x) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _check_normalization(normalization) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _rescale(d, theta, axes):
    """``d`` with each slice (reduced over ``axes``) rescaled to the norm of ``theta``'s slice;
    slices where either norm is zero become zero."""
    acc = jnp.promote_types(d.dtype, jnp.float32)
    dn = jnp.sqrt(jnp.sum(jnp.square(d.astype(acc)), axis=axes, keepdims=True))
    tn = jnp.sqrt(jnp.sum(jnp.square(theta.astype(acc)), axis=axes, keepdims=True))
    ok = dn > 0
    scale = jnp.where(ok, tn / jnp.where(ok, dn, 1), 0)
    return (d.astype(acc) * scale).astype(d.dtype)


def _normalize_leaf(d, theta, normalization, ignore_bias):
    if not _is_float(theta):
        return jnp.zeros_like(theta)
    d = jnp.asarray(d, theta.dtype)
    if theta.ndim <= 1 and ignore_bias:
        return jnp.zeros_like(d)
    if normalization == "none":
        return d
    if normalization == "layer":
        return _rescale(d, theta, None)
    # "filter": one output unit = one slice along the last axis; a 0-/1-D leaf is one filter per entry.
    return _rescale(d, theta, tuple(range(theta.ndim - 1)) if theta.ndim >= 2 else ())


def normalize_direction(direction: PyTree, params: PyTree, normalization: Literal["filter", "layer", "none"] = "filter",
                        ignore_bias: bool = True) -> PyTree:
    """Rescale ``direction`` to the scale of ``params`` (Li et al. 2018, §4, "filter normalization").

    Leaf by leaf, with ``d`` the direction leaf and ``θ`` the parameter leaf:

    * ``"filter"``, ``θ.ndim >= 2``: a *filter* is one output unit, the slice along the LAST axis:
      for a Dense kernel ``(in, out)`` column ``j`` (the weights into output unit ``j``), for a
      Conv kernel ``(H, W, I, O)`` (HWIO) the ``(H, W, I)`` block of output channel ``o``; the same
      rule holds for flax ``kernel`` leaves, which use the same layouts. Each slice becomes
      ``d[..., j] ← d[..., j] / ‖d[..., j]‖ · ‖θ[..., j]‖`` (Frobenius norms of the slices).
      For ``θ.ndim <= 1`` (only with ``ignore_bias=False``) every entry is its own filter:
      ``d_i ← d_i / |d_i| · |θ_i| = sign(d_i) |θ_i|``.
    * ``"layer"``: the whole leaf, ``d ← d / ‖d‖ · ‖θ‖``.
    * ``"none"``: ``d`` unchanged.
    * ``ignore_bias=True`` (all normalizations): leaves with ``ndim <= 1`` — biases and norm-layer
      scales/offsets — are set to zero, so the direction moves the weights only.
    * A slice with ``‖θ_j‖ = 0`` or ``‖d_j‖ = 0`` gives a zero slice (never NaN). Non-floating
      leaves of ``params`` give zeros of their dtype.

    Norms are accumulated in at least float32; the result has the dtypes of ``params``.
    ``normalization`` and ``ignore_bias`` are static under ``jit``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> params = {"W": jnp.array([[3.0, 0.0], [4.0, 1.0]]), "b": jnp.ones(2)}
        >>> d = ls.normalize_direction({"W": jnp.ones((2, 2)), "b": jnp.ones(2)}, params, "filter")
        >>> jnp.linalg.norm(d["W"], axis=0).round(4).tolist(), d["b"].tolist()   # per output unit; biases ignored
        ([5.0, 1.0], [0.0, 0.0])
    """
    _check_normalization(normalization)
    check_like("direction", direction, params)
    return _normalize(direction, params, normalization, bool(ignore_bias))


# Checks run outside jit (errors raised while tracing get JAX's multi-line note appended); the
# work is jitted, since eagerly each of its many small ops would be compiled on its own.
@partial(jax.jit, static_argnames=("normalization", "ignore_bias"))
def _normalize(direction, params, normalization, ignore_bias):
    return jax.tree.map(lambda d, t: _normalize_leaf(d, t, normalization, ignore_bias), direction, params)


def random_direction(key: jax.Array, params: PyTree, normalization: Literal["filter", "layer", "none"] = "filter",
                     ignore_bias: bool = True) -> PyTree:
    """A random direction like ``params`` (Li et al. 2018, §4): i.i.d. N(0, 1) entries, then
    :func:`normalize_direction` with the same ``normalization`` and ``ignore_bias``.

    Leaf ``i`` (in ``jax.tree.leaves`` order) is
    ``jax.random.normal(jax.random.fold_in(key, i), (leaf.size,), leaf.dtype).reshape(leaf.shape)``,
    so the result is a deterministic function of ``key`` and the leaf shapes. (Leaves are drawn
    flat and several per vmapped call because XLA compiles threefry slowly; the values are those
    of the formula.) Works under ``jit`` (``normalization``, ``ignore_bias`` static) and ``vmap``
    over keys.
    """
    _check_normalization(normalization)
    if not (isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32)):
        raise TypeError(f"key must be a jax.random key, got {type(key).__name__}")
    return _random(key, params, normalization, bool(ignore_bias))


@partial(jax.jit, static_argnames=("normalization", "ignore_bias"))
def _random(key, params, normalization, ignore_bias):
    leaves, treedef = jax.tree.flatten(params)
    raw = [jnp.zeros_like(t) for t in leaves]
    # XLA's compile time grows with the number of threefry calls, so leaves share vmapped draws:
    # all keys at once, then one draw per (length, dtype). With partitionable threefry (jax's
    # default) a draw's prefix equals the shorter draw, so small leaves share one padded length.
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(len(leaves), dtype=jnp.uint32))
    pad = bool(jax.config.jax_threefry_partitionable)
    groups: dict = {}
    for i, t in enumerate(leaves):
        if _is_float(t):
            n = _SMALL if pad and jnp.size(t) <= _SMALL else int(jnp.size(t))
            groups.setdefault((n, jnp.result_type(t)), []).append(i)
    for (n, dtype), idx in groups.items():
        draws = jax.vmap(lambda k: jax.random.normal(k, (n,), dtype))(keys[jnp.asarray(idx)])
        for row, i in zip(draws, idx):
            raw[i] = row[:jnp.size(leaves[i])].reshape(jnp.shape(leaves[i]))
    return _normalize(jax.tree.unflatten(treedef, raw), params, normalization, ignore_bias)


def _float_leaves(tree) -> list:
    leaves = [x for x in jax.tree.leaves(tree) if _is_float(x)]
    if not leaves:
        raise ValueError("params: no floating-point leaves")
    return leaves


def _float_flat(tree, batch_ndim: int):
    """Float leaves of ``tree`` flattened and concatenated in their common dtype: ``(*batch, P)``
    (``ravel_pytree`` of the float leaves, vmapped over the ``batch_ndim`` leading axes)."""
    def flat(leaves):
        return ravel_pytree(leaves)[0]

    for _ in range(batch_ndim):
        flat = jax.vmap(flat)
    return flat(_float_leaves(tree))


def _unflatten(flat_p, like):
    """Inverse of :func:`_float_flat` for one vector; non-float leaves of ``like`` become zeros."""
    leaves, treedef = jax.tree.flatten(like)
    floats = iter(ravel_pytree(_float_leaves(like))[1](flat_p))
    return jax.tree.unflatten(treedef, [next(floats) if _is_float(x) else jnp.zeros_like(x) for x in leaves])


def _stacked(name: str, points):
    """A Python list of pytrees → one pytree with a leading axis; otherwise checked as stacked."""
    if isinstance(points, list):
        if not points:
            raise ValueError(f"{name}: empty list")
        for i, p in enumerate(points[1:], 1):
            check_like(f"{name}[{i}]", p, points[0], f"{name}[0]")
        return jax.tree.map(lambda *xs: jnp.stack(xs), *points)
    leaves = jax.tree.leaves(points)
    if not leaves or any(jnp.ndim(x) < 1 for x in leaves):
        raise ValueError(f"{name}: expected a list of pytrees or a pytree whose leaves have a leading axis")
    lengths = {jnp.shape(x)[0] for x in leaves}
    if len(lengths) != 1:
        raise ValueError(f"{name}: leaves have different leading axes {sorted(lengths)}")
    return points


def pca_directions(trajectory: PyTree | list[PyTree], final: PyTree | None = None,
                   num: int = 2) -> tuple[tuple[PyTree, ...], Array]:
    """Principal directions of an optimisation trajectory (Li et al. 2018, §6).

    ``trajectory``: a pytree whose leaves have a leading axis ``T`` (stacked snapshots θ_0..θ_{T-1})
    or a Python ``list`` of ``T`` param pytrees (a tuple is read as a stacked pytree, since serial
    models' params are tuples). ``final`` (θ_final) defaults to the last snapshot. A run's saved
    snapshots come stacked from ``jaxlearn.runner.load_trajectory(root, run).states.params``.

    With ``M`` the ``(T, P)`` matrix whose row ``t`` is ``θ_t − θ_final`` flattened over all floating
    leaves, ``M = U S Vᵀ`` (thin SVD; the ``P × P`` covariance is never formed). Returns
    ``(directions, explained_variance_ratio)``: a tuple of ``num`` pytrees like one snapshot — the
    top right singular vectors, unit norm and mutually orthogonal in the flattened inner product —
    and the ``(num,)`` array ``s_i² / Σ_k s_k²``. As in the paper, ``M`` is not mean-centred
    (scikit-learn's PCA, used by the authors' code, subtracts the row mean first). Sign
    convention: the entry of largest magnitude of each direction is positive (first one on ties).
    """
    traj = _stacked("trajectory", trajectory)
    T = jnp.shape(jax.tree.leaves(traj)[0])[0]
    if final is not None:
        check_like("trajectory", traj, final, "final", leading=(T,))
    P = sum(int(jnp.size(x)) // T for x in jax.tree.leaves(traj) if _is_float(x))
    if not is_int(num) or not 1 <= num <= min(T, P):
        raise ValueError(f"num must be an int in [1, min(T, P)] = [1, {min(T, P)}], got {num!r}")
    return _pca(traj, final, num)


@partial(jax.jit, static_argnames="num")
def _pca(traj, final, num):
    if final is None:
        final = jax.tree.map(lambda x: x[-1], traj)
    M = _float_flat(traj, 1) - _float_flat(final, 0)[None]
    _, s, vt = jnp.linalg.svd(M, full_matrices=False)
    v = vt[:num]
    pivot = jnp.take_along_axis(v, jnp.argmax(jnp.abs(v), axis=1)[:, None], axis=1)
    v = v * jnp.where(pivot < 0, -1, 1).astype(v.dtype)
    s2 = jnp.square(s)
    total = jnp.sum(s2)
    ratio = jnp.where(total > 0, s2[:num] / jnp.where(total > 0, total, 1), 0)
    return tuple(_unflatten(v[i], final) for i in range(num)), ratio


def _sub(a, b):
    return jax.tree.map(lambda x, y: x - y if _is_float(x) else jnp.zeros_like(x), a, b)


def plane(p0: PyTree, p1: PyTree, p2: PyTree) -> tuple[PyTree, PyTree, PyTree, Array]:
    """The plane through three parameter points (Garipov et al. 2018, §3), e.g. an initialisation
    and two trained solutions.

    Returns ``(origin, d1, d2, coords)`` with ``origin = p0``, ``d1 = p1 − p0`` and ``d2`` the part of
    ``p2 − p0`` orthogonal to ``d1`` (Gram–Schmidt in the flattened inner product):
    ``d2 = (p2 − p0) − a·d1`` with ``a = ⟨p2 − p0, d1⟩ / ⟨d1, d1⟩`` (``a = 0`` when ``p1 = p0``).
    ``coords`` is the ``(3, 2)`` array of the ``(x, y)`` coordinates of ``p0, p1, p2`` in units of
    ``d1`` and ``d2``: ``[[0, 0], [1, 0], [a, 1]]``, so ``p_k = origin + x_k·d1 + y_k·d2``. Unlike
    Garipov et al., ``d1`` and ``d2`` are not scaled to unit norm: pass them with these ``coords`` to
    :func:`jaxlearn.landscape.surface.surface_2d` and the plots.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> origin, d1, d2, coords = ls.plane(jnp.zeros(2), jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0]))
        >>> d1.tolist(), d2.tolist(), coords.tolist()
        ([2.0, 0.0], [0.0, 1.0], [[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    """
    check_like("p1", p1, p0, "p0")
    check_like("p2", p2, p0, "p0")
    return _plane(p0, p1, p2)


@jax.jit
def _plane(p0, p1, p2):
    d1 = _sub(p1, p0)
    u = _sub(p2, p0)
    v1, vu = _float_flat(d1, 0), _float_flat(u, 0)
    n11 = jnp.vdot(v1, v1, precision=_HIGHEST)
    a = jnp.where(n11 > 0, jnp.vdot(vu, v1, precision=_HIGHEST) / jnp.where(n11 > 0, n11, 1), 0)
    d2 = jax.tree.map(lambda x, y: x - a.astype(x.dtype) * y if _is_float(x) else x, u, d1)
    coords = jnp.array([[0, 0], [1, 0], [0, 1]], a.dtype).at[2, 0].set(a)
    return p0, d1, d2, coords


def project(points: PyTree | list[PyTree], origin: PyTree, directions: Sequence[PyTree]) -> Array:
    """Coordinates ``c`` of parameter points in the span of ``directions``: the least-squares
    solution of ``p_t − origin ≈ Σ_k c[t, k] d_k`` in the flattened inner product, i.e.
    ``G c_t = (⟨p_t − origin, d_k⟩)_k`` with the Gram matrix ``G_kl = ⟨d_k, d_l⟩`` (for the
    orthonormal :func:`pca_directions`, ``c[t, k] = ⟨p_t − origin, d_k⟩``).

    ``points``: stacked pytree with leading axis ``T`` or a list of pytrees (as in
    :func:`pca_directions`); ``directions``: a sequence of ``K`` linearly independent pytrees.
    Returns a ``(T, K)`` array, e.g. the ``trajectory`` of :func:`jaxlearn.landscape.plots.contour`.
    """
    pts = _stacked("points", points)
    T = jnp.shape(jax.tree.leaves(pts)[0])[0]
    check_like("points", pts, origin, "origin", leading=(T,))
    for k, d in enumerate(directions):
        check_like(f"directions[{k}]", d, origin, "origin")
    return _project(pts, origin, tuple(directions))


@jax.jit
def _project(pts, origin, directions):
    D = jnp.stack([_float_flat(d, 0) for d in directions])          # (K, P)
    X = _float_flat(pts, 1) - _float_flat(origin, 0)[None]           # (T, P)
    gram = jnp.matmul(D, D.T, precision=_HIGHEST)
    return jnp.linalg.solve(gram, jnp.matmul(D, X.T, precision=_HIGHEST)).T
