"""Live tracking sinks (jaxlearn.runner.sinks) against the real libraries.

Ground truth: the run store (``metrics.jsonl``, ``status.json``), which the sinks only mirror.
TensorBoard's events are read back by parsing the TFRecord framing and Event protos directly (no
jaxlearn code) and by TensorBoard's own HParams plugin handlers (what the dashboard shows); MLflow's
by ``MlflowClient`` on a local file store; W&B's offline run from its transaction log (the records
``wandb sync`` uploads), written by a ``jaxlearn run`` child with a timeout.
"""

import contextlib
import importlib.machinery
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from jaxlearn import runner
from jaxlearn.runner import cli, sinks, store
from jaxlearn.runner.execute import KILL_ENV
from tests.runner.child_process import xla_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
TS = str(REPO / "configs" / "teacher_student.yaml")
TINY = {"width": 8, "d_in": 4, "teacher_width": 4, "n_train": 64, "batch_size": 16, "num_steps": 40,
        "segment_steps": 10}
CLI_TINY = ["--variant", "smoke", *[f"--set={k}={v}" for k, v in TINY.items()], "--quiet", "--no-plot"]
STEPS = [10, 20, 30, 40]


@pytest.fixture(scope="module")
def experiment():
    return runner.load_experiment("teacher_student", [REPO])


@pytest.fixture(scope="module")
def child_env(tmp_path_factory):
    """The environment of a ``jaxlearn run`` child: one device, no sink or kill setting inherited, and
    one compilation cache for the module's children (the second one reads what the first compiled)."""
    env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache"))}
    for name in (sinks.LOG_ENV, KILL_ENV, "WANDB_PROJECT", "WANDB_API_KEY"):
        env.pop(name, None)
    return env


def configs(experiment, **axes):
    spec = {k: runner.Axis(tuple(v), "list") for k, v in axes.items()}
    return runner.expand(experiment.config_cls, TINY, spec)


def rows(root, run_id):
    return store.read_jsonl(store.run_dir(root, "teacher_student", run_id) / "metrics.jsonl")


def status(root, run_id):
    return store.read_json(store.run_dir(root, "teacher_student", run_id) / "status.json")


def events(run_dir) -> list:
    """Every summary value of the run's event files as ``(tag, step, value)``, duplicates kept,
    parsed from the TFRecord framing (length, crc, payload, crc) and the Event protocol buffer."""
    from tensorboardX.proto import event_pb2

    found = []
    for path in sorted((pathlib.Path(run_dir) / "events").iterdir()):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return found


def scalar_steps(found, tag: str) -> list[int]:
    return sorted(step for t, step, _ in found if t == tag)


@pytest.fixture(scope="module")
def live(experiment, tmp_path_factory):
    """A two-run sweep whose events are read at the hook after segment 1's commit, mid-run."""
    root = tmp_path_factory.mktemp("live")
    seen = {}

    def hook(point, index):
        if (point, index) == ("after_commit", 1):
            seen.update({rid: events(store.run_dir(root, "teacher_student", rid)) for rid in ids})

    cs = configs(experiment, learning_rate=[0.05, 0.2])
    ids = [runner.run_id("teacher_student", experiment.version, c) for c in cs]
    runner.run_sweep(experiment, cs, root=root, progress=False, hook=hook, log="tensorboard")
    return root, ids, seen


def test_events_hold_the_committed_segments_while_the_run_goes_on(live):
    root, ids, seen = live
    for rid in ids:
        # at the commit of segment 1 (step 20): segments 0 and 1, and the HParams session start
        assert scalar_steps(seen[rid], "train_loss") == [10, 20]
        assert [t for t, _, _ in seen[rid] if t.startswith("_hparams_/")] == ["_hparams_/session_start_info"]
        found = events(store.run_dir(root, "teacher_student", rid))
        expected = {(k, r["step"]): v for r in rows(root, rid) for k, v in r.items() if k != "step"}
        got = {(t, s): v for t, s, v in found if not t.startswith(("_hparams_/", sinks.FINAL_PREFIX))}
        assert len(got) == len([1 for t, _, _ in found if not t.startswith(("_hparams_/", sinks.FINAL_PREFIX))])
        assert got.keys() == expected.keys() and scalar_steps(found, "train_loss") == STEPS
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), rtol=1e-6)
        final = {t[len(sinks.FINAL_PREFIX):]: (s, v) for t, s, v in found if t.startswith(sinks.FINAL_PREFIX)}
        assert final.keys() == status(root, rid)["final_metrics"].keys()
        for name, value in status(root, rid)["final_metrics"].items():
            assert final[name][0] == 40 and final[name][1] == pytest.approx(value, rel=1e-6)


def test_hparams_dashboard_shows_each_run_as_a_session(live):
    """TensorBoard's own HParams handlers (as the dashboard calls them) on the run root: one
    session per run, named by its event directory, with the swept field and the final metrics."""
    pytest.importorskip("tensorboard", reason="the tensorboard package (make test installs it) reads the events")
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    root, ids, _ = live
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(root))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(root))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(root), multiplexer=multiplexer,
                                                            data_provider=provider))
    ctx = context.RequestContext()
    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    assert {"learning_rate", "seed", "width", "optimizer.name"} <= {h.name for h in experiment.hparam_infos}
    assert "final/test_mse" in {m.name.tag for m in experiment.metric_infos}
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=10, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    sessions = {s.name: s for g in groups for s in g.sessions}
    assert set(sessions) == {f"teacher_student/{rid}/events" for rid in ids}
    for rid, lr in zip(ids, [0.05, 0.2]):
        group = next(g for g in groups if g.name == f"teacher_student/{rid}/events")
        assert group.hparams["learning_rate"].number_value == pytest.approx(lr)
        assert group.hparams["optimizer.name"].string_value == runner.load(root).runs.set_index(
            "run_id").loc[rid, "optimizer.name"]
        assert sessions[group.name].status == api_pb2.STATUS_SUCCESS
        value = {m.name.tag: m.value for m in group.metric_values}["final/test_mse"]
        assert value == pytest.approx(status(root, rid)["final_metrics"]["test_mse"], rel=1e-6)


def test_sigkill_then_resume_leaves_each_step_once(tmp_path, child_env):
    """``jaxlearn run`` killed (SIGKILL) after segment 2's metrics were appended but before segment
    1 was committed: the events hold only the committed step 10 although metrics.jsonl had 30;
    the same command (in process) then resumes from step 10, and every step is in the events
    exactly once."""
    args = ["run", TS, *CLI_TINY, "--sweep", "seed=0", "--sweep", "learning_rate=0.05,0.2", "--out", str(tmp_path)]
    killed = subprocess.run([sys.executable, "-m", "jaxlearn", *args], cwd=REPO, capture_output=True, text=True,
                            env={**child_env, KILL_ENV: "after_metrics:2"}, timeout=240)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dirs = sorted((tmp_path / "teacher_student").iterdir())
    for run_dir in run_dirs:
        assert [r["step"] for r in store.read_jsonl(run_dir / "metrics.jsonl")] == [10, 20, 30]
        assert scalar_steps(events(run_dir), "train_loss") == [10]
    assert cli.main(args) == 0
    for run_dir in run_dirs:
        found = events(run_dir)
        for tag in {t for t, _, _ in found if not t.startswith(("_hparams_/", sinks.FINAL_PREFIX))}:
            assert scalar_steps(found, tag) == STEPS, tag
        hparams = [t for t, _, _ in found if t.startswith("_hparams_/")]
        assert sorted(hparams) == ["_hparams_/session_end_info", "_hparams_/session_start_info"]


def test_a_failing_sink_warns_once_and_the_store_is_intact(experiment, tmp_path, monkeypatch):
    def broken(self, step, metrics):
        raise OSError("disk full")

    monkeypatch.setattr(sinks.TensorBoardSink, "log", broken)
    cs = configs(experiment, learning_rate=[0.05, 0.2])
    with pytest.warns(sinks.SinkWarning) as caught:
        report = runner.run_sweep(experiment, cs, root=tmp_path, progress=False, log="tensorboard")
    assert len(caught) == 1 and "the tensorboard sink failed" in str(caught[0].message)
    assert "OSError: disk full" in str(caught[0].message)
    assert set(report.computed.values()) == {"finished"}
    for rid in report.run_ids:
        assert [r["step"] for r in rows(tmp_path, rid)] == STEPS
        assert status(tmp_path, rid)["status"] == "finished"
        assert (store.run_dir(tmp_path, "teacher_student", rid) / "state_final.npz").exists()


@pytest.mark.parametrize("spec, expected", [(None, ("tensorboard",)), ("none", ()),
                                            ("mlflow, tensorboard,mlflow", ("mlflow", "tensorboard"))])
def test_sink_names_default_and_env(spec, expected, monkeypatch):
    pytest.importorskip("mlflow", reason="names mlflow")
    monkeypatch.delenv(sinks.LOG_ENV, raising=False)
    assert sinks.sink_names(spec) == expected
    monkeypatch.setenv(sinks.LOG_ENV, spec or "tensorboard")
    assert sinks.sink_names(None) == expected
    assert sinks.sink_names("tensorboard") == ("tensorboard",)  # --log wins over the environment


@pytest.mark.parametrize("args, env, message", [
    (["--log", "tensorbord"], None,
     "--log tensorbord: unknown sink; expected a comma-separated list of tensorboard, mlflow, wandb (or none)"),
    ([], "tensorboard,mlfow", "$JAXLEARN_LOG mlfow: unknown sink"),
    (["--log", "mlflow"], None, "--log mlflow: needs the mlflow package: pip install 'jaxlearn[mlflow]'"),
    (["--log", "wandb"], None, "--log wandb: needs the wandb package: pip install 'jaxlearn[wandb]'"),
])
def test_bad_sinks_are_one_line_errors_before_compiling(args, env, message, tmp_path, capsys, monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr("jaxlearn.runner.sweep.run_sweep", no_compile)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setitem(sys.modules, "wandb", None)
    if env is None:
        monkeypatch.delenv(sinks.LOG_ENV, raising=False)
    else:
        monkeypatch.setenv(sinks.LOG_ENV, env)
    assert cli.main(["run", TS, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "teacher_student").exists()


def test_tensorboard_command_execs_tensorboard_on_the_root(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: calls.append((path, argv)))
    installed = types.ModuleType("tensorboard")  # whether or not it is: execv is faked
    installed.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard", installed)
    assert cli.main(["tensorboard", str(tmp_path), "--port", "6007"]) == 0
    assert calls == [(sys.executable, [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path),
                                       "--port", "6007"])]
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed
    assert cli.main(["tensorboard", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("jaxlearn tensorboard: error: needs the tensorboard package: "
                                               "pip install 'jaxlearn[tensorboard]'")
    assert len(calls) == 1


# --- MLflow: a local file store, read back with MlflowClient ----------------------------------------------


def test_mlflow_runs_params_metrics_and_sweep_plots(experiment, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="pip install 'jaxlearn[mlflow]' (make test installs it)")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no SQL store
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    root = tmp_path / "runs"
    cs = configs(experiment, learning_rate=[0.05, 0.2])
    report = runner.run_sweep(experiment, cs, root=root, progress=False, log="mlflow")
    sweep = runner.sweep_id("teacher_student", report.run_ids)
    client = MlflowClient()
    exp = client.get_experiment_by_name("teacher_student")
    found = {r.data.tags["jaxlearn.run_id"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(found) == set(report.run_ids)
    for rid, lr in zip(report.run_ids, [0.05, 0.2]):
        run = found[rid]
        assert run.info.status == "FINISHED" and run.data.tags["jaxlearn.sweep"] == sweep
        assert run.data.tags["jaxlearn.status"] == "finished"
        assert float(run.data.params["learning_rate"]) == lr and run.data.params["width"] == "8"
        stored = runner.load(root).runs.set_index("run_id")
        assert run.data.params["optimizer.name"] == stored.loc[rid, "optimizer.name"]
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss"))
        assert [s for s, _ in history] == STEPS
        np.testing.assert_allclose([v for _, v in history], [r["train_loss"] for r in rows(root, rid)], rtol=1e-6)
        final = status(root, rid)["final_metrics"]["test_mse"]
        assert run.data.metrics["final/test_mse"] == pytest.approx(final, rel=1e-6)
    assert not (root / "teacher_student" / report.run_ids[0] / "events").exists()  # --log mlflow only

    # the same run again (resumed after step 30; or --force): its MLflow run reopened, and only what
    # MLflow lacks is sent, so no new run and no step twice; a later step is sent
    rid = report.run_ids[0]
    sink = sinks.make_sink("mlflow")
    info = sinks.RunInfo(rid, "teacher_student", "g", None, store.run_dir(root, "teacher_student", rid),
                         runner.to_dict(cs[0]))
    sink.start(info, rows(root, rid)[:3])
    sink.log(40, {"train_loss": 1.0})
    sink.log(50, {"train_loss": 2.0})
    sink.finish("finished")
    assert len(client.search_runs([exp.experiment_id])) == 2
    history = sorted((m.step, m.value) for m in client.get_metric_history(found[rid].info.run_id, "train_loss"))
    assert [s for s, _ in history] == [*STEPS, 50] and history[-2][1] != 1.0 and history[-1][1] == 2.0

    plot = tmp_path / "curves.png"
    plot.write_bytes(b"\x89PNG not really")
    sinks.log_sweep_plots(("mlflow",), sweep, "teacher_student", report.run_ids, [plot])
    (parent,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`jaxlearn.sweep_plots` = '{sweep}'")
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["curves.png"]
    for rid in report.run_ids:
        assert client.get_run(found[rid].info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_a_launcher_worker_opens_the_sinks_named_by_the_driver(experiment, tmp_path, monkeypatch):
    """A launcher's task carries the sink names and the sweep id; the worker (here: in process)
    opens them for its group's runs, whatever its own environment says."""
    pytest.importorskip("mlflow", reason="pip install 'jaxlearn[mlflow]' (make test installs it)")
    from mlflow.tracking import MlflowClient

    from jaxlearn.runner import launch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv(sinks.LOG_ENV, "tensorboard")  # the worker's own setting does not count
    cs = configs(experiment, seed=[5, 6])  # two members, as elsewhere in the module: the same compiled program
    ids = tuple(runner.run_id("teacher_student", experiment.version, c) for c in cs)
    task = launch.GroupTask("teacher_student", (str(REPO),), tuple(runner.to_dict(c) for c in cs), ids,
                            str(tmp_path / "runs"), sinks=("mlflow",), sweep="0123456789ab")
    assert launch.run_task(task)["computed"] == dict.fromkeys(ids, "finished")
    client = MlflowClient()
    found = client.search_runs([client.get_experiment_by_name("teacher_student").experiment_id])
    assert sorted(r.data.tags["jaxlearn.run_id"] for r in found) == sorted(ids)
    assert {r.data.tags["jaxlearn.sweep"] for r in found} == {"0123456789ab"}
    assert not (store.run_dir(tmp_path / "runs", "teacher_student", ids[0]) / "events").exists()


# --- W&B: offline, in a child process with a timeout ------------------------------------------------------


def wandb_records(path) -> list:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte file header, then
    LevelDB-style log records in 32 KiB blocks (crc32, 2-byte length, 1-byte type: full, first,
    middle, last) whose payloads are ``wandb_internal_pb2.Record`` protos."""
    from wandb.proto import wandb_internal_pb2

    data, i, payload, records = pathlib.Path(path).read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while i + 7 <= len(data):
        room = 32768 - i % 32768
        if room < 7:  # a block's tail too short for a record header is padding
            i += room
            continue
        n, kind = int.from_bytes(data[i + 4:i + 6], "little"), data[i + 6]
        payload += data[i + 7:i + 7 + n]
        i += 7 + n
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(payload))
            payload = b""
    return records


def test_wandb_offline_run_has_config_history_and_summary(tmp_path, child_env):
    pytest.importorskip("wandb", reason="pip install 'jaxlearn[wandb]' (make test installs it)")
    root = tmp_path / "runs"
    env = {**child_env, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true",
           "WANDB_INIT_TIMEOUT": "60"}
    command = [sys.executable, "-m", "jaxlearn", "run", TS, *CLI_TINY, "--sweep", "seed=0", "--sweep",
               "learning_rate=0.05,0.2", "--out", str(root), "--log", "wandb,tensorboard"]
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        output = child.communicate(timeout=150)[0]
    finally:
        if child.poll() is None:  # hung (W&B's service, say): the test fails, the suite goes on
            child.kill()
            child.communicate()
        leftover = _end_services(child.pid)
    assert child.returncode == 0, output[-3000:]
    assert not leftover, f"W&B service processes {leftover} outlived the run"
    sweep = output.split("(sweep:")[1].split(")")[0]
    run_dirs = sorted((root / "teacher_student").iterdir())
    assert len(run_dirs) == 2  # two W&B runs open side by side in one process
    for run_dir in run_dirs:
        rid = run_dir.name
        (log_file,) = tmp_path.glob(f"wandb/offline-run-*-{rid}/run-{rid}.wandb")
        records = wandb_records(log_file)
        (run,) = [r.run for r in records if r.HasField("run")]
        assert run.run_id == rid and run.run_group == sweep and run.project == "teacher_student"
        config = _items(run.config.update)
        for r in records:
            if r.HasField("config"):
                config.update(_items(r.config.update))
        assert config == store.read_json(run_dir / "run.json")["config"] | {"_wandb": config["_wandb"]}
        history = {}
        for r in records:
            if r.HasField("history"):
                items = _items(r.history.item)
                history[items["_step"]] = items
        assert sorted(history) == STEPS
        for row in rows(root, rid):
            assert history[row["step"]]["train_loss"] == pytest.approx(row["train_loss"], rel=1e-6)
        summary = {}
        for r in records:
            if r.HasField("summary"):
                summary.update(_items(r.summary.update))
        assert summary["test_mse"] == pytest.approx(status(root, rid)["final_metrics"]["test_mse"], rel=1e-6)
        assert summary["jaxlearn_status"] == "finished"
        assert [r.exit.exit_code for r in records if r.HasField("exit")] == [0]
        assert (run_dir / "events").is_dir()  # and tensorboard beside it


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def _services(parent: int) -> list[int]:
    """The W&B service processes (``wandb-core``, in a session of their own) serving ``parent``."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # it exited meanwhile
                continue
            if b"wandb-core" in args[0] and b"--pid" in args and args[args.index(b"--pid") + 1:][:1] == [
                    str(parent).encode()]:
                found.append(int(entry.name))
    return found


def _end_services(parent: int, timeout: float = 30.0) -> list[int]:
    """Waits for the W&B services of the ended process ``parent`` to exit (they watch it), kills
    the ones still there after ``timeout`` seconds, and returns those."""
    deadline = time.monotonic() + timeout
    while _services(parent) and time.monotonic() < deadline:
        time.sleep(0.1)  # a wait on a condition (they exit), bounded
    left = _services(parent)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left
