"""Multi-host runs: join the processes of one job with ``jax.distributed.initialize`` and pick
the process that writes (process 0).

Every process of a multi-host job runs the same program on its own host's devices; after
``initialize`` the devices of all processes form one global device list (``jax.devices()``),
so a ``jit`` over a mesh of all of them communicates across hosts. Settings come from, in order:

1. the arguments of :func:`initialize` (all three of ``coordinator_address``, ``num_processes``,
   ``process_id``, or none of them);
2. our own environment variables ``JAXLEARN_COORDINATOR`` (``host:port``),
   ``JAXLEARN_NUM_PROCESSES`` and ``JAXLEARN_PROCESS_ID`` (all three or none);
3. SLURM: ``SLURM_NTASKS`` processes, this one ``SLURM_PROCID``, the coordinator on the first
   host of ``SLURM_STEP_NODELIST`` (else ``SLURM_JOB_NODELIST``) at port
   ``JAXLEARN_COORDINATOR_PORT`` or, when unset, a port derived from ``SLURM_JOB_ID`` so that
   every task computes the same one without talking to the others;
4. else ``jax.distributed.initialize()`` detects the cluster itself (Cloud TPU pods, GKE,
   Open MPI, ...).

The ``*_from_env`` helpers only read a mapping and never start anything, so they can be tested
(and called to log what *would* happen) anywhere.

Conventions of a multi-process runner job (``jax.process_count() > 1``; see
:mod:`jaxlearn.runner.sweep` and :mod:`jaxlearn.runner.execute`): every process runs the same
command on a shared filesystem; process 0 alone plans, takes the run claims, reads the decisions
other processes must share (which runs, which commit to resume from) and sends them to the
others with :func:`broadcast_json`; process 0 alone writes run files (:func:`is_writer`); every
process takes part in every computation and in every orbax checkpoint save.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxlearn._checks import is_int

__all__ = ["Settings", "broadcast_json", "first_host", "initialize", "is_multiprocess", "is_writer",
           "settings_from_env"]

OWN_VARIABLES = ("JAXLEARN_COORDINATOR", "JAXLEARN_NUM_PROCESSES", "JAXLEARN_PROCESS_ID")
PORT_VARIABLE = "JAXLEARN_COORDINATOR_PORT"
# SLURM fallback port: 4096 ports at the top of the ephemeral range, chosen by job id, so that
# two jobs sharing a first node rarely collide and all tasks of one job agree.
_PORT_SPAN, _PORT_TOP = 2 ** 12, 65535


class Settings(NamedTuple):
    """How the processes of a job find each other. ``source`` says where the settings came from:
    ``"arguments"``, ``"JAXLEARN_*"``, ``"SLURM"`` or ``"auto"`` (left to JAX's cluster
    detection; the other fields are then ``None``)."""
    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    source: str


def _check_address(address, name: str) -> str:
    if not isinstance(address, str):
        raise TypeError(f"{name} must be a 'host:port' string, got {type(address).__name__}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name} must be 'host:port' with a port in 1..65535, got {address!r}")
    return address


def _check_counts(num_processes, process_id, names: tuple[str, str]) -> tuple[int, int]:
    for value, name in zip((num_processes, process_id), names):
        if not is_int(value):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if num_processes < 1:
        raise ValueError(f"{names[0]} must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"{names[1]} must be in 0..{num_processes - 1} ({names[0]}={num_processes}), got {process_id}")
    return int(num_processes), int(process_id)


def _env_int(env: Mapping[str, str], name: str) -> int:
    text = env[name].strip()
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {env[name]!r}") from None


def first_host(nodelist: str) -> str:
    """The first host of a SLURM hostlist expression such as ``"gpu[07-09,12],cpu3"`` (-> ``"gpu07"``)
    or ``"rack[1-2]-node[003-004]"`` (-> ``"rack1-node003"``); zero padding is kept as written.
    See the ``hostlist`` syntax in the SLURM documentation (``scontrol show hostnames``)."""
    if not isinstance(nodelist, str):
        raise TypeError(f"nodelist must be a str, got {type(nodelist).__name__}")
    text = nodelist.strip()
    match = _HOSTLIST_HEAD.match(text)
    if not match or (match.end() < len(text) and text[match.end()] != ","):
        raise ValueError(f"nodelist must be a SLURM hostlist such as 'node[01-04],gpu7', got {nodelist!r}")
    # each bracket group contributes its first element (the start of its first range)
    return re.sub(r"\[(\d+)[^\]]*\]", r"\1", match.group(0))


_RANGES = r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*"
_HOSTLIST_HEAD = re.compile(rf"(?:[^\[\],\s]|\[{_RANGES}\])+")


def _slurm_settings(env: Mapping[str, str]) -> Settings:
    num_processes = _env_int(env, "SLURM_NTASKS")
    process_id = _env_int(env, "SLURM_PROCID")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise ValueError("SLURM_NTASKS and SLURM_PROCID are set but neither SLURM_STEP_NODELIST nor "
                         "SLURM_JOB_NODELIST names the hosts")
    if env.get(PORT_VARIABLE):
        port = _env_int(env, PORT_VARIABLE)
    elif env.get("SLURM_JOB_ID"):
        port = _PORT_TOP - _PORT_SPAN + 1 + _env_int(env, "SLURM_JOB_ID") % _PORT_SPAN
    else:
        raise ValueError(f"set {PORT_VARIABLE} (or SLURM_JOB_ID) to choose the coordinator port")
    address = _check_address(f"{first_host(nodelist)}:{port}", PORT_VARIABLE)
    num_processes, process_id = _check_counts(num_processes, process_id, ("SLURM_NTASKS", "SLURM_PROCID"))
    return Settings(address, num_processes, process_id, "SLURM")


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The settings the environment ``env`` (default ``os.environ``) gives: ``JAXLEARN_*`` first,
    then SLURM, else ``source="auto"``. Reads only; starts nothing. Half of the ``JAXLEARN_*``
    variables, or only one of ``SLURM_NTASKS``/``SLURM_PROCID``, raise ``ValueError``."""
    env = os.environ if env is None else env
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str or None, got {type(env).__name__}")
    present = [name for name in OWN_VARIABLES if env.get(name)]
    if present and len(present) < len(OWN_VARIABLES):
        missing = [name for name in OWN_VARIABLES if name not in present]
        raise ValueError(f"{', '.join(present)} set but {', '.join(missing)} missing: "
                         f"set all of {', '.join(OWN_VARIABLES)} or none")
    if present:
        address = _check_address(env["JAXLEARN_COORDINATOR"].strip(), "JAXLEARN_COORDINATOR")
        num_processes, process_id = _check_counts(_env_int(env, "JAXLEARN_NUM_PROCESSES"),
                                                  _env_int(env, "JAXLEARN_PROCESS_ID"), OWN_VARIABLES[1:])
        return Settings(address, num_processes, process_id, "JAXLEARN_*")
    slurm = [name for name in ("SLURM_NTASKS", "SLURM_PROCID") if env.get(name)]
    if len(slurm) == 1:
        raise ValueError(f"{slurm[0]} is set but {({'SLURM_NTASKS', 'SLURM_PROCID'} - set(slurm)).pop()} is not: "
                         "launch with `srun`, which sets both")
    if slurm:
        return _slurm_settings(env)
    return Settings(None, None, None, "auto")


def _check_local_device_ids(local_device_ids):
    if local_device_ids is None:
        return None
    ids = [local_device_ids] if is_int(local_device_ids) else local_device_ids
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not all(is_int(i) and i >= 0 for i in ids):
        raise TypeError(f"local_device_ids must be None, an int or a sequence of ints >= 0, got {local_device_ids!r}")
    return [int(i) for i in ids]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: int | Sequence[int] | None = None) -> Settings:
    """Joins this process to a multi-host job via ``jax.distributed.initialize`` and returns the
    :class:`Settings` used (see the module docstring for the order they are looked up in).

    Call it once per process, before anything touches devices (``jax.devices()``, any array or
    ``jit`` call): JAX fixes the device list at first use. Afterwards ``jax.devices()`` lists the
    devices of every process, ``jax.local_devices()`` this process's, and
    ``jax.process_index()`` is ``process_id``. ``local_device_ids`` restricts this process to some
    of its host's devices (e.g. one GPU per SLURM task). A job of one process is allowed.

    Raises ``ValueError``/``TypeError`` for inconsistent settings (half of them given,
    ``process_id >= num_processes``, an address that is not ``host:port``) before contacting
    anyone, and ``RuntimeError`` if this process is already initialized.
    """
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    set_ = [name for name, value in given.items() if value is not None]
    if set_ and len(set_) < len(given):
        missing = [name for name in given if name not in set_]
        raise ValueError(f"{', '.join(set_)} given but {', '.join(missing)} missing: give all three or none "
                         "(none: read the environment)")
    local_ids = _check_local_device_ids(local_device_ids)
    if set_:
        address = _check_address(coordinator_address, "coordinator_address")
        counts = _check_counts(num_processes, process_id, ("num_processes", "process_id"))
        settings = Settings(address, *counts, "arguments")
    else:
        settings = settings_from_env()
    if jax.distributed.is_initialized():
        raise RuntimeError("jax.distributed is already initialized in this process; call initialize() once")
    jax.distributed.initialize(coordinator_address=settings.coordinator_address, num_processes=settings.num_processes,
                               process_id=settings.process_id, local_device_ids=local_ids)
    return settings


def is_writer() -> bool:
    """Whether this process writes shared outputs (files, logs, plots): process 0 only, so that
    ``N`` processes computing the same results do not write them ``N`` times. Collective writes
    (orbax checkpoints) must still be called from every process. Without ``jax.distributed``
    (a job of one process) it is true and touches no device."""
    return not is_multiprocess() or jax.process_index() == 0


def is_multiprocess() -> bool:
    """Whether this process is one of several of a job (``jax.process_count() > 1``). Without
    ``jax.distributed`` it is false at once, without starting JAX's backend (so that a sweep with
    nothing left to compute never touches a device)."""
    return jax.distributed.is_initialized() and jax.process_count() > 1


def broadcast_json(value):
    """Process 0's ``value`` (anything JSON can encode), returned on every process.

    Every process must call it at the same point; the others' ``value`` is ignored (pass
    ``None``). In a job of one process it returns ``value`` itself, untouched. The value travels
    as UTF-8 JSON through two ``multihost_utils.broadcast_one_to_all`` collectives (its padded
    length as an int32, then its bytes), so what arrives has JSON types (tuples become lists,
    keys strings).
    """
    if not is_multiprocess():
        return value
    from jax.experimental import multihost_utils

    data = json.dumps(value, allow_nan=False).encode("utf-8") if is_writer() else b""
    # padded with spaces (valid trailing JSON whitespace) to a power of two >= 256 bytes, so that
    # messages of similar sizes share one compiled broadcast
    data = data.ljust(max(256, 1 << (len(data) - 1).bit_length()), b" ")
    length = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    payload = np.frombuffer(data, np.uint8) if is_writer() else np.zeros(length, np.uint8)
    received = multihost_utils.broadcast_one_to_all(payload)
    return json.loads(np.asarray(received, np.uint8).tobytes().decode("utf-8"))
