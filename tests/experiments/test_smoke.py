"""The smoke variant of every config file in configs/ runs through the runner, as `make run` and
users do, and each experiment's published claim (its ``check``) holds at smoke size."""

import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxlearn import runner
from jaxlearn.runner.results import RUN_COLUMNS

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_every_experiment_has_a_config_with_a_smoke_variant():
    named = {runner.load_file(path).experiment for path in CONFIGS}
    assert named == set(runner.list_experiments([REPO]))
    for path in CONFIGS:
        runner.load_file(path).variant("smoke")


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_smoke_variant_runs_and_checks(path, smoke):
    experiment, configs, report, store_root = smoke(path.stem)
    assert set(report.computed.values()) == {"finished"} and len(report.computed) == len(configs)
    results = runner.load(store_root, experiment=experiment.name, run_ids=report.run_ids, curves=True)
    assert len(results.runs) == len(configs) and results.runs.status.eq("finished").all()
    if experiment.checker("smoke"):
        experiment.checker("smoke")(results)
    if experiment.hook("summarize"):
        assert experiment.hook("summarize")(results)
    if experiment.hook("plot"):
        fig = experiment.hook("plot")(results)
        assert fig.axes


@pytest.mark.slow
def test_population_digits_summary_is_mean_and_std_over_seeds(smoke):
    experiment, _, _, store_root = smoke("population_digits")
    results = runner.load(store_root, experiment="population_digits")
    for row in experiment.hook("summarize")(results):
        acc = results.runs[np.isclose(results.runs.learning_rate, row["learning_rate"])].test_accuracy.to_numpy()
        assert (row["seeds"] == 2 and row["test_accuracy"] == pytest.approx(acc.mean())
                and row["std"] == pytest.approx(acc.std()))


@pytest.mark.slow
def test_after_kernel_of_a_saved_run(smoke):
    """The after-kernel is the empirical NTK of the saved trained params (one call), and training
    moved it away from the kernel at initialisation."""
    import jax

    from jaxlearn import data, kernels

    experiment, configs, report, store_root = smoke("population_digits")
    run = report.run_ids[0]
    x = data.digits(seed=0).x_test[:12]
    after = runner.after_kernel(store_root, run, x, method="jacobian")
    config = configs[0]
    model = experiment.hook("model")(config)
    trained = runner.load_state(store_root, run).params
    np.testing.assert_allclose(after, kernels.empirical(model.apply, trained, x, method="jacobian"), rtol=1e-6)
    initial = model.init(jax.random.split(jax.random.key(config.seed))[0], x)[0]  # train.init's draw
    before = kernels.empirical(model.apply, initial, x)
    assert after.shape == (12, 12) and float(kernels.kernel_distance(before, after)) > 1e-3
    with pytest.raises(ValueError, match="no model\\(config\\) hook"):
        runner.after_kernel(store_root, smoke("random_features_double_descent").report.run_ids[0], x)


def _test_split(experiment, config):
    """A study's test inputs and labels (a jaxlearn.data.Arrays, or continual's dict: task A)."""
    arrays = experiment.module.data(config)
    if hasattr(arrays, "x_test"):
        return np.asarray(arrays.x_test), np.asarray(arrays.y_test)
    return np.asarray(arrays["x_test_a"]), np.asarray(arrays["y_test"])


def _stored_metric_from_outputs(experiment, config, networks):
    """``(stored final metric, the same metric recomputed in NumPy from the rebuilt networks)``."""
    x, y = _test_split(experiment, config)
    outputs = [np.asarray(net.apply(net.params, x), np.float64) for net in networks]
    if experiment.name == "teacher_student":
        return "test_mse", np.mean((outputs[0] - y) ** 2)
    if experiment.name == "continual_digits":
        return "task_a_accuracy", np.mean(outputs[0].argmax(-1) == y)
    if experiment.name == "edge_of_stability":
        arrays = experiment.module.data(config)
        f = np.asarray(networks[0].apply(networks[0].params, arrays.x_train), np.float64)
        return "train_loss", 0.5 * np.mean((f - np.asarray(arrays.y_train)) ** 2)
    if experiment.name == "deep_linear_dynamics":
        arrays = experiment.module.data(config)
        f = np.asarray(networks[0].apply(networks[0].params, arrays.x_train), np.float64)
        return "train_loss", 0.5 * np.mean(np.sum((f - np.asarray(arrays.y_train)) ** 2, axis=-1))
    if experiment.name == "catapult":
        arrays = experiment.module.data(config)
        f = np.asarray(networks[0].apply(networks[0].params, arrays.x_train), np.float64)[:, 0]
        return "train_loss", 0.5 * np.mean((f - np.asarray(arrays.y_train)) ** 2)
    if experiment.name in ("instability", "forgetting"):  # over its children / its seeds
        return "test_accuracy", np.mean([np.mean(out.argmax(-1) == y) for out in outputs])
    return "test_accuracy", np.mean(outputs[0].argmax(-1) == y)


# the studies whose stored final metric is recomputed from the rebuilt networks (the others are
# checked where they store a test_accuracy: a classifier's on its test split)
RECOMPUTED = {"teacher_student", "continual_digits", "edge_of_stability", "instability", "population_digits",
              "kernel_regimes", "learning_rules", "deep_linear_dynamics", "catapult"}
# the studies whose state stacks several networks (load_networks gives each): how many, from the config
NETWORKS_PER_RUN = {"instability": lambda c: c.num_children, "forgetting": lambda c: c.num_networks,
                    "cka_similarity": lambda c: 2 if c.setting == "seeds" else 1}  # a pair of seeds
# the studies whose networks also get the after-kernel, CKA and pruning (see below)
ANALYSED = {"teacher_student", "continual_digits", "edge_of_stability", "instability", "population_digits",
            "learning_rules"}
TRAINING = [p for p in CONFIGS if runner.load_experiment(runner.load_file(p).experiment, [REPO]).trains]


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAINING, ids=[p.stem for p in TRAINING])
def test_every_training_study_exposes_its_trained_network(path, smoke):
    """Every training study has the model hook: its saved runs give their networks back
    (runner.load_networks: the study's model with the saved params reproduces a final metric the
    run stored, recomputed here in NumPy, and gives finite outputs). On the networks of the first
    studies (ANALYSED: MLPs alone and in populations, a network trained on two tasks, a parent and
    its children) the after-kernels (one per network of the state) are PSD Gram matrices of the
    right size, and CKA and magnitude pruning apply to them; those analyses do not depend on the
    study, so the gallery's studies are spared their compile time."""
    from jaxlearn import kernels

    experiment, configs, report, store_root = smoke(path.stem)
    runs = runner.load(store_root, experiment=experiment.name, run_ids=report.run_ids).runs
    run = runs.run_id[runs.status == "finished"].iloc[0]  # (a smoke sweep may diverge on purpose)
    config = configs[list(report.run_ids).index(run)]
    networks = runner.load_networks(store_root, run)
    expected = NETWORKS_PER_RUN.get(experiment.name, lambda c: 1)(config)
    assert len(networks) == expected
    name, recomputed = _stored_metric_from_outputs(experiment, config, networks)
    if name in runs or experiment.name in RECOMPUTED:
        stored = runs[runs.run_id == run][name].iloc[0]
        assert recomputed == pytest.approx(stored, rel=1e-4, abs=1e-6), name
    x = _test_split(experiment, config)[0][:6]
    for net in networks:
        out = np.asarray(net.apply(net.params, x))
        assert out.shape[0] == len(x) and np.all(np.isfinite(out))
    if experiment.name not in ANALYSED:
        return
    for net in networks:
        gram = np.asarray(kernels.empirical(net.apply, net.params, x, method="jacobian"))
        assert gram.shape == (len(x), len(x)) and np.linalg.eigvalsh((gram + gram.T) / 2).min() > -1e-4 * gram.trace()
    after = np.asarray(runner.after_kernel(store_root, run, x, method="jacobian"))
    assert after.shape == ((expected,) if experiment.name == "instability" else ()) + (len(x), len(x))
    np.testing.assert_allclose(after.reshape(-1, len(x), len(x))[-1], gram, rtol=1e-5, atol=1e-6)
    _analyses_apply(networks[0], _test_split(experiment, config)[0][:32])


def _analyses_apply(net, x):
    """CKA and pruning on a saved network: its outputs are CKA-identical to themselves and less
    similar to those of a fresh draw of the same model; half its prunable weights pruned by
    magnitude give a network with exactly that density whose outputs moved."""
    import jax

    from jaxlearn import analysis

    out = net.apply(net.params, x)
    fresh = net.model.init(jax.random.key(123), jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))[0]
    assert float(analysis.linear_cka(out, out)) == pytest.approx(1.0, abs=1e-5)
    similarity = float(analysis.linear_cka(out, net.apply(fresh, x)))
    assert 0.0 <= similarity < 0.999
    mask = analysis.magnitude_mask(net.params, 0.5)
    overall, _ = analysis.density(mask)
    assert float(overall) == pytest.approx(0.5, abs=0.01)
    pruned = net.apply(analysis.apply_mask(net.params, mask), x)
    assert np.all(np.isfinite(pruned)) and not np.allclose(pruned, out)


def _unfinished(results, state: str):
    """``results`` (every run finished) as ``runner.load`` returns them for a sweep in ``state``:
    ``"nothing stored"`` (other processes claimed the runs but wrote nothing yet), ``"running"``
    (every run half-way, elsewhere: no final metrics, half its curve), ``"diverged and failed"``
    (the first run diverged half-way, the second failed there, the others finished)."""
    runs, curves = results.runs.copy(), results.curves.copy()
    metrics = [c for c in runs.columns if c not in (*RUN_COLUMNS, *results.config_columns)]
    half = curves.step <= curves.step.median()
    if state == "nothing stored":
        return runner.Results(runs.iloc[:0][list(RUN_COLUMNS)], curves.iloc[:0][["run_id", "step"]], ())
    if state == "running":
        runs = runs.drop(columns=metrics).assign(status="running", step=0)
        return runner.Results(runs, curves[half], results.config_columns)
    first, second = runs.run_id.iloc[0], runs.run_id.iloc[min(1, len(runs) - 1)]
    runs.loc[runs.run_id == first, "status"] = "diverged"
    runs.loc[runs.run_id == first, "diverged_step"] = int(curves.step.median())
    runs.loc[runs.run_id == second, "status"] = "failed" if second != first else "diverged"
    runs.loc[runs.run_id.isin([first, second]), metrics] = np.nan
    curves.loc[(curves.run_id == first) & ~half, [c for c in curves if c not in ("run_id", "step")]] = np.inf
    curves = curves[(curves.run_id != second) | half]
    return runner.Results(runs, curves, results.config_columns)


@pytest.mark.slow
@pytest.mark.parametrize("state", ["nothing stored", "running", "diverged and failed"])
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_summary_check_and_plot_of_an_unfinished_sweep(path, state, smoke):
    """A sweep seen while other processes compute it, or with runs diverged or failed: the
    summary covers the finished runs only (equal to the summary of those runs alone; nothing
    finished: no rows), the check fails with an AssertionError (never another exception) unless
    its finished runs make the claim, and the plot draws."""
    import io

    experiment, _, report, store_root = smoke(path.stem)
    results = runner.load(store_root, experiment=experiment.name, run_ids=report.run_ids, curves=True)
    table = _unfinished(results, state)
    finished = set(table.runs.run_id[table.runs.status == "finished"])
    alone = runner.Results(results.runs[results.runs.run_id.isin(finished)],
                           results.curves[results.curves.run_id.isin(finished)], results.config_columns)
    summarize, check, plot = (experiment.hook(name) for name in ("summarize", "check", "plot"))
    if summarize:
        rows = summarize(table)
        assert isinstance(rows, list)
        assert bool(rows) == bool(finished) or experiment.name == "teacher_student"
        # teacher_student also lists settings whose runs all diverged (seeds 0) and counts them
        rows = [{k: v for k, v in r.items() if k != "diverged"} for r in rows if r.get("seeds", 1)]
        expected = [{k: v for k, v in r.items() if k != "diverged"} for r in summarize(alone)]
        assert pd.DataFrame(rows).equals(pd.DataFrame(expected)), (rows, expected)
    for claim in {check, experiment.checker("smoke")} - {None}:
        try:
            claim(table)
        except AssertionError as err:
            assert str(err)
        else:
            assert finished, f"{claim.__name__} passed on a sweep with no finished run"
    if plot:
        fig = plot(table)
        fig.savefig(io.BytesIO(), format="png")  # drawn: scales, limits and legends of empty data too
        assert fig.axes
