"""Skip connections smooth the loss landscape: the gap to the same network without them grows with depth.

Li, Xu, Taylor, Studer & Goldstein 2018 ("Visualizing the Loss Landscape of Neural Nets"),
§6.1 and Fig. 5: ResNets of 20, 56 and 110 layers trained on CIFAR-10 with and without their
shortcut connections. With skips the filter-normalised 2-D loss surface stays convex-looking at
every depth; without them it becomes chaotic as the network deepens. §6.5 (Fig. 7) backs the
contour plots with the Hessian: the ratio ``|λ_min/λ_max|`` of its extreme eigenvalues (small:
locally convex; large: strong negative curvature) is larger for the network without skips.

The measurements of a trained network ``θ*`` (loss ``L``: the mean softmax cross-entropy on the
first ``n_landscape`` training images):

* the 2-D surface ``f(α, β) = L(θ* + α·δ + β·η)`` (§3) on a ``grid × grid`` grid over
  ``[-extent, extent]²``, with ``δ, η`` Gaussian directions *filter-normalised* (§4):
  ``δ_{i,j} ← δ_{i,j}/‖δ_{i,j}‖ · ‖θ_{i,j}‖`` for filter ``j`` of layer ``i``, bias directions 0
  (:func:`jaxlearn.landscape.random_direction`; the surface as :func:`jaxlearn.landscape.surface_2d`
  computes it, by :func:`plane_measures`);
* ``loss_rise``: the mean of ``f(r cos φ_k, r sin φ_k) − f(0, 0)`` over ``num_angles`` equally
  spaced angles on the circle of radius ``r = radius`` (default 0.5) of the same plane
  (:func:`plane_measures`, in the same pass as the surface) — a scalar for "how fast the loss
  rises around the minimiser";
* ``lambda_max``, ``lambda_min`` and ``eig_ratio = |λ_min/λ_max|`` of the Hessian ``∇²L(θ*)``
  (§6.5), the extreme Ritz values of ONE run of ``lanczos_steps`` Lanczos steps with exact
  Hessian-vector products (:func:`jaxlearn.landscape.top_eigenvalues` with ``which="both"``).

The network (``model``): 8×8 digits images, a stride-2 stem convolution to 4×4×``channels``,
``(depth − 2)/2`` blocks of two 3×3 convolutions ``F(h) = conv(relu(conv(relu(h))))``, a ReLU,
global average pooling and a Dense readout: ``depth`` weight layers, as the paper counts
ResNet-20/56/110. With skips a block is ``h ← (h + F(h))/√2``; without, ``h ← F(h)``. There is no
BatchNorm (so that curvatures compare; the paper's ResNets have it): the ``1/√2`` keeps the
forward variance of the residual network constant with depth at He initialisation, as the plain
network's is, so that the two differ by the shortcuts alone and not by their scale. ``depth`` is
static (one compiled group per depth); ``skip`` is dynamic — a block computes ``c·(F(h) + a·h)``
with ``(a, c) = (1, 1/√2)`` or ``(0, 1)``, exactly ``F(h)`` without skips — so both architectures
and all seeds of a depth are one vmapped program. Initial weights: He normal, drawn by
:class:`HeDraw` (the layers' distribution, compiled in a fraction of the time).

Claim (``check``, over ≥ 3 seeds, means): the gap ``no-skip − skip`` of each of ``lambda_max``,
``eig_ratio`` and ``loss_rise`` is larger at the deepest depth than at the shallowest and
positive there. Measured by ``configs/skip_connections.yaml`` (the ``paper`` variant: Adam, peak lr
1e-3, 100 warmup steps, cosine decay, 1600 steps, the same for both architectures and every depth;
seeds 0–4, mean ± std; landscape loss and test accuracy are means):

=====  =====  ==============  =================  ============  =============  =============
depth  skip   λ_max           |λ_min/λ_max|      loss_rise     landscape L    test accuracy
=====  =====  ==============  =================  ============  =============  =============
    4  yes    100 ± 45.8      0.0034 ± 0.002     6.4 ± 2.8     0.76           0.80
    4  no     121 ± 54.7      0.0031 ± 0.0011    7.2 ± 3.0     0.63           0.84
   12  yes    471 ± 115       0.0025 ± 0.0017    24.2 ± 5.8    0.12           0.95
   12  no     447 ± 161       0.0027 ± 0.0011    38.5 ± 8.3    0.055          0.95
   20  yes    166 ± 44.8      0.0039 ± 0.0025    32.8 ± 11.4   0.019          0.96
   20  no     208 ± 80.0      0.0048 ± 0.0042    102 ± 25.5    0.018          0.94
=====  =====  ==============  =================  ============  =============  =============

Gaps (no-skip − skip) at depths 4 / 12 / 20: λ_max 21.2 / −24.5 / 41.9; ratio −0.00033 / 0.00012 /
0.00091; loss rise 0.77 / 14.3 / 69.4: **the check passes** on these seeds, the ratio narrowly (its
depth-20 gap is a fraction of its seed spread and rests on one plain net, seed 3 at 0.012: without
seed 3 it would be negative). Every depth-20 network trains (training-subset loss 0.0045–0.039
plain, 0.0053–0.043 with skips), every depth-12 one leaves the ln 10 plateau (loss 0.04–0.07 plain,
0.08–0.18 with skips), and the plain nets rise far more (70.7–144 against 24.9–55.3 at depth 20),
as the paper says. With momentum SGD at lr 0.01 (the previous setting) the loss rise failed,
decided by two depth-20 nets that did not train. At depth 4 no network fits the data (8 pooled
channels). On fresh seeds 5–9 (the ``confirm`` variant, run once) the gaps at depths 4 / 12 / 20
are λ_max 19.0 / 19.6 / 37.6, ratio −0.00063 / −0.00048 / 0.013, loss rise 0.69 / 15.0 / 29.4: the
check passes there. docs/reproductions.md has the settings tried, the numbers and the run times.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import landscape, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

MEASURES = ("lambda_max", "eig_ratio", "loss_rise")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a conv net of ``depth`` weight layers, with or without skips, trained on digits,
    then its landscape measured (module docstring)."""

    learning_rate: float = runner.dynamic(0.01, min=0.0, help="peak learning rate")
    optimizer: train.OptimizerSpec = runner.static(
        train.OptimizerSpec(args={"momentum": 0.9}, schedule="warmup_cosine", warmup_steps=100),
        help="optax optimizer and schedule (the paper: SGD with momentum 0.9)")
    depth: int = runner.static(8, min=4, help="weight layers: stem conv + 2·blocks convs + Dense (even)")
    skip: bool = runner.dynamic(True, help="residual blocks (h + F(h))/√2 (true) or plain F(h) (false)")
    channels: int = runner.static(8, min=1, help="channels of every convolution")
    num_steps: int = runner.static(1600, min=1, help="training steps")
    segment_steps: int = runner.static(400, min=1, help="steps per segment (metrics and checkpoint after each)")
    n_landscape: int = runner.static(256, min=1, max=1438, help="training images on which L, its Hessian and "
                                                                "surface are computed")
    lanczos_steps: int = runner.static(20, min=2, help="Lanczos steps for λ_min and λ_max")
    grid: int = runner.static(9, min=3, help="points per axis of the 2-D surface (odd: the centre is θ*)")
    extent: float = runner.static(1.0, min=0.0, help="the surface spans [-extent, extent]² (the paper: 1)")
    radius: float = runner.static(0.5, min=0.0, help="radius of the circle on which loss_rise is averaged")
    num_angles: int = runner.static(16, min=3, help="points on that circle")

    def __post_init__(self):
        if self.depth % 2:
            raise ValueError(f"depth: must be even (stem + 2 per block + readout), got {self.depth}")
        if self.grid % 2 == 0:
            raise ValueError(f"grid: must be odd so that the surface's centre is the trained network, got {self.grid}")


CONV_W_STD, READOUT_W_STD = np.sqrt(2.0), 1.0  # He initialisation of the ReLU convolutions; a unit-variance readout


def model(config: Config):
    """The network of a member (the ``model`` hook; module docstring), on ``(N, 8, 8, 1)`` images."""
    def conv(strides=None):
        return nn.Conv(config.channels, (3, 3), strides=strides, padding="SAME", W_std=CONV_W_STD)

    # skip is dynamic (a traced bool inside the runner's group), so both architectures share one
    # compiled program: a block is c·(F(h) + a·h) with (a, c) = (1, 1/√2) or (0, 1), and 0·h adds
    # nothing to the output, the gradient or the Hessian: without skips the block is exactly F(h).
    a, c = jnp.where(config.skip, 1.0, 0.0), jnp.where(config.skip, np.sqrt(0.5), 1.0)
    blocks = []
    for _ in range((config.depth - 2) // 2):
        shortcut = nn.Elementwise(lambda h: a * h, name="GatedIdentity")
        blocks += [nn.residual(nn.Relu(), conv(), nn.Relu(), conv(), shortcut=shortcut),
                   nn.Elementwise(lambda h: c * h, name="GatedScale")]
    return nn.serial(conv((2, 2)), *blocks, nn.Relu(), nn.GlobalAvgPool(), nn.Dense(10, W_std=READOUT_W_STD))


def data(config: Config) -> data_module.Arrays:
    """The digits split as ``(N, 8, 8, 1)`` images, shared by every member."""
    del config
    arrays = data_module.digits(seed=0).arrays()
    return arrays._replace(x_train=arrays.x_train.reshape(-1, 8, 8, 1), x_test=arrays.x_test.reshape(-1, 8, 8, 1))


def _input_spec():
    return jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)


class HeDraw(NamedTuple):
    """``net`` with an ``init`` that draws its parameters in the distribution of ``net.init`` —
    every convolution kernel ``N(0, CONV_W_STD²/fan_in)``, the readout ``N(0, READOUT_W_STD²/fan_in)``,
    ``fan_in`` the product of all but the last axis, biases 0 (``b_std = 0``) — from a few vmapped
    draws (:func:`jaxlearn.landscape.random_direction`) instead of one per layer: XLA compiles each
    threefry call on its own, which made ``init`` the costliest compile of the study (before the
    layers drew flat, a rank-4 kernel's draw compiled for seconds). The values differ from
    ``net.init``'s (another stream), the distribution does not."""

    net: nn.Layer

    def init(self, key, input_spec):
        shapes, model_state = jax.eval_shape(self.net.init, key, input_spec)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        gauss = landscape.random_direction(key, zeros, "none", ignore_bias=True)  # N(0, 1); 0-/1-D leaves 0

        def scale(w):
            std = CONV_W_STD if w.ndim == 4 else READOUT_W_STD
            return w * (std / np.sqrt(math.prod(w.shape[:-1]))) if w.ndim >= 2 else w

        return jax.tree.map(scale, gauss), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), model_state)


def init(config: Config, key) -> train.TrainState:
    """The member's train state (the config's optimizer; He-initialised convolutions, :class:`HeDraw`)."""
    return runner.study.init(config, key, HeDraw(model(config)), _input_spec())


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` steps of minibatch SGD on the softmax cross-entropy; ``train_loss`` and
    ``test_accuracy`` after each segment."""
    def evaluate_accuracy(s, config, arrays):
        return {"test_accuracy": train.accuracy(model(config).apply(s.params, arrays.x_test), arrays.y_test)}

    return runner.study.segment(state, config, arrays, model(config), evaluate=evaluate_accuracy)


# -- the measurements (study-specific mathematics; tested in tests/experiments/test_skip_connections.py) --------
def plane_measures(loss_fn, params, d1, d2, axis, radius, num_angles: int):
    """``(surface, loss_rise)`` from one pass over the points of the plane ``θ + α·d1 + β·d2``.

    ``surface[i, j] = loss_fn(θ + axis[i]·d1 + axis[j]·d2)`` (``(G, G)`` for ``axis (G,)``; as
    :func:`jaxlearn.landscape.surface_2d`); ``loss_rise = mean_k loss_fn(θ + r cos φ_k d1 + r sin φ_k d2)
    − loss_fn(θ)`` over ``φ_k = 2πk/num_angles``: the mean rise of the loss on the circle of radius
    ``r`` around ``θ``. For a quadratic ``L`` and ``num_angles ≥ 3`` it is exactly
    ``r²/4 · (d1ᵀ H d1 + d2ᵀ H d2)`` (the linear and cross terms average to zero). The grid points,
    the circle and ``θ`` itself are evaluated by one ``lax.map`` (one forward pass to compile)."""
    alpha, beta = jnp.meshgrid(axis, axis, indexing="ij")
    angles = 2 * jnp.pi * jnp.arange(num_angles) / num_angles
    coords = jnp.concatenate([jnp.stack([alpha.ravel(), beta.ravel()], axis=1),
                              radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1),
                              jnp.zeros((1, 2), alpha.dtype)])

    def at(ab):
        return loss_fn(jax.tree.map(lambda p, u, v: p + ab[0] * u + ab[1] * v, params, d1, d2))

    losses = jax.lax.map(at, coords)
    grid = axis.shape[0]
    return losses[:grid * grid].reshape(grid, grid), jnp.mean(losses[grid * grid:-1]) - losses[-1]


def _surface_key(i: int, j: int) -> str:
    return f"surface_{i:02d}_{j:02d}"


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """The final measurements of the trained network (module docstring); the surface as
    ``surface_ii_jj`` metrics (``ii`` indexes δ's coordinate, ``jj`` η's). ``test_accuracy`` is the
    last segment's (of the same final state)."""
    net = model(config)
    x, y = arrays.x_train[:config.n_landscape], arrays.y_train[:config.n_landscape]

    def loss_fn(params):
        return train.softmax_cross_entropy(net.apply(params, x), y)

    params = state.params
    k_lanczos, k_plane = (jax.random.fold_in(state.key, 1000 + i) for i in range(2))
    (lam_min,), (lam_max,) = landscape.top_eigenvalues(loss_fn, params, k=1, num_iters=config.lanczos_steps,
                                                        key=k_lanczos, which="both")
    # both directions from one call (one set of vmapped draws to compile), each filter-normalised to θ*
    d1, d2 = landscape.random_direction(k_plane, (params, params), "filter", ignore_bias=True)
    axis = landscape.symmetric_grid(config.grid, config.extent)
    surface, loss_rise = plane_measures(loss_fn, params, d1, d2, axis, config.radius, config.num_angles)
    grid_metrics = {_surface_key(i, j): surface[i, j] for i in range(config.grid) for j in range(config.grid)}
    centre = config.grid // 2  # axis[centre] = 0: the trained network itself
    return {"landscape_loss": surface[centre, centre], "lambda_max": lam_max, "lambda_min": lam_min,
            "eig_ratio": jnp.abs(lam_min / lam_max), "loss_rise": loss_rise, **grid_metrics}


# -- results -----------------------------------------------------------------------------------------
def _final(results):
    return results.finished("depth", "skip", "seed", "test_accuracy", "landscape_loss", *MEASURES).runs


def summarize(results) -> list[dict]:
    """Per depth and skip: each measure's mean and std over seeds, the landscape loss and test accuracy."""
    rows = []
    for (depth, skip), part in _final(results).groupby(["depth", "skip"]):
        row = {"depth": int(depth), "skip": bool(skip), "seeds": len(part)}
        for key in (*MEASURES, "landscape_loss", "test_accuracy"):
            row[key] = float(part[key].mean())
            if key in MEASURES:
                row[f"{key}_std"] = float(part[key].std(ddof=0))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["depth"], not r["skip"]))


def gaps(results) -> dict:
    """``{measure: [(depth, no-skip mean − skip mean), ...]}`` over the depths where both finished."""
    rows = summarize(results)
    out = {}
    for key in MEASURES:
        by = {(r["depth"], r["skip"]): r[key] for r in rows}
        depths = sorted({d for d, _ in by if (d, True) in by and (d, False) in by})
        out[key] = [(d, by[(d, False)] - by[(d, True)]) for d in depths]
    return out


def smoke_check(results) -> None:
    """The pipeline at toy scale: every run's measurements and its whole surface present and
    finite, ``λ_min ≤ λ_max`` with ``λ_max > 0`` (a network's loss curves upward somewhere), and
    both architectures finished at every depth."""
    runs = results.finished("depth", "skip", "lambda_min", "landscape_loss", *MEASURES).runs
    assert len(runs), "no finished runs"
    grid = _grid_size(results.runs)
    assert grid >= 3, f"no surface of 3 x 3 or more points stored (grid {grid})"
    for _, r in runs.iterrows():
        where = f"depth={r['depth']} skip={r['skip']} seed={r['seed']}"
        values = [r[k] for k in (*MEASURES, "lambda_min", "landscape_loss")]
        assert np.all(np.isfinite(values)), f"{where}: non-finite measurements {values}"
        assert r["lambda_min"] <= r["lambda_max"] and r["lambda_max"] > 0, \
            f"{where}: λ_min {r['lambda_min']:.4g}, λ_max {r['lambda_max']:.4g}"
        surface = _surface(r, grid)
        assert np.all(np.isfinite(surface)), f"{where}: {np.sum(~np.isfinite(surface))} surface points missing"
    for depth, part in runs.groupby("depth"):
        assert set(part["skip"].astype(bool)) == {True, False}, f"depth {depth}: not both architectures finished"


def check(results) -> None:
    """The claim (Li et al. 2018, §6.1, §6.5): for λ_max, |λ_min/λ_max| and the loss rise at
    radius 0.5, the no-skip − skip gap of the seed means is positive at the deepest depth and
    larger there than at the shallowest; at least 3 seeds per setting."""
    rows = summarize(results)
    assert rows, "no finished runs"
    assert min(r["seeds"] for r in rows) >= 3, f"fewer than 3 finished seeds in a setting: {[r['seeds'] for r in rows]}"
    for key, gap in gaps(results).items():
        assert len(gap) >= 2, f"{key}: needs both architectures at two or more depths, got {gap}"
        (shallow, g_shallow), (deep, g_deep) = gap[0], gap[-1]
        assert g_deep > 0, f"{key}: no-skip − skip gap at depth {deep} is {g_deep:.4g}, not positive"
        assert g_deep > g_shallow, \
            f"{key}: gap at depth {deep} ({g_deep:.4g}) is not larger than at depth {shallow} ({g_shallow:.4g})"


def _grid_size(runs) -> int:
    found = [int(m.group(1)) for c in runs.columns if (m := re.fullmatch(r"surface_(\d+)_\d+", c))]
    return max(found) + 1 if found else 0


def _surface(run, grid: int):
    return np.array([[run.get(_surface_key(i, j), np.nan) for j in range(grid)] for i in range(grid)], float)


def plot(results):
    """Li et al. Fig. 5: contours of the 2-D surface of the deepest pair (skip and no skip; lowest
    seed), and the three measures against depth (mean ± std over seeds)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(15, 7.5))
    grid_spec = fig.add_gridspec(2, 6)
    ax_contours = [fig.add_subplot(grid_spec[0, 0:3]), fig.add_subplot(grid_spec[0, 3:6])]
    ax_measures = [fig.add_subplot(grid_spec[1, 2 * i:2 * i + 2]) for i in range(3)]
    runs = _final(results)
    grid = _grid_size(results.runs)
    extent = float(results.runs["extent"].dropna().iloc[0]) if "extent" in results.runs and grid else 1.0
    deepest = runs["depth"].max() if len(runs) else None
    levels = None
    for ax, skip in zip(ax_contours, (True, False)):
        name = "with skips" if skip else "without skips"
        part = runs[(runs["depth"] == deepest) & (runs["skip"].astype(bool) == skip)].sort_values("seed")
        if not grid or part.empty:
            ax.set(title=f"{name}: no finished run", xticks=[], yticks=[])
            continue
        run = results.runs[results.runs["run_id"] == part["run_id"].iloc[0]].iloc[0]
        values = _surface(run, grid)
        axis = np.linspace(-extent, extent, grid)
        if levels is None:  # the same levels for both panels (loss rises up to 10, as in Li et al.'s figures)
            low = float(np.nanmin(values)) if np.isfinite(np.nanmin(values)) else 0.0
            levels = np.linspace(low, low + 10.0, 21)
        drawn = ax.contour(axis, axis, values.T, levels=levels, cmap="viridis")
        fig.colorbar(drawn, ax=ax, label="training loss")
        ax.plot(0, 0, "k+")
        ax.set(title=f"depth {int(deepest)} {name} (seed {int(part['seed'].iloc[0])})", xlabel="δ (filter-normalised)",
               ylabel="η (filter-normalised)", aspect="equal")
    rows = summarize(results)
    labels = {"lambda_max": "λ_max of the Hessian", "eig_ratio": "|λ_min / λ_max|",
              "loss_rise": "mean loss rise at radius 0.5"}
    for ax, key in zip(ax_measures, MEASURES):
        for skip, style in ((True, "o-"), (False, "s--")):
            part = [r for r in rows if r["skip"] == skip]
            ax.errorbar([r["depth"] for r in part], [r[key] for r in part], yerr=[r[f"{key}_std"] for r in part],
                        fmt=style, capsize=3, label="with skips" if skip else "without skips")
        ax.set(xlabel="depth (weight layers)", ylabel=labels[key], title=labels[key])
        legend(ax, fontsize=8)
    fig.tight_layout()
    return fig
