"""The layer algebra: a layer is a triple of pure functions.

A :class:`Layer` bundles

* ``init_fn(key, input_spec) -> (output_spec, params, state)`` — draws trainable ``params`` and
  non-trainable ``state`` (BatchNorm statistics, fixed feedback matrices) for inputs described by
  ``input_spec`` (a ``jax.ShapeDtypeStruct`` with a leading batch axis, or a tuple of them for
  multi-input layers). It runs in Python on shapes, so shape errors surface here, at init time,
  never inside a trace.
* ``apply_fn(params, state, x, key, train) -> (y, new_state)`` — the forward pass. ``key`` is a
  PRNG key or ``None`` (only stochastic layers such as Dropout need one); ``train`` is a Python
  bool (static).
* ``kernel_fn(k) -> k`` — the layer's map on infinite-width NNGP/NTK kernels, or ``None`` when the
  layer has no closed form. The kernel type (:class:`~jaxlearn.nn.kernel.Kernel`) and the maps
  live in ``nn`` beside each layer (shared arithmetic in :mod:`jaxlearn.nn.kernel` and
  :mod:`jaxlearn.nn.spatial_kernel`); :mod:`jaxlearn.kernels` composes and evaluates them, so
  ``nn`` never imports ``kernels``.

Users call the methods :meth:`Layer.init`, :meth:`Layer.apply` and
:meth:`Layer.apply_with_state`; combinators (:func:`serial`, :func:`parallel`, :func:`fanout`,
:func:`fanin_sum`, :func:`fanin_concat`, :func:`residual`) build new layers from old ones.
Hyperparameters (``W_std``, ``b_std``) are closed over by the layer functions, so a layer built
*inside* a vmapped function from traced values gives a population over those hyperparameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxlearn._checks import check_int
from jaxlearn._types import ArrayLike, PyTree

Spec = Any  # a jax.ShapeDtypeStruct, or a tuple of them for multi-input layers

__all__ = [
    "Layer",
    "as_spec",
    "serial",
    "parallel",
    "fanout",
    "fanin_sum",
    "fanin_concat",
    "residual",
    "Identity",
]


class LayerError(ValueError):
    """A layer was built or initialised with arguments it cannot accept."""


def as_spec(x: ArrayLike | jax.ShapeDtypeStruct | tuple) -> Spec:
    """Turns an array, a ShapeDtypeStruct, or a tuple of either into an input spec."""
    if isinstance(x, tuple):
        return tuple(as_spec(e) for e in x)
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    raise LayerError(
        f"input_spec: expected a jax.ShapeDtypeStruct (shape with a leading batch axis, and dtype) "
        f"or an array, got {type(x).__name__}"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Layer:
    """A pure layer: ``init_fn``, ``apply_fn`` and an optional ``kernel_fn`` (module docstring).

    ``lr_fn(input_spec, optimizer) -> pytree like params`` gives per-parameter learning-rate
    multipliers (used by the muP parameterization; ``None`` means all ones). ``children``: the
    layers a combinator (``serial``, ``parallel``) was built from, in order (``()`` for others),
    so tools that walk a model (permutation specs) need not look inside closures.
    """

    init_fn: Callable
    apply_fn: Callable
    kernel_fn: Callable | None = None
    name: str = "layer"
    lr_fn: Callable | None = None
    children: tuple = ()

    # -- public methods ---------------------------------------------------------------------
    def init(self, key, input_spec) -> tuple[PyTree, PyTree]:
        """Returns ``(params, state)`` for inputs like ``input_spec``.

        ``input_spec``: ``jax.ShapeDtypeStruct`` (shape with a leading batch axis, and dtype) or
        an example array; a tuple of them for multi-input layers. ``state`` is ``()`` for layers
        without non-trainable variables.
        """
        _, params, state = self.init_fn(key, as_spec(input_spec))
        return params, state

    def output_spec(self, input_spec) -> Spec:
        """The output spec for inputs like ``input_spec`` (no arrays are created)."""
        box = []

        def f(key):
            out_spec, params, state = self.init_fn(key, as_spec(input_spec))
            box.append(out_spec)
            return params, state

        jax.eval_shape(f, jax.random.key(0))
        return box[0]

    def apply(self, params, x, state=(), *, key=None, train: bool = False):
        """The output ``y`` only. For models with state (BatchNorm) pass ``state``; in training
        mode batch statistics are used and the updated state is discarded — use
        :meth:`apply_with_state` to keep it. ``train`` is a Python bool: under ``jax.jit`` mark it
        static (``jax.jit(layer.apply, static_argnames="train")``) or close over it."""
        y, _ = self.apply_with_state(params, x, state, key=key, train=train)
        return y

    def apply_with_state(self, params, x, state=(), *, key=None, train: bool = False):
        """Returns ``(y, new_state)``; ``new_state`` equals ``state`` unless ``train`` updates it."""
        return self.apply_fn(params, state, x, key, train)

    def kernel(self, k):
        """Maps an infinite-width kernel of the inputs to that of the outputs (see jaxlearn.kernels)."""
        if self.kernel_fn is None:
            raise LayerError(
                f"layer {self.name} has no closed-form infinite-width kernel; "
                "estimate it by Monte Carlo over random initialisations (jaxlearn.kernels.monte_carlo)"
            )
        return self.kernel_fn(k)

    def lr_multipliers(self, input_spec, optimizer: str = "sgd") -> PyTree:
        """Per-parameter learning-rate multipliers (a pytree shaped like ``params``).

        All ones except for layers built with ``parameterization="mup"``, which follow
        Yang & Hu (2021) / Yang et al. (2022), Table 3 (see :mod:`jaxlearn.nn.parameterization`).
        ``optimizer`` is ``"sgd"`` or ``"adam"`` (any Adam-like, entrywise-normalised update).
        """
        if optimizer not in ("sgd", "adam"):
            raise LayerError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")
        spec = as_spec(input_spec)
        if self.lr_fn is not None:
            return self.lr_fn(spec, optimizer)
        params, _ = jax.eval_shape(lambda k: self.init(k, spec), jax.random.key(0))
        return jax.tree.map(lambda _: 1.0, params)

    def __repr__(self) -> str:
        return f"Layer({self.name})"


def _child_key(key, i):
    return None if key is None else jax.random.fold_in(key, i)


def _per_layer(fn_name, what, tree, n):
    """``tree`` (params, state or inputs) split into one entry per layer.

    ``()``/``None`` stands for ``((),) * n`` (no layer has params/state), like the ``()`` of a single
    parameter-free layer; any other length mismatch is an error rather than a silent ``zip`` truncation.
    """
    if tree is None or (isinstance(tree, (tuple, list)) and len(tree) == 0 and what != "x"):
        return ((),) * n
    if not isinstance(tree, (tuple, list)) or len(tree) != n:
        got = (f"a {type(tree).__name__} of length {len(tree)}" if isinstance(tree, (tuple, list))
               else type(tree).__name__)
        raise LayerError(f"{fn_name}: {what} must be a tuple with one entry per layer ({n}), as init returns it; "
                         f"got {got}")
    return tree


def _check_layers(fn_name, layers):
    if not layers:
        raise LayerError(f"{fn_name}: expected at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise LayerError(
                f"{fn_name}: argument {i} must be a jaxlearn.nn Layer, got {type(layer).__name__} "
                "(call layer constructors, e.g. nn.Relu() not nn.Relu; wrap flax modules with nn.from_linen)"
            )


def serial(*layers: Layer) -> Layer:
    """Composition ``layers[-1] ∘ … ∘ layers[0]``. Params and state are tuples, one entry per layer.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import nn
        >>> model = nn.serial(nn.Dense(16), nn.Relu(), nn.Dense(3))
        >>> params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> len(params), state
        (3, ((), (), ()))
        >>> model.apply(params, jnp.ones((5, 4))).shape
        (5, 3)
    """
    _check_layers("serial", layers)

    def init_fn(key, spec):
        params, states = [], []
        for i, layer in enumerate(layers):
            try:
                spec, p, s = layer.init_fn(jax.random.fold_in(key, i), spec)
            except LayerError as e:
                raise LayerError(f"serial layer {i} ({layer.name}): {e}") from None
            params.append(p)
            states.append(s)
        return spec, tuple(params), tuple(states)

    def apply_fn(params, state, x, key, train):
        params = _per_layer("serial", "params", params, len(layers))
        state = _per_layer("serial", "state", state, len(layers))
        new_states = []
        for i, (layer, p, s) in enumerate(zip(layers, params, state)):
            x, s = layer.apply_fn(p, s, x, _child_key(key, i), train)
            new_states.append(s)
        return x, tuple(new_states)

    def kernel_fn(k):
        for layer in layers:
            k = layer.kernel(k)
        return k

    def lr_fn(spec, optimizer):
        out = []
        for layer in layers:
            out.append(layer.lr_multipliers(spec, optimizer))
            spec = layer.output_spec(spec)
        return tuple(out)

    # Always a kernel_fn: a child without a closed form raises from its own Layer.kernel, naming itself.
    name = "serial(" + ", ".join(layer.name for layer in layers) + ")"
    return Layer(init_fn, apply_fn, kernel_fn, name, lr_fn, tuple(layers))


def parallel(*layers: Layer) -> Layer:
    """Applies ``layers[i]`` to input ``i`` of a tuple; returns the tuple of outputs."""
    _check_layers("parallel", layers)

    def init_fn(key, spec):
        if not isinstance(spec, tuple) or len(spec) != len(layers):
            raise LayerError(
                f"parallel of {len(layers)} layers expects a tuple of {len(layers)} inputs "
                f"(use fanout({len(layers)}) before it), got {describe_spec(spec)}"
            )
        outs = [layer.init_fn(jax.random.fold_in(key, i), s) for i, (layer, s) in enumerate(zip(layers, spec))]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs), tuple(o[2] for o in outs)

    def apply_fn(params, state, x, key, train):
        params = _per_layer("parallel", "params", params, len(layers))
        state = _per_layer("parallel", "state", state, len(layers))
        x = _per_layer("parallel", "x", x, len(layers))
        outs = [
            layer.apply_fn(p, s, xi, _child_key(key, i), train)
            for i, (layer, p, s, xi) in enumerate(zip(layers, params, state, x))
        ]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

    def kernel_fn(ks):
        return tuple(layer.kernel(k) for layer, k in zip(layers, ks))

    def lr_fn(spec, optimizer):
        return tuple(layer.lr_multipliers(s, optimizer) for layer, s in zip(layers, spec))

    name = "parallel(" + ", ".join(layer.name for layer in layers) + ")"
    return Layer(init_fn, apply_fn, kernel_fn, name, lr_fn, tuple(layers))


def describe_spec(spec) -> str:
    """A spec (or nested tuple of specs) as text for error messages: ``float32[8, 3]``,
    ``(float32[8, 3], int32[8])``."""
    if isinstance(spec, tuple):
        return "(" + ", ".join(describe_spec(s) for s in spec) + ")"
    return f"{jnp.dtype(spec.dtype).name}{list(spec.shape)}"


def stateless_layer(name, out_spec_fn, fn, kernel_fn=None) -> Layer:
    """A layer without params or state: ``y = fn(x)``; ``out_spec_fn`` validates and maps specs,
    ``kernel_fn`` (optional) is its kernel map. The building block of activations, pooling and the
    combinators."""

    def init_fn(key, spec):
        return out_spec_fn(spec), (), ()

    def apply_fn(params, state, x, key, train):
        return fn(x), state

    return Layer(init_fn, apply_fn, kernel_fn, name)


def fanout(num: int) -> Layer:
    """Copies the input into a tuple of ``num`` identical inputs; its kernel map likewise copies the
    kernel (the copies are the same variables: see :func:`fanin_sum` for what that implies)."""
    check_int(num, "num", minimum=1, where="fanout", error=LayerError)
    return stateless_layer(f"fanout({num})", lambda s: (s,) * num, lambda x: (x,) * num, lambda k: (k,) * num)


def _check_fanin(name, spec, same_shape_axis=None):
    if not isinstance(spec, tuple) or len(spec) < 1:
        raise LayerError(f"{name} expects a tuple of inputs (from parallel/fanout), got {describe_spec(spec)}")
    first = spec[0]
    for i, s in enumerate(spec[1:], 1):
        a, b = list(first.shape), list(s.shape)
        if same_shape_axis is not None and len(a) == len(b):
            a[same_shape_axis] = b[same_shape_axis] = None
        if a != b:
            raise LayerError(
                f"{name}: input {i} has shape {list(s.shape)}, expected {list(first.shape)} like input 0"
                + ("" if same_shape_axis is None else f" (except on axis {same_shape_axis})")
            )


def fanin_sum() -> Layer:
    """Sums a tuple of same-shaped inputs.

    Infinite-width kernel (neural-tangents' ``stax.FanInSum``): ``K = Σ_i K_i``, and likewise ``Θ``,
    ``cov1``, ``cov2``; ``is_gaussian`` if every branch is; the branches' ``channels`` must agree.
    Covariances add when the branches are uncorrelated, which holds in the limit when every branch
    but at most one ends in a weight layer with its own zero-mean weights (optionally followed by
    pooling/LayerNorm): e.g. a residual block whose branch ends in a Dense/Conv, against any
    shortcut. Branches correlated otherwise (``parallel(Relu(), Relu())`` after a fanout) are outside
    this map; the same kernel reaching it twice (``residual(Identity())``, i.e. ``2x``) raises.
    """
    return _fanin_sum(None)


def _check_kernels(name, ks, same_channels):
    """The branch kernels of a fan-in: a tuple of Kernels with equal pair shapes (and channels)."""
    if not isinstance(ks, tuple) or not ks or not all(hasattr(k, "nngp") for k in ks):
        raise LayerError(f"{name} maps a tuple of Kernels (from parallel/fanout), got {type(ks).__name__}")
    first = ks[0]
    for i, k in enumerate(ks[1:], 1):
        if k.nngp.shape != first.nngp.shape or (k.cov2 is None) != (first.cov2 is None):
            raise LayerError(f"{name}: kernel {i} has nngp shape {list(k.nngp.shape)}, expected "
                             f"{list(first.nngp.shape)} like kernel 0 (and x2 given for both or neither)")
        if same_channels and k.channels != first.channels:
            raise LayerError(f"{name}: kernel {i} has {k.channels} channels, kernel 0 has {first.channels}; a sum "
                             f"needs equal widths")


def fanin_sum_kernel(ks):
    """The kernel map of :func:`fanin_sum`: branch kernels (a tuple of :class:`~jaxlearn.nn.Kernel`
    with equal shapes and widths) summed, as the covariances of independent branches add. Raises a
    LayerError when one kernel reaches the sum twice (its branches are not independent)."""
    _check_kernels("fanin_sum", ks, same_channels=True)
    for i in range(len(ks)):
        for j in range(i):
            if ks[i] is ks[j]:
                raise LayerError(f"fanin_sum: inputs {j} and {i} are the same variables (one kernel reached it "
                                 f"twice), so their covariances do not add; end a branch in a Dense/Conv")

    def total(arrays):
        return sum(arrays[1:], arrays[0])

    cov2 = None if ks[0].cov2 is None else total([k.cov2 for k in ks])
    return ks[0].replace(nngp=total([k.nngp for k in ks]), ntk=total([k.ntk for k in ks]),
                         cov1=total([k.cov1 for k in ks]), cov2=cov2, is_gaussian=all(k.is_gaussian for k in ks),
                         mean_of=next((k.mean_of for k in ks if k.mean_of is not None), None))




def _fanin_sum(_mismatch_hint) -> Layer:
    """:func:`fanin_sum` whose shape-mismatch error is ``_mismatch_hint(specs)`` when given."""

    def out_spec(spec):
        try:
            _check_fanin("fanin_sum", spec)
        except LayerError:
            if _mismatch_hint is None or not isinstance(spec, tuple):
                raise
            raise LayerError(_mismatch_hint(spec)) from None
        return jax.ShapeDtypeStruct(spec[0].shape, jnp.result_type(*[s.dtype for s in spec]))

    return stateless_layer("fanin_sum", out_spec, lambda xs: sum(xs[1:], xs[0]), fanin_sum_kernel)


def fanin_concat(axis: int = -1) -> Layer:
    """Concatenates a tuple of inputs along ``axis`` (default: the channel/feature axis).

    Infinite-width kernel, along the channel axis only: the kernel of the concatenated features in
    the ``x·x'/d`` normalisation the next weight layer sees is the channel-weighted mean
    ``K = Σ_i c_i K_i / Σ_i c_i`` (likewise ``Θ``, ``cov1``, ``cov2``) with ``c_i`` the branches'
    ``channels``, and ``channels = Σ_i c_i``; ``is_gaussian`` if every branch is. The weights make it
    the finite-width expectation (a Dense after it sums ``c_i`` units of kind ``i``);
    neural-tangents' ``stax.FanInConcat`` takes the unweighted mean (all widths being infinite),
    which agrees when the widths are equal. Like :func:`Flatten`'s, exact when a weight layer or
    LayerNorm follows; an elementwise activation right after it raises (``Kernel.mean_of``): it
    would need each branch's kernel, not their mean. Concatenation along a spatial axis raises.
    """

    def out_spec(spec):
        _check_fanin("fanin_concat", spec, same_shape_axis=axis)
        shape = list(spec[0].shape)
        shape[axis] = sum(s.shape[axis] for s in spec)
        return jax.ShapeDtypeStruct(tuple(shape), jnp.result_type(*[s.dtype for s in spec]))

    name = f"fanin_concat({axis})"

    def kernel_fn(ks):
        _check_kernels(name, ks, same_channels=False)
        ndim = ks[0].spatial_ndim + 2
        if not isinstance(axis, int) or not -ndim <= axis < ndim or axis % ndim != ndim - 1:
            raise LayerError(f"{name}: only concatenation along the channel axis (-1) has an infinite-width map; "
                             f"axis {axis!r} of {ndim}-D inputs is not it")
        widths = [k.channels for k in ks]
        total = sum(widths)

        def mean(arrays):
            return sum(c / total * a for c, a in zip(widths, arrays))

        cov2 = None if ks[0].cov2 is None else mean([k.cov2 for k in ks])
        return ks[0].replace(nngp=mean([k.nngp for k in ks]), ntk=mean([k.ntk for k in ks]),
                             cov1=mean([k.cov1 for k in ks]), cov2=cov2, channels=total,
                             is_gaussian=all(k.is_gaussian for k in ks), mean_of=name if len(ks) > 1 else None)

    return stateless_layer(name, out_spec, lambda xs: jnp.concatenate(xs, axis=axis), kernel_fn)


def residual(*layers: Layer, shortcut: Layer | None = None) -> Layer:
    """``y = serial(*layers)(x) + shortcut(x)``; the shortcut defaults to the identity.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn import nn
        >>> block = nn.residual(nn.serial(nn.Relu(), nn.Dense(4)))
        >>> params, _ = block.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 4), jnp.float32))
        >>> zero = jax.tree.map(jnp.zeros_like, params)           # f = 0, so the block is the identity
        >>> bool((block.apply(zero, jnp.arange(4.0)[None]) == jnp.arange(4.0)).all())
        True
    """
    main = serial(*layers)

    def mismatch(spec):
        branch, skip = spec
        return (
            f"residual: the branch {main.name} gives shape {list(branch.shape)} but the shortcut gives "
            f"{list(skip.shape)}; they must match (pass shortcut=, e.g. a Dense/Conv projection)"
        )

    shortcut = shortcut if shortcut is not None else Identity()
    return serial(fanout(2), parallel(main, shortcut), _fanin_sum(mismatch))


def Identity() -> Layer:  # noqa: N802 (layer constructors are capitalised, like classes)
    """``y = x``; its kernel map is the identity."""
    return stateless_layer("Identity", lambda s: s, lambda x: x, lambda k: k)
