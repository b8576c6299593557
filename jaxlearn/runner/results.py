"""Loading results back: runs as a pandas DataFrame, per-step curves, saved states.

Usable from a notebook::

    from jaxlearn import runner
    res = runner.load("runs", experiment="population_digits", curves=True)
    res.runs       # one row per run: run_id, status, config fields (nested as "a.b"), final metrics
    res.curves     # one row per (run, logged step): run_id, step, metrics
    state = runner.load_state("runs", res.runs.run_id[0], step=500)   # a snapshot, or "final"
"""

from __future__ import annotations

from typing import NamedTuple

from jaxlearn.runner import arrays, store
from jaxlearn.runner import config as cfg
from jaxlearn.runner.experiment import load_experiment

__all__ = ["Results", "load", "load_state", "flatten"]


class Results(NamedTuple):
    runs: "object"              # pandas.DataFrame: one row per run
    curves: "object | None"     # pandas.DataFrame: one row per (run, logged step); None unless requested
    config_columns: tuple = ()  # the columns of ``runs`` that are config fields (dotted when nested)


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested dicts -> one level with dotted keys; lists become tuples (hashable, groupable)."""
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = tuple(value) if isinstance(value, list) else value
    return flat


def load(root="runs", *, experiment: str | None = None, status: str | None = None, run_ids=None,
         curves: bool = False) -> Results:
    """Runs in the store as a DataFrame (``runs`` × config fields × final metrics), and their
    per-step metric curves when ``curves`` is True. The index is synced with the directories
    first, so runs written by other processes appear."""
    import pandas as pd

    with store.Index(root) as index:
        index.sync()
        rows = index.rows(experiment=experiment, status=status, run_ids=run_ids)
    records, config_columns = [], {}
    for row in rows:
        config_columns.update(dict.fromkeys(flatten(row["config"])))
        record = {"run_id": row["run_id"], "experiment": row["experiment"], "version": row["version"],
                  "status": row["status"], "step": row["step"], "diverged_step": row["diverged_step"]}
        record.update(flatten(row["config"]))
        record.update(row["final_metrics"])
        records.append(record)
    runs = pd.DataFrame.from_records(records)
    curve_frame = None
    if curves:
        parts = []
        for row in rows:
            lines = store.read_jsonl(store.run_dir(root, row["experiment"], row["run_id"]) / "metrics.jsonl")
            for line in lines:
                parts.append({"run_id": row["run_id"], **line})
        curve_frame = pd.DataFrame.from_records(parts)
    return Results(runs, curve_frame, tuple(config_columns))


def load_state(root, run: str, step: int | str = "final", *, search_paths=()):
    """A run's saved state (the pytree its experiment's ``init`` builds): ``step="final"`` or
    one of its snapshot steps. ``run`` is a run id, a unique prefix of one, or
    ``experiment/run_id``."""
    path = store.resolve_run(root, run)
    record = store.read_json(path / "run.json")
    experiment = load_experiment(record["experiment"], search_paths)
    if record["version"] != experiment.version:
        raise ValueError(f"run {record['run_id']}: saved by {record['experiment']} version {record['version']!r}, "
                         f"the code is version {experiment.version!r}; its state layout may differ")
    config = cfg.parse_config(experiment.config_cls, record["config"])
    if step == "final":
        file = path / "state_final.npz"
    else:
        file = path / "snapshots" / f"step_{int(step):08d}.npz"
    if not file.exists():
        kept = sorted(int(p.stem.split("_")[1]) for p in (path / "snapshots").glob("step_*.npz"))
        raise FileNotFoundError(f"run {record['run_id']}: no state at step {step!r}; kept: 'final' (when finished) and snapshots {kept}")
    from jaxlearn.runner.execute import member_template

    return arrays.load_npz(file, member_template(experiment, config))
