"""Single equations of a jaxpr: binding one to new inputs, the program a call runs, and where
variables are read. The only module of jaxlearn that touches ``jax.extend.core``, JAX's least
stable surface: an upgrade that changes it is fixed here.
"""

from __future__ import annotations

from typing import Iterator

from jax.extend.core import ClosedJaxpr, Literal, jaxprs_in_params

from jaxlearn._jaxpr.primitives import CALLS

__all__ = ["bind", "called_program", "is_literal", "walk", "readers", "as_closed"]


def bind(eqn, invals) -> list:
    """Evaluates equation ``eqn`` on ``invals`` (arrays or tracers, one per ``eqn.invars``) under
    whatever trace is current; returns one value per ``eqn.outvars``.

    The parameters are the primitive's ``get_bind_params`` of the equation's (a call's program
    becomes the function it binds, a custom rule's program and rules become its functions, other
    parameters, ``sharding`` included, pass unchanged), bound under the equation's own context
    (``eqn.ctx``: the settings it was traced under)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def as_closed(program) -> ClosedJaxpr:
    """``program`` (a ``Jaxpr`` without constants, or a ``ClosedJaxpr``) as a ``ClosedJaxpr``."""
    return program if isinstance(program, ClosedJaxpr) else ClosedJaxpr(program, ())


def called_program(eqn) -> ClosedJaxpr | None:
    """The program a call equation (:data:`~jaxlearn._jaxpr.primitives.CALLS`) runs on its own
    inputs, else ``None``."""
    param = CALLS.get(eqn.primitive.name)
    return None if param is None else as_closed(eqn.params[param])


def is_literal(v) -> bool:
    """Whether an equation operand is a literal (a constant written into the equation; it has
    ``.val`` and ``.aval`` but is not hashable) rather than a variable."""
    return isinstance(v, Literal)


def walk(program) -> Iterator:
    """Every equation of ``program`` (a ``Jaxpr`` or ``ClosedJaxpr``) in order, each followed by
    the equations of the programs in its parameters (calls, loop bodies, branches), recursively."""
    jaxpr = program.jaxpr if isinstance(program, ClosedJaxpr) else program
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jaxprs_in_params(eqn.params):
            yield from walk(sub)


def readers(program) -> dict:
    """Variable -> the equations of ``program`` (top level) that read it, in order, one entry per
    operand; ``None`` entries for each time it is an output of the program."""
    jaxpr = program.jaxpr if isinstance(program, ClosedJaxpr) else program
    found: dict = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if not is_literal(v):
                found.setdefault(v, []).append(eqn)
    for v in jaxpr.outvars:
        if not is_literal(v):
            found.setdefault(v, []).append(None)
    return found

