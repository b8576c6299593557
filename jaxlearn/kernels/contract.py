"""Output axes of an empirical kernel and the contractions that honour them.

Every method of :func:`jaxlearn.kernels.empirical` (Jacobian contraction, NTK-vector products, the
NNGP) and the structured derivatives of :mod:`jaxlearn.kernels.structured` reduce per-example
factors to a kernel with the same conventions (neural-tangents', Novak et al. 2020):
``trace_axes`` are summed and divided by their size, ``diagonal_axes`` keep only ``o1 = o2``,
every other output axis becomes an ``(o1, o2)`` pair in output order, and the batch axis ``0``
indexes the examples (diagonal: ``Θ[n, n]``). :class:`Axes` holds the normalised choice;
:func:`contract` and :func:`full_to_kernel` apply it.
"""

from __future__ import annotations

import math
import string

import jax
import jax.numpy as jnp

__all__ = ["Axes", "contract", "fully_traced", "full_to_kernel"]


class Axes:
    """Normalised ``trace_axes``/``diagonal_axes`` for outputs of rank ``ndim`` (batch included):
    ``trace`` and ``diagonal`` are sets of non-negative axes. Raises a one-line error naming the
    argument for an axis out of range, a traced batch axis, an axis both traced and diagonal, or a
    diagonal batch axis with two inputs (``same_inputs=False``)."""

    def __init__(self, ndim: int, trace_axes, diagonal_axes, same_inputs: bool):
        def norm(name, axes):
            try:
                axes = tuple(int(a) for a in axes)
            except TypeError:
                raise TypeError(f"{name}: expected a tuple of ints, got {axes!r}") from None
            for a in axes:
                if not -ndim <= a < ndim:
                    raise ValueError(f"{name}: axis {a} is out of range for outputs of rank {ndim} (batch axis "
                                     f"included)")
            return {a % ndim for a in axes}

        self.trace, self.diagonal = norm("trace_axes", trace_axes), norm("diagonal_axes", diagonal_axes)
        if 0 in self.trace:
            raise ValueError("trace_axes: the batch axis 0 cannot be traced (the kernel is indexed by its examples)")
        if self.trace & self.diagonal:
            raise ValueError(f"trace_axes and diagonal_axes share axes {sorted(self.trace & self.diagonal)}")
        if 0 in self.diagonal and not same_inputs:
            raise ValueError("diagonal_axes: the batch axis 0 needs x2=None (the diagonal Θ(x_n, x_n))")
        self.ndim = ndim

    def _key(self):
        return self.ndim, frozenset(self.trace), frozenset(self.diagonal)

    def __eq__(self, other):  # by value: a static argument of the compiled kernel (jaxlearn._compile)
        return isinstance(other, Axes) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def letters(self):
        """Einsum letters ``(first, second, kernel)`` for the axes of the two outputs
        ``(N, *out)`` and of the kernel: traced and diagonal axes share a letter; traced ones are
        summed, the others kept, each non-diagonal axis as an (x1, x2) pair in output order."""
        names = iter(string.ascii_letters)
        first, second, out = [], [], []
        for axis in range(self.ndim):
            a = next(names)
            first.append(a)
            if axis in self.trace or axis in self.diagonal:
                second.append(a)
                if axis in self.diagonal:
                    out.append(a)
            else:
                b = next(names)
                second.append(b)
                out += [a, b]
        return "".join(first), "".join(second), "".join(out)

    def trace_size(self, out_shape) -> int:
        """The number of output entries a trace sums over (the divisor of the mean)."""
        return math.prod(out_shape[a] for a in self.trace)


def fully_traced(axes: Axes) -> bool:
    """Every output axis but the batch is traced: the kernel is one product of ``(N, everything)``
    factors, whatever the order of their trailing axes."""
    return axes.trace == set(range(1, axes.ndim))


def contract(axes: Axes, a, b, param_ndim: int = 0, out_shape=None):
    """The kernel from per-example factors ``a (N1, *out, *p)`` and ``b (N2, *out, *p)``: the
    parameter axes contracted, output axes traced/diagonal per ``axes``, divided by the trace size.
    When :func:`fully_traced`, ``a`` and ``b`` may be ``(N, F)`` in any order of their output and
    parameter entries (the same for both), with ``out_shape`` the outputs' ``(N, *out)``."""
    scale = 1.0 / axes.trace_size(a.shape[:axes.ndim] if out_shape is None else out_shape)
    if fully_traced(axes):  # everything but the batch summed: one GEMM (or a row sum)
        a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        if 0 in axes.diagonal:
            return jnp.sum(a2 * b2, axis=1) * scale
        return jnp.matmul(a2, b2.T, precision=jax.lax.Precision.HIGHEST) * scale
    first, second, out = axes.letters()
    extra = string.ascii_letters[len(string.ascii_letters) - param_ndim:]
    spec = f"{first}{extra},{second}{extra}->{out}"
    return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST) * scale


def full_to_kernel(axes: Axes, full):
    """``full (N1, *out, N2, *out)`` (every pair of output entries) reduced per ``axes``."""
    first, second, out = axes.letters()
    return jnp.einsum(f"{first}{second}->{out}", full) / axes.trace_size(full.shape[:axes.ndim])
