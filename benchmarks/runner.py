"""Runner benchmarks (issue: experiment runner).

Fixed model (the foundation benchmark's): scikit-learn digits, MLP 64-32-10, batch 32, plain
SGD, 1,000 steps, through ``experiments/population_digits`` at its documented default segment
length (``segment_steps`` = 250 in ``configs/population_digits.yaml``).

1. ``sweep_vs_one_at_a_time`` — a sweep of 64 runs (8 seeds × 8 learning rates) through the
   runner, which trains them as one vmapped group, vs the same 64 runs one at a time through
   the runner (groups of one) in the same process with warm compiled programs. Everything the
   runner does is included: planning, claims, metrics, checkpoints, per-run files, the index.
   Target: >= 2.5x on 2 CPU cores. Also timed (no target): the same group with one data order
   shared by every member (``data_seed: 0``, a ``shared_constant`` field: each step's batch is
   gathered once for the group).
2. Checkpoint overhead — the grouped sweep's wall time with checkpoint writes vs the same sweep
   with the checkpoint writer replaced by a no-op (best of 2 each). Target: < 5%.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time

from benchmarks.harness import check, report
from jaxlearn import runner
from jaxlearn.runner import arrays

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE = {"widths": [32], "batch_size": 32, "num_steps": 1000, "segment_steps": 250}
AXES = {"seed": runner.Axis(tuple(range(8)), "list"),
        "learning_rate": runner.Axis((0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5), "list")}


def _sweep(experiment, configs, **kwargs) -> float:
    root = tempfile.mkdtemp(prefix="jaxlearn-bench-")
    try:
        start = time.perf_counter()
        report_ = runner.run_sweep(experiment, configs, root=root, progress=False, **kwargs)
        elapsed = time.perf_counter() - start
        assert len(report_.computed) == len(configs)
        return elapsed
    finally:
        shutil.rmtree(root)


def sweep_vs_one_at_a_time() -> dict:
    experiment = runner.load_experiment("population_digits", [REPO])
    configs = runner.expand(experiment.config_cls, BASE, AXES)
    _sweep(experiment, configs[:1], max_group_size=1)  # compile the group-of-one programs
    _sweep(experiment, configs)                         # compile the 64-member programs

    def unsaved_sweep():
        real_writer = arrays.CheckpointWriter
        arrays.CheckpointWriter = _NoCheckpoints
        try:
            return _sweep(experiment, configs)
        finally:
            arrays.CheckpointWriter = real_writer

    # with and without checkpoints in alternation, so that load on the machine hits both alike
    grouped, unsaved = float("inf"), float("inf")
    for _ in range(3):
        grouped = min(grouped, _sweep(experiment, configs))
        unsaved = min(unsaved, unsaved_sweep())
    shared = runner.expand(experiment.config_cls, {**BASE, "data_seed": 0}, AXES)
    _sweep(experiment, shared)                          # compile the shared-order programs
    one_order = min(_sweep(experiment, shared) for _ in range(2))
    sequential = _sweep(experiment, configs, max_group_size=1)
    share = max(grouped - unsaved, 0.0) / grouped
    cases = {"64 runs one at a time (groups of one)": sequential, "64 runs as one vmapped group": grouped,
             "64 runs as one group, one shared data order": one_order,
             "64 runs as one group, checkpoints off": unsaved}
    extra = {"checkpoint_overhead_share": share}
    check(extra, "checkpoint overhead of the 64-run group", 100 * share, 5, unit="%", digits=1)
    return report("runner_sweep_vs_one_at_a_time", cases, baseline="64 runs one at a time (groups of one)",
                  target={"64 runs as one vmapped group": 2.5}, extra=extra)


class _NoCheckpoints:
    """Stands in for the checkpoint writer to time a sweep without checkpoint writes."""

    def start(self, path, tree):
        pass

    def wait(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def store_listing() -> dict:
    """``runner.load`` (index sync + DataFrame of runs × config × final metrics) over a store of
    10,000 runs, next to reading every run's JSON files from the directories (the baseline).
    Target: load < 1 s (an absolute bound)."""
    import json

    root = pathlib.Path(tempfile.mkdtemp(prefix="jaxlearn-bench-store-"))
    try:
        for i in range(10_000):
            path = root / "population_digits" / f"{i:016x}"
            path.mkdir(parents=True)
            config = {"seed": i % 8, "learning_rate": 0.001 * (1 + i % 50), "widths": [128, 128], "num_steps": 2000}
            (path / "run.json").write_text(json.dumps({"run_id": path.name, "experiment": "population_digits",
                                                       "version": "2", "config": config}))
            (path / "status.json").write_text(json.dumps({
                "status": "finished", "step": 2000, "group": None, "diverged_step": None,
                "started": "2026-11-23T00:00:00Z", "updated": "2026-11-23T00:00:00Z",
                "final_metrics": {"test_accuracy": 0.9, "test_loss": 0.3}, "error": None}))
        with runner.Index(root) as index:
            index.rebuild()

        def scan():
            rows = [json.loads((p / "status.json").read_text()) | json.loads((p / "run.json").read_text())
                    for p in (root / "population_digits").iterdir()]
            assert len(rows) == 10_000

        def listing():
            assert len(runner.load(root).runs) == 10_000

        def timed(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start

        cases = {"read 10,000 run directories": min(timed(scan) for _ in range(3)),
                 "runner.load over 10,000 runs": min(timed(listing) for _ in range(3))}
        loaded = cases["runner.load over 10,000 runs"]
        extra = {"load_seconds": loaded}
        check(extra, "runner.load over 10,000 runs", loaded, 1.0, unit=" s")
        return report("runner_store_listing", cases, baseline="read 10,000 run directories", target={}, extra=extra)
    finally:
        shutil.rmtree(root)


BENCHMARKS = [sweep_vs_one_at_a_time, store_listing]
