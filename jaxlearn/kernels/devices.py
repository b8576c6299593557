"""Kernel blocks spread over local devices.

:func:`jaxlearn.kernels.analytic` and :func:`jaxlearn.kernels.empirical` evaluate a kernel as a
``lax.map`` over row blocks of ``x1`` (memory: one block's intermediates), each against all of
``x2`` or against its column blocks in turn: :func:`map_kernel_blocks`, for both. :func:`map_blocks` is
the outer loop with the blocks distributed over a 1-D device mesh (axis ``"blocks"``): the number of
blocks is padded to a multiple of the device count by repeating the last block (valid values, cut
off again), ``shard_map`` hands each device its contiguous share, each device ``lax.map`` s over its
own blocks, and the results come back as one ``(num_blocks, ...)`` array, laid out over the
devices along the block axis. Everything a block's computation closes over (``x2``, the
parameters) is replicated. The per-block program is the single-device one, so the numbers are too.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from jaxlearn._checks import is_int
from jaxlearn._rows import pad_rows, split_rows

__all__ = ["Devices", "resolve_devices", "map_blocks", "map_kernel_blocks"]

# what ``devices=`` accepts: None (one device), an int n (the first n local devices), "all", or local devices
Devices = int | str | Sequence[jax.Device] | None

_AXIS = "blocks"


def resolve_devices(devices: Devices) -> tuple | None:
    """``devices`` as a tuple of at least two distinct local devices, or ``None`` for the ordinary
    single-device program.

    ``None`` (or any choice of one device): one device; an int ``n``: the first ``n`` of
    ``jax.local_devices()``; ``"all"``: all of them; a sequence of ``jax.Device`` s: those.
    Raises a one-line ``ValueError``/``TypeError`` naming ``devices`` otherwise."""
    if devices is None:
        return None
    available = jax.local_devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices: expected None, a positive int, 'all' or a sequence of jax devices, got "
                             f"{devices!r}")
        chosen = tuple(available)
    elif is_int(devices):  # bools are not: they fall through to the TypeError below
        n = int(devices)
        if not 1 <= n <= len(available):
            raise ValueError(f"devices: expected between 1 and {len(available)} (the local devices), got {n}")
        chosen = tuple(available[:n])
    elif isinstance(devices, Sequence) or isinstance(devices, np.ndarray):
        chosen = tuple(np.ravel(np.asarray(devices, dtype=object)))
        if not chosen:
            raise ValueError("devices: expected at least one device, got an empty sequence")
        for d in chosen:
            if not isinstance(d, jax.Device):
                raise TypeError(f"devices: expected jax devices in the sequence, got {type(d).__name__}")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"devices: expected distinct devices, got {list(chosen)}")
        missing = [d for d in chosen if d not in available]
        if missing:
            raise ValueError(f"devices: expected local devices (jax.local_devices()), got {missing}")
    else:
        raise TypeError(f"devices: expected None, a positive int, 'all' or a sequence of jax devices, got "
                        f"{type(devices).__name__}")
    return chosen if len(chosen) > 1 else None


def map_blocks(fn: Callable, blocks, devices: tuple | None):
    """``lax.map(fn, blocks)`` with the blocks spread over ``devices`` (from :func:`resolve_devices`).

    ``blocks``: an array or pytree of arrays with a leading block axis (e.g. from
    :func:`jaxlearn.data.batching.split_rows`). ``devices=None``: exactly ``lax.map``. Otherwise
    the block axis is padded to a multiple of ``len(devices)`` (repeating the last block), split
    over a 1-D mesh, mapped with ``lax.map`` on each device and cut back: the result has
    ``lax.map``'s shape, sharded over the devices along its block axis. Works inside ``jit``,
    ``vmap`` and ``grad`` (``shard_map`` has rules for all three). Inputs committed to a device
    outside ``devices`` (``jax.device_put(x, d)``) make JAX raise its "incompatible devices" error:
    pass uncommitted arrays, or include that device."""
    if devices is None:
        return jax.lax.map(fn, blocks)
    num = jax.tree.leaves(blocks)[0].shape[0]
    n_dev = len(devices)
    padded = jax.tree.map(lambda a: pad_rows(a, -(-num // n_dev) * n_dev), blocks)
    mesh = Mesh(np.asarray(devices, dtype=object), (_AXIS,))
    spec = PartitionSpec(_AXIS)
    # check_vma=False: fn is arbitrary user code (custom_vjp rules, callbacks) whose primitives
    # need not all carry varying-axis rules; the block axis is the only one, split on in and out.
    local = jax.shard_map(lambda b: jax.lax.map(fn, b), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    out = local(padded)
    return jax.tree.map(lambda a: a[:num], out)


def map_kernel_blocks(kernel_fn: Callable, x1, x2, size1: int, size2: int, devices: tuple | None,
                      row: Callable | None = None):
    """``kernel_fn(a, b)`` on blocks ``a`` of at most ``size1`` examples of ``x1`` (a ``lax.map``
    spread over ``devices`` by :func:`map_blocks`), each against

    * ``b = None`` when ``x2`` is ``None``: the block against itself (only the diagonal blocks);
    * ``b = x2`` when ``size2 >= N2``: all of ``x2``;
    * otherwise every block ``b`` of at most ``size2`` examples of ``x2`` in turn (an inner
      ``lax.map``), whose stacked outputs (leaves ``(blocks2, ...)``) ``row`` lays out as the row
      block's own (for a pair output ``jaxlearn.data.merge_columns``: ``(size1, N2, ...)``).

    Returns ``kernel_fn``'s outputs (``row``'s in the third case) with the row block axis in front,
    not reassembled (the caller knows which of its outputs are per pair of examples, per row or per
    column): leaves ``(blocks1, ...)``. Blocks are padded by repeating the last example
    (:func:`jaxlearn.data.split_rows`); ``jaxlearn.data.merge_rows`` / ``merge_columns`` cut the
    padding off again. Reassembling rows is a reshape (a copy only to cut padding off), so memory
    holds the result, one block pair's intermediates and one row block's strip."""
    b1 = split_rows(x1, size1)
    if x2 is None:
        return map_blocks(lambda a: kernel_fn(a, None), b1, devices)
    if size2 >= x2.shape[0]:  # rows of x1 against all of x2: reassembling is a reshape
        return map_blocks(lambda a: kernel_fn(a, x2), b1, devices)
    b2 = split_rows(x2, size2)
    row = row or (lambda out: out)
    return map_blocks(lambda a: row(jax.lax.map(lambda b: kernel_fn(a, b), b2)), b1, devices)
