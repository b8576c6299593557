"""Which custom gradient rules block forward-mode differentiation.

A ``jax.custom_vjp`` rule (feedback alignment, sign symmetry, few-bit backward, straight-through
estimators written with ``custom_vjp``) defines only a reverse-mode derivative: ``jax.jvp`` through
it raises ``TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp function`` (eagerly;
under ``jit`` when the program is lowered). ``grad`` works, and so does ``jvp`` of ``grad``
(Hessian-vector products), because ``grad`` of such a rule is ordinary code.

:func:`forward_mode_safe` traces ``jax.jvp`` of a function or model abstractly (no computation) and
names the rules left undifferentiable; :func:`require_forward_mode` turns a negative answer into a
one-line error for a forward-mode user (forward gradients). A rule blocks exactly when its
linearization (``custom_lin``) is left in the ``jvp`` program: a rule off the tangent path (applied
to data or constants only) does not. jaxlearn's own forward-mode users ask this function:
curvature products fall back to reverse mode (``jaxlearn.landscape.curvature.has_forward_mode``),
``kernels.empirical(method="auto")`` avoids NTK-vector products, and explicit forward-mode
requests (``method="ntvp"``, ``kernels.linearize``, forward gradients) raise naming the rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from jaxlearn._jaxpr.equations import walk
from jaxlearn._jaxpr.primitives import CUSTOM_LINEARIZATION, CUSTOM_VJP_CALLS
from jaxlearn._jaxpr.tracing import trace

__all__ = ["ForwardModeReport", "forward_mode_safe", "require_forward_mode"]


@dataclasses.dataclass(frozen=True)
class ForwardModeReport:
    """``safe``: ``jax.jvp`` works; ``blocking``: names of the ``custom_vjp`` rules it would have to
    differentiate forward (sorted, once each; ``()`` when safe). Truthy iff ``safe``."""

    safe: bool
    blocking: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.safe

    def message(self, who: str) -> str:
        """A one-line explanation for a forward-mode user ``who``."""
        if self.safe:
            return f"{who}: forward mode is available"
        return (f"{who}: needs forward-mode autodiff (jax.jvp), which the custom_vjp rule(s) "
                f"{', '.join(self.blocking)} do not define; use a reverse-mode estimator (backprop) or a model "
                f"without these rules")


def _rule_name(eqn) -> str:
    info = getattr(eqn.params.get("call_jaxpr"), "jaxpr", None)
    src = getattr(getattr(info, "debug_info", None), "func_src_info", None)
    return src.split(" ")[0] if src else "custom_vjp"


def _backward_fn(eqn):
    return getattr(eqn.params.get("bwd"), "f", None)


def _blocking_names(fn, args) -> tuple[str, ...]:
    """Names of the rules whose linearization ``jax.jvp(fn)`` leaves in its program (sorted)."""
    jvp_program = trace(lambda *a: jax.jvp(fn, a, a), *args).program
    backwards = [_backward_fn(eqn) for eqn in walk(jvp_program) if eqn.primitive.name == CUSTOM_LINEARIZATION]
    if not backwards:
        return ()
    # a rule's backward function -> the rule's name, read from the primal program
    names = {_backward_fn(eqn): _rule_name(eqn) for eqn in walk(trace(fn, *args).program)
             if eqn.primitive.name in CUSTOM_VJP_CALLS}
    return tuple(sorted({names.get(bwd) or getattr(bwd, "__qualname__", "custom_vjp rule") for bwd in backwards}))


# fn_or_model: a function, or a jaxlearn.nn.Layer (recognised by its methods: _jaxpr is below nn and does not import it)
def forward_mode_safe(fn_or_model: Callable | Any, *example_args: Any) -> ForwardModeReport:
    """Whether ``jax.jvp`` can differentiate ``fn_or_model``, and which rules prevent it.

    * a function: ``forward_mode_safe(fn, *args)`` — ``jvp`` w.r.t. every argument (arrays or
      ``jax.ShapeDtypeStruct``; pytrees of them);
    * a :class:`jaxlearn.nn.Layer`: ``forward_mode_safe(model, input_spec)`` — ``jvp`` of
      ``model.apply_with_state(params, x, state)`` w.r.t. ``params`` and ``x`` (evaluation mode), with
      params and state initialised abstractly.

    Tracing only (``jax.make_jaxpr``): the model is not evaluated, and it is fine to call at trace time.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import nn, rules
        >>> spec = jax.ShapeDtypeStruct((1, 4), jnp.float32)
        >>> rules.forward_mode_safe(nn.mlp([16], 3), spec).safe
        True
        >>> rules.forward_mode_safe(nn.serial(rules.FADense(16), nn.Relu(), rules.FADense(3)), spec).blocking
        ('feedback_alignment',)
    """
    if _is_model(fn_or_model):
        if len(example_args) != 1:
            raise ValueError(f"example_args: a model takes exactly one input_spec, got {len(example_args)} arguments")
        model, spec = fn_or_model, example_args[0]  # an array or a spec: init and tracing take both
        params, state = jax.eval_shape(lambda k: model.init(k, spec), jax.random.key(0))
        zero_state = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), state)  # values do not matter

        def fn(p, x):
            return model.apply(p, x, zero_state)

        args = (params, spec)
    elif callable(fn_or_model):
        fn, args = fn_or_model, example_args
    else:
        raise TypeError(f"fn_or_model: expected a function or a jaxlearn.nn Layer, got {type(fn_or_model).__name__}")
    blocking = _blocking_names(fn, args)
    return ForwardModeReport(not blocking, blocking)


def _is_model(obj) -> bool:
    """A model in jaxlearn's sense (a :class:`jaxlearn.nn.Layer`): ``init(key, input_spec)`` and
    ``apply(params, x, state)``, and not itself a function."""
    return not callable(obj) and callable(getattr(obj, "init", None)) and callable(getattr(obj, "apply", None))



def require_forward_mode(who: str, fn: Callable, *args) -> None:
    """Raises a one-line ``ValueError`` naming ``who`` and the blocking rules unless ``jax.jvp`` can
    differentiate ``fn(*args)``."""
    report = forward_mode_safe(fn, *args)
    if not report.safe:
        raise ValueError(report.message(who))
