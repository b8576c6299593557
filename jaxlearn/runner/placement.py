"""Where a runner group's member axis lives: the devices a group runs on and the padding and
sharding of its member-axis arrays (the ``runs`` mesh of :mod:`jaxlearn.runner.execute`).

Conventions. Host values (numpy, or arrays on one local device) are the same on every process:
each process computes them itself (configs, data) or receives them from process 0. Device values
of a group whose mesh spans several processes are *global* arrays (not fully addressable): each
process holds the shards of its own devices. :meth:`Placement.put`, :meth:`Placement.mask` and
:meth:`Placement.replicate` turn host values into such arrays (every process passes the full host
value; each keeps its shards); :meth:`Placement.fetch` and :meth:`Placement.host` turn device
values back into full host copies on every process (a collective: every process must call them
at the same point), padding dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlearn._checks import is_int
from jaxlearn.runner import arrays
from jaxlearn.runner.distributed import is_multiprocess

__all__ = ["Placement", "group_devices", "local_devices"]


def _check_devices(devices) -> None:
    if devices is not None and not is_int(devices):
        raise TypeError(f"devices must be a positive int or None, got {type(devices).__name__}")
    if devices is not None and devices < 1:
        raise ValueError(f"devices must be a positive int or None, got {devices}")


def local_devices(devices, members: int) -> list:
    """The local devices a group of ``members`` runs on: the first ``min(devices, members)``
    (``devices=None``: all local devices; more than exist: all of them)."""
    _check_devices(devices)
    local = jax.local_devices()
    count = len(local) if devices is None else min(int(devices), len(local))
    return local[:max(1, min(count, members))]


def group_devices(devices, members: int) -> list:
    """The devices a group of ``members`` runs on.

    One process: :func:`local_devices`. Several processes (``jax.process_count() > 1``): the
    first ``devices`` local devices of *every* process (``None``: all of them), ordered by
    process then as in ``jax.devices()``, whatever ``members`` is (every process must hold part
    of the mesh; a group smaller than the mesh is padded), so the group is one program over all
    hosts.
    """
    if not is_multiprocess():
        return local_devices(devices, members)
    _check_devices(devices)
    chosen = []
    for process in range(jax.process_count()):
        own = [d for d in jax.devices() if d.process_index == process]
        chosen.extend(own if devices is None else own[:int(devices)])
    return chosen


class Placement:
    """Where a group's member axis lives: ``members`` runs padded to a multiple of
    ``len(devices)`` and sharded over a 1-D mesh ``"runs"``; with one device, the identity.

    ``put`` pads (repeating the last member) and shards a tree with a leading member axis;
    ``mask`` does the same for the ``active`` mask, padding with ``False``; ``replicate``
    places shared data on every device; ``take`` drops the padding of host arrays; ``fetch``
    copies device arrays to host (numpy), unpadded, and ``host`` does the same for states, key
    leaves as raw key data. When ``devices`` belong to several processes (``spans_processes``),
    host values must be equal on every process and ``fetch``/``host`` gather the shards of all
    processes (a jitted all-gather to a replicated sharding, then the local copy), so every
    process gets the full result.
    """

    def __init__(self, devices, members: int):
        self.members, self.count = members, len(devices)
        self.padded = -(-members // self.count) * self.count
        self.spans_processes = len({d.process_index for d in devices}) > 1
        if self.count > 1:
            mesh = Mesh(np.asarray(devices), ("runs",))
            self.sharding = NamedSharding(mesh, PartitionSpec("runs"))
            self.replicated = NamedSharding(mesh, PartitionSpec())
            # one all-gather program per tree structure (not one per leaf, as with
            # multihost_utils.process_allgather): every process gets a full copy of every leaf
            self._all_gather = jax.jit(lambda tree: tree, out_shardings=self.replicated)

    def _pad(self, x):
        extra = self.padded - self.members
        if not extra:
            return x
        xp = np if isinstance(x, np.ndarray) else jnp
        return xp.concatenate([x, xp.repeat(x[-1:], extra, axis=0)])

    def _global(self, tree, sharding, pad):
        """Host ``tree`` (the same on every process) as global arrays: each process makes the
        shards of its own devices from its full copy; key leaves are re-wrapped afterwards."""

        def make(x, like):
            value = np.asarray(x)
            value = pad(value) if pad is not None else value
            array = jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
            return jax.random.wrap_key_data(array, impl=jax.random.key_impl(like)) if arrays.is_key(like) else array

        return jax.tree.map(make, arrays.keys_to_data(tree), tree)

    def put(self, tree):
        if self.count == 1:
            return tree
        if self.spans_processes:
            return self._global(tree, self.sharding, self._pad)
        return jax.device_put(jax.tree.map(self._pad, tree), self.sharding)

    def mask(self, active):
        if self.count == 1:
            return jnp.asarray(active)
        padded = np.zeros(self.padded, bool)
        padded[:self.members] = active
        if self.spans_processes:
            return self._global(padded, self.sharding, None)
        return jax.device_put(padded, self.sharding)

    def replicate(self, tree):
        if self.count == 1 or tree is None:
            return tree
        if self.spans_processes:
            return self._global(tree, self.replicated, None)
        return jax.device_put(tree, self.replicated)

    def take(self, tree):
        return tree if self.count == 1 else jax.tree.map(lambda x: x[:self.members], tree)

    def _gather(self, tree):
        """Full host copies (numpy) of device arrays, padding kept."""
        if not self.spans_processes:
            return jax.device_get(tree)
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), self._all_gather(tree))

    def fetch(self, tree):
        """Host (numpy) copies of a tree of member-axis arrays, padding dropped."""
        if self.count == 1:
            return jax.device_get(tree)
        return self.take(self._gather(tree))

    def host(self, states):
        if self.count == 1:
            return states
        return self.fetch(arrays.keys_to_data(states))
