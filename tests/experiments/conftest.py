"""One run store for the smoke variants of every study, shared by the experiment tests of a session:
each smoke sweep is computed once (by whichever test needs it first) and read by the others."""

import pathlib
from typing import NamedTuple

import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]


class Smoke(NamedTuple):
    experiment: runner.Experiment
    configs: list
    report: runner.SweepReport  # the report of the sweep's first (computing) run
    root: pathlib.Path


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    """``smoke(name) -> Smoke``: the smoke variant of ``configs/<name>.yaml``, computed on first use."""
    root, done = tmp_path_factory.mktemp("smoke-runs"), {}

    def run(name: str) -> Smoke:
        if name not in done:
            experiment, configs = runner.resolve(REPO / "configs" / f"{name}.yaml", variant="smoke")
            done[name] = Smoke(experiment, configs, runner.run_sweep(experiment, configs, root=root, progress=False),
                               root)
        return done[name]

    return run
