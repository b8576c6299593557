"""neural-tangents' ``Kernel`` object and its ``get`` conventions, as views on jaxlearn's kernels.

neural-tangents' analytic ``kernel_fn`` returns a ``Kernel`` dataclass (``nngp``, ``ntk``, ``cov1``,
``cov2`` and metadata: ``shape1``, ``shape2``, ``x1_is_x2``, ``is_gaussian``, ...) when ``get=None``,
the requested array for a string ``get``, and a namedtuple of the requested fields for a tuple. Here
:class:`Kernel` wraps a :class:`jaxlearn.nn.Kernel` (``native``: what the next layer's map reads, so
``kernel_fn(kernel)`` composes) and the output shapes; the arrays are the native ones, in the same
layout (``nngp (N1, N2, H, H', W, W')`` for images, ``cov1 (N1, ...)``: neural-tangents'
``diagonal_batch=True``). It is a pytree (arrays are leaves), so ``kernel_fn`` runs under ``jit``.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxlearn.nn import Kernel as NativeKernel

__all__ = ["Kernel", "canonical_get", "pack", "spatial_diagonal"]


def spatial_diagonal(a, lead: int):
    """``(*lead, P1, P1', P2, P2', …) -> (*lead, P1, P2, …)``: the entries pairing each position with
    itself (neural-tangents' ``diagonal_spatial=True`` layout)."""
    if a is None:
        return None
    for _ in range((a.ndim - lead) // 2):
        a = jnp.diagonal(a, axis1=lead, axis2=lead + 1)  # the pair becomes a trailing axis
    return a


@dataclasses.dataclass(frozen=True)
class Kernel:
    """neural-tangents' ``Kernel``: ``nngp``, ``ntk`` ``(N1, N2, *spatial pairs)``, ``cov1``
    ``(N1, *pairs)``, ``cov2`` (``None`` when ``x2`` was ``None``) and its metadata, read from the
    jaxlearn kernel ``native``. ``diagonal_spatial=True`` (asked of ``kernel_fn``) keeps only the
    entries pairing a position with itself, ``(N1, N2, H, W)``; ``native`` keeps everything."""

    native: NativeKernel
    shape1: tuple = dataclasses.field(metadata=dict(static=True))
    shape2: tuple = dataclasses.field(metadata=dict(static=True))
    x1_is_x2: bool = dataclasses.field(default=False, metadata=dict(static=True))
    diagonal_spatial: bool = dataclasses.field(default=False, metadata=dict(static=True))

    # Fixed by what jaxlearn computes: the batch diagonal of cov1/cov2, canonical spatial order,
    # batch first and channels last, no masks, Dropout's kernel absent.
    diagonal_batch = True
    is_reversed = False
    is_input = False
    batch_axis = 0
    mask1 = None
    mask2 = None

    @property
    def channel_axis(self) -> int:
        return len(self.shape1) - 1

    @property
    def is_gaussian(self) -> bool:
        return self.native.is_gaussian

    def _view(self, a, lead):
        return spatial_diagonal(a, lead) if self.diagonal_spatial else a

    @property
    def nngp(self):
        return self._view(self.native.nngp, 2)

    @property
    def ntk(self):
        return self._view(self.native.ntk, 2)

    @property
    def cov1(self):
        return self._view(self.native.cov1, 1)

    @property
    def cov2(self):
        return self._view(self.native.cov2, 1)

    def replace(self, **changes) -> "Kernel":
        """A copy with fields changed: the arrays (``nngp``, ``ntk``, ``cov1``, ``cov2``, in the layout
        of the full kernel), ``is_gaussian``, or this view's own fields (``shape1``, ...)."""
        native = {k: changes.pop(k) for k in ("nngp", "ntk", "cov1", "cov2", "is_gaussian") if k in changes}
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"Kernel.replace: unknown or fixed fields {sorted(unknown)}")
        return dataclasses.replace(self, native=self.native.replace(**native), **changes)

    def asdict(self) -> dict:
        """Every field by name, as neural-tangents' ``Kernel.asdict``."""
        names = ("nngp", "ntk", "cov1", "cov2", "x1_is_x2", "is_gaussian", "is_reversed", "is_input",
                 "diagonal_batch", "diagonal_spatial", "shape1", "shape2", "batch_axis", "channel_axis",
                 "mask1", "mask2")
        return {name: getattr(self, name) for name in names}


jax.tree_util.register_dataclass(Kernel, data_fields=["native"],
                                 meta_fields=["shape1", "shape2", "x1_is_x2", "diagonal_spatial"])


def canonical_get(get, where: str):
    """``(names, single)``: ``get`` (``None``, a string or a tuple/list of strings) as a tuple of
    names (``None`` stays ``None``) and whether it was a single string."""
    if get is None:
        return None, False
    if isinstance(get, str):
        return (get,), True
    if isinstance(get, (tuple, list)) and get and all(isinstance(g, str) for g in get):
        return tuple(get), False
    raise ValueError(f"{where}: get must be None, a string or a tuple of strings, got {get!r}")


@functools.lru_cache(maxsize=None)
def _namedtuple(type_name: str, fields: tuple):
    return collections.namedtuple(type_name, fields)


def pack(values: dict, names, single: bool, type_name: str):
    """``values[names[0]]`` when ``single``, else a namedtuple ``type_name`` of ``names`` in order
    (neural-tangents' ``AnalyticKernel``, ``EmpiricalKernel``, ``MonteCarloKernel``, ``Gaussians``)."""
    if single:
        return values[names[0]]
    return _namedtuple(type_name, tuple(names))(*(values[n] for n in names))
