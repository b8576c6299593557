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
per-example Jacobian from the layer's own transpose (``vjp`` of that one primitive at ``h``, not
a backward pass through the network), which is then contracted.

How weights are recognised: ``apply`` is traced for one example (``jax.disable_jit`` inlines
nested ``jit`` programs) and each parameter leaf is followed through ``reshape``/``transpose``/
dtype conversion and multiplication or division by a parameter-free scalar (a parameterization
constant such as ``W_std/√fan_in``, which may be traced) to a ``dot_general`` or
``conv_general_dilated`` where it is one operand. A leaf that reaches exactly one such product
and is used nowhere else is *structured*; every other leaf (biases, BatchNorm scales, embeddings,
weights used twice, anything inside ``scan``/``custom_vjp`` calls) is differentiated by the
Jacobian method in the same backward passes. So the result is exact for any model; the speed-up
is in the structured leaves. Reverse mode only: works through ``custom_vjp`` learning rules.
"""

from __future__ import annotations

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
    eqn: int       # index of the product in the traced program
    leaf: int      # the parameter leaf it carries
    weight: int    # operand position of the weight (0 or 1)


class Analysis(NamedTuple):
    """Which leaves are structured: ``targets`` (one per structured leaf) and ``fallback`` (the
    indices of the other leaves, differentiated by the Jacobian method)."""

    jaxpr: object
    targets: tuple
    fallback: tuple
    structured_size: int
    total_size: int


def _per_example(f):
    return lambda params, x: f(params, x[None])[0]


def analyse(f: Callable, params, x_example) -> Analysis:
    """Traces ``f(params, x_example[None])[0]`` and classifies the parameter leaves (module
    docstring)."""
    leaves, treedef = jax.tree.flatten(params)
    with jax.disable_jit():
        closed = jax.make_jaxpr(lambda ls, x: _per_example(f)(jax.tree.unflatten(treedef, ls), x))(leaves, x_example)
    jaxpr = closed.jaxpr
    n = len(leaves)
    lin: dict = {v: i for i, v in enumerate(jaxpr.invars[:n])}   # var -> leaf: scalar·(reshaped) leaf
    deps: dict = {}                                              # var -> leaves it depends on otherwise
    uniform: set = set()                                         # parameter-free single-value vars
    uses: dict = {}
    candidates: dict = {}

    def var_deps(v):
        if isinstance(v, Literal):
            return frozenset()
        if v in lin:
            return frozenset({lin[v]})
        return deps.get(v, frozenset())

    def param_free(v):
        return isinstance(v, Literal) or (v not in lin and not deps.get(v))

    def single_value(v):
        return param_free(v) and (math.prod(v.aval.shape) == 1 or v in uniform)

    for k, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, Literal):
                uses[v] = uses.get(v, 0) + 1
        name = eqn.primitive.name
        ins = eqn.invars
        out = eqn.outvars[0] if len(eqn.outvars) == 1 else None
        all_deps = frozenset().union(*(var_deps(v) for v in ins))
        if out is not None and name in _LINEAR and ins[0] in lin and jnp.issubdtype(out.aval.dtype, jnp.floating):
            lin[out] = lin[ins[0]]
            continue
        if out is not None and name in ("mul", "div") and len(ins) == 2:
            for pos in ((0, 1) if name == "mul" else (0,)):
                a, b = ins[pos], ins[1 - pos]
                if not isinstance(a, Literal) and a in lin and single_value(b):
                    lin[out] = lin[a]
                    break
            if out in lin:
                continue
        if out is not None and name == "broadcast_in_dim" and single_value(ins[0]):
            uniform.add(out)
        if out is not None and name in _PRODUCTS and _plain(eqn):
            positions = (0, 1) if name == "dot_general" else (1,)
            for pos in positions:
                w, h = ins[pos], ins[1 - pos]
                if not isinstance(w, Literal) and w in lin and lin[w] not in var_deps(h):
                    candidates.setdefault(lin[w], []).append(_Target(k, lin[w], pos))
                    deps[out] = var_deps(h)
                    break
            if out in deps:
                continue
        for o in eqn.outvars:
            if all_deps:
                deps[o] = all_deps
    for v in jaxpr.outvars:
        if not isinstance(v, Literal):
            uses[v] = uses.get(v, 0) + 1

    tainted = frozenset().union(*deps.values()) if deps else frozenset()
    shared = {leaf for v, leaf in lin.items() if uses.get(v, 0) > 1}
    targets, fallback = [], []
    for i in range(n):
        found = candidates.get(i, [])
        if len(found) == 1 and i not in tainted and i not in shared:
            targets.append(found[0])
        else:
            fallback.append(i)
    sizes = [math.prod(leaf.shape) for leaf in leaves]
    return Analysis(closed, tuple(targets), tuple(fallback), sum(sizes[t.leaf] for t in targets), sum(sizes))


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
    """Runs the traced program for one example with ``eps[t]`` added to each target product's
    output; returns ``(outputs, layer inputs h, chain scales)``."""
    jaxpr = analysis.jaxpr.jaxpr
    env = {}
    scale = {}
    for v, val in zip(jaxpr.invars, list(leaves) + [x]):
        env[v] = val
    for v, val in zip(jaxpr.constvars, analysis.jaxpr.consts):
        env[v] = val
    for v in jaxpr.invars[:len(leaves)]:
        scale[v] = 1.0
    where = {t.eqn: (i, t) for i, t in enumerate(analysis.targets)}
    hs, scales = [None] * len(analysis.targets), [None] * len(analysis.targets)

    def read(v):
        return v.val if isinstance(v, Literal) else env[v]

    for k, eqn in enumerate(jaxpr.eqns):
        ins = [read(v) for v in eqn.invars]
        outs = _bind(eqn, ins)
        name = eqn.primitive.name
        if k in where:
            i, t = where[k]
            hs[i], scales[i] = ins[1 - t.weight], scale[eqn.invars[t.weight]]
            outs = [outs[0] + eps[i]]
        elif len(eqn.outvars) == 1 and any(not isinstance(v, Literal) and v in scale for v in eqn.invars):
            a = eqn.invars[0]
            if name in _LINEAR:
                scale[eqn.outvars[0]] = scale[a]
            elif name == "mul":
                lin_pos = 0 if (not isinstance(a, Literal) and a in scale) else 1
                scale[eqn.outvars[0]] = scale[eqn.invars[lin_pos]] * jnp.ravel(ins[1 - lin_pos])[0]
            elif name == "div":
                scale[eqn.outvars[0]] = scale[a] / jnp.ravel(ins[1])[0]
        for v, val in zip(eqn.outvars, outs):
            env[v] = val
    return read(jaxpr.outvars[0]), hs, scales


def _factors(analysis: Analysis, leaves, x):
    """Per example of ``x (N, ...)``: the cotangents ``g_t (N, *out, *y_t)`` at each target, the
    layer inputs ``h_t (N, *h_t)``, the chain scales, and the Jacobians of the fallback leaves
    ``(N, *out, *leaf)`` — from one forward pass and ``|out|`` backward passes per example."""
    eqns = analysis.jaxpr.jaxpr.eqns
    eps0 = [jnp.zeros(eqns[t.eqn].outvars[0].aval.shape, eqns[t.eqn].outvars[0].aval.dtype)
            for t in analysis.targets]
    fb0 = [leaves[i] for i in analysis.fallback]

    def one(xn):
        def g(eps, fb):
            merged = list(leaves)
            for i, val in zip(analysis.fallback, fb):
                merged[i] = val
            out, hs, scales = _evaluate(analysis, merged, xn, eps)
            return out, (hs, scales)

        (g_eps, j_fb), (hs, scales) = jax.jacrev(g, argnums=(0, 1), has_aux=True)(eps0, fb0)
        return g_eps, j_fb, hs, scales

    g_eps, j_fb, hs, scales = jax.vmap(one)(x)
    return g_eps, j_fb, hs, [s[0] if jnp.ndim(s) else s for s in scales]


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


def structured_kernel(f, params, x1, x2, axes):
    """The NTK by structured derivatives (module docstring); ``axes`` from
    :func:`jaxlearn.kernels.empirical` (trace/diagonal conventions there)."""
    from jaxlearn.kernels.empirical import _contract  # one contraction convention for all methods

    leaves, _ = jax.tree.flatten(params)
    analysis = analyse(f, params, x1[0])
    eqns = analysis.jaxpr.jaxpr.eqns
    one = _factors(analysis, leaves, x1)
    two = one if x2 is None else _factors(analysis, leaves, x2)
    out_ndim = axes.ndim
    batch_diagonal = 0 in axes.diagonal
    total = 0.0
    for a, b in zip(one[1], two[1]):  # fallback leaves: Jacobian contraction
        total = total + _contract(axes, a, b, a.ndim - out_ndim)
    for i, t in enumerate(analysis.targets):
        eqn = eqns[t.eqn]
        c2 = jnp.square(one[3][i])
        if eqn.primitive.name == "dot_general":
            h1, g1 = _flat_dense(eqn, t.weight, one[2][i], one[0][i], out_ndim)
            h2, g2 = (h1, g1) if x2 is None else _flat_dense(eqn, t.weight, two[2][i], two[0][i], out_ndim)
            if h1.shape[1] == 1:  # one position: the product of two Gram matrices
                gram = (jnp.einsum("nc,nc->n", h1[:, 0], h2[:, 0]) if batch_diagonal
                        else jnp.einsum("nc,mc->nm", h1[:, 0], h2[:, 0], precision=jax.lax.Precision.HIGHEST))
                gk = _contract(axes, g1[..., 0, :], g2[..., 0, :], 1)
                total = total + c2 * gram.reshape(gram.shape + (1,) * (gk.ndim - gram.ndim)) * gk
                continue
            j1 = jnp.einsum("nsc,n...sf->n...cf", h1, g1)
            j2 = j1 if x2 is None else jnp.einsum("nsc,n...sf->n...cf", h2, g2)
            total = total + c2 * _contract(axes, j1, j2, 2)
        else:
            j1 = _conv_jacobian(eqn, one[2][i], one[0][i], out_ndim)
            j2 = j1 if x2 is None else _conv_jacobian(eqn, two[2][i], two[0][i], out_ndim)
            total = total + c2 * _contract(axes, j1, j2, j1.ndim - out_ndim)
    return total


def _conv_jacobian(eqn, h, g, out_ndim):
    """``∂f_o/∂W`` per example and output entry, flattened to ``(N, *out, K, C_out)``: the image
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
    hc = jnp.transpose(jnp.squeeze(h, 1 + b), [0] + [1 + d - (d > b) for d in dn.lhs_spec[1:]])  # (N, C_in, *spatial)
    patches = jax.lax.conv_general_dilated_patches(
        hc, window, p["window_strides"], p["padding"], lhs_dilation=p["lhs_dilation"],
        rhs_dilation=p["rhs_dilation"], precision=jax.lax.Precision.HIGHEST)
    patches = patches.reshape(n, patches.shape[1], -1)               # (N, K, positions)
    lead = out_ndim                                                  # (N, *out) before y's axes
    gc = jnp.transpose(g, list(range(lead)) + [lead + d for d in dn.out_spec])  # y as (1, C_out, *spatial)
    gc = gc.reshape(g.shape[:lead] + (gc.shape[lead + 1], -1))      # (N, *out, C_out, positions)
    return jnp.einsum("nkp,n...cp->n...kc", patches, gc, precision=jax.lax.Precision.HIGHEST)
