"""Progress output: plain lines (no carriage returns) when the stream is not a terminal."""

import io
import types

from jaxlearn.runner.progress import Progress


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
