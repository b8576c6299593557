"""Infinite-width kernels of flax modules, read off their jaxpr.

:func:`flax_layer` turns a ``flax.linen`` or ``flax.nnx`` module built from layers with closed
forms into a :class:`jaxlearn.nn.Layer` whose ``kernel_fn`` is the module's infinite-width NNGP/NTK
map; :func:`jaxlearn.kernels.analytic` calls it when given a flax module. The module is traced once
(``jax.make_jaxpr`` of its forward pass on one example) and the jaxpr is interpreted over *kernels*
instead of arrays: every variable is one of

* a Gaussian-process feature map with a :class:`~jaxlearn.nn.Kernel` (the input, a weight layer's
  output, sums and window averages of them), or an elementwise function ``φ`` of one (kept
  symbolic until something needs its kernel: then ``φ`` is identified and its dual applied);
* a per-example statistic over the channels (a reduction over the channel axis), which in the
  infinite-width limit is deterministic (law of large numbers): ``mean_c z_c → 0`` for zero-mean
  Gaussian features, ``mean_c z_c² → q`` (the variance, the kernel's diagonal);
* a parameter (a leaf of the module's params, with its initialiser), or a constant.

Recognised patterns (primitive → layer algebra of :mod:`jaxlearn.nn`):

* ``dot_general`` of features with a 2-D weight over the feature axis → Dense's map
  (:func:`~jaxlearn.nn.kernel.affine_kernel`, standard parameterization with the module's finite
  fan-in); ``conv_general_dilated`` with channel-last layouts, ``SAME``/``VALID`` padding, no
  dilation or groups → Conv's map; adding a per-channel parameter → the bias (``K += σ_b²``,
  ``Θ += 1``); multiplying by one → a per-channel scale (``K ← c²K``, ``Θ ← c²Θ + K``).
* Elementwise chains (any mix of elementwise primitives, ``custom_jvp`` functions such as
  ``jax.nn.relu`` and nested ``jit`` calls on one feature map and constants) are identified
  numerically on a grid: ``a·min(z,0) + b·max(z,0)`` (ReLU, leaky ReLU, ``|z|``, scaled
  identity: linear scaling keeps the features Gaussian), ``a·erf(b·z) + c``, ``sin``, exact GELU
  (``jax.nn.gelu(approximate=False)``) and the tanh approximation of GELU (flax's default
  ``nn.gelu``), which is given the exact GELU's dual: the two functions differ by at most
  ``2·10⁻⁴`` (at ``|z| ≈ 2.4``), so the kernels differ at that order; use
  ``approximate=False`` for the exact limit. Activations without a closed form (tanh, sigmoid,
  softplus) raise and point to :func:`jaxlearn.kernels.monte_carlo`.
* LayerNorm over the channel axis (``linen.LayerNorm``, ``nnx.LayerNorm``: mean, variance from
  ``mean(x²) − mean(x)²``, ``rsqrt``, scale, bias: several primitives) falls out of the statistic
  rules: ``(z − 0)·rsqrt(q + ε)`` — the map of :func:`jaxlearn.nn.LayerNorm`, for Gaussian inputs.
* ``reduce_window_sum`` (``linen.avg_pool``) → AvgPool's map times the window size (the division
  that follows is a scalar scaling); ``reduce_sum`` over all spatial axes (``jnp.mean``) →
  GlobalAvgPool's map times the number of positions; ``reshape`` to ``(N, features)`` → Flatten's;
  reshapes that only add or drop unit axes are transparent.
* ``add``/``sub`` of two different feature maps → a residual sum (:func:`jaxlearn.nn.fanin_sum`:
  the covariances add, which holds when one branch ends in a weight layer with fresh weights).

Anything else — another primitive, a weight used in another way, BatchNorm's collections —
raises one ``ValueError`` naming the first unsupported primitive and the module it came from.

The interpreter (a :class:`jaxlearn._jaxpr.Interpreter` over these values) needs no flax: it
maps any JAX function ``forward(params, x)`` whose parameter leaves come with a role and an
initial distribution (:class:`jaxlearn.nn.flax_adapters.ParamInit`) onto the layer algebra; a flax
module is one such function (:func:`jaxlearn.nn.flax_adapters.flax_forward`). Activations are
recognised numerically by :func:`jaxlearn.nn.dual.identify_activation`.

Widths and initialisers. The jaxpr has no ``W_std``/``b_std``: they are read from the linen
module's initialisers (``variance_scaling`` family — lecun/he/glorot normal/uniform/truncated:
``W_std² = fan_in · Var[W]`` for the weight's own shape —, ``normal(σ)``, ``zeros``, ``ones``,
``constant``); nnx modules do not keep their initialisers, so flax's defaults are assumed for them
(``lecun_normal`` weights, zero biases, unit LayerNorm scales). ``W_std=``/``b_std=`` override
every Dense/Conv weight/bias (needed for other initialisers; LayerNorm's scale and offset keep
theirs). flax's defaults are the standard parameterization with ``W_std = 1``, ``b_std = 0``;
its NTK uses each layer's finite fan-in, as :func:`jaxlearn.nn.Dense` does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlearn._checks import check_real
from jaxlearn._jaxpr.equations import bind
from jaxlearn._jaxpr.interpreter import Interpreter
from jaxlearn._jaxpr.primitives import BROADCASTS, CALLS, CONVERSIONS, ELEMENTWISE, RESHAPES
from jaxlearn._jaxpr.tracing import trace
from jaxlearn._types import ArrayLike, PyTree
from jaxlearn.nn.core import Layer, LayerError, fanin_sum_kernel
from jaxlearn.nn.dual import identify_activation, identify_power
from jaxlearn.nn.flax_adapters import ParamInit, flax_forward, is_flax_module
from jaxlearn.nn.kernel import Kernel, affine_kernel, elementwise_kernel, input_kernel, pair_shape, self_pair_shape
from jaxlearn.nn.spatial_kernel import avg_pool_kernel, conv_kernel, flatten_kernel, global_avg_pool_kernel

__all__ = ["flax_layer", "is_flax_module"]

# Change the shape of a feature map without mixing its entries (or convert its dtype).
_SHAPE_ONLY = RESHAPES | BROADCASTS | CONVERSIONS


# -- abstract values --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Features:
    """A feature map ``φ(z)``: ``z`` Gaussian with kernel ``k``, ``fn`` the elementwise ``φ`` (None: z)."""

    k: Kernel
    fn: Callable | None = None


@dataclasses.dataclass
class _Stat:
    """A per-example (per-position) statistic over the channels: arrays ``(N1, *P)``/``(N2, *P)``;
    ``None`` arrays: exactly zero. ``scales``: per-channel parameter factors multiplied in."""

    q1: Any
    q2: Any
    scales: tuple = ()


@dataclasses.dataclass
class _Const:
    value: Any


class _UnsupportedError(ValueError):
    pass


def _where(eqn) -> str:
    stack = str(eqn.source_info.name_stack)
    return f" (in {stack})" if stack else ""


def _feeding(eqn) -> str:
    stack = str(eqn.source_info.name_stack)
    return f" (feeding {stack})" if stack else ""


def _fail(eqn, why: str):
    raise _UnsupportedError(f"flax module: primitive {eqn.primitive.name!r}{_where(eqn)} {why}")


# -- the interpreter -------------------------------------------------------------------------------


def _concrete(eqn, vals):
    with jax.ensure_compile_time_eval():
        return bind(eqn, vals)


def _compose(eqn, ins):
    """The elementwise ``z -> eqn(inputs)`` where each input is ``φ_i(z)`` or a constant."""
    fns = [(v.fn or (lambda z: z)) if isinstance(v, _Features) else (lambda z, c=v.value: c) for v in ins]

    def fn(z):
        return bind(eqn, [f(z) for f in fns])[0]

    return fn


def _scale(k: Kernel, a) -> Kernel:
    """The kernel of ``a·z`` (``a`` a scalar)."""
    a2 = jnp.square(a)
    return k.replace(nngp=a2 * k.nngp, ntk=a2 * k.ntk, cov1=a2 * k.cov1,
                     cov2=None if k.cov2 is None else a2 * k.cov2)


def _identify(fn, hint: str):
    """``(dual, gaussian_scale)`` for the elementwise ``fn`` (:func:`jaxlearn.nn.dual.identify_activation`)."""
    try:
        return identify_activation(fn, hint)
    except ValueError as e:
        raise _UnsupportedError(f"flax module: {e}") from None


def _kernel_of(v: _Features, hint: str = "") -> Kernel:
    """The kernel of a feature map (its activation applied)."""
    if v.fn is None:
        return v.k
    dual, a = _identify(v.fn, hint)
    if dual is None:
        return _scale(v.k, a)
    try:
        return elementwise_kernel(v.k, dual, "activation")
    except LayerError as e:
        raise _UnsupportedError(f"flax module{hint}: {e}") from None


def _scale_by_stat(k: Kernel, s: _Stat) -> Kernel:
    """The kernel of ``z·s(x)`` with ``s`` a per-example (per-position) statistic."""
    p = k.spatial_ndim
    nngp = pair_shape(True, s.q1, p) * k.nngp * pair_shape(False, s.q2, p)
    ntk = pair_shape(True, s.q1, p) * k.ntk * pair_shape(False, s.q2, p)
    cov1 = self_pair_shape(True, s.q1) * k.cov1 * self_pair_shape(False, s.q1)
    cov2 = None if k.cov2 is None else self_pair_shape(True, s.q2) * k.cov2 * self_pair_shape(False, s.q2)
    return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)


class _KernelInterpreter(Interpreter):
    """Values: :class:`_Features`, :class:`_Stat`, :class:`ParamInit` (a parameter) or
    :class:`_Const`. Equations of constants are evaluated; calls of every kind are entered (an
    activation such as ``jax.nn.relu`` is a ``custom_jvp`` call: its primal program is the
    function to recognise); the rules below map the rest onto the layer algebra, and anything
    else is unsupported."""

    enters = frozenset(CALLS)

    def __init__(self, W_std, b_std):
        self.W_std, self.b_std = W_std, b_std

    # parameters
    def weight_std(self, p: ParamInit, fan_in: int):
        if self.W_std is not None:
            return self.W_std
        if p.init is None or p.init[0] != "variance":
            raise _UnsupportedError(f"flax module: the initialiser of weight {p.path} is not a zero-mean "
                                    f"variance-scaling or normal initialiser; pass W_std= explicitly")
        return math.sqrt(p.init[1] * fan_in)

    def bias_std(self, p: ParamInit):
        if self.b_std is not None and p.of_weight_layer:
            return self.b_std
        if p.init is not None and p.init[0] == "variance":
            return math.sqrt(p.init[1])
        if p.init is not None and p.init == ("constant", 0.0):
            return 0.0
        raise _UnsupportedError(f"flax module: the initialiser of bias {p.path} is neither zeros nor zero-mean "
                                f"normal; pass b_std= explicitly")

    # the interpretation proper
    def constant(self, value):
        return _Const(value)

    def equation(self, eqn, ins):
        if all(isinstance(v, _Const) for v in ins):
            return [_Const(o) for o in _concrete(eqn, [v.value for v in ins])]
        return super().equation(eqn, ins)

    def default_rule(self, eqn, ins):
        _fail(eqn, "has no infinite-width map (supported: Dense, Conv, pooling, LayerNorm, activations, residual sums)")

    # rules: each maps one primitive onto the layer algebra, or finds it unsupported
    def shape_rule(self, eqn, ins):
        return [self.reshape(eqn, ins[0])] if len(ins) == 1 else self.default_rule(eqn, ins)

    def product_rule(self, eqn, ins):
        feats, params, _ = _sort(ins)
        if len(feats) != 1 or len(params) != 1:
            return self.default_rule(eqn, ins)
        return [self.dense(eqn, ins) if eqn.primitive.name == "dot_general" else self.conv(eqn, ins)]

    def sum_rule(self, eqn, ins):
        feats, _, _ = _sort(ins)
        if not feats:
            return self.default_rule(eqn, ins)
        summed = self.reduce_sum if eqn.primitive.name == "reduce_sum" else self.window_sum
        return [summed(eqn, feats[0])]

    def elementwise_rule(self, eqn, ins):
        return [self.elementwise(eqn, ins, *_sort(ins))]

    def reshape(self, eqn, v):
        if isinstance(v, (ParamInit, _Stat)):
            return v
        out = eqn.outvars[0].aval.shape
        inp = eqn.invars[0].aval.shape
        if isinstance(v, _Features):
            if tuple(d for d in inp if d != 1) == tuple(d for d in out if d != 1) and inp[0] == out[0] \
                    and inp[-1] == out[-1]:
                return v
            if eqn.primitive.name == "reshape" and len(out) == 2 and out[0] == inp[0] and len(inp) > 2:
                return _Features(flatten_kernel(_kernel_of(v, _feeding(eqn)), "Flatten"))
        _fail(eqn, f"reshapes features {inp} -> {out}, which is not Flatten")

    def dense(self, eqn, ins):
        f, w = (ins[0], ins[1]) if isinstance(ins[0], _Features) else (ins[1], ins[0])
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs_ndim = eqn.invars[0].aval.ndim
        if not isinstance(ins[0], _Features) or len(w.shape) != 2 or tuple(lc) != (lhs_ndim - 1,) \
                or tuple(rc) != (0,) or lb or rb or w.role != "weight":
            _fail(eqn, "is not a Dense layer (features @ a 2-D weight over the last axis)")
        k = _kernel_of(f, _feeding(eqn))
        fan_in, fan_out = w.shape
        return _Features(affine_kernel(k, self.weight_std(w, fan_in), None, "standard", fan_in, fan_out))

    def conv(self, eqn, ins):
        f, w = ins
        p = eqn.params
        nd = len(w.shape) - 2
        dn = p["dimension_numbers"]
        channel_last = (0, nd + 1) + tuple(range(1, nd + 1))
        if not isinstance(f, _Features) or w.role != "weight" or tuple(dn.lhs_spec) != channel_last \
                or tuple(dn.out_spec) != channel_last or tuple(dn.rhs_spec) != (nd + 1, nd) + tuple(range(nd)) \
                or p["feature_group_count"] != 1 or p["batch_group_count"] != 1 \
                or any(d != 1 for d in p["lhs_dilation"]) or any(d != 1 for d in p["rhs_dilation"]):
            _fail(eqn, "is not a Conv layer (channel-last input, HWIO weight, no dilation or groups)")
        window, strides = tuple(w.shape[:nd]), tuple(p["window_strides"])
        spatial = eqn.invars[0].aval.shape[1:-1]
        pads = tuple(tuple(x) for x in p["padding"])
        padding = next((name for name in ("SAME", "VALID")
                        if tuple(jax.lax.padtype_to_pads(spatial, window, strides, name)) == pads), None)
        if padding is None:
            _fail(eqn, f"pads {pads}, which is neither SAME nor VALID")
        k = _kernel_of(f, _feeding(eqn))
        fan_in = math.prod(w.shape[:-1])
        return _Features(conv_kernel(k, "Conv", window, strides, padding, self.weight_std(w, fan_in), None,
                                     "standard", w.shape[-1]))

    def reduce_sum(self, eqn, f):
        axes = tuple(eqn.params["axes"])
        ndim = eqn.invars[0].aval.ndim
        shape = eqn.invars[0].aval.shape
        if axes == (ndim - 1,):  # over the channels: a statistic (law of large numbers)
            power = 1 if f.fn is None else identify_power(f.fn)
            if power is None:
                raise _UnsupportedError("flax module: a channel mean of a nonlinear function of the features "
                                        "(other than z²) has no map here")
            if power == 2:
                q1, q2 = f.k.variances()
                return _Stat(shape[-1] * q1, shape[-1] * q2)
            if not f.k.is_gaussian:
                _fail(eqn, "averages features over the channels that are not zero-mean Gaussian (e.g. LayerNorm "
                           "after an activation); only LayerNorm of weight-layer outputs has a closed form")
            return _Stat(None, None)
        if ndim > 2 and axes == tuple(range(1, ndim - 1)):  # over all positions: global pooling × positions
            k = global_avg_pool_kernel(_kernel_of(f, _feeding(eqn)))
            return _Features(_scale(k, math.prod(shape[1:-1])))
        _fail(eqn, f"sums features over axes {axes} of shape {shape}: only the channel axis (LayerNorm) or all "
                   f"positions (global pooling) have a map")

    def window_sum(self, eqn, f):
        p = eqn.params
        dims, strides = p["window_dimensions"], p["window_strides"]
        pads = tuple(tuple(x) for x in p["padding"])
        if dims[0] != 1 or dims[-1] != 1 or strides[0] != 1 or strides[-1] != 1 \
                or any(d != 1 for d in p["base_dilation"]) or any(d != 1 for d in p["window_dilation"]):
            _fail(eqn, "pools over the batch or channel axis or with dilation")
        window, step = tuple(dims[1:-1]), tuple(strides[1:-1])
        spatial = eqn.invars[0].aval.shape[1:-1]
        padding = next((name for name in ("SAME", "VALID")
                        if ((0, 0),) + tuple(jax.lax.padtype_to_pads(spatial, window, step, name)) + ((0, 0),)
                        == pads), None)
        if padding is None:
            _fail(eqn, f"pads {pads}, which is neither SAME nor VALID")
        k = avg_pool_kernel(_kernel_of(f, _feeding(eqn)), "AvgPool", window, step, padding, True)
        return _Features(_scale(k, math.prod(window)))

    def elementwise(self, eqn, ins, feats, params, stats):
        name = eqn.primitive.name
        sources = {id(f.k) for f in feats}
        if feats and not params and not stats and len(sources) == 1:
            return _Features(feats[0].k, _compose(eqn, ins))
        if name in ("add", "sub") and len(feats) == 2 and len(sources) == 2:
            ks = tuple(_kernel_of(f, _feeding(eqn)) for f in feats)
            try:
                return _Features(fanin_sum_kernel(ks))
            except LayerError as e:
                _fail(eqn, f"sums two feature maps: {e}")
        if len(feats) == 1 and feats[0].fn is None and len(ins) == 2:
            other = ins[1] if ins[0] is feats[0] else ins[0]
            k = feats[0].k
            if name == "add" and isinstance(other, ParamInit) and other.role == "bias":
                b2 = jnp.square(self.bias_std(other))
                cov2 = None if k.cov2 is None else k.cov2 + b2
                return _Features(k.replace(nngp=k.nngp + b2, ntk=k.ntk + 1.0, cov1=k.cov1 + b2, cov2=cov2))
            if name == "mul" and isinstance(other, ParamInit) and other.role == "scale":
                return _Features(self.param_scale(eqn, k, other))
            if name == "mul" and isinstance(other, _Stat) and other.q1 is not None:
                k = _scale_by_stat(k, other)
                for p in other.scales:
                    k = self.param_scale(eqn, k, p)
                return _Features(k)
            if name == "sub" and ins[0] is feats[0] and isinstance(other, _Stat) and other.q1 is None:
                return feats[0]
        if not feats and stats:
            return self.stat_op(eqn, ins, params)
        _fail(eqn, "combines features, parameters and statistics in a way that is not a Dense/Conv bias, a "
                   "LayerNorm, an activation or a residual sum")

    def param_scale(self, eqn, k, p: ParamInit):
        if p.init is None or p.init[0] != "constant":
            _fail(eqn, f"scales by parameter {p.path}, whose initialiser is not a constant")
        c = p.init[1]
        scaled = _scale(k, c)
        cov2 = scaled.cov2
        return scaled.replace(ntk=scaled.ntk + k.nngp, cov2=cov2)

    def stat_op(self, eqn, ins, params):
        name = eqn.primitive.name
        if name == "mul" and len(params) == 1 and len(ins) == 2:
            s = next(v for v in ins if isinstance(v, _Stat))
            if params[0].role != "scale":
                _fail(eqn, f"multiplies a statistic by parameter {params[0].path}, which is not a scale")
            return _Stat(s.q1, s.q2, s.scales + (params[0],))
        if params or any(isinstance(v, _Stat) and v.scales for v in ins):
            _fail(eqn, "mixes parameters into a statistic")
        for v in ins:
            if isinstance(v, _Const) and np.ndim(v.value) != 0 and np.size(v.value) != 1:
                _fail(eqn, "combines a statistic with a non-scalar constant")
        zero = [isinstance(v, _Stat) and v.q1 is None for v in ins]
        if any(zero):
            if name in ("square", "integer_pow", "mul", "neg", "convert_element_type") or (name == "div" and zero[0]):
                return _Stat(None, None)
            if name in ("add", "sub") and len(ins) == 2:
                other = ins[1] if zero[0] else ins[0]
                if name == "sub" and zero[0]:
                    _fail(eqn, "negates a statistic")
                return other if isinstance(other, _Stat) else _Stat(None, None) if isinstance(other, _Const) and \
                    np.all(np.asarray(other.value) == 0) else _fail(eqn, "adds a constant to a zero statistic")
            if name == "max" and len(ins) == 2:
                other = ins[1] if zero[0] else ins[0]
                if isinstance(other, _Stat):
                    return other
            _fail(eqn, "needs the value of a statistic that is zero in the limit")

        def side(which):
            vals = [getattr(v, which) if isinstance(v, _Stat) else jnp.reshape(jnp.asarray(v.value), ()) for v in ins]
            return bind(eqn, vals)[0]

        return _Stat(side("q1"), side("q2"))

    rules = {**dict.fromkeys(ELEMENTWISE, elementwise_rule), **dict.fromkeys(_SHAPE_ONLY, shape_rule),
             "dot_general": product_rule, "conv_general_dilated": product_rule,
             "reduce_sum": sum_rule, "reduce_window_sum": sum_rule}


def _sort(ins):
    """The inputs that are features, parameters and statistics."""
    return ([v for v in ins if isinstance(v, _Features)], [v for v in ins if isinstance(v, ParamInit)],
            [v for v in ins if isinstance(v, _Stat)])


def flax_layer(module: linen.Module | nnx.Module, example: ArrayLike, *, variables: PyTree | None = None,
               W_std: float | None = None, b_std: float | None = None) -> Layer:
    """``module`` (a ``flax.linen.Module`` or an ``nnx.Module``) as a :class:`jaxlearn.nn.Layer`
    with its infinite-width kernel map (module docstring: recognised patterns, initialisers).

    ``example``: one input batch (only its shape and dtype are used for tracing). ``variables``:
    linen variables (default: ``module.init`` with a fixed key — only the shapes matter).
    ``W_std``/``b_std``: override the values read from the initialisers, for every weight/bias.
    The module is traced when this is called: unsupported primitives raise here, naming the first
    one. The returned layer's ``init``/``apply`` are :func:`jaxlearn.nn.from_linen`'s for linen
    modules (for nnx modules, use :func:`jaxlearn.nn.from_nnx` to train; this layer is for kernels).
    """
    example = jnp.asarray(example)[:1]
    flax_fn = flax_forward(module, example, variables=variables)
    for name, value in (("W_std", W_std), ("b_std", b_std)):
        if value is not None:
            check_real(value, name, minimum=0.0, expected="a non-negative number or None")
    kernel_fn = _kernel_map(flax_fn.forward, flax_fn.params, flax_fn.inits, example, W_std, b_std)
    name = f"flax({type(module).__name__})"
    if flax_fn.layer is not None:
        return Layer(flax_fn.layer.init_fn, flax_fn.layer.apply_fn, kernel_fn, name, None)

    def _no_init(key, spec):
        raise LayerError(f"{name}: built for kernels; train nnx modules through jaxlearn.nn.from_nnx")

    return Layer(_no_init, _no_init, kernel_fn, name, None)


def _kernel_map(forward: Callable, params, inits, example, W_std, b_std) -> Callable[[Kernel], Kernel]:
    """The infinite-width kernel map of ``forward(params, x)`` (module docstring), for parameter
    leaves described by ``inits`` (one :class:`ParamInit` per leaf) and inputs like ``example``.
    Traced now, on the input kernel of the example, so that unsupported functions fail here."""
    program = trace(forward, params, example).program
    if len(program.in_avals) != len(inits) + 1:
        raise ValueError("module: expected the forward pass to take one input array")
    if len(program.out_avals) != 1:
        raise ValueError("module: expected the forward pass to return one array")
    interpreter = _KernelInterpreter(W_std, b_std)

    def kernel_fn(k):
        try:
            out = interpreter.run(program, list(inits) + [_Features(k)])[0]
            if not isinstance(out, _Features):
                raise _UnsupportedError("flax module: the output is not a feature map of the input")
            return _kernel_of(out, " (at the output)")
        except _UnsupportedError as e:
            raise ValueError(str(e)) from None

    jax.eval_shape(lambda x: kernel_fn(input_kernel(x)), example)
    return kernel_fn
