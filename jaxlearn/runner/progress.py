"""Progress reporting for the runner: a tqdm bar on a terminal or in a notebook, plain lines otherwise.

Shows steps of the current group, runs done out of the total, and an ETA. In a Jupyter or Colab
kernel the bar is tqdm's notebook widget (``tqdm.auto``; its text bar where ``ipywidgets`` is
not installed). When the output is neither (a log file, CI, a SLURM job) it prints one line at
most every ``interval`` seconds instead of redrawing a bar.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np

__all__ = ["Progress", "in_notebook"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter (or Colab) kernel: IPython is running with a kernel app
    (not the terminal IPython, whose output is a terminal anyway)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _bar_class(notebook: bool):
    """tqdm's notebook widget in a kernel that can show it, else its text bar."""
    if notebook and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


class Progress:
    """Receives ``start(group, total_steps, done_steps)``, ``update(steps, metrics)`` and
    ``close()`` from the executor, for ``num_groups`` groups holding ``num_runs`` runs."""

    def __init__(self, num_groups: int, num_runs: int, *, stream=None, interval: float = 10.0, enabled: bool = True):
        self.stream = stream if stream is not None else sys.stderr
        self.notebook = stream is None and in_notebook()
        self.tty = self.notebook or bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled, self.interval = enabled, interval
        self.num_groups, self.num_runs = num_groups, num_runs
        self.groups_done = self.runs_done = 0
        self._bar = None

    def start(self, group, total_steps: int, done_steps: int, *, label: str | None = None) -> None:
        """``group``: the :class:`~jaxlearn.runner.plan.Group` about to be computed, or the runs
        (a sequence) whose steps are shown; ``label`` replaces the default description."""
        self.group, self.total, self.done = group, total_steps, done_steps
        self._t0, self._done0, self._last = time.perf_counter(), done_steps, 0.0
        if not self.enabled:
            return
        runs = getattr(group, "runs", group)
        label = label or f"group {self.groups_done + 1}/{self.num_groups} ({len(runs)} runs, {group.experiment.name})"
        if self.tty:
            self._bar = _bar_class(self.notebook)(total=total_steps, initial=done_steps, desc=label, unit="step",
                                                  file=self.stream, dynamic_ncols=True)
        else:
            print(f"{label}: starting at step {done_steps}/{total_steps}", file=self.stream, flush=True)

    def update(self, steps: int, metrics: dict, *, runs_done: int | None = None) -> None:
        """``steps`` more steps done; ``runs_done`` (optional) sets how many runs are done."""
        self.done += steps
        if runs_done is not None:
            self.runs_done = runs_done
        if not self.enabled:
            return
        summary = {name: f"{float(np.mean(v)):.4g}" for name, v in list(metrics.items())[:3] if np.size(v)}
        summary["runs"] = f"{self.runs_done}/{self.num_runs}"
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix(summary, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            rate = (self.done - self._done0) / max(now - self._t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            text = " ".join(f"{k}={v}" for k, v in summary.items())
            print(f"  step {self.done}/{self.total} ({rate:.1f} steps/s, ETA {eta:.0f} s) {text}", file=self.stream,
                  flush=True)

    def close(self) -> None:
        self.groups_done += 1
        self.runs_done += len(getattr(self.group, "runs", self.group))
        if self._bar is not None:
            self._bar.close()
            self._bar = None
