"""Compatibility-layer benchmarks (issue 25: ``jaxlearn.compat.neural_tangents``).

``compat_nt_mlp`` — neural-tangents' ``kernel_fn(x1, x2, ("nngp", "ntk"))`` of the depth-3 ReLU MLP
(three ``stax.Dense(512, 1.5, 0.05)`` + ``stax.Relu()``, then ``stax.Dense(1, 1.5, 0.05)``, NTK
parameterization) against the native :func:`jaxlearn.kernels.analytic` of the same network
(:func:`benchmarks.kernels_analytic._mlp`'s sizes: d=64, 1000×1000 and 2000×2000, float32), both
warm. The compat call is timed as ported code makes it, eagerly (the compat ``kernel_fn`` compiles
once per input shape); the native one under ``jax.jit``. Native and compat alternate over rounds
(and which goes first) and each keeps its best time, so a load spike on the shared machine does not
land on one side only. The compat program also returns ``cov1``/``cov2`` (neural-tangents' Kernel).
Target: overhead ≤ 5% at each size.
"""

from __future__ import annotations

import jax

from benchmarks.harness import check, interleaved_best, report
from jaxlearn import kernels, nn
from jaxlearn.compat.neural_tangents import stax

_OVERHEAD_TARGET = 0.05
_ROUNDS = 4    # pairs of alternations, 5 calls each: the best of 40 calls a side (a 25 ms call varies by ±5%)


def _native_mlp():
    p = dict(W_std=1.5, b_std=0.05, parameterization="ntk")
    return nn.serial(nn.Dense(512, **p), nn.Relu(), nn.Dense(512, **p), nn.Relu(), nn.Dense(512, **p), nn.Relu(),
                     nn.Dense(1, **p))


def _compat_mlp():
    return stax.serial(stax.Dense(512, 1.5, 0.05), stax.Relu(), stax.Dense(512, 1.5, 0.05), stax.Relu(),
                       stax.Dense(512, 1.5, 0.05), stax.Relu(), stax.Dense(1, 1.5, 0.05))


def compat_nt_mlp() -> dict:
    model = _native_mlp()
    _, _, kernel_fn = _compat_mlp()
    native = jax.jit(lambda a, b: kernels.analytic(model, a, b, get=("nngp", "ntk")))
    cases, extra = {}, {}
    for n in (1000, 2000):
        x1 = jax.random.normal(jax.random.key(0), (n, 64))
        x2 = jax.random.normal(jax.random.key(1), (n, 64))
        calls = {"native": lambda: native(x1, x2), "compat": lambda: tuple(kernel_fn(x1, x2, ("nngp", "ntk")))}
        best = interleaved_best(calls, rounds=2 * _ROUNDS, repeats=5)  # each side first every other round
        t_native, t_compat = best["native"], best["compat"]
        cases[f"native analytic {n}x{n}"] = t_native
        cases[f"compat kernel_fn {n}x{n}"] = t_compat
        overhead = t_compat / t_native - 1
        extra[f"overhead_{n}"] = overhead
        check(extra, f"compat kernel_fn {n}x{n}: overhead over native", 100 * overhead, 100 * _OVERHEAD_TARGET,
              unit="%", digits=1)
    return report("compat_nt_mlp", cases, baseline="native analytic 1000x1000", target={}, extra=extra)


BENCHMARKS = [compat_nt_mlp]
