"""Figures of runs: metric curves over steps, grouped by swept values, mean ± std over seeds.

Functions return ``matplotlib.figure.Figure`` objects (the object API: no pyplot state, no
display needed); :func:`save_figure` writes them as PNG atomically.
"""

from __future__ import annotations

import io

import numpy as np

from jaxlearn.runner.store import atomic_write_bytes

__all__ = ["curves_figure", "legend", "swept_columns", "save_figure"]

_NOT_SWEPT = {"run_id", "experiment", "version", "status", "step", "diverged_step", "seed"}


def swept_columns(runs, config_columns) -> list[str]:
    """Config columns that take more than one value among ``runs`` (the seed excluded: runs
    that differ only in seed are averaged)."""
    return [c for c in config_columns if c not in _NOT_SWEPT and c in runs and runs[c].astype(str).nunique() > 1]


MAX_LEGEND = 12  # more lines than this: no legend, the colour order is described in the first title


def curves_figure(results, config_columns, metrics=None):
    """One panel per metric: the metric against the step, one line per combination of swept
    values (in sorted order, dark to light), mean ± std over seeds (a band)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    curves = results.curves
    if curves is None or curves.empty:
        raise ValueError("plot: the runs have no logged metrics yet")
    metrics = metrics or [c for c in curves.columns
                          if c not in ("run_id", "step") and np.issubdtype(curves[c].dtype, np.number)]
    swept = swept_columns(results.runs, config_columns)
    frame = curves.merge(results.runs[["run_id", *swept]], on="run_id") if swept else curves.assign(_all=0)
    keys = swept or ["_all"]
    groups = list(frame.groupby(keys, sort=True))
    colors = colormaps["viridis"](np.linspace(0, 0.9, max(len(groups), 1)))
    cols = min(len(metrics), 3)
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(4.5 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, metric in zip(axes, metrics):
        for (values, part), color in zip(groups, colors):
            values = values if isinstance(values, tuple) else (values,)
            label = (", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, values))
                     if swept else "runs")
            mean_band(ax, part, metric, color=color, label=f"{label} (n={part.groupby('step')[metric].count().max()})")
        ax.set(xlabel="step", ylabel=metric, title=metric)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    if len(groups) <= MAX_LEGEND:
        legend(axes[0], fontsize=7)
    else:  # a legend of that many lines would cover the panel (and defeat the layout): the colours run
        axes[0].set_title(f"{metrics[0]}\n{len(groups)} settings of {', '.join(keys)}: dark to light", fontsize=8)
    fig.tight_layout()
    return fig


def mean_band(ax, curves, metric: str, *, x: str = "step", **line_kwargs) -> None:
    """Draws on ``ax`` the mean of column ``metric`` of ``curves`` (rows of several runs) against
    column ``x``, with a band of ± one standard deviation over the runs (ddof 1) where more than
    one run has a value; ``line_kwargs`` go to the line (``label``, ``color``, ...)."""
    stats = curves.groupby(x)[metric].agg(["mean", "std", "count"])
    steps, mean, std = stats.index.to_numpy(), stats["mean"].to_numpy(), stats["std"].fillna(0.0).to_numpy()
    (line,) = ax.plot(steps, mean, **line_kwargs)
    if (stats["count"] > 1).any():
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)


def legend(ax, **kwargs) -> None:
    """``ax.legend(**kwargs)`` when ``ax`` has labelled artists; none otherwise (a plot of a sweep
    with nothing finished yet, where matplotlib would warn of an empty legend)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def save_figure(fig, path) -> None:
    """Renders ``fig`` to PNG and writes it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())
