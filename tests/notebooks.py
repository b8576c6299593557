"""The notebooks of ``notebooks/``: how their ``.ipynb`` is made from the percent script, and how they run.

Each notebook is a jupytext percent script ``notebooks/NN_name.py`` (the file to edit and review) paired with
``notebooks/NN_name.ipynb`` (what Colab opens), which :func:`ipynb_text` makes from it: jupytext's conversion,
with no outputs and no execution counts, and cell ids numbered in order (jupytext draws random ones, which
would change every line of the file at each regeneration).

:func:`execute` runs a notebook in a Jupyter kernel of *this* interpreter (a kernelspec written to a
temporary ``JUPYTER_PATH``, whose ``argv`` is ``sys.executable``), so the kernel imports the jaxlearn and
the packages of the environment running it, from a scratch working directory (where the runner notebook
writes its ``runs/``). Used by tests/test_notebooks.py (``FAST`` on) and by ``make notebooks``::

    python -m tests.notebooks            # all six at full size, with their times (make notebooks)
    python -m tests.notebooks --fast     # as make test runs them
    python -m tests.notebooks --sync     # rewrite each .ipynb from its .py (make notebooks-sync)
    python -m tests.notebooks --out DIR 02  # notebook 02 only, its outputs written to DIR/02_infinite_width.ipynb
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import resource
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_quickstart", "02_infinite_width", "03_landscapes_and_curvature", "04_learning_rules", "05_runner",
         "06_porting_from_neural_tangents")
KERNEL = "jaxlearn-notebooks"
FAST_ENV = "JAXLEARN_NOTEBOOK_FAST"
# the last cell appended to every run: which interpreter the kernel is (checked against sys.executable)
WHICH_PYTHON = "import sys\nprint(sys.executable)"


def scripts() -> list[pathlib.Path]:
    return [NOTEBOOKS / f"{name}.py" for name in NAMES]


def ipynb_text(script: pathlib.Path) -> str:
    """The ``.ipynb`` that belongs to ``script``: jupytext's conversion, with numbered cell ids."""
    import jupytext

    notebook = jupytext.read(script, fmt="py:percent")
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i:02d}"
    return jupytext.writes(notebook, fmt="ipynb").rstrip("\n") + "\n"


def sync() -> list[pathlib.Path]:
    """Rewrites every ``.ipynb`` that differs from its script's conversion; returns those rewritten."""
    written = []
    for script in scripts():
        target, text = script.with_suffix(".ipynb"), ipynb_text(script)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def kernel_env(*, fast: bool) -> dict[str, str]:
    """What the kernel runs under: ``FAST``, and for the fast runs of the test suite float32 at XLA's
    backend optimisation level 0 on 8 emulated devices (the float32 test process's settings)."""
    env = {FAST_ENV: "1" if fast else "0"}
    if fast:
        flags = os.environ.get("XLA_FLAGS", "").split()
        flags = [f for f in flags if not f.startswith(("--xla_backend_optimization_level",
                                                       "--xla_force_host_platform_device_count"))]
        env.update(JAX_ENABLE_X64="0", XLA_FLAGS=" ".join([*flags, "--xla_backend_optimization_level=0",
                                                           "--xla_force_host_platform_device_count=8"]))
    return env


@contextlib.contextmanager
def kernelspec(env: dict[str, str]):
    """A kernelspec named :data:`KERNEL` for this interpreter with ``env``, visible through ``JUPYTER_PATH``
    while the context is open (and jupyter's platformdirs layout, which silences its DeprecationWarning)."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = pathlib.Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python 3 ({sys.executable})", "language": "python", "env": env}), encoding="utf-8")
        saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "JUPYTER_PLATFORM_DIRS")}
        os.environ.update(JUPYTER_PATH=os.pathsep.join(filter(None, [tmp, saved["JUPYTER_PATH"]])),
                          JUPYTER_PLATFORM_DIRS="1")
        try:
            yield KERNEL
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def execute(script: pathlib.Path, cwd: pathlib.Path, kernel_name: str, *, cell_timeout: int = 300):
    """Runs the ``.ipynb`` of ``script`` in a fresh kernel ``kernel_name`` from ``cwd``; returns the executed
    notebook. A failing cell raises ``nbclient.exceptions.CellExecutionError`` with its traceback."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(WHICH_PYTHON, id="which-python"))
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return notebook


def kernel_python(notebook) -> str:
    """The interpreter that ran ``notebook`` (printed by the cell :func:`execute` appends)."""
    return "".join(out.get("text", "") for out in notebook.cells[-1].outputs).strip()


def _kernel_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes: the kernels, once shut down. On a busy
    machine it says what a notebook costs better than its wall time does."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.notebooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help=f"FAST on ({FAST_ENV}=1), as make test runs them")
    parser.add_argument("--sync", action="store_true", help="rewrite each .ipynb from its .py and exit")
    parser.add_argument("--out", type=pathlib.Path, help="write the executed notebooks (with outputs) here")
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    args = parser.parse_args(argv)
    if args.sync:
        for path in sync():
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    chosen = [s for s in scripts() if not args.names or any(s.stem.startswith(n) for n in args.names)]
    times, cpu_times = {}, {}
    with kernelspec(kernel_env(fast=args.fast)) as name:
        for script in chosen:
            with tempfile.TemporaryDirectory() as cwd:
                start, cpu = time.perf_counter(), _kernel_cpu()
                executed = execute(script, pathlib.Path(cwd), name)
                times[script.stem], cpu_times[script.stem] = time.perf_counter() - start, _kernel_cpu() - cpu
            if args.out:
                import nbformat

                args.out.mkdir(parents=True, exist_ok=True)
                nbformat.write(executed, args.out / f"{script.stem}.ipynb")
            print(f"{script.stem:40s} {times[script.stem]:6.1f} s  (kernel CPU {cpu_times[script.stem]:6.1f} s)",
                  flush=True)
    print(f"{'total':40s} {sum(times.values()):6.1f} s  (kernel CPU {sum(cpu_times.values()):6.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
