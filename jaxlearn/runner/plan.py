"""The planner: sweep points -> runs -> groups that share one compiled program.

A *run* is one resolved config of one experiment version; its id is a hash of that (see
:func:`jaxlearn.runner.config.run_id`), so the same point reached by two sweeps is one run.
Runs whose static fields agree form a *group*, trained as one ``jit(vmap(...))`` program whose
members differ only in dynamic fields. A group's id hashes its sorted member ids, so the same
set of runs is always the same group (and resumes from the same checkpoint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib

from jaxlearn.runner import config as cfg
from jaxlearn.runner import store
from jaxlearn.runner.experiment import Experiment

__all__ = ["Run", "Group", "Plan", "plan_runs", "group_dir", "GROUPS_DIR", "FINAL_STATUSES", "read_status", "is_final",
           "stored_run", "stored_group", "plan_to_json", "plan_from_json"]

GROUPS_DIR = "_groups"  # not a valid experiment module name, so it cannot clash with one
FINAL_STATUSES = ("finished", "diverged")


@dataclasses.dataclass(frozen=True)
class Run:
    experiment: str
    run_id: str
    config: object

    def dir(self, root) -> pathlib.Path:
        return store.run_dir(root, self.experiment, self.run_id)


@dataclasses.dataclass(frozen=True)
class Group:
    experiment: Experiment
    runs: tuple[Run, ...]

    @property
    def group_id(self) -> str:
        ids = sorted(r.run_id for r in self.runs)
        text = cfg.canonical_json({"experiment": self.experiment.name, "version": self.experiment.version, "runs": ids})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def config(self):
        """The shared static config (the first member's; dynamic fields are replaced per member)."""
        return self.runs[0].config


@dataclasses.dataclass(frozen=True)
class Plan:
    groups: tuple[Group, ...]
    done: tuple[Run, ...]      # finished earlier (skipped)
    busy: tuple[Run, ...]      # claimed by another process right now (skipped)


def group_dir(root, group_id: str) -> pathlib.Path:
    return pathlib.Path(root) / GROUPS_DIR / store.check_name(group_id, "group id")


def static_key(config) -> str:
    """Canonical JSON of a config's static fields: equal keys share a compiled program."""
    values = cfg.to_dict(config)
    return cfg.canonical_json({name: values[name] for name in cfg.static_fields(type(config))})


def make_runs(experiment: Experiment, configs) -> list[Run]:
    runs, seen = [], set()
    for config in configs:
        rid = cfg.run_id(experiment.name, experiment.version, config)
        if rid not in seen:
            seen.add(rid)
            runs.append(Run(experiment.name, rid, config))
    return runs


def read_status(path) -> dict | None:
    """A run directory's ``status.json``, or None before the run has one."""
    file = pathlib.Path(path) / "status.json"
    return store.read_json(file) if file.exists() else None


def is_final(path) -> bool:
    """Whether the run in directory ``path`` is finished or diverged (never recomputed or
    rewritten without ``force``)."""
    return (read_status(path) or {}).get("status") in FINAL_STATUSES


def stored_run(root, experiment: Experiment, run_id: str) -> Run:
    """A run rebuilt from its ``run.json`` (config validated by the current code)."""
    record = store.read_json(store.run_dir(root, experiment.name, run_id) / "run.json")
    return Run(experiment.name, run_id, cfg.parse_config(experiment.config_cls, record["config"]))


def stored_group(root, experiment: Experiment, status: dict | None) -> Group | None:
    """The interrupted group named in a run's ``status``, if its checkpoint directory still
    exists and was written by this experiment version."""
    gid = (status or {}).get("group")
    if not gid or not (group_dir(root, gid) / "members.json").exists():
        return None
    members = store.read_json(group_dir(root, gid) / "members.json")
    if members.get("version") != experiment.version:
        return None
    return Group(experiment, tuple(stored_run(root, experiment, rid) for rid in members["runs"]))


def plan_runs(experiment: Experiment, runs, root, *, force: bool = False, max_group_size: int | None = None) -> Plan:
    """Splits ``runs`` into finished ones (skipped unless ``force``) and groups to compute.

    Interrupted groups are resumed with their original composition (so the resumed result is
    bit-identical); the other pending runs are grouped by their static fields, in order, in
    chunks of at most ``max_group_size`` members.
    """
    done, pending, groups, taken = [], [], [], set()
    for run in runs:
        status = read_status(run.dir(root))
        if not force and (status or {}).get("status") in FINAL_STATUSES:
            done.append(run)
            continue
        stored = None if force else stored_group(root, experiment, status)
        if stored is not None:
            if stored.group_id not in taken:
                taken.add(stored.group_id)
                groups.append(stored)
            continue
        pending.append(run)
    in_stored = {r.run_id for g in groups for r in g.runs}
    by_static: dict[str, list[Run]] = {}
    for run in pending:
        if run.run_id not in in_stored:
            by_static.setdefault(static_key(run.config), []).append(run)
    limit = max_group_size or len(runs) or 1
    for members in by_static.values():
        for start in range(0, len(members), limit):
            groups.append(Group(experiment, tuple(members[start:start + limit])))
    return Plan(tuple(groups), tuple(done), ())


def plan_to_json(plan: Plan) -> dict:
    """A plan as run ids only: ``{"groups": [[member ids in order], ...], "done": [...], "busy":
    [...]}`` (what process 0 of a multi-process job sends the others, see
    :func:`jaxlearn.runner.distributed.broadcast_json`)."""
    return {"groups": [[r.run_id for r in g.runs] for g in plan.groups],
            "done": [r.run_id for r in plan.done], "busy": [r.run_id for r in plan.busy]}


def plan_from_json(experiment: Experiment, value: dict, runs, root) -> Plan:
    """Inverse of :func:`plan_to_json`: the same groups, members in the same order, rebuilt from
    ``runs`` (the sweep's runs, see :func:`make_runs`) or, for members of an interrupted group
    that are not in the sweep, from their ``run.json`` under ``root``."""
    known = {r.run_id: r for r in runs}

    def run(rid: str) -> Run:
        return known[rid] if rid in known else stored_run(root, experiment, rid)

    return Plan(tuple(Group(experiment, tuple(run(rid) for rid in ids)) for ids in value["groups"]),
                tuple(run(rid) for rid in value["done"]), tuple(run(rid) for rid in value["busy"]))
