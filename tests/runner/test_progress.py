"""Progress output: plain lines (no carriage returns) when the stream is not a terminal; a bar in a
notebook kernel."""

import importlib.util
import io
import sys
import types

from jaxlearn.runner.progress import Progress, in_notebook


def _group(n):
    return types.SimpleNamespace(runs=[None] * n, experiment=types.SimpleNamespace(name="toy"))


def test_plain_lines_when_not_a_tty():
    stream = io.StringIO()
    progress = Progress(2, 5, stream=stream, interval=0.0)
    progress.start(_group(3), 100, 0)
    progress.update(50, {"loss": [1.0, 3.0]})
    progress.update(50, {"loss": [0.5, 1.5]})
    progress.close()
    progress.start(_group(2), 10, 4)  # a resumed group starts part-way
    progress.update(6, {})
    progress.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "group 1/2 (3 runs, toy): starting at step 0/100"
    assert lines[1].startswith("  step 50/100 (") and "loss=2 " in lines[1] and lines[1].endswith("runs=0/5")
    assert "step 100/100" in lines[2] and "loss=1 " in lines[2]
    assert lines[3] == "group 2/2 (2 runs, toy): starting at step 4/10"
    assert "step 10/10" in lines[4] and lines[4].endswith("runs=3/5")
    assert progress.runs_done == 5 and progress.groups_done == 2


def test_disabled_prints_nothing():
    stream = io.StringIO()
    progress = Progress(1, 1, stream=stream, enabled=False)
    progress.start(_group(1), 10, 0)
    progress.update(10, {"loss": [1.0]})
    progress.close()
    assert stream.getvalue() == ""


def _fake_ipython(config):
    shell = types.SimpleNamespace(config=config)
    return types.SimpleNamespace(get_ipython=lambda: shell)


def test_a_bar_in_a_notebook_kernel_not_periodic_lines(monkeypatch, capsys):
    """In a Jupyter/Colab kernel stderr is not a terminal, yet the progress is a tqdm bar (the
    notebook widget where ipywidgets is installed, its text bar otherwise); a terminal IPython
    without a kernel app is not a notebook."""
    monkeypatch.setitem(sys.modules, "IPython", _fake_ipython({"IPKernelApp": {}}))
    assert in_notebook()
    progress = Progress(1, 2)
    progress.start(_group(2), 10, 0)
    progress.update(10, {"loss": [1.0, 3.0]})
    assert progress._bar is not None
    expected = "tqdm.notebook" if importlib.util.find_spec("ipywidgets") else "tqdm.std"
    assert type(progress._bar).__module__ == expected
    progress.close()
    assert "starting at step" not in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "IPython", _fake_ipython({"TerminalIPythonApp": {}}))
    assert not in_notebook()
