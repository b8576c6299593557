"""Plots return matplotlib Figures (never pyplot); the contour puts values[i, j] at (xs[i], ys[j])."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxlearn.landscape.plots import contour, contour_grid, curves_1d, spectral_density, surface_3d

XS = np.linspace(-1.0, 2.0, 7)        # non-square, asymmetric grid
YS = np.linspace(-0.5, 0.5, 4)


def corner_peak():
    """Large only near (i = last, j = 0): a peak at x = xs[-1], y = ys[0]."""
    gx, gy = np.meshgrid(XS, YS, indexing="ij")
    return np.exp(-((gx - XS[-1]) ** 2 + (gy - YS[0]) ** 2) * 8) + 0.01


def test_contour_grid_transposes():
    values = np.zeros((XS.size, YS.size))
    values[-1, 0] = 1.0
    X, Y, Z = contour_grid(XS, YS, values)
    assert Z.shape == (YS.size, XS.size)
    j, i = np.unravel_index(np.argmax(Z), Z.shape)
    assert (X[i], Y[j]) == (XS[-1], YS[0])
    np.testing.assert_allclose(contour_grid(XS, YS, values + 1, log=True)[2], np.log10(values + 1).T)


@pytest.mark.parametrize("log", [False, True])
def test_contour_orientation_in_the_figure(log):
    fig = contour(XS, YS, corner_peak(), levels=[0.3, 0.6, 0.9] if not log else [-1.0, -0.5, -0.1], log=log,
                  ax_labels=("d1", "d2"), title="corner")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("d1", "d2")
    cs = next(c for c in ax.collections if hasattr(c, "levels"))
    top = np.concatenate([p.vertices for p in cs.get_paths()[-1:]])   # the highest level's lines
    assert top.size and np.all(top[:, 0] > 1.0) and np.all(top[:, 1] < 0.0)
    np.testing.assert_allclose(ax.get_xlim(), (XS[0], XS[-1]))
    np.testing.assert_allclose(ax.get_ylim(), (YS[0], YS[-1]))


def test_contour_trajectory_overlay():
    traj = np.array([[1.8, -0.4], [0.5, 0.0], [-0.5, 0.3]])
    fig = contour(XS, YS, corner_peak(), trajectory=traj)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 1
    np.testing.assert_array_equal(lines[0].get_xydata(), traj)


def test_surface_3d_curves_and_density():
    fig = surface_3d(XS, YS, corner_peak(), log=True, title="s")
    assert isinstance(fig, Figure) and fig.axes[0].name == "3d"
    fig = curves_1d(XS, {"train": XS ** 2, "test": XS ** 2 + 1}, xlabel="t", title="c")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["train", "test"]
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), XS ** 2 + 1)
    grid = np.linspace(-1, 5, 50)
    density = np.exp(-grid ** 2)
    density[:3] = 0.0                                              # not drawn on a log axis
    fig = spectral_density(grid, density, eigenvalues=[4.0, 4.5], title="h")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and isinstance(fig, Figure)
    assert np.isnan(ax.get_lines()[0].get_ydata()[:3]).all()
    segments = ax.collections[0].get_segments()
    assert [s[0][0] for s in segments] == [4.0, 4.5]
    assert spectral_density(grid, density, log=False).axes[0].get_yscale() == "linear"


ERRORS = [
    ("values-shape", lambda: contour(XS, YS, np.ones((YS.size, XS.size))),
     r"^values must have shape \(len\(xs\), len\(ys\)\) = \(7, 4\), got \(4, 7\)$"),
    ("log-negative", lambda: contour(XS, YS, corner_peak() - 0.5, log=True), r"^values must be positive with log=True"),
    ("xs-2d", lambda: surface_3d(XS[None], YS, corner_peak()),
     r"^xs must be a non-empty 1-D array, got shape \(1, 7\)$"),
    ("trajectory", lambda: contour(XS, YS, corner_peak(), trajectory=np.ones((3, 3))),
     r"^trajectory must have shape \(n, 2\), got \(3, 3\)$"),
    ("curve-shape", lambda: curves_1d(XS, {"a": XS[:-1]}),
     r"^curves\['a'\] must have shape \(7,\) like alphas, got \(6,\)$"),
    ("curves-empty", lambda: curves_1d(XS, {}), r"^curves must be a non-empty dict"),
    ("density-shape", lambda: spectral_density(XS, YS), r"^density must have shape \(7,\) like grid, got \(4,\)$"),
]


@pytest.mark.parametrize("case, call, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(case, call, match):
    with pytest.raises(ValueError, match=match):
        call()
