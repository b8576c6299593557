"""The executor: trains a group of runs as one ``jit(vmap(...))`` program, in segments.

After every segment, in this order: each member's metrics are appended to its
``metrics.jsonl``; states at requested snapshot steps are written; the group checkpoint (orbax)
is written; the commit pointer ``committed.json`` is replaced atomically. A crash at any point
(even ``kill -9``) therefore leaves a consistent last commit: re-running the same command (or
``jaxlearn resume RUN``) restores it, truncates metrics written after it and continues, giving
bit-identical params, optimizer state and metrics to an uninterrupted run (same group, same
devices, CPU).

A member whose state or metrics become non-finite is frozen (its state stops changing, its
metrics stop being appended) and marked ``diverged`` with the step of the segment end at which
the divergence was seen; the rest of the group goes on. When the group is done, each member's
final state, TensorBoard events and status go to its own run directory and the group's
checkpoint is deleted.

The member axis is sharded over ``d = min(devices, members)`` local devices (default: all of
them): a 1-D mesh with axis ``"runs"``, member-axis arrays (dynamic values, states, the
``active`` mask, metrics) placed with ``NamedSharding(mesh, P("runs"))`` and the shared data
replicated, so the one ``jit(vmap(...))`` program is partitioned by XLA (GSPMD), each device
computing its members. When ``d`` does not divide the group, the member axis is padded with
copies of the last member, inactive (``active=False``, so never updated, never reported); the
padding is dropped before anything is written, so metrics, snapshots, final states and
checkpoints have the unsharded layout and a group resumes under either placement. ``d = 1`` is
the plain single-device program.

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

import dataclasses
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn.runner import arrays, store
from jaxlearn.runner.distributed import broadcast_json, is_multiprocess, is_writer
from jaxlearn.runner.placement import Placement, group_devices
from jaxlearn.runner import config as cfg
from jaxlearn.runner.plan import Group, group_dir, is_final, static_key

__all__ = ["run_group", "segment_schedule", "snapshot_steps", "member_template", "KILL_ENV", "PAUSE_ENV", "RESUME_ENV"]

# Test hooks, so that a test acts on a group mid-flight without racing it. "POINT:INDEX" in
# KILL_ENV makes the process SIGKILL itself at that point of segment INDEX; in PAUSE_ENV it makes
# the process wait there until the file named by RESUME_ENV exists (forever without it), still
# holding its claims and interruptible (SIGINT raises KeyboardInterrupt as anywhere else).
# Points: before_segment, after_metrics, mid_checkpoint, after_commit, mid_split.
KILL_ENV = "JAXLEARN_TEST_KILL_AT"
PAUSE_ENV = "JAXLEARN_TEST_PAUSE_AT"
RESUME_ENV = "JAXLEARN_TEST_RESUME_FILE"


def _test_hook(point: str, index: int) -> None:
    at = f"{point}:{index}"
    if os.environ.get(KILL_ENV) == at:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == at:
        resume = os.environ.get(RESUME_ENV)
        while not (resume and os.path.exists(resume)):
            time.sleep(0.01)  # a wait on a condition (the file), not on a duration


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
    return dataclasses.replace(config, **dynamic, **static)


def _member_key(config):
    return jax.random.key(getattr(config, "seed", 0))


def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(arrays.keys_to_data(tree)) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def _call(fn, experiment, *args, data):
    return fn(*args, data) if experiment.has_data else fn(*args)


def _init_fn(experiment, config):
    """Group init: ``dynamic`` (arrays with a member axis) -> states with a member axis."""

    def member(dyn):
        member_config = _member_config(config, dyn)
        return experiment.module.init(member_config, _member_key(member_config))

    return jax.vmap(member)


def member_template(experiment, config):
    """The abstract state of one member (shapes, dtypes, key leaves), computed without running
    anything, exactly as the runner builds it (dynamic fields traced)."""
    group = jax.eval_shape(_init_fn(experiment, config), _dynamic_values([config]))
    return jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape[1:], t.dtype), group)


class _Programs:
    """A group's jitted programs: init, one advance per distinct segment length, evaluate, run.

    They depend only on the experiment and the static fields (dynamic values and data are
    arguments), so groups with equal static fields share one instance and its compilations;
    :func:`_programs` keeps a few recent ones (a memo, like JAX's own jit cache).
    """

    def __init__(self, group: Group):
        self.group = group
        self.experiment = group.experiment
        self._advance = {}
        self._init = jax.jit(_init_fn(self.experiment, group.config))
        self._evaluate = self._run = None

    def init(self, dynamic):
        return self._init(dynamic)

    def template(self, dynamic):
        return jax.eval_shape(_init_fn(self.experiment, self.group.config), dynamic)

    def advance(self, length: int):
        if length not in self._advance:
            module, experiment = self.experiment.module, self.experiment

            def member(state, dyn, data):
                config = _member_config(self.group.config, dyn, segment_steps=length)
                return _call(module.segment, experiment, state, config, data=data)

            def group(states, dynamic, active, data):
                new, metrics = jax.vmap(member, in_axes=(0, 0, None))(states, dynamic, data)
                finite = jax.vmap(lambda s, m: _all_finite((s, m)))(new, metrics)
                ok = active & finite

                def keep(n, o):
                    return jnp.where(ok.reshape(ok.shape + (1,) * (n.ndim - 1)), n, o)

                return jax.tree.map(keep, new, states), metrics, ok

            self._advance[length] = jax.jit(group)
        return self._advance[length]

    def evaluate(self, states, dynamic, data):
        fn = self.experiment.hook("evaluate")
        if fn is None:
            return {}
        if self._evaluate is None:
            def member(state, dyn, data):
                return _call(fn, self.experiment, state, _member_config(self.group.config, dyn), data=data)

            self._evaluate = jax.jit(jax.vmap(member, in_axes=(0, 0, None)))
        return self._evaluate(states, dynamic, data)

    def run(self, dynamic, data):
        if self._run is None:
            fn = self.experiment.module.run

            def member(dyn, data):
                return _call(fn, self.experiment, _member_config(self.group.config, dyn), data=data)

            self._run = jax.jit(jax.vmap(member, in_axes=(0, None)))
        return self._run(dynamic, data)


_PROGRAMS: dict = {}
_PROGRAMS_KEPT = 8


def _programs(group: Group) -> _Programs:
    key = (group.experiment.module.__name__, group.experiment.version, static_key(group.config))
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= _PROGRAMS_KEPT:
            del _PROGRAMS[next(iter(_PROGRAMS))]
        _PROGRAMS[key] = _Programs(group)
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


def _row(step: int, metrics: dict, i: int) -> dict:
    row = {"step": int(step)}
    for name, value in metrics.items():
        v = value[i]
        row[name] = bool(v) if v.dtype == bool else int(v) if np.issubdtype(v.dtype, np.integer) else float(v)
    return row


def _write_status(path, status: str, **fields) -> None:
    record = store.read_json(path / "status.json") if (path / "status.json").exists() else {"started": store.now_iso()}
    record.update({"status": status, "updated": store.now_iso(), **fields})
    record.setdefault("step", 0)
    record.setdefault("diverged_step", None)
    record.setdefault("final_metrics", {})
    record.setdefault("error", None)
    store.atomic_write_json(path / "status.json", record)


def _prepare(group: Group, root, index, argv, writable) -> None:
    """Run directories with run.json, provenance and a 'running' status naming the group, for
    the members that are ``writable`` (not finished)."""
    device = jax.devices()[0]
    prov = store.provenance(argv)  # once per group: it asks git
    prov.update(device_kind=device.device_kind, platform=device.platform, device_count=jax.device_count())
    if is_multiprocess():
        prov.update(process_count=jax.process_count())
    for run, write in zip(group.runs, writable):
        path = run.dir(root)
        if not write:
            continue  # a finished member of a resumed group: recomputed, never rewritten
        record = {"run_id": run.run_id, "experiment": run.experiment, "version": group.experiment.version,
                  "config": cfg.to_dict(run.config)}
        if not (path / "run.json").exists():
            store.atomic_write_json(path / "run.json", record)
        store.atomic_write_json(path / "provenance.json", prov)
        _write_status(path, "running", group=group.group_id)
        index.upsert(path)


def _write_events(path, rows: list[dict]) -> None:
    """TensorBoard event files (tensorboardX, no TensorFlow) rewritten from the metrics."""
    import shutil

    from tensorboardX import SummaryWriter

    events = path / "events"
    if events.exists():
        shutil.rmtree(events)
    with SummaryWriter(logdir=str(events)) as writer:
        for row in rows:
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(name, value, row["step"])


def run_group(group: Group, root, index, *, progress=None, argv=None, devices: int | None = None) -> dict[str, str]:
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
    placement resume under any other.

    Several processes: every process calls it with the same ``group``; the member axis is
    sharded over ``devices`` local devices of *every* process (``None``: all of them; see
    :func:`jaxlearn.runner.placement.group_devices`); only process 0 writes (``index`` is not
    used elsewhere and may be ``None``); every process returns the same statuses.
    ``data_parallel > 1`` is refused there (``ValueError``).
    """
    if getattr(group.config, "data_parallel", 1) > 1:
        if is_multiprocess():
            raise ValueError(f"data_parallel={group.config.data_parallel}: expected 1 in a job of "
                             f"{jax.process_count()} processes (a step's batch is split over local devices only)")
        devices = 1  # each member's batch is already split over the devices (data parallelism)
    placement = Placement(group_devices(devices, len(group.runs)), len(group.runs))
    experiment = group.experiment
    writer = is_writer()
    gdir = group_dir(root, group.group_id)
    writable, committed = _resume_point(group, root, gdir)
    if writer:
        _prepare(group, root, index, argv, writable)
    data = experiment.module.data(group.config) if experiment.has_data else None
    programs = _programs(group)
    dynamic = _dynamic_values([r.config for r in group.runs])
    if writer and not (gdir / "members.json").exists():
        store.atomic_write_json(gdir / "members.json", {"experiment": experiment.name, "version": experiment.version,
                                                        "runs": [r.run_id for r in group.runs]})
    if not experiment.trains:
        return _run_study(group, root, index, programs, dynamic, data, gdir, progress, placement)

    config = group.config
    ends = segment_schedule(config)
    keep = set(snapshot_steps(config))
    template = {"states": programs.template(dynamic),
                "active": jax.ShapeDtypeStruct((len(group.runs),), bool),
                "diverged_step": jax.ShapeDtypeStruct((len(group.runs),), np.int32)}
    # Member-axis arrays below (dynamic, states, metrics, ok) carry the padding; active,
    # diverged_step and everything written do not.
    dynamic, data = placement.put(dynamic), placement.replicate(data)
    if committed is None:
        start, step = 0, 0
        states = programs.init(dynamic)
        states = states if placement.count == 1 else jax.device_put(states, placement.sharding)
        active = np.ones(len(group.runs), bool)
        diverged_step = np.full(len(group.runs), -1, np.int32)
    else:
        start, step = committed["segment"] + 1, committed["step"]
        saved = arrays.load_checkpoint(gdir / committed["checkpoint"], template)
        states, active, diverged_step = saved["states"], np.asarray(saved["active"]), np.asarray(saved["diverged_step"])
        states = placement.put(states)
    for entry in (gdir / "ckpt").glob("*") if writer and (gdir / "ckpt").exists() else ():
        if committed is None or entry.name != committed["checkpoint"].split("/")[-1]:
            arrays.remove_tree(entry)  # written after the last commit (or a stale temporary)
    for run, write in zip(group.runs, writable):
        if write and writer:
            store.truncate_jsonl(run.dir(root) / "metrics.jsonl", lambda row: row.get("step", 0) <= step)

    if progress is not None:
        progress.start(group, config.num_steps, step)
    # The checkpoint of segment i is written in the background while segment i + 1 computes, and
    # committed (pointer replaced atomically) once complete; metrics appended after the last
    # commit are truncated on resume, so the overlap never exposes an uncommitted state.
    with arrays.CheckpointWriter() as checkpoints:
        pending = None

        def commit(record):
            nonlocal committed
            checkpoints.wait()
            if writer:
                store.atomic_write_json(gdir / "committed.json", record)
                if committed is not None:
                    arrays.remove_tree(gdir / committed["checkpoint"])
            committed = record
            _test_hook("after_commit", record["segment"])

        for i in range(start, len(ends)):
            _test_hook("before_segment", i)
            end = ends[i]
            states, metrics, ok = programs.advance(end - step)(states, dynamic, placement.mask(active), data)
            metrics = _scalars(metrics, f"{experiment.name}.segment", placement.fetch)
            ok = placement.fetch(ok)
            for m, run in enumerate(group.runs):
                if active[m] and writable[m] and writer:
                    store.append_jsonl(run.dir(root) / "metrics.jsonl", [_row(end, metrics, m)])
            diverged_step = np.where(active & ~ok, end, diverged_step).astype(np.int32)
            active = ok
            _test_hook("after_metrics", i)
            host = placement.host(states)
            if end in keep and writer:
                for m, run in enumerate(group.runs):
                    if active[m] and writable[m]:
                        arrays.save_npz(run.dir(root) / "snapshots" / f"step_{end:08d}.npz",
                                        jax.tree.map(lambda x: x[m], host))
            if pending is not None:
                commit(pending)
            name = f"{i:06d}"
            checkpoints.start(gdir / "ckpt" / name, {"states": host, "active": active, "diverged_step": diverged_step})
            pending = {"segment": i, "step": end, "checkpoint": f"ckpt/{name}"}
            _test_hook("mid_checkpoint", i)
            if progress is not None:
                progress.update(end - step, {k: v[active] for k, v in metrics.items()} if active.any() else {})
            step = end
        if pending is not None:
            commit(pending)

    final = _scalars(programs.evaluate(states, dynamic, data), f"{experiment.name}.evaluate", placement.fetch)
    states = placement.host(states)
    statuses = {}
    for m, run in enumerate(group.runs):
        if m == len(group.runs) // 2:
            _test_hook("mid_split", len(ends) - 1)
        path = run.dir(root)
        if not writable[m]:
            statuses[run.run_id] = store.read_json(path / "status.json")["status"]
            continue
        status = "diverged" if diverged_step[m] >= 0 else "finished"
        statuses[run.run_id] = status
        if not writer:
            continue
        rows = store.read_jsonl(path / "metrics.jsonl")
        finite_rows = [r for r in rows if diverged_step[m] < 0 or r["step"] < diverged_step[m]]
        last = dict(finite_rows[-1]) if finite_rows else {}
        last.pop("step", None)
        last.update({k: v for k, v in _row(0, final, m).items() if k != "step"})
        arrays.save_npz(path / "state_final.npz", jax.tree.map(lambda x: x[m], states))
        _write_events(path, rows)
        _write_status(path, status, step=int(step), group=None, final_metrics=last,
                      diverged_step=int(diverged_step[m]) if diverged_step[m] >= 0 else None, finished=store.now_iso())
        index.upsert(path)
    if writer:
        arrays.remove_tree(gdir)
    if progress is not None:
        progress.close()
    return statuses


def _resume_point(group: Group, root, gdir) -> tuple[np.ndarray, dict | None]:
    """Which members may be written (not final: members split before a crash, only possible
    after the last segment, are never rewritten) and the group's last commit (or None), as read
    by process 0 and broadcast, so that every process resumes from the same point."""
    found = None
    if is_writer():
        committed = store.read_json(gdir / "committed.json") if (gdir / "committed.json").exists() else None
        found = {"writable": [not is_final(run.dir(root)) for run in group.runs], "committed": committed}
    found = broadcast_json(found)
    return np.array(found["writable"], bool), found["committed"]


def _run_study(group, root, index, programs, dynamic, data, gdir, progress, placement) -> dict[str, str]:
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
        path = run.dir(root)
        row = _row(0, scalars, m)
        finite = all(np.all(np.isfinite(v)) for v in jax.tree.leaves({k: v[m] for k, v in host.items()})
                     if np.issubdtype(np.asarray(v).dtype, np.inexact))
        statuses[run.run_id] = status = "finished" if finite else "diverged"
        if not is_writer():
            continue
        store.truncate_jsonl(path / "metrics.jsonl", lambda r: False)
        store.append_jsonl(path / "metrics.jsonl", [row])
        rest = {k: v[m] for k, v in host.items() if k not in scalars}
        if rest:
            arrays.save_npz(path / "outputs.npz", rest)
        row.pop("step")
        _write_status(path, status, group=None, final_metrics=row, finished=store.now_iso())
        index.upsert(path)
    if is_writer():
        arrays.remove_tree(gdir)
    if progress is not None:
        progress.update(1, {})
        progress.close()
    return statuses
