"""One interpreter for jaxprs: clients subclass it with a rule per primitive.

An :class:`Interpreter` walks a closed jaxpr equation by equation, keeping one value per variable.
What a value *is* belongs to the subclass: arrays (re-evaluation, possibly instrumented), a
representation with more structure (an affine function of grid coordinates, a kernel), or what an
analysis knows about a variable. The base class owns what every client needs and gets wrong in
its own way otherwise: the environment, literals and constants, calls (their programs are
evaluated with the same rules, recursively), and binding an equation to new inputs
(:func:`~jaxlearn._jaxpr.equations.bind`).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Mapping, Sequence

from jaxlearn._jaxpr.equations import bind, called_program, is_literal
from jaxlearn._jaxpr.primitives import TRANSPARENT_CALLS

__all__ = ["Interpreter"]


class Interpreter:
    """Evaluates a ``ClosedJaxpr`` on values of a subclass's choosing.

    * ``rules``: primitive name -> ``rule(self, eqn, invals) -> list`` of output values (one per
      ``eqn.outvars``); primitives without a rule go to :meth:`default_rule`, which binds the
      equation (ordinary evaluation, for array values).
    * ``enters``: names of call primitives whose program is evaluated equation by equation with
      the same rules instead of being given to a rule (default: the calls whose value and
      derivatives are their program's, :data:`~jaxlearn._jaxpr.primitives.TRANSPARENT_CALLS`).
    * :meth:`constant`: the value of a literal or of one of the program's constants.
    * :meth:`equation`: the step for one equation; override it to act on every equation
      (instrumentation, a shortcut for inputs of some kind) and call ``super().equation``.
    """

    rules: ClassVar[Mapping[str, Callable]] = {}
    enters: ClassVar[frozenset] = TRANSPARENT_CALLS

    def run(self, program, args: Sequence) -> list:
        """The values of ``program``'s outputs for input values ``args`` (one per input)."""
        jaxpr = program.jaxpr
        env = {v: self.constant(c) for v, c in zip(jaxpr.constvars, program.consts, strict=True)}
        env.update(zip(jaxpr.invars, args, strict=True))

        def read(v):
            return self.constant(v.val) if is_literal(v) else env[v]

        for eqn in jaxpr.eqns:
            env.update(zip(eqn.outvars, self.equation(eqn, [read(v) for v in eqn.invars]), strict=True))
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn, invals: list) -> list:
        """Output values of ``eqn``: its program's if it is a call in ``enters``, else its rule's."""
        name = eqn.primitive.name
        if name in self.enters:
            return self.run(called_program(eqn), invals)
        return self.rules.get(name, type(self).default_rule)(self, eqn, invals)

    def constant(self, value):
        """The value standing for a constant array (a literal or a program constant)."""
        return value

    def default_rule(self, eqn, invals: list) -> list:
        """The rule of primitives without one in ``rules``: bind the equation to ``invals``."""
        return bind(eqn, invals)
