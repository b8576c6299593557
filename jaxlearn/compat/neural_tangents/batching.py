"""neural-tangents' ``nt.batch``: a kernel function evaluated in blocks of examples, over devices.

Kernel functions of this package (analytic ``kernel_fn``, empirical ones) take the blocks and the
devices to jaxlearn (``batch_size``/``devices`` of :func:`jaxlearn.kernels.analytic` and
:func:`jaxlearn.kernels.empirical`: blocks of rows spread over a device mesh). Any other
``kernel_fn(x1, x2, *args, **kwargs)`` whose outputs are ``(N1, N2, ...)`` arrays (or pytrees of
them) is evaluated block pair by block pair, one after another, and reassembled.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlearn._checks import check_int
from jaxlearn.compat.neural_tangents.triple import store

__all__ = ["batch"]


def _devices(device_count: int):
    check_int(device_count, "device_count", minimum=-1, where="batch")
    if device_count == 0:
        return None
    available = jax.local_device_count()
    return "all" if device_count == -1 or device_count >= available else device_count


def batch(kernel_fn: Callable, batch_size: int = 0, device_count: int = -1, store_on_device: bool = True) -> Callable:
    """``kernel_fn`` computed in blocks of ``batch_size`` examples of ``x1`` × ``x2`` (``0``: all at
    once) over ``device_count`` local devices (``-1``: all, ``0``: the default device); the result is
    the same. ``store_on_device=False`` moves it to the host CPU. Unlike neural-tangents, sizes need
    not divide the numbers of examples (the last block is padded and cut off)."""
    check_int(batch_size, "batch_size", minimum=0, where="batch")
    devices = _devices(device_count)
    size = batch_size or None
    if hasattr(kernel_fn, "batched"):
        return kernel_fn.batched(size, devices, store_on_device)
    return _blocked(kernel_fn, size, store_on_device)


def _blocked(kernel_fn, size, store_on_device):
    def blocked_fn(x1, x2=None, *args, **kwargs):
        n1 = jnp.shape(x1)[0]
        if size is None or (size >= n1 and (x2 is None or size >= jnp.shape(x2)[0])):
            return store(kernel_fn(x1, x2, *args, **kwargs), store_on_device)
        same = x2 is None
        x2_ = x1 if same else x2
        starts1, starts2 = range(0, n1, size), range(0, jnp.shape(x2_)[0], size)
        rows = []
        for i in starts1:
            a = x1[i:i + size]
            row = [kernel_fn(a, a if same and i == j else x2_[j:j + size], *args, **kwargs) for j in starts2]
            rows.append(jax.tree.map(lambda *blocks: jnp.concatenate(blocks, axis=1), *row))
        out = jax.tree.map(lambda *blocks: jnp.concatenate(blocks, axis=0), *rows)
        return store(out, store_on_device)

    return blocked_fn
