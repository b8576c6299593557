"""Tracing functions of pytrees into one closed jaxpr.

:func:`trace` flattens the arguments and the result, so a program's inputs are the leaves of the
arguments and its outputs the leaves of the result, with the tree structures to go back.
:func:`trace_per_example` traces a batched model on one example, the view of a per-example
analysis; its program is *inlined*: the calls whose value and derivatives are their program's
(``jit``) are dissolved into their equations, so that one flat list of equations holds every
operation outside custom rules and loops.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

from jaxlearn._jaxpr.interpreter import Interpreter

__all__ = ["Traced", "trace", "trace_per_example", "inline"]


class Traced(NamedTuple):
    """``program``: a ``ClosedJaxpr`` whose inputs are the leaves of the arguments (in
    ``jax.tree`` order) and whose outputs are the leaves of the result; ``in_tree``: the
    structure of the argument tuple; ``out_tree``/``out_shapes``: the result's structure, and the
    result as a pytree of ``jax.ShapeDtypeStruct``."""

    program: Any
    in_tree: Any
    out_tree: Any
    out_shapes: Any


def trace(fn: Callable, *args, inline_calls: bool = False) -> Traced:
    """``fn(*args)`` traced abstractly (``args``: pytrees of arrays or ``jax.ShapeDtypeStruct``);
    ``inline_calls``: dissolve ``jit`` calls (:func:`inline`)."""
    program, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    if inline_calls:
        program = inline(program)
    return Traced(program, jax.tree.structure(args), jax.tree.structure(out_shapes), out_shapes)


def trace_per_example(f: Callable, params, x_example) -> Traced:
    """``f(params, x_example[None])[0]``: a model ``f(params, x)`` of a batch ``x (N, ...)`` on one
    example ``x_example`` (no batch axis), calls inlined. Inputs: the leaves of ``params``, then
    ``x_example``."""
    return trace(lambda p, x: f(p, x[None])[0], params, x_example, inline_calls=True)


class _Inliner(Interpreter):
    """Re-binds every equation under the current trace, entering the transparent calls."""


def inline(program):
    """``program`` (a ``ClosedJaxpr``) with its transparent calls (``jit``,
    :data:`~jaxlearn._jaxpr.primitives.TRANSPARENT_CALLS`) replaced by their equations,
    recursively; other equations are unchanged."""
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in program.in_avals]
    return jax.make_jaxpr(lambda *args: _Inliner().run(program, args))(*specs)
