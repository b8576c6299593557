"""Checks that pytree arguments (directions, vectors, probes, points) are shaped like params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.tree_util import keystr, tree_flatten_with_path

__all__ = ["check_like"]


def _paths(tree) -> list[str]:
    return [keystr(path) for path, _ in tree_flatten_with_path(tree)[0]]


def check_like(name: str, tree, ref, ref_name: str = "params", leading: tuple = ()) -> None:
    """ValueError naming ``name`` and the first leaf path where ``tree`` differs from ``ref``
    (structure, then shape; ``tree``'s leaves must have shape ``leading + ref_leaf.shape``)."""
    if jax.tree.structure(tree) != jax.tree.structure(ref):
        got, want = _paths(tree), _paths(ref)
        for g, w in zip(got, want):
            if g != w:
                raise ValueError(f"{name}: structure differs from {ref_name} at leaf {g or '<root>'} "
                                 f"(expected {w or '<root>'})")
        if len(got) != len(want):
            extra = got[len(want)] if len(got) > len(want) else want[len(got)]
            which = "extra" if len(got) > len(want) else "missing"
            raise ValueError(f"{name}: structure differs from {ref_name}: {which} leaf {extra or '<root>'}")
        raise ValueError(f"{name}: structure differs from {ref_name}: {jax.tree.structure(tree)} "
                         f"vs {jax.tree.structure(ref)}")
    for (path, a), b in zip(tree_flatten_with_path(tree)[0], jax.tree.leaves(ref)):
        want = tuple(leading) + tuple(jnp.shape(b))
        if tuple(jnp.shape(a)) != want:
            raise ValueError(f"{name}: leaf {keystr(path) or '<root>'} has shape {tuple(jnp.shape(a))}, "
                             f"expected {want} as in {ref_name}")
