"""The executor through the library API: grouping, dedup, divergence, snapshots, crash/resume.

Ground truth for a vmapped group is each member run alone; for a resumed run, the same run
uninterrupted (bit for bit: params, optimizer state, metrics.jsonl bytes).
"""

import os
import pathlib
import struct
import subprocess
import sys
import threading

import chex
import jax
import numpy as np
import pytest

from jaxlearn import landscape, runner
from jaxlearn.runner import execute, store
from jaxlearn.runner.execute import KILL_ENV, segment_schedule
from tests.runner.child_process import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = {"width": 8, "d_in": 4, "teacher_width": 4, "n_train": 64, "batch_size": 16, "num_steps": 40,
        "segment_steps": 10}


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("teacher_student", [REPO])


def configs(experiment, **axes):
    spec = {k: runner.Axis(tuple(v), "list") for k, v in axes.items()}
    return runner.expand(experiment.config_cls, TINY, spec)


def leaves(root, run_id, experiment="teacher_student"):
    state = runner.load_state(root, f"{experiment}/{run_id}", search_paths=[REPO])
    return jax.tree.leaves(jax.tree.map(np.asarray, (state.params, state.opt_state, state.step)))


@pytest.fixture(scope="module")
def solo(experiment, tmp_path_factory):
    """Every member of the sweep below, each computed alone (groups of one)."""
    root = tmp_path_factory.mktemp("solo")
    cs = configs(experiment, seed=[0, 1], learning_rate=[0.05, 0.2])
    report = runner.run_sweep(experiment, cs, root=root, progress=False, max_group_size=1)
    assert len(report.computed) == 4
    return root, report


def test_group_members_equal_their_solo_runs(experiment, solo, tmp_path, monkeypatch):
    solo_root, solo_report = solo
    # one group, four segments of 10 steps: one program, so the segment function is traced once
    chex.clear_trace_counter()
    monkeypatch.setattr(experiment.module, "segment", chex.assert_max_traces(experiment.module.segment, n=1))
    # reversed order and a diverging extra member: neither may change anyone's result
    cs = configs(experiment, seed=[1, 0], learning_rate=[0.2, 0.05, 1e4])
    report = runner.run_sweep(experiment, cs, root=tmp_path, progress=False)
    assert len(report.computed) == 6
    for rid in solo_report.run_ids:
        for a, b in zip(leaves(tmp_path, rid), leaves(solo_root, rid)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
        grouped = store.read_jsonl(store.run_dir(tmp_path, "teacher_student", rid) / "metrics.jsonl")
        alone = store.read_jsonl(store.run_dir(solo_root, "teacher_student", rid) / "metrics.jsonl")
        assert [r["step"] for r in grouped] == [10, 20, 30, 40]
        np.testing.assert_allclose([r["test_mse"] for r in grouped], [r["test_mse"] for r in alone], rtol=2e-5)
    diverged = [r for r in runner.load(tmp_path).runs.itertuples() if r.learning_rate == 1e4]
    assert len(diverged) == 2 and all(r.status == "diverged" for r in diverged)
    for r in diverged:
        assert r.diverged_step in (10, 20, 30, 40)
        rows = store.read_jsonl(store.run_dir(tmp_path, "teacher_student", r.run_id) / "metrics.jsonl")
        assert rows[-1]["step"] == r.diverged_step and not np.isfinite(rows[-1]["train_loss"])
        assert all(np.all(np.isfinite(x)) for x in leaves(tmp_path, r.run_id))  # frozen before the NaN


def _tensorboard_scalars(events_dir) -> dict:
    """Scalars of TensorBoard event files, parsed from the TFRecord framing (length, crc,
    payload, crc) and the Event protocol buffer; HParams summaries (no scalar) left out."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for path in pathlib.Path(events_dir).iterdir():
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                if not value.tag.startswith("_hparams_/"):
                    scalars[(event.step, value.tag)] = value.simple_value
    return scalars


def test_tensorboard_events_hold_the_metrics(solo):
    root, report = solo
    path = store.run_dir(root, "teacher_student", report.run_ids[0])
    expected = {(r["step"], k): v
                for r in store.read_jsonl(path / "metrics.jsonl") for k, v in r.items() if k != "step"}
    got = _tensorboard_scalars(path / "events")
    final = {k: got.pop(k) for k in list(got) if k[1].startswith("final/")}  # the final metrics, at the last step
    assert got.keys() == expected.keys() and len(got) == 8
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)
    status = store.read_json(path / "status.json")
    assert final == pytest.approx({(40, f"final/{k}"): v for k, v in status["final_metrics"].items()}, rel=1e-6)


def test_a_sweep_compiles_each_program_once_and_ahead_of_its_call(experiment, tmp_path, monkeypatch):
    """Three groups (three static widths): each group's programs (init, segment, evaluate) are
    compiled once, all but the first group's init on the background compiler threads while the
    sweep initialises or trains another group; the results equal each group computed alone."""
    monkeypatch.setattr(execute, "_PROGRAMS", {})  # nothing cached from other tests
    compiled = []

    programs = ("jit(init)", "jit(segment)", "jit(evaluate)")

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration" and kwargs.get("fun_name") in programs:
            compiled.append((kwargs["fun_name"][4:-1], threading.current_thread().name.startswith("jaxlearn-compile")))

    cs = configs(experiment, width=[5, 6, 7], seed=[0, 1])
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        report = runner.run_sweep(experiment, cs, root=tmp_path / "sweep", progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert len(report.computed) == 6
    assert sorted(compiled) == [("evaluate", True)] * 3 + [("init", False)] + [("init", True)] * 2 + [
        ("segment", True)] * 3
    monkeypatch.setattr(execute, "_PROGRAMS", {})
    for width in (5, 6, 7):  # each group alone, nothing compiled ahead across groups
        runner.run_sweep(experiment, configs(experiment, width=[width], seed=[0, 1]), root=tmp_path / f"alone{width}",
                         progress=False)
    for config in cs:
        rid = runner.run_id("teacher_student", experiment.version, config)
        for a, b in zip(leaves(tmp_path / "sweep", rid), leaves(tmp_path / f"alone{config.width}", rid)):
            np.testing.assert_array_equal(a, b)


def test_a_data_seed_shared_by_a_group_reaches_it_as_a_constant(experiment, tmp_path, monkeypatch):
    """``data_seed`` is ``shared_constant``: a group whose members all have ``data_seed = 3`` gets
    the Python int 3 (its batches computed once for the group), a group with several data seeds a
    traced value; the shared group's members train as the same members do in the mixed group (the
    same data order; to rounding: the unbatched batch changes the shapes of the products)."""
    seen, segment = [], experiment.module.segment

    def recording(state, config, arrays):
        seen.append(type(config.data_seed))
        return segment(state, config, arrays)

    monkeypatch.setattr(experiment.module, "segment", recording)
    shared = configs(experiment, seed=[0, 1], data_seed=[3])
    runner.run_sweep(experiment, shared, root=tmp_path / "shared", progress=False)
    assert set(seen) == {int}
    seen.clear()
    runner.run_sweep(experiment, configs(experiment, seed=[0, 1], data_seed=[3, 4]), root=tmp_path / "mixed",
                     progress=False)
    assert int not in seen and seen
    for config in shared:
        rid = runner.run_id("teacher_student", experiment.version, config)
        for a, b in zip(leaves(tmp_path / "shared", rid), leaves(tmp_path / "mixed", rid)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_dedup_skips_finished_and_overlap_computes_only_new(experiment, tmp_path):
    first = runner.run_sweep(experiment, configs(experiment, seed=[0, 1]), root=tmp_path, progress=False)
    assert len(first.computed) == 2
    again = runner.run_sweep(experiment, configs(experiment, seed=[0, 1]), root=tmp_path, progress=False)
    assert again.computed == {} and set(again.skipped) == set(first.run_ids)
    overlap = runner.run_sweep(experiment, configs(experiment, seed=[1, 2]), root=tmp_path, progress=False)
    assert list(overlap.computed) == [overlap.run_ids[1]] and overlap.skipped == (first.run_ids[1],)
    forced = runner.run_sweep(experiment, configs(experiment, seed=[0]), root=tmp_path, progress=False, force=True)
    assert list(forced.computed) == [first.run_ids[0]]


def test_run_claimed_elsewhere_is_not_computed(experiment, tmp_path):
    cs = configs(experiment, seed=[0, 1])
    ids = [runner.run_id("teacher_student", experiment.version, c) for c in cs]
    claim = store.RunClaim.try_acquire(store.run_dir(tmp_path, "teacher_student", ids[0]))
    try:
        report = runner.run_sweep(experiment, cs, root=tmp_path, progress=False)
    finally:
        claim.release()
    assert report.busy == (ids[0],) and list(report.computed) == [ids[1]]


def test_snapshots_are_loadable_and_match_a_shorter_run(experiment, tmp_path, monkeypatch):
    (long,) = runner.expand(experiment.config_cls, {**TINY, "snapshots": [5, 20]}, {})
    (short,) = runner.expand(experiment.config_cls, {**TINY, "num_steps": 20}, {})
    assert segment_schedule(long) == [5, 10, 20, 30, 40]
    # one program per segment length of each group: long (segments of 5, 5, 10, 10, 10 steps)
    # traces the segment function twice, short (10, 10) once
    chex.clear_trace_counter()
    monkeypatch.setattr(experiment.module, "segment", chex.assert_max_traces(experiment.module.segment, n=3))
    report = runner.run_sweep(experiment, [long, short], root=tmp_path, progress=False)
    long_id, short_id = report.run_ids
    at5 = runner.load_state(tmp_path, long_id, step=5, search_paths=[REPO])
    assert int(at5.step) == 5
    at20 = runner.load_state(tmp_path, long_id, step=20, search_paths=[REPO])
    end = runner.load_state(tmp_path, short_id, search_paths=[REPO])
    chex.assert_trees_all_close(at20.params, end.params, rtol=1e-5, atol=1e-7)
    with pytest.raises(FileNotFoundError, match=r"kept: 'final' \(when finished\) and snapshots \[5, 20\]"):
        runner.load_state(tmp_path, long_id, step=7, search_paths=[REPO])
    traj = runner.load_trajectory(tmp_path, long_id, search_paths=[REPO])
    np.testing.assert_array_equal(traj.steps, [5, 20, 40])
    np.testing.assert_array_equal(traj.states.step, [5, 20, 40])
    final = runner.load_state(tmp_path, long_id, search_paths=[REPO])
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[1], traj.states.params), at20.params)
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[2], traj.states.params), final.params)
    # the documented one-call path to the PCA plane of the optimisation path
    (d1, d2), explained = landscape.pca_directions(traj.states.params)
    assert explained.shape == (2,) and jax.tree.structure(d1) == jax.tree.structure(final.params)
    assert runner.load_trajectory(tmp_path, short_id, search_paths=[REPO]).steps.tolist() == [20]
    res = runner.load(tmp_path, curves=True)
    assert set(res.runs.columns) >= {"run_id", "status", "seed", "learning_rate", "optimizer.name", "test_mse"}
    assert sorted(res.curves[res.curves.run_id == long_id].step) == [5, 10, 20, 30, 40]


@pytest.mark.slow
def test_concurrent_overlapping_sweeps_compute_each_run_once(tmp_path):
    """Two runner processes started together on overlapping sweeps: every run is computed by
    exactly one of them (the other skips it as finished or running elsewhere)."""
    env = {**os.environ, "XLA_FLAGS": xla_flags(1)}
    config = str(REPO / "configs" / "teacher_student.yaml")
    base = [sys.executable, "-m", "jaxlearn", "run", config, "--out", str(tmp_path), "--variant", "smoke",
            *[f"--set={k}={v}" for k, v in TINY.items()], "--quiet", "--no-plot", "--sweep", "learning_rate=0.05"]
    procs = [subprocess.Popen([*base, "--sweep", seeds], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seeds in ("seed=0,1,2,3", "seed=2,3,4,5")]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    computed = [int(o[0].split(" computed")[0].rsplit(" ", 1)[-1]) for o in outputs]
    assert sum(computed) == 6, [o[0] for o in outputs]
    runs = runner.load(tmp_path).runs
    assert len(runs) == 6 and runs.status.eq("finished").all()
    assert all(len(store.read_jsonl(store.run_dir(tmp_path, "teacher_student", r) / "metrics.jsonl")) == 4
               for r in runs.run_id)


# --- crash and resume: a real SIGKILL of a runner process -------------------------------------

CLI_ARGS = ["--variant", "smoke", *[f"--set={k}={v}" for k, v in TINY.items()], "--sweep", "seed=0,1",
            "--sweep", "learning_rate=0.05,1e4", "--quiet", "--no-plot"]


def _cli(root, cache, kill=None, command=None):
    # one compilation cache for every child of the module, holding every program (even sub-second ones)
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "XLA_FLAGS": xla_flags(1)}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    command = command or ["run", str(REPO / "configs" / "teacher_student.yaml"), *CLI_ARGS]
    cmd = [sys.executable, "-m", "jaxlearn", *command, "--out", str(root)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    root = tmp_path_factory.mktemp("reference")
    done = _cli(root, cache)
    assert done.returncode == 0, done.stderr
    return root, cache


# One launch's hook points, in the order it meets them: segment i's ``before_segment:i`` and
# ``after_metrics:i``, the commit of segment i - 1 (``after_commit:i-1``), ``mid_checkpoint:i``; after the
# last segment its commit, then ``mid_split`` halfway through writing the members' final files. A rerun
# resumes from the last commit, which always lies before the next point of this chain, so every launch
# reaches its point: each crash is then recovered from by a run that itself crashes at the next point.
KILL_CHAIN = [("after_metrics:1", "rerun"), ("after_commit:0", "rerun"), ("before_segment:2", "rerun"),
              ("mid_checkpoint:2", "rerun"), ("after_metrics:2", "resume"), ("mid_split:3", "rerun")]


@pytest.mark.slow
def test_sigkill_at_every_point_then_rerun_is_bit_identical(uninterrupted, tmp_path):
    """A real SIGKILL of the runner process at each hook point in turn (one chain of launches, each
    resuming the previous one's crash; ``resume`` by run id after ``after_metrics:2``, ``run`` of the
    same sweep otherwise), then a launch that finishes: every file equals the uninterrupted sweep's."""
    reference, cache = uninterrupted
    how = "rerun"
    for point, next_how in KILL_CHAIN:
        killed = _relaunch(tmp_path, cache, how, kill=point)
        assert killed.returncode == -9, f"the launch to be killed at {point} exited {killed.returncode}: " \
                                        f"{killed.stderr[-2000:]}"
        how = next_how
    resumed = _relaunch(tmp_path, cache, how)
    assert resumed.returncode == 0, resumed.stderr
    assert not (tmp_path / "_groups").exists() or not any((tmp_path / "_groups").iterdir())
    ids = sorted(p.name for p in (reference / "teacher_student").iterdir())
    assert ids == sorted(p.name for p in (tmp_path / "teacher_student").iterdir()) and len(ids) == 4
    for rid in ids:
        a, b = (store.run_dir(r, "teacher_student", rid) for r in (reference, tmp_path))
        assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()
        assert store.read_json(a / "status.json")["status"] == store.read_json(b / "status.json")["status"]
        for x, y in zip(leaves(reference, rid), leaves(tmp_path, rid)):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


def _relaunch(root, cache, how, kill=None):
    """``jaxlearn run`` of the sweep, or (``how="resume"``) ``jaxlearn resume`` of its interrupted group."""
    if how == "resume":
        interrupted = next(p.name for p in (root / "teacher_student").iterdir())
        done = _cli(root, cache, kill=kill, command=["resume", interrupted[:8], "--quiet"])
        assert kill or "resumed group of 4 runs" in done.stdout, done.stderr
        return done
    return _cli(root, cache, kill=kill)


def test_a_failing_group_marks_its_runs_failed_and_resumes_later(experiment, tmp_path, monkeypatch):
    cs = runner.expand(experiment.config_cls, {**TINY, "width": 5}, {"seed": runner.Axis((0, 1), "list")})

    def broken(state, config, arrays):
        raise RuntimeError("segment exploded")

    monkeypatch.setattr(experiment.module, "segment", broken)
    with pytest.raises(RuntimeError, match="segment exploded"):
        runner.run_sweep(experiment, cs, root=tmp_path, progress=False)
    failed = runner.load(tmp_path).runs
    assert failed.status.eq("failed").all() and len(failed) == 2
    status = store.read_json(store.run_dir(tmp_path, "teacher_student", failed.run_id.iloc[0]) / "status.json")
    assert status["error"] == "RuntimeError: segment exploded"
    monkeypatch.undo()
    report = runner.run_sweep(experiment, cs, root=tmp_path, progress=False)
    assert set(report.computed.values()) == {"finished"} and len(report.computed) == 2
