"""One compiled program for a library function called eagerly: :func:`jit_when_eager`.

Called outside ``jit``, a function such as ``kernels.empirical`` or ``landscape.top_eigenvalues``
dispatches each of its operations separately, and XLA compiles each new (operation, shape) once:
dozens of small compilations on a first call (an empirical NTK of a small MLP: 72 of them, 1.7 s of
CPU, against 0.17 s as one program). :func:`jit_when_eager` runs the function through one
``jax.jit`` instead, with every array of its arguments dynamic and everything else (callables,
Python numbers, strings, ``None``, tuple structure) static. Inside a transformation (an argument
traced, a callable argument closing over a traced value, or any call while a transformation traces) it
calls the function directly, so an enclosing ``jit``/``vmap``/``grad`` sees the same operations as
before and no traced value is kept in JAX's compilation cache.

The compiled program is cached by JAX per function, static values (with their types, so ``1``,
``1.0`` and ``True`` do not share a program) and argument shapes/dtypes. Callables are compared by
identity: passing the same ``apply_fn`` object (e.g. ``model.apply``) again reuses the program, a
fresh ``lambda`` per call compiles again, as it would under the caller's own ``jax.jit``. Where a
static value cannot be hashed, the function runs eagerly as before.

The arguments are rebuilt from their leaves inside the program, so a list or dict passed in is a
copy there (the wrapped functions do not mutate their arguments). The wrapped function must trace:
validation that needs concrete values (error messages naming an argument) belongs before the call,
in the public function.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import is_traced


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _program(fn, treedef, statics, *arrays):
    arrays = iter(arrays)
    leaves = [next(arrays) if typed is None else typed[1] for typed in statics]
    args, kwargs = jax.tree.unflatten(treedef, leaves)
    return fn(*args, **kwargs)


def _closes_over_tracer(leaf) -> bool:
    fn = getattr(leaf, "__func__", leaf)  # a bound method: its function; its instance is checked below
    cells = getattr(fn, "__closure__", None) or ()
    bound = getattr(leaf, "__self__", None)
    contents = [bound]
    for cell in cells:
        try:
            contents.append(cell.cell_contents)
        except ValueError:  # a cell not yet filled
            pass
    return is_traced(contents)


def _trace_context():
    """JAX's trace context and its eager trace type, where this JAX has them (a private API, read
    once at import); ``None`` otherwise."""
    try:
        from jax._src import core
        core.trace_ctx.trace  # noqa: B018 — present in this JAX?
        return core.trace_ctx, core.EvalTrace
    except (ImportError, AttributeError):
        return None


_TRACE_CONTEXT = _trace_context()


def _staging() -> bool:
    """Whether this call runs under a transformation (``jit``, ``vmap``, ``grad``, ...): JAX's
    current trace is not the eager one. Read from JAX's trace context where this JAX has it (0.1 µs);
    otherwise by staging a constant (20–70 µs per call, an eager dispatch)."""
    if _TRACE_CONTEXT is None:
        return isinstance(jnp.zeros(()), jax.core.Tracer)
    context, eager = _TRACE_CONTEXT
    return not isinstance(context.trace, eager)


def eager(leaves) -> bool:
    """Whether a call with these argument leaves runs outside every transformation: no leaf traced,
    no callable leaf closing over a traced value, nothing tracing (:func:`_staging`)."""
    return not (is_traced(leaves) or any(callable(leaf) and _closes_over_tracer(leaf) for leaf in leaves)
                or _staging())


def jit_when_eager(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)``, as one compiled program when called outside transformations (module
    docstring); ``fn`` must return a pytree of arrays."""
    leaves, treedef = jax.tree.flatten((args, kwargs))
    if not eager(leaves):
        return fn(*args, **kwargs)
    statics = tuple(None if _is_array(leaf) else (type(leaf), leaf) for leaf in leaves)
    try:
        hash((fn, treedef, statics))
    except TypeError:
        return fn(*args, **kwargs)
    return _program(fn, treedef, statics, *(leaf for leaf in leaves if _is_array(leaf)))
