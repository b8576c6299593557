"""The runner's generic curves figure: one panel per metric, one line per swept setting, drawn
without layout warnings (warnings are errors here) however many settings or metrics a sweep has."""

import io

import numpy as np
import pandas as pd
import pytest

from jaxlearn import runner
from jaxlearn.runner.plots import MAX_LEGEND, curves_figure


def _results(settings: int, metrics: int, seeds: int = 2) -> runner.Results:
    runs, curves = [], []
    for i in range(settings * seeds):
        run_id = f"r{i:03d}"
        runs.append({"run_id": run_id, "experiment": "x", "version": "1", "status": "finished", "step": 20,
                     "diverged_step": None, "seed": i % seeds, "width": 8 * (i // seeds)})
        for step in (10, 20):
            curves.append({"run_id": run_id, "step": step, **{f"m{k}": float(i + k + step) for k in range(metrics)}})
    return runner.Results(pd.DataFrame(runs), pd.DataFrame(curves), ("seed", "width"))


@pytest.mark.parametrize("settings, metrics", [(1, 1), (3, 4), (MAX_LEGEND, 2), (MAX_LEGEND + 1, 2), (40, 7)])
def test_curves_figure_panels_lines_and_legend(settings, metrics):
    fig = curves_figure(_results(settings, metrics), ("seed", "width"))
    fig.savefig(io.BytesIO(), format="png", dpi=30)  # drawn, layout included
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == metrics and all(len(ax.get_lines()) == settings for ax in visible)
    # each line is the mean over the seeds of its setting
    np.testing.assert_allclose(visible[0].get_lines()[0].get_ydata(), [0.5 + 10, 0.5 + 20])
    assert (visible[0].get_legend() is not None) == (settings <= MAX_LEGEND)
    if settings > MAX_LEGEND:
        assert f"{settings} settings of width" in visible[0].get_title()
