"""What primitives do, by name: one set per property, shared by every client of the interpreter.

Names, not ``Primitive`` objects: a jaxpr equation carries its primitive, whose ``name`` is the
stable part across JAX versions (the objects move between private modules). Names that only older
JAX versions use are kept beside their successors so that a set does not change meaning with an
upgrade.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = [
    "REARRANGEMENTS", "RESHAPES", "BROADCASTS", "CONVERSIONS", "LINEAR_UNARY", "PRODUCTS", "BILINEAR",
    "ELEMENTWISE", "CALLS", "TRANSPARENT_CALLS", "CUSTOM_RULE_CALLS", "REMAT_CALLS", "CUSTOM_VJP_CALLS",
    "CUSTOM_LINEARIZATION",
]

# Same entries in the same (row-major) order, only the shape changes; or a plain copy.
RESHAPES = frozenset({"reshape", "squeeze", "expand_dims", "copy", "copy_p"})
# Every output entry is one input entry, each input entry used once: a bijection of the entries.
REARRANGEMENTS = RESHAPES | {"transpose", "rev"}
BROADCASTS = frozenset({"broadcast_in_dim"})
CONVERSIONS = frozenset({"convert_element_type"})
# Linear in their single array operand (sums and selections of entries, negation).
LINEAR_UNARY = REARRANGEMENTS | BROADCASTS | {"slice", "reduce_sum", "neg", "real"}
# Bilinear products of two arrays; with ``mul``, linear in either operand when the other is fixed.
PRODUCTS = frozenset({"dot_general", "conv_general_dilated"})
BILINEAR = PRODUCTS | {"mul"}
# Act entry by entry (operands of one shape, or scalars): f(x)[i] depends on x[i] only.
ELEMENTWISE = frozenset({
    "neg", "sign", "floor", "ceil", "round", "is_finite", "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc", "erf_inv",
    "abs", "sqrt", "rsqrt", "cbrt", "square", "integer_pow", "pow", "add", "sub", "mul", "div", "rem", "max", "min",
    "atan2", "nextafter", "select_n", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor",
    "convert_element_type", "copy", "copy_p", "stop_gradient", "reduce_precision",
})

# Call primitives -> the parameter that holds the program they run on the equation's own inputs
# (one input per operand, one output per result), so that entering one is evaluating that program.
CALLS = MappingProxyType({
    "jit": "jaxpr", "pjit": "jaxpr",                              # pjit: JAX < 0.7
    "closed_call": "call_jaxpr", "call": "call_jaxpr", "core_call": "call_jaxpr",
    "remat2": "jaxpr", "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
    "custom_jvp_call_jaxpr": "fun_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
})
# Calls whose value and derivatives are exactly their program's: entering one changes nothing but
# how the program is grouped.
TRANSPARENT_CALLS = frozenset({"jit", "pjit", "closed_call", "call", "core_call"})
# Calls with their program's value but their own differentiation: a custom rule, or a
# rematerialisation policy. Entering one evaluates the primal program and drops that behaviour.
CUSTOM_RULE_CALLS = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_jvp_call_jaxpr",
                               "custom_vjp_call_jaxpr"})
REMAT_CALLS = frozenset({"remat2", "checkpoint"})
CUSTOM_VJP_CALLS = frozenset({"custom_vjp_call", "custom_vjp_call_jaxpr"})
# A custom_vjp rule's linearisation left in a jvp program: only the rule's vjp can evaluate it.
CUSTOM_LINEARIZATION = "custom_lin"
