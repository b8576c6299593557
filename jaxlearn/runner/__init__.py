"""jaxlearn.runner — the shared experiment runner behind ``python -m jaxlearn``.

Configs (typed, frozen dataclasses with static and dynamic fields, YAML files in ``configs/``),
a planner that groups sweep points sharing static fields into one ``jit(vmap(...))`` program,
an executor that trains groups in checkpointed ``lax.scan`` segments and resumes after crashes,
and a run store (a directory per run plus an SQLite index) whose results load back as pandas
DataFrames. See ``jaxlearn.runner.experiment`` for the protocol an experiment module follows, and
:mod:`jaxlearn.runner.study` for the shared training base of a study (:class:`TrainingConfig`, the
supervised ``study.init``/``study.segment``).
:func:`launch_sweep` sends a sweep's groups to Ray tasks or SLURM jobs instead
(``jaxlearn.runner.launch``). Runs are tracked live by sinks (:mod:`jaxlearn.runner.sinks`:
TensorBoard by default, MLflow, W&B; ``run_sweep(..., log="tensorboard,mlflow")``).
"""

from jaxlearn.runner import study
from jaxlearn.runner.config import (
    ConfigError,
    canonical_json,
    dynamic,
    dynamic_fields,
    parse_config,
    run_id,
    static,
    static_fields,
    to_dict,
)
from jaxlearn.runner.configfile import Axis, expand, load_file, parse_assignment, parse_sweep
from jaxlearn.runner.experiment import Experiment, list_experiments, load_experiment
from jaxlearn.runner.launch import LaunchError, launch_sweep
from jaxlearn.runner.results import (
    Network,
    Results,
    Trajectory,
    after_kernel,
    load,
    load_networks,
    load_state,
    load_trajectory,
)
from jaxlearn.runner.sinks import RunInfo, Sink, SinkWarning, log_sweep_plots, make_sink, sink_names
from jaxlearn.runner.store import Index, StoreError, resolve_run
from jaxlearn.runner.study import TrainingConfig
from jaxlearn.runner.sweep import SweepReport, enable_compilation_cache, find_config, resolve, run_sweep, sweep_id

__all__ = [
    "after_kernel", "Axis", "Network", "ConfigError", "Experiment", "Index", "LaunchError", "launch_sweep", "Results",
    "StoreError", "Trajectory", "SweepReport", "canonical_json",
    "dynamic", "dynamic_fields", "enable_compilation_cache", "expand", "list_experiments", "load",
    "load_experiment", "load_file", "load_networks", "load_state", "load_trajectory", "parse_assignment",
    "parse_config", "parse_sweep", "find_config", "resolve", "resolve_run", "run_id",
    "run_sweep", "static", "static_fields", "study", "to_dict", "TrainingConfig",
    "RunInfo", "Sink", "SinkWarning", "log_sweep_plots", "make_sink", "sink_names", "sweep_id",
]
