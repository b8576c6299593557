"""Where a runner group's member axis lives: the local devices a group runs on and the padding
and sharding of its member-axis arrays (the ``runs`` mesh of :mod:`jaxlearn.runner.execute`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlearn.runner import arrays

__all__ = ["Placement", "local_devices"]


def local_devices(devices, members: int) -> list:
    """The local devices a group of ``members`` runs on: the first ``min(devices, members)``
    (``devices=None``: all local devices; more than exist: all of them)."""
    if devices is not None and (isinstance(devices, bool) or not isinstance(devices, (int, np.integer))):
        raise TypeError(f"devices must be a positive int or None, got {type(devices).__name__}")
    if devices is not None and devices < 1:
        raise ValueError(f"devices must be a positive int or None, got {devices}")
    local = jax.local_devices()
    count = len(local) if devices is None else min(int(devices), len(local))
    return local[:max(1, min(count, members))]


class Placement:
    """Where a group's member axis lives: ``members`` runs padded to a multiple of
    ``len(devices)`` and sharded over a 1-D mesh ``"runs"``; with one device, the identity.

    ``put`` pads (repeating the last member) and shards a tree with a leading member axis;
    ``mask`` does the same for the ``active`` mask, padding with ``False``; ``replicate``
    places shared data on every device; ``take`` drops the padding of host arrays and
    ``host`` gathers states to host, unpadded, key leaves as raw key data.
    """

    def __init__(self, devices, members: int):
        self.members, self.count = members, len(devices)
        self.padded = -(-members // self.count) * self.count
        if self.count > 1:
            mesh = Mesh(np.asarray(devices), ("runs",))
            self.sharding = NamedSharding(mesh, PartitionSpec("runs"))
            self.replicated = NamedSharding(mesh, PartitionSpec())

    def put(self, tree):
        if self.count == 1:
            return tree
        extra = self.padded - self.members

        def pad(x):
            if not extra:
                return x
            xp = np if isinstance(x, np.ndarray) else jnp
            return xp.concatenate([x, xp.repeat(x[-1:], extra, axis=0)])

        return jax.device_put(jax.tree.map(pad, tree), self.sharding)

    def mask(self, active):
        if self.count == 1:
            return jnp.asarray(active)
        padded = np.zeros(self.padded, bool)
        padded[:self.members] = active
        return jax.device_put(padded, self.sharding)

    def replicate(self, tree):
        return tree if self.count == 1 or tree is None else jax.device_put(tree, self.replicated)

    def take(self, tree):
        return tree if self.count == 1 else jax.tree.map(lambda x: x[:self.members], tree)

    def host(self, states):
        if self.count == 1:
            return states
        return jax.tree.map(lambda x: np.asarray(x)[:self.members], arrays.keys_to_data(states))
