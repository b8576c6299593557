# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS_STAMP := $(VENV)/.installed-extras
DEVICES := --xla_force_host_platform_device_count=8
# pytest exits 5 when it collected no test; one of the two processes may legitimately have none.
PYTEST_OK := || [ $$? -eq 5 ]

.PHONY: install run lint test test-fast test-float32 test-float64 docs bench notebooks notebooks-sync clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The tests also exercise the optional extras: the cluster launchers (Ray, submitit), the live
# tracking sinks (TensorBoard's reader, mlflow-skinny, wandb: ~140 MB, 1 to 1.5 min more on a fresh venv)
# and the documentation site (mkdocs, mkdocs-material, mkdocstrings: ~120 MB, 30 s; tests/docs builds it).
$(EXTRAS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,cluster,tensorboard,mlflow,wandb,docs]'
	touch $(EXTRAS_STAMP)

run: $(STAMP)
	$(VENV)/bin/jaxlearn run configs/population_digits.yaml --check

# The whole suite: float32 tests and float64 tests, each in its own process. The two processes run
# side by side (compilation is single-threaded, so two cores are used); each one's output is
# printed in one piece when it finishes, and either failing fails the target.
test: $(EXTRAS_STAMP) lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-float32 test-float64

# ruff (configured in pyproject.toml): pyflakes, import order, pep8-naming, line length. A second.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Both processes are dominated by compile time (the runner, the experiments, their subprocesses; the
# kernels' and spectra's many small programs): XLA's backend (LLVM) optimisation level 0 compiles about
# a fifth faster with the same results (no fast-math: LLVM may not reorder float arithmetic at any
# level). Measured on tests/compat, kernels and landscape in float64: 266 s of CPU against 330 s at the
# default level; a conv net's analytic kernel compiles in 1.6 s against 6.9 s.
TEST_XLA := XLA_FLAGS='$(DEVICES) --xla_backend_optimization_level=0'

test-float32: $(EXTRAS_STAMP)
	$(TEST_XLA) JAX_ENABLE_X64=0 $(PY) -m pytest -q $(PYTEST_OK)

test-float64: $(EXTRAS_STAMP)
	$(TEST_XLA) JAX_ENABLE_X64=1 $(PY) -m pytest -q $(PYTEST_OK)

# Edit loop: skips tests marked slow.
test-fast: $(EXTRAS_STAMP)
	$(TEST_XLA) JAX_ENABLE_X64=0 $(PY) -m pytest -q -x -m "not slow" $(PYTEST_OK)
	$(TEST_XLA) JAX_ENABLE_X64=1 $(PY) -m pytest -q -x -m "not slow" $(PYTEST_OK)

# The documentation site under site/ (the strict build that make test checks, tests/docs/test_site.py).
docs: $(EXTRAS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) -m benchmarks

# The six notebooks at full size (FAST off), each in a fresh Jupyter kernel of the venv from a scratch
# directory, with their times (each under 3 minutes on a 2-core CPU). make test runs them with FAST on.
notebooks: $(STAMP)
	$(PY) -m tests.notebooks

# Rewrites each notebooks/NN_name.ipynb from its jupytext percent script notebooks/NN_name.py (edit the .py).
notebooks-sync: $(STAMP)
	$(PY) -m tests.notebooks --sync

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache
