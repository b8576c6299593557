"""Blocks of rows: a leading axis cut into equal blocks (padded by repeating its last row) for a
``lax.map``/``scan`` with bounded memory, and put back together.

Private to the library: :mod:`jaxlearn.nn`, :mod:`jaxlearn.kernels`, :mod:`jaxlearn.landscape` and
:mod:`jaxlearn.analysis` evaluate in blocks with these; users reach them as ``jaxlearn.data.split_rows``
etc. (re-exported by :mod:`jaxlearn.data.batching`). Here, below every package, so that ``nn`` need
not import ``data``.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxlearn._types import Array, ArrayLike


def row_blocks(num_rows: int, max_rows: int) -> tuple[int, int]:
    """``(num, rows)``: the fewest blocks of at most ``max_rows`` rows covering ``num_rows``, all of
    the same size ``rows`` (so only ``num·rows − num_rows < num`` rows are padding)."""
    num = -(-num_rows // max(1, min(max_rows, num_rows)))
    return num, -(-num_rows // num)


def pad_rows(a: ArrayLike, num_rows: int) -> Array:
    """``(N, …) -> (num_rows, …)`` with ``num_rows ≥ N``: the extra rows repeat the last one (valid
    values: no NaN, the same program), to be cut off afterwards. Copies only when padding."""
    a = jnp.asarray(a)
    extra = num_rows - a.shape[0]
    if extra == 0:
        return a
    return jnp.concatenate([a, jnp.broadcast_to(a[-1:], (extra,) + a.shape[1:])])


def split_rows(a: ArrayLike, max_rows: int) -> Array:
    """``(N, …) -> (num, rows, …)`` by :func:`row_blocks`, for a ``lax.map``/``scan`` over blocks of
    a leading axis with bounded memory. Padding (:func:`pad_rows`) repeats the last row;
    :func:`merge_rows` cuts it off. Copies only when padding is needed."""
    a = jnp.asarray(a)
    num, rows = row_blocks(a.shape[0], max_rows)
    return pad_rows(a, num * rows).reshape((num, rows) + a.shape[1:])


def merge_rows(a: Array, num_rows: int) -> Array:
    """``(num, rows, …) -> (num_rows, …)``: the inverse of :func:`split_rows` (a reshape, then a cut)."""
    return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])[:num_rows]


def merge_columns(a: Array, num_cols: int) -> Array:
    """``(num2, rows, cols, …) -> (rows, num_cols, …)``: a ``lax.map`` over column blocks (by
    :func:`split_rows`) of one row block laid out as that block's rows, padding cut off. Inside a
    ``lax.map`` over row blocks it makes the stacked result ``(num1, rows, num_cols, …)``, which
    :func:`merge_rows` reassembles by a reshape: only one row block's strip is ever transposed, never
    the whole ``(num_rows, num_cols)`` result."""
    a = jnp.moveaxis(a, 0, 1)
    a = a.reshape((a.shape[0], a.shape[1] * a.shape[2]) + a.shape[3:])
    return a[:, :num_cols]
