"""Kernel blocks spread over local devices.

:func:`jaxlearn.kernels.analytic` and :func:`jaxlearn.kernels.empirical` evaluate a kernel as a
``lax.map`` over row blocks of ``x1`` (memory: one block's intermediates). :func:`map_blocks` is
that loop with the blocks distributed over a 1-D device mesh (axis ``"blocks"``): the number of
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
from jaxlearn.data.batching import pad_rows

__all__ = ["resolve_devices", "map_blocks"]

_AXIS = "blocks"


def resolve_devices(devices) -> tuple | None:
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
