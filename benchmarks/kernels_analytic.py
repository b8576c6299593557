"""Analytic-kernel benchmarks (issue: Kernels I).

``kernels_mlp`` — the analytic NTK (and NNGP) of a depth-3 ReLU MLP (three Dense(512)+ReLU
layers, then Dense(1), NTK parameterization) on d=64 inputs, 1000×1000 and 2000×2000, float32.
Prints absolute times, ns per kernel entry and the ratio to the Gram matrix ``x1 x2ᵀ`` measured in
the same run. Target: <= 17 ns/entry at 2000×2000 (half of neural-tangents 0.6.5's ≈ 34 ns/entry
measured on this 2-core machine: 34 ms at 1000², 136 ms at 2000²; context, not run here).

``kernels_cnn`` — two Conv(3×3, SAME)+ReLU layers, GlobalAvgPool, Dense(1) on 8×8×3 images,
16² and 32² pairs (neural-tangents 0.6.5: 172 / 661 ms; context).
"""

from __future__ import annotations

import jax

from benchmarks.harness import best_time, check, report
from jaxlearn import kernels, nn

_NS_TARGET = 17.0


def _mlp():
    p = dict(W_std=1.5, b_std=0.05, parameterization="ntk")
    return nn.serial(nn.Dense(512, **p), nn.Relu(), nn.Dense(512, **p), nn.Relu(), nn.Dense(512, **p), nn.Relu(),
                     nn.Dense(1, **p))


def kernels_mlp() -> dict:
    model = _mlp()
    cases, extra = {}, {}
    for n in (1000, 2000):
        x1 = jax.random.normal(jax.random.key(0), (n, 64))
        x2 = jax.random.normal(jax.random.key(1), (n, 64))
        gram = jax.jit(lambda a, b: a @ b.T)
        ntk = jax.jit(lambda a, b: kernels.analytic(model, a, b, get=("nngp", "ntk")))
        t_gram = best_time(lambda: gram(x1, x2), repeats=7)
        t_ntk = best_time(lambda: ntk(x1, x2), repeats=7)
        cases[f"Gram matrix {n}x{n}"] = t_gram
        cases[f"analytic NNGP+NTK {n}x{n}"] = t_ntk
        ns = t_ntk / n ** 2 * 1e9
        extra[f"ns_per_entry_{n}"] = ns
        extra[f"ratio_to_gram_{n}"] = t_ntk / t_gram
        print(f"  {n}x{n}: {ns:.1f} ns/entry, {t_ntk / t_gram:.1f}x the Gram matrix")
    check(extra, "analytic NNGP+NTK 2000x2000: time per entry", extra["ns_per_entry_2000"], _NS_TARGET, unit=" ns",
          digits=1)
    return report("kernels_mlp", cases, baseline="Gram matrix 1000x1000", target={}, extra=extra)


def kernels_cnn() -> dict:
    p = dict(W_std=1.5, b_std=0.05, parameterization="ntk")
    model = nn.serial(nn.Conv(64, (3, 3), padding="SAME", **p), nn.Relu(), nn.Conv(64, (3, 3), padding="SAME", **p),
                      nn.Relu(), nn.GlobalAvgPool(), nn.Dense(1, **p))
    cases = {}
    for n in (16, 32):
        x = jax.random.normal(jax.random.key(0), (n, 8, 8, 3))
        fn = jax.jit(lambda a: kernels.analytic(model, a, get=("nngp", "ntk")))
        cases[f"analytic CNN {n}x{n} pairs"] = best_time(lambda: fn(x), repeats=3)
    payload = report("kernels_cnn", cases, baseline="analytic CNN 16x16 pairs", target={})
    for case, seconds in cases.items():
        n = int(case.split()[2].split("x")[0])
        print(f"  {case}: {seconds / n ** 2 * 1e6:.0f} µs/entry")
    return payload


BENCHMARKS = [kernels_mlp, kernels_cnn]
