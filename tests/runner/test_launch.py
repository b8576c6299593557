"""Cluster launchers (issue 11): a sweep's groups as Ray tasks on a real local Ray instance and as
submitit jobs on its local executor, writing to one run store; a worker killed mid-group is
retried and resumes from its last commit; finished runs are never recomputed."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jaxlearn import runner
from jaxlearn.runner import cli, launch, store
from jaxlearn.runner.config import ConfigError
from jaxlearn.runner.execute import PAUSE_ENV, RESUME_ENV
from tests.runner.child_process import finish

REPO = pathlib.Path(__file__).resolve().parents[2]
TS = str(REPO / "configs" / "teacher_student.yaml")
TINY = ["learning_rate=0.1", "width=8", "d_in=4", "teacher_width=4", "n_train=64", "batch_size=16", "num_steps=20",
        "segment_steps=10"]
SEEDS = "seed=0,1,2,3"  # with --max-group-size 2 (learning_rate pinned): two groups of two runs
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # no token file, no usage report


def _configs(overrides):
    return runner.resolve(TS, variant="smoke", overrides=overrides, sweeps=[SEEDS])


def _local(root, overrides):
    experiment, configs = _configs(overrides)
    return runner.run_sweep(experiment, configs, root=root, progress=False, max_group_size=2, devices=1)


def _finals(root) -> dict:
    """run_id -> (final metrics, final state arrays, metric rows) of every run under ``root``."""
    out = {}
    for status in sorted(pathlib.Path(root, "teacher_student").glob("*/status.json")):
        record = json.loads(status.read_text())
        with np.load(status.parent / "state_final.npz") as npz:
            state = {k: npz[k] for k in npz.files}
        out[status.parent.name] = (record["status"], record["final_metrics"], state,
                                   store.read_jsonl(status.parent / "metrics.jsonl"))
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b) and a
    for run_id in a:
        (sa, ma, xa, ra), (sb, mb, xb, rb) = a[run_id], b[run_id]
        assert sa == sb == "finished"
        assert ma.keys() == mb.keys() and all(np.isclose(ma[k], mb[k], rtol=1e-6, atol=1e-7) for k in ma)
        assert xa.keys() == xb.keys()
        for k in xa:
            np.testing.assert_allclose(xa[k], xb[k], rtol=1e-6, atol=1e-7, err_msg=f"{run_id} {k}")
        assert [r["step"] for r in ra] == [r["step"] for r in rb]  # every step exactly once


def _cli(root, overrides, *extra, wait=True):
    """``jaxlearn run`` in a child process (Ray is started by, and stopped with, that process)."""
    command = [sys.executable, "-m", "jaxlearn", "run", TS, "--variant", "smoke", "--out", str(root), "--no-plot",
               "--quiet", "--max-group-size", "2", "--devices", "1", "--sweep", SEEDS,
               *[f"--set={o}" for o in overrides], *extra]
    env = {**os.environ, **RAY_ENV}
    child = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return child
    return _finish(child, 240)


def _finish(child, timeout):
    code, output = finish(child, timeout)
    assert code == 0, output
    return output


# -- bad input: one line, before anything is planned or started ---------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--launcher-opt", "num_cpus=1"], "--launcher-opt/--address: only with --launcher ray or slurm"),
    (["--launcher", "slurm", "--address", "auto"], "--address: only with --launcher ray"),
    (["--launcher", "ray", "--launcher-opt", "num_cpu=1"], "--launcher-opt num_cpu: not a Ray task option"),
    (["--launcher", "ray", "--launcher-opt", "num_cpus"], "expected key=value"),
    (["--launcher", "ray", "--retries", "-1"], "--retries: expected an int >= 0, got -1"),
    (["--launcher", "ray", "--distributed"], "--distributed: not with --launcher"),
])
def test_bad_launcher_input_is_one_line_error(args, message, tmp_path, capsys, monkeypatch):
    def no_launch(*a, **k):
        raise AssertionError("launched before validating")

    monkeypatch.setattr(launch, "launch_sweep", no_launch)
    monkeypatch.setattr("jaxlearn.runner.distributed.initialize", lambda: None)
    assert cli.main(["run", TS, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, message", [
    ({"launcher": "dask"}, "launcher: expected one of ray, slurm, got 'dask'"),
    ({"retries": 1.5}, "retries: expected an int >= 0"),
    ({"options": {"num_gpu": 1}}, "--launcher-opt num_gpu: not a Ray task option"),
])
def test_launch_sweep_rejects_bad_arguments(kwargs, message, tmp_path):
    experiment, configs = _configs(TINY)
    with pytest.raises(ConfigError, match=message):
        launch.launch_sweep(experiment, configs, root=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("launcher, package", [("ray", "ray"), ("slurm", "submitit")])
def test_missing_package_names_the_extra(launcher, package, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    assert cli.main(["run", TS, "--out", str(tmp_path), "--launcher", launcher]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"jaxlearn run: error: --launcher {launcher} needs the {package} package: "
                   "pip install 'jaxlearn[cluster]'")


def test_worker_with_other_code_refuses_the_task(tmp_path):
    experiment, configs = _configs(TINY)
    runs = [runner.run_id(experiment.name, experiment.version, c) for c in configs[:2]]
    task = launch.GroupTask(experiment.name, launch._search_paths(experiment),
                            tuple(runner.to_dict(c) for c in configs[:2]), (runs[1], runs[0]), str(tmp_path))
    with pytest.raises(launch.LaunchError, match="computes other run ids than the driver's"):
        launch.run_task(task)
    assert not any(tmp_path.iterdir())
    assert launch._search_paths(experiment) == (str(REPO),)


def test_run_task_computes_a_group_like_run_sweep(tmp_path):
    """The worker side, in process: one task is one claimed, computed group."""
    experiment, configs = _configs(TINY)
    configs = configs[:2]
    ids = tuple(runner.run_id(experiment.name, experiment.version, c) for c in configs)
    task = launch.GroupTask(experiment.name, launch._search_paths(experiment),
                            tuple(runner.to_dict(c) for c in configs), ids, str(tmp_path / "a"), devices=1)
    result = launch.run_task(task)
    assert result["computed"] == {i: "finished" for i in ids} and result["busy"] == []
    assert result["resumed_from"] is None
    again = launch.run_task(task)  # finished: nothing is recomputed
    assert again["computed"] == {}
    runner.run_sweep(experiment, configs, root=tmp_path / "b", progress=False, devices=1)
    _assert_same(_finals(tmp_path / "a"), _finals(tmp_path / "b"))


# -- Ray, for real: a local instance ------------------------------------------------------------------------------

MID = [*TINY[:-2], "num_steps=40", "segment_steps=10"]  # four segments


@pytest.fixture
def ray_cluster(tmp_path):
    """A Ray head of 2 CPUs started the way a cluster is (``ray start --head --block``); yields its
    address and a resume file. Its workers pause after their group's commit of segment 1 (the
    executor's test hook) until that file exists. Stopped by SIGTERM to that command (its process
    group is SIGKILLed if it hangs), so other Ray instances on the machine are left alone."""
    pytest.importorskip("ray", reason="the [cluster] extra is not installed (make test installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    resume = tmp_path / "resume"
    env = {**os.environ, **RAY_ENV, PAUSE_ENV: "after_commit:1", RESUME_ENV: str(resume)}
    head = subprocess.Popen([str(pathlib.Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                             "--num-cpus=2", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        for line in head.stdout:  # ready once it says so
            lines.append(line)
            if "Ray runtime started" in line:
                break
        else:
            raise AssertionError("the Ray head did not start:\n" + "".join(lines))
        yield f"127.0.0.1:{port}", resume
    finally:
        resume.touch()  # no worker is left waiting
        head.terminate()  # `ray start --block` stops its head's processes and exits
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        head.stdout.close()


@pytest.mark.slow
def test_ray_worker_killed_mid_group_is_resumed_from_its_checkpoint(tmp_path, ray_cluster):
    """On a running 2-CPU Ray cluster (``--address``): a worker SIGKILLed while its group waits
    after committing segment 1; Ray runs the task again, which resumes from that commit. (Both
    groups wait there until the kill is done, so neither can finish first.) The runs equal the same
    sweep computed locally, and launching it again computes nothing. (A Ray instance that the driver
    starts itself is exercised by the test of a group that raises.)"""
    address, resume = ray_cluster
    root = tmp_path / "ray"
    child = _cli(root, MID, "--launcher", "ray", "--address", address, "--retries", "2", "--launcher-opt", "num_cpus=1",
                 wait=False)
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline and child.poll() is None:
        for committed in root.glob("_groups/*/committed.json"):
            try:
                record = json.loads(committed.read_text())
            except (OSError, ValueError):
                continue
            if record["segment"] == 1:  # its worker waits there
                members = json.loads((committed.parent / "members.json").read_text())["runs"]
                claim = json.loads((root / "teacher_student" / members[0] / ".claim").read_text())
                assert claim["pid"] not in (child.pid, os.getpid())  # a Ray worker, not the driver
                os.kill(claim["pid"], signal.SIGKILL)
                victim = members, record["step"]
                break
        time.sleep(0.02)
    resume.touch()
    output = _finish(child, 240)
    assert victim is not None, f"no group committed a segment before the sweep ended:\n{output}"
    members, killed_after = victim
    line = next(line for line in output.splitlines() if f"({members[0][:8]}...)" in line)
    resumed = int(line.split("resumed from step ")[1].split(")")[0])
    assert resumed == killed_after == 20, line  # continued from the commit, not from step 0
    assert "[2/2 groups" in output and "4 runs: 4 computed, 0 already finished" in output, output
    _local(tmp_path / "local", MID)
    _assert_same(_finals(root), _finals(tmp_path / "local"))
    assert not any((root / "_groups").iterdir())  # every group checkpoint removed once finished
    again = _cli(root, MID, "--launcher", "ray", "--address", address)
    assert "4 runs: 0 computed, 4 already finished" in again, again  # nothing is sent to Ray again


# -- submitit, on its local executor ------------------------------------------------------------------------------

@pytest.mark.slow
def test_submitit_local_executor_with_a_job_that_dies(tmp_path, monkeypatch):
    """The first attempt of the group SIGKILLs itself after its second commit (the executor's
    test hook); the driver resubmits the job, which resumes there and finishes. (One group of
    four runs: submitit waits 15 s for the result file of each job that died.)"""
    pytest.importorskip("submitit", reason="the [cluster] extra is not installed (make test installs it)")
    experiment, configs = _configs(TINY)
    monkeypatch.setenv("JAXLEARN_TEST_KILL_AT", "after_commit:1")
    report = launch.launch_sweep(experiment, configs, root=tmp_path / "slurm", launcher="slurm", cluster="local",
                                 devices=1, options={"timeout_min": 5}, poll_s=0.2)
    monkeypatch.delenv("JAXLEARN_TEST_KILL_AT")
    assert sorted(report.computed) == sorted(report.run_ids) and set(report.computed.values()) == {"finished"}
    assert list(report.resumed.values()) == [20]  # the commit of segment 1 (step 20)
    assert not (tmp_path / "slurm" / "_launch").exists()  # no pickled submission or result left behind
    _local(tmp_path / "local", TINY)
    _assert_same(_finals(tmp_path / "slurm"), _finals(tmp_path / "local"))


# An experiment whose groups with ``explode=True`` raise in the worker (in ``data``, before any
# compile); every call appends a line to ``calls.txt`` beside it, so retries can be counted.
EXPLODING = textwrap.dedent("""
    \"\"\"Test experiment: a group with explode=True raises in its worker.\"\"\"
    import dataclasses, pathlib
    import jax.numpy as jnp
    from jaxlearn import runner

    VERSION = "1"

    @dataclasses.dataclass(frozen=True)
    class Config:
        seed: int = runner.dynamic(0, min=0)
        explode: bool = runner.static(False)
        num_steps: int = runner.static(4, min=1)
        segment_steps: int = runner.static(2, min=1)

    def data(config):
        with open(pathlib.Path(__file__).with_name("calls.txt"), "a") as calls:
            calls.write(f"explode={config.explode}\\n")
        if config.explode:
            raise ValueError("boom: this group cannot run")
        return jnp.ones(3)

    def init(config, key):
        return {"w": jnp.zeros(3)}

    def segment(state, config, data):
        w = state["w"] + config.segment_steps * data
        return {"w": w}, {"norm": jnp.sqrt(jnp.sum(w ** 2))}
""")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["ray", "slurm"])
def test_a_group_that_raises_is_not_retried_and_the_others_finish(launcher, tmp_path):
    """Ray through the command line (exit 1, one line naming the error), submitit in process."""
    pytest.importorskip("ray" if launcher == "ray" else "submitit",
                        reason="the [cluster] extra is not installed (make test installs it)")
    package = tmp_path / "jl_launch_exploding"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "boom.py").write_text(EXPLODING)
    root = tmp_path / "runs"
    if launcher == "ray":
        (tmp_path / "configs").mkdir()
        config = tmp_path / "configs" / "boom.yaml"
        config.write_text("experiment: jl_launch_exploding.boom\nsweep:\n  explode: [false, true]\n")
        command = [sys.executable, "-m", "jaxlearn", "run", str(config), "--out", str(root), "--launcher", "ray",
                   "--quiet", "--no-plot"]
        env = {**os.environ, **RAY_ENV}
        child = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
        assert child.returncode == 1, child.stdout + child.stderr
        message = child.stderr.strip().splitlines()[-1]
        assert message.startswith("jaxlearn run: error: "), child.stderr
        message = message.removeprefix("jaxlearn run: error: ")
    else:
        experiment = runner.load_experiment("jl_launch_exploding.boom", [tmp_path])
        configs = [experiment.config_cls(seed=0, explode=False), experiment.config_cls(seed=0, explode=True)]
        with pytest.raises(launch.LaunchError) as err:
            launch.launch_sweep(experiment, configs, root=root, launcher="slurm", cluster="local", retries=2,
                                options={"timeout_min": 5}, poll_s=0.2)
        message = str(err.value)
    assert "\n" not in message and message.startswith("1 of 2 groups failed"), message
    assert message.endswith("ValueError: boom: this group cannot run"), message
    statuses = {json.loads((d / "run.json").read_text())["config"]["explode"]:
                    json.loads((d / "status.json").read_text())
                for d in (root / "jl_launch_exploding.boom").iterdir()}
    assert (statuses[False]["status"] == "finished"
            and statuses[False]["final_metrics"]["norm"] == pytest.approx(4 * 3 ** 0.5))
    assert statuses[True]["status"] == "failed" and "boom" in statuses[True]["error"]
    calls = (package / "calls.txt").read_text().splitlines()
    assert sorted(calls) == ["explode=False", "explode=True"]  # the failing group ran once: no retry


@pytest.mark.slow
def test_an_interrupted_driver_cancels_its_jobs_and_the_sweep_resumes(tmp_path, monkeypatch):
    """Ctrl-C in the driver once a group has committed a segment: the job is cancelled (its runs'
    claims come free), and launching again resumes the group from that commit. The job waits
    after its first commit until it is cancelled (the executor's pause hook), so it cannot
    finish its runs before the Ctrl-C takes effect, however loaded the machine is."""
    pytest.importorskip("submitit", reason="the [cluster] extra is not installed (make test installs it)")
    experiment, configs = _configs(TINY)
    configs = configs[:2]
    root = tmp_path / "slurm"
    seen = {}

    def interrupt_after_a_commit(seconds):
        for committed in root.glob("_groups/*/committed.json"):
            seen["step"] = json.loads(committed.read_text())["step"]
            raise KeyboardInterrupt
        time.sleep(0.05)

    monkeypatch.setenv(PAUSE_ENV, "after_commit:0")  # no resume file: the job waits until cancelled
    monkeypatch.setattr(launch, "_wait", interrupt_after_a_commit)
    with pytest.raises(KeyboardInterrupt):
        launch.launch_sweep(experiment, configs, root=root, launcher="slurm", cluster="local", devices=1,
                            options={"timeout_min": 5})
    monkeypatch.undo()
    run_dirs = [store.run_dir(root, experiment.name, runner.run_id(experiment.name, experiment.version, c))
                for c in configs]
    deadline = time.monotonic() + 30
    while True:  # the cancelled job lets go of its runs
        claims = [store.RunClaim.try_acquire(d) for d in run_dirs]
        free = all(c is not None for c in claims)
        for claim in claims:
            if claim is not None:
                claim.release()
        if free or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert free, "the cancelled job still holds its runs"
    assert not any((root / "_launch" / "submitit").glob("*/*.pkl"))
    report = launch.launch_sweep(experiment, configs, root=root, launcher="slurm", cluster="local", devices=1,
                                 options={"timeout_min": 5}, poll_s=0.2)
    assert set(report.computed.values()) == {"finished"} and len(report.computed) == 2
    assert list(report.resumed.values())[0] >= seen["step"] > 0


def test_an_interrupted_ray_driver_cancels_its_tasks(monkeypatch):
    """The driver's side of Ctrl-C with Ray, against a stand-in for the ``ray`` module: every task
    still pending is cancelled (force: the worker process is stopped) and a Ray instance the
    driver started is shut down."""
    calls = []

    class Remote:
        def options(self, **kw):
            calls.append(("options", kw))
            return self

        def remote(self, task):
            return f"ref-{task}"

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kw):
            calls.append(("init", kw))

        def remote(self, fn):
            assert fn is launch.run_task
            return Remote()

        def wait(self, refs, num_returns, timeout):
            raise KeyboardInterrupt

        def cancel(self, ref, force):
            calls.append(("cancel", ref, force))

        def shutdown(self):
            calls.append(("shutdown",))

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(KeyboardInterrupt):
        launch._dispatch_ray(FakeRay(), ["a", "b"], root=None, options={"num_gpus": 1}, retries=3, address=None,
                             cluster=None, log=None, poll_s=None)
    assert calls == [("init", {"address": "local", "log_to_driver": False}),  # never a stale `ray start`
                     ("options", {"max_retries": 3, "retry_exceptions": False, "num_cpus": 1, "num_gpus": 1}),
                     ("cancel", "ref-a", True), ("cancel", "ref-b", True), ("shutdown",)]
