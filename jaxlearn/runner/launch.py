"""Cluster launchers: a sweep's groups dispatched as Ray tasks or SLURM jobs (submitit), all
writing to one shared run store.

``jaxlearn run CONFIG --launcher ray`` (or ``slurm``) plans the sweep exactly as a local run does
(finished runs are skipped, interrupted groups keep their members) and sends each group to a
worker as a :class:`GroupTask`: plain data (the experiment's name, the members' configs as JSON
values, the run root, the device cap), not Python objects. A worker imports the experiment
itself, rebuilds the group, checks that the run ids it computes match the driver's (the same code
on both sides) and calls :func:`jaxlearn.runner.sweep.compute_group`, which claims the runs,
computes or resumes them and releases the claims. Hence dedup, the atomic run claim and resume
behave exactly as for local runs: a run claimed elsewhere is reported busy, a finished run is
never recomputed, and a group whose worker died resumes from its last committed checkpoint.
An interrupted driver (Ctrl-C) cancels the tasks and jobs it started; their groups resume from
their last commit when the same command runs again.

Faults. A worker that dies mid-group (killed, out of memory, node lost) releases its claims (they
are ``flock`` locks, freed by the kernel) and leaves the group's last commit on disk; the launcher
runs the task again, up to ``retries`` times, and the retry resumes from that commit (Ray: the
task's ``max_retries``, for system failures only; SLURM: the driver resubmits a job that ended
without a result, and a job reaching its time limit or preempted is requeued by submitit through
:meth:`GroupTask.checkpoint`). An exception raised by the experiment itself is not retried: it
would fail again. The launcher waits for every group, then raises :class:`LaunchError` naming the
groups that failed; what finished is in the store.

Transport. Ray and submitit move the task and its result with cloudpickle: that is transport,
not storage. The run store holds only JSON, NPZ and orbax files; submitit's own job folder
(``ROOT/_launch/submitit``, pickled submissions and logs) is deleted for each job that ends.

Both launchers are optional: ``pip install 'jaxlearn[cluster]'`` installs Ray and submitit.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, TextIO

from jaxlearn._checks import check_int
from jaxlearn.runner import config as cfg
from jaxlearn.runner import store
from jaxlearn.runner.execute import env_hook
from jaxlearn.runner.experiment import Experiment, load_experiment
from jaxlearn.runner.plan import Group, group_dir, make_runs, plan_runs
from jaxlearn.runner.sinks import sink_names
from jaxlearn.runner.sweep import (
    SweepReport,
    clear_run,
    compute_group,
    enable_compilation_cache,
    sweep_id,
    until_settled,
)

__all__ = ["LAUNCHERS", "GroupTask", "LaunchError", "check_options", "launch_sweep", "run_task"]

LAUNCHERS = ("ray", "slurm")
LAUNCH_DIR = "_launch"
# ``ray.remote`` options a user may set per group task (``--launcher-opt KEY=VALUE``).
RAY_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources", "accelerator_type")


class LaunchError(RuntimeError):
    """A launcher is missing, misconfigured, or some of its groups failed (one line)."""


@dataclasses.dataclass(frozen=True)
class GroupTask:
    """One group, as plain data a worker can act on anywhere the run root is mounted.

    ``configs`` are the members' configs as JSON values (:func:`jaxlearn.runner.to_dict`),
    ``run_ids`` the ids the driver computed for them, ``search_paths`` where the worker looks for
    the experiment module, ``sinks`` the live tracking sinks the worker opens for the runs (it owns
    them: it writes them) and ``sweep`` the sweep id they are grouped under. Calling the task
    computes the group (:func:`run_task`).
    """

    experiment: str
    search_paths: tuple[str, ...]
    configs: tuple[dict, ...]
    run_ids: tuple[str, ...]
    root: str
    devices: int | None = None
    argv: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ("tensorboard",)
    sweep: str | None = None

    def __call__(self) -> dict:
        return run_task(self)

    def checkpoint(self):
        """submitit's hook on a SLURM time limit or preemption: requeue the same task, which
        resumes from the group's last committed checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def run_task(task: GroupTask) -> dict:
    """Computes one :class:`GroupTask` in this process; returns ``{"group", "computed": {run_id:
    status}, "busy": [run ids claimed elsewhere], "resumed_from": step or None, "worker":
    "host:pid"}``. ``resumed_from`` is the committed step the group continued from (None: it
    started afresh). Compiled programs are cached under the run root (as ``jaxlearn run`` does),
    so workers that compute groups with equal static fields compile once between them."""
    experiment = load_experiment(task.experiment, task.search_paths)
    runs = make_runs(experiment, [cfg.parse_config(experiment.config_cls, c) for c in task.configs])
    ids = tuple(r.run_id for r in runs)
    if ids != tuple(task.run_ids):
        raise LaunchError(f"the worker's {task.experiment} computes other run ids than the driver's "
                          f"({ids[0][:8]} != {task.run_ids[0][:8]}): run the same code version on both")
    group = Group(experiment, tuple(runs))
    enable_compilation_cache(task.root)  # workers share compiled programs through the run root
    committed = group_dir(task.root, group.group_id) / "committed.json"
    resumed = store.read_json(committed)["step"] if committed.exists() else None
    with store.Index(task.root) as index:
        computed, busy = compute_group(group, task.root, index, progress=None, argv=list(task.argv) or None,
                                       devices=task.devices, hook=env_hook(), sinks=task.sinks, sweep=task.sweep)
    return {"group": group.group_id, "computed": computed, "busy": list(busy),
            "resumed_from": resumed if computed else None,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def _search_paths(experiment: Experiment) -> tuple[str, ...]:
    """The directory that holds the experiment module's top-level package (so a worker imports
    the same file), e.g. the repository root for ``experiments.population_digits``."""
    file = getattr(experiment.module, "__file__", None)
    if file is None:
        return ()
    depth = experiment.module.__name__.count(".")
    return (str(pathlib.Path(file).resolve().parents[depth]),)


def _clear_for_force(group: Group, root) -> list[str]:
    """``force``: the driver clears the group's runs (under their claims) before dispatching, so
    a retried task resumes instead of clearing again. Returns the run ids claimed elsewhere."""
    busy = []
    for run in group.runs:
        claim = store.RunClaim.try_acquire(run.dir(root))
        if claim is None:
            busy.append(run.run_id)
            continue
        with claim:
            clear_run(run.dir(root))
    if not busy and group_dir(root, group.group_id).exists():  # a busy member's group is in use
        shutil.rmtree(group_dir(root, group.group_id))
    return busy


def check_options(launcher: str, options: dict) -> dict:
    """``options`` checked for ``launcher``: Ray task options must be among :data:`RAY_OPTIONS`
    (submitit checks its own parameters when the executor is made)."""
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise cfg.ConfigError(f"launcher options: expected a dict of str keys, got {options!r}")
    if launcher == "ray":
        unknown = sorted(set(options) - set(RAY_OPTIONS))
        if unknown:
            raise cfg.ConfigError(f"--launcher-opt {unknown[0]}: not a Ray task option; expected one of "
                                  f"{', '.join(RAY_OPTIONS)}")
    return dict(options)


def _import(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise LaunchError(f"--launcher {'ray' if name == 'ray' else 'slurm'} needs the {name} package: "
                          "pip install 'jaxlearn[cluster]'") from None


def launch_sweep(experiment: Experiment, configs: Sequence[Any], *, root: str | os.PathLike = "runs",
                 launcher: Literal["ray", "slurm"] = "ray", force: bool = False, max_group_size: int | None = None,
                 argv: Sequence[str] | None = None, devices: int | None = None,
                 address: str | None = None, options: dict | None = None, retries: int = 2,
                 cluster: str = "slurm", stream: TextIO | None = None, poll_s: float = 2.0, wait: bool = False,
                 log: str | Sequence[str] | None = None) -> SweepReport:
    """Computes the runs of ``configs`` that are not finished yet, one launcher task per group.

    ``launcher``: ``"ray"`` (uses the Ray this process already joined with ``ray.init``, else
    attaches to the cluster at ``address`` — ``"auto"`` (the one ``ray start`` last started on this
    machine), ``"host:6379"``, ``"ray://host:10001"`` — or at ``$RAY_ADDRESS``, else starts a new
    local instance) or ``"slurm"``
    (submitit; ``cluster="local"`` runs the jobs as local processes, for tests). ``options`` are
    Ray task options (``num_cpus``, ``num_gpus``, ...) or submitit executor parameters
    (``timeout_min``, ``slurm_partition``, ``gpus_per_node``, ...). A group whose worker dies is
    run again at most ``retries`` times. ``devices`` caps the devices each worker shards a group
    over. Prints one line per finished group to ``stream`` (default stderr). ``wait``: runs
    claimed by other processes are waited for and the sweep launched again until none is busy
    (as :func:`jaxlearn.runner.run_sweep`). ``log``: the live tracking sinks, resolved here (the
    driver's ``$JAXLEARN_LOG``) and opened by each worker for its group's runs (as
    :func:`jaxlearn.runner.run_sweep`).
    """
    if launcher not in LAUNCHERS:
        raise cfg.ConfigError(f"launcher: expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    check_int(retries, "retries", minimum=0, error=cfg.ConfigError)
    options = check_options(launcher, options or {})
    sinks = sink_names(log)
    sweep = sweep_id(experiment.name, [run.run_id for run in make_runs(experiment, configs)])
    module = _import("ray" if launcher == "ray" else "submitit")
    root = pathlib.Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)

    def once(force: bool) -> SweepReport:
        return _launch_once(module, experiment, configs, root=root, launcher=launcher, force=force,
                            max_group_size=max_group_size, argv=argv, devices=devices, address=address,
                            options=options, retries=retries, cluster=cluster, stream=stream, poll_s=poll_s,
                            sinks=sinks, sweep=sweep)

    return until_settled(once, experiment, configs, root, force=force, wait=wait, stream=stream, poll_s=poll_s)


def _launch_once(module, experiment: Experiment, configs, *, root, launcher, force, max_group_size, argv, devices,
                 address, options, retries, cluster, stream, poll_s, sinks, sweep) -> SweepReport:
    runs = make_runs(experiment, configs)
    plan = plan_runs(experiment, runs, root, force=force, max_group_size=max_group_size)
    busy: list[str] = []
    tasks = []
    paths, argv = _search_paths(experiment), tuple(argv or ())
    for group in plan.groups:
        if force:
            taken = _clear_for_force(group, root)
            busy += taken
            members = tuple(r for r in group.runs if r.run_id not in taken)
            if not members:
                continue
            group = Group(experiment, members) if len(members) != len(group.runs) else group
        tasks.append(GroupTask(experiment.name, paths, tuple(cfg.to_dict(r.config) for r in group.runs),
                               tuple(r.run_id for r in group.runs), str(root), devices, argv, sinks, sweep))
    log = _Log(len(tasks), stream)
    dispatch = _dispatch_ray if launcher == "ray" else _dispatch_submitit
    results, failures = dispatch(module, tasks, root=root, options=options, retries=retries, address=address,
                                 cluster=cluster, log=log, poll_s=poll_s) if tasks else ([], [])
    computed, resumed = {}, {}
    for result in results:
        computed.update(result["computed"])
        busy += result["busy"]
        if result["resumed_from"] is not None:
            resumed[result["group"]] = result["resumed_from"]
    if failures:
        first = failures[0]
        raise LaunchError(f"{len(failures)} of {len(tasks)} groups failed; group of {first[0].run_ids[0][:8]}...: "
                          f"{first[1]}")
    return SweepReport(experiment.name, tuple(r.run_id for r in runs), computed,
                       tuple(r.run_id for r in plan.done), tuple(busy), resumed)


class _Log:
    """One line per finished group (a launcher's progress), on ``stream``."""

    def __init__(self, total: int, stream):
        self.total, self.done, self.stream = total, 0, stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()

    def __call__(self, task: GroupTask, text: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total} groups, {time.perf_counter() - self.t0:.0f} s] group of "
              f"{len(task.run_ids)} runs ({task.run_ids[0][:8]}...): {text}", file=self.stream, flush=True)


def _describe(result: dict) -> str:
    counts: dict[str, int] = {}
    for status in result["computed"].values():
        counts[status] = counts.get(status, 0) + 1
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to compute"
    if result["busy"]:
        text += f", {len(result['busy'])} running elsewhere"
    if result["resumed_from"] is not None:
        text += f" (resumed from step {result['resumed_from']})"
    return f"{text} on {result['worker']}"


def _dispatch_ray(ray, tasks, *, root, options, retries, address, cluster, log, poll_s):
    started = not ray.is_initialized()
    if started:
        # "local": a new instance, never a stale one recorded by an earlier `ray start` on this machine
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
    try:
        remote = ray.remote(run_task).options(max_retries=retries, retry_exceptions=False,
                                              **{"num_cpus": 1, **options})
        pending = {remote.remote(task): task for task in tasks}
        results, failures = [], []
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=None)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # RayTaskError (the experiment raised) or the retries ran out
                        cause = getattr(err, "cause", None) or err
                        text = str(cause).splitlines()[0] if str(cause) else ""
                        failures.append((task, f"{type(cause).__name__}: {text}"))
                        log(task, f"failed: {failures[-1][1]}")
                        continue
                    results.append(result)
                    log(task, _describe(result))
        except BaseException:  # Ctrl-C or a lost driver: stop the workers (their groups resume later)
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return results, failures
    finally:
        if started:
            ray.shutdown()


def _dispatch_submitit(submitit, tasks, *, root, options, retries, address, cluster, log, poll_s):
    folder = root / LAUNCH_DIR / "submitit"
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        executor.update_parameters(name="jaxlearn", **options)
    except (ValueError, NameError, TypeError, AssertionError, RuntimeError) as err:
        raise LaunchError(f"--launcher slurm: {str(err).splitlines()[0]}") from None
    from submitit.core.utils import FailedJobError, UncompletedJobError

    pending = {}
    results, failures = [], []
    submit = _local_submit(executor) if cluster == "local" else executor.submit
    try:
        for task in tasks:
            pending[submit(task)] = (task, 0)
        while pending:
            done = [job for job in pending if job.done()]
            if not done:
                _wait(poll_s)
                continue
            for job in done:
                task, attempt = pending.pop(job)
                try:
                    result = job.result()
                except FailedJobError as err:  # the experiment raised: a retry would fail again
                    failures.append((task, _job_error(err)))
                    log(task, f"failed: {failures[-1][1]}")
                except UncompletedJobError as err:  # the job died without a result: resume elsewhere
                    if attempt < retries:
                        pending[submit(task)] = (task, attempt + 1)
                    else:
                        failures.append((task, f"no result after {attempt + 1} attempts: {_job_error(err)}"))
                        log(task, f"failed: {failures[-1][1]}")
                else:
                    results.append(result)
                    log(task, _describe(result))
                shutil.rmtree(job.paths.folder, ignore_errors=True)  # the pickled submission and result
    except BaseException:  # Ctrl-C or a lost driver: cancel the jobs (their groups resume later)
        for job in pending:
            job.cancel(check=False)
        # local jobs are this process's children: reap them (a few seconds at most), so that
        # none is left behind
        deadline = time.monotonic() + 10
        while cluster == "local" and time.monotonic() < deadline and not all(job.done() for job in pending):
            time.sleep(0.1)
        for job in pending:
            shutil.rmtree(job.paths.folder, ignore_errors=True)
        raise
    for empty in (folder / "%j", folder, folder.parent):  # left if empty (another launch may share them)
        try:
            empty.rmdir()
        except OSError:
            pass
    return results, failures


def _local_submit(executor):
    """``executor.submit`` for submitit's local executor, whose jobs (a controller process and its
    task) are this process's children and are cancelled by SIGINT. A process started in the
    background of a non-interactive shell (a CI script, ``nohup``) has SIGINT ignored, which its
    children inherit, and such a job would run on when cancelled. While it submits, this process
    has Python's own SIGINT handler instead (reset to the default action in a new program), so its
    jobs can always be cancelled; the disposition it had is restored at once."""

    def submit(task):
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN or threading.current_thread() is not \
                threading.main_thread():
            return executor.submit(task)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return executor.submit(task)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return submit


def _wait(seconds: float) -> None:
    """The driver's pause between two looks at its SLURM jobs."""
    time.sleep(seconds)


def _job_error(err: BaseException) -> str:
    """One line of a submitit error: the exception line of a failed job's trace (submitit puts the
    trace between two dashed rules, then log paths), else the first line."""
    text = str(err)
    parts = text.split("-" * 22 + "\n")
    lines = [line.strip() for line in (parts[1] if len(parts) >= 3 else text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if len(parts) >= 3 else lines[0]
