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
It is one client of :class:`jaxlearn._jaxpr.Interpreter`: a rule per primitive that is affine.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxlearn._jaxpr.equations import bind
from jaxlearn._jaxpr.interpreter import Interpreter
from jaxlearn._jaxpr.primitives import BILINEAR, LINEAR_UNARY
from jaxlearn._jaxpr.tracing import trace

__all__ = ["affine_vmap"]


class _Affine(NamedTuple):
    base: jax.Array   # the value at c = 0
    coefs: jax.Array  # (K,) + base.shape: d value / d c_k


class _Batched(NamedTuple):
    value: jax.Array  # (B,) + shape


def affine_vmap(fn: Callable, params, directions, coords):
    """``jax.vmap(lambda c: fn(params + Σ_k c[k]·directions[k]))(coords)`` with the work that is
    affine in ``c`` done once (module docstring).

    ``params``: a pytree; ``directions``: a sequence of ``K`` pytrees like ``params``; ``coords``:
    ``(B, K)``. Floating leaves move (``c`` cast to the leaf's dtype), other leaves stay. Returns
    ``fn``'s output pytree with a leading ``B`` axis on every leaf.
    """
    leaves = jax.tree.leaves(params)
    dir_leaves = [jax.tree.leaves(d) for d in directions]
    traced = trace(fn, params)
    inputs = []
    for i, leaf in enumerate(leaves):
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            inputs.append(_Affine(leaf, jnp.stack([jnp.asarray(d[i], leaf.dtype) for d in dir_leaves])))
        else:
            inputs.append(leaf)
    outs = _AffineEvaluator(coords).run(traced.program, inputs)
    return jax.tree.unflatten(traced.out_tree, [_batched(v, coords) for v in outs])


def _batched(v, coords):
    """``v`` with a leading ``B`` axis."""
    if isinstance(v, _Batched):
        return v.value
    if isinstance(v, _Affine):
        c = coords.astype(v.base.dtype)
        return v.base[None] + jnp.tensordot(c, v.coefs, axes=1)
    v = jnp.asarray(v)
    return jnp.broadcast_to(v, (coords.shape[0],) + v.shape)


def _each(fn, a: _Affine) -> _Affine:
    """A linear ``fn`` applied to the base and to every coefficient."""
    return _Affine(fn(a.base), jax.vmap(fn)(a.coefs))


class _AffineEvaluator(Interpreter):
    """Values: arrays (constant in ``c``), :class:`_Affine` or :class:`_Batched`. An equation of
    constants is bound once; one with a batched input, or without an affine rule for its inputs,
    is batched (:meth:`default_rule`); the rules below keep affine inputs affine."""

    def __init__(self, coords):
        self.coords = coords

    def equation(self, eqn, args):
        moving = [isinstance(a, (_Affine, _Batched)) for a in args]
        if not any(moving):
            return bind(eqn, args)
        if eqn.primitive.name not in self.enters and any(isinstance(a, _Batched) for a in args):
            return self.default_rule(eqn, args)
        return super().equation(eqn, args)

    def default_rule(self, eqn, args):
        """Not affine in its inputs as given: evaluated at every point, inputs materialised."""
        moving = [isinstance(a, (_Affine, _Batched)) for a in args]
        batched = [_batched(a, self.coords) if m else a for a, m in zip(args, moving)]
        in_axes = [0 if m else None for m in moving]
        outs = jax.vmap(lambda *a: bind(eqn, list(a)), in_axes=in_axes)(*batched)
        return [_Batched(o) for o in outs]

    def linear_unary(self, eqn, args):
        if len(args) != 1:
            return self.default_rule(eqn, args)
        return [_each(lambda x: bind(eqn, [x])[0], args[0])]

    def convert(self, eqn, args):
        # Widening (or same-width) float conversions are exact, so linear; narrowing rounds each of
        # base and coefficients separately, which is not the rounding of their sum: materialise.
        new_dtype = eqn.params.get("new_dtype")
        if (new_dtype is not None and jnp.issubdtype(new_dtype, jnp.floating)
                and jnp.dtype(new_dtype).itemsize >= args[0].base.dtype.itemsize):
            return [_each(lambda x: bind(eqn, [x])[0], args[0])]
        return self.default_rule(eqn, args)

    def add_or_sub(self, eqn, args):
        if len(args) != 2:
            return self.default_rule(eqn, args)
        x, y = args
        kx, ky = isinstance(x, _Affine), isinstance(y, _Affine)
        base = bind(eqn, [x.base if kx else x, y.base if ky else y])[0]
        zero = jnp.zeros((), base.dtype)
        cx = x.coefs if kx else zero
        cy = y.coefs if ky else zero
        coefs = cx + cy if eqn.primitive.name == "add" else cx - cy
        return [_Affine(base, jnp.broadcast_to(coefs, (self.coords.shape[1],) + base.shape))]

    def bilinear(self, eqn, args):
        """Linear in the affine operand when the other is constant (else quadratic: batched)."""
        kinds = [isinstance(a, _Affine) for a in args]
        if sum(kinds) != 1:
            return self.default_rule(eqn, args)
        i = kinds.index(True)
        other = args[1 - i]
        return [_each(lambda x: bind(eqn, [x, other] if i == 0 else [other, x])[0], args[i])]

    def div(self, eqn, args):
        if [isinstance(a, _Affine) for a in args] != [True, False]:
            return self.default_rule(eqn, args)
        a, other = args
        return [_each(lambda x: bind(eqn, [x, other])[0], a)]

    def concatenate(self, eqn, args):
        k = self.coords.shape[1]
        bases = [a.base if isinstance(a, _Affine) else a for a in args]
        coefs = [a.coefs if isinstance(a, _Affine) else jnp.zeros((k,) + jnp.shape(a), jnp.result_type(a))
                 for a in args]
        return [_Affine(bind(eqn, bases)[0], jax.vmap(lambda *c: bind(eqn, list(c))[0])(*coefs))]

    # reduce_precision counts as linear: it rounds base and coefficients separately (narrowing
    # conversions, which do the same, are materialised instead).
    rules = {**dict.fromkeys(LINEAR_UNARY | {"reduce_precision"}, linear_unary),
             "convert_element_type": convert, "add": add_or_sub, "sub": add_or_sub,
             **dict.fromkeys(BILINEAR, bilinear), "div": div, "concatenate": concatenate}
