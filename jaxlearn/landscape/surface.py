"""Loss surfaces along directions: ``fn(θ + α·d)`` on a line and ``fn(θ + x·d1 + y·d2)`` on a grid.

Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", §3 (1-D interpolation, 2-D
contour plots). Every grid point is evaluated by one compiled program: the points are flattened
(``xs``-major), evaluated ``chunk_size`` at a time with ``vmap`` and chunk after chunk with
``lax.map``, so memory is bounded by one chunk of forward passes. Within a chunk, the operations
of ``fn`` that are affine in the grid coordinates (typically the first layer) are evaluated once,
not once per point (:func:`~jaxlearn.landscape.affine.affine_vmap`). The functions are pure: they
work under ``jit`` (with ``fn`` closed over) and are differentiable w.r.t. ``params`` and the
directions.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path

from jaxlearn._checks import check_int, is_real
from jaxlearn._jaxpr.equations import walk
from jaxlearn._jaxpr.tracing import trace
from jaxlearn._types import Array, ArrayLike, PyTree, Scalar
from jaxlearn.data.batching import merge_rows, split_rows
from jaxlearn.landscape.affine import affine_vmap
from jaxlearn.train.pytrees import check_like

__all__ = ["symmetric_grid", "grid", "surface_1d", "surface_2d"]


def symmetric_grid(num: int, extent: Scalar = 1.0) -> Array:
    """Surface coordinates: ``num`` evenly spaced values from ``-extent`` to ``extent`` (like
    ``linspace``), shape ``(num,)``, computed as ``extent · (2k − (num − 1)) / (num − 1)`` so the grid
    is exactly symmetric, the endpoints are exactly ``±extent`` and, for odd ``num``, the centre is exactly
    ``0.0`` (the unperturbed ``θ``). ``num = 1`` gives ``[0.0]``. Default float dtype; ``extent``
    may be traced.

    Examples:
        >>> from jaxlearn import landscape as ls
        >>> ls.symmetric_grid(5).tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
    """
    check_int(num, "num", minimum=1, form="must")
    unit = (2 * np.arange(num) - (num - 1)) / max(num - 1, 1)     # exact 0 and ±1, symmetric
    dtype = jnp.result_type(float)
    if is_real(extent):
        if not 0 < extent < np.inf:
            raise ValueError(f"extent must be a positive finite number, got {extent!r}")
        return jnp.asarray(unit * extent, dtype)   # one rounding per entry: still symmetric
    return jnp.asarray(unit, dtype) * extent


def grid(num: int, extent: Scalar = 1.0) -> Array:
    """Deprecated alias of :func:`symmetric_grid` (renamed so that ``grid`` means only
    :func:`jaxlearn.train.grid`, hyperparameter grids); removed in the next release."""
    warnings.warn("jaxlearn.landscape.grid is deprecated: use jaxlearn.landscape.symmetric_grid", DeprecationWarning,
                  stacklevel=2)
    return symmetric_grid(num, extent)


def _axis(name: str, a):
    a = jnp.asarray(a)
    if a.ndim != 1 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    return a


def _check_chunk_size(chunk_size) -> None:
    if not (isinstance(chunk_size, str) and chunk_size == "auto"):
        check_int(chunk_size, "chunk_size", minimum=1, optional=True, form="must",
                  expected="a positive int, 'auto' or None")


# Memory for the largest intermediate of one chunk under chunk_size="auto". On CPU a chunk whose
# activations stay in cache is fastest (64-128-128-10 MLP on 1,024 examples, 41x41 grid: 4 points
# per chunk take ~0.6 s, 256 points ~1.5 s); accelerators want large batches.
_AUTO_BYTES = {"cpu": 2 << 20}
_AUTO_BYTES_ACCELERATOR = 1 << 30


def _largest_intermediate(program) -> int:
    """Bytes of the largest value one evaluation of ``program`` creates (nested programs included)."""
    return max((int(np.prod(v.aval.shape, dtype=np.int64)) * v.aval.dtype.itemsize
                for eqn in walk(program) for v in eqn.outvars
                if hasattr(v.aval, "shape") and hasattr(v.aval, "dtype")), default=0)


def _auto_chunk_size(program) -> int:
    budget = _AUTO_BYTES.get(jax.default_backend(), _AUTO_BYTES_ACCELERATOR)
    return int(np.clip(budget // max(_largest_intermediate(program), 1), 1, 4096))


def _check_scalars(out) -> None:
    for path, leaf in tree_flatten_with_path(out)[0]:
        if jnp.shape(leaf) != ():
            where = f" at {keystr(path)}" if path else ""
            raise ValueError(f"fn must return a scalar or a pytree (e.g. dict) of scalars, got shape "
                             f"{jnp.shape(leaf)}{where}")


def _grid_values(fn: Callable, params, directions, axes, chunk_size):
    """``fn(params + Σ_k c_k·directions[k])`` on the grid ``axes[0] × axes[1] × …`` (``ij`` order);
    a pytree like ``fn``'s output with leaves of shape ``tuple(len(a) for a in axes)``."""
    dtype = jnp.result_type(*axes, float)
    mesh = jnp.meshgrid(*(a.astype(dtype) for a in axes), indexing="ij")
    coords = jnp.stack([m.ravel() for m in mesh], axis=1)            # (N, K), first axis slowest

    def at(c):  # (B, K) coordinates -> outputs with a leading B axis
        return affine_vmap(fn, params, directions, c)

    n = coords.shape[0]
    if chunk_size is None or chunk_size >= n:
        out = at(coords)
    else:  # even chunks of at most chunk_size points; padding repeats the last point (valid, one program)
        out = jax.lax.map(at, split_rows(coords, chunk_size))
        out = jax.tree.map(lambda v: merge_rows(v, n), out)
    return jax.tree.map(lambda v: v.reshape(mesh[0].shape), out)


def _evaluate(fn, params, directions, axes, chunk_size):
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    _check_chunk_size(chunk_size)
    # Checked on an abstract evaluation, outside jit: errors raised while tracing a jitted
    # function get JAX's multi-line note appended.
    traced = trace(fn, params)
    _check_scalars(traced.out_shapes)
    if chunk_size == "auto":
        chunk_size = _auto_chunk_size(traced.program)
    return _program(fn, chunk_size)(params, directions, axes)


# Compiled programs per fn, held only as long as fn lives: a strong cache keyed on fn would keep
# alive whatever it closes over (datasets); the program refers to fn through a weak reference.
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _program(fn, chunk_size):
    try:
        per_fn = _PROGRAMS.setdefault(fn, {})
    except TypeError:  # not weakly referenceable (or unhashable): compile for this call only
        return jax.jit(lambda p, d, a: _grid_values(fn, p, d, a, chunk_size))
    if chunk_size not in per_fn:
        ref = weakref.ref(fn)
        per_fn[chunk_size] = jax.jit(lambda p, d, a: _grid_values(ref(), p, d, a, chunk_size))
    return per_fn[chunk_size]


def surface_1d(fn: Callable[[PyTree], PyTree], params: PyTree, d: PyTree, alphas: ArrayLike, *,
               chunk_size: int | str | None = "auto") -> PyTree:
    """``fn(θ + α·d)`` for each ``α`` in ``alphas`` (Li et al. 2018, §3, "1-D linear interpolation").

    ``fn(params)`` returns a scalar or a pytree (e.g. ``{"loss": …, "accuracy": …}``) of scalars;
    ``d`` is a direction like ``params`` (e.g. :func:`~jaxlearn.landscape.directions.random_direction`,
    or ``θ' − θ`` for the interpolation between two solutions); ``alphas`` is ``(A,)``.
    Returns an ``(A,)`` array, or the same pytree with ``(A,)`` leaves. ``chunk_size`` points are
    evaluated in parallel (``vmap`` (at most; chunks are equal-sized), chunks one after another (``lax.map``); ``None``:
    all at once. ``"auto"``
    (default) picks the number of points whose largest intermediate fits in 2 MiB on CPU (cache:
    on CPU small chunks are several times faster than one big ``vmap``, see
    ``benchmarks/landscape.py``) or 1 GiB on accelerators.
    Non-floating leaves of ``params`` are not moved.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> params = {"w": jnp.array([1.0, 0.0])}
        >>> loss = lambda p: jnp.sum(p["w"] ** 2)
        >>> ls.surface_1d(loss, params, {"w": jnp.array([0.0, 1.0])}, ls.symmetric_grid(3)).tolist()
        [2.0, 1.0, 2.0]
    """
    alphas = _axis("alphas", alphas)
    check_like("d", d, params)
    return _evaluate(fn, params, (d,), (alphas,), chunk_size)


def surface_2d(fn: Callable[[PyTree], PyTree], params: PyTree, d1: PyTree, d2: PyTree, xs: ArrayLike, ys: ArrayLike,
               *, chunk_size: int | str | None = "auto") -> PyTree:
    """``values[i, j] = fn(θ + xs[i]·d1 + ys[j]·d2)`` (Li et al. 2018, §3, "2-D contour plots").

    Axis 0 indexes ``xs`` (the ``d1`` coordinate), axis 1 indexes ``ys`` (the ``d2`` coordinate);
    no transposition (``meshgrid(..., indexing="ij")``). ``xs`` is ``(X,)``, ``ys`` is ``(Y,)``;
    ``fn`` returns a scalar or a pytree of scalars and the result is an ``(X, Y)`` array or the same
    pytree of ``(X, Y)`` arrays. ``chunk_size``: grid points per ``vmap`` (flattened ``xs``-major,
    the last chunk padded; default ``"auto"``, see :func:`surface_1d`), ``None``: all ``X·Y`` at once. Plot with
    :func:`jaxlearn.landscape.plots.contour`, which takes the same ``(xs, ys, values)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import landscape as ls
        >>> params = jnp.zeros(2)
        >>> values = ls.surface_2d(lambda p: p[0] + 10 * p[1], params, jnp.array([1.0, 0.0]),
        ...                        jnp.array([0.0, 1.0]), jnp.array([0.0, 1.0]), jnp.array([0.0, 1.0, 2.0]))
        >>> values.tolist()                                        # [i, j]: xs[i]·d1 + ys[j]·d2
        [[0.0, 10.0, 20.0], [1.0, 11.0, 21.0]]
    """
    xs, ys = _axis("xs", xs), _axis("ys", ys)
    check_like("d1", d1, params)
    check_like("d2", d2, params)
    return _evaluate(fn, params, (d1, d2), (xs, ys), chunk_size)
