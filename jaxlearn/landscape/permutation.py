"""Permutation symmetry of hidden units, and alignment of two networks by it (Git Re-Basin).

Permuting the hidden units of a layer — its output axis, its bias, the per-unit parameters and
statistics of norm layers of that width, and the next weight layer's input axis, all by the same
permutation — leaves the network function unchanged. Ainsworth, Hayase & Srinivasa (2022), "Git
Re-Basin: Merging Models modulo Permutation Symmetries", align a network ``b`` to ``a`` by such
permutations before interpolating, which removes most of the loss barrier between them.

**Spec.** A :class:`PermutationSpec` names *groups* (one per permutable hidden axis, of size
``n``) and gives each affected leaf of ``params`` (and ``state``) one entry per axis: ``None`` or
``(group, repeats)``; leaves are named by ``jax.tree_util.keystr`` of their path (``"[0]['W']"``,
flax ``"['Dense_0']['kernel']"``). An axis of length ``repeats·n`` holds ``repeats`` blocks of the
``n`` units, units fastest (index ``o·n + c``): the layout ``Flatten`` gives channels-last
activations, so the Dense after ``Conv → Flatten`` permutes each position's block. Specs come
from :func:`permutation_spec` (``jaxlearn.nn`` models) or :func:`spec_from_pairs` (by hand, flax).

**Permutations.** ``perms`` maps each group to an int array ``π`` of shape ``(n,)``;
:func:`apply_permutation` makes unit ``i`` of the new network unit ``π[i]`` of the old one
(``new = take(old, π, axis)`` on every axis of the group).

**Matching** (host-side; :mod:`jaxlearn.landscape.matching`): weight and activation matching
find the perms that align ``b`` to ``a``.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr, tree_flatten_with_path

from jaxlearn._checks import concrete
from jaxlearn._types import ArrayLike, PyTree
from jaxlearn.nn.core import Layer, Spec, as_spec

__all__ = ["PermutationSpec", "permutation_spec", "spec_from_pairs", "apply_permutation", "hidden_activations"]

_FIXED = "<fixed>"  # the network's input and output axes: never permuted
_SAME = {"Relu", "Tanh", "Sigmoid", "Gelu", "Softplus", "Erf", "Sin", "Elementwise", "Identity", "GlobalAvgPool"}
_SAME_PREFIX = ("ABRelu(", "LeakyRelu(", "AvgPool(", "Dropout(")


@dataclasses.dataclass(frozen=True)
class PermutationSpec:
    """``sizes``: group → number of units ``n``; ``params`` / ``state``: ``keystr`` of a leaf path →
    a tuple with one entry per axis of the leaf, ``None`` or ``(group, repeats)`` (module docstring).
    Leaves not listed are not permuted. Plain Python data: close over it under ``jit``."""

    sizes: dict
    params: dict
    state: dict = dataclasses.field(default_factory=dict)


# -- checks and application ----------------------------------------------------------------------
def leaves_by_path(tree) -> dict:
    """``{keystr(path): leaf}`` of ``tree``: the leaf names a :class:`PermutationSpec` uses."""
    return {keystr(path): leaf for path, leaf in tree_flatten_with_path(tree)[0]}


def check_spec(spec, tree, name):
    """Checks that ``spec`` fits ``tree`` (``name``: ``"params"`` or ``"state"``, the entries checked):
    every named leaf exists, has one entry per axis, and each permuted axis is ``repeats·n`` long.
    One-line ``TypeError``/``ValueError`` naming the leaf, axis and sizes."""
    if not isinstance(spec, PermutationSpec):
        raise TypeError(f"spec: expected a PermutationSpec, got {type(spec).__name__}")
    leaves = leaves_by_path(tree)
    for key, entries in (spec.params if name == "params" else spec.state).items():
        if key not in leaves:
            raise ValueError(f"spec: names leaf {key} of {name}, which {name} does not have")
        shape = jnp.shape(leaves[key])
        if len(entries) != len(shape):
            raise ValueError(f"spec: leaf {key} of {name} has {len(shape)} axes (shape {shape}), "
                             f"the spec gives {len(entries)}")
        for axis, entry in enumerate(entries):
            if entry is None:
                continue
            group, repeats = entry
            if group not in spec.sizes:
                raise ValueError(f"spec: leaf {key} axis {axis} names group {group!r}, which spec.sizes lacks")
            if shape[axis] != repeats * spec.sizes[group]:
                raise ValueError(f"spec: leaf {key} of {name} has size {shape[axis]} on axis {axis}, but group "
                                 f"{group!r} expects {repeats} x {spec.sizes[group]} = {repeats * spec.sizes[group]}")


def _check_perms(spec, perms):
    if not isinstance(perms, dict) or set(perms) != set(spec.sizes):
        got = sorted(perms) if isinstance(perms, dict) else type(perms).__name__
        raise ValueError(f"perms: expected a dict with one permutation per group {sorted(spec.sizes)}, got {got}")
    for group, n in spec.sizes.items():
        p = perms[group]
        if jnp.shape(p) != (n,) or not jnp.issubdtype(jnp.result_type(p), jnp.integer):
            raise ValueError(f"perms[{group!r}]: expected an integer array of shape ({n},), got "
                             f"{jnp.result_type(p)}{list(jnp.shape(p))}")
        known = concrete(p)
        if known is None:
            continue  # traced: cannot check
        if not np.array_equal(np.sort(known), np.arange(n)):
            raise ValueError(f"perms[{group!r}]: not a permutation of 0..{n - 1}")


def _take(xp, x, perm, axis, repeats):
    """``x`` with the units of ``axis`` (``repeats`` blocks, units fastest) reordered by ``perm``."""
    shape = x.shape
    y = x.reshape(shape[:axis] + (repeats, shape[axis] // repeats) + shape[axis + 1:])
    return xp.take(y, perm, axis=axis + 1).reshape(shape)


def permute_leaf(xp, x, entries, perms, skip=None):
    """``x`` with every axis that ``entries`` (its spec entries) assigns a group reordered by that
    group's permutation in ``perms``, except axis ``skip``; ``xp``: ``numpy`` or ``jax.numpy``."""
    for axis, entry in enumerate(entries):
        if entry is not None and axis != skip:
            x = _take(xp, x, perms[entry[0]], axis, entry[1])
    return x


# Jitted with the spec's entries as a static (hashable) tuple: eagerly, every take of every leaf
# would be compiled on its own.
@partial(jax.jit, static_argnames="axes")
def _permute_tree(tree, axes, perms):
    axes = dict(axes)
    flat, treedef = tree_flatten_with_path(tree)
    return jax.tree.unflatten(treedef, [permute_leaf(jnp, leaf, axes[keystr(p)], perms) if keystr(p) in axes else leaf
                                        for p, leaf in flat])


def apply_permutation(spec: PermutationSpec, perms: dict, params: PyTree,
                      state: PyTree | None = None) -> PyTree | tuple[PyTree, PyTree]:
    """``params`` (and ``state``) with every group's units permuted: on each listed axis,
    ``new = take(old, perms[group], axis)`` (blockwise for ``repeats > 1``), so the new network's
    unit ``i`` is the old unit ``perms[group][i]`` and the network computes the same function.

    Returns ``params``, or ``(params, state)`` when ``state`` is given (e.g. BatchNorm running
    statistics, which must move with their units; with ``state=None`` the spec's state leaves
    are skipped). Pure: ``jit`` (close over ``spec``), ``vmap`` over ``perms``, ``grad`` w.r.t.
    ``params``. ValueErrors name the leaf, axis and sizes where ``spec``, ``perms`` and the trees
    disagree.
    """
    check_spec(spec, params, "params")
    _check_perms(spec, perms)
    new = _permute_tree(params, tuple(sorted(spec.params.items())), perms)
    if state is None:
        return new
    check_spec(spec, state, "state")
    return new, _permute_tree(state, tuple(sorted(spec.state.items())), perms)


def spec_from_pairs(params: PyTree, pairs: dict, state: PyTree | None = None) -> PermutationSpec:
    """A :class:`PermutationSpec` written by hand, e.g. for a flax linen MLP::

        spec_from_pairs(params, {
            "h0": [("Dense_0/kernel", 1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)],
            "h1": [("Dense_1/kernel", 1), ("Dense_1/bias", 0), ("Dense_2/kernel", 0)],
        })

    ``pairs``: group → list of ``(path, axis)`` or ``(path, axis, repeats)``; ``path`` is the leaf's
    keys joined by ``/`` (or a tuple of keys; list indices as ints or digits) in ``params`` or, when
    given, ``state`` (e.g. ``"batch_stats/BatchNorm_0/mean"``). The group size is the axis length
    divided by ``repeats``; it must agree across the group's pairs. Errors name the pair.
    """
    if not isinstance(pairs, dict):
        raise TypeError(f"pairs: expected a dict group -> [(path, axis), ...], got {type(pairs).__name__}")
    index = {}  # path as a tuple of strings -> [(tree, keystr, shape)]
    for tree_name, tree in (("params", params),) + (() if state is None else (("state", state),)):
        for path, leaf in tree_flatten_with_path(tree)[0]:
            keys = tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)
            index.setdefault(keys, []).append((tree_name, keystr(path), jnp.shape(leaf)))
    sizes, axes = {}, {"params": {}, "state": {}}
    for group, items in pairs.items():
        for item in items:
            if not isinstance(item, tuple) or len(item) not in (2, 3):
                raise ValueError(f"pairs[{group!r}]: expected (path, axis) or (path, axis, repeats), got {item!r}")
            path, axis, repeats = item if len(item) == 3 else (*item, 1)
            where = f"pairs[{group!r}]: {path!r}"
            found = index.get(tuple(path.split("/")) if isinstance(path, str) else tuple(map(str, path)), [])
            if len(found) != 1:
                lacks = "names no leaf of params" + ("" if state is None else " or state")
                raise ValueError(f"{where} {'is in both params and state' if found else lacks}")
            tree, key, shape = found[0]
            if not (isinstance(axis, int) and -len(shape) <= axis < len(shape) and isinstance(repeats, int)
                    and repeats >= 1 and shape[axis] % repeats == 0):
                raise ValueError(f"{where}: axis {axis!r}, repeats {repeats!r} do not fit the leaf's shape {shape}")
            axis, n = axis % len(shape), shape[axis] // repeats
            if sizes.setdefault(group, n) != n:
                raise ValueError(f"{where} axis {axis} has {n} units, other pairs of the group {sizes[group]}")
            entries = list(axes[tree].get(key, (None,) * len(shape)))
            if entries[axis] is not None:
                raise ValueError(f"{where} axis {axis} is already in group {entries[axis][0]!r}")
            entries[axis] = (group, repeats)
            axes[tree][key] = tuple(entries)
    return PermutationSpec(sizes, axes["params"], axes["state"])


# -- specs from jaxlearn.nn models ---------------------------------------------------------------
def _children(layer, where):
    """The layers a ``serial``/``parallel`` combinator was built from (``Layer.children``)."""
    children = getattr(layer, "children", ())
    if not isinstance(children, tuple) or not children:
        raise ValueError(f"model: {where} cannot be permuted: its sub-layers cannot be found; use spec_from_pairs")
    return children


def _kind(layer) -> str | None:
    name = getattr(layer, "name", "")
    for prefix, kind in (("serial(", "serial"), ("parallel(", "parallel"), ("fanout(", "fanout"), ("Dense(", "weight"),
                         ("Conv(", "weight"), ("Embedding(", "embedding")):
        if name.startswith(prefix):
            return kind
    if name in _SAME or name.startswith(_SAME_PREFIX):
        return "same"
    return {"BatchNorm": "norm", "LayerNorm": "norm", "Flatten": "flatten", "fanin_sum": "fanin_sum"}.get(name)


class _Walk:
    """Union–find over unit groups while walking a model; records leaf axes and (optionally) the
    activations entering each weight layer."""

    def __init__(self):
        self.parent, self.size, self.order = {_FIXED: _FIXED}, {}, {_FIXED: -1}
        self.axes = {"params": {}, "state": {}}
        self.sites = []

    def new(self, path, n):
        gid = "/".join(map(str, path))
        self.parent[gid], self.size[gid], self.order[gid] = gid, n, len(self.order)
        return (gid, 1)

    def find(self, g):
        while self.parent[g] != g:
            g = self.parent[g]
        return g

    def union(self, tags, where):
        if len({r for _, r in tags}) > 1:
            raise ValueError(f"model: {where} cannot be permuted: it joins differently laid out channels {tags}")
        roots = sorted({self.find(g) for g, _ in tags}, key=self.order.get)
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return (roots[0], tags[0][1])

    def mark(self, tree, path, leaf, entries):
        self.axes[tree][keystr(tuple(jax.tree_util.SequenceKey(p) if isinstance(p, int) else jax.tree_util.DictKey(p)
                                     for p in path + (leaf,)))] = entries

    def layer(self, layer, spec, tag, path, params, state, x):
        kind = _kind(layer)
        where = f"layer {'/'.join(map(str, path)) or '<root>'} ({getattr(layer, 'name', type(layer).__name__)})"
        if kind in ("serial", "parallel"):
            children = _children(layer, where)
            none = ((),) * len(children)  # params/state () stand for "nothing in any child"
            params = params if isinstance(params, tuple) and len(params) == len(children) else none
            state = state if isinstance(state, tuple) and len(state) == len(children) else none
            if kind == "parallel":
                xs = (None,) * len(children) if x is None else x
                outs = [self.layer(*args, path + (i,), p, st, xi) for i, (*args, p, st, xi)
                        in enumerate(zip(children, spec, tag, params, state, xs))]
                return tuple(o[0] for o in outs), None if x is None else tuple(o[1] for o in outs)
            for i, (child, p, s) in enumerate(zip(children, params, state)):
                out_spec = child.output_spec(spec)
                tag, x = self.layer(child, spec, tag, path + (i,), p, s, x)
                spec = out_spec
            return tag, x
        if kind is None:
            raise ValueError(f"model: {where} cannot be permuted: permutation_spec knows Dense/Conv/Embedding, "
                             "BatchNorm/LayerNorm, elementwise activations, pooling, Flatten, Dropout, serial, "
                             "residual (fanout/parallel/fanin_sum); give the spec by hand with spec_from_pairs")
        y = None if x is None else layer.apply_fn(params, state, x, None, False)[0]
        if kind == "fanout":
            return (tag,) * len(layer.output_spec(spec)), y
        if kind == "fanin_sum":
            return self.union(list(tag), where), y
        if kind == "flatten":
            return (tag[0], tag[1] * math.prod(spec.shape[1:-1])), y
        if kind == "norm":
            for leaf in params:
                self.mark("params", path, leaf, (tag,))
            for leaf in state if isinstance(state, dict) else ():
                self.mark("state", path, leaf, (tag,))
        if kind in ("weight", "embedding"):
            ndim = len(params["W"].shape)
            out = self.new(path, params["W"].shape[-1])
            entries = [None] * ndim
            entries[-1] = out
            if kind == "weight":
                if tag[1] != 1 and ndim > 2:
                    raise ValueError(f"model: {where} cannot be permuted: its input channels are flattened positions")
                entries[-2] = tag
                if x is not None:
                    self.sites.append((tag[0], x))
            self.mark("params", path, "W", tuple(entries))
            if "b" in params:
                self.mark("params", path, "b", (out,))
            return out, y
        return tag, y

    def finish(self, tag):
        tags = list(tag) if isinstance(tag, tuple) and isinstance(tag[0], tuple) else [tag]
        self.union(tags + [(_FIXED, tags[0][1])], "the output")

        def entry(e):
            return None if e is None or self.find(e[0]) == _FIXED else (self.find(e[0]), e[1])

        axes = {t: {k: tuple(entry(e) for e in v) for k, v in a.items()} for t, a in self.axes.items()}
        axes = {t: {k: v for k, v in a.items() if any(e is not None for e in v)} for t, a in axes.items()}
        sizes = {g: self.size[g] for a in axes.values() for v in a.values() for e in v if e is not None for g in [e[0]]}
        sizes = dict(sorted(sizes.items(), key=lambda kv: self.order[kv[0]]))
        return PermutationSpec(sizes, axes["params"], axes["state"])


def _walk(model, input_spec, params=None, state=None, x=None):
    if not isinstance(model, Layer):
        raise TypeError(f"model: expected a jaxlearn.nn Layer, got {type(model).__name__}")
    spec = as_spec(input_spec)
    if params is None:
        params, state = jax.eval_shape(lambda k: model.init(k, spec), jax.random.key(0))
    walk = _Walk()
    tag, _ = walk.layer(model, spec, jax.tree.map(lambda _: (_FIXED, 1), spec), (), params, state, x)
    return walk, walk.finish(tag)


def permutation_spec(model: Layer, input_spec: Spec) -> PermutationSpec:
    """The permutation symmetries of a ``jaxlearn.nn`` model, derived from its layers.

    Each Dense/Conv/Embedding output is a group (named by the layer's path in the nested
    ``serial``/``parallel`` tuples, e.g. ``"0"`` or ``"2/1/0/3"``) acting on its ``W`` output
    axis, its ``b``, the ``scale``/``offset`` (and BatchNorm ``mean``/``var`` state) of norm layers
    on those units, and the next weight layer's input axis — through elementwise activations,
    Dropout, pooling and Flatten (blockwise, ``repeats`` = positions). A residual stream
    (``fanout → parallel → fanin_sum``, i.e. ``nn.residual``) shares one permutation across all
    the layers whose outputs are summed. The network's output units are not permuted.

    ``input_spec``: as for ``model.init``. Raises a ValueError naming the layer (path and name)
    for layers outside this list (``fanin_concat``, attention, flax adapters: use
    :func:`spec_from_pairs`).
    """
    return _walk(model, input_spec)[1]


def hidden_activations(model: Layer, params: PyTree, x: ArrayLike, state: PyTree = ()) -> dict:
    """The activations that :func:`~jaxlearn.landscape.matching.activation_matching` matches, for a
    ``jaxlearn.nn`` model: group → list of the arrays (``(N, ..., repeats·n)``, units fastest)
    entering the weight layers that consume the group (post-activation, post-norm; eval mode).
    Group names are those of :func:`permutation_spec`. Pure (jit/vmap)."""
    walk, spec = _walk(model, x, params, state, x)
    out = {g: [] for g in spec.sizes}
    for gid, a in walk.sites:
        if walk.find(gid) != _FIXED:
            out[walk.find(gid)].append(a)
    return out
