"""``python -m benchmarks [name ...]``: runs the benchmarks, prints times and ratios, writes JSON
to bench_results/. Exits non-zero if a benchmark misses its target: a speed-up target of a case,
a named check of its payload, or a message in its payload's ``"missed"`` list (absolute targets)."""

import sys

from benchmarks import compat, kernels_analytic, kernels_empirical, landscape, nn_init, rules, runner, train_loop

ALL = {fn.__name__: fn for fn in
       train_loop.BENCHMARKS + runner.BENCHMARKS + landscape.BENCHMARKS + kernels_analytic.BENCHMARKS
       + kernels_empirical.BENCHMARKS + rules.BENCHMARKS + compat.BENCHMARKS + nn_init.BENCHMARKS}


def main(names):
    unknown = [n for n in names if n not in ALL]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; available: {sorted(ALL)}")
    missed = []
    for name in names or ALL:
        payload = ALL[name]()
        if payload.get("load_under_1s") is False:
            missed.append(f"{name}: runner.load took {payload['load_seconds']:.2f} s >= 1 s")
        if payload.get("ns_target_met") is False:
            missed.append(f"{name}: {payload['ns_per_entry_2000']:.1f} ns/entry > 17")
        if payload.get("checkpoint_overhead_met") is False:
            missed.append(f"{name}: checkpoint overhead {payload['checkpoint_overhead_share']:.1%} >= 5%")
        if payload.get("residual_target_met") is False:
            missed.append(f"{name}: few-bit residual {payload['residual_ratio']:.3f} of float32 > 1/8")
        missed += [f"{name}: {message}" for message in payload.get("missed", ())]
        for case, row in payload["cases"].items():
            if row["target_speedup"] is not None and row["speedup_vs_baseline"] < row["target_speedup"]:
                missed.append(f"{name}: {case}")
    if missed:
        print("\nmissed targets:\n  " + "\n  ".join(missed))
        sys.exit(1)
    print("\nall targets met")


if __name__ == "__main__":
    main(sys.argv[1:])
