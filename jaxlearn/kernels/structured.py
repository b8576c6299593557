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

How weights are recognised: ``apply`` is traced for one example (``jax.disable_jit`` inlines
nested ``jit`` programs) and each parameter leaf is followed through ``reshape``/``transpose``/
dtype conversion and multiplication or division by a parameter-free scalar (a parameterization
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
from jax.extend.core import Literal

from jaxlearn.landscape.affine import _bind

__all__ = ["structured_kernel", "is_supported", "analyse"]

_LINEAR = {"convert_element_type", "reshape", "transpose", "squeeze", "expand_dims", "copy", "copy_p"}
_PRODUCTS = {"dot_general", "conv_general_dilated"}


class _Target(NamedTuple):
    """A structured leaf. ``kind="weight"``: operand ``pos`` of the product ``eqn``; ``kind="bias"``:
    operand ``pos`` of the ``add`` ``eqn``, broadcast to its output keeping axes ``dims`` (the
    others, summed in its Jacobian, are the axes it was broadcast along).
    ``tap``: the equation whose output receives the cotangent probe — the product itself, or, for
    a weight whose product reaches a bias ``add`` through multiplications by scalars (``chain``,
    e.g. the NTK parameterization's ``W_std/√fan_in``), that ``add``: one probe serves both."""

    kind: str
    eqn: int
    leaf: int
    pos: int
    dims: tuple = ()
    tap: int = -1
    chain: tuple = ()


class Analysis(NamedTuple):
    """Which leaves are structured: ``targets`` (one per structured leaf) and ``fallback`` (the
    indices of the other leaves, differentiated by the Jacobian method); ``taps``: the equations
    whose outputs are probed, in order."""

    jaxpr: object
    targets: tuple
    fallback: tuple
    taps: tuple
    structured_size: int
    total_size: int


def _per_example(f):
    return lambda params, x: f(params, x[None])[0]


def _is_floating(v) -> bool:
    return jnp.issubdtype(v.aval.dtype, jnp.floating)


class _LeafFlow:
    """Where each parameter leaf goes in the traced program, learned one equation at a time by
    :meth:`follow`: the variables that are a leaf times parameter-free scalars (``lin``), such a
    leaf broadcast (``spread``), the variables that depend on leaves in any other way (``deps``),
    and, per leaf, the products and bias ``add`` s it is a candidate operand of."""

    def __init__(self, leaf_vars):
        self.lin = {v: i for i, v in enumerate(leaf_vars)}  # var -> leaf: scalar·(reshaped) leaf
        self.spread = {}                                     # var -> (leaf, dims): a broadcast lin var
        self.deps = {}                                       # var -> leaves it depends on otherwise
        self.uniform = set()                                 # parameter-free single-value vars
        self.candidates = {}                                 # leaf -> [_Target]

    def leaves_of(self, v) -> frozenset:
        if isinstance(v, Literal):
            return frozenset()
        if v in self.lin:
            return frozenset({self.lin[v]})
        if v in self.spread:
            return frozenset({self.spread[v][0]})
        return self.deps.get(v, frozenset())

    def is_leaf(self, v) -> bool:
        return not isinstance(v, Literal) and v in self.lin

    def is_single_value(self, v) -> bool:
        """Parameter-free and one value: a scalar, or a broadcast scalar."""
        return (isinstance(v, Literal) or not self.leaves_of(v)) and (math.prod(v.aval.shape) == 1
                                                                     or v in self.uniform)

    def follow(self, k, eqn):
        """Equation ``k``: its own rule (``_FOLLOW``) if it has one and that rule recognises it,
        otherwise :meth:`depend`."""
        out = eqn.outvars[0] if len(eqn.outvars) == 1 else None
        rule = _FOLLOW.get(eqn.primitive.name) if out is not None and _is_floating(out) else None
        if rule is None or not rule(self, k, eqn, out):
            self.depend(eqn)

    def depend(self, eqn):
        """Any other equation: each output depends on every leaf an input depends on."""
        all_deps = frozenset().union(*(self.leaves_of(v) for v in eqn.invars))
        if all_deps:
            for o in eqn.outvars:
                self.deps[o] = all_deps

    def follow_linear(self, k, eqn, out) -> bool:
        """A reshaped, transposed or dtype-converted leaf is still that leaf."""
        if not self.is_leaf(eqn.invars[0]):
            return False
        self.lin[out] = self.lin[eqn.invars[0]]
        return True

    def follow_scaling(self, k, eqn, out) -> bool:
        """A leaf times (either side) or divided by a parameter-free single value (a
        parameterization constant) is still that leaf."""
        ins = eqn.invars
        if len(ins) != 2:
            return False
        sides = (0, 1) if eqn.primitive.name == "mul" else (0,)
        pos = next((i for i in sides if self.is_leaf(ins[i]) and self.is_single_value(ins[1 - i])), None)
        if pos is None:
            return False
        self.lin[out] = self.lin[ins[pos]]
        return True

    def follow_broadcast(self, k, eqn, out) -> bool:
        """A broadcast leaf is ``spread`` (a bias on its way to its ``add``); a broadcast
        parameter-free single value stays one value (and is otherwise an ordinary equation)."""
        if self.is_leaf(eqn.invars[0]):
            self.spread[out] = (self.lin[eqn.invars[0]], tuple(eqn.params["broadcast_dimensions"]))
            return True
        if self.is_single_value(eqn.invars[0]):
            self.uniform.add(out)
        return False

    def find_weight(self, k, eqn, out) -> bool:
        """A leaf that is one operand of a plain product (``dot_general`` either side, a
        convolution's filter) and not behind the other operand is a weight candidate; the
        product depends on the other operand's leaves only."""
        if not _plain(eqn):
            return False
        ins = eqn.invars
        sides = (0, 1) if eqn.primitive.name == "dot_general" else (1,)
        pos = next((i for i in sides if self.is_leaf(ins[i]) and self.lin[ins[i]] not in self.leaves_of(ins[1 - i])),
                   None)
        if pos is None:
            return False
        leaf = self.lin[ins[pos]]
        self.candidates.setdefault(leaf, []).append(_Target("weight", k, leaf, pos, tap=k))
        self.deps[out] = self.leaves_of(ins[1 - pos])
        return True

    def find_bias(self, k, eqn, out) -> bool:
        """A broadcast leaf added to something not behind it, at the rank of the sum, is a bias
        candidate; the sum depends on the other operand's leaves only."""
        ins = eqn.invars
        if len(ins) != 2:
            return False
        pos = next((i for i in (0, 1) if not isinstance(ins[i], Literal) and ins[i] in self.spread
                    and self.spread[ins[i]][0] not in self.leaves_of(ins[1 - i])
                    and len(ins[i].aval.shape) == len(out.aval.shape)), None)
        if pos is None:
            return False
        leaf, dims = self.spread[ins[pos]]
        shape = ins[pos].aval.shape  # add may broadcast size-1 axes itself
        kept = tuple(d for d in dims if shape[d] == out.aval.shape[d])
        self.candidates.setdefault(leaf, []).append(_Target("bias", k, leaf, pos, kept, tap=k))
        self.deps[out] = self.leaves_of(ins[1 - pos])
        return True


# primitive -> the rule of _LeafFlow that recognises it (True) or leaves it to _LeafFlow.depend (False)
_FOLLOW = {**{name: _LeafFlow.follow_linear for name in _LINEAR},
           "mul": _LeafFlow.follow_scaling, "div": _LeafFlow.follow_scaling,
           "broadcast_in_dim": _LeafFlow.follow_broadcast,
           **{name: _LeafFlow.find_weight for name in _PRODUCTS},
           "add": _LeafFlow.find_bias}


def analyse(f: Callable, params, x_example) -> Analysis:
    """Traces ``f(params, x_example[None])[0]`` and classifies the parameter leaves (module
    docstring)."""
    leaves, treedef = jax.tree.flatten(params)
    with jax.disable_jit():
        closed = jax.make_jaxpr(lambda ls, x: _per_example(f)(jax.tree.unflatten(treedef, ls), x))(leaves, x_example)
    jaxpr = closed.jaxpr
    n = len(leaves)
    flow = _LeafFlow(jaxpr.invars[:n])
    for k, eqn in enumerate(jaxpr.eqns):
        flow.follow(k, eqn)
    uses, consumer = _count_uses(jaxpr)
    chosen = _share_bias_probes(jaxpr.eqns, _choose_targets(flow, uses, n), uses, consumer, flow.is_single_value)
    targets = tuple(chosen[i] for i in sorted(chosen))
    fallback = tuple(i for i in range(n) if i not in chosen)
    taps = tuple(sorted({t.tap for t in targets}))
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    return Analysis(closed, targets, fallback, taps, sum(sizes[t.leaf] for t in targets), sum(sizes))


def _count_uses(jaxpr):
    """How many times each variable is read, and the (last) equation reading it. A program output
    counts twice: it is not a single-use link of a chain."""
    uses, consumer = {}, {}
    for k, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, Literal):
                uses[v] = uses.get(v, 0) + 1
                consumer[v] = k
    for v in jaxpr.outvars:
        if not isinstance(v, Literal):
            uses[v] = uses.get(v, 0) + 2
    return uses, consumer


def _choose_targets(flow: _LeafFlow, uses, n) -> dict:
    """Leaf -> target for the structured leaves: exactly one candidate, no other dependence on the
    leaf anywhere, and no variable of it read twice."""
    tainted = frozenset().union(*flow.deps.values()) if flow.deps else frozenset()
    shared = {leaf for v, leaf in list(flow.lin.items()) + [(v, s[0]) for v, s in flow.spread.items()]
              if uses.get(v, 0) > 1}
    chosen = {}
    for i in range(n):
        found = flow.candidates.get(i, [])
        if len(found) == 1 and i not in tainted and i not in shared:
            chosen[i] = found[0]
    return chosen


def _share_bias_probes(eqns, chosen, uses, consumer, is_single_value) -> dict:
    """``chosen`` with each weight whose product flows into a chosen bias ``add`` probed there."""
    biases = {t.eqn: t for t in chosen.values() if t.kind == "bias"}
    return {i: _probe_at_bias(t, eqns, uses, consumer, biases, is_single_value) if t.kind == "weight" else t
            for i, t in chosen.items()}


def _probe_at_bias(t, eqns, uses, consumer, biases, is_single_value):
    """Follows weight ``t``'s product through single-use multiplications by single values (its
    ``chain``); if the next equation is the ``add`` of a bias in ``biases`` with the product on the
    other side, ``t`` takes that ``add`` as its tap, else stays as it is."""
    v, chain = eqns[t.eqn].outvars[0], []
    while uses.get(v, 0) == 1 and _scales_by_single_value(eqns[consumer[v]], v, is_single_value):
        chain.append(consumer[v])
        v = eqns[consumer[v]].outvars[0]
    bias = biases.get(consumer[v]) if uses.get(v, 0) == 1 else None
    if bias is not None and eqns[consumer[v]].invars[1 - bias.pos] is v:
        return t._replace(tap=bias.eqn, chain=tuple(chain))
    return t


def _scales_by_single_value(eqn, v, is_single_value) -> bool:
    return eqn.primitive.name == "mul" and any(w is not v and is_single_value(w) for w in eqn.invars)


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


def _evaluate(analysis: Analysis, leaves, x, eps):
    """Runs the traced program for one example with ``eps[j]`` added to the output of tap ``j``;
    returns ``(outputs, records)``, one record per target in order: ``(layer input h`` (weights;
    ``None`` for biases), ``leaf chain scale, output chain scale)``."""
    jaxpr = analysis.jaxpr.jaxpr
    env = dict(zip(jaxpr.constvars, analysis.jaxpr.consts))
    env.update(zip(jaxpr.invars, list(leaves) + [x]))
    scale = {v: 1.0 for v in jaxpr.invars[:len(leaves)]}
    taps = {k: j for j, k in enumerate(analysis.taps)}
    at = {}
    for i, t in enumerate(analysis.targets):
        at.setdefault(t.eqn, []).append(i)
    chained = {k for t in analysis.targets for k in t.chain}
    factor = {}
    records = [None] * len(analysis.targets)

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for k, eqn in enumerate(jaxpr.eqns):
        ins = [read(v) for v in eqn.invars]
        outs = _bind(eqn, ins)
        name = eqn.primitive.name
        for i in at.get(k, ()):
            t = analysis.targets[i]
            records[i] = [ins[1 - t.pos] if t.kind == "weight" else None, scale[eqn.invars[t.pos]], 1.0]
        if k in chained:  # the multiplier of a weight's output chain
            pos = next(j for j, v in enumerate(eqn.invars) if not (isinstance(v, Literal) or v not in factor))
            factor[eqn.outvars[0]] = factor[eqn.invars[pos]] * jnp.ravel(ins[1 - pos])[0]
        if k in taps:
            outs = [outs[0] + eps[taps[k]]]
        tracked = [j for j, v in enumerate(eqn.invars) if not isinstance(v, Literal) and v in scale]
        if len(eqn.outvars) == 1 and tracked:
            a = tracked[0]
            if name in _LINEAR or name == "broadcast_in_dim":
                scale[eqn.outvars[0]] = scale[eqn.invars[a]]
            elif name == "mul":
                scale[eqn.outvars[0]] = scale[eqn.invars[a]] * jnp.ravel(ins[1 - a])[0]
            elif name == "div" and a == 0:
                scale[eqn.outvars[0]] = scale[eqn.invars[0]] / jnp.ravel(ins[1])[0]
        for i in at.get(k, ()):
            if analysis.targets[i].chain:
                factor[eqn.outvars[0]] = 1.0
        for v, val in zip(eqn.outvars, outs):
            env[v] = val
        for i, t in enumerate(analysis.targets):
            if t.chain and k == t.chain[-1]:
                records[i][2] = factor[eqn.outvars[0]]
    return read(jaxpr.outvars[0]), [tuple(r) for r in records]


def _factors(analysis: Analysis, leaves, x):
    """Per example of ``x (N, ...)``: the cotangents ``g_j (N, *out, *y_j)`` at each tap, the
    records of :func:`_evaluate` (layer inputs per example, scales) and the Jacobians of the
    fallback leaves ``(N, *out, *leaf)`` — from one forward pass and ``|out|`` backward passes per
    example."""
    eqns = analysis.jaxpr.jaxpr.eqns
    eps0 = [jnp.zeros(eqns[k].outvars[0].aval.shape, eqns[k].outvars[0].aval.dtype) for k in analysis.taps]
    fb0 = [leaves[i] for i in analysis.fallback]

    def one(xn):
        def g(eps, fb):
            merged = list(leaves)
            for i, val in zip(analysis.fallback, fb):
                merged[i] = val
            return _evaluate(analysis, merged, xn, eps)

        (g_eps, j_fb), records = jax.jacrev(g, argnums=(0, 1), has_aux=True)(eps0, fb0)
        return g_eps, j_fb, records

    g_eps, j_fb, records = jax.vmap(one)(x)
    # scales do not depend on the example: keep one copy
    records = [(h, s[0] if jnp.ndim(s) else s, c[0] if jnp.ndim(c) else c) for h, s, c in records]
    return g_eps, j_fb, records


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
    from jaxlearn.kernels.contract import contract as _contract  # one contraction convention for all methods

    leaves, _ = jax.tree.flatten(params)
    analysis = analyse(f, params, x1[0])
    eqns = analysis.jaxpr.jaxpr.eqns
    one = _factors(analysis, leaves, x1)
    two = one if x2 is None else _factors(analysis, leaves, x2)
    out_ndim = axes.ndim
    batch_diagonal = 0 in axes.diagonal
    tap_index = {k: j for j, k in enumerate(analysis.taps)}
    total = 0.0
    for a, b in zip(one[1], two[1]):  # fallback leaves: Jacobian contraction
        total = total + _contract(axes, a, b, a.ndim - out_ndim)

    def pair(fn):
        a = fn(one)
        return a, (a if x2 is None else fn(two))

    # Terms that multiply the same cotangent Gram matrix GG_j = ⟨g_j(x1), g_j(x2)⟩ are summed
    # before it is formed: a Dense's weight (H·(c_W c_y)²) and its bias (c_b²).
    gram_weights: dict = {}
    for i, t in enumerate(analysis.targets):
        eqn, j = eqns[t.eqn], tap_index[t.tap]
        (_, s1, c1) = one[2][i]
        c2 = jnp.square(s1 * c1)
        if t.kind == "bias":
            if _dims_cover(t, eqn.outvars[0].aval.shape):  # J_b = c_b·g: the tap's Gram matrix
                gram_weights[j] = gram_weights.get(j, 0.0) + c2
            else:
                j1, j2 = pair(lambda side: _bias_jacobian(t, eqn, side[0][j], out_ndim))
                total = total + c2 * _contract(axes, j1, j2, 1)
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
            total = total + c2 * _contract(axes, j1, j2, 2)
        else:
            j1, j2 = pair(lambda side: _conv_jacobian(eqn, side[2][i][0], side[0][j], out_ndim))
            total = total + c2 * _contract(axes, j1, j2, j1.ndim - out_ndim)
    for j, weight in gram_weights.items():
        gk = _contract(axes, one[0][j], two[0][j], one[0][j].ndim - out_ndim)
        if jnp.ndim(weight):
            weight = weight.reshape(weight.shape + (1,) * (gk.ndim - weight.ndim))
        total = total + weight * gk
    return total


def _dims_cover(t, y_shape) -> bool:
    """The bias spans every non-trivial axis of its ``add`` (only size-1 axes were added), so its
    Jacobian is the tap's cotangent itself."""
    return all(d in t.dims or y_shape[d] == 1 for d in range(len(y_shape)))


def _conv_jacobian(eqn, h, g, out_ndim):
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
        hl = jnp.transpose(h, [0] + [1 + d - (d > b) for d in dn.lhs_spec[2:]] + [1 + dn.lhs_spec[1] - (dn.lhs_spec[1] > b)])
        patches = _patches_last(hl, window, p["window_strides"], p["padding"], p["rhs_dilation"])
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
