"""The experiment protocol the runner drives, and finding experiment modules by name.

An experiment is a Python module (by default ``experiments/<name>.py``) that defines:

* ``Config`` — a frozen dataclass; fields marked :func:`~jaxlearn.runner.config.static` (they
  change the compiled program) or :func:`~jaxlearn.runner.config.dynamic` (seed, learning rate,
  ...: a vmapped axis inside one group). A field named ``seed`` (dynamic int) seeds the member's
  key; keys never depend on a member's position in its group. A training study extends
  :class:`jaxlearn.runner.TrainingConfig` (seed, data-order seed, learning rate, optimizer, batch
  size, steps, segment length, snapshots) and uses :mod:`jaxlearn.runner.study`'s ``init`` and
  ``segment`` for the common supervised case.
* ``VERSION`` — a string, bumped whenever the experiment's results would change (it is part of
  the run id, so old results are not mistaken for new ones).
* Either the training protocol —

  - ``init(config, key) -> state``: one member's initial state (a pytree);
  - ``segment(state, config) -> (state, metrics)``: advances ``config.segment_steps`` steps inside
    ``lax.scan`` and returns scalar metrics; the config needs static int fields ``num_steps`` and
    ``segment_steps``;
  - optional ``evaluate(state, config) -> metrics``: final scalar metrics after the last segment;

  or, for studies without training, ``run(config) -> metrics`` (one pure call, still vmapped over
  the dynamic fields).
* Optional ``data(config) -> pytree``: arrays shared by every member of a group (a dataset); when
  defined, the runner passes it as a third argument ``segment(state, config, data)`` /
  ``evaluate(state, config, data)`` / ``run(config, data)`` instead of baking it into the program.
* Optional ``snapshots`` config field (tuple of steps): member states kept at those steps
  (``jaxlearn.runner.load_state(run, step)``).
* ``model(config) -> jaxlearn.nn.Layer`` (every training study has it): the member's network,
  for analyses of saved runs (:func:`jaxlearn.runner.load_networks`,
  :func:`jaxlearn.runner.after_kernel`); the state holds it as a :class:`jaxlearn.train.TrainState`
  (the state itself or one field of it); and, where the study has one, ``loss(config)``: its
  training loss.
* Optional ``summarize(results) -> list[dict]`` (a printed table), ``check(results)`` (asserts
  the published claim, on the default or ``paper`` variant), ``smoke_check(results)`` (what the
  ``smoke`` variant can show at toy scale: the direction of the effect where it shows, otherwise
  the pipeline's invariants; ``check`` stands in for it where a study has none) and
  ``plot(results) -> matplotlib Figure``; ``results`` is a :class:`jaxlearn.runner.Results` (runs
  and curves as pandas DataFrames).

Everything here is looked up and checked before anything compiles.

Where a name is looked up: a user's own ``experiments`` package first (a directory
``experiments/`` with an ``__init__.py`` in the working directory or a given search path, e.g.
a clone of the repository, or a project of one's own made by ``jaxlearn new-experiment``), then
the studies installed with jaxlearn (:data:`INSTALLED`: the repository's ``experiments/``
installed as ``jaxlearn.experiments``, so ``pip install jaxlearn`` brings them). A dotted name
(``mypackage.my_study``) is imported as it is.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import pkgutil
import sys
import types
from collections.abc import Sequence

from jaxlearn._checks import did_you_mean
from jaxlearn.runner.config import ConfigError

__all__ = ["Experiment", "load_experiment", "list_experiments", "INSTALLED"]

INSTALLED = "jaxlearn.experiments"  # the studies that ship with jaxlearn (the repository's experiments/)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A checked experiment module. ``trains`` tells the two protocols apart."""

    name: str
    module: types.ModuleType

    @property
    def config_cls(self):
        return self.module.Config

    @property
    def version(self) -> str:
        return str(self.module.VERSION)

    @property
    def description(self) -> str:
        doc = (self.module.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def trains(self) -> bool:
        return hasattr(self.module, "segment")

    @property
    def has_data(self) -> bool:
        return hasattr(self.module, "data")

    def hook(self, name: str):
        """An optional protocol function, or None."""
        return getattr(self.module, name, None)

    def checker(self, variant: str = "default"):
        """The claim asserted for a config-file ``variant``: ``smoke_check`` for ``"smoke"`` where the
        study has one, otherwise ``check`` (None when the study has neither)."""
        return (variant == "smoke" and self.hook("smoke_check")) or self.hook("check")


def _search_paths(extra=()) -> list[str]:
    """Where experiment packages may live: given directories and the working directory."""
    paths = [str(pathlib.Path(p).resolve()) for p in extra]
    paths.append(str(pathlib.Path.cwd()))
    return paths


def _import(module_name: str, extra_paths=()):
    for path in _search_paths(extra_paths):
        if path not in sys.path:
            sys.path.append(path)  # appended, so installed packages keep precedence
    return importlib.import_module(module_name)


def load_experiment(name: str, search_paths: Sequence[str | os.PathLike] = ()) -> Experiment:
    """Imports the experiment ``name``: ``experiments.<name>`` from the working directory or
    ``search_paths`` (the runner passes the repository root of the config file), else the
    installed ``jaxlearn.experiments.<name>``; a dotted name as it is. Checks its protocol.

    Raises :class:`ConfigError` with a one-line message for a missing module or a module that
    does not follow the protocol.
    """
    if not isinstance(name, str) or not name or any(part == "" or not part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"experiment: expected a module name such as 'population_digits', got {name!r}")
    candidates = [name] if "." in name else [f"experiments.{name}", f"{INSTALLED}.{name}"]
    for module_name in candidates:
        try:
            return _check(name, _import(module_name, search_paths))
        except ModuleNotFoundError as err:
            if err.name is None or not module_name.startswith(err.name):
                raise  # the experiment exists but one of its own imports is missing
    known = list_experiments(search_paths)
    raise ConfigError(f"experiment: no experiment {name!r}{did_you_mean(name, known)}; "
                      f"known: {', '.join(known) or 'none'}")


def _check(name: str, module) -> Experiment:
    where = f"experiment {name!r} ({getattr(module, '__file__', module.__name__)})"
    config_cls = getattr(module, "Config", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"{where}: needs a frozen dataclass named Config")
    if not config_cls.__dataclass_params__.frozen:
        raise ConfigError(f"{where}: Config must be frozen (@dataclasses.dataclass(frozen=True))")
    if not isinstance(getattr(module, "VERSION", None), str):
        raise ConfigError(f"{where}: needs a VERSION string (bump it when results would change)")
    has_train = all(callable(getattr(module, f, None)) for f in ("init", "segment"))
    has_run = callable(getattr(module, "run", None))
    if has_train == has_run:
        raise ConfigError(f"{where}: define either init + segment (training) or run (no training), not both or neither")
    if has_train:
        names = {f.name for f in dataclasses.fields(config_cls)}
        missing = [f for f in ("num_steps", "segment_steps") if f not in names]
        if missing:
            raise ConfigError(f"{where}: a training experiment's Config needs int fields {missing}")
    return Experiment(name=name, module=module)


def list_experiments(search_paths: Sequence[str | os.PathLike] = ()) -> dict[str, str]:
    """``{name: one-line description}`` of the experiments found by name (module docstring): the
    user's ``experiments`` package, then the installed studies it does not shadow."""
    found = {}
    for package_name in ("experiments", INSTALLED):
        try:
            package = _import(package_name, search_paths)
        except ModuleNotFoundError:
            continue
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_") or info.name in found:
                continue
            try:
                found[info.name] = load_experiment(info.name, search_paths).description
            except ConfigError:
                continue  # a helper module, not an experiment
    return dict(sorted(found.items()))
