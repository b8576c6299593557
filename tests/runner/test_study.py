"""The shared training base: a study's Config extends TrainingConfig (a base default changed in one
line), the base fields are validated like any field, and the template writes a study that runs."""
import dataclasses
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import runner, train
from jaxlearn.runner import cli
from jaxlearn.runner.template import new_experiment


@dataclasses.dataclass(frozen=True)
class Study(runner.TrainingConfig):
    learning_rate: float = runner.dynamic(1e-3, min=0.0, help="a study's own default")
    width: int = runner.static(8, min=1)


def test_a_study_declares_only_its_own_fields():
    config = runner.parse_config(Study, {"width": 4, "seed": 2, "data_seed": 5})
    assert (config.learning_rate, config.width, config.seed, config.data_seed) == (1e-3, 4, 2, 5)
    assert config.num_steps == runner.TrainingConfig().num_steps and config.optimizer == train.OptimizerSpec()
    assert runner.dynamic_fields(Study) == ("seed", "data_seed", "learning_rate")
    assert {"optimizer", "batch_size", "num_steps", "segment_steps", "snapshots", "width"} == set(
        runner.static_fields(Study))
    assert runner.parse_config(Study, {"batch_size": None}).batch_size is None  # full batch


@pytest.mark.parametrize("values, message", [
    ({"data_seed": -2}, "field 'data_seed': must be >= -1"),
    ({"batch_size": 0}, "field 'batch_size': must be >= 1"),
    ({"learning_rate": "fast"}, "field 'learning_rate': expected a float"),
    ({"optimizer": {"name": "sgdd"}}, "optimizer"),
])
def test_base_fields_are_validated(values, message):
    with pytest.raises(runner.ConfigError, match=message):
        runner.parse_config(Study, values)


def test_build_optimizer_is_the_spec_built_at_the_peak_learning_rate():
    config = runner.parse_config(Study, {"optimizer": {"name": "adam"}, "learning_rate": 0.01, "num_steps": 10})
    grads = {"w": jnp.ones(3)}
    got = config.build_optimizer()
    want = train.OptimizerSpec(name="adam").build(0.01, 10)
    updates = [opt.update(grads, opt.init(grads), grads)[0]["w"] for opt in (got, want)]
    assert jnp.array_equal(updates[0], updates[1])


def test_new_experiment_refuses_bad_names_and_existing_files(tmp_path):
    for bad in ("my-study", "class", "_private", ""):
        with pytest.raises(runner.ConfigError, match="new-experiment: expected a module name"):
            new_experiment(bad, tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "mine.yaml").write_text("keep me\n")
    with pytest.raises(runner.ConfigError, match="mine.yaml exists already"):
        new_experiment("mine", tmp_path)
    assert (tmp_path / "configs" / "mine.yaml").read_text() == "keep me\n"
    assert not (tmp_path / "experiments").exists()
    assert cli.main(["new-experiment", "mine", "--root", str(tmp_path)]) == 2


@pytest.mark.slow
def test_the_template_writes_a_study_whose_smoke_test_passes(tmp_path, capsys):
    assert cli.main(["new-experiment", "toy_study", "--root", str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["configs/toy_study.yaml", "experiments/__init__.py", "experiments/toy_study.py",
                       "tests/experiments/test_toy_study.py"]
    assert "next: jaxlearn run" in capsys.readouterr().out
    source = (tmp_path / "experiments" / "toy_study.py").read_text()
    assert len([line for line in source.splitlines() if line.strip()]) <= 90
    # its own test, in a fresh interpreter whose working directory is the new repository root
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
                           "tests/experiments/test_toy_study.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed" in done.stdout


def test_the_smoke_variant_is_checked_by_smoke_check_where_a_study_has_one():
    import types

    def check(results):
        return "check"

    def smoke_check(results):
        return "smoke_check"

    both = runner.Experiment("both", types.SimpleNamespace(check=check, smoke_check=smoke_check))
    only_check = runner.Experiment("one", types.SimpleNamespace(check=check))
    assert both.checker("smoke") is smoke_check and both.checker("paper") is both.checker() is check
    assert only_check.checker("smoke") is check
    assert runner.Experiment("none", types.SimpleNamespace()).checker("smoke") is None


def test_classifier_metrics_are_the_test_accuracy_and_mean_cross_entropy():
    import types

    import numpy as np

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0], [1.0, 1.5, 0.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2, 0, 1])
    model = types.SimpleNamespace(apply=lambda params, x: x * params)
    arrays = types.SimpleNamespace(x_test=jnp.asarray(logits), y_test=jnp.asarray(labels))
    got = runner.study.classifier_metrics(model, 1.0, arrays)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert float(got["test_accuracy"]) == 0.5  # rows 0 and 1 right, row 2 wrong, row 3 a tie (argmax 0)
    np.testing.assert_allclose(float(got["test_loss"]), -np.mean(log_softmax[np.arange(4), labels]), rtol=1e-6)


@pytest.mark.parametrize("changes, message", [
    ({}, None),
    ({"batch_size": 8}, None),
    ({"batch_size": 4}, "batch_size: must be null (full batch, n_train=8), got 4"),
    ({"optimizer": train.OptimizerSpec(name="adam")}, "optimizer: must be plain constant-step gradient descent"),
    ({"optimizer": train.OptimizerSpec(schedule="warmup_cosine")}, "because the claim is about GD; got"),
])
def test_check_full_batch_gd_names_the_field(changes, message):
    config = dataclasses.replace(runner.TrainingConfig(batch_size=None), **changes)
    if message is None:
        runner.study.check_full_batch_gd(config, 8, "n_train", "because the claim is about GD")
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            runner.study.check_full_batch_gd(config, 8, "n_train", "because the claim is about GD")


def test_loglog_slope_of_a_power_law():
    widths = np.array([128, 256, 1024, 4096])
    assert runner.study.loglog_slope(widths, 3.0 * widths ** -0.5) == pytest.approx(-0.5, abs=1e-12)
    assert np.isnan(runner.study.loglog_slope([128], [0.1]))


def test_train_state_field_reads_through_a_wrapping_state_and_names_bad_fields():
    from typing import NamedTuple

    import jax

    from jaxlearn import nn

    class Wrapped(NamedTuple):
        train_state: train.TrainState
        extra: jax.Array
        params = runner.study.train_state_field("params")
        model_state = runner.study.train_state_field("model_state")

    ts = train.init(nn.mlp([3], 2), train.optimizer("sgd", learning_rate=0.1), jax.random.key(0),
                    jax.ShapeDtypeStruct((1, 4), jnp.float32))
    state = Wrapped(ts, jnp.zeros(()))
    assert state.params is ts.params and state.model_state is ts.model_state
    assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(ts)) + 1  # still a pytree of its fields only
    stacked = jax.vmap(lambda _: state)(jnp.arange(2))  # reads through a vmapped (stacked) state too
    assert stacked.params[0]["W"].shape == (2, 4, 3)
    with pytest.raises(ValueError, match="'weights' is not a TrainState field"):
        runner.study.train_state_field("weights")
