"""``jaxlearn new-experiment NAME``: a working study skeleton on the shared training base.

Writes ``experiments/NAME.py`` (config, model hook, data, init, segment, evaluate, summarize,
check, smoke_check, plot), ``configs/NAME.yaml`` (the default sweep, a ``paper`` variant naming it
and a ``smoke`` variant) and ``tests/experiments/test_NAME.py`` (the smoke variant runs and its
smoke_check holds) under a
repository root. The skeleton trains a small MLP on digits over a learning-rate sweep and checks
that it learns: edit the model, the data, the metrics and the claim; keep the shape. Existing
files are never overwritten.
"""

from __future__ import annotations

import keyword
import pathlib
import string

from jaxlearn.runner.config import ConfigError
from jaxlearn.runner.store.records import atomic_write_text

__all__ = ["new_experiment"]

STUDY = string.Template('''"""$name: one line saying what the study measures (the first line is its description).

Then: the published claim (authors, year, title, section or figure), what one member of a sweep
is, which fields are swept, and the numbers measured with configs/$name.yaml. Run it with
``jaxlearn run configs/$name.yaml --variant smoke --check``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlearn import nn, runner, train
from jaxlearn.runner.plots import legend, mean_band

VERSION = "1"  # part of every run id: bump it whenever the results would change


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member. seed, data_seed, learning_rate, optimizer, batch_size, num_steps,
    segment_steps and snapshots come from the base; declare only what is this study's own
    (redeclare a base field to change its default)."""

    widths: tuple[int, ...] = runner.static((64,), min=1, help="hidden layer widths")


def model(config: Config):
    """The member's network (the model hook: after-kernels, CKA and pruning of saved runs)."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


# data(config): the arrays every member of a group shares (a jaxlearn.data.Arrays, moved to the
# devices once); write a function of the config instead when the data depends on it
data = runner.study.dataset("digits", seed=0)


def init(config: Config, key) -> train.TrainState:
    return runner.study.init(config, key, model(config), data(config).input_spec)


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """A member's metrics, after every segment and at the end."""
    logits = model(config).apply(state.params, arrays.x_test)
    return {"test_accuracy": train.accuracy(logits, arrays.y_test)}


def segment(state: train.TrainState, config: Config, arrays):
    return runner.study.segment(state, config, arrays, model(config), evaluate=evaluate)


def summarize(results) -> list[dict]:
    """Final test accuracy per learning rate: mean and std over seeds (finished runs only)."""
    runs = results.finished("learning_rate", "test_accuracy").runs
    return [{"learning_rate": float(lr), "test_accuracy": float(part.test_accuracy.mean()),
             "std": float(part.test_accuracy.std(ddof=0)), "seeds": len(part)}
            for lr, part in runs.groupby("learning_rate")]


def check(results) -> None:
    """The claim on the paper-scale sweep (`--check`; replace it with the paper's criterion)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    best = max(row["test_accuracy"] for row in rows)
    assert best > 0.9, f"best mean test accuracy {best:.3f} <= 0.9 (chance: 0.1)"


def smoke_check(results) -> None:
    """What the toy-scale smoke variant can show (`--variant smoke --check`, and the test suite):
    the direction of the effect where it shows at that size, otherwise the pipeline's invariants."""
    rows = summarize(results)
    assert rows, "no finished runs"
    best = max(row["test_accuracy"] for row in rows)
    assert best > 0.3, f"best mean test accuracy {best:.3f} <= 0.3 (chance: 0.1)"


def plot(results):
    """Test-accuracy curves per learning rate (mean ± std over seeds)."""
    from matplotlib.figure import Figure  # object API: no pyplot state

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    curves = results.finished("learning_rate", "test_accuracy").curves
    for lr, part in curves.groupby("learning_rate"):
        mean_band(ax, part, "test_accuracy", label=f"lr={lr:g}")
    ax.set(xlabel="step", ylabel="test accuracy", title="$name", ylim=(0, 1))
    legend(ax)
    fig.tight_layout()
    return fig
''')

CONFIG = string.Template(
'''# $name: what the default sweep measures (one compiled group: seeds x learning rates vmapped).
experiment: $name
description: one line for `jaxlearn experiments`
config:
  widths: [64]
  num_steps: 1000
  segment_steps: 100
sweep:
  seed: [0, 1, 2]
  learning_rate: [0.03, 0.1, 0.3]
variants:
  paper:                      # the default sweep, named: the scale at which `check` holds
  smoke:                      # seconds; run by the test suite, which asserts smoke_check
    config: {num_steps: 100, segment_steps: 50}
    sweep:
      seed: [0]
      learning_rate: [0.1, 0.3]
''')

TEST = string.Template('''"""The smoke variant of $name runs through the runner, and its smoke_check holds."""

import pathlib

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_smoke_variant_runs_and_checks(tmp_path):
    experiment, configs = runner.resolve(REPO / "configs" / "$name.yaml", variant="smoke")
    report = runner.run_sweep(experiment, configs, root=tmp_path, progress=False)
    assert set(report.computed.values()) == {"finished"} and len(report.computed) == len(configs)
    results = runner.load(tmp_path, experiment=experiment.name, run_ids=report.run_ids, curves=True)
    experiment.checker("smoke")(results)
    assert experiment.hook("summarize")(results) and experiment.hook("plot")(results).axes
''')


def new_experiment(name: str, root=".") -> list[pathlib.Path]:
    """Writes the skeleton of study ``name`` under ``root`` (a repository root) and returns the
    three paths. ``name`` must be a Python identifier; nothing is written if any of the files
    exists already (:class:`~jaxlearn.runner.config.ConfigError`, one line)."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise ConfigError(f"new-experiment: expected a module name such as 'my_study' (a Python identifier, no "
                          f"leading underscore), got {name!r}")
    root = pathlib.Path(root)
    files = {root / "experiments" / f"{name}.py": STUDY, root / "configs" / f"{name}.yaml": CONFIG,
             root / "tests" / "experiments" / f"test_{name}.py": TEST}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ConfigError(f"new-experiment: {', '.join(existing)} exists already (nothing written)")
    package = root / "experiments" / "__init__.py"
    if not package.exists():
        files[package] = string.Template("")
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, template.substitute(name=name))
    return [path for path in files if path != package]
