"""neural-tangents' empirical kernels, Monte Carlo and Taylor expansions on :mod:`jaxlearn.kernels`.

``empirical_ntk_fn``, ``empirical_nngp_fn`` and ``empirical_kernel_fn`` are
:func:`jaxlearn.kernels.empirical` behind neural-tangents' signatures (``f(params, x, **kwargs)``;
``ntk_fn(x1, x2, params, **kwargs)``; ``kernel_fn(x1, x2, get, params, **kwargs)``) with the same
``trace_axes``/``diagonal_axes`` conventions; :class:`NtkImplementation` maps onto jaxlearn's methods:
``AUTO`` → ``"auto"``, ``JACOBIAN_CONTRACTION`` → ``"jacobian"``, ``NTK_VECTOR_PRODUCTS`` → ``"ntvp"``,
``STRUCTURED_DERIVATIVES`` → ``"structured"``. Outputs that are pytrees give a pytree of kernels, one
per output (neural-tangents ignores cross terms likewise). ``monte_carlo_kernel_fn`` is
:func:`jaxlearn.kernels.monte_carlo`; ``linearize`` is :func:`jaxlearn.kernels.linearize`;
``taylor_expand`` sums directional derivatives of ``f`` (nested ``jax.jvp``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp

from jaxlearn import kernels
from jaxlearn._types import PyTree
from jaxlearn.compat.neural_tangents.kernel import canonical_get, pack
from jaxlearn.compat.neural_tangents.triple import as_layer, store

__all__ = ["NtkImplementation", "empirical_ntk_fn", "empirical_nngp_fn", "empirical_kernel_fn",
           "monte_carlo_kernel_fn", "linearize", "taylor_expand"]


class NtkImplementation(enum.IntEnum):
    """neural-tangents' names for the empirical NTK methods (values as in neural-tangents)."""
    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


_METHODS = {0: "auto", 1: "jacobian", 2: "ntvp", 3: "structured"}


def _method(implementation) -> str:
    try:
        return _METHODS[int(implementation)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"implementation: expected an NtkImplementation (0-3), got {implementation!r}") from None


def _check_vmap_axes(vmap_axes):
    """jaxlearn differentiates one example at a time along axis 0 whatever ``vmap_axes`` says; other
    batch axes are not supported."""
    if vmap_axes is None or vmap_axes == 0:
        return
    if isinstance(vmap_axes, tuple) and len(vmap_axes) in (2, 3) and vmap_axes[0] == 0 and vmap_axes[1] == 0 and (
            len(vmap_axes) == 2 or not vmap_axes[2]):
        return
    raise NotImplementedError(f"vmap_axes={vmap_axes!r}: only batch axis 0 (vmap_axes None or 0) is supported")


class EmpiricalKernelFn:
    """One empirical kernel kind of ``f`` (:func:`jaxlearn.kernels.empirical`): ``(x1, x2, params,
    **apply_fn_kwargs) -> kernel`` (a pytree of kernels for pytree outputs). Without keyword
    arguments it is compiled once per input shape."""

    def __init__(self, f, kind, trace_axes, diagonal_axes, method="auto", batch_size=None, devices=None,
                 store_on_device=True):
        self.f, self.kind, self.trace_axes, self.diagonal_axes = f, kind, tuple(trace_axes), tuple(diagonal_axes)
        self.method, self.batch_size, self.devices, self.store_on_device = method, batch_size, devices, store_on_device
        self._compiled = jax.jit(self._evaluate)

    def batched(self, batch_size, devices, store_on_device):
        return EmpiricalKernelFn(self.f, self.kind, self.trace_axes, self.diagonal_axes, self.method, batch_size,
                                 devices, store_on_device)

    def _evaluate(self, x1, x2, params, kwargs=None):
        apply = (lambda p, x: self.f(p, x, **kwargs)) if kwargs else self.f
        out = jax.eval_shape(apply, params, x1)
        leaves, treedef = jax.tree.flatten(out)

        def one(i):
            apply_i = apply if treedef.num_leaves == 1 and not treedef.children() else (
                lambda p, x: jax.tree.leaves(apply(p, x))[i])
            return kernels.empirical(apply_i, params, x1, x2, kind=self.kind, trace_axes=self.trace_axes,
                                     diagonal_axes=self.diagonal_axes, method=self.method,
                                     batch_size=self.batch_size, devices=self.devices)

        return jax.tree.unflatten(treedef, [one(i) for i in range(len(leaves))])

    def __call__(self, x1, x2, params, **apply_fn_kwargs):
        value = self._evaluate(x1, x2, params, apply_fn_kwargs) if apply_fn_kwargs else self._compiled(x1, x2, params)
        return store(value, self.store_on_device)


def empirical_ntk_fn(f: Callable, trace_axes: Sequence[int] = (-1,), diagonal_axes: Sequence[int] = (),
                     vmap_axes: int | tuple | None = None,
                     implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION,
                     _j_rules: bool = True, _s_rules: bool = True, _fwd: bool | None = None) -> EmpiricalKernelFn:
    """``ntk_fn(x1, x2, params, **apply_fn_kwargs)``: the empirical NTK of ``f(params, x, **kwargs)``;
    ``x2=None`` means ``x1``. ``_j_rules``/``_s_rules``/``_fwd`` (neural-tangents' internal switches
    of its structured derivatives) do not apply to jaxlearn's and are ignored."""
    _check_vmap_axes(vmap_axes)
    return EmpiricalKernelFn(f, "ntk", trace_axes, diagonal_axes, _method(implementation))


def empirical_nngp_fn(f: Callable, trace_axes: Sequence[int] = (-1,),
                      diagonal_axes: Sequence[int] = ()) -> EmpiricalKernelFn:
    """``nngp_fn(x1, x2, params, **apply_fn_kwargs)``: ``f(x1)·f(x2)ᵀ`` with neural-tangents' axes."""
    return EmpiricalKernelFn(f, "nngp", trace_axes, diagonal_axes)


class EmpiricalGetKernelFn:
    """``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)``: ``get=None`` means ``("nngp", "ntk")``
    (a namedtuple ``EmpiricalKernel``), a string that kind alone."""

    def __init__(self, fns):
        self.fns = fns

    def batched(self, batch_size, devices, store_on_device):
        return EmpiricalGetKernelFn({k: fn.batched(batch_size, devices, store_on_device) for k, fn in self.fns.items()})

    def __call__(self, x1, x2, get, params, **apply_fn_kwargs):
        names, single = canonical_get(("nngp", "ntk") if get is None else get, "kernel_fn")
        for name in names:
            if name not in self.fns:
                raise ValueError(f"kernel_fn: get must name 'nngp' or 'ntk', got {get!r}")
        values = {g: self.fns[g](x1, x2, params, **apply_fn_kwargs) for g in names}
        return pack(values, names, single, "EmpiricalKernel")


def empirical_kernel_fn(f: Callable, trace_axes: Sequence[int] = (-1,), diagonal_axes: Sequence[int] = (),
                        vmap_axes: int | tuple | None = None,
                        implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION,
                        _j_rules: bool = True, _s_rules: bool = True, _fwd: bool | None = None) -> EmpiricalGetKernelFn:
    """``kernel_fn(x1, x2, get, params, **apply_fn_kwargs)`` of the empirical NNGP and NTK."""
    return EmpiricalGetKernelFn({"nngp": empirical_nngp_fn(f, trace_axes, diagonal_axes),
                                 "ntk": empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation)})


def monte_carlo_kernel_fn(init_fn: Callable, apply_fn: Callable, key: jax.Array, n_samples: int | Iterable[int],
                          batch_size: int = 0, device_count: int = -1, store_on_device: bool = True,
                          trace_axes: Sequence[int] = (-1,), diagonal_axes: Sequence[int] = (),
                          vmap_axes: int | tuple | None = None,
                          implementation: NtkImplementation | int = NtkImplementation.JACOBIAN_CONTRACTION,
                          _j_rules: bool = True, _s_rules: bool = True, _fwd: bool | None = None) -> Callable:
    """``kernel_fn(x1, x2=None, get=None)``: empirical kernels averaged over ``n_samples``
    initialisations (:func:`jaxlearn.kernels.monte_carlo`; draws differ from neural-tangents', so
    estimates agree statistically). An iterable ``n_samples`` gives a generator of estimates, one
    per count. ``batch_size``/``device_count``/``store_on_device``: as in :func:`batch` (every block
    uses the same initialisations). Stochastic layers get no ``rng`` (train-mode Dropout raises)."""
    from jaxlearn.compat.neural_tangents.batching import batch

    _check_vmap_axes(vmap_axes)
    model = as_layer((init_fn, apply_fn, None), "monte_carlo_kernel_fn")
    method = _method(implementation)
    counts = (int(n_samples),) if isinstance(n_samples, int) else tuple(int(n) for n in n_samples)

    def estimate(x1, x2, get, n):
        names, single = canonical_get(("nngp", "ntk") if get is None else get, "kernel_fn")
        values = kernels.monte_carlo(model, key, x1, x2, n_samples=n, kind=names, trace_axes=trace_axes,
                                     diagonal_axes=diagonal_axes, method=method)
        return pack(dict(zip(names, values)), names, single, "MonteCarloKernel")

    def one(n):
        return batch(lambda x1, x2=None, get=None: estimate(x1, x2, get, n), batch_size, device_count,
                     store_on_device)

    fns = [one(n) for n in counts]

    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        if apply_fn_kwargs:
            raise NotImplementedError(f"monte_carlo_kernel_fn: apply_fn keyword arguments {sorted(apply_fn_kwargs)} "
                                      f"are not supported")
        if isinstance(n_samples, int):
            return fns[0](x1, x2, get)
        return (fn(x1, x2, get) for fn in fns)

    return kernel_fn


def linearize(f: Callable, params: PyTree) -> Callable:
    """``f_lin(p, *args, **kwargs) = f(params) + J(params)·(p − params)``
    (:func:`jaxlearn.kernels.linearize`)."""
    return kernels.linearize(f, params)


def taylor_expand(f: Callable, params: PyTree, degree: int) -> Callable:
    """``f_tayl(p, *args, **kwargs) = Σ_{k ≤ degree} D^k f(params)[p − params, …] / k!``: the Taylor
    polynomial of ``f`` in its parameters, each term a directional derivative along ``p − params``
    (nested ``jax.jvp``)."""
    def f_tayl(p, *args, **kwargs):
        delta = jax.tree.map(jnp.subtract, p, params)
        fn = lambda q: f(q, *args, **kwargs)  # noqa: E731
        total = fn(params)
        for k in range(1, degree + 1):
            fn = (lambda g: lambda q: jax.jvp(g, (q,), (delta,))[1])(fn)
            total = jax.tree.map(lambda a, b: a + b / math.factorial(k), total, fn(params))
        return total

    return f_tayl
