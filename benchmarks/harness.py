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
    ``rounds`` rounds that time every call in turn, in reverse order every other round: load on a
    shared machine, and whatever the previous call leaves behind, hit every case alike."""
    best = dict.fromkeys(calls, float("inf"))
    for r in range(rounds):
        for name in (list(calls) if r % 2 == 0 else list(reversed(calls))):
            best[name] = min(best[name], best_time(calls[name], repeats=repeats))
    return best


def check(extra: dict, what: str, value: float, goal: float, *, at_most: bool = True, unit: str = "×",
          digits: int = 2) -> bool:
    """Records a target of the benchmark, ``what``'s ``value`` against ``goal`` (at most, or at
    least), in ``extra["checks"]``: :func:`report` prints it, ``make bench`` puts it in the summary's
    table of targets and exits non-zero when one is not met. Returns whether it is met."""
    met = bool(value <= goal if at_most else value >= goal)
    extra.setdefault("checks", []).append({
        "check": what, "value": float(value), "goal": float(goal), "at_most": at_most, "met": met,
        "shown": f"{value:.{digits}f}{unit}", "target": f"{'≤' if at_most else '≥'} {goal:g}{unit}"})
    return met


def print_checks(payload: dict) -> None:
    """One line per target recorded by :func:`check`, with its verdict."""
    for c in payload.get("checks", ()):
        print(f"  {c['check']}: {c['shown']} (target {c['target']}): {'met' if c['met'] else 'MISSED'}")


def report(name: str, cases: dict[str, float], baseline: str, target: dict[str, float], out_dir: str = "bench_results",
           extra: dict | None = None):
    """Prints absolute times and ratios against ``baseline`` (measured in the same run), then the
    targets recorded by :func:`check`, and writes ``<out_dir>/<name>.json`` atomically. ``target``
    maps a case to its required speed-up; ``extra`` adds fields to the JSON."""
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
    print_checks(payload)
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, os.path.join(out_dir, f"{name}.json"))
    return payload
