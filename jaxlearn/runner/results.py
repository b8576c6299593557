"""Loading results back: runs as a pandas DataFrame, per-step curves, saved states.

Usable from a notebook::

    from jaxlearn import runner
    res = runner.load("runs", experiment="population_digits", curves=True)
    res.runs       # one row per run: run_id, status, config fields (nested as "a.b"), final metrics
    res.curves     # one row per (run, logged step): run_id, step, metrics
    state = runner.load_state("runs", res.runs.run_id[0], step=500)   # a snapshot, or "final"
    traj = runner.load_trajectory("runs", res.runs.run_id[0])          # every snapshot, stacked
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._types import Array, ArrayLike, PyTree
from jaxlearn.runner import arrays, store
from jaxlearn.runner import config as cfg
from jaxlearn.runner.config import flatten
from jaxlearn.runner.experiment import load_experiment

__all__ = ["RUN_COLUMNS", "Results", "Trajectory", "after_kernel", "load", "load_state", "load_trajectory", "flatten"]


# Columns ``runs`` and ``curves`` always have, even with no rows (a sweep nothing of which is stored yet).
RUN_COLUMNS = ("run_id", "experiment", "version", "status", "step", "diverged_step")
CURVE_COLUMNS = ("run_id", "step")


class Results(NamedTuple):
    runs: "object"              # pandas.DataFrame: one row per run
    curves: "object | None"     # pandas.DataFrame: one row per (run, logged step); None unless requested
    config_columns: tuple = ()  # the columns of ``runs`` that are config fields (dotted when nested)

    def finished(self, *columns: str) -> "Results":
        """The finished runs (status ``"finished"``: not running elsewhere, failed or diverged),
        what a study's summary, check and plot are about; see :meth:`select`."""
        return self.select(*columns, status=("finished",))

    def select(self, *columns: str, status=("finished",)) -> "Results":
        """The runs whose status is one of ``status``. ``curves`` (when loaded) holds their rows
        only, with each run's config columns joined to its rows. Every name in ``columns`` (config
        fields, final metrics) is a column of ``runs`` and of ``curves``, NaN-filled where absent,
        so that a sweep with nothing finished yet (or nothing stored yet) gives empty tables
        rather than ``KeyError``s."""
        runs = self.runs[self.runs["status"].isin(status)] if "status" in self.runs else self.runs.iloc[:0]
        runs = _with_columns(runs, (*RUN_COLUMNS, *columns))
        curves = self.curves
        if curves is not None:
            curves = _with_columns(curves, CURVE_COLUMNS)
            curves = curves[curves["run_id"].isin(runs["run_id"])]
            joined = [c for c in (*self.config_columns, *columns) if c in runs and c not in curves]
            curves = curves.merge(runs[["run_id", *dict.fromkeys(joined)]], on="run_id", how="left")
            curves = _with_columns(curves, columns).reset_index(drop=True)
        return Results(runs.reset_index(drop=True), curves, self.config_columns)


def _with_columns(frame, columns):
    """``frame`` with every name of ``columns`` as a column (NaN where it had none)."""
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    return frame.assign(**{c: float("nan") for c in missing}) if missing else frame


def load(root: str | os.PathLike = "runs", *, experiment: str | None = None, status: str | None = None,
         run_ids: Iterable[str] | None = None, curves: bool = False) -> Results:
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
    runs = _with_columns(pd.DataFrame.from_records(records), RUN_COLUMNS)
    curve_frame = None
    if curves:
        parts = []
        for row in rows:
            lines = store.read_jsonl(store.run_dir(root, row["experiment"], row["run_id"]) / "metrics.jsonl")
            for line in lines:
                parts.append({"run_id": row["run_id"], **line})
        curve_frame = _with_columns(pd.DataFrame.from_records(parts), CURVE_COLUMNS)
    return Results(runs, curve_frame, tuple(config_columns))


def _saved_run(root, run: str, search_paths):
    """``(path, record, experiment, config)`` of a stored run, refusing another code version."""
    path = store.resolve_run(root, run)
    record = store.read_json(path / "run.json")
    experiment = load_experiment(record["experiment"], search_paths)
    if record["version"] != experiment.version:
        raise ValueError(f"run {record['run_id']}: saved by {record['experiment']} version {record['version']!r}, "
                         f"the code is version {experiment.version!r}; its state layout may differ")
    return path, record, experiment, cfg.parse_config(experiment.config_cls, record["config"])


def _snapshot_steps(path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (path / "snapshots").glob("step_*.npz"))


def load_state(root: str | os.PathLike, run: str, step: int | str = "final", *,
               search_paths: Sequence[str | os.PathLike] = ()) -> PyTree:
    """A run's saved state (the pytree its experiment's ``init`` builds): ``step="final"`` or
    one of its snapshot steps. ``run`` is a run id, a unique prefix of one, or
    ``experiment/run_id``."""
    path, record, experiment, config = _saved_run(root, run, search_paths)
    if step == "final":
        file = path / "state_final.npz"
    else:
        file = path / "snapshots" / f"step_{int(step):08d}.npz"
    if not file.exists():
        raise FileNotFoundError(f"run {record['run_id']}: no state at step {step!r}; kept: 'final' (when finished) "
                                f"and snapshots {_snapshot_steps(path)}")
    from jaxlearn.runner.execute import member_template

    return arrays.load_npz(file, member_template(experiment, config))


class Network(NamedTuple):
    """One trained network of a saved run (:func:`load_networks`): ``apply(params, x)`` — the
    experiment's ``model(config).apply`` with the saved model state (BatchNorm statistics, ``()``
    if none) bound, evaluation mode — and its ``params``."""

    apply: "object"
    params: "object"
    model: "object"


def _train_state(state, run_id):
    """The one :class:`jaxlearn.train.TrainState` in a run's state (the state itself, or a field of it)."""
    from jaxlearn.train import TrainState

    found = [leaf for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, TrainState))
             if isinstance(leaf, TrainState)]
    if len(found) != 1:
        raise ValueError(f"run {run_id}: expected its state to hold one jaxlearn.train.TrainState, found {len(found)}")
    return found[0]


def load_networks(root: str | os.PathLike, run: str, *, step: int | str = "final",
                  search_paths: Sequence[str | os.PathLike] = ()) -> list[Network]:
    """The trained networks of a saved run, for analyses (kernels, CKA, pruning, landscapes): the
    :class:`Network` of the :class:`jaxlearn.train.TrainState` in the run's state at ``step``
    (:func:`load_state`), rebuilt by the experiment's ``model(config)`` hook (experiments without
    it raise ``ValueError``). One network for most studies; a state that stacks several networks
    of one model — a TrainState whose ``step`` has a leading axis ``C``, e.g. the children of
    ``experiments/instability.py`` — gives ``C`` of them, in order."""
    return _networks(root, run, step, search_paths)[0]


def _networks(root, run, step, search_paths) -> tuple[list[Network], bool]:
    """:func:`load_networks`, and whether the state stacks its networks."""
    _, record, experiment, config = _saved_run(root, run, search_paths)
    model_fn = experiment.hook("model")
    if model_fn is None:
        raise ValueError(f"run {record['run_id']}: experiment {record['experiment']!r} has no model(config) hook, so "
                         f"its network cannot be rebuilt")
    model = model_fn(config)
    train_state = _train_state(load_state(root, run, step, search_paths=search_paths), record["run_id"])
    copies = np.shape(train_state.step)
    states = [train_state] if not copies else [jax.tree.map(lambda a, i=i: a[i], train_state) for i in range(copies[0])]

    def network(ts):
        return Network(lambda params, x, model_state=ts.model_state: model.apply(params, x, model_state), ts.params,
                       model)

    return [network(ts) for ts in states], bool(copies)


def after_kernel(root: str | os.PathLike, run: str, x1: ArrayLike, x2: ArrayLike | None = None, *,
                 step: int | str = "final", search_paths: Sequence[str | os.PathLike] = (), **kwargs: Any) -> Array:
    """The empirical NTK of a run's trained network (its *after-kernel*; NNGP with ``kind="nngp"``):
    ``kernels.empirical(net.apply, net.params, x1, x2, **kwargs)`` for the network of
    :func:`load_networks` (BatchNorm statistics frozen at their saved values; experiments without
    a ``model(config)`` hook raise). A state holding ``C`` networks gives their kernels stacked on a
    leading axis. ``kwargs`` are :func:`jaxlearn.kernels.empirical`'s (``kind``, ``trace_axes``,
    ``method``, ...). Compare with the kernel at initialisation (``step=0`` when 0 is a snapshot
    step, or ``model.init``) through :func:`jaxlearn.kernels.kernel_distance`.
    """
    from jaxlearn import kernels

    networks, stacked = _networks(root, run, step, search_paths)
    grams = [kernels.empirical(net.apply, net.params, x1, x2, **kwargs) for net in networks]
    return jnp.stack(grams) if stacked else grams[0]


class Trajectory(NamedTuple):
    steps: "object"   # numpy int array (T,): the step of each state
    states: "object"  # the run's state pytree with a leading axis T on every leaf


def load_trajectory(root: str | os.PathLike, run: str, *, final: bool = True,
                    search_paths: Sequence[str | os.PathLike] = ()) -> Trajectory:
    """All of a run's saved snapshots (the config's ``snapshots`` steps), in step order, then its
    final state (``final=True``, when the run finished; its step is the config's ``num_steps``),
    stacked along a new leading axis. E.g. the PCA directions of the optimisation path (Li et
    al. 2018, §6)::

        traj = runner.load_trajectory("runs", run_id)
        (d1, d2), explained = landscape.pca_directions(traj.states.params)   # θ_final = last state
    """
    path, record, experiment, config = _saved_run(root, run, search_paths)
    steps = _snapshot_steps(path)
    files = [path / "snapshots" / f"step_{step:08d}.npz" for step in steps]
    if final and (path / "state_final.npz").exists():
        final_step = getattr(config, "num_steps", None)
        if final_step is None or final_step not in steps:
            files.append(path / "state_final.npz")
            steps.append(-1 if final_step is None else int(final_step))
    if not files:
        raise FileNotFoundError(f"run {record['run_id']}: no snapshots and no final state saved; set the config's "
                                f"snapshots field (e.g. snapshots: \"log:1:2000:12\") to keep a trajectory")
    from jaxlearn.runner.execute import member_template

    template = member_template(experiment, config)
    states = [arrays.load_npz(file, template) for file in files]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)  # jnp: PRNG key leaves stack too
    return Trajectory(np.asarray(steps, dtype=np.int64), stacked)
