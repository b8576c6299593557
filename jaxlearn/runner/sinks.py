"""Live tracking sinks: each run's metrics sent, as the executor commits them, to TensorBoard,
MLflow or Weights & Biases.

A *sink* follows one run through four calls (:class:`Sink`): ``start(run, history)`` (``history``:
the metric rows the run has already committed, empty for a fresh run, so a resumed run continues
without duplicate steps), ``log(step, metrics)`` after each committed segment, ``summary(metrics)``
with the final metrics, and ``finish(status)``. The executor calls them on the process that owns
the run (the one that writes its directory; a launcher's worker), and only after the run store has
the data: a commit's rows are logged right after the commit pointer is replaced, so a sink never
shows a step that a resume would compute again. A sink that raises is reported once
(:class:`SinkWarning`) and switched off for the rest of the group; the run store never depends on
it.

Sinks by name (``jaxlearn run --log tensorboard,mlflow,wandb``, else ``$JAXLEARN_LOG``, else
``tensorboard``; ``none`` for no sink):

* ``tensorboard`` (tensorboardX, always installed): scalars in ``<run dir>/events/``, rewritten
  from ``metrics.jsonl`` when a run resumes; the resolved config (flattened: ``optimizer.name``)
  as a TensorBoard HParams session (start and end, in the run's own event directory, so the
  HParams dashboard shows one session per run), whose metrics include the final metrics, logged as
  scalars ``final/<name>`` at the last step. View with ``jaxlearn tensorboard runs``
  (``pip install 'jaxlearn[tensorboard]'``).
* ``mlflow`` (``pip install 'jaxlearn[mlflow]'``, mlflow-skinny): one MLflow run per jaxlearn run in
  the MLflow experiment named after the jaxlearn experiment (``$MLFLOW_EXPERIMENT_NAME`` overrides),
  at ``$MLFLOW_TRACKING_URI``; tags ``jaxlearn.run_id``, ``jaxlearn.sweep``, ``jaxlearn.group``;
  params: the flattened config (``optimizer.name``); metrics at their steps; final metrics as
  ``final/<name>``. A resumed (or ``--force``d) run reopens the MLflow run with its tag and sends
  only the steps after the last one MLflow has, so none is there twice. :func:`log_sweep_plots`
  adds a sweep's plots to a parent run ``sweep:<id>`` under which the sweep's runs are nested.
* ``wandb`` (``pip install 'jaxlearn[wandb]'``): ``wandb.init(id=run_id, group=sweep id,
  resume="allow", config=resolved config)``, project ``$WANDB_PROJECT`` or the experiment's name,
  ``$WANDB_MODE``/``$WANDB_DIR`` as usual; metrics with ``step=``; final metrics in the summary.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import shutil
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

from jaxlearn._checks import is_real
from jaxlearn.runner.config import ConfigError, flatten

__all__ = ["DEFAULT_SINKS", "FINAL_PREFIX", "KNOWN_SINKS", "LOG_ENV", "LiveLog", "MLflowSink", "RunInfo", "Sink",
           "SinkWarning", "TensorBoardSink", "WandbSink", "hparam_values", "log_sweep_plots", "make_sink",
           "sink_names"]

LOG_ENV = "JAXLEARN_LOG"
KNOWN_SINKS = ("tensorboard", "mlflow", "wandb")
DEFAULT_SINKS = ("tensorboard",)
# the package each sink imports, and the extra that installs it
_LIBRARIES = {"tensorboard": ("tensorboardX", None), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
FINAL_PREFIX = "final/"


class SinkWarning(UserWarning):
    """A tracking sink failed; it is off for the rest of the group, the run store is unaffected."""


class RunInfo(NamedTuple):
    """What a sink knows of a run: ids, its directory in the run store, its resolved config (JSON
    values, nested as in ``run.json``) and the sweep that computes it (``None``: unknown, e.g.
    ``jaxlearn resume``)."""

    run_id: str
    experiment: str
    group: str
    sweep: str | None
    dir: pathlib.Path
    config: dict


class Sink(Protocol):
    """One run's live log in a tracking tool. ``metrics`` are ``{name: real number}``."""

    def start(self, run: RunInfo, history: list[dict]) -> None:
        """Opens the run; ``history``: its committed rows (``{"step", name: value}``), which a
        resumed run has already (partly) sent."""

    def log(self, step: int, metrics: dict) -> None:
        """The metrics of the segment that ended at ``step``."""

    def summary(self, metrics: dict) -> None:
        """The run's final metrics."""

    def finish(self, status: str) -> None:
        """Closes the run: ``finished``, ``diverged``, ``failed`` or ``interrupted``."""


def sink_names(spec: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The sinks named by ``spec`` (``"tensorboard,mlflow"``, a sequence of names, or ``"none"``), or
    when it is ``None`` by ``$JAXLEARN_LOG``, else ``("tensorboard",)``. An unknown name, or a sink
    whose library is not installed, raises :class:`ConfigError` (one line, naming the extra to
    install), before anything compiles."""
    source = "--log"
    if spec is None:
        spec, source = os.environ.get(LOG_ENV), f"${LOG_ENV}"
        if spec is None:
            return DEFAULT_SINKS
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    if names == ("none",):
        return ()
    for name in names:
        if name not in KNOWN_SINKS:
            raise ConfigError(f"{source} {name}: unknown sink; expected a comma-separated list of "
                              f"{', '.join(KNOWN_SINKS)} (or none)")
        _library(name, source)
    return names


def _library(name: str, source: str = "--log"):
    module, extra = _LIBRARIES[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        hint = f"pip install 'jaxlearn[{extra}]'" if extra else f"pip install {module}"
        raise ConfigError(f"{source} {name}: needs the {module} package: {hint}") from None


def make_sink(name: str) -> Sink:
    """A new sink of kind ``name`` (one of :data:`KNOWN_SINKS`), for one run."""
    return {"tensorboard": TensorBoardSink, "mlflow": MLflowSink, "wandb": WandbSink}[name]()


def _scalars(row: dict) -> dict:
    return {k: float(v) for k, v in row.items() if k != "step" and is_real(v)}


class LiveLog:
    """The sinks ``names`` of every member of a group, by member index: each call goes to every
    sink of the member that is still on. A sink kind that raises is reported once
    (:class:`SinkWarning`) and switched off for every member."""

    def __init__(self, names=(), sweep: str | None = None):
        self.names, self.sweep = tuple(names), sweep
        self._open: dict[int, dict[str, Sink]] = {}
        self._failed: set[str] = set()

    def open(self, m: int, run: RunInfo, history: list[dict]) -> None:
        self._open[m] = {}
        for name in self.names:
            if name not in self._failed:
                sink = self._call(name, make_sink, name)
                if sink is not None:
                    self._open[m][name] = sink
                    self._call(name, sink.start, run, history)

    def log(self, m: int, row: dict) -> None:
        self._each(m, "log", int(row["step"]), _scalars(row))

    def summary(self, m: int, metrics: dict) -> None:
        self._each(m, "summary", _scalars(metrics))

    def finish(self, m: int, status: str) -> None:
        self._each(m, "finish", status)
        self._open.pop(m, None)

    def abort(self, status: str) -> None:
        """Every member still open finished with ``status`` (the group stopped early)."""
        for m in list(self._open):
            self.finish(m, status)

    def _each(self, m: int, method: str, *args) -> None:
        for name, sink in list(self._open.get(m, {}).items()):
            if name not in self._failed:
                self._call(name, getattr(sink, method), *args)

    def _call(self, name: str, fn, *args):
        try:
            return fn(*args)
        except Exception as err:  # a tracking tool's failure must never stop the run
            if name not in self._failed:
                self._failed.add(name)
                text = str(err).splitlines()[0] if str(err) else ""
                warnings.warn(f"the {name} sink failed and is off for the rest of this group "
                              f"({type(err).__name__}: {text}); the run store is unaffected", SinkWarning,
                              stacklevel=3)
                self._close_failed(name)
            return None

    def _close_failed(self, name: str) -> None:
        """Every open sink of kind ``name`` finished as ``failed`` (its record is incomplete), so
        that none keeps a file or a service connection open; errors now are expected and ignored."""
        for sinks in self._open.values():
            sink = sinks.pop(name, None)
            if sink is not None:
                try:
                    sink.finish("failed")
                except Exception:
                    pass


def hparam_values(config: dict) -> dict:
    """The resolved config as HParams / params: dotted keys (``optimizer.name``); bools, numbers
    and strings as they are, anything else (tuples, ``None``) as JSON text."""
    out = {}
    for key, value in flatten(config).items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(list(value) if isinstance(value, tuple) else value)
    return out


class TensorBoardSink:
    """Scalars and HParams in ``<run dir>/events/``, written synchronously (tensorboardX's
    ``EventsWriter``: each call is on disk when it returns; no writer thread). On start the
    directory is rewritten from the committed rows, so a resumed run has each step once. The
    HParams are a session start (the flattened config) and end (its status) in the run's own
    directory, so the dashboard shows one session per run, with every scalar of the run (the
    ``final/<name>`` ones being the final metrics) as its metrics. No experiment summary is
    written: TensorBoard would take one arbitrary run's as the whole log directory's, hiding the
    fields of other experiments' runs; without one it builds it from every session."""

    def __init__(self):
        self._writer = None
        self._step = 0

    def start(self, run: RunInfo, history: list[dict]) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.summary import hparams

        events = run.dir / "events"
        if events.exists():
            shutil.rmtree(events)
        events.mkdir(parents=True)
        self._writer = EventsWriter(str(events / "events"))
        _, session_start, _ = hparams(hparam_values(run.config), {})
        session_start.value[0].metadata.plugin_data.content = _with_start_time(
            session_start.value[0].metadata.plugin_data.content)
        self._write(0, session_start)
        for row in history:
            self._add(int(row["step"]), _scalars(row))
        self._writer.flush()

    def _write(self, step: int, summary) -> None:
        from tensorboardX.proto.event_pb2 import Event

        self._writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def _add(self, step: int, metrics: dict) -> None:
        from tensorboardX.proto.summary_pb2 import Summary

        self._write(step, Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in metrics.items()]))
        self._step = max(self._step, step)

    def log(self, step: int, metrics: dict) -> None:
        self._add(step, metrics)
        self._writer.flush()  # readable now

    def summary(self, metrics: dict) -> None:
        self._add(self._step, {FINAL_PREFIX + k: v for k, v in metrics.items()})
        self._writer.flush()

    def finish(self, status: str) -> None:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

        code = {"finished": "STATUS_SUCCESS", "interrupted": "STATUS_ABORTED"}.get(status, "STATUS_FAILURE")
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(code),
                                                                    end_time_secs=time.time()), version=0)
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                          content=content.SerializeToString()))
        self._write(self._step, Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)]))
        self._writer.close()


def _with_start_time(content: bytes) -> bytes:
    """An HParams session-start plugin payload with its start time set (tensorboardX leaves it 0)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    data = HParamsPluginData.FromString(content)
    data.session_start_info.start_time_secs = time.time()
    return data.SerializeToString()


def _mlflow_experiment(client, name: str) -> str:
    """The id of the MLflow experiment ``name``, created if missing (another process may create it
    at the same moment)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name)
        except Exception:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    return found.experiment_id


def _mlflow_runs(client, experiment_id: str, tag: str, value: str) -> list:
    return client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=10)


class MLflowSink:
    """One MLflow run per jaxlearn run (``MlflowClient``: no process-global active run, so a group's
    members are open side by side). Tracking URI and experiment name from the environment."""

    def __init__(self):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self._run = None
        self._known = -1  # the last step MLflow had when the run was opened: later steps only are sent
        self._step = 0

    def start(self, run: RunInfo, history: list[dict]) -> None:
        experiment = _mlflow_experiment(self.client, os.environ.get("MLFLOW_EXPERIMENT_NAME") or run.experiment)
        found = _mlflow_runs(self.client, experiment, "jaxlearn.run_id", run.run_id)
        tags = {"jaxlearn.run_id": run.run_id, "jaxlearn.experiment": run.experiment, "jaxlearn.group": run.group,
                "jaxlearn.dir": str(run.dir)}
        if run.sweep is not None:
            tags["jaxlearn.sweep"] = run.sweep
        if found:
            self._run = found[0].info.run_id
            self.client.update_run(self._run, status="RUNNING")
            self._known = self._last_step()
            for key, value in tags.items():
                self.client.set_tag(self._run, key, value)
        else:
            self._run = self.client.create_run(experiment, tags=tags, run_name=run.run_id[:8]).info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in hparam_values(run.config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self._run, params=params[i:i + 100])
        for row in history:
            self.log(int(row["step"]), _scalars(row))

    def _last_step(self) -> int:
        """The last step of the metrics MLflow has of this run (final metrics aside; -1: none)."""
        names = [k for k in self.client.get_run(self._run).data.metrics if not k.startswith(FINAL_PREFIX)]
        return max((m.step for name in names for m in self.client.get_metric_history(self._run, name)), default=-1)

    def _send(self, step: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self._run, metrics=batch[i:i + 1000])

    def log(self, step: int, metrics: dict) -> None:
        self._step = max(self._step, step)
        if step > self._known:  # else MLflow has it from before the run resumed
            self._send(step, metrics)

    def summary(self, metrics: dict) -> None:
        self._send(self._step, {FINAL_PREFIX + k: v for k, v in metrics.items()})

    def finish(self, status: str) -> None:
        self.client.set_tag(self._run, "jaxlearn.status", status)
        mlflow_status = {"finished": "FINISHED", "diverged": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self._run, status=mlflow_status)


def log_sweep_plots(names: Sequence[str], sweep: str, experiment: str, run_ids: Iterable[str],
                    paths: Sequence[str | os.PathLike]) -> None:
    """A sweep's saved plots (``paths``) sent to the sinks ``names`` that keep files: MLflow puts
    them in a parent run ``sweep:<id>`` (tag ``jaxlearn.sweep_plots``) and nests the sweep's runs
    under it. TensorBoard and W&B draw their own curves from the logged metrics. A failure is a
    :class:`SinkWarning`."""
    if "mlflow" not in names or not paths:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        experiment_id = _mlflow_experiment(client, os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
        found = _mlflow_runs(client, experiment_id, "jaxlearn.sweep_plots", sweep)
        parent = found[0].info.run_id if found else client.create_run(
            experiment_id, tags={"jaxlearn.sweep_plots": sweep, "jaxlearn.sweep": sweep},
            run_name=f"sweep:{sweep}").info.run_id
        for path in paths:
            client.log_artifact(parent, str(path))
        for run_id in run_ids:
            for child in _mlflow_runs(client, experiment_id, "jaxlearn.run_id", run_id):
                client.set_tag(child.info.run_id, "mlflow.parentRunId", parent)
        client.set_terminated(parent)
    except Exception as err:
        warnings.warn(f"the mlflow sink could not store the sweep's plots ({type(err).__name__}: {err})",
                      SinkWarning, stacklevel=2)


class WandbSink:
    """A W&B run with ``id=run_id``, ``group=sweep id``, ``resume="allow"``; several open at once in
    one process (``reinit="create_new"``). ``$WANDB_INIT_TIMEOUT`` (seconds, default 90) bounds the
    wait for W&B's service."""

    def __init__(self):
        import wandb

        self.wandb = wandb
        self._run = None

    def start(self, run: RunInfo, history: list[dict]) -> None:
        settings = self.wandb.Settings(init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 90)))
        self._run = self.wandb.init(id=run.run_id, group=run.sweep, resume="allow", config=run.config,
                                    project=os.environ.get("WANDB_PROJECT") or run.experiment,
                                    name=run.run_id[:8], reinit="create_new", settings=settings)
        done = int(getattr(self._run, "starting_step", 0) or 0)  # steps W&B already has (resumed online)
        for row in history:
            if row["step"] >= done:
                self.log(int(row["step"]), _scalars(row))

    def log(self, step: int, metrics: dict) -> None:
        self._run.log(metrics, step=step)

    def summary(self, metrics: dict) -> None:
        self._run.summary.update(metrics)

    def finish(self, status: str) -> None:
        self._run.summary["jaxlearn_status"] = status
        self._run.finish(exit_code=0 if status in ("finished", "diverged") else 1)
