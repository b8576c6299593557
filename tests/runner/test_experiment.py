"""Finding experiments and their configs by name: a user's own ``experiments/`` package and
``configs/`` first, then the studies installed with jaxlearn (``jaxlearn.experiments``,
``jaxlearn.configs``). In a child process started outside the repository, so that this
process's imported ``experiments`` package does not decide the lookup."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxlearn import runner
from jaxlearn.runner import sweep

REPO = pathlib.Path(__file__).resolve().parents[2]

LOOKUP = """
import json, pathlib
from jaxlearn.runner import find_config, load_experiment, list_experiments
from jaxlearn.runner.template import new_experiment
new_experiment("my_study")
mine, shipped = load_experiment("my_study"), load_experiment("population_digits")
print(json.dumps({"mine": mine.module.__name__, "shipped": shipped.module.__name__,
                  "shipped_file": shipped.module.__file__, "my_config": str(find_config("my_study")),
                  "shipped_config": str(find_config("population_digits.yaml")),
                  "listed": sorted(list_experiments())}))
"""


@pytest.mark.slow
def test_own_experiments_first_then_the_installed_studies(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", LOOKUP], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["mine"] == "experiments.my_study"  # the user's package in the working directory
    assert found["shipped"] == "jaxlearn.experiments.population_digits"  # not on any path: the installed one
    assert pathlib.Path(found["shipped_file"]).samefile(REPO / "experiments" / "population_digits.py")
    assert (tmp_path / found["my_config"]).samefile(tmp_path / "configs" / "my_study.yaml")  # relative to the cwd
    assert pathlib.Path(found["shipped_config"]).samefile(REPO / "configs" / "population_digits.yaml")
    assert {"my_study", "population_digits", "skip_connections"} <= set(found["listed"])


def test_find_config_takes_paths_and_names_and_names_the_known_ones():
    path = REPO / "configs" / "teacher_student.yaml"
    assert sweep.find_config(path) == path
    assert sweep.find_config("teacher_student").samefile(path)
    assert sweep.find_config("teacher_student.yaml").samefile(path)
    assert "teacher_student" in sweep.config_names()
    with pytest.raises(runner.ConfigError, match=r"^teacher_studnt: no such config file, nor a study of that name "
                                                 r"\(did you mean 'teacher_student'\?\); known: .*population_digits"):
        sweep.find_config("teacher_studnt")
    with pytest.raises(runner.ConfigError, match="^configs/nowhere/x.yaml: no such config file"):
        sweep.find_config("configs/nowhere/x.yaml")
