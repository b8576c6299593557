"""neural-tangents' ``stax`` on jaxlearn: the same constructors, defaults and argument order, each
returning ``(init_fn, apply_fn, kernel_fn)`` (:class:`~jaxlearn.compat.neural_tangents.triple.StaxLayer`)
built on the :mod:`jaxlearn.nn` layer that computes it.

Params are in neural-tangents' format (``Dense``/``Conv``: ``(W, b)`` with ``b`` broadcastable to the
output, ``(1, ..., out)``, or ``None`` without a bias), so params drawn by neural-tangents 0.6.5 feed
``apply_fn`` unchanged. Weight layers default to the NTK parameterization with ``b_std=None`` (no
bias), as in neural-tangents. ``serial``/``parallel`` accept compat layers, jaxlearn layers
(``nn.Dense(...)``: params in jaxlearn's format) and user-written triples (no kernel).

Options jaxlearn cannot compute raise a one-line ``NotImplementedError`` naming them when the layer
is built; layers of neural-tangents that jaxlearn has no kernel for raise when called
(``docs/neural_tangents.md`` has the table).
"""

from __future__ import annotations

import enum
import math

import jax
import jax.numpy as jnp

from jaxlearn import nn
from jaxlearn.compat.neural_tangents.triple import StaxLayer, as_layer
from jaxlearn.nn import Layer
from jaxlearn.nn.dual import DualPair, gelu_dual, sign_dual

__all__ = [
    "serial", "parallel", "repeat", "FanOut", "FanInSum", "FanInConcat", "Identity", "Dense", "Conv", "AvgPool",
    "GlobalAvgPool", "Flatten", "LayerNorm", "Dropout", "Relu", "LeakyRelu", "ABRelu", "Abs", "Erf", "Gelu", "Sin",
    "Cos", "Sign", "Sigmoid_like", "Elementwise", "Padding", "UNSUPPORTED",
]


class Padding(enum.Enum):
    """neural-tangents' padding names (``Conv``/``AvgPool`` also take the strings);
    ``CIRCULAR`` is not supported."""
    CIRCULAR = "CIRCULAR"
    SAME = "SAME"
    VALID = "VALID"


def _padding(name, padding):
    padding = padding.value if isinstance(padding, Padding) else padding
    if padding not in ("SAME", "VALID"):
        raise NotImplementedError(f"{name}: padding={padding!r} is not supported (only 'SAME' and 'VALID')")
    return padding

# -- format adapters ---------------------------------------------------------------------------


def _renamed(inner: Layer, name: str, to_nt=None, from_nt=None) -> Layer:
    """``inner`` under ``name``, its params converted to neural-tangents' format (``to_nt(params,
    in_spec)``) at init and back (``from_nt``) at apply; the kernel map is ``inner``'s."""
    if to_nt is None:
        return Layer(inner.init_fn, inner.apply_fn, inner.kernel_fn, name)

    def init_fn(key, spec):
        out_spec, params, state = inner.init_fn(key, spec)
        return out_spec, to_nt(params, spec), state

    def apply_fn(params, state, x, key, train):
        return inner.apply_fn(from_nt(params), state, x, key, train)

    return Layer(init_fn, apply_fn, inner.kernel_fn, name)


def _weight_params(params, spec):
    """jaxlearn ``{"W", "b"}`` → neural-tangents ``(W, b)``, ``b`` shaped ``(1, ..., out)``."""
    b = params.get("b")
    return params["W"], None if b is None else b.reshape((1,) * (spec.ndim - 1) + b.shape)


def _weight_dict(params):
    W, b = params
    return {"W": W} if b is None else {"W": W, "b": jnp.reshape(b, (-1,))}


def _check_axes(name, batch_axis, channel_axis):
    if batch_axis != 0 or channel_axis != -1:
        raise NotImplementedError(f"{name}: batch_axis={batch_axis}, channel_axis={channel_axis} (only batch first "
                                  f"and channels last, 0 and -1, are supported)")


def _check_parameterization(name, parameterization, s):
    parameterization = parameterization.lower()
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"{name}: parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if tuple(s) != (1, 1):
        raise NotImplementedError(f"{name}: s={tuple(s)} (width scalings of the standard parameterization) is not "
                                  f"supported; only s=(1, 1)")
    return parameterization


# -- combinators -------------------------------------------------------------------------------


def serial(*layers) -> StaxLayer:
    """Composition of ``layers`` (first applied first); params: a tuple, one entry per layer."""
    return StaxLayer(nn.serial(*(as_layer(layer, "stax.serial") for layer in layers)))


def parallel(*layers) -> StaxLayer:
    """Applies ``layers[i]`` to input ``i`` of a list/tuple of inputs; returns the list of outputs."""
    return StaxLayer(nn.parallel(*(as_layer(layer, "stax.parallel") for layer in layers)))


def repeat(layer, n: int) -> StaxLayer:
    """``layer`` composed ``n`` times in a ``lax.scan``: params stacked along a leading axis of size
    ``n`` (neural-tangents' ``repeat``); ``layer`` must keep the input shape."""
    inner = as_layer(layer, "stax.repeat")
    name = f"stax.repeat({inner.name}, {n})"

    def init_fn(key, spec):
        out_spec, _, _ = inner.init_fn(key, spec)
        if out_spec.shape != spec.shape:
            raise ValueError(f"{name}: the layer maps shape {spec.shape} to {out_spec.shape}; repeat needs equal "
                             f"shapes (use serial(*[layer] * n))")
        params = jax.vmap(lambda k: inner.init_fn(k, spec)[1])(jax.random.split(key, n))
        return out_spec, params, ()

    def apply_fn(params, state, x, key, train):
        def step(carry, p):
            return inner.apply_fn(p, (), carry, key, train)[0], None
        return jax.lax.scan(step, x, params, n)[0], state

    def kernel_fn(k):
        for _ in range(n):
            k = inner.kernel(k)
        return k

    return StaxLayer(Layer(init_fn, apply_fn, kernel_fn, name))


def FanOut(num: int) -> StaxLayer:  # noqa: N802 (neural-tangents' names)
    """``num`` copies of the input."""
    return StaxLayer(_renamed(nn.fanout(num), f"stax.FanOut({num})"))


def FanInSum() -> StaxLayer:  # noqa: N802
    """Sum of a list of inputs."""
    return StaxLayer(_renamed(nn.fanin_sum(), "stax.FanInSum"))


def FanInConcat(axis: int = -1) -> StaxLayer:  # noqa: N802
    """Concatenation of a list of inputs along ``axis``; the kernel map exists along channels only."""
    return StaxLayer(_renamed(nn.fanin_concat(axis), f"stax.FanInConcat({axis})"))


def Identity() -> StaxLayer:  # noqa: N802
    return StaxLayer(_renamed(nn.Identity(), "stax.Identity"))


# -- weight layers -----------------------------------------------------------------------------


def Dense(out_dim: int, W_std=1., b_std=None, batch_axis: int = 0, channel_axis: int = -1,  # noqa: N802
          parameterization: str = "ntk", s=(1, 1)) -> StaxLayer:
    """Fully connected layer (:func:`jaxlearn.nn.Dense`); params ``(W (in, out), b (1, out) | None)``."""
    name = f"stax.Dense({out_dim})"
    _check_axes(name, batch_axis, channel_axis)
    p = _check_parameterization(name, parameterization, s)
    inner = nn.Dense(out_dim, W_std=W_std, b_std=b_std, parameterization=p)
    return StaxLayer(_renamed(inner, name, _weight_params, _weight_dict))


def Conv(out_chan: int, filter_shape, strides=None, padding: str = "VALID", W_std=1.0, b_std=None,  # noqa: N802
         dimension_numbers=None, parameterization: str = "ntk", s=(1, 1)) -> StaxLayer:
    """1-D (NWC) or 2-D (NHWC) convolution (:func:`jaxlearn.nn.Conv`), padding ``"SAME"`` or
    ``"VALID"``; params ``(W (*filter, in, out), b (1, ..., out) | None)``."""
    name = f"stax.Conv({out_chan}, {tuple(filter_shape)})"
    p = _check_parameterization(name, parameterization, s)
    n = len(filter_shape)
    padding = _padding(name, padding)
    default_numbers = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}.get(n)
    if default_numbers is None:
        raise NotImplementedError(f"{name}: {n}-D convolutions are not supported (only 1-D and 2-D)")
    if dimension_numbers is not None and tuple(dimension_numbers) != default_numbers:
        raise NotImplementedError(f"{name}: dimension_numbers={dimension_numbers} (only {default_numbers})")
    inner = nn.Conv(out_chan, tuple(filter_shape), strides=None if strides is None else tuple(strides),
                    padding=padding, W_std=W_std, b_std=b_std, parameterization=p)
    return StaxLayer(_renamed(inner, name, _weight_params, _weight_dict))


# -- parameter-free layers ---------------------------------------------------------------------


def AvgPool(window_shape, strides=None, padding: str = "VALID", normalize_edges: bool = False,  # noqa: N802
            batch_axis: int = 0, channel_axis: int = -1) -> StaxLayer:
    """Average pooling (:func:`jaxlearn.nn.AvgPool`); ``strides=None`` means 1 (neural-tangents'
    default, unlike jaxlearn's); ``normalize_edges=True`` divides by the real inputs of each window."""
    name = f"stax.AvgPool({tuple(window_shape)})"
    _check_axes(name, batch_axis, channel_axis)
    padding = _padding(name, padding)
    strides = (1,) * len(window_shape) if strides is None else tuple(strides)
    inner = nn.AvgPool(tuple(window_shape), strides, padding, count_include_pad=not normalize_edges)
    return StaxLayer(_renamed(inner, name))


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> StaxLayer:  # noqa: N802
    _check_axes("stax.GlobalAvgPool", batch_axis, channel_axis)
    return StaxLayer(_renamed(nn.GlobalAvgPool(), "stax.GlobalAvgPool"))


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0) -> StaxLayer:  # noqa: N802
    if batch_axis != 0 or batch_axis_out not in (0, -2):
        raise NotImplementedError(f"stax.Flatten: batch_axis={batch_axis}, batch_axis_out={batch_axis_out} (only 0)")
    return StaxLayer(_renamed(nn.Flatten(), "stax.Flatten"))


def LayerNorm(axis=-1, eps: float = 1e-12, batch_axis: int = 0, channel_axis: int = -1) -> StaxLayer:  # noqa: N802
    """Normalisation over ``axis`` (:func:`jaxlearn.nn.LayerNorm`, no affine parameters). The kernel
    keeps ``eps`` (neural-tangents drops it): a relative difference of ``eps/q``."""
    _check_axes("stax.LayerNorm", batch_axis, channel_axis)
    return StaxLayer(_renamed(nn.LayerNorm(axis=axis, eps=eps), "stax.LayerNorm"))


def Dropout(rate: float, mode: str = "train") -> StaxLayer:  # noqa: N802
    """Dropout with *keep* probability ``rate`` (neural-tangents' and ``jax.example_libraries``'
    convention; :func:`jaxlearn.nn.Dropout` takes the drop probability ``1 - rate``). ``mode="train"``
    needs ``apply_fn(..., rng=key)`` and has no kernel here (neural-tangents' train-mode kernel
    scales the diagonal by ``1/rate``); ``mode="test"`` is the identity."""
    if mode not in ("train", "test"):
        raise ValueError(f"stax.Dropout: mode must be 'train' or 'test', got {mode!r}")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"stax.Dropout: rate (the keep probability) must be in (0, 1], got {rate!r}")
    name = f"stax.Dropout({rate}, {mode!r})"
    if mode == "test":
        return StaxLayer(_renamed(nn.Identity(), name))
    inner = nn.Dropout(1.0 - rate)

    def kernel_fn(k):
        raise NotImplementedError(f"{name}: the train-mode Dropout kernel is not supported (jaxlearn has no kernel "
                                  f"map for dropout); use mode='test' or monte_carlo_kernel_fn")

    return StaxLayer(Layer(inner.init_fn, inner.apply_fn, kernel_fn, name))


# -- activations -------------------------------------------------------------------------------


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> StaxLayer:  # noqa: N802
    """``a·min(x, 0) + b·max(x, 0)``; ``do_stabilize`` (a rescaling for very deep networks in
    neural-tangents) has no effect: jaxlearn's dual needs none."""
    return StaxLayer(_renamed(nn.ABRelu(a, b), f"stax.ABRelu({a}, {b})"))


def Relu(do_stabilize: bool = False) -> StaxLayer:  # noqa: N802
    return StaxLayer(_renamed(nn.Relu(), "stax.Relu"))


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> StaxLayer:  # noqa: N802
    return StaxLayer(_renamed(nn.LeakyRelu(alpha), f"stax.LeakyRelu({alpha})"))


def Abs(do_stabilize: bool = False) -> StaxLayer:  # noqa: N802
    return StaxLayer(_renamed(nn.ABRelu(-1.0, 1.0), "stax.Abs"))


def Erf(a: float = 1., b: float = 1., c: float = 0.) -> StaxLayer:  # noqa: N802
    """``a·erf(b·x) + c``."""
    return StaxLayer(_renamed(nn.Erf(a, b, c), f"stax.Erf({a}, {b}, {c})"))


def Sigmoid_like() -> StaxLayer:  # noqa: N802
    """``0.5·erf(x / 2.4020563531719796) + 0.5`` (neural-tangents' sigmoid stand-in): an ``Erf``."""
    return StaxLayer(_renamed(nn.Erf(0.5, 1 / 2.4020563531719796, 0.5), "stax.Sigmoid_like"))


def Gelu(approximate: bool = False) -> StaxLayer:  # noqa: N802
    """GELU; ``approximate=True`` uses the tanh approximation in ``apply_fn`` only (the kernel is
    the exact GELU's in both cases, as in neural-tangents)."""
    if not approximate:
        return StaxLayer(_renamed(nn.Gelu(), "stax.Gelu"))
    fn = lambda x: jax.nn.gelu(x, approximate=True)  # noqa: E731
    return StaxLayer(_renamed(nn.Elementwise(fn, "stax.Gelu(approximate=True)", gelu_dual), "stax.Gelu"))


def Sin(a: float = 1., b: float = 1., c: float = 0.) -> StaxLayer:  # noqa: N802
    """``a·sin(b·x + c)``."""
    return StaxLayer(_renamed(nn.Sin(a, b, c), f"stax.Sin({a}, {b}, {c})"))


def Cos(a: float = 1., b: float = 1., c: float = 0.) -> StaxLayer:  # noqa: N802
    """``a·cos(b·x + c) = a·sin(b·x + c + π/2)``."""
    return StaxLayer(_renamed(nn.Sin(a, b, c + math.pi / 2), f"stax.Cos({a}, {b}, {c})"))


def Sign() -> StaxLayer:  # noqa: N802
    """``sign(x)``; kernel :func:`jaxlearn.nn.dual.sign_dual` (``2/π·arcsin ρ``; the NTK through it
    is zero, as autodiff's derivative of ``sign``)."""
    return StaxLayer(_renamed(nn.Elementwise(jnp.sign, "stax.Sign", sign_dual), "stax.Sign"))


def Elementwise(fn=None, nngp_fn=None, d_nngp_fn=None) -> StaxLayer:  # noqa: N802
    """An activation given by ``fn`` and its NNGP map ``nngp_fn(cov12, var1, var2)`` (scalar, applied
    entrywise); the NTK factor is ``d_nngp_fn`` or, without it, ``∂nngp_fn/∂cov12`` by autodiff
    (Price's theorem). Evaluated through :func:`jaxlearn.nn.Elementwise`'s dual interface."""
    def apply(x):
        if fn is None:
            raise NotImplementedError("stax.Elementwise: fn=None has no apply_fn")
        return fn(x)

    if nngp_fn is None:
        def dual(q11, q12, q22):
            raise NotImplementedError("stax.Elementwise: nngp_fn=None has no kernel_fn")
    else:
        k_fn = jnp.vectorize(nngp_fn)
        kdot_fn = jnp.vectorize(d_nngp_fn if d_nngp_fn is not None else jax.grad(nngp_fn, argnums=0))

        def dual(q11, q12, q22):
            return DualPair(k_fn(q12, q11, q22), kdot_fn(q12, q11, q22))

    return StaxLayer(_renamed(nn.Elementwise(apply, "stax.Elementwise", dual), "stax.Elementwise"))


# -- neural-tangents layers jaxlearn cannot compute --------------------------------------------

#: neural-tangents 0.6.5 ``stax`` names without a jaxlearn counterpart, and why.
UNSUPPORTED = {
    "ConvLocal": "locally connected (unshared) convolutions have no kernel map in jaxlearn.nn",
    "ConvTranspose": "transposed convolutions have no kernel map in jaxlearn.nn",
    "SumPool": "jaxlearn.nn has average pooling only (AvgPool)",
    "GlobalSumPool": "jaxlearn.nn has average pooling only (GlobalAvgPool)",
    "GlobalSelfAttention": "attention has no kernel map in jaxlearn.nn",
    "Aggregate": "graph aggregation has no kernel map in jaxlearn.nn",
    "DotGeneral": "products with constant tensors have no kernel map in jaxlearn.nn",
    "ImageResize": "image resizing has no kernel map in jaxlearn.nn",
    "Index": "indexing layers have no kernel map in jaxlearn.nn",
    "Slice": "slicing layers have no kernel map in jaxlearn.nn",
    "FanInProd": "products of branches have no kernel map in jaxlearn.nn",
    "ElementwiseNumerical": "jaxlearn has no numerical (quadrature) dual; use Elementwise with a closed form",
    "Exp": "jaxlearn.nn.dual has no closed form for exp",
    "ExpNormalized": "jaxlearn.nn.dual has no closed form for normalised exp",
    "Gaussian": "jaxlearn.nn.dual has no closed form for the Gaussian activation",
    "Gabor": "jaxlearn.nn.dual has no closed form for the Gabor activation",
    "Rbf": "jaxlearn.nn.dual has no closed form for the RBF activation",
    "Hermite": "jaxlearn.nn.dual has no closed form for Hermite polynomials",
    "Monomial": "jaxlearn.nn.dual has no closed form for monomials",
    "RectifiedMonomial": "jaxlearn.nn.dual has no closed form for rectified monomials",
    "Polynomial": "jaxlearn.nn.dual has no closed form for polynomials",
    # neural-tangents' tools for writing new layers: jaxlearn layers are written with jaxlearn.nn
    "layer": "write new layers as jaxlearn.nn layers (nn.Layer, nn.Elementwise) and pass them to stax.serial",
    "requires": "kernel requirements are neural-tangents internals; write new layers with jaxlearn.nn",
    "supports_masking": "masking is not supported",
    "unmask_fn": "masking is not supported",
    "MaskedArray": "masking is not supported",
    "Diagonal": "kernel requirements are neural-tangents internals",
    "Bool": "kernel requirements are neural-tangents internals",
    "PositionalEmbedding": "attention layers are not supported",
    "AttentionMechanism": "attention layers are not supported",
    "AggregateImplementation": "graph aggregation is not supported",
}


def _unsupported(name: str, why: str):
    def layer(*args, **kwargs):
        raise NotImplementedError(f"stax.{name} is not supported by jaxlearn.compat: {why}")
    layer.__name__ = layer.__qualname__ = name
    layer.__doc__ = f"neural-tangents' ``stax.{name}``: raises ``NotImplementedError`` ({why})."
    return layer


globals().update({name: _unsupported(name, why) for name, why in UNSUPPORTED.items()})
__all__ += list(UNSUPPORTED)
