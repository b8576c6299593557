"""Compile time of a network's initialisation (``jaxlearn._random``: draws made flat, then reshaped).

``init_compile`` — wall time of ``jax.jit(model.init).lower(...).compile()`` for a conv net (a
stride-2 stem, 8 3×3 convolutions of 8 channels, global pooling, a Dense readout: 10 weight arrays,
4-D filters) and for an MLP of 6 Dense layers, against the same init drawing each array at its
own shape with ``jax.random.normal`` (the library's draw before this change; its numbers are the
same, which the benchmark asserts). Compiled at XLA's default optimisation level, as a user's
program is (``make test``'s float32 process runs at level 0, where the gap is small). Each case is
compiled three times, each time for a different input width (a fresh program: compiled programs
are cached), and the best time is kept. Target: the conv net's init compiles ≥ 2× faster (measured
on the quiet 2-core CPU: 2.65 s → 1.04 s, 2.6×; the MLP's 0.99 s → 0.69 s).
"""

from __future__ import annotations

import contextlib
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import check, report
from jaxlearn import _random, nn

SPEEDUP_TARGET = {"conv net, flat draws": 2.0}


def _conv_net():
    convs = []
    for _ in range(8):
        convs += [nn.Conv(8, (3, 3), padding="SAME", W_std=2 ** 0.5), nn.Relu()]
    return nn.serial(nn.Conv(8, (3, 3), (2, 2), padding="SAME", W_std=2 ** 0.5), nn.Relu(), *convs,
                     nn.GlobalAvgPool(), nn.Dense(10))


def _mlp():
    return nn.mlp([256] * 5, 10, W_std=2 ** 0.5)


def _compile_seconds(model, spec):
    fn = jax.jit(lambda key: model.init(key, spec)[0])
    lowered = fn.lower(jax.random.key(0))
    start = time.perf_counter()
    compiled = lowered.compile()
    return time.perf_counter() - start, compiled(jax.random.key(0))


def _best(model, make_spec, reference: bool):
    """Best compile time over three input widths; the reference draws each array at its own shape."""
    times, params = [], None
    for width in (3, 4, 5):
        with mock.patch.object(_random, "normal", jax.random.normal) if reference else contextlib.nullcontext():
            seconds, params = _compile_seconds(model, make_spec(width))
        times.append(seconds)
    return min(times), params


def init_compile():
    cases, extra = {}, {}
    for label, model, make_spec in (
            ("conv net", _conv_net(), lambda c: jax.ShapeDtypeStruct((1, 16, 16, c), jnp.float32)),
            ("mlp", _mlp(), lambda c: jax.ShapeDtypeStruct((1, 60 + c), jnp.float32))):
        cases[f"{label}, shaped draws (reference)"], reference = _best(model, make_spec, reference=True)
        cases[f"{label}, flat draws"], ours = _best(model, make_spec, reference=False)
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)))
        extra[f"{label}: same parameters"] = same
        if not same:
            extra.setdefault("missed", []).append(f"{label}: flat draws give other parameters than shaped draws")
    for label in ("conv net", "mlp"):
        ratio = cases[f"{label}, shaped draws (reference)"] / cases[f"{label}, flat draws"]
        extra[f"{label}: speed-up of flat draws"] = ratio
        goal = SPEEDUP_TARGET.get(f"{label}, flat draws")
        if goal is not None:
            check(extra, f"{label}: init compile time, shaped / flat draws", ratio, goal, at_most=False, digits=1)
    payload = report("init_compile", cases, "conv net, shaped draws (reference)", {}, extra=extra)
    for label in ("conv net", "mlp"):
        ratio = extra[f"{label}: speed-up of flat draws"]
        print(f"  {label}: flat draws compile {ratio:.1f}x faster than shaped draws")
    return payload


BENCHMARKS = [init_compile]
