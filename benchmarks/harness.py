"""Timing harness: best-of-N wall time of warm (already compiled) calls, JSON results."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import jax


def best_time(fn, repeats: int = 3) -> float:
    """Minimum wall time over ``repeats`` calls of ``fn()``, each blocked until its result is ready.
    ``fn`` is called once before timing so compilation is excluded."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_best(calls: dict, rounds: int, repeats: int) -> dict[str, float]:
    """The best :func:`best_time` (``repeats`` calls) of each of ``calls`` (name -> function) over
    ``rounds`` rounds that time every call in turn: load on a shared machine hits every case alike."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, fn in calls.items():
            best[name] = min(best[name], best_time(fn, repeats=repeats))
    return best


def report(name: str, cases: dict[str, float], baseline: str, target: dict[str, float], out_dir: str = "bench_results",
           extra: dict | None = None):
    """Prints absolute times and ratios against ``baseline`` (measured in the same run) and writes
    ``<out_dir>/<name>.json`` atomically. ``target`` maps a case to its required speed-up; ``extra``
    adds fields to the JSON."""
    base = cases[baseline]
    print(f"\n== {name} ({jax.devices()[0].platform}, {os.cpu_count()} cpus) ==")
    rows = {}
    for case, seconds in cases.items():
        speedup = base / seconds
        goal = target.get(case)
        verdict = "" if goal is None else (f"  target >= {goal:g}x: " + ("met" if speedup >= goal else "MISSED"))
        print(f"  {case:<40s} {seconds * 1e3:10.1f} ms   {speedup:7.1f}x vs {baseline}{verdict}")
        rows[case] = {"seconds": seconds, "speedup_vs_baseline": speedup, "target_speedup": goal}
    payload = {
        "benchmark": name,
        "baseline": baseline,
        "cases": rows,
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **(extra or {}),
    }
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, f"{name}.json"))
    return payload
