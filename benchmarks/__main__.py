"""``python -m benchmarks [name ...]``: runs the benchmarks, prints times and ratios, writes JSON to
bench_results/ (one file per benchmark; ``compare_nt``, the neural-tangents comparison, runs when
``NT_PYTHON`` names a Python with neural-tangents: benchmarks/compare_nt.py) and
``bench_results/summary.md`` (every case's time, ratio to its baseline and target in one table;
every other target a benchmark checks — ratios to hand-written references or to neural-tangents,
overheads, memory, absolute times — with its value in a second; then every missed target). Exits
non-zero if a benchmark misses a target: a speed-up target of a case, a check recorded by
:func:`benchmarks.harness.check`, or a message in its payload's ``"missed"`` list (a failed
agreement between the timed programs)."""

import datetime
import os
import sys
import tempfile

from benchmarks import (
    compare_nt,
    compat,
    kernels_analytic,
    kernels_empirical,
    kernels_scale,
    landscape,
    nn_init,
    rules,
    runner,
    train_loop,
)

ALL = {fn.__name__: fn for fn in
       train_loop.BENCHMARKS + runner.BENCHMARKS + landscape.BENCHMARKS + kernels_analytic.BENCHMARKS
       + kernels_empirical.BENCHMARKS + kernels_scale.BENCHMARKS + rules.BENCHMARKS + compat.BENCHMARKS
       + nn_init.BENCHMARKS + [compare_nt.compare_nt]}


def missed_targets(name: str, payload: dict) -> list[str]:
    """The targets ``payload`` (one benchmark's JSON) misses, one line each."""
    missed = [f"{name}: {c['check']} {c['shown']} (target {c['target']})" for c in payload.get("checks", ())
              if not c["met"]]
    missed += [f"{name}: {message}" for message in payload.get("missed", ())]
    for case, row in payload["cases"].items():
        if row["target_speedup"] is not None and row["speedup_vs_baseline"] < row["target_speedup"]:
            missed.append(f"{name}: {case}")
    return missed


def parts(name: str, payload: dict) -> dict[str, dict]:
    """The payloads one benchmark returned: its own, or, for one that reports several with their own
    baselines (landscape's ``curvature``), each of those under its name (``payload["parts"]``)."""
    return dict(payload["parts"]) if "parts" in payload else {name: payload}


def summary(payloads: dict[str, dict], missed: list[str], when: str | None = None) -> str:
    """The markdown of ``bench_results/summary.md``: per benchmark, each case's time, its ratio to
    the baseline measured in the same run (``baseline time / case time``: above 1 is faster) and its
    target; then every check of every benchmark (:func:`benchmarks.harness.check`) with its value,
    target and verdict; then the missed targets."""
    first = next(iter(payloads.values()), {})
    when = when or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Benchmarks ({when})", "",
             f"{first.get('platform', '?')} · {first.get('cpus', '?')} CPUs · {first.get('machine', '?')} · "
             f"jax {first.get('jax', '?')}", "",
             "| benchmark | case | time (ms) | speed-up vs baseline | target | |",
             "|---|---|--:|--:|--:|---|"]
    for name, payload in payloads.items():
        for case, row in payload["cases"].items():
            goal = row["target_speedup"]
            verdict = "" if goal is None else ("met" if row["speedup_vs_baseline"] >= goal else "**missed**")
            baseline = " (baseline)" if case == payload.get("baseline") else ""
            lines.append(f"| {name} | {case}{baseline} | {row['seconds'] * 1e3:.1f} | "
                         f"{row['speedup_vs_baseline']:.2f}× | {'' if goal is None else f'≥ {goal:g}×'} | {verdict} |")
    lines += ["", "## Targets", "", "| benchmark | check | value | target | |", "|---|---|--:|--:|---|"]
    for name, payload in payloads.items():
        for c in payload.get("checks", ()):
            lines.append(f"| {name} | {c['check']} | {c['shown']} | {c['target']} | "
                         f"{'met' if c['met'] else '**missed**'} |")
    lines += ["", "Missed targets: " + ("none." if not missed else ""), *[f"* {m}" for m in missed], ""]
    return "\n".join(lines)


def write_summary(text: str, out_dir: str = "bench_results") -> str:
    """Writes ``<out_dir>/summary.md`` atomically; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path = os.path.join(out_dir, "summary.md")
    os.replace(tmp, path)
    return path


def main(names):
    unknown = [n for n in names if n not in ALL]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; available: {sorted(ALL)}")
    payloads, missed = {}, []
    for name in names or ALL:
        payload = ALL[name]()
        if payload is None:  # a benchmark that cannot run here (compare_nt without NT_PYTHON)
            continue
        for part, part_payload in parts(name, payload).items():
            payloads[part] = part_payload
            missed += missed_targets(part, part_payload)
    print(f"\nsummary: {write_summary(summary(payloads, missed))}")
    if missed:
        print("\nmissed targets:\n  " + "\n  ".join(missed))
        sys.exit(1)
    print("\nall targets met")


if __name__ == "__main__":
    main(sys.argv[1:])
