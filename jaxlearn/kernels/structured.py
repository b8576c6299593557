r"""Structured derivatives: the empirical NTK without differentiating weights one by one.

A weight ``W`` that enters the network only through one matrix product ``y = h W`` (a Dense
layer) has, for every output entry ``f_o`` of one example, the rank-one Jacobian
``∂f_o/∂W = hᵀ g_o`` with ``g_o = ∂f_o/∂y`` (the cotangent at the layer's output). Its share of
the NTK is therefore

.. math::  \sum_{ij} \frac{\partial f_{o}(x_1)}{\partial W_{ij}} \frac{\partial f_{o'}(x_2)}{\partial W_{ij}}
           = (h_1 \cdot h_2)\,(g_{1,o} \cdot g_{2,o'}),

a product of two Gram matrices (Novak, Sohl-Dickstein & Schoenholz 2022, "Fast finite width
neural tangent kernel", §3–4): ``O(N1·N2·(d_in + O·d_out))`` instead of ``O(N1·N2·O·d_in·d_out)``.
The cotangents ``g`` of every such layer come from ``O`` backward passes per example (one per
output entry), the layer inputs ``h`` from the forward pass. A weight of a convolution (or of a
product with extra free axes, e.g. a Dense applied at every position of a sequence) gets its
per-example Jacobian from that layer alone, not from a backward pass through the network: ``g``
contracted with ``h`` over the positions (with the image patches of ``h`` for a convolution, one
GEMM per example), which is then contracted like a Jacobian.

A convolution whose output reaches the outputs only through elementwise operations and a sum over
its positions (a global-average-pooling head: conv → ReLU → mean → Dense) has cotangents
``g_o = L_o ⊙ m``: one per-example map ``m`` scaled per channel by ``L_o``, the cotangent at the
sums. Its share is then formed from ``A = Pᵀm`` (patches ``P``), one GEMM per example instead of
one per output entry (:func:`_pooled_head`, :func:`_pooled_head_term`); on a 64 × 64 CNN kernel
with 10 outputs that took the time from 176 to 99 ms. Likewise a layer whose output reaches the
outputs through elementwise operations and then a map linear in their result with coefficients
that do not depend on the input (the last hidden layer of an MLP: ReLU, then the output Dense) has
cotangents ``g_o = m ⊙ V_o`` with ``V`` the same for every example, and its Gram matrix over
``(outputs, width)`` is one over the width weighted by ``V V`` (:func:`_linear_head`,
:func:`_linear_head_gram`; the MLP 64-512³-10 kernel of 128 × 128 pairs: 15.6 → 14.7 ms).

How weights are recognised: ``apply`` is traced for one example, nested ``jit`` programs inlined
(:func:`jaxlearn._jaxpr.trace_per_example`), and each parameter leaf is followed through
``reshape``/``transpose``/dtype conversion and multiplication or division by a parameter-free scalar (a parameterization
constant such as ``W_std/√fan_in``, which may be traced) to a ``dot_general`` or
``conv_general_dilated`` (without batch dimensions or feature groups) where it is one operand.
A bias is followed the same way to a broadcast into an ``add`` whose other operand does not depend
on it: its Jacobian is the cotangent at that ``add`` summed over the broadcast axes, and a weight
whose product reaches its bias's ``add`` through multiplications by such scalars shares that
probe. A leaf that reaches exactly one such product or ``add`` and is used nowhere else is
*structured*; every other leaf (BatchNorm scales, embeddings, weights used twice, anything inside
``scan``/``custom_vjp`` calls) is differentiated by the Jacobian method in the same backward
passes. So the result is exact for any model; the speed-up is in the structured leaves. Reverse
mode only: works through ``custom_vjp`` learning rules.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._jaxpr.equations import bind, called_program, is_literal, readers
from jaxlearn._jaxpr.interpreter import Interpreter
from jaxlearn._jaxpr.primitives import (
    BILINEAR,
    BROADCASTS,
    CONVERSIONS,
    ELEMENTWISE,
    LINEAR_UNARY,
    PRODUCTS,
    REARRANGEMENTS,
)
from jaxlearn._jaxpr.tracing import trace_per_example
from jaxlearn.kernels.contract import contract, fully_traced

__all__ = ["structured_kernel", "is_supported", "analyse"]

# A leaf whose entries are only moved around or converted is still that leaf.
_SAME_LEAF = REARRANGEMENTS | CONVERSIONS


class _Target(NamedTuple):
    """A structured leaf. ``kind="weight"``: operand ``pos`` of the product ``eqn``; ``kind="bias"``:
    operand ``pos`` of the ``add`` ``eqn``, broadcast to its output keeping axes ``dims`` (the
    others, summed in its Jacobian, are the axes it was broadcast along).
    ``tap``: the equation whose output receives the cotangent probe — the product itself, or, for
    a weight whose product reaches a bias ``add`` through multiplications by scalars (``chain``,
    e.g. the NTK parameterization's ``W_std/√fan_in``), that ``add``: one probe serves both.
    ``head``: for a convolution whose tap output reaches the outputs only through elementwise
    operations and a sum over all its positions (a pooled head, :func:`_pooled_head`), those
    equations, the sum last; its output is probed too. Equations are the traced program's own
    (``Analysis.jaxpr``)."""

    kind: str
    eqn: object
    leaf: int
    pos: int
    dims: tuple = ()
    tap: object = None
    chain: tuple = ()
    head: tuple = ()


class Analysis(NamedTuple):
    """Which leaves are structured: ``targets`` (one per structured leaf) and ``fallback`` (the
    indices of the other leaves, differentiated by the Jacobian method); ``taps``: the equations
    whose outputs are probed, in program order; ``linear_heads``: ``(tap, head)`` pairs, a tap
    whose output reaches the outputs through elementwise operations ``head`` (the last one's output
    probed too) and then a linear map that does not depend on the input (:func:`_linear_head`)."""

    jaxpr: object
    targets: tuple
    fallback: tuple
    taps: tuple
    structured_size: int
    total_size: int
    linear_heads: tuple = ()


# -- the analysis: what is known about each variable -----------------------------------------------


class _Leaf(NamedTuple):
    """Parameter leaf ``index``, reshaped, transposed or converted, times parameter-free single values."""

    index: int


class _Spread(NamedTuple):
    """Such a leaf broadcast (a bias on its way to its ``add``), keeping axes ``dims``."""

    index: int
    dims: tuple


class _Mixed(NamedTuple):
    """Depends on the parameter leaves ``leaves`` in any other way."""

    leaves: frozenset


class _Free(NamedTuple):
    """Parameter-free; ``single``: one value (a scalar, or a broadcast scalar)."""

    single: bool


def _leaves_of(fact) -> frozenset:
    if isinstance(fact, (_Leaf, _Spread)):
        return frozenset({fact.index})
    return fact.leaves if isinstance(fact, _Mixed) else frozenset()


def _is_single(fact) -> bool:
    return isinstance(fact, _Free) and fact.single


def _has_one_entry(aval) -> bool:
    shape = getattr(aval, "shape", None)
    return shape is not None and math.prod(shape) == 1


def _depending_on(leaves, var):
    return _Mixed(leaves) if leaves else _Free(_has_one_entry(var.aval))


def _is_floating(v) -> bool:
    return jnp.issubdtype(v.aval.dtype, jnp.floating)


class _LeafFlow(Interpreter):
    """Follows the parameter leaves through the traced program: the value of each variable is what
    is known about it (a ``_Leaf``, ``_Spread``, ``_Mixed`` or ``_Free`` fact). A rule either
    recognises its equation or leaves it to :meth:`default_rule` (the outputs depend on every leaf
    an input depends on); rules only see equations with one floating output. Along the way each
    leaf collects the products and bias ``add`` s it is a candidate operand of (``candidates``)."""

    enters = frozenset()  # the program is inlined: calls left are custom rules, treated as a whole

    def __init__(self):
        self.facts = {}       # variable -> fact, for every variable written
        self.candidates = {}  # leaf -> [_Target]
        self.position = {}    # equation -> its index in the program

    def fact_of(self, v):
        """The fact of an operand (a literal, a constant or the input are parameter-free)."""
        if is_literal(v) or v not in self.facts:
            return _Free(_has_one_entry(v.aval))
        return self.facts[v]

    def constant(self, value):
        return _Free(np.size(value) == 1)

    def equation(self, eqn, ins):
        self.position[eqn] = len(self.position)
        if len(eqn.outvars) == 1 and _is_floating(eqn.outvars[0]):
            outs = super().equation(eqn, ins)
        else:
            outs = self.default_rule(eqn, ins)
        self.facts.update(zip(eqn.outvars, outs))
        return outs

    def default_rule(self, eqn, ins):
        """Any other equation: each output depends on every leaf an input depends on."""
        leaves = frozenset().union(*(_leaves_of(f) for f in ins))
        return [_depending_on(leaves, o) for o in eqn.outvars]

    def same_leaf(self, eqn, ins):
        """A reshaped, transposed or dtype-converted leaf is still that leaf."""
        return [ins[0]] if isinstance(ins[0], _Leaf) else self.default_rule(eqn, ins)

    def scaling(self, eqn, ins):
        """A leaf times (either side) or divided by a parameter-free single value (a
        parameterization constant) is still that leaf."""
        sides = (0, 1) if eqn.primitive.name == "mul" else (0,)
        pos = next((i for i in sides if isinstance(ins[i], _Leaf) and _is_single(ins[1 - i])), None) \
            if len(ins) == 2 else None
        return self.default_rule(eqn, ins) if pos is None else [ins[pos]]

    def broadcast(self, eqn, ins):
        """A broadcast leaf is ``_Spread`` (a bias on its way to its ``add``); a broadcast
        parameter-free single value stays one value."""
        if isinstance(ins[0], _Leaf):
            return [_Spread(ins[0].index, tuple(eqn.params["broadcast_dimensions"]))]
        if _is_single(ins[0]):
            return [_Free(True)]
        return self.default_rule(eqn, ins)

    def weight(self, eqn, ins):
        """A leaf that is one operand of a plain product (``dot_general`` either side, a
        convolution's filter) and not behind the other operand is a weight candidate; the
        product depends on the other operand's leaves only."""
        sides = (0, 1) if eqn.primitive.name == "dot_general" else (1,)
        pos = next((i for i in sides if isinstance(ins[i], _Leaf) and ins[i].index not in _leaves_of(ins[1 - i])),
                   None) if _plain(eqn) else None
        if pos is None:
            return self.default_rule(eqn, ins)
        leaf = ins[pos].index
        self.candidates.setdefault(leaf, []).append(_Target("weight", eqn, leaf, pos, tap=eqn))
        return [_depending_on(_leaves_of(ins[1 - pos]), eqn.outvars[0])]

    def bias(self, eqn, ins):
        """A broadcast leaf added to something not behind it, at the rank of the sum, is a bias
        candidate; the sum depends on the other operand's leaves only."""
        out = eqn.outvars[0]
        pos = next((i for i in (0, 1) if isinstance(ins[i], _Spread) and ins[i].index not in _leaves_of(ins[1 - i])
                    and len(eqn.invars[i].aval.shape) == len(out.aval.shape)), None) if len(ins) == 2 else None
        if pos is None:
            return self.default_rule(eqn, ins)
        leaf, dims = ins[pos]
        shape = eqn.invars[pos].aval.shape  # add may broadcast size-1 axes itself
        kept = tuple(d for d in dims if shape[d] == out.aval.shape[d])
        self.candidates.setdefault(leaf, []).append(_Target("bias", eqn, leaf, pos, kept, tap=eqn))
        return [_depending_on(_leaves_of(ins[1 - pos]), out)]

    rules = {**dict.fromkeys(_SAME_LEAF, same_leaf), "mul": scaling, "div": scaling,
             **dict.fromkeys(BROADCASTS, broadcast), **dict.fromkeys(PRODUCTS, weight), "add": bias}


def analyse(f: Callable, params, x_example) -> Analysis:
    """Traces ``f(params, x_example[None])[0]`` and classifies the parameter leaves (module
    docstring)."""
    leaves = jax.tree.leaves(params)
    program = trace_per_example(f, params, x_example).program
    n = len(leaves)
    flow = _LeafFlow()
    flow.facts.update((v, _Leaf(i)) for i, v in enumerate(program.jaxpr.invars[:n]))
    flow.run(program, [_Leaf(i) for i in range(n)] + [_Free(math.prod(jnp.shape(x_example)) == 1)])
    reads = readers(program)
    chosen = _share_bias_probes(_choose_targets(flow, reads, n), reads, flow)
    chosen = {i: _with_pooled_head(t, reads, flow.position) for i, t in chosen.items()}
    targets = tuple(chosen[i] for i in sorted(chosen))
    fallback = tuple(i for i in range(n) if i not in chosen)
    pooled = {t.tap for t in targets if t.head}
    gram_taps = sorted({t.tap for t in targets if _gram_target(t)} - pooled, key=flow.position.__getitem__)
    dependent = _input_dependent(program, n) if gram_taps else set()
    linear_heads = tuple((tap, head) for tap in gram_taps
                         if (head := _linear_head(tap, reads, flow.position, dependent)) is not None)
    taps = {t.tap for t in targets} | {t.head[-1] for t in targets if t.head} | {h[-1] for _, h in linear_heads}
    taps = tuple(sorted(taps, key=flow.position.__getitem__))
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    return Analysis(program, targets, fallback, taps, sum(sizes[t.leaf] for t in targets), sum(sizes),
                    linear_heads)


def _read_once_by(reads, v):
    """The one equation that reads ``v``, if exactly one does and ``v`` is no program output."""
    found = reads.get(v, ())
    return found[0] if len(found) == 1 else None


def _read_again(reads, v) -> bool:
    """``v`` is read more than once, or is a program output (not a single-use link of a chain)."""
    found = reads.get(v, ())
    return len(found) > 1 or None in found


def _choose_targets(flow: _LeafFlow, reads, n) -> dict:
    """Leaf -> target for the structured leaves: exactly one candidate, no other dependence on the
    leaf anywhere, and no variable of it read twice (or an output of the program)."""
    tainted = frozenset().union(*(f.leaves for f in flow.facts.values() if isinstance(f, _Mixed)))
    shared = {f.index for v, f in flow.facts.items() if isinstance(f, (_Leaf, _Spread)) and _read_again(reads, v)}
    chosen = {}
    for i in range(n):
        found = flow.candidates.get(i, [])
        if len(found) == 1 and i not in tainted and i not in shared:
            chosen[i] = found[0]
    return chosen


def _share_bias_probes(chosen, reads, flow) -> dict:
    """``chosen`` with each weight whose product flows into a chosen bias ``add`` probed there."""
    biases = {t.eqn: t for t in chosen.values() if t.kind == "bias"}
    return {i: _probe_at_bias(t, reads, biases, flow) if t.kind == "weight" else t for i, t in chosen.items()}


def _probe_at_bias(t, reads, biases, flow):
    """Follows weight ``t``'s product through single-use multiplications by single values (its
    ``chain``); if the next equation is the ``add`` of a bias in ``biases`` with the product on the
    other side, ``t`` takes that ``add`` as its tap, else stays as it is."""
    v, chain = t.eqn.outvars[0], []
    while (reader := _read_once_by(reads, v)) is not None and _scales_by_single_value(reader, v, flow):
        chain.append(reader)
        v = reader.outvars[0]
    reader = _read_once_by(reads, v)
    bias = biases.get(reader)
    if bias is not None and reader.invars[1 - bias.pos] is v:
        return t._replace(tap=bias.eqn, chain=tuple(chain))
    return t


def _scales_by_single_value(eqn, v, flow) -> bool:
    return eqn.primitive.name == "mul" and any(w is not v and _is_single(flow.fact_of(w)) for w in eqn.invars)


def _with_pooled_head(t, reads, position):
    """``t`` with its pooled head (:func:`_pooled_head`) if it is a convolution's weight that has one."""
    if (t.kind != "weight" or t.eqn.primitive.name != "conv_general_dilated"
            or any(d != 1 for d in t.eqn.params["lhs_dilation"])):
        return t
    head = _pooled_head(t, reads, position)
    return t if head is None else t._replace(head=head)


def _elementwise_region(y, reads):
    """The equations that act entry by entry on ``y`` or on values computed from it that way
    (elementwise primitives or elementwise calls such as ``jax.nn.relu``, with outputs of ``y``'s
    shape; their other operands may be anything of that shape or single values), and the other
    reads of the values they compute: ``(region, exits)``, ``region`` a dict of equations in the
    order found, ``exits`` ``(variable, reader)`` pairs, ``reader`` ``None`` for a program output.
    Every output entry of the region depends on ``y`` through the same entry only."""
    shape = y.aval.shape
    region, exits, todo = {}, [], [y]
    while todo:
        v = todo.pop()
        for reader in reads.get(v, ()):
            if reader in region:
                continue
            out = reader.outvars if reader is not None else ()
            if (len(out) == 1 and out[0].aval.shape == shape
                    and (reader.primitive.name in ELEMENTWISE or _elementwise_call(reader))):
                region[reader] = None
                todo.append(out[0])
            else:
                exits.append((v, reader))
    return region, exits


def _pooled_head(t, reads, position):
    r"""The equations from weight ``t``'s tap output ``y`` (one example: ``(1, *positions, C)``
    in the convolution's layout) to a sum over all its positions, when ``y`` reaches the outputs
    only that way: every equation that reads ``y`` or a value computed from it acts entry by entry
    (:func:`_elementwise_region`), up to one ``reduce_sum`` over every axis but the channel axis,
    and all of them come before it. Then

    .. math::  \frac{\partial f_o}{\partial y_{pc}} = L_{oc}\, m_{pc},\qquad
               L_{oc} = \frac{\partial f_o}{\partial s_c},\quad m_{pc} = \frac{\partial s_c}{\partial y_{pc}}

    (``s`` the sums): the cotangents of the ``O`` outputs are one per-example map ``m`` scaled
    per channel (a global-average-pooling head: conv → ReLU → mean → Dense). Returns the
    elementwise equations in program order and the sum last, or ``None``."""
    dn = t.eqn.params["dimension_numbers"]
    y = t.tap.outvars[0]
    positions = set(range(len(y.aval.shape))) - {dn.out_spec[1], dn.out_spec[0]}
    region, exits = _elementwise_region(y, reads)
    ends = {reader for _, reader in exits}
    if len(ends) != 1:
        return None
    end = ends.pop()                                  # None: y (or a function of it) is an output
    if (end is None or end.primitive.name != "reduce_sum"
            or set(end.params["axes"]) - {dn.out_spec[0]} != positions
            or any(position[e] > position[end] for e in region)):
        return None
    return tuple(sorted(region, key=position.__getitem__)) + (end,)


def _gram_target(t) -> bool:
    """``t``'s share of the kernel is a multiple of its tap's cotangent Gram matrix: a bias over
    every axis of its ``add`` or the weight of a Dense layer applied at one position."""
    if t.kind == "bias":
        return _dims_cover(t, t.eqn.outvars[0].aval.shape)
    if t.eqn.primitive.name != "dot_general":
        return False
    (lc, rc), _ = t.eqn.params["dimension_numbers"]
    h = t.eqn.invars[1 - t.pos]
    contracted = lc if t.pos == 1 else rc
    return math.prod(d for a, d in enumerate(h.aval.shape) if a not in contracted) == 1


def _input_dependent(program, n) -> set:
    """The variables of ``program`` (inputs: ``n`` parameter leaves, then the example) whose value
    depends on the example."""
    dependent = {program.jaxpr.invars[n]}
    for eqn in program.jaxpr.eqns:
        if any(not is_literal(v) and v in dependent for v in eqn.invars):
            dependent.update(eqn.outvars)
    return dependent


# Equations through which a linear head's tail stays linear in any of its operands (sums of them).
_LINEAR_IN_EACH = LINEAR_UNARY | CONVERSIONS | {"add", "add_any", "sub", "concatenate", "pad"}


def _linear_head(tap, reads, position, dependent):
    r"""The elementwise equations from ``tap``'s output ``y`` to a value ``z``, when ``y`` reaches
    the outputs only through them (:func:`_elementwise_region`), ``z`` is the one value of that
    region read elsewhere, and everything from ``z`` to the outputs is linear in ``z`` with
    coefficients that do not depend on the input (products and quotients by input-independent
    values, sums, rearrangements; terms that do not depend on ``z`` may depend on anything). Then

    .. math::  \frac{\partial f_o}{\partial y_k} = m_k\, V_{ok},\qquad
               m_k = \frac{\partial z_k}{\partial y_k},\quad V_{ok} = \frac{\partial f_o}{\partial z_k}

    with ``V`` the same for every example (the last hidden layer of an MLP: ReLU then the output
    Dense), so the tap's cotangent Gram matrix over ``(o, k)`` is one over ``k`` weighted by
    ``V``'s columns (:func:`_linear_head_gram`). Returns the region's equations in program order,
    ``z``'s last, or ``None``."""
    y = tap.outvars[0]
    region, exits = _elementwise_region(y, reads)
    exiting = {v for v, _ in exits}
    if not region or len(exiting) != 1:
        return None
    z = exiting.pop()
    last = max(region, key=position.__getitem__)
    if z is y or last.outvars[0] is not z:
        return None
    tail = {z}
    for eqn in _downstream(reads, z, position):
        ins = [not is_literal(v) and v in tail for v in eqn.invars]
        name = eqn.primitive.name
        if name in _LINEAR_IN_EACH:
            linear = True
        elif name in BILINEAR:
            linear = sum(ins) == 1 and not any(not is_literal(v) and v in dependent for v, i in zip(eqn.invars, ins)
                                               if not i)
        elif name == "div":
            linear = ins == [True, False] and (is_literal(eqn.invars[1]) or eqn.invars[1] not in dependent)
        else:
            linear = False
        if not linear:
            return None
        tail.update(eqn.outvars)
    return tuple(sorted(region, key=position.__getitem__))


def _downstream(reads, v, position):
    """The equations that read ``v`` or a value computed from it, in program order."""
    found, todo = {}, [v]
    while todo:
        for reader in reads.get(todo.pop(), ()):
            if reader is not None and reader not in found:
                found[reader] = None
                todo.extend(reader.outvars)
    return sorted(found, key=position.__getitem__)


def _elementwise_call(eqn) -> bool:
    """A call (``jit``, ``custom_jvp_call``: ``jax.nn.relu``) of one input whose program only acts
    entry by entry. Its custom derivative rule, if any, is taken to act entry by entry too (as the
    rules of elementwise functions do: ``relu``, straight-through estimators)."""
    program = called_program(eqn)
    if program is None or len(eqn.invars) != 1:
        return False
    return all(e.primitive.name in ELEMENTWISE or _elementwise_call(e) for e in program.jaxpr.eqns)


def _plain(eqn) -> bool:
    """A product without batch dimensions (dot_general) or groups (conv): one weight per layer."""
    if eqn.primitive.name == "dot_general":
        (_, _), (lb, rb) = eqn.params["dimension_numbers"]
        return not lb and not rb
    return eqn.params["feature_group_count"] == 1 and eqn.params["batch_group_count"] == 1


def is_supported(f: Callable, params, x) -> bool:
    """Whether structured leaves hold at least half of the parameters (what ``method="auto"``
    asks before choosing ``"structured"``)."""
    try:
        a = analyse(f, params, jnp.asarray(x)[0])
    except Exception:  # noqa: BLE001 — an untraceable model simply is not structured
        return False
    return a.total_size > 0 and 2 * a.structured_size >= a.total_size


# -- the evaluation: cotangent probes and layer inputs ----------------------------------------------


class _Probed(Interpreter):
    """Evaluates the analysed program for one example with ``eps[j]`` added to the output of tap
    ``j``, recording for each target ``[layer input h`` (weights; ``None`` for biases), ``leaf
    chain scale, output chain scale]`` (``records``)."""

    enters = frozenset()  # the program is inlined

    def __init__(self, analysis: Analysis, eps):
        self.targets = analysis.targets
        self.eps = dict(zip(analysis.taps, eps))
        self.at, self.chain_end = {}, {}
        for i, t in enumerate(self.targets):
            self.at.setdefault(t.eqn, []).append(i)
            if t.chain:
                self.chain_end.setdefault(t.chain[-1], []).append(i)
        self.chained = {e for t in self.targets for e in t.chain}
        self.scale = {}   # variable of a leaf -> the product of the scalars it was multiplied by
        self.factor = {}  # variable on a weight's output chain -> the chain's multiplier so far
        self.records = [None] * len(self.targets)
        # heads (pooled and linear; taps may share a last equation): tap -> equations
        heads = dict([(t.tap, t.head) for t in self.targets if t.head] + list(analysis.linear_heads))
        self.head_end = {}  # last equation of a head -> (tap, equations) of the heads it ends
        for tap, head in heads.items():
            self.head_end.setdefault(head[-1], []).append((tap, head))
        self.head_eqns = {e for h in heads.values() for e in h}
        self.head_taps = set(heads)
        self.tap_out = {}     # tap of a head -> its output (probe included)
        self.seen = {}        # equation of a head -> its inputs
        self.derivative = {}  # tap of a head -> m (:meth:`head_derivative`)

    def default_rule(self, eqn, ins):
        outs = bind(eqn, ins)
        for i in self.at.get(eqn, ()):
            t = self.targets[i]
            self.records[i] = [ins[1 - t.pos] if t.kind == "weight" else None, self.scale[eqn.invars[t.pos]], 1.0]
        if eqn in self.chained:  # the multiplier of a weight's output chain
            pos = next(j for j, v in enumerate(eqn.invars) if not is_literal(v) and v in self.factor)
            self.factor[eqn.outvars[0]] = self.factor[eqn.invars[pos]] * jnp.ravel(ins[1 - pos])[0]
        if eqn in self.eps:
            outs = [outs[0] + self.eps[eqn]]
        if eqn in self.head_taps:
            self.tap_out[eqn] = outs[0]
        if eqn in self.head_eqns:
            self.seen[eqn] = list(ins)
        for tap, head in self.head_end.get(eqn, ()):
            self.derivative[tap] = self.head_derivative(tap, head)
        self.track_scale(eqn, ins)
        for i in self.at.get(eqn, ()):
            if self.targets[i].chain:
                self.factor[eqn.outvars[0]] = 1.0
        for i in self.chain_end.get(eqn, ()):
            self.records[i][2] = self.factor[eqn.outvars[0]]
        return outs

    def head_derivative(self, tap, head):
        """``m`` of a head at this example: the vector-Jacobian product with ones of the head's
        equations from ``tap``'s output ``y`` to the last one's output (each entry of which depends
        on one entry of ``y`` — the sums of a pooled head on one channel), in ``y``'s shape:
        ``∂s/∂y`` of a pooled head (:func:`_pooled_head`), ``∂z/∂y`` of a linear one
        (:func:`_linear_head`)."""
        def evaluate(y):
            env = {tap.outvars[0]: y}
            for e in head:
                ins = [env[w] if not is_literal(w) and w in env else val for w, val in zip(e.invars, self.seen[e])]
                env[e.outvars[0]] = bind(e, ins)[0]
            return env[head[-1].outvars[0]]

        out, vjp = jax.vjp(evaluate, self.tap_out[tap])
        return vjp(jnp.ones_like(out))[0]

    def track_scale(self, eqn, ins):
        """The scalars a leaf is multiplied by on its way to its product (reshapes keep them)."""
        tracked = [j for j, v in enumerate(eqn.invars) if not is_literal(v) and v in self.scale]
        if len(eqn.outvars) != 1 or not tracked:
            return
        a, out, name = tracked[0], eqn.outvars[0], eqn.primitive.name
        if name in _SAME_LEAF or name in BROADCASTS:
            self.scale[out] = self.scale[eqn.invars[a]]
        elif name == "mul":
            self.scale[out] = self.scale[eqn.invars[a]] * jnp.ravel(ins[1 - a])[0]
        elif name == "div" and a == 0:
            self.scale[out] = self.scale[eqn.invars[0]] / jnp.ravel(ins[1])[0]


def _evaluate(analysis: Analysis, leaves, x, eps):
    """Runs the traced program for one example with ``eps[j]`` added to the output of tap ``j``;
    returns ``(outputs, (records, ms))``: one record per target in order, ``(layer input h``
    (weights; ``None`` for biases), ``leaf chain scale, output chain scale, m)`` (``m``: the
    pooled head's derivative, :meth:`_Probed.head_derivative`; ``None`` without a head), and ``m``
    of each linear head in ``analysis.linear_heads``."""
    probed = _Probed(analysis, eps)
    probed.scale.update((v, 1.0) for v in analysis.jaxpr.jaxpr.invars[:len(leaves)])
    outs = probed.run(analysis.jaxpr, list(leaves) + [x])
    records = [tuple(r) + (probed.derivative[t.tap] if t.head else None,)
               for r, t in zip(probed.records, analysis.targets)]
    return outs[0], (records, [probed.derivative[tap] for tap, _ in analysis.linear_heads])


def _factors(analysis: Analysis, leaves, x):
    """Per example of ``x (N, ...)``: the cotangents ``g_j (N, *out, *y_j)`` at each tap, the
    records of :func:`_evaluate` (layer inputs per example, scales), the Jacobians of the
    fallback leaves ``(N, *out, *leaf)`` and the linear heads' ``m (N, *y)`` — from one forward
    pass and ``|out|`` backward passes per example."""
    eps0 = [jnp.zeros(tap.outvars[0].aval.shape, tap.outvars[0].aval.dtype) for tap in analysis.taps]
    fb0 = [leaves[i] for i in analysis.fallback]

    def one(xn):
        def g(eps, fb):
            merged = list(leaves)
            for i, val in zip(analysis.fallback, fb):
                merged[i] = val
            return _evaluate(analysis, merged, xn, eps)

        (g_eps, j_fb), aux = jax.jacrev(g, argnums=(0, 1), has_aux=True)(eps0, fb0)
        return g_eps, j_fb, aux

    g_eps, j_fb, (records, ms) = jax.vmap(one)(x)
    # scales do not depend on the example: keep one copy
    records = [(h, s[0] if jnp.ndim(s) else s, c[0] if jnp.ndim(c) else c, m) for h, s, c, m in records]
    return g_eps, j_fb, records, ms


def _flat_dense(eqn, weight_pos, h, g, out_ndim):
    """For ``y = dot_general(·)`` with ``h`` and the weight: ``h (N, C)`` (contracted axes) and
    ``g (N, *out, S, F)`` (S: h's free axes, F: the weight's free axes), plus ``hs (N, S, C)``."""
    (lc, rc), _ = eqn.params["dimension_numbers"]
    h_contract = lc if weight_pos == 1 else rc
    n = h.shape[0]
    h_free = [a for a in range(h.ndim - 1) if a not in h_contract]
    hs = jnp.transpose(h, [0] + [a + 1 for a in h_free] + [a + 1 for a in h_contract])
    s = math.prod(h.shape[1 + a] for a in h_free)
    hs = hs.reshape(n, s, -1)
    y_shape = eqn.outvars[0].aval.shape
    # y axes: lhs free then rhs free; h's free axes come first iff h is the lhs (weight_pos == 1)
    n_h_free = len(h_free)
    y_axes = list(range(len(y_shape)))
    h_axes = y_axes[:n_h_free] if weight_pos == 1 else y_axes[len(y_shape) - n_h_free:]
    w_axes = [a for a in y_axes if a not in h_axes]
    lead = g.ndim - len(y_shape)
    gt = jnp.transpose(g, list(range(lead)) + [lead + a for a in h_axes] + [lead + a for a in w_axes])
    gt = gt.reshape(g.shape[:lead] + (s, -1))
    return hs, gt


def _bias_jacobian(t, eqn, g, out_ndim):
    """``∂f_o/∂b`` per example, ``(N, *out, kept)``: the tap's cotangent summed over the axes the
    bias was broadcast along (its own axes of size 1 included), flattened."""
    y_shape = eqn.outvars[0].aval.shape
    summed = tuple(out_ndim + d for d in range(len(y_shape)) if d not in t.dims)
    j = jnp.sum(g, axis=summed) if summed else g
    return j.reshape(j.shape[:out_ndim] + (-1,))


def structured_kernel(f, params, x1, x2, axes):
    """The NTK by structured derivatives (module docstring); ``axes`` from
    :func:`jaxlearn.kernels.empirical` (trace/diagonal conventions there)."""

    leaves = jax.tree.leaves(params)
    analysis = analyse(f, params, x1[0])
    one = _factors(analysis, leaves, x1)
    two = one if x2 is None else _factors(analysis, leaves, x2)
    out_ndim = axes.ndim
    free = fully_traced(axes)   # per-example factors may be laid out in any order
    batch_diagonal = 0 in axes.diagonal
    tap_index = {tap: j for j, tap in enumerate(analysis.taps)}
    total = 0.0
    for a, b in zip(one[1], two[1]):  # fallback leaves: Jacobian contraction
        total = total + contract(axes, a, b, a.ndim - out_ndim)

    def pair(fn):
        a = fn(one)
        return a, (a if x2 is None else fn(two))

    # Terms that multiply the same cotangent Gram matrix GG_j = ⟨g_j(x1), g_j(x2)⟩ are summed
    # before it is formed: a Dense's weight (H·(c_W c_y)²) and its bias (c_b²).
    gram_weights: dict = {}
    for i, t in enumerate(analysis.targets):
        eqn, j = t.eqn, tap_index[t.tap]
        (_, s1, c1, _) = one[2][i]
        c2 = jnp.square(s1 * c1)
        if t.head:
            sides = [(side[2][i][0], side[2][i][3], side[0][tap_index[t.head[-1]]]) for side in (one, two)]
            total = total + c2 * _pooled_head_term(axes, eqn, sides, x2 is None)
            continue
        if t.kind == "bias":
            if _dims_cover(t, eqn.outvars[0].aval.shape):  # J_b = c_b·g: the tap's Gram matrix
                gram_weights[j] = gram_weights.get(j, 0.0) + c2
            else:
                j1, j2 = pair(lambda side: _bias_jacobian(t, eqn, side[0][j], out_ndim))
                total = total + c2 * contract(axes, j1, j2, 1)
            continue
        if eqn.primitive.name == "dot_general":
            (h1, g1), (h2, g2) = pair(lambda side: _flat_dense(eqn, t.pos, side[2][i][0], side[0][j], out_ndim))
            if h1.shape[1] == 1:  # one position: the product of two Gram matrices
                gram = (jnp.einsum("nc,nc->n", h1[:, 0], h2[:, 0]) if batch_diagonal
                        else jnp.matmul(h1[:, 0], h2[:, 0].T, precision=jax.lax.Precision.HIGHEST))
                gram_weights[j] = gram_weights.get(j, 0.0) + c2 * gram
                continue
            j1 = jnp.einsum("nsc,n...sf->n...cf", h1, g1)
            j2 = j1 if x2 is None else jnp.einsum("nsc,n...sf->n...cf", h2, g2)
            total = total + c2 * contract(axes, j1, j2, 2)
        else:
            j1, j2 = pair(lambda side: _conv_jacobian(eqn, side[2][i][0], side[0][j], out_ndim, free))
            total = total + c2 * contract(axes, j1, j2, j1.ndim - out_ndim, out_shape=one[0][j].shape[:out_ndim])
    linear = {tap_index[tap]: (k, tap_index[head[-1]]) for k, (tap, head) in enumerate(analysis.linear_heads)}
    for j, weight in gram_weights.items():
        if j in linear:  # g_o = m ⊙ V_o (_linear_head)
            k, end = linear[j]
            gk = _linear_head_gram(axes, one[3][k], two[3][k], one[0][end][0])
        else:
            gk = contract(axes, one[0][j], two[0][j], one[0][j].ndim - out_ndim)
        if jnp.ndim(weight):
            weight = weight.reshape(weight.shape + (1,) * (gk.ndim - weight.ndim))
        total = total + weight * gk
    return total


def _linear_head_gram(axes, m1, m2, v):
    r"""The cotangent Gram matrix of a tap with a linear head (:func:`_linear_head`) from
    ``m (N, *y)`` per input and ``V (*out, *y)`` (the cotangents at ``z``, one example's):

    .. math::  \sum_{k} g_{ok}(x)\, g_{o'k}(x') = \sum_k m_k(x)\, m_k(x') \,(V_{ok} V_{o'k}),

    output axes traced, kept or diagonal per ``axes`` in the factor ``V V``: one product over
    ``k`` instead of one over ``(o, k)``."""
    m1, m2 = m1.reshape(m1.shape[0], -1), m2.reshape(m2.shape[0], -1)
    v = v.reshape(v.shape[:axes.ndim - 1] + (-1,))
    first, second, out = axes.letters()
    rest = out[1:] if 0 in axes.diagonal else out[2:]
    vv = jnp.einsum(f"{first[1:]}Z,{second[1:]}Z->{rest}Z", v, v, precision=jax.lax.Precision.HIGHEST)
    vv = vv / axes.trace_size((m1.shape[0],) + v.shape[:-1])
    return jnp.einsum(f"{first[0]}Z,{second[0]}Z,{rest}Z->{out}", m1, m2, vv, precision=jax.lax.Precision.HIGHEST)


def _pooled_head_term(axes, eqn, sides, same):
    r"""A pooled-head convolution's share of the kernel (:func:`_pooled_head`), without its
    per-output Jacobians. With patches ``P (positions, K)`` of the layer input, the cotangent
    ``g_o = L_o ⊙ m`` gives ``J_o = Pᵀ g_o = A·diag(L_o)`` with ``A_{ck} = Σ_p m_{pc} P_{pk}`` (one
    GEMM per example instead of one per output), so

    .. math::  \sum_{o} \langle J_o(x), J_{o'}(x')\rangle \to
               \sum_c \Big(\sum_{o} L_{oc}(x) L_{o'c}(x')\Big)\Big(\sum_k A_{ck}(x) A_{ck}(x')\Big),

    the output axes traced, kept or diagonal per ``axes`` in the first factor. ``sides``: per
    input ``(h, m, L)``: the layer input, ``m`` in the tap output's shape, and the cotangents at
    the sums ``(N, *out, *s)``."""
    dn = eqn.params["dimension_numbers"]
    p = eqn.params
    window = [eqn.invars[1].aval.shape[d] for d in dn.rhs_spec[2:]]
    b, channel = dn.lhs_spec[0], dn.lhs_spec[1]

    def factors(h, m, g):
        n = h.shape[0]
        h = jnp.squeeze(h, 1 + b)
        hl = jnp.transpose(h, [0] + [1 + d - (d > b) for d in dn.lhs_spec[2:]] + [1 + channel - (channel > b)])
        patches = _patches_last(hl, window, p["window_strides"], p["padding"], p["rhs_dilation"])  # (N, P, K)
        ml = jnp.transpose(m, [0] + [1 + d for d in (dn.out_spec[0], *dn.out_spec[2:], dn.out_spec[1])])
        ml = ml.reshape(n, patches.shape[1], -1)                                                   # (N, P, C)
        a = jnp.einsum("npk,npc->nck", patches, ml, precision=jax.lax.Precision.HIGHEST)
        return a, g.reshape(g.shape[:axes.ndim] + (-1,))                                           # L: (N, *out, C)

    a1, l1 = factors(*sides[0])
    a2, l2 = (a1, l1) if same else factors(*sides[1])
    first, second, out = axes.letters()
    ll = jnp.einsum(f"{first}Z,{second}Z->{out}Z", l1, l2, precision=jax.lax.Precision.HIGHEST)
    ll = ll / axes.trace_size(l1.shape[:axes.ndim])
    if 0 in axes.diagonal:
        aa = jnp.einsum("nck,nck->nc", a1, a2, precision=jax.lax.Precision.HIGHEST)
        return jnp.einsum(f"{out}Z,{first[0]}Z->{out}", ll, aa, precision=jax.lax.Precision.HIGHEST)
    aa = jnp.einsum("nck,mck->nmc", a1, a2, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum(f"{out}Z,{first[0]}{second[0]}Z->{out}", ll, aa, precision=jax.lax.Precision.HIGHEST)


def _dims_cover(t, y_shape) -> bool:
    """The bias spans every non-trivial axis of its ``add`` (only size-1 axes were added), so its
    Jacobian is the tap's cotangent itself."""
    return all(d in t.dims or y_shape[d] == 1 for d in range(len(y_shape)))


def _conv_jacobian(eqn, h, g, out_ndim, free_layout=False):
    """``∂f_o/∂W`` per example and output entry, flattened to ``(N, *out, C_out, K)``: the image
    patches ``(K = C_in × window)`` of the layer input at every output position, contracted with
    the cotangents ``g (N, *out, *y)`` over positions — one GEMM per example (the weight gradient
    of that convolution alone). The flattening order of ``K`` is the patches' own, the same for
    ``x1`` and ``x2``, which is all an inner product needs."""
    p = eqn.params
    dn = p["dimension_numbers"]
    w_shape = eqn.invars[1].aval.shape
    window = [w_shape[d] for d in dn.rhs_spec[2:]]
    n = h.shape[0]
    b = dn.lhs_spec[0]  # the example's batch axis (size 1), dropped
    h = jnp.squeeze(h, 1 + b)
    lead = out_ndim                                                  # (N, *out) before y's axes
    gc = jnp.transpose(g, list(range(lead)) + [lead + d for d in dn.out_spec])  # y as (1, C_out, *spatial)
    gc = gc.reshape(g.shape[:lead] + (gc.shape[lead + 1], -1))      # (N, *out, C_out, positions)
    flat = gc.reshape(n, -1, gc.shape[-1])                           # (N, |out|·C_out, positions)
    if all(d == 1 for d in p["lhs_dilation"]):
        # channels-last patches (N, positions, K): slices of the padded input that copy whole
        # channel vectors; the GEMM contracts over their leading axis (no transpose of them)
        channel = dn.lhs_spec[1]
        hl = jnp.transpose(h, [0] + [1 + d - (d > b) for d in dn.lhs_spec[2:]] + [1 + channel - (channel > b)])
        patches = _patches_last(hl, window, p["window_strides"], p["padding"], p["rhs_dilation"])
        if free_layout:
            # y as (1, *spatial, C_out): g's own layout when the convolution is channels-last
            gl = jnp.transpose(g, list(range(lead)) + [lead + d for d in (dn.out_spec[0], *dn.out_spec[2:],
                                                                          dn.out_spec[1])])
            gl = gl.reshape(n, -1, patches.shape[1], gl.shape[-1])    # (N, |out|, positions, C_out)
            j = jnp.einsum("npk,nqpc->nkqc", patches, gl, precision=jax.lax.Precision.HIGHEST)
            return j.reshape(n, -1)
        j = jnp.einsum("npk,nqp->nqk", patches, flat, precision=jax.lax.Precision.HIGHEST)
    else:
        hc = jnp.transpose(h, [0] + [1 + d - (d > b) for d in dn.lhs_spec[1:]])  # (N, C_in, *spatial)
        patches = _patches(hc, window, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"])
        patches = patches.reshape(n, patches.shape[1], -1)           # (N, K, positions)
        j = jnp.einsum("nkp,nqp->nqk", patches, flat, precision=jax.lax.Precision.HIGHEST)
    # one GEMM per example, laid out (N, |out|·C_out, K) so that the output axes lead without a copy
    return j.reshape((n,) + gc.shape[1:-1] + (j.shape[-1],))


def _patches_last(x, window, strides, padding, rhs_dilation):
    """Image patches of ``x (N, *spatial, C)`` as ``(N, positions, K·C)`` (``K`` the window taps,
    tap-major): padding and strided slicing only."""
    nd = len(window)
    xp = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)])
    sizes = xp.shape[1:-1]
    out = [(sizes[i] - (window[i] - 1) * rhs_dilation[i] - 1) // strides[i] + 1 for i in range(nd)]
    taps = []
    for offset in itertools.product(*(range(w) for w in window)):
        start = [0] + [offset[i] * rhs_dilation[i] for i in range(nd)] + [0]
        limit = [xp.shape[0]] + [start[1 + i] + (out[i] - 1) * strides[i] + 1 for i in range(nd)] + [xp.shape[-1]]
        taps.append(jax.lax.slice(xp, start, limit, [1] + list(strides) + [1]))
    stacked = jnp.concatenate(taps, axis=-1)  # (N, *out, K·C)
    return stacked.reshape(x.shape[0], math.prod(out), -1)


def _patches(x, window, strides, padding, lhs_dilation, rhs_dilation):
    """Image patches of ``x (N, C, *spatial)`` as ``(N, C·K, *out_spatial)`` (``K`` the window
    taps, channel-major): by padding and strided slicing, i.e. data movement only. (XLA's
    ``conv_general_dilated_patches`` computes them as a convolution with a one-hot filter, which
    costs as much as the weight Jacobians themselves.) Input dilation (transposed convolutions)
    goes through that general routine."""
    if any(d != 1 for d in lhs_dilation):
        return jax.lax.conv_general_dilated_patches(x, window, strides, padding, lhs_dilation=lhs_dilation,
                                                    rhs_dilation=rhs_dilation,
                                                    precision=jax.lax.Precision.HIGHEST)
    nd = len(window)
    xp = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding])
    sizes = xp.shape[2:]
    out = [(sizes[i] - (window[i] - 1) * rhs_dilation[i] - 1) // strides[i] + 1 for i in range(nd)]
    taps = []
    for offset in itertools.product(*(range(w) for w in window)):
        start = [0, 0] + [offset[i] * rhs_dilation[i] for i in range(nd)]
        limit = [xp.shape[0], xp.shape[1]] + [start[2 + i] + (out[i] - 1) * strides[i] + 1 for i in range(nd)]
        taps.append(jax.lax.slice(xp, start, limit, [1, 1] + list(strides)))
    stacked = jnp.stack(taps, axis=2)  # (N, C, K, *out)
    return stacked.reshape((x.shape[0], -1) + tuple(out))
