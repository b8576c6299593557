"""The smoke variant of every config file in configs/ runs through the runner, as `make run` and
users do, and each experiment's published claim (its ``check``) holds at smoke size."""

import pathlib

import numpy as np
import pytest

from jaxlearn import runner

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_every_experiment_has_a_config_with_a_smoke_variant():
    named = {runner.load_file(path).experiment for path in CONFIGS}
    assert named == set(runner.list_experiments([REPO]))
    for path in CONFIGS:
        runner.load_file(path).variant("smoke")


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_smoke_variant_runs_and_checks(path, store_root):
    experiment, configs = runner.resolve(path, variant="smoke")
    report = runner.run_sweep(experiment, configs, root=store_root, progress=False)
    assert set(report.computed.values()) == {"finished"} and len(report.computed) == len(configs)
    results = runner.load(store_root, experiment=experiment.name, run_ids=report.run_ids, curves=True)
    assert len(results.runs) == len(configs) and results.runs.status.eq("finished").all()
    if experiment.hook("check"):
        experiment.hook("check")(results)
    if experiment.hook("summarize"):
        assert experiment.hook("summarize")(results)
    if experiment.hook("plot"):
        fig = experiment.hook("plot")(results)
        assert fig.axes


@pytest.mark.slow
def test_population_digits_summary_is_mean_and_std_over_seeds(store_root):
    experiment, configs = runner.resolve(REPO / "configs" / "population_digits.yaml", variant="smoke")
    runner.run_sweep(experiment, configs, root=store_root, progress=False)  # finished above: reused
    results = runner.load(store_root, experiment="population_digits")
    for row in experiment.hook("summarize")(results):
        acc = results.runs[np.isclose(results.runs.learning_rate, row["learning_rate"])].test_accuracy.to_numpy()
        assert row["seeds"] == 2 and row["test_accuracy"] == pytest.approx(acc.mean()) and row["std"] == pytest.approx(acc.std())
