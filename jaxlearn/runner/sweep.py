"""Sweeps end to end: config file + overrides + axes -> validated runs -> claimed groups -> results.

The library entry points behind ``jaxlearn run``::

    from jaxlearn import runner
    experiment, configs = runner.resolve("configs/population_digits.yaml", variant="smoke",
                                         overrides=["num_steps=400"], sweeps=["learning_rate=log:1e-3:1:4"])
    report = runner.run_sweep(experiment, configs, root="runs")

Everything is validated before anything compiles. Finished runs are skipped (``force`` recomputes
them); a run claimed by another live process is skipped and reported as busy, so concurrent
sweeps never compute the same run twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import jax

from jaxlearn._checks import did_you_mean
from jaxlearn.runner import config as cfg
from jaxlearn.runner import configfile as cfgfile
from jaxlearn.runner import distributed, store
from jaxlearn.runner.execute import compile_ahead, run_group
from jaxlearn.runner.experiment import Experiment, load_experiment
from jaxlearn.runner.plan import (
    FINAL_STATUSES,
    Group,
    Run,
    group_dir,
    is_final,
    make_runs,
    plan_from_json,
    plan_runs,
    plan_to_json,
    read_status,
    stored_run,
)
from jaxlearn.runner.progress import Progress
from jaxlearn.runner.sinks import sink_names

__all__ = ["resolve", "load_variant", "find_config", "installed_configs", "config_names", "run_sweep",
           "compute_group", "SweepReport", "enable_compilation_cache", "until_settled", "wait_for_runs", "sweep_id"]

_RUN_FILES = ("status.json", "metrics.jsonl", "state_final.npz", "outputs.npz")
_RUN_DIRS = ("snapshots", "events", "plots")


@dataclasses.dataclass(frozen=True)
class SweepReport:
    experiment: str
    run_ids: tuple[str, ...]          # every run of the sweep, in sweep order
    computed: dict                    # run_id -> final status, for runs computed now
    skipped: tuple[str, ...]          # already finished
    busy: tuple[str, ...]             # being computed by another process
    resumed: dict = dataclasses.field(default_factory=dict)  # group_id -> step, groups a launcher resumed


def sweep_id(experiment: str, run_ids: Iterable[str]) -> str:
    """A sweep's id: 12 hex chars of the sha256 of its experiment and sorted run ids (the same set
    of runs is the same sweep, whatever the order or the command that produced it)."""
    return hashlib.sha256(cfg.canonical_json([experiment, sorted(run_ids)]).encode()).hexdigest()[:12]


def _repo_root(path: pathlib.Path) -> list[pathlib.Path]:
    """Directories to look for the ``experiments`` package: beside the config file's folder; none
    for a config installed inside the jaxlearn package (its studies are ``jaxlearn.experiments``)."""
    path = path.resolve()
    if (path.parent.parent / "__init__.py").exists():
        return []
    return [path.parent.parent, path.parent]


def installed_configs() -> pathlib.Path | None:
    """The directory of the config files installed with jaxlearn (the repository's ``configs/``,
    installed as the package data ``jaxlearn.configs``), or ``None``."""
    for package, relative in (("jaxlearn.configs", "."), ("jaxlearn.experiments", "../configs")):
        # an editable install maps the packages but cannot find the data-only jaxlearn.configs:
        # the configs are then beside the experiments (the repository's layout)
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or ()) if spec is not None else []
        if locations and (folder := (pathlib.Path(locations[0]) / relative).resolve()).is_dir():
            return folder
    return None


def config_names() -> list[str]:
    """The names ``find_config`` accepts: the config files in ``./configs`` and the installed ones."""
    dirs = [pathlib.Path("configs"), installed_configs()]
    return sorted({f.stem for d in dirs if d is not None and d.is_dir() for f in d.glob("*.yaml")})


def find_config(target: str | os.PathLike) -> pathlib.Path:
    """The config file ``target`` names: a path to a file, or a study's name (``population_digits``,
    with or without ``.yaml``) looked up as ``configs/<name>.yaml`` in the working directory, then
    among the configs installed with jaxlearn (:func:`installed_configs`), so that
    ``jaxlearn run population_digits`` works after ``pip install jaxlearn`` from any directory.
    A missing one is a :class:`~jaxlearn.runner.config.ConfigError` naming the known names."""
    path = pathlib.Path(target)
    if path.is_file():
        return path
    text = str(target)
    name = text[:-len(".yaml")] if text.endswith(".yaml") else text
    if name.isidentifier():
        for folder in (pathlib.Path("configs"), installed_configs()):
            if folder is not None and (folder / f"{name}.yaml").is_file():
                return folder / f"{name}.yaml"
    known = config_names()
    hint = did_you_mean(name, known) if name.isidentifier() else ""
    raise cfg.ConfigError(f"{text}: no such config file, nor a study of that name{hint}; "
                      f"known: {', '.join(known) or 'none'}")


def load_variant(config_file, variant: str = "default") -> tuple[Experiment, dict]:
    """A config file's experiment (found beside the file's folder first) and its variant ``variant``
    (``{"config", "sweep", "mode", "num"}``, unexpanded: see :func:`resolve`). ``config_file``: a
    path, or a study's name (:func:`find_config`)."""
    path = find_config(config_file)
    file = cfgfile.load_file(path)
    chosen = file.variant(variant)
    return load_experiment(file.experiment, _repo_root(path)), chosen


def resolve(config_file: str | os.PathLike, *, variant: str = "default", overrides: Sequence[str] = (),
            sweeps: Sequence[str] = (), mode: str | None = None,
            num: int | None = None, seed: int = 0) -> tuple[Experiment, list]:
    """Loads a config file's variant, applies ``key=value`` overrides and ``key=...`` sweep axes
    (CLI syntax; axes given here are added to the file's, replacing one of the same name) and
    returns the experiment and its validated configs, one per run."""
    experiment, chosen = load_variant(config_file, variant)
    base = dict(chosen["config"])
    for text in overrides:
        key, value = cfgfile.parse_assignment(text)
        base = cfgfile.set_path(base, key, value)
    axes = dict(chosen["sweep"])
    for text in sweeps:
        key, axis = cfgfile.parse_sweep(text)
        axes[key] = axis
    for key in [k for k in axes if k in {o.split("=", 1)[0].strip() for o in overrides}]:
        del axes[key]  # an explicit --set pins a value the file swept
    configs = cfgfile.expand(experiment.config_cls, base, axes, mode=mode or chosen.get("mode", "grid"),
                         num=num if num is not None else chosen.get("num"), seed=seed)
    return experiment, configs


def enable_compilation_cache(root: str | os.PathLike) -> None:
    """Persistent XLA compilation cache under the run root (process-wide JAX setting; the CLI
    calls it). Repeat compiles of the same program become a file read."""
    path = pathlib.Path(root).resolve() / "_jax_cache"
    path.mkdir(parents=True, exist_ok=True)
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def clear_run(path: pathlib.Path) -> None:
    """Deletes what a run wrote in its directory ``path`` (metrics, checkpoints, status), so that it
    runs again from the start; the directory itself stays."""
    for name in _RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for name in _RUN_DIRS:
        if (path / name).exists():
            shutil.rmtree(path / name)


_COMPILE_AHEAD = 2  # groups whose programs compile in the background while one computes


def run_sweep(experiment: Experiment, configs: Sequence[Any], *, root: str | os.PathLike = "runs", force: bool = False,
              progress: bool = True, max_group_size: int | None = None, argv: Sequence[str] | None = None,
              stream: TextIO | None = None, devices: int | None = None, wait: bool = False, poll_s: float = 0.5,
              hook: Callable | None = None, log: str | Sequence[str] | None = None) -> SweepReport:
    """Computes the runs of ``configs`` that are not finished yet, group by group; each group's
    runs are sharded over at most ``devices`` local devices (default: all; 1: unsharded).

    Runs claimed by other processes are reported ``busy``; with ``wait`` the sweep then waits
    for them (:func:`wait_for_runs`) and runs again, until none is busy: runs the others finished
    are reported as skipped, runs a process left unfinished (it died, or failed) are computed here.

    In a job of several processes (``jax.distributed``) every process calls it with the same
    arguments: process 0 plans, claims and writes; the others receive the plan and each group's
    members from it and compute every group together with it, over ``devices`` local devices of
    every process. All processes return the same report, once process 0 has written everything.
    ``wait`` is refused there (process 0 would wait while the others sit in a collective).
    ``hook``: a test hook for :func:`jaxlearn.runner.execute.run_group`. ``log``: the live tracking
    sinks (``"tensorboard,mlflow,wandb"``, a sequence of names, ``"none"``; ``None``:
    ``$JAXLEARN_LOG``, else TensorBoard; see :mod:`jaxlearn.runner.sinks`), checked before anything
    compiles; runs are grouped there under the sweep's :func:`sweep_id`.
    """
    if wait and distributed.is_multiprocess():
        raise ValueError("run_sweep(wait=True): not in a job of several processes")
    sinks = sink_names(log)
    sweep = sweep_id(experiment.name, [run.run_id for run in make_runs(experiment, configs)])

    def once(force: bool) -> SweepReport:
        return _sweep_once(experiment, configs, root=root, force=force, progress=progress,
                           max_group_size=max_group_size, argv=argv, stream=stream, devices=devices, hook=hook,
                           sinks=sinks, sweep=sweep)

    return until_settled(once, experiment, configs, root, force=force, wait=wait, progress=progress, stream=stream,
                         poll_s=poll_s)


def until_settled(sweep, experiment: Experiment, configs, root, *, force: bool = False, wait: bool,
                  progress: bool = True, stream=None, poll_s: float = 0.5) -> SweepReport:
    """``sweep(force)`` (one pass of a sweep, local or launched), then, with ``wait``, while it
    reports runs busy elsewhere: :func:`wait_for_runs` on them and ``sweep(False)`` (what the
    others finished meanwhile is fresh: ``force`` applies to the first pass only). Returns the
    last pass's report with every pass's computed runs and resumed groups."""
    report = sweep(force)
    computed, resumed = dict(report.computed), dict(report.resumed)
    runs = {run.run_id: run for run in make_runs(experiment, configs)}
    while wait and report.busy:
        waited = [runs.get(rid) or stored_run(root, experiment, rid) for rid in dict.fromkeys(report.busy)]
        wait_for_runs(root, waited, progress=Progress(1, len(waited), stream=stream, enabled=progress),
                      poll_s=poll_s)
        report = sweep(False)
        computed.update(report.computed)
        resumed.update(report.resumed)
    return dataclasses.replace(report, computed=computed, resumed=resumed,
                               skipped=tuple(rid for rid in report.skipped if rid not in computed))


def wait_for_runs(root, runs, *, progress=None, poll_s: float = 0.5) -> None:
    """Blocks until no run of ``runs`` (:class:`~jaxlearn.runner.plan.Run`) is being computed by
    another process: each is final, or its claim is free (the process that held it ended
    without finishing it: the next sweep resumes it). Polls every ``poll_s`` seconds;
    ``progress`` (a :class:`~jaxlearn.runner.progress.Progress`) shows their committed steps."""
    root, runs = pathlib.Path(root), list(runs)
    shown = _done_steps(root, runs)
    if progress is not None:
        progress.start(runs, sum(_total_steps(r) for r in runs), shown,
                       label=f"waiting for {len(runs)} runs running elsewhere")
    pending = runs
    while True:
        pending = [run for run in pending if not _settled(root, run)]
        done = _done_steps(root, runs)
        if progress is not None and done > shown:
            progress.update(done - shown, {}, runs_done=len(runs) - len(pending))
        shown = max(shown, done)
        if not pending:
            break
        time.sleep(poll_s)
    if progress is not None:
        progress.close()


def _settled(root, run: Run) -> bool:
    if is_final(run.dir(root)):
        return True
    claim = store.RunClaim.try_acquire(run.dir(root))
    if claim is None:
        return False
    claim.release()
    return True


def _total_steps(run: Run) -> int:
    return int(getattr(run.config, "num_steps", 1))


def _done_steps(root, runs) -> int:
    """Steps the runs have committed: all of a final run's, else its group's last commit."""
    done = 0
    for run in runs:
        status = read_status(run.dir(root)) or {}
        if status.get("status") in FINAL_STATUSES:
            done += _total_steps(run)
        elif status.get("group"):
            committed = group_dir(root, status["group"]) / "committed.json"
            with contextlib.suppress(FileNotFoundError):  # the group finished and was removed meanwhile
                done += int(store.read_json(committed)["step"])
    return done


def _sweep_once(experiment: Experiment, configs, *, root, force, progress, max_group_size, argv, stream,
                devices, hook, sinks, sweep) -> SweepReport:
    multi, writer = distributed.is_multiprocess(), distributed.is_writer()
    root = pathlib.Path(root)
    if writer:
        root.mkdir(parents=True, exist_ok=True)
    runs = make_runs(experiment, configs)
    plan = plan_runs(experiment, runs, root, force=force, max_group_size=max_group_size) if writer else None
    if multi:
        sent = distributed.broadcast_json(None if plan is None else plan_to_json(plan))
        plan = plan_from_json(experiment, sent, runs, root)
    bar = Progress(len(plan.groups), sum(len(g.runs) for g in plan.groups), stream=stream, enabled=progress and writer)
    computed, busy = {}, []
    with store.Index(root) if writer else contextlib.nullcontext() as index:
        for i, group in enumerate(plan.groups):
            # compiled in the background (a speed-up only): this group's first segment while it
            # initialises, then the next groups' programs while this one trains
            compile_ahead(group, root, init=False, devices=devices, force=force)
            for later in plan.groups[i + 1:i + 1 + _COMPILE_AHEAD]:
                compile_ahead(later, root, devices=devices, force=force)
            done, taken = compute_group(group, root, index, force=force, progress=bar, argv=argv, devices=devices,
                                        hook=hook, sinks=sinks, sweep=sweep)
            computed.update(done)
            busy.extend(taken)
    if multi:  # sent once process 0 has written everything: every process returns after that
        final = distributed.broadcast_json({"computed": computed, "busy": busy} if writer else None)
        computed, busy = final["computed"], final["busy"]
    return SweepReport(experiment.name, tuple(r.run_id for r in runs), computed,
                       tuple(r.run_id for r in plan.done), tuple(busy))


def compute_group(group: Group, root, index, *, force: bool = False, progress=None, argv=None,
                  devices: int | None = None, hook=None, sinks=None, sweep: str | None = None) -> tuple[dict, list]:
    """Claims ``group``'s runs and computes (or resumes) the ones it could claim; returns
    ``({run_id: final status}, [run ids claimed by another process])``.

    The unit of work of :func:`run_sweep` and of the cluster launchers
    (:mod:`jaxlearn.runner.launch`): claims are taken and released here, in the process that
    computes, so a process that dies (even by SIGKILL) frees its runs for a retry.

    Several processes: every process calls it with the same group; process 0 alone takes the
    claims, decides the members and sends them to the others (``index`` is used by process 0
    only and may be ``None`` elsewhere); all of them compute the group together.

    ``sinks`` and ``sweep``: the live tracking sinks and the sweep id, as for
    :func:`jaxlearn.runner.execute.run_group`.
    """
    experiment = group.experiment
    writer = distributed.is_writer()
    claims, members, busy = [], [], []
    # An interrupted group resumes whole: its finished members are recomputed (not
    # rewritten) so the program, and hence every result, is the one it started with.
    resuming = writer and not force and (group_dir(root, group.group_id) / "members.json").exists()
    try:
        for run in group.runs if writer else ():
            claim = store.RunClaim.try_acquire(run.dir(root))
            if claim is None:
                busy.append(run.run_id)
                continue
            claims.append(claim)
            if not resuming and not force and is_final(run.dir(root)):
                continue  # finished by another process since planning
            members.append(run)
        if resuming and len(members) != len(group.runs):
            members = []
        if distributed.is_multiprocess():  # process 0 claimed: every process computes its members
            shared = distributed.broadcast_json({"members": [r.run_id for r in members], "busy": busy}
                                                if writer else None)
            by_id = {run.run_id: run for run in group.runs}
            members, busy = [by_id[rid] for rid in shared["members"]], shared["busy"]
        if not members:
            return {}, busy
        if len(members) != len(group.runs):
            group = Group(experiment, tuple(members))
        if force and writer:
            for run in group.runs:
                clear_run(run.dir(root))
            if group_dir(root, group.group_id).exists():
                shutil.rmtree(group_dir(root, group.group_id))
        try:
            return run_group(group, root, index, progress=progress, argv=argv, devices=devices, hook=hook,
                             sinks=sinks, sweep=sweep), busy
        except BaseException as err:
            for run in group.runs if writer else ():
                record = read_status(run.dir(root))
                if record is not None and record.get("status") == "running":
                    path = run.dir(root) / "status.json"
                    record.update(status="failed", error=f"{type(err).__name__}: {err}"[:500], updated=store.now_iso())
                    store.atomic_write_json(path, record)
                    index.upsert(run.dir(root))
            raise
    finally:
        for claim in claims:
            claim.release()
