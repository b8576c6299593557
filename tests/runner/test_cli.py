"""The command line, in process: validation errors before any compile, and every command."""

import csv
import dataclasses
import io
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from jaxlearn import runner
from jaxlearn.runner import cli, store
from jaxlearn.runner.execute import PAUSE_ENV, RESUME_ENV
from tests.runner.child_process import finish

REPO = pathlib.Path(__file__).resolve().parents[2]
TS = str(REPO / "configs" / "teacher_student.yaml")
TINY = ["--set=width=8", "--set=d_in=4", "--set=teacher_width=4", "--set=n_train=64", "--set=batch_size=16",
        "--set=num_steps=20", "--set=segment_steps=10"]


@pytest.mark.parametrize("args, message", [
    (["--set", "learing_rate=0.1"], "unknown field 'learing_rate' (did you mean 'learning_rate'?)"),
    (["--set", "num_steps=abc"], "config field 'num_steps': expected an int, got 'abc'"),
    (["--set", "num_steps=0"], "config field 'num_steps': must be >= 1, got 0"),
    (["--set", "optimizer.name=adamm"], "did you mean 'adam'?"),
    (["--sweep", "learning_rate=log:0:1:3"], "learning_rate"),
    (["--sweep", "learning_rate=lin:1:2"], "expected lin:start:stop:num"),
    (["--set", "width"], "expected key=value"),
    (["--variant", "smok"], "did you mean 'smoke'?"),
])
def test_bad_input_is_one_line_error_before_compiling(args, message, tmp_path, capsys, monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr("jaxlearn.runner.sweep.run_sweep", no_compile)
    assert cli.main(["run", TS, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "teacher_student").exists()


@pytest.mark.parametrize("command", ["run", "resume"])
def test_devices_must_be_a_positive_int(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, TS if command == "run" else "abc", "--out", str(tmp_path), "--devices", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "argument --devices: expected a positive int, got 0")


def test_missing_experiment_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: teacher_studnet\n")
    assert cli.main(["run", str(bad), "--out", str(tmp_path)]) == 2
    assert "no experiment 'teacher_studnet' (did you mean 'teacher_student'?)" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_every_command_on_a_small_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = ["--out", str(tmp_path)]
    assert cli.main(["run", TS, *out, "--variant", "smoke", *TINY, "--sweep", "seed=0,1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "4 runs: 4 computed, 0 already finished" in text and "curves.png" in text
    sweep_id = text.split("(sweep:")[1].split(")")[0]
    assert (tmp_path / "_sweeps" / sweep_id / "curves.png").stat().st_size > 1000

    assert cli.main(["run", TS, *out, "--variant", "smoke", *TINY, "--sweep", "seed=0,1", "--quiet", "--no-plot"]) == 0
    assert "0 computed, 4 already finished" in capsys.readouterr().out
    # --format json: stdout is the summary alone, one JSON array (the count line goes to stderr)
    assert cli.main(["run", TS, *out, "--variant", "smoke", *TINY, "--sweep", "seed=0,1", "--quiet", "--no-plot",
                     "--format", "json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert isinstance(summary, list) and summary and "0 computed, 4 already finished" in captured.err

    def smoke_check(results):  # --check of the smoke variant asserts the study's smoke_check
        assert len(results.runs) == 5, "smoke claim"

    monkeypatch.setattr(runner.load_experiment("teacher_student", [REPO]).module, "smoke_check", smoke_check,
                        raising=False)
    assert cli.main(["run", TS, *out, "--variant", "smoke", *TINY, "--sweep", "seed=0,1", "--quiet", "--no-plot",
                     "--check"]) == 1
    assert capsys.readouterr().err == "check failed: smoke claim\n"

    assert cli.main(["ls", *out]) == 0
    listing = capsys.readouterr().out
    assert listing.count("finished") == 4 and "test_mse" in listing
    (tmp_path / "index.sqlite").unlink()  # the index is a cache of the directories
    assert cli.main(["ls", "--rebuild", *out]) == 0
    assert capsys.readouterr().out == listing
    run_id = sorted(p.name for p in (tmp_path / "teacher_student").iterdir())[0]
    assert cli.main(["ls", "--format", "json", *out]) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(r["run"] for r in records) == sorted(p.name for p in (tmp_path / "teacher_student").iterdir())
    assert all(r["status"] == "finished" and r["step"] == 20 and isinstance(r["test_mse"], float) for r in records)
    assert cli.main(["ls", "--format", "csv", *out]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run"] for r in table] == [r["run"] for r in records]
    assert [float(r["test_mse"]) for r in table] == [r["test_mse"] for r in records]  # full precision

    assert cli.main(["show", run_id[:6], *out]) == 0
    shown = capsys.readouterr().out
    assert f"run {run_id}" in shown and "status: finished at step 20" in shown and "git_commit" in shown
    assert cli.main(["show", run_id[:6], "--format", "json", *out]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["run"]["run_id"] == run_id and record["status"]["status"] == "finished"
    assert [r["step"] for r in record["metrics"]] == [10, 20] and "git_commit" in record["provenance"]
    assert cli.main(["show", run_id[:6], "--format", "csv", *out]) == 0
    assert [int(r["step"]) for r in csv.DictReader(io.StringIO(capsys.readouterr().out))] == [10, 20]

    assert cli.main(["show", "../etc", *out]) == 2
    assert "error" in capsys.readouterr().err

    assert cli.main(["plot", run_id, *out]) == 0
    assert (tmp_path / "teacher_student" / run_id / "plots" / "curves.png").exists()
    assert cli.main(["plot", f"sweep:{sweep_id}", *out]) == 0
    capsys.readouterr()

    assert cli.main(["resume", run_id, *out]) == 0
    assert "already finished" in capsys.readouterr().out

    assert cli.main(["experiments"]) == 0
    assert "teacher_student" in capsys.readouterr().out

    assert cli.main(["clean", *out]) == 0
    assert "nothing to clean" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cli.main(["clean", "--all", *out]) == 1
    assert len(list((tmp_path / "teacher_student").iterdir())) == 4
    assert cli.main(["clean", "--all", "--yes", *out]) == 0
    assert not list((tmp_path / "teacher_student").iterdir())
    with store.Index(tmp_path) as index:
        assert index.rows() == []


def test_fields_lists_every_field(capsys):
    """``jaxlearn fields``: every constructor field of the config class (a nested optimizer spec as
    ``optimizer.*``), with its kind, type, default, range and help, in each format."""
    assert cli.main(["fields", "edge_of_stability"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[1].split() == ["field", "kind", "type", "default", "range", "help"]
    assert cli.main(["fields", "edge_of_stability", "--format", "json"]) == 0
    rows = {r["field"]: r for r in json.loads(capsys.readouterr().out)}
    config_cls = runner.load_experiment("edge_of_stability").config_cls
    top = [f.name for f in dataclasses.fields(config_cls) if f.init]
    assert [name.split(".")[0] for name in rows] == [n for n in top for _ in
                                                     (dataclasses.fields(config_cls.optimizer) if n == "optimizer"
                                                      else [None])]
    assert rows["learning_rate"] == {"field": "learning_rate", "kind": "dynamic", "type": "float", "default": 0.5,
                                     "required": False, "range": ">= 0.0",
                                     "help": "GD step size η; the stability threshold is 2/η"}
    assert rows["n_train"]["kind"] == "static" and rows["n_train"]["range"] == "1..1438"
    assert rows["batch_size"]["default"] is None and rows["widths"]["default"] == [64, 64]
    assert rows["optimizer.name"] == {**rows["optimizer.name"], "kind": "static", "default": "sgd"}
    for name, row in rows.items():  # every field is named in the text table with its help
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert row["kind"] in line and row["help"][:30] in line
    assert cli.main(["fields", "edge_of_stability", "--format", "csv"]) == 0
    assert [r["field"] for r in csv.DictReader(io.StringIO(capsys.readouterr().out))] == list(rows)


@pytest.mark.parametrize("config", [str(REPO / "configs" / "edge_of_stability.yaml"), "edge_of_stability"])
def test_fields_of_a_config_file_and_in_run_help(config, capsys):
    """With a config file (a path, or a study's name with --variant): the values its variant sets
    and the axes it sweeps; ``run CONFIG --help`` ends with the same table."""
    assert cli.main(["fields", config, "--variant", "smoke", "--format", "json"]) == 0
    rows = {r["field"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["n_train"]["value"] == 64 and rows["num_steps"]["value"] == 1000
    assert rows["learning_rate"]["swept"] == [0.5] and "value" not in rows["activation"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", config, "--variant", "smoke", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "fields of edge_of_stability" in help_text and "sharpness_every" in help_text
    assert next(line for line in help_text.splitlines() if line.startswith("n_train ")).split()[3:5] == ["256", "64"]


@pytest.mark.parametrize("args, message", [
    (["fields", "edge_of_stabilty"], "no experiment 'edge_of_stabilty' (did you mean 'edge_of_stability'?)"),
    (["fields", "edge_of_stabilty", "--variant", "smoke"],
     "edge_of_stabilty: no such config file, nor a study of that name (did you mean 'edge_of_stability'?)"),
    (["fields", str(REPO / "configs" / "edge_of_stability.yaml"), "--variant", "smok"], "did you mean 'smoke'?"),
])
def test_fields_bad_input_is_one_line_error(args, message, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("fmt, printed", [("table", "no runs\n"), ("json", "[]\n"), ("csv", "")])
def test_ls_of_an_empty_store_in_each_format(fmt, printed, tmp_path, capsys):
    assert cli.main(["ls", "--out", str(tmp_path), "--format", fmt]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize("command", list(cli.EPILOG))
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out


def _jaxlearn(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "jaxlearn", *args], cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _finish(child) -> tuple[int, str]:
    return finish(child, 240)


@pytest.mark.slow
def test_the_same_sweep_from_two_terminals(tmp_path, capsys):
    """A second ``jaxlearn run`` of a sweep that a first one is computing: one status line and
    exit 0; with --check, one line and exit 2; with --wait, it waits for the first, then
    summarizes (exit 0 for both). The first process stops after its group's first commit (the
    executor's pause hook) until the test lets it go, so each state is fixed, not raced."""
    root, resume = tmp_path / "runs", tmp_path / "resume"
    args = ["run", TS, "--variant", "smoke", *TINY, "--sweep", "seed=0,1", "--out", str(root), "--no-plot"]
    first = _jaxlearn(*args, "--quiet", env={PAUSE_ENV: "after_commit:0", RESUME_ENV: str(resume)})
    try:
        deadline = time.monotonic() + 120
        while not any(root.glob("_groups/*/committed.json")):  # it holds every run's claim from here on
            assert first.poll() is None and time.monotonic() < deadline, _finish(first)[1]
            time.sleep(0.05)
        code, output = _finish(_jaxlearn(*args, "--quiet"))
        assert code == 0 and len(output.strip().splitlines()) == 1, output
        assert output.startswith("teacher_student: 4 runs: 0 computed, 0 already finished, 4 running elsewhere"), output
        code, output = _finish(_jaxlearn(*args, "--quiet", "--check"))
        assert (code, output) == (2, "nothing to check yet: 4 runs running elsewhere (use --wait)\n")

        waiting = _jaxlearn(*args, "--wait")
        seen = []
        for line in waiting.stdout:  # its progress line says it waits
            seen.append(line)
            if "waiting for 4 runs running elsewhere" in line:
                break
        else:
            raise AssertionError("".join(seen))
        resume.touch()
        code, output = _finish(waiting)
        assert code == 0, "".join(seen) + output
        assert "teacher_student: 4 runs: 0 computed, 4 already finished, 0 running elsewhere" in output, output
        assert "test_mse" in output and "Traceback" not in output  # the summary of the four runs
    finally:
        resume.touch()
        code, output = _finish(first)
    assert code == 0 and "4 runs: 4 computed, 0 already finished, 0 running elsewhere" in output, output
    # all finished: --check runs, and a claim that does not hold at this size is one line, exit 1
    assert cli.main(args + ["--quiet", "--check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("check failed: best excess risk ") and len(err.splitlines()) == 1, err
