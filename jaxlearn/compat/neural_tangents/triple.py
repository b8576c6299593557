"""neural-tangents' layer triple ``(init_fn, apply_fn, kernel_fn)`` over a :class:`jaxlearn.nn.Layer`.

Every compat layer is a jaxlearn layer whose params are in neural-tangents' format (Dense: a tuple
``(W, b)``, ``b`` of shape ``(1, out)`` or ``None``; serial/parallel: a tuple per layer;
parameter-free layers: ``()``), so ``stax.serial`` is :func:`jaxlearn.nn.serial` and one analytic
kernel evaluation (:func:`jaxlearn.kernels.analytic`) serves the whole network. :class:`StaxLayer`
is that layer seen as neural-tangents' triple:

* ``init_fn(key, input_shape) -> (output_shape, params)``; a ``-1`` in ``input_shape`` (an unknown
  batch size) comes back as ``-1`` in the output shape.
* ``apply_fn(params, x, *, rng=None)``: ``rng`` is the key of stochastic layers (Dropout).
* ``kernel_fn(x1_or_kernel, x2=None, get=None, ...)`` (:class:`AnalyticKernelFn`).

:func:`as_layer` goes the other way (any triple, or a jaxlearn layer, to a jaxlearn layer), which is
how ``stax.serial`` accepts jaxlearn layers and user-written triples alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxlearn.compat.neural_tangents.kernel import Kernel, canonical_get, pack
from jaxlearn.kernels import analytic
from jaxlearn.nn import Layer, input_kernel

__all__ = ["StaxLayer", "AnalyticKernelFn", "as_layer", "to_spec", "to_shape", "store"]


# -- shapes ------------------------------------------------------------------------------------


def _is_shape(s) -> bool:
    return isinstance(s, (tuple, list)) and all(isinstance(d, int) for d in s)


def to_spec(input_shape, dtype=None):
    """A neural-tangents input shape (or a list of them) as jaxlearn specs; ``-1`` becomes 1."""
    if _is_shape(input_shape):
        shape = tuple(1 if d == -1 else d for d in input_shape)
        return jax.ShapeDtypeStruct(shape, dtype or jnp.result_type(float))
    if isinstance(input_shape, (tuple, list)):
        return tuple(to_spec(s, dtype) for s in input_shape)
    raise TypeError(f"init_fn: input_shape must be a tuple of ints (or a list of them), got {input_shape!r}")


def to_shape(spec, unknown_batch: bool):
    """A jaxlearn output spec (or tuple of them) as neural-tangents' output shape(s)."""
    if isinstance(spec, tuple):
        return [to_shape(s, unknown_batch) for s in spec]
    shape = tuple(spec.shape)
    return ((-1,) + shape[1:]) if unknown_batch and shape else shape


def _unknown_batch(input_shape) -> bool:
    if _is_shape(input_shape):
        return len(input_shape) > 0 and input_shape[0] == -1
    return any(_unknown_batch(s) for s in input_shape)


def store(tree, store_on_device: bool):
    """``tree`` as is, or moved to the host CPU (neural-tangents' ``store_on_device=False``)."""
    if store_on_device:
        return tree
    return jax.device_put(tree, jax.devices("cpu")[0])


# -- the three functions -----------------------------------------------------------------------


def _init_fn(layer: Layer):
    programs = {}  # one compiled init per input spec (eagerly, each random draw would compile alone)

    def init_fn(rng, input_shape):
        spec = to_spec(input_shape)
        if spec not in programs:
            programs[spec] = (layer.output_spec(spec), jax.jit(lambda key: layer.init_fn(key, spec)[1:]))
        out_spec, init = programs[spec]
        params, state = init(rng)
        if jax.tree.leaves(state):
            raise ValueError(f"init_fn: {layer.name} carries state (e.g. BatchNorm statistics), which "
                             f"neural-tangents' (params, x) functions cannot thread; use it through jaxlearn.nn")
        return to_shape(out_spec, _unknown_batch(input_shape)), params

    init_fn.layer = layer
    return init_fn


def _apply_fn(layer: Layer):
    # train=True: neural-tangents fixes stochastic behaviour at construction (Dropout's mode).
    apply = jax.jit(lambda params, x, rng: layer.apply_fn(params, (), x, rng, True)[0])

    def apply_fn(params, inputs, *, rng=None, **kwargs):
        if kwargs:
            raise NotImplementedError(f"apply_fn: keyword arguments {sorted(kwargs)} (neural-tangents' masking "
                                      f"and pattern inputs) are not supported by jaxlearn.compat")
        return apply(params, inputs, rng)

    apply_fn.layer = layer
    return apply_fn


class AnalyticKernelFn:
    """neural-tangents' analytic ``kernel_fn(x1_or_kernel, x2=None, get=None, *, pattern=None,
    mask_constant=None, diagonal_batch=None, diagonal_spatial=None)``, evaluated by
    :func:`jaxlearn.kernels.analytic` (in blocks of ``batch_size`` over ``devices`` when made by
    ``nt.batch``).

    ``x1`` an array ``(N1, ...)`` (or a ``Kernel`` from a previous ``kernel_fn``, or a tuple of
    arrays for a multi-input network); ``x2=None`` means ``x1``. ``get``: ``None`` → a
    :class:`~jaxlearn.compat.neural_tangents.kernel.Kernel`; a string (``"nngp"``, ``"ntk"``,
    ``"cov1"``, any ``Kernel`` field) → that value; a tuple → a namedtuple ``AnalyticKernel``.
    Masking (``pattern``, ``mask_constant``) and full batch covariances (``diagonal_batch=False``)
    raise ``NotImplementedError``; ``diagonal_spatial=True`` returns the spatial diagonal.
    """

    def __init__(self, layer: Layer, batch_size=None, devices=None, store_on_device: bool = True):
        self.layer, self.batch_size, self.devices, self.store_on_device = layer, batch_size, devices, store_on_device
        size = "auto" if batch_size is None else batch_size
        # kernels.analytic compiles the kernel map as one program per input shape itself
        self._analytic = functools.partial(analytic, layer, batch_size=size, devices=devices)
        self._compose = jax.jit(layer.kernel)
        self._shapes = {}

    def batched(self, batch_size, devices, store_on_device) -> "AnalyticKernelFn":
        return AnalyticKernelFn(self.layer, batch_size, devices, store_on_device)

    def __call__(self, x1_or_kernel, x2=None, get=None, *, pattern=None, mask_constant=None, diagonal_batch=None,
                 diagonal_spatial=None, **kwargs):
        names, single = canonical_get(get, "kernel_fn")
        _check_options(pattern, mask_constant, diagonal_batch, kwargs)
        kernel = self._kernel(x1_or_kernel, x2, bool(diagonal_spatial))
        kernel = store(kernel, self.store_on_device)
        if names is None:
            return kernel
        return pack({n: _field(kernel, n) for n in names}, names, single, "AnalyticKernel")

    def _kernel(self, x1, x2, diagonal_spatial):
        if _is_kernels(x1):
            if x2 is not None:
                raise ValueError("kernel_fn: x2 must be None when the first argument is a Kernel")
            native = self._compose(_natives(x1))
            shape1, shape2, same = _out_shapes(self.layer, x1)
        elif isinstance(x1, (tuple, list)):  # inputs of a multi-input network
            x2s = (None,) * len(x1) if x2 is None else x2
            native = self.layer.kernel(tuple(input_kernel(a, b) for a, b in zip(x1, x2s)))
            shape1, shape2, same = _array_shapes(self.layer, x1, x2)
        else:
            native = self._analytic(x1, x2)
            shape1, shape2, same = self._output_shapes(x1, x2)
        return _wrap(native, shape1, shape2, same, diagonal_spatial)

    def _output_shapes(self, x1, x2):
        key = (jnp.shape(x1), None if x2 is None else jnp.shape(x2))
        if key not in self._shapes:
            self._shapes[key] = _array_shapes(self.layer, x1, x2)
        return self._shapes[key]


def _check_options(pattern, mask_constant, diagonal_batch, kwargs):
    if pattern is not None and any(p is not None for p in pattern):
        raise NotImplementedError("kernel_fn: pattern= (neural-tangents' graph aggregation) is not supported")
    if mask_constant is not None:
        raise NotImplementedError("kernel_fn: mask_constant= (neural-tangents' input masking) is not supported")
    if diagonal_batch is False:
        raise NotImplementedError("kernel_fn: diagonal_batch=False (full batch covariances cov1/cov2) is not "
                                  "supported; jaxlearn keeps each example's own covariance")
    if kwargs:
        raise TypeError(f"kernel_fn: unexpected keyword arguments {sorted(kwargs)}")


def _field(kernel, name):
    def one(k):
        if not hasattr(k, name):
            raise ValueError(f"kernel_fn: get={name!r} is not a field of neural-tangents' Kernel")
        return getattr(k, name)
    return [one(k) for k in kernel] if isinstance(kernel, (tuple, list)) else one(kernel)


def _is_kernels(x) -> bool:
    if isinstance(x, (tuple, list)):
        return len(x) > 0 and all(_is_kernels(e) for e in x)
    return isinstance(x, Kernel)


def _natives(x):
    return tuple(_natives(e) for e in x) if isinstance(x, (tuple, list)) else x.native


def _wrap(native, shape1, shape2, same, diagonal_spatial):
    if isinstance(native, tuple):
        return [_wrap(n, s1, s2, same, diagonal_spatial) for n, s1, s2 in zip(native, shape1, shape2)]
    return Kernel(native, tuple(shape1), tuple(shape2), same, diagonal_spatial)


def _output_shape(layer: Layer, in_shape):
    return to_shape(layer.output_spec(to_spec(in_shape)), False)


def _array_shapes(layer, x1, x2):
    shape = (lambda x: [tuple(a.shape) for a in x]) if isinstance(x1, (tuple, list)) else (lambda x: tuple(x.shape))
    s1 = _output_shape(layer, shape(x1))
    s2 = s1 if x2 is None else _output_shape(layer, shape(x2))
    return s1, s2, x2 is None


def _out_shapes(layer, kernels):
    def shapes(which):
        if isinstance(kernels, (tuple, list)):
            return [getattr(k, which) for k in kernels]
        return getattr(kernels, which)
    same = all(k.x1_is_x2 for k in (kernels if isinstance(kernels, (tuple, list)) else [kernels]))
    return _output_shape(layer, shapes("shape1")), _output_shape(layer, shapes("shape2")), same


class StaxLayer(tuple):
    """``(init_fn, apply_fn, kernel_fn)`` of the jaxlearn layer ``layer`` (params in neural-tangents'
    format); unpacks like neural-tangents' triples, and ``.layer`` is the jaxlearn layer."""

    def __new__(cls, layer: Layer):
        self = super().__new__(cls, (_init_fn(layer), _apply_fn(layer), AnalyticKernelFn(layer)))
        self.layer = layer
        return self


def _foreign_layer(triple, name) -> Layer:
    """A jaxlearn layer from a user-written triple: init and apply call it; no kernel map."""
    init, apply, _ = triple

    def init_fn(key, spec):
        out_shape, params = init(key, to_shape(spec, False))
        return to_spec(out_shape), params, ()

    def apply_fn(params, state, x, key, train):
        return (apply(params, x) if key is None else apply(params, x, rng=key)), state

    def kernel_fn(k):
        raise NotImplementedError(f"{name}: the kernel_fn of a user-written (init_fn, apply_fn, kernel_fn) triple "
                                  f"cannot be composed with jaxlearn's kernel maps; build it from stax layers")

    return Layer(init_fn, apply_fn, kernel_fn, name)


def as_layer(layer_or_triple: Layer | Sequence[Callable | None], where: str = "as_layer") -> Layer:
    """A :class:`jaxlearn.nn.Layer` from a compat triple (its layer: params in neural-tangents'
    format, with its kernel map), a jaxlearn layer (itself) or any other ``(init_fn, apply_fn,
    kernel_fn)`` triple (init and apply only; its kernel raises ``NotImplementedError``)."""
    if isinstance(layer_or_triple, Layer):
        return layer_or_triple
    if isinstance(layer_or_triple, StaxLayer):
        return layer_or_triple.layer
    if isinstance(layer_or_triple, (tuple, list)) and len(layer_or_triple) == 3:
        init, apply = layer_or_triple[:2]
        owner = getattr(init, "layer", None)
        if owner is not None and getattr(apply, "layer", None) is owner:  # the functions of a compat layer
            return owner
        return _foreign_layer(layer_or_triple, getattr(layer_or_triple[0], "__name__", "user layer"))
    raise TypeError(f"{where}: expected a stax layer (init_fn, apply_fn, kernel_fn) or a jaxlearn.nn Layer, got "
                    f"{type(layer_or_triple).__name__} (call layer constructors: stax.Relu(), not stax.Relu)")
