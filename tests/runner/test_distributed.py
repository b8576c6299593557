"""jaxlearn.runner.distributed: environment parsing (no processes started) and a real job of two
local processes joined through a localhost coordinator, communicating over gloo on CPU."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import jax
import pytest

from jaxlearn.runner import distributed
from jaxlearn.runner.distributed import Settings, first_host, settings_from_env

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
    ({"JAXLEARN_COORDINATOR": "h:1"}, "JAXLEARN_COORDINATOR set but JAXLEARN_NUM_PROCESSES, JAXLEARN_PROCESS_ID missing"),
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
    ({"coordinator_address": "localhost:1"}, ValueError, "coordinator_address given but num_processes, process_id missing"),
    ({"num_processes": 2, "process_id": 0}, ValueError, "num_processes, process_id given but coordinator_address missing"),
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
               XLA_FLAGS="--xla_force_host_platform_device_count=2")  # each child its own 2 devices, not 8
    address = f"localhost:{_free_port()}"
    own = {"JAXLEARN_COORDINATOR": address, "JAXLEARN_NUM_PROCESSES": "2", "JAXLEARN_PROCESS_ID": "1"}
    commands = [[sys.executable, "-c", CHILD, "0", str(tmp_path), address], [sys.executable, "-c", CHILD, "1", str(tmp_path)]]
    children = [subprocess.Popen(command, env={**env, **own} if i else env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for i, command in enumerate(commands)]
    outputs, deadline = [], time.monotonic() + 60
    try:
        for child in children:
            outputs.append(child.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()  # SIGKILL: JAX's preemption notifier catches SIGTERM and the child lives on
                child.communicate()
    for i, child in enumerate(children):
        assert child.returncode == 0, f"process {i} exited {child.returncode}:\n{outputs[i] if i < len(outputs) else ''}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["written_by_0.json"]
    result = json.loads((tmp_path / "written_by_0.json").read_text())
    pieces = [1.0, 2.0, 10.0, 20.0]  # process 0 holds [1, 2], process 1 holds [10, 20]
    assert result == {"total": sum(v * v for v in pieces), "gathered": [[0, 1], [1, 8]], "devices": 4, "processes": 2}
