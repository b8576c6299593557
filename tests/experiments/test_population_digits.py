"""Smoke configuration of the default experiment (what `make run` trains, scaled down)."""

import numpy as np
import pytest

from experiments import population_digits as exp


@pytest.fixture(scope="module")
def results():
    return exp.run(exp.SMOKE, progress=False)


def test_smoke_run_shapes_and_learning(results):
    members = len(exp.SMOKE.seeds) * len(exp.SMOKE.learning_rates)
    evals = exp.SMOKE.num_steps // exp.SMOKE.eval_every
    assert results["test_accuracy"].shape == (members, evals)
    np.testing.assert_array_equal(results["steps"], np.arange(1, evals + 1) * exp.SMOKE.eval_every)
    # Every member learns (3x the 10% chance level of 10 balanced classes), and even at smoke
    # size the experiment's claim holds: the best learning rate passes 90%, the lr matters.
    assert np.all(results["test_accuracy"][:, -1] > 0.3)
    exp.check(results)
    assert np.all(np.isfinite(results["train_loss"]))


def test_summarize_groups_seeds_per_learning_rate(results):
    rows = exp.summarize(results)
    assert [r["learning_rate"] for r in rows] == pytest.approx(sorted(exp.SMOKE.learning_rates))
    for row in rows:
        final = results["test_accuracy"][np.isclose(results["learning_rate"], row["learning_rate"]), -1]
        assert row["n"] == len(exp.SMOKE.seeds)
        assert row["mean"] == pytest.approx(final.mean()) and row["std"] == pytest.approx(final.std())


def test_member_result_does_not_depend_on_its_group(results):
    # The member (seed 1, lr 0.1) trained in a population of one gives the same curve.
    alone = exp.run(exp.Config(**{**exp.SMOKE.__dict__, "seeds": (1,), "learning_rates": (0.1,)}), progress=False)
    index = np.flatnonzero((results["seed"] == 1) & np.isclose(results["learning_rate"], 0.1))[0]
    np.testing.assert_allclose(alone["test_accuracy"][0], results["test_accuracy"][index], atol=1e-6)
    np.testing.assert_allclose(alone["train_loss"][0], results["train_loss"][index], rtol=1e-4)


def test_main_prints_table_and_saves_plot(tmp_path, capsys):
    exp.main(["--smoke", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "test accuracy" in out and "plot saved" in out
    png = tmp_path / "population_digits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
