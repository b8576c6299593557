"""Evaluate ``fn`` at many points of an affine subspace, sharing the work that is affine in them.

A loss surface evaluates ``fn(θ + Σ_k c_k d_k)`` at ``B`` coordinate vectors ``c`` (grid points).
The straightforward program (``vmap`` over ``c``) repeats every operation ``B`` times, but the
first operations of a network are *affine in* ``c``: the first layer's pre-activation is
``x (W + Σ c_k U_k) + b + Σ c_k u_k = (x W + b) + Σ c_k (x U_k + u_k)``. :func:`affine_vmap` traces
``fn`` once and evaluates its program on a three-way representation of every intermediate value:

* constant — independent of ``c`` (the data, non-float leaves): computed once;
* affine — ``base + Σ_k c_k · coef_k``, kept as ``base`` and ``K`` coefficients: linear
  operations (``add``, ``sub``, ``neg``, ``mul``/``div`` by a constant, ``dot_general`` and
  ``conv_general_dilated`` with a constant operand, reshapes, transposes, broadcasts, slices,
  sums, concatenation, dtype conversion) act on ``base`` and on each coefficient: ``K + 1``
  evaluations instead of ``B``;
* batched — a leading ``B`` axis: the first non-linear operation materialises its affine inputs
  (``base + c @ coefs``, elementwise) and everything after runs under ``vmap``.

For a 64-128-128-10 MLP on a 41×41 grid the first matmul (≈ 30% of the FLOPs) is done 3 times
instead of 1,681 (``benchmarks/landscape.py``). Results equal ``vmap`` up to float rounding
(the affine products are summed in a different order). Sub-programs (``jit``) are entered
recursively; other higher-order primitives (``custom_jvp``/``custom_vjp`` calls, loops) are
batched as a whole. The function is pure JAX, so it composes with ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.extend.core import Literal

__all__ = ["affine_vmap"]


class _Affine(NamedTuple):
    base: jax.Array   # the value at c = 0
    coefs: jax.Array  # (K,) + base.shape: d value / d c_k


class _Batched(NamedTuple):
    value: jax.Array  # (B,) + shape


# Linear in their single (array) operand: apply to the base and to each coefficient.
_STRUCTURAL = {"reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "reduce_sum", "slice",
               "rev", "copy", "copy_p", "neg", "real", "reduce_precision"}
# Bilinear: linear in one operand when the other is constant.
_BILINEAR = {"mul", "dot_general", "conv_general_dilated"}


def affine_vmap(fn: Callable, params, directions, coords):
    """``jax.vmap(lambda c: fn(params + Σ_k c[k]·directions[k]))(coords)`` with the work that is
    affine in ``c`` done once (module docstring).

    ``params``: a pytree; ``directions``: a sequence of ``K`` pytrees like ``params``; ``coords``:
    ``(B, K)``. Floating leaves move (``c`` cast to the leaf's dtype), other leaves stay. Returns
    ``fn``'s output pytree with a leading ``B`` axis on every leaf.
    """
    leaves, treedef = jax.tree.flatten(params)
    dir_leaves = [jax.tree.leaves(d) for d in directions]
    closed = jax.make_jaxpr(lambda *a: fn(jax.tree.unflatten(treedef, a)))(*leaves)
    out_tree = jax.tree.structure(jax.eval_shape(lambda *a: fn(jax.tree.unflatten(treedef, a)), *leaves))
    inputs = []
    for i, leaf in enumerate(leaves):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            inputs.append(_Affine(leaf, jnp.stack([jnp.asarray(d[i], leaf.dtype) for d in dir_leaves])))
        else:
            inputs.append(leaf)
    outs = _eval(closed.jaxpr, closed.consts, inputs, coords)
    outs = [_batched(v, coords) for v in outs]
    return jax.tree.unflatten(out_tree, outs)


def _batched(v, coords):
    """``v`` with a leading ``B`` axis."""
    if isinstance(v, _Batched):
        return v.value
    if isinstance(v, _Affine):
        c = coords.astype(v.base.dtype)
        return v.base[None] + jnp.tensordot(c, v.coefs, axes=1)
    v = jnp.asarray(v)
    return jnp.broadcast_to(v, (coords.shape[0],) + v.shape)


def _bind(eqn, args):
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = params if isinstance(params, tuple) else ((), params)  # older JAX: (subfuns, params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *args, **params)
    return out if eqn.primitive.multiple_results else [out]


def _linear(eqn, args, coords):
    """The affine rule, or None when ``eqn`` is not affine in its inputs as given."""
    name = eqn.primitive.name
    kinds = [isinstance(a, _Affine) for a in args]
    if name in _STRUCTURAL and len(args) == 1:
        (a,) = args
        return _Affine(_bind(eqn, [a.base])[0], jax.vmap(lambda c: _bind(eqn, [c])[0])(a.coefs))
    # Widening (or same-width) float conversions are exact, so linear; narrowing rounds each of
    # base and coefficients separately, which is not the rounding of their sum: materialise.
    new_dtype = eqn.params.get("new_dtype") if name == "convert_element_type" else None
    if (new_dtype is not None and jnp.issubdtype(new_dtype, jnp.floating)
            and jnp.dtype(new_dtype).itemsize >= args[0].base.dtype.itemsize):
        a = args[0]
        return _Affine(_bind(eqn, [a.base])[0], jax.vmap(lambda c: _bind(eqn, [c])[0])(a.coefs))
    if name in ("add", "sub") and len(args) == 2:
        x, y = args
        base = _bind(eqn, [x.base if kinds[0] else x, y.base if kinds[1] else y])[0]
        zero = jnp.zeros((), base.dtype)
        cx = x.coefs if kinds[0] else zero
        cy = y.coefs if kinds[1] else zero
        return _Affine(base, jnp.broadcast_to(cx + cy if name == "add" else cx - cy, (coords.shape[1],) + base.shape))
    if name in _BILINEAR and sum(kinds) == 1:
        i = kinds.index(True)
        a, other = args[i], args[1 - i]

        def apply(x):
            return _bind(eqn, [x, other] if i == 0 else [other, x])[0]

        return _Affine(apply(a.base), jax.vmap(apply)(a.coefs))
    if name == "div" and kinds == [True, False]:
        a, other = args
        return _Affine(_bind(eqn, [a.base, other])[0], jax.vmap(lambda c: _bind(eqn, [c, other])[0])(a.coefs))
    if name == "concatenate":
        bases = [a.base if isinstance(a, _Affine) else a for a in args]
        coefs = [a.coefs if isinstance(a, _Affine) else jnp.zeros((coords.shape[1],) + jnp.shape(a), jnp.result_type(a))
                 for a in args]
        return _Affine(_bind(eqn, bases)[0], jax.vmap(lambda *c: _bind(eqn, list(c))[0])(*coefs))
    return None


def _eval(jaxpr, consts, inputs, coords) -> list:
    env = {}

    def read(var):
        return var.val if isinstance(var, Literal) else env[var]

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, inputs):
        env[var] = val
    for eqn in jaxpr.eqns:
        args = [read(v) for v in eqn.invars]
        moving = [isinstance(a, (_Affine, _Batched)) for a in args]
        if not any(moving):
            outs = _bind(eqn, args)
        elif eqn.primitive.name in ("jit", "pjit"):
            inner = eqn.params["jaxpr"]
            outs = _eval(inner.jaxpr, inner.consts, args, coords)
        else:
            affine = None
            if not any(isinstance(a, _Batched) for a in args):
                affine = _linear(eqn, args, coords)
            if affine is not None:
                outs = [affine]
            else:
                batched = [_batched(a, coords) if m else a for a, m in zip(args, moving)]
                in_axes = [0 if m else None for m in moving]
                outs = jax.vmap(lambda *a: _bind(eqn, list(a)), in_axes=in_axes)(*batched)
                outs = [_Batched(o) for o in outs]
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]
