"""Analytic infinite-width NNGP and NTK of a :mod:`jaxlearn.nn` model.

``analytic(model, x1, x2)`` starts from the input kernel ``K0 = x·x'/d``, ``Θ0 = 0``
(:func:`jaxlearn.nn.input_kernel`) and applies each layer's kernel map (Dense: ``K ← σ_w²K + σ_b²``
and its NTK rule per parameterization; activations: their dual Gaussian expectations,
:mod:`jaxlearn.nn.dual`; convolutions, pooling, LayerNorm and combinators: see their layers).
These are the recursions of Neal 1996, Lee et al. 2018 ("Deep neural networks as Gaussian
processes"), Jacot et al. 2018 (NTK), Novak et al. 2019 / Garriga-Alonso et al. 2019 (CNNs), in the
conventions of neural-tangents 0.6.5 (Novak et al. 2020), so published numbers carry over.

The result is exact for the infinite-width limit; it is a pure function of the inputs and of the
layers' hyperparameters (``W_std``/``b_std`` may be traced: ``vmap`` over a grid of them is one
program), so it composes with ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import functools

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlearn._checks import check_int
from jaxlearn._compile import eager, jit_when_eager
from jaxlearn._types import Array, ArrayLike
from jaxlearn.data.batching import merge_columns, merge_rows
from jaxlearn.kernels.devices import Devices, map_kernel_blocks, resolve_devices
from jaxlearn.nn.core import Layer
from jaxlearn.nn.kernel import Kernel, input_kernel

__all__ = ["analytic", "KINDS"]

KINDS = ("nngp", "ntk")


def _as_array(x):
    """``x`` as a JAX array (a JAX array, tracers included, as it is: ``jnp.asarray`` costs tens of
    µs per call even then, a share of a warm kernel call)."""
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def check_inputs(x1, x2, min_ndim=2, expected="a batch (N1, features) or (N1, *positions, channels)"):
    """``x1``, ``x2`` as arrays: ``x1`` of rank ``≥ min_ndim``, ``x2`` (or ``None``) with x1's
    per-example shape; one-line errors naming the argument (``expected`` describes ``x1``). The
    input check of :func:`analytic` and :func:`jaxlearn.kernels.empirical`."""
    x1 = _as_array(x1)
    if x1.ndim < min_ndim:
        raise ValueError(f"x1: expected {expected}, got shape {x1.shape}")
    if x2 is not None:
        x2 = _as_array(x2)
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"x2: expected shape (N2,) + {tuple(x1.shape[1:])} like x1, got {x2.shape}")
    return x1, x2


def _check_get(get):
    kinds = (get,) if isinstance(get, str) else tuple(get)
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"get: expected None, 'nngp', 'ntk' or a tuple of them, got {get!r}")
    return kinds


def _blocked(model, x1, x2, size1, size2, devices=None):
    """The kernel in blocks of at most ``size1`` examples of x1 × ``size2`` of x2
    (:func:`~jaxlearn.kernels.devices.map_kernel_blocks`, the row blocks spread over ``devices``):
    memory and cache hold one block pair's intermediates. With ``size2 ≥ N2`` the blocks are rows
    of x1 against all of x2, and reassembling them is a reshape, not a copy."""
    same = x2 is None
    x2 = x1 if same else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    def row(k):  # a row block's column blocks: leaves (blocks2, size1, size2, *S); covs (blocks2, size, *S)
        return k.replace(nngp=merge_columns(k.nngp, n2), ntk=merge_columns(k.ntk, n2), cov1=k.cov1[0],
                         cov2=None if same else merge_rows(k.cov2, n2))

    k = map_kernel_blocks(lambda xa, xb: model.kernel(input_kernel(xa, xb)), x1, x2, size1, size2, devices, row=row)
    # leaves (blocks1, size1, N2, *S); cov1 (blocks1, size1, *S); cov2 (blocks1, N2, *S), the same in every block
    return k.replace(nngp=merge_rows(k.nngp, n1), ntk=merge_rows(k.ntk, n1), cov1=merge_rows(k.cov1, n1),
                     cov2=None if same else k.cov2[0])


# Kernel entries per block under batch_size="auto": rows of x1 against all of x2, bounding
# memory to a few (rows, N2) arrays per layer (4 MiB each in float32); on the benchmark's
# 2000x2000 MLP kernel also ~20% faster than one (N1, N2) pass.
_AUTO_ENTRIES = 1 << 20


def _auto_rows(x1, x2) -> int:
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    spatial = int(np.prod(x1.shape[1:-1], dtype=np.int64)) ** 2
    return _dividing_rows(n1, max(1, _AUTO_ENTRIES // max(n2 * spatial, 1)))


def _dividing_rows(n: int, target: int) -> int:
    """Rows per block near ``target`` that divide ``n`` (the fewest blocks of at least
    ``target / 2`` rows without padding), else ``target``: cutting padded rows off the result
    would copy all of it (a 20,000² kernel held twice)."""
    if target >= n:
        return target
    num = -(-n // target)
    while 2 * n >= num * target:  # blocks of n / num >= target / 2 rows
        if n % num == 0:
            return n // num
        num += 1
    return target


def _warm_program(model, x1, x2, get, batch_size, devices, W_std, b_std):
    """For an eager call of :func:`analytic` on JAX arrays with a ``jaxlearn.nn`` model on one
    device: the jitted ``analytic`` of ``(x1, x2)`` with the other arguments fixed (cached per model
    object and arguments, :func:`_analytic_program`); ``None`` otherwise (the general path). The
    checks run when it traces, once per input shape; a warm call is then one dispatch, with no
    Python validation: 0.15–0.2 ms less per call than the general path (5% of a 1000² MLP
    kernel), the same program and the same numbers."""
    if not isinstance(model, Layer) or devices is not None or W_std is not None or b_std is not None:
        return None
    if not isinstance(x1, jax.Array) or not (x2 is None or isinstance(x2, jax.Array)) or not eager((x1, x2)):
        return None
    try:
        return _analytic_program(model, get, batch_size)
    except TypeError:  # an unhashable argument (get as a list): the general path
        return None


@functools.lru_cache(maxsize=256)
def _analytic_program(model, get, batch_size):
    return jax.jit(lambda x1, x2: analytic(model, x1, x2, get=get, batch_size=batch_size))


def _kernel(model, x1, x2, sizes, devices):
    """The kernel of ``model``, in row blocks when ``sizes``; one compiled program when
    :func:`analytic` is called eagerly (``jaxlearn._compile``: cached per model object, block sizes,
    devices and input shapes). Op by op, the first call of a 2-layer MLP's kernel took 1.2 s against
    0.19 s as one program."""
    return model.kernel(input_kernel(x1, x2)) if sizes is None else _blocked(model, x1, x2, *sizes, devices)


def analytic(model: Layer | linen.Module | nnx.Module, x1: ArrayLike, x2: ArrayLike | None = None, *,
             get: str | tuple[str, ...] | None = None, batch_size: int | str | None = "auto", devices: Devices = None,
             W_std: float | None = None, b_std: float | None = None) -> Kernel | Array | tuple[Array, ...]:
    """The infinite-width kernels of ``model`` between ``x1`` and ``x2``.

    ``model``: a :class:`jaxlearn.nn.Layer` whose layers all have kernel maps (e.g.
    ``nn.serial(nn.Dense(512, W_std=1.5, b_std=0.05, parameterization="ntk"), nn.Relu(), …)``;
    the widths do not enter, except the standard parameterization's NTK, which uses each layer's
    finite fan-in). A layer without a closed form (e.g. ``Tanh``) raises, naming it.
    ``x1 (N1, d)`` vectors, ``(N1, W, C)`` sequences (NWC) or ``(N1, H, W, C)`` images (NHWC); ``x2``
    the same trailing shape, or None (``x1`` against itself).

    ``get=None`` returns the output :class:`~jaxlearn.nn.Kernel` (``.nngp``, ``.ntk`` of shape
    ``(N1, N2)`` for a model with vector outputs, ``(N1, N2, *spatial pairs)`` otherwise; ``.cov1``,
    ``.cov2``); ``get="nngp"`` or ``"ntk"`` that array; a tuple of names, a tuple of arrays.
    ``batch_size``: evaluate blocks of ``batch_size × batch_size`` examples one after another
    (``lax.map``), bounding memory by one block's intermediates; the result is identical.
    ``"auto"`` (default): blocks of rows of ``x1`` against all of ``x2``, about 10⁶ kernel entries
    each (memory: a few such arrays); ``None``: everything at once.
    ``devices``: ``None`` (default) one device; an int ``n`` the first ``n`` of
    ``jax.local_devices()``; ``"all"``; or a sequence of local ``jax.Device`` s. With more than one,
    the row blocks of ``x1`` are spread over a 1-D mesh (``shard_map``; each device ``lax.map`` s
    over its share, their number padded to a multiple of the device count by repeating the last
    block) and gathered into the same array (:mod:`jaxlearn.kernels.devices`). Where one device
    would take all of ``x1`` at once (``batch_size=None``, or a block as large as the inputs), the
    rows are split into one block per device. Each block runs the single-device program, so the
    numbers match it (to float rounding of the smaller blocks' matrix products).
    Kernels are per output unit (the same for every output of the last layer).

    ``model`` may also be a ``flax.linen`` or ``flax.nnx`` module built from layers with closed
    forms (Dense, Conv, pooling, LayerNorm, supported activations, residual sums): its kernel map
    is read off its jaxpr by :func:`jaxlearn.kernels.flax_layer` (recognised patterns, and how
    ``W_std``/``b_std`` come from its initialisers unless given here); the first unsupported
    primitive raises, naming it. ``W_std``/``b_std`` are only for flax modules.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxlearn import kernels, nn
        >>> model = nn.serial(nn.Dense(1, W_std=1.0, parameterization="ntk"))
        >>> x = jnp.array([[1.0, 0.0], [0.0, 2.0]])
        >>> kernels.analytic(model, x, get="nngp").tolist()        # σ_w² x·x'/d
        [[0.5, 0.0], [0.0, 2.0]]
    """
    fast = _warm_program(model, x1, x2, get, batch_size, devices, W_std, b_std)
    if fast is not None:
        return fast(x1, x2)
    from jaxlearn.kernels.flax_kernel import flax_layer, is_flax_module

    devs = resolve_devices(devices)
    if is_flax_module(model):
        model = flax_layer(model, check_inputs(x1, x2)[0], W_std=W_std, b_std=b_std)
    elif W_std is not None or b_std is not None:
        raise ValueError("W_std/b_std: only for flax modules (a jaxlearn.nn model carries its own)")
    if not isinstance(model, Layer):
        raise TypeError(f"model: expected a jaxlearn.nn.Layer or a flax module, got {type(model).__name__}")
    kinds = None if get is None else _check_get(get)
    x1, x2 = check_inputs(x1, x2)
    if not (isinstance(batch_size, str) and batch_size == "auto"):
        check_int(batch_size, "batch_size", minimum=1, optional=True, expected="a positive int, 'auto' or None")
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    if batch_size == "auto":
        sizes = (_auto_rows(x1, x2), n2)
    elif batch_size is None:
        sizes = (n1, n2)
    else:
        sizes = (int(batch_size), int(batch_size))
    if sizes[0] >= n1 and sizes[1] >= n2:
        sizes = None if devs is None else (-(-n1 // len(devs)), n2)  # all at once: one block per device
    elif devs is not None and batch_size == "auto":
        sizes = (min(sizes[0], -(-n1 // len(devs))), n2)
    k = jit_when_eager(_kernel, model, x1, x2, sizes, devs)
    if kinds is None:
        return k
    values = tuple(getattr(k, kind) for kind in kinds)
    return values[0] if isinstance(get, str) else values
