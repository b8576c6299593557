"""Figures for loss landscapes and Hessian spectra (matplotlib object API; Figures are returned,
never shown or saved — the runner writes files).

Grid convention shared with :mod:`jaxlearn.landscape.surface`: ``values[i, j]`` is the value at
``(xs[i], ys[j])``; ``x`` is the horizontal axis. matplotlib's ``contour(X, Y, Z)`` with 1-D
``X``, ``Y`` wants ``Z[j, i]`` at ``(X[i], Y[j])``, so it receives ``values.T``
(:func:`contour_grid`). matplotlib is imported on first use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["contour_grid", "contour", "surface_3d", "curves_1d", "spectral_density"]


def _vector(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    return a


def _values(xs, ys, values, log: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = _vector("xs", xs), _vector("ys", ys)
    v = np.asarray(values, dtype=float)
    if v.shape != (xs.size, ys.size):
        raise ValueError(f"values must have shape (len(xs), len(ys)) = {(xs.size, ys.size)}, got {v.shape}")
    if log:
        if not np.all(v[np.isfinite(v)] > 0):
            raise ValueError(f"values must be positive with log=True, got min {np.nanmin(v)!r}")
        v = np.log10(v)
    return xs, ys, v


def contour_grid(xs, ys, values, log: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, Z)`` for matplotlib's ``contour``: ``X = xs``, ``Y = ys``, ``Z = values.T`` (so
    ``Z[j, i] = values[i, j]``), with ``log10`` applied when ``log``."""
    xs, ys, v = _values(xs, ys, values, log)
    return xs, ys, v.T


def _figure(title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    if title is not None:
        fig.suptitle(title)
    return fig


def contour(xs, ys, values, *, levels=30, log: bool = False, ax_labels=("x", "y"), title=None,
            trajectory=None):
    """Contour lines of a 2-D surface (Li et al. 2018, Fig. 1 and §6), with a colour bar.

    ``xs`` ``(X,)``, ``ys`` ``(Y,)``, ``values`` ``(X, Y)`` with ``values[i, j]`` at ``(xs[i], ys[j])``
    (as returned by :func:`jaxlearn.landscape.surface.surface_2d`). ``levels``: a count or the level
    values (in ``log10`` units when ``log``); ``log``: contour ``log10(values)`` (values must be
    positive). ``trajectory``: optional ``(n, 2)`` points in the same coordinates (e.g. from
    :func:`jaxlearn.landscape.directions.project`), drawn as a line with markers.
    """
    X, Y, Z = contour_grid(xs, ys, values, log)
    if trajectory is not None:
        trajectory = np.asarray(trajectory, dtype=float)
        if trajectory.ndim != 2 or trajectory.shape[1] != 2:
            raise ValueError(f"trajectory must have shape (n, 2), got {trajectory.shape}")
    fig = _figure(title)
    ax = fig.add_subplot()
    cs = ax.contour(X, Y, Z, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 value" if log else "value")
    if trajectory is not None:
        ax.plot(trajectory[:, 0], trajectory[:, 1], "o-", color="tab:red", markersize=3, linewidth=1)
    ax.set_xlabel(ax_labels[0])
    ax.set_ylabel(ax_labels[1])
    return fig


def surface_3d(xs, ys, values, *, log: bool = False, title=None):
    """3-D surface of ``values[i, j]`` at ``(xs[i], ys[j])`` (Li et al. 2018, Fig. 5); ``log`` plots
    ``log10(values)``."""
    xs, ys, v = _values(xs, ys, values, log)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    fig = _figure(title)
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(gx, gy, v, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("log10 value" if log else "value")
    return fig


def curves_1d(alphas, curves, *, xlabel: str = "alpha", title=None):
    """One line per entry of ``curves`` (name → ``(A,)`` values at ``alphas`` ``(A,)``), e.g. the
    train and test loss of :func:`jaxlearn.landscape.surface.surface_1d`, with a legend."""
    alphas = _vector("alphas", alphas)
    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"curves must be a non-empty dict of name -> values, got {type(curves).__name__}")
    fig = _figure(title)
    ax = fig.add_subplot()
    for name, y in curves.items():
        y = np.asarray(y, dtype=float)
        if y.shape != alphas.shape:
            raise ValueError(f"curves[{name!r}] must have shape {alphas.shape} like alphas, got {y.shape}")
        ax.plot(alphas, y, label=str(name))
    ax.set_xlabel(xlabel)
    ax.legend()
    return fig


def spectral_density(grid, density, *, log: bool = True, eigenvalues=None, title=None):
    """A spectral density (e.g. of the Hessian, from stochastic Lanczos quadrature; Ghorbani et al.
    2019, Fig. 1) against eigenvalue, on a ``log`` y-axis by default (points where the density is
    not positive are left out there). ``eigenvalues``: optional values marked by vertical lines
    (e.g. the top eigenvalues from power iteration or Lanczos)."""
    grid = _vector("grid", grid)
    density = np.asarray(density, dtype=float)
    if density.shape != grid.shape:
        raise ValueError(f"density must have shape {grid.shape} like grid, got {density.shape}")
    fig = _figure(title)
    ax = fig.add_subplot()
    if log:
        density = np.where(density > 0, density, np.nan)
        ax.set_yscale("log")
    ax.plot(grid, density, color="tab:blue")
    if eigenvalues is not None:
        ev = np.atleast_1d(np.asarray(eigenvalues, dtype=float))
        if ev.ndim != 1:
            raise ValueError(f"eigenvalues must be 1-D, got shape {ev.shape}")
        ax.vlines(ev, 0, 1, transform=ax.get_xaxis_transform(), colors="tab:red", linestyles="--",
                  linewidth=0.8)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    return fig
