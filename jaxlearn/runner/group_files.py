"""Every file a group of runs writes while the executor computes it, in one object.

:class:`GroupFiles` writes the members' run directories (``run.json``, provenance, status,
metrics, snapshots, final states, the index) and the group's own directory (``members.json``, the
``committed.json`` pointer, stale checkpoints) for :func:`jaxlearn.runner.execute.run_group`, and
sends what it commits to the members' live tracking sinks (:mod:`jaxlearn.runner.sinks`: TensorBoard
events, MLflow, W&B): each member's sinks open once its resume point is known (with the rows it has
committed), get each segment's rows right after the commit that makes them durable, and its final
metrics and status when it finishes. Built with ``enabled=False`` — every process but
process 0 of a multi-process job (:func:`jaxlearn.runner.distributed.is_writer`) — each of its
writes does nothing, so the executor's steps read the same on every process. Only members that
are *writable* (not final when the group started: a resumed group recomputes, but never
rewrites, a member that had already finished) are written.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxlearn.runner import arrays, store
from jaxlearn.runner import config as cfg
from jaxlearn.runner.distributed import is_multiprocess
from jaxlearn.runner.plan import Group, group_dir
from jaxlearn.runner.sinks import DEFAULT_SINKS, LiveLog, RunInfo

__all__ = ["GroupFiles", "metrics_row"]


def metrics_row(step: int, metrics: dict, member: int) -> dict:
    """One member's row of per-member host metrics (``{name: array over members}``) as JSON
    values, with its ``step``."""
    row = {"step": int(step)}
    for name, value in metrics.items():
        v = value[member]
        row[name] = bool(v) if v.dtype == bool else int(v) if np.issubdtype(v.dtype, np.integer) else float(v)
    return row


def _writes(method):
    """A :class:`GroupFiles` method that does nothing on a process that does not write."""

    @functools.wraps(method)
    def write(self, *args, **kwargs):
        if self.enabled:
            return method(self, *args, **kwargs)
        return None

    return write


class GroupFiles:
    """The files of ``group`` under ``root``; ``index`` is the run store's index (unused, and
    may be ``None``, when not ``enabled``); ``writable[m]``: member ``m`` may be written;
    ``sinks``: the names of the live tracking sinks (:func:`jaxlearn.runner.sinks.sink_names`),
    ``sweep`` the id of the sweep that computes the group (``None``: unknown)."""

    def __init__(self, group: Group, root, index, writable, *, enabled: bool, sinks=DEFAULT_SINKS,
                 sweep: str | None = None):
        self.group, self.root, self.index, self.enabled = group, root, index, enabled
        self.writable = np.asarray(writable, bool)
        self.dir = group_dir(root, group.group_id)
        self.live = LiveLog(sinks, sweep)
        self._unlogged: list[tuple[int, dict]] = []  # (member, row) appended, not yet committed

    def _open_sinks(self, m: int, history: list[dict]) -> None:
        run = self.group.runs[m]
        self.live.open(m, RunInfo(run.run_id, run.experiment, self.group.group_id, self.live.sweep,
                                  run.dir(self.root), cfg.to_dict(run.config)), history)

    def _members(self, mask=None):
        """``(m, run directory)`` of the writable members (and, given ``mask``, where it holds)."""
        for m, run in enumerate(self.group.runs):
            if self.writable[m] and (mask is None or mask[m]):
                yield m, run.dir(self.root)

    @_writes
    def start(self, argv) -> None:
        """Run directories with run.json, provenance and a 'running' status naming the group."""
        device = jax.devices()[0]
        prov = store.provenance(argv)  # once per group: it asks git
        prov.update(device_kind=device.device_kind, platform=device.platform, device_count=jax.device_count())
        if is_multiprocess():
            prov.update(process_count=jax.process_count())
        for m, path in self._members():
            run = self.group.runs[m]
            if not (path / "run.json").exists():
                store.atomic_write_json(path / "run.json", {"run_id": run.run_id, "experiment": run.experiment,
                                                            "version": self.group.experiment.version,
                                                            "config": cfg.to_dict(run.config)})
            store.atomic_write_json(path / "provenance.json", prov)
            _write_status(path, "running", group=self.group.group_id)
            self.index.upsert(path)

    @_writes
    def record_members(self) -> None:
        """The group's ``members.json`` (an interrupted group resumes whole), once it can start."""
        if not (self.dir / "members.json").exists():
            experiment = self.group.experiment
            store.atomic_write_json(self.dir / "members.json", {"experiment": experiment.name,
                                                                "version": experiment.version,
                                                                "runs": [r.run_id for r in self.group.runs]})

    @_writes
    def restart_at(self, committed: dict | None) -> None:
        """Before the first segment: checkpoints other than the last commit's (written after it,
        or stale temporaries) removed; metrics after its step truncated."""
        if (self.dir / "ckpt").exists():
            for entry in (self.dir / "ckpt").glob("*"):
                if committed is None or entry.name != committed["checkpoint"].split("/")[-1]:
                    arrays.remove_tree(entry)
        step = 0 if committed is None else committed["step"]
        for m, path in self._members():
            store.truncate_jsonl(path / "metrics.jsonl", lambda row: row.get("step", 0) <= step)
            self._open_sinks(m, store.read_jsonl(path / "metrics.jsonl"))

    @_writes
    def append_metrics(self, step: int, metrics: dict, active) -> None:
        """Each active member's metrics row of the segment that ended at ``step``."""
        for m, path in self._members(active):
            row = metrics_row(step, metrics, m)
            store.append_jsonl(path / "metrics.jsonl", [row])
            self._unlogged.append((m, row))

    @_writes
    def snapshot(self, step: int, states, active) -> None:
        """Each active member's state at ``step`` (host arrays with a member axis)."""
        for m, path in self._members(active):
            arrays.save_npz(path / "snapshots" / f"step_{step:08d}.npz", jax.tree.map(lambda x: x[m], states))

    @_writes
    def commit(self, record: dict, previous: dict | None) -> None:
        """``committed.json`` atomically replaced by ``record`` (its checkpoint is complete), then
        the ``previous`` commit's checkpoint removed; the rows it made durable sent to the sinks."""
        store.atomic_write_json(self.dir / "committed.json", record)
        if previous is not None:
            arrays.remove_tree(self.dir / previous["checkpoint"])
        durable = [(m, row) for m, row in self._unlogged if row["step"] <= record["step"]]
        self._unlogged = [(m, row) for m, row in self._unlogged if row["step"] > record["step"]]
        for m, row in durable:
            self.live.log(m, row)

    def finish_member(self, m: int, status: str, metrics: dict, *, states=None, step: int | None = None,
                      diverged_step: int | None = None) -> None:
        """Member ``m``'s final files, its final metrics taken from ``metrics`` (per-member host
        arrays). A trained member (``states``: every member's final state, host arrays): the
        last finite row of its metrics updated by them, its final state. A study: they are its
        results and its only metrics row. Then ``status.json``, and the final metrics and status
        sent to its sinks (a study's sinks open here)."""
        if not (self.enabled and self.writable[m]):
            return
        path = self.group.runs[m].dir(self.root)
        row = metrics_row(0, metrics, m)
        if states is None:  # a study: one row, its results
            store.truncate_jsonl(path / "metrics.jsonl", lambda r: False)
            store.append_jsonl(path / "metrics.jsonl", [row])
            row.pop("step")
            _write_status(path, status, group=None, final_metrics=row, finished=store.now_iso())
            self._open_sinks(m, [])
            final = row
        else:
            rows = store.read_jsonl(path / "metrics.jsonl")
            finite_rows = [r for r in rows if diverged_step is None or r["step"] < diverged_step]
            last = dict(finite_rows[-1]) if finite_rows else {}
            last.pop("step", None)
            last.update({k: v for k, v in row.items() if k != "step"})
            arrays.save_npz(path / "state_final.npz", jax.tree.map(lambda x: x[m], states))
            _write_status(path, status, step=int(step), group=None, final_metrics=last, diverged_step=diverged_step,
                          finished=store.now_iso())
            final = last
        self.index.upsert(path)
        self.live.summary(m, final)
        self.live.finish(m, status)

    @_writes
    def save_outputs(self, m: int, outputs: dict) -> None:
        """A study member's non-scalar results (``outputs.npz``)."""
        if self.writable[m] and outputs:
            arrays.save_npz(self.group.runs[m].dir(self.root) / "outputs.npz", outputs)

    @_writes
    def close(self) -> None:
        """The group's directory (checkpoints, pointer, members) removed: every member is final."""
        arrays.remove_tree(self.dir)

    @_writes
    def abandon(self, status: str) -> None:
        """The group stopped before its end (an error, an interrupt): the sinks still open are
        finished with ``status``; the run files stay as the last commit left them."""
        self.live.abort(status)


def _write_status(path, status: str, **fields) -> None:
    record = store.read_json(path / "status.json") if (path / "status.json").exists() else {"started": store.now_iso()}
    record.update({"status": status, "updated": store.now_iso(), **fields})
    record.setdefault("step", 0)
    record.setdefault("diverged_step", None)
    record.setdefault("final_metrics", {})
    record.setdefault("error", None)
    store.atomic_write_json(path / "status.json", record)

