"""The executor: trains a group of runs as one ``jit(vmap(...))`` program, in segments.

After every segment, in this order: each member's metrics are appended to its
``metrics.jsonl``; states at requested snapshot steps are written; the group checkpoint (orbax)
is written; the commit pointer ``committed.json`` is replaced atomically. A crash at any point
(even ``kill -9``) therefore leaves a consistent last commit: re-running the same command (or
``jaxlearn resume RUN``) restores it, truncates metrics written after it and continues, giving
bit-identical params, optimizer state and metrics to an uninterrupted run (same group, same
devices, CPU).

The rows of a segment go to the members' live tracking sinks (:mod:`jaxlearn.runner.sinks`;
TensorBoard events by default) right after the commit that makes them durable; on resume each
sink starts from the committed rows (TensorBoard's events are rewritten from them), so a crash at
any point leaves no step twice in a sink.

A member whose state or metrics become non-finite is frozen (its state stops changing, its
metrics stop being appended) and marked ``diverged`` with the step of the segment end at which
the divergence was seen; the rest of the group goes on. When the group is done, each member's
final state and status go to its own run directory (its final metrics and status to its sinks)
and the group's checkpoint is deleted.

The member axis is sharded over ``d = min(devices, members)`` local devices (default: all of
them): a 1-D mesh with axis ``"runs"``, member-axis arrays (dynamic values, states, the
``active`` mask, metrics) placed with ``NamedSharding(mesh, P("runs"))`` and the shared data
replicated, so the one ``jit(vmap(...))`` program is partitioned by XLA (GSPMD), each device
computing its members. When ``d`` does not divide the group, the member axis is padded with
copies of the last member, inactive (``active=False``, so never updated, never reported); the
padding is dropped before anything is written, so metrics, snapshots, final states and
checkpoints have the unsharded layout and a group resumes under either placement. ``d = 1`` is
the plain single-device program.

Compilation overlaps the rest: a group's programs are named ``init``, ``segment`` and ``evaluate``
in JAX's compile logs; while the main thread initialises a group, two background threads compile
its first segment and its ``evaluate`` (:func:`compile_ahead`), and :func:`~jaxlearn.runner.run_sweep`
starts compiling the next groups' programs while it computes one. The calls wait for those
compilations and find the programs in JAX's cache: the same programs, so the same results, and
on two cores two programs compile at once (the nine groups of the learning-rules smoke: 19.4 s
→ 14.5 s).

Several processes (``jax.process_count() > 1``, after :func:`jaxlearn.runner.distributed.initialize`):
every process calls :func:`run_group` with the same group (the caller, process 0, decided it), and
the member axis is sharded over the devices of all processes
(:func:`jaxlearn.runner.placement.group_devices`), padded to a multiple of their number. Process 0
reads what decides the computation (which members are already final, the last commit) and
broadcasts it, so every process resumes from the same point; every process computes, gathers
metrics and states to host (collectives) and takes part in each orbax checkpoint save
(:class:`jaxlearn.runner.arrays.CheckpointWriter`: orbax coordinates the processes, process 0
writes the files); only process 0 (:func:`jaxlearn.runner.distributed.is_writer`) writes run files
(run.json, provenance, status, metrics, snapshots, final states, events, the index, members.json,
committed.json) and deletes checkpoints. A checkpoint resumes under any number of processes and
devices. Other processes get ``index=None``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.runner import arrays, store
from jaxlearn.runner import config as cfg
from jaxlearn.runner.distributed import broadcast_json, is_multiprocess, is_writer
from jaxlearn.runner.group_files import GroupFiles
from jaxlearn.runner.placement import Placement, group_devices
from jaxlearn.runner.plan import Group, group_dir, is_final, static_key
from jaxlearn.runner.sinks import sink_names

__all__ = ["run_group", "env_hook", "segment_schedule", "snapshot_steps", "member_template", "KILL_ENV", "PAUSE_ENV",
           "RESUME_ENV"]

# Test hooks (see :func:`env_hook`): environment variables read by the entry points only.
KILL_ENV = "JAXLEARN_TEST_KILL_AT"
PAUSE_ENV = "JAXLEARN_TEST_PAUSE_AT"
RESUME_ENV = "JAXLEARN_TEST_RESUME_FILE"


def snapshot_steps(config) -> tuple[int, ...]:
    """Steps at which member states are kept (the config's optional ``snapshots`` field)."""
    steps = getattr(config, "snapshots", ()) or ()
    return tuple(sorted({int(s) for s in steps if 0 < int(s) <= config.num_steps}))


def segment_schedule(config) -> list[int]:
    """Segment end steps: every ``segment_steps``, every snapshot step, and ``num_steps``."""
    ends = set(range(config.segment_steps, config.num_steps + 1, config.segment_steps))
    ends.update(snapshot_steps(config))
    ends.add(config.num_steps)
    return sorted(ends)


def _dynamic_values(configs) -> dict[str, np.ndarray]:
    """One array per dynamic field with a leading member axis."""
    cls = type(configs[0])
    values = {}
    for name in cfg.dynamic_fields(cls):
        column = [getattr(c, name) for c in configs]
        if all(isinstance(v, bool) for v in column):
            values[name] = np.asarray(column, bool)
        elif all(isinstance(v, int) for v in column):
            values[name] = np.asarray(column, np.int32)
        else:
            values[name] = np.asarray(column, jnp.result_type(float))
    return values


def _member_config(config, dynamic: dict, **static):
    """``config`` with a member's (traced) dynamic values; ``static``: values every member shares,
    as Python values (``shared_constant`` fields, the segment length), taking precedence."""
    return dataclasses.replace(config, **{**dynamic, **static})


def _group_constants(group: Group) -> dict:
    """The ``shared_constant`` dynamic fields (:func:`jaxlearn.runner.dynamic`) whose value is the same
    for every member of ``group``: they reach the group's programs as Python constants."""
    configs = [run.config for run in group.runs]
    constants = {}
    for name in cfg.shared_constant_fields(type(configs[0])):
        values = {getattr(c, name) for c in configs}
        if len(values) == 1:
            constants[name] = values.pop()
    return constants


def _member_key(config):
    return jax.random.key(getattr(config, "seed", 0))


def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(arrays.keys_to_data(tree)) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def _call(fn, experiment, *args, data):
    return fn(*args, data) if experiment.has_data else fn(*args)


def _init_fn(experiment, config, constants=None):
    """Group init: ``dynamic`` (arrays with a member axis) -> states with a member axis."""

    def init(dyn):  # (the names of these functions name the programs in JAX's compile logs)
        member_config = _member_config(config, dyn, **(constants or {}))
        return experiment.module.init(member_config, _member_key(member_config))

    return jax.vmap(init)


def member_template(experiment, config):
    """The abstract state of one member (shapes, dtypes, key leaves), computed without running
    anything, exactly as the runner builds it (dynamic fields traced)."""
    group = jax.eval_shape(_init_fn(experiment, config), _dynamic_values([config]))
    return jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype), group)


class _Programs:
    """A group's jitted programs: init, one advance per distinct segment length, evaluate, run.

    They depend only on the experiment, the static fields and ``constants`` (the group's shared
    ``shared_constant`` values, :func:`_group_constants`; dynamic values and data are arguments),
    so groups with equal static fields and constants share one instance and its compilations;
    :func:`_programs` keeps a few recent ones (a memo, like JAX's own jit cache).
    """

    def __init__(self, group: Group, constants: dict):
        self.group = group
        self.experiment = group.experiment
        self._advance = {}
        self.constants = constants
        self._init = jax.jit(_init_fn(self.experiment, group.config, self.constants))
        self._evaluate = self._run = None
        self._pending = {}  # program name -> Future of its compilation in the background

    def init(self, dynamic):
        self._wait("init")
        return self._init(dynamic)

    def _config(self, dyn, **static):
        """A member's config inside a program: its traced dynamic values, the group's constants and
        ``static`` (:func:`_member_config`)."""
        return _member_config(self.group.config, dyn, **self.constants, **static)

    def template(self, dynamic):
        return jax.eval_shape(_init_fn(self.experiment, self.group.config, self.constants), dynamic)

    def advance(self, length: int):
        self._wait(("advance", length))
        return self._advance_program(length)

    def _advance_program(self, length: int):
        if length not in self._advance:
            module, experiment = self.experiment.module, self.experiment

            def member(state, dyn, data):
                config = self._config(dyn, segment_steps=length)
                return _call(module.segment, experiment, state, config, data=data)

            def segment(states, dynamic, active, data):
                new, metrics = jax.vmap(member, in_axes=(0, 0, None))(states, dynamic, data)
                finite = jax.vmap(lambda s, m: _all_finite((s, m)))(new, metrics)
                ok = active & finite

                def keep(n, o):
                    return jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o)

                return jax.tree.map(keep, new, states), metrics, ok

            self._advance[length] = jax.jit(segment)
        return self._advance[length]

    def compile_ahead(self, placement: Placement, dynamic, data, step: int, *, init: bool) -> None:
        """Starts compiling, in the background, the programs a group placed by ``placement``
        with ``dynamic`` (host values) and ``data`` (host) calls from ``step``: its ``init``
        (with ``init``, for a group not started yet), the advance of its first segment and its
        ``evaluate``. The calls themselves wait for these compilations and then find the programs in
        JAX's cache, so a process compiles while it traces, initialises or trains something else
        (two cores compile two programs at once). Only a speed-up: a compilation that fails or
        does not match the later call (other members claimed, another placement) leaves the call
        to compile (and to raise) as it would have."""
        later = [end for end in segment_schedule(self.group.config) if end > step]
        dyn, data = placement.put(dynamic), placement.replicate(data)
        if init and step == 0:
            self._submit("init", self._init, dyn)
        states = jax.eval_shape(self._init, dyn)
        if placement.count > 1:
            states = jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=placement.sharding), states)
        if later:
            length = later[0] - step
            self._submit(("advance", length), self._advance_program(length), states, dyn,
                         placement.mask(np.ones(placement.members, bool)), data)
        if self._evaluate_program() is not None:
            self._submit("evaluate", self._evaluate, states, dyn, data)

    def _submit(self, name, program, *args) -> None:
        if name not in self._pending:
            self._pending[name] = _compiler().submit(_compile, program, args)

    def _wait(self, name) -> None:
        pending = self._pending.pop(name, None)
        if pending is not None:
            pending.result()

    def evaluate(self, states, dynamic, data):
        program = self._evaluate_program()
        if program is None:
            return {}
        self._wait("evaluate")
        return program(states, dynamic, data)

    def _evaluate_program(self):
        fn = self.experiment.hook("evaluate")
        if fn is not None and self._evaluate is None:
            def evaluate(state, dyn, data):
                return _call(fn, self.experiment, state, self._config(dyn), data=data)

            self._evaluate = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None)))
        return self._evaluate

    def run(self, dynamic, data):
        if self._run is None:
            fn = self.experiment.module.run

            def run(dyn, data):
                return _call(fn, self.experiment, self._config(dyn), data=data)

            self._run = jax.jit(jax.vmap(run, in_axes=(0, None)))
        return self._run(dynamic, data)


_PROGRAMS: dict = {}
_PROGRAMS_KEPT = 8
_COMPILER: list = []  # the background compiler's executor, made on first use


def _compiler() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that compile programs ahead of their first call (:meth:`_Programs.compile_ahead`):
    two, so that two programs compile at once while the main thread traces or trains (XLA's CPU
    compiler is single-threaded per program). An executor's threads are joined at interpreter
    exit, never cut off inside XLA."""
    if not _COMPILER:
        _COMPILER.append(concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="jaxlearn-compile"))
    return _COMPILER[0]


def _compile(program, args) -> None:
    """Compiles ``program`` for ``args`` (arrays or ``ShapeDtypeStruct``s) into JAX's cache. Errors
    are left to the call itself, which compiles again and raises them where they belong."""
    try:
        program.lower(*args).compile()
    except Exception:  # noqa: BLE001 (a speculative compilation; the real call reports)
        pass


def _programs(group: Group) -> _Programs:
    constants = _group_constants(group)
    key = (group.experiment.module.__name__, group.experiment.version, static_key(group.config),
           tuple(sorted(constants.items())))
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= _PROGRAMS_KEPT:
            del _PROGRAMS[next(iter(_PROGRAMS))]
        _PROGRAMS[key] = _Programs(group, constants)
    return _PROGRAMS[key]


def _scalars(metrics: dict, where: str, fetch=jax.device_get) -> dict[str, np.ndarray]:
    """Host copies (made by ``fetch``) of per-member scalar metrics; anything else is an error
    naming the metric."""
    if not isinstance(metrics, dict):
        raise TypeError(f"{where} must return a dict of scalar metrics, got {type(metrics).__name__}")
    host = fetch(metrics)
    for name, value in host.items():
        if np.ndim(value) != 1:
            raise ValueError(f"{where}: metric {name!r} must be a scalar per member, got shape {np.shape(value)[1:]}")
    return host


def run_group(group: Group, root, index, *, progress=None, argv=None, devices: int | None = None,
              hook=None, sinks=None, sweep: str | None = None) -> dict[str, str]:
    """Computes (or resumes) ``group``; returns ``{run_id: final status}``.

    The caller holds the claims of every member. ``progress`` (optional) gets
    ``start(group, total_steps, done_steps)``, ``update(steps, metrics)`` and ``close()``.
    ``devices`` caps the number of local devices the member axis is sharded over (``None``:
    all local devices; ``1``: the single-device program); the group uses
    ``min(devices, len(jax.local_devices()), len(group.runs))``, except that a config with a
    static field ``data_parallel > 1`` (the experiment splits each step's batch over that many
    devices itself) never has its member axis sharded (as with ``devices=1``), so the two kinds
    of sharding never compete for the same devices. Results equal the unsharded
    run's up to the last bits (XLA compiles a per-device program for fewer members, whose
    floating-point reductions may associate differently); checkpoints written under one
    placement resume under any other. ``hook(point, index)`` (tests; default: none) is called
    at the points of segment ``index`` listed in :func:`env_hook`. ``sinks``: the live tracking
    sinks of the members (:func:`jaxlearn.runner.sinks.sink_names`: names, or ``None`` for
    ``$JAXLEARN_LOG`` else TensorBoard), ``sweep`` the sweep id they are grouped under.

    Several processes: every process calls it with the same ``group``; the member axis is
    sharded over ``devices`` local devices of *every* process (``None``: all of them; see
    :func:`jaxlearn.runner.placement.group_devices`); only process 0 writes (``index`` is not
    used elsewhere and may be ``None``); every process returns the same statuses.
    ``data_parallel > 1`` is refused there (``ValueError``).
    """
    hook = hook or _no_hook
    names = sink_names(sinks)
    placement = _placement(group, devices)
    writable, committed = _resume_point(group, root)
    files = GroupFiles(group, root, index, writable, enabled=is_writer(), sinks=names, sweep=sweep)
    try:
        return _compute(group, files, committed, placement, progress, argv, hook)
    except BaseException as err:
        files.abandon("interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
        raise


def _compute(group: Group, files: GroupFiles, committed, placement: Placement, progress, argv, hook):
    """:func:`run_group` once its files and resume point are known."""
    files.start(argv)
    experiment = group.experiment
    data, programs, dynamic = _group_data(group), _programs(group), _dynamic_values([r.config for r in group.runs])
    files.record_members()
    if not experiment.trains:
        return _run_study(group, programs, dynamic, data, files, progress, placement)
    if not placement.spans_processes:  # the first segment compiles while init compiles and runs
        programs.compile_ahead(placement, dynamic, data, 0 if committed is None else committed["step"], init=False)
    run = _restore(programs, placement, dynamic, committed, files.dir)
    files.restart_at(committed)
    dynamic, data = placement.put(dynamic), placement.replicate(data)
    if progress is not None:
        progress.start(group, group.config.num_steps, run.step)
    run = _train_segments(run, programs, placement, dynamic, data, files, progress, hook)
    return _finish_members(group, run, programs, placement, dynamic, data, files, progress, hook)


def compile_ahead(group: Group, root, *, init: bool = True, devices: int | None = None, force: bool = False) -> None:
    """Starts compiling ``group``'s first programs in the background, as :func:`run_group` will
    place them for all of ``group``'s runs (:meth:`_Programs.compile_ahead`): the advance of its
    first segment from its last commit in ``root`` (from step 0 with ``force``), and with
    ``init`` its initialisation, for a group not started. A sweep calls it for the next group
    while it computes this one. Nothing happens in a job of several processes, or for an
    experiment without training."""
    experiment = group.experiment
    if not experiment.trains or is_multiprocess():
        return
    try:  # a group whose data or init fails raises when it is computed, in its place (its runs marked failed)
        committed = group_dir(root, group.group_id) / "committed.json"
        step = int(store.read_json(committed)["step"]) if committed.exists() and not force else 0
        _programs(group).compile_ahead(_placement(group, devices), _dynamic_values([r.config for r in group.runs]),
                                       _group_data(group), step, init=init)
    except Exception:  # noqa: BLE001
        return


def _placement(group: Group, devices) -> Placement:
    """Where :func:`run_group` puts ``group``'s member axis (``devices``: its cap)."""
    return Placement(group_devices(_member_devices(group, devices), len(group.runs)), len(group.runs))


def _group_data(group: Group):
    """The data shared by ``group``'s members (``None`` for an experiment without data)."""
    return group.experiment.module.data(group.config) if group.experiment.has_data else None


def _no_hook(point: str, index: int) -> None:
    return None


def env_hook():
    """The test hook named by the environment, for :func:`run_group` (``None`` when unset):
    ``"POINT:INDEX"`` in ``JAXLEARN_TEST_KILL_AT`` makes the process SIGKILL itself at that point
    of segment INDEX; in ``JAXLEARN_TEST_PAUSE_AT`` it makes the process wait there until the
    file named by ``JAXLEARN_TEST_RESUME_FILE`` exists (forever without it), still holding its
    claims and interruptible (SIGINT raises KeyboardInterrupt as anywhere else), so that a test
    acts on a group mid-flight without racing it. Points: ``before_segment``, ``after_metrics``,
    ``mid_checkpoint``, ``after_commit``, ``mid_split``. Read by the entry points that start a
    group in a process a test cannot reach otherwise (``jaxlearn run``/``resume``, a launcher's
    worker)."""
    kill, pause, resume = (os.environ.get(name) for name in (KILL_ENV, PAUSE_ENV, RESUME_ENV))
    if not (kill or pause):
        return None

    def hook(point: str, index: int) -> None:
        at = f"{point}:{index}"
        if at == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if at == pause:
            while not (resume and os.path.exists(resume)):
                time.sleep(0.01)  # a wait on a condition (the file), not on a duration

    return hook


def _member_devices(group: Group, devices):
    """The device cap of the member axis: ``devices``, or 1 where the experiment splits each
    step's batch over the devices itself (``data_parallel > 1``, one process only)."""
    if getattr(group.config, "data_parallel", 1) > 1:
        if is_multiprocess():
            raise ValueError(f"data_parallel={group.config.data_parallel}: expected 1 in a job of "
                             f"{jax.process_count()} processes (a step's batch is split over local devices only)")
        return 1
    return devices


class _Training(NamedTuple):
    """A trained group between segments: member states (device arrays with the padded member
    axis), ``active`` and ``diverged_step`` (host, one per real member: -1 while finite), the
    index of the next segment, its start ``step`` and the last commit (``None`` before one)."""

    states: object
    active: np.ndarray
    diverged_step: np.ndarray
    segment: int
    step: int
    committed: dict | None


def _checkpoint_template(programs: _Programs, dynamic, members: int) -> dict:
    return {"states": programs.template(dynamic), "active": jax.ShapeDtypeStruct((members,), bool),
            "diverged_step": jax.ShapeDtypeStruct((members,), np.int32)}


def _restore(programs: _Programs, placement: Placement, dynamic, committed, gdir) -> _Training:
    """The group at its last commit (from its checkpoint in ``gdir``), or initialised when it
    has none. ``dynamic``: host values (the checkpoint has no padding)."""
    members = placement.members
    if committed is None:
        states = programs.init(placement.put(dynamic))
        states = states if placement.count == 1 else jax.device_put(states, placement.sharding)
        return _Training(states, np.ones(members, bool), np.full(members, -1, np.int32), 0, 0, None)
    template = {"states": programs.template(dynamic), "active": jax.ShapeDtypeStruct((members,), bool),
                "diverged_step": jax.ShapeDtypeStruct((members,), np.int32)}
    saved = arrays.load_checkpoint(gdir / committed["checkpoint"], template)
    return _Training(placement.put(saved["states"]), np.asarray(saved["active"]), np.asarray(saved["diverged_step"]),
                     committed["segment"] + 1, committed["step"], committed)


def _train_segments(run: _Training, programs: _Programs, placement: Placement, dynamic, data, files: GroupFiles,
                    progress, hook) -> _Training:
    """The remaining segments. The checkpoint of segment i is written in the background while
    segment i + 1 computes, and committed (pointer replaced atomically) once complete; metrics
    appended after the last commit are truncated on resume, so the overlap never exposes an
    uncommitted state."""
    ends = segment_schedule(programs.group.config)
    keep = set(snapshot_steps(programs.group.config))
    with arrays.CheckpointWriter() as checkpoints:
        pending = None
        for i in range(run.segment, len(ends)):
            before = run.step
            run, metrics = _segment(run, i, ends[i], programs, placement, dynamic, data, files, hook)
            host = placement.host(run.states)
            if run.step in keep:
                files.snapshot(run.step, host, run.active)
            if pending is not None:
                run = _commit(run, pending, checkpoints, files, hook)
            pending = _start_checkpoint(run, i, host, checkpoints, files)
            hook("mid_checkpoint", i)
            if progress is not None:
                progress.update(run.step - before,
                                {k: v[run.active] for k, v in metrics.items()} if run.active.any() else {})
        if pending is not None:
            run = _commit(run, pending, checkpoints, files, hook)
    return run


def _segment(run: _Training, index: int, end: int, programs: _Programs, placement: Placement, dynamic, data,
             files: GroupFiles, hook) -> tuple[_Training, dict]:
    """Segment ``index`` (to step ``end``) of every active member; their metrics appended. A
    member whose state or metrics are not finite is frozen and its ``diverged_step`` set."""
    hook("before_segment", index)
    advance = programs.advance(end - run.step)
    states, metrics, ok = advance(run.states, dynamic, placement.mask(run.active), data)
    metrics = _scalars(metrics, f"{programs.experiment.name}.segment", placement.fetch)
    ok = placement.fetch(ok)
    files.append_metrics(end, metrics, run.active)
    diverged_step = np.where(run.active & ~ok, end, run.diverged_step).astype(np.int32)
    hook("after_metrics", index)
    return run._replace(states=states, active=ok, diverged_step=diverged_step, segment=index + 1, step=end), metrics


def _start_checkpoint(run: _Training, index: int, host, checkpoints, files: GroupFiles) -> dict:
    """Starts writing segment ``index``'s checkpoint (every process takes part); returns the
    commit record that points at it."""
    name = f"{index:06d}"
    checkpoints.start(files.dir / "ckpt" / name, {"states": host, "active": run.active,
                                                  "diverged_step": run.diverged_step})
    return {"segment": index, "step": run.step, "checkpoint": f"ckpt/{name}"}


def _commit(run: _Training, record: dict, checkpoints, files: GroupFiles, hook) -> _Training:
    """Once ``record``'s checkpoint is complete: the commit pointer replaced by it."""
    checkpoints.wait()
    files.commit(record, run.committed)
    hook("after_commit", record["segment"])
    return run._replace(committed=record)


def _finish_members(group: Group, run: _Training, programs: _Programs, placement: Placement, dynamic, data,
                    files: GroupFiles, progress, hook) -> dict[str, str]:
    """Every member's final metrics (the experiment's ``evaluate``), state and status, then the
    group's directory removed. Members that were final before the group started keep theirs."""
    final = _scalars(programs.evaluate(run.states, dynamic, data), f"{group.experiment.name}.evaluate",
                     placement.fetch)
    states = placement.host(run.states)
    statuses = {}
    for m, member in enumerate(group.runs):
        if m == len(group.runs) // 2:
            hook("mid_split", run.segment - 1)
        if not files.writable[m]:
            statuses[member.run_id] = store.read_json(member.dir(files.root) / "status.json")["status"]
            continue
        diverged = int(run.diverged_step[m]) if run.diverged_step[m] >= 0 else None
        statuses[member.run_id] = status = "finished" if diverged is None else "diverged"
        files.finish_member(m, status, final, states=states, step=run.step, diverged_step=diverged)
    files.close()
    if progress is not None:
        progress.close()
    return statuses


def _resume_point(group: Group, root) -> tuple[np.ndarray, dict | None]:
    """Which members may be written (not final: members split before a crash, only possible
    after the last segment, are never rewritten) and the group's last commit (or None), as read
    by process 0 and broadcast, so that every process resumes from the same point."""
    found = None
    if is_writer():
        committed_file = group_dir(root, group.group_id) / "committed.json"
        committed = store.read_json(committed_file) if committed_file.exists() else None
        found = {"writable": [not is_final(run.dir(root)) for run in group.runs], "committed": committed}
    found = broadcast_json(found)
    return np.array(found["writable"], bool), found["committed"]


def _run_study(group: Group, programs: _Programs, dynamic, data, files: GroupFiles, progress,
               placement: Placement) -> dict[str, str]:
    """Experiments without training: one vmapped ``run`` call, scalar results as final metrics,
    array results in ``outputs.npz``."""
    if progress is not None:
        progress.start(group, 1, 0)
    out = programs.run(placement.put(dynamic), placement.replicate(data))
    if not isinstance(out, dict):
        raise TypeError(f"{group.experiment.name}.run must return a dict, got {type(out).__name__}")
    host = placement.fetch(out)
    scalars = {k: v for k, v in host.items() if np.ndim(v) == 1}
    statuses = {}
    for m, run in enumerate(group.runs):
        member = {k: v[m] for k, v in host.items()}
        finite = all(np.all(np.isfinite(v)) for v in jax.tree.leaves(member)
                     if np.issubdtype(np.asarray(v).dtype, np.inexact))
        statuses[run.run_id] = status = "finished" if finite else "diverged"
        files.save_outputs(m, {k: v for k, v in member.items() if k not in scalars})
        files.finish_member(m, status, scalars)
    files.close()
    if progress is not None:
        progress.update(1, {})
        progress.close()
    return statuses
