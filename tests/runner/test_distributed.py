"""jaxlearn.runner.distributed: environment parsing (no processes started) and real jobs of two
local processes joined through a localhost coordinator, communicating over gloo on CPU: a global
mesh, and the runner computing a sweep across both processes (compared with one process, the
ground truth), crashing and resuming."""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from jaxlearn import runner
from jaxlearn.runner import distributed, placement, plan, store
from jaxlearn.runner.distributed import Settings, first_host, settings_from_env
from tests.runner.child_process import xla_flags

SLURM = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_JOB_ID": "123456",
         "SLURM_JOB_NODELIST": "gpu[07-09,12]", "SLURM_STEP_NODELIST": "gpu[08-09,12],cpu3"}
OWN = {"JAXLEARN_COORDINATOR": "10.0.0.1:1234", "JAXLEARN_NUM_PROCESSES": "3", "JAXLEARN_PROCESS_ID": "1"}


@pytest.mark.parametrize("nodelist, host", [
    ("node7", "node7"), ("a,b", "a"), ("gpu[07-09,12],cpu3", "gpu07"), ("n[3]", "n3"),
    ("rack[1-2]-node[003-004]", "rack1-node003"), ("x[12,4-5]y.cluster", "x12y.cluster"),
])
def test_first_host(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize("nodelist", ["", ",a", "n[1-2", "n[a]", "n]", "[", "a b"])
def test_first_host_rejects_malformed(nodelist):
    with pytest.raises(ValueError, match="nodelist must be a SLURM hostlist"):
        first_host(nodelist)


def test_settings_own_variables_win_over_slurm():
    assert settings_from_env({**SLURM, **OWN}) == Settings("10.0.0.1:1234", 3, 1, "JAXLEARN_*")


def test_settings_slurm_step_nodelist_and_job_id_port():
    settings = settings_from_env(SLURM)
    # the port of job 123456: 4096 ports below 65536, offset by the job id modulo 4096
    assert settings == Settings(f"gpu08:{65536 - 4096 + 123456 % 4096}", 4, 2, "SLURM")
    job_only = {k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}
    assert settings_from_env({**job_only, "JAXLEARN_COORDINATOR_PORT": "29500"}).coordinator_address == "gpu07:29500"


def test_settings_auto_when_nothing_is_set():
    assert settings_from_env({"HOME": "/root"}) == Settings(None, None, None, "auto")


@pytest.mark.parametrize("env, message", [
    ({"JAXLEARN_COORDINATOR": "h:1"},
     "JAXLEARN_COORDINATOR set but JAXLEARN_NUM_PROCESSES, JAXLEARN_PROCESS_ID missing"),
    ({**OWN, "JAXLEARN_PROCESS_ID": "3"}, r"JAXLEARN_PROCESS_ID must be in 0\.\.2"),
    ({**OWN, "JAXLEARN_NUM_PROCESSES": "two"}, "JAXLEARN_NUM_PROCESSES must be an integer, got 'two'"),
    ({**OWN, "JAXLEARN_NUM_PROCESSES": "0"}, "JAXLEARN_NUM_PROCESSES must be >= 1"),
    ({**OWN, "JAXLEARN_COORDINATOR": "10.0.0.1"}, "JAXLEARN_COORDINATOR must be 'host:port'"),
    ({**OWN, "JAXLEARN_COORDINATOR": "h:70000"}, "JAXLEARN_COORDINATOR must be 'host:port'"),
    ({"SLURM_PROCID": "0"}, "SLURM_PROCID is set but SLURM_NTASKS is not"),
    ({**SLURM, "SLURM_PROCID": "4"}, r"SLURM_PROCID must be in 0\.\.3"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": "1"}, "neither SLURM_STEP_NODELIST nor"),
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n1"}, "set JAXLEARN_COORDINATOR_PORT"),
])
def test_settings_errors(env, message):
    with pytest.raises(ValueError, match=message):
        settings_from_env(env)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"coordinator_address": "localhost:1"}, ValueError,
     "coordinator_address given but num_processes, process_id missing"),
    ({"num_processes": 2, "process_id": 0}, ValueError,
     "num_processes, process_id given but coordinator_address missing"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, ValueError, r"process_id must be in 0\.\.1"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": -1}, ValueError, r"process_id must be in 0\.\.1"),
    ({"coordinator_address": "h:1", "num_processes": 2.0, "process_id": 0}, TypeError, "num_processes must be an int"),
    ({"coordinator_address": 1234, "num_processes": 2, "process_id": 0}, TypeError, "coordinator_address must be"),
    ({"local_device_ids": "0,1"}, TypeError, "local_device_ids must be"),
    ({"local_device_ids": [0, -1]}, TypeError, "local_device_ids must be"),
])
def test_initialize_rejects_bad_arguments_before_starting(kwargs, error, message):
    with pytest.raises(error, match=message):
        distributed.initialize(**kwargs)
    assert not jax.distributed.is_initialized()


def test_is_writer_in_a_single_process():
    assert distributed.is_writer()


# One process of the job: its half of a global vector lives on its 2 local devices; the jitted
# sum over the 4-device global mesh and the all-gather both need the other process's data.
CHILD = textwrap.dedent("""
    import json, pathlib, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from jaxlearn.runner import distributed

    process_id, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    # process 0 is configured by arguments, process 1 by the JAXLEARN_* environment variables
    settings = distributed.initialize(sys.argv[3], 2, 0) if process_id == 0 else distributed.initialize()
    assert settings.source == ("arguments" if process_id == 0 else "JAXLEARN_*"), settings
    try:
        distributed.initialize()
        raise AssertionError("a second initialize() did not raise")
    except RuntimeError as err:
        assert "already initialized" in str(err)
    assert jax.process_count() == 2 and jax.process_index() == process_id
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("x",)), PartitionSpec("x"))
    local = np.array([1.0, 2.0], np.float32) * 10.0 ** process_id
    global_x = jax.make_array_from_process_local_data(sharding, local, (4,))
    total = jax.jit(lambda x: jnp.sum(x ** 2), out_shardings=NamedSharding(sharding.mesh, PartitionSpec()))(global_x)
    gathered = multihost_utils.process_allgather(np.array([process_id, 7 * process_id + 1]))
    if distributed.is_writer():
        (out / f"written_by_{jax.process_index()}.json").write_text(json.dumps(
            {"total": float(total), "gathered": np.asarray(gathered).tolist(),
             "devices": jax.device_count(), "processes": jax.process_count()}))
    jax.distributed.shutdown()
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_local_processes_share_a_global_mesh(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXLEARN_", "SLURM_", "JAX_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               XLA_FLAGS=xla_flags(2))  # each child its own 2 devices, not 8
    address = f"localhost:{_free_port()}"
    own = {"JAXLEARN_COORDINATOR": address, "JAXLEARN_NUM_PROCESSES": "2", "JAXLEARN_PROCESS_ID": "1"}
    commands = [[sys.executable, "-c", CHILD, "0", str(tmp_path), address],
                [sys.executable, "-c", CHILD, "1", str(tmp_path)]]
    children = [subprocess.Popen(command, env={**env, **own} if i else env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for i, command in enumerate(commands)]
    outputs = _finish(children, 60)
    for i, child in enumerate(children):
        assert child.returncode == 0, f"process {i} exited {child.returncode}:\n{outputs[i]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["written_by_0.json"]
    result = json.loads((tmp_path / "written_by_0.json").read_text())
    pieces = [1.0, 2.0, 10.0, 20.0]  # process 0 holds [1, 2], process 1 holds [10, 20]
    assert result == {"total": sum(v * v for v in pieces), "gathered": [[0, 1], [1, 8]], "devices": 4, "processes": 2}


# --- the runner across processes ------------------------------------------------------------------

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "population_digits.yaml")
# 3 members over 2 processes x 2 devices: the member axis is padded to 4; 4 segments, a snapshot.
OVERRIDES = ["widths=[16]", "num_steps=40", "segment_steps=10", "snapshots=[20]", "learning_rate=0.1"]
SWEEPS = ["seed=0,1,2"]
TOL = 1e-5  # float32; measured: identical here, at most 2.4e-7 apart with the smoke width 32

# One process of a runner job. An audit hook records every write this process makes under the run
# root (files opened for writing, renames, links, deletions, directories, SQLite connections),
# so the test can check that process 1 wrote nothing; orbax's C++ writes are not seen (orbax
# writes numpy leaves from process 0 only).
RUN_CHILD = textwrap.dedent("""
    import json, os, pathlib, sys
    root, log = os.path.realpath(sys.argv[1]), sys.argv[2]
    writes = []
    WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path):
        if path is None or isinstance(path, int):
            return False
        path = os.path.realpath(os.fsdecode(os.fspath(path)))
        return path == root or path.startswith(root + os.sep)

    def audit(event, args):
        if event == "open":
            path, mode, flags = args
            if (any(c in mode for c in "wax+") if mode else flags & WRITE_FLAGS) and inside(path):
                writes.append([event, os.fsdecode(os.fspath(path))])
        elif event in ("os.rename", "os.link", "os.symlink"):
            if inside(args[0]) or inside(args[1]):
                writes.append([event, os.fsdecode(os.fspath(args[1]))])
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "os.truncate", "os.chmod",
                       "sqlite3.connect"):
            if inside(args[0]):
                writes.append([event, os.fsdecode(os.fspath(args[0]))])

    sys.addaudithook(audit)
    from jaxlearn.runner import distributed
    distributed.initialize()
    import jax
    from jaxlearn import runner
    experiment, configs = runner.resolve(sys.argv[3], variant="smoke", overrides=json.loads(sys.argv[4]),
                                         sweeps=json.loads(sys.argv[5]))
    from jaxlearn.runner.execute import env_hook
    report = runner.run_sweep(experiment, configs, root=root, progress=False, hook=env_hook())
    # the command line on the finished sweep: nothing to compute; process 0 alone records and plots
    from jaxlearn.runner import cli
    code = cli.main(["run", sys.argv[3], "--variant", "smoke", "--out", root, "--quiet",
                     *[f"--set={o}" for o in json.loads(sys.argv[4])],
                     *[f"--sweep={a}" for a in json.loads(sys.argv[5])]])
    pathlib.Path(log).write_text(json.dumps({"writes": writes, "computed": report.computed, "cli": code,
                                             "skipped": list(report.skipped), "processes": jax.process_count()}))
    jax.distributed.shutdown()
""")


def _job_env(address: str, process_id: int, **extra) -> dict:
    """A child's environment: none of the session's JAX/XLA/JAXLEARN/SLURM settings (not its 8
    emulated devices; its XLA flags otherwise), 2 CPU devices of its own, gloo collectives, its place in
    the job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXLEARN_", "SLURM_", "JAX_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               XLA_FLAGS=xla_flags(2), JAXLEARN_COORDINATOR=address,
               JAXLEARN_NUM_PROCESSES="2", JAXLEARN_PROCESS_ID=str(process_id), **extra)
    return env


def _start_job(command, *, extra=({}, {})) -> list[subprocess.Popen]:
    """Starts ``command(process_id)`` as the two processes of one job."""
    address = f"localhost:{_free_port()}"
    return [subprocess.Popen(command(i), env=_job_env(address, i, **extra[i]), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _finish(children, timeout: float = 120.0) -> list[str]:
    """Waits for every child (outputs, in order); SIGKILLs those still alive after ``timeout``."""
    outputs, deadline = [], time.monotonic() + timeout
    try:
        for child in children:
            outputs.append(child.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()  # SIGKILL: JAX's preemption notifier catches SIGTERM
                child.communicate()
    return outputs


def _sweep_command(root, logs):
    return lambda i: [sys.executable, "-c", RUN_CHILD, str(root), str(logs / f"process_{i}.json"), CONFIG,
                      json.dumps(OVERRIDES), json.dumps(SWEEPS)]


@pytest.fixture(scope="module")
def sweep_configs():
    return runner.resolve(CONFIG, variant="smoke", overrides=OVERRIDES, sweeps=SWEEPS)


@pytest.fixture(scope="module")
def one_process(sweep_configs, tmp_path_factory):
    """The ground truth: the same sweep in this single process, on one device."""
    root = tmp_path_factory.mktemp("one_process")
    report = runner.run_sweep(*sweep_configs, root=root, progress=False, devices=1)
    assert list(report.computed.values()) == ["finished"] * 3
    return root, report.run_ids


def assert_same_results(root, reference) -> float:
    """Every run file that holds numbers equals the reference's within ``TOL``; returns the
    largest difference."""
    ref_root, run_ids = reference
    largest = 0.0
    for rid in run_ids:
        a, b = (store.run_dir(r, "population_digits", rid) for r in (root, ref_root))
        status_a, status_b = (store.read_json(p / "status.json") for p in (a, b))
        assert status_a["status"] == status_b["status"] == "finished" and status_a["step"] == 40
        for name in ("state_final.npz", "snapshots/step_00000020.npz"):
            with np.load(a / name) as x, np.load(b / name) as y:
                assert x.files == y.files
                for leaf in x.files:
                    assert x[leaf].dtype == y[leaf].dtype and x[leaf].shape == y[leaf].shape
                    np.testing.assert_allclose(x[leaf], y[leaf], rtol=TOL, atol=TOL, err_msg=leaf)
                    if np.issubdtype(x[leaf].dtype, np.floating):
                        largest = max(largest, float(np.max(np.abs(x[leaf] - y[leaf]))))
                    else:
                        np.testing.assert_array_equal(x[leaf], y[leaf], err_msg=leaf)  # keys, step counts
        rows_a, rows_b = store.read_jsonl(a / "metrics.jsonl"), store.read_jsonl(b / "metrics.jsonl")
        assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [10, 20, 30, 40]
        final_a, final_b = status_a["final_metrics"], status_b["final_metrics"]
        assert final_a.keys() == final_b.keys() and "test_accuracy" in final_a
        for ra, rb in [*zip(rows_a, rows_b), (final_a, final_b)]:
            assert ra.keys() == rb.keys()
            np.testing.assert_allclose([ra[k] for k in ra], [rb[k] for k in ra], rtol=TOL, atol=TOL)
            largest = max(largest, max(abs(ra[k] - rb[k]) for k in ra))
    return largest


def test_plan_travels_as_run_ids(sweep_configs, tmp_path):
    experiment, configs = sweep_configs
    runs = plan.make_runs(experiment, configs)
    planned = plan.plan_runs(experiment, runs, tmp_path, max_group_size=2)
    sent = json.loads(json.dumps(plan.plan_to_json(planned)))
    assert sent == {"groups": [[r.run_id for r in runs[:2]], [runs[2].run_id]], "done": [], "busy": []}
    assert plan.plan_from_json(experiment, sent, runs, tmp_path) == planned
    assert distributed.broadcast_json(sent) is sent  # one process: the value itself
    assert placement.group_devices(None, 3) == placement.local_devices(None, 3)


@pytest.mark.slow
def test_two_processes_compute_a_sweep_as_one_process_does(one_process, tmp_path):
    root, logs = tmp_path / "runs", tmp_path / "logs"
    logs.mkdir()
    children = _start_job(_sweep_command(root, logs))
    outputs = _finish(children)
    for i, child in enumerate(children):
        assert child.returncode == 0, f"process {i} exited {child.returncode}:\n{outputs[i][-3000:]}"
    log0, log1 = (json.loads((logs / f"process_{i}.json").read_text()) for i in range(2))
    assert log0["processes"] == log1["processes"] == 2
    assert log0["computed"] == log1["computed"] == dict.fromkeys(one_process[1], "finished")
    assert log0["cli"] == log1["cli"] == 0
    # process 1 wrote nothing under the run root but XLA's compilation cache (shared by design)
    assert [w for w in log1["writes"] if "_jax_cache" not in pathlib.Path(w[1]).parts] == []
    written = {pathlib.Path(path).name for _, path in log0["writes"]}  # the hook does see writes
    assert {"metrics.jsonl", "state_final.npz", "committed.json", "members.json", "index.sqlite",
            "curves.png"} <= written
    assert len(list((root / "_sweeps").glob("*.json"))) == 1
    assert assert_same_results(root, one_process) <= TOL
    for rid in one_process[1]:
        assert store.read_json(store.run_dir(root, "population_digits", rid) / "provenance.json")["process_count"] == 2
    assert not any((root / "_groups").iterdir())


@pytest.mark.slow
def test_two_process_job_resumes_after_a_crash(one_process, tmp_path):
    """Process 0 SIGKILLs itself after the commit of segment 1 (the other process dies with the
    job); the job restarted with two processes (``jaxlearn resume --distributed``) and, from a
    copy, with one process both finish with the uninterrupted result."""
    root, logs = tmp_path / "runs", tmp_path / "logs"
    logs.mkdir()
    children = _start_job(_sweep_command(root, logs), extra=({"JAXLEARN_TEST_KILL_AT": "after_commit:1"}, {}))
    try:
        outputs = [children[0].communicate(timeout=120)[0]]
    finally:
        for child in children:  # the job is lost with process 0: kill the other process too
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.communicate()
    assert children[0].returncode == -signal.SIGKILL, outputs[0][-3000:]
    (group,) = (root / "_groups").iterdir()
    assert store.read_json(group / "committed.json")["step"] == 20
    rid = one_process[1][0]
    # segment 2's metrics were written but not committed: a resume must drop them
    metrics = store.read_jsonl(store.run_dir(root, "population_digits", rid) / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [10, 20, 30]
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)

    children = _start_job(lambda i: [sys.executable, "-m", "jaxlearn", "resume", rid, "--out", str(root),
                                     "--distributed", "--quiet"])
    outputs = _finish(children)
    for i, child in enumerate(children):
        assert child.returncode == 0, f"process {i} exited {child.returncode}:\n{outputs[i][-3000:]}"
        assert "resumed group of 3 runs" in outputs[i]
    assert assert_same_results(root, one_process) <= TOL

    report = runner.run_sweep(*runner.resolve(CONFIG, variant="smoke", overrides=OVERRIDES, sweeps=SWEEPS),
                              root=copy, progress=False)  # this process: 3 of its 8 devices
    assert report.computed == dict.fromkeys(one_process[1], "finished")
    assert assert_same_results(copy, one_process) <= TOL
