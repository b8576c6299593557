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
  (:func:`jaxlearn.landscape.random_direction`, :func:`jaxlearn.landscape.surface_2d`);
* ``loss_rise``: the mean of ``f(r cos φ_k, r sin φ_k) − f(0, 0)`` over ``num_angles`` equally
  spaced angles on the circle of radius ``r = radius`` (default 0.5) of the same plane
  (:func:`ring_loss_rise`) — a scalar for "how fast the loss rises around the minimiser";
* ``lambda_max``, ``lambda_min`` and ``eig_ratio = |λ_min/λ_max|`` of the Hessian ``∇²L(θ*)``
  (§6.5), the extreme Ritz values of ONE run of ``lanczos_steps`` Lanczos steps
  (:func:`extreme_eigenvalues`, on :func:`jaxlearn.landscape.lanczos` with exact Hessian-vector
  products).

The network (``model``): 8×8 digits images, a stride-2 stem convolution to 4×4×``channels``,
``(depth − 2)/2`` blocks of two 3×3 convolutions ``F(h) = conv(relu(conv(relu(h))))``, a ReLU,
global average pooling and a Dense readout: ``depth`` weight layers, as the paper counts
ResNet-20/56/110. With skips a block is ``h ← (h + F(h))/√2``; without, ``h ← F(h)``. There is no
BatchNorm (so that curvatures compare; the paper's ResNets have it): the ``1/√2`` keeps the
forward variance of the residual network constant with depth at He initialisation, as the plain
network's is, so that the two differ by the shortcuts alone and not by their scale. ``depth``
and ``skip`` are static (one compiled group each); seeds are vmapped.

Claim (``check``, over ≥ 3 seeds, means): the gap ``no-skip − skip`` of each of ``lambda_max``,
``eig_ratio`` and ``loss_rise`` is larger at the deepest depth than at the shallowest and
positive there. Measured by ``configs/skip_connections.yaml`` (the ``paper`` variant; 3 seeds,
mean ± std):

=====  =====  ==============  =================  ============  =============  =============
depth  skip   λ_max           |λ_min/λ_max|      loss_rise     landscape L    test accuracy
=====  =====  ==============  =================  ============  =============  =============
    4  yes    43.2 ± 6.2      0.0042 ± 0.0001    3.6 ± 0.9     0.64           0.83
    4  no     43.1 ± 10.0     0.0043 ± 0.0017    5.5 ± 0.9     0.46           0.90
   12  yes    25.2 ± 3.2      0.013 ± 0.003      6.9 ± 0.9     0.053          0.96
   12  no     26.9 ± 11.0     0.024 ± 0.007      6.7 ± 2.0     0.068          0.94
   20  yes    32.2 ± 10.9     0.019 ± 0.008      5.9 ± 1.3     0.087          0.95
   20  no     186 ± 236       0.13 ± 0.16        25 ± 26       1.07           0.55
=====  =====  ==============  =================  ============  =============  =============

Gaps (no-skip − skip) at depths 4 / 12 / 20: λ_max −0.04 / 1.7 / 154; ratio 0.0001 / 0.011 /
0.110; loss rise 2.0 / −0.13 / 19.1: the check passes. Caveats: the depth-20 plain nets train
badly (seed 0 never leaves the loss plateau ln 10 ≈ 2.30, so its landscape is flat: λ_max 0.12,
ratio 0.36; seeds 1 and 2 reach 0.85 and 0.72 test accuracy), so the depth-20 no-skip means are
over very different networks (per seed λ_max 0.12 / 38 / 519), and the 800-step budget
leaves depth 4 under-trained (landscape loss ≈ 0.5). The loss-rise gap is not monotone (it is
larger at depth 4 than at depth 12). Paper variant: 35 min 52 s wall on the shared 2-core
machine at load average 15–25 (17 min 41 s user CPU), far above the 10-minute budget on a quiet
machine; not re-measured quietly.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlearn import data as data_module
from jaxlearn import landscape, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

MEASURES = ("lambda_max", "eig_ratio", "loss_rise")


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a conv net of ``depth`` weight layers, with or without skips, trained on digits,
    then its landscape measured (module docstring)."""

    learning_rate: float = runner.dynamic(0.02, min=0.0, help="peak learning rate")
    optimizer: train.OptimizerSpec = runner.static(
        train.OptimizerSpec(args={"momentum": 0.9}, schedule="warmup_cosine", warmup_steps=100),
        help="optax optimizer and schedule (the paper: SGD with momentum 0.9)")
    depth: int = runner.static(8, min=4, help="weight layers: stem conv + 2·blocks convs + Dense (even)")
    skip: bool = runner.static(True, help="residual blocks (h + F(h))/√2 (true) or plain F(h) (false)")
    channels: int = runner.static(8, min=1, help="channels of every convolution")
    num_steps: int = runner.static(800, min=1, help="training steps")
    segment_steps: int = runner.static(400, min=1, help="steps per segment (metrics and checkpoint after each)")
    n_landscape: int = runner.static(256, min=1, max=1438, help="training images on which L, its Hessian and "
                                                                "surface are computed")
    lanczos_steps: int = runner.static(20, min=2, help="Lanczos steps for λ_min and λ_max")
    grid: int = runner.static(11, min=3, help="points per axis of the 2-D surface (odd: the centre is θ*)")
    extent: float = runner.static(1.0, min=0.0, help="the surface spans [-extent, extent]² (the paper: 1)")
    radius: float = runner.static(0.5, min=0.0, help="radius of the circle on which loss_rise is averaged")
    num_angles: int = runner.static(16, min=3, help="points on that circle")

    def __post_init__(self):
        if self.depth % 2:
            raise ValueError(f"depth: must be even (stem + 2 per block + readout), got {self.depth}")
        if self.grid % 2 == 0:
            raise ValueError(f"grid: must be odd so that the surface's centre is the trained network, got {self.grid}")


def model(config: Config):
    """The network of a member (the ``model`` hook; module docstring), on ``(N, 8, 8, 1)`` images."""
    he = np.sqrt(2.0)

    def conv(strides=None):
        return nn.Conv(config.channels, (3, 3), strides=strides, padding="SAME", W_std=he)

    blocks = []
    for _ in range((config.depth - 2) // 2):
        body = (nn.Relu(), conv(), nn.Relu(), conv())
        if config.skip:
            blocks += [nn.residual(*body), nn.Elementwise(lambda h: h / np.sqrt(2.0), name="ScaleBySqrtHalf")]
        else:
            blocks += list(body)
    return nn.serial(conv((2, 2)), *blocks, nn.Relu(), nn.GlobalAvgPool(), nn.Dense(10, W_std=1.0))


def data(config: Config) -> data_module.Arrays:
    """The digits split as ``(N, 8, 8, 1)`` images, shared by every member."""
    del config
    arrays = data_module.digits(seed=0).arrays()
    return arrays._replace(x_train=arrays.x_train.reshape(-1, 8, 8, 1), x_test=arrays.x_test.reshape(-1, 8, 8, 1))


def _input_spec():
    return jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)


def init(config: Config, key) -> train.TrainState:
    """The member's train state (the config's optimizer; He-initialised convolutions)."""
    return runner.study.init(config, key, model(config), _input_spec())


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` steps of minibatch SGD on the softmax cross-entropy; ``train_loss`` and
    ``test_accuracy`` after each segment."""
    def evaluate_accuracy(s, config, arrays):
        return {"test_accuracy": train.accuracy(model(config).apply(s.params, arrays.x_test), arrays.y_test)}

    return runner.study.segment(state, config, arrays, model(config), evaluate=evaluate_accuracy)


# -- the measurements (study-specific mathematics; tested in tests/experiments/test_skip_connections.py) --------
def extreme_eigenvalues(loss_fn, params, key, num_steps: int):
    """``(λ_min, λ_max)``: the extreme Ritz values of ``num_steps`` Lanczos steps on the Hessian of
    the scalar ``loss_fn`` at ``params``, from a Gaussian start vector drawn from ``key``.

    One Krylov space gives both ends of the spectrum (they converge first; with ``num_steps = P``
    they are the extreme eigenvalues). After a breakdown (an invariant Krylov space, betas 0 from
    there on) the trailing block of ``T_m`` is zero; its diagonal is set to ``α_0 = q_0ᵀ H q_0``, a
    Rayleigh quotient of the live block and so inside its Ritz range: it never becomes an extreme.
    Pure; ``num_steps`` static.
    """
    flat, unravel = ravel_pytree(params)

    def matvec(v):
        return ravel_pytree(landscape.hvp(loss_fn, params, unravel(v)))[0]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    alphas, betas, _ = landscape.lanczos(matvec, v0, num_steps)
    live = jnp.concatenate([jnp.ones(1, bool), jnp.cumprod(betas != 0).astype(bool)])
    alphas = jnp.where(live, alphas, alphas[0])
    ritz = jnp.linalg.eigvalsh(jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1))
    return ritz[0], ritz[-1]


def ring_loss_rise(loss_fn, params, d1, d2, radius, num_angles: int):
    """``mean_k loss_fn(θ + r cos φ_k d1 + r sin φ_k d2) − loss_fn(θ)`` over ``num_angles`` angles
    ``φ_k = 2πk/num_angles``: the mean rise of the loss on the circle of radius ``r`` in the plane of
    ``d1, d2`` around ``θ``. For a quadratic ``L`` and ``num_angles ≥ 3`` it is exactly
    ``r²/4 · (d1ᵀ H d1 + d2ᵀ H d2)`` (the linear and cross terms average to zero)."""
    angles = 2 * jnp.pi * jnp.arange(num_angles) / num_angles

    def at(phi):
        c, s = radius * jnp.cos(phi), radius * jnp.sin(phi)
        return loss_fn(jax.tree.map(lambda p, a, b: p + c * a + s * b, params, d1, d2))

    return jnp.mean(jax.lax.map(at, angles)) - loss_fn(params)


def _surface_key(i: int, j: int) -> str:
    return f"surface_{i:02d}_{j:02d}"


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """The final measurements of the trained network (module docstring); the surface as
    ``surface_ii_jj`` metrics (``ii`` indexes δ's coordinate, ``jj`` η's)."""
    net = model(config)
    x, y = arrays.x_train[:config.n_landscape], arrays.y_train[:config.n_landscape]

    def loss_fn(params):
        return train.softmax_cross_entropy(net.apply(params, x), y)

    params = state.params
    k_lanczos, k_d1, k_d2 = (jax.random.fold_in(state.key, 1000 + i) for i in range(3))
    lam_min, lam_max = extreme_eigenvalues(loss_fn, params, k_lanczos, config.lanczos_steps)
    d1, d2 = (landscape.random_direction(k, params, "filter", ignore_bias=True) for k in (k_d1, k_d2))
    axis = landscape.symmetric_grid(config.grid, config.extent)
    surface = landscape.surface_2d(loss_fn, params, d1, d2, axis, axis)
    grid_metrics = {_surface_key(i, j): surface[i, j] for i in range(config.grid) for j in range(config.grid)}
    return {
        "landscape_loss": loss_fn(params),
        "test_accuracy": train.accuracy(net.apply(params, arrays.x_test), arrays.y_test),
        "lambda_max": lam_max, "lambda_min": lam_min, "eig_ratio": jnp.abs(lam_min / lam_max),
        "loss_rise": ring_loss_rise(loss_fn, params, d1, d2, config.radius, config.num_angles),
        **grid_metrics,
    }


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
    """The pipeline at toy scale: every run's measurements finite, ``λ_min ≤ λ_max`` with
    ``λ_max > 0`` (a trained network's loss curves upward somewhere), the surface's centre equal to
    the landscape loss, and both architectures present at every depth."""
    runs = results.finished("depth", "skip", "lambda_min", "landscape_loss", *MEASURES).runs
    assert len(runs), "no finished runs"
    for _, r in runs.iterrows():
        where = f"depth={r['depth']} skip={r['skip']} seed={r['seed']}"
        values = [r[k] for k in (*MEASURES, "lambda_min", "landscape_loss")]
        assert np.all(np.isfinite(values)), f"{where}: non-finite measurements {values}"
        assert r["lambda_min"] <= r["lambda_max"] and r["lambda_max"] > 0, \
            f"{where}: λ_min {r['lambda_min']:.4g}, λ_max {r['lambda_max']:.4g}"
        grid = _grid_size(results.runs)
        centre = r.get(_surface_key(grid // 2, grid // 2), np.nan)
        assert np.isclose(centre, r["landscape_loss"], rtol=1e-4, atol=1e-6), \
            f"{where}: surface centre {centre:.6g} != landscape loss {r['landscape_loss']:.6g}"
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
    return np.array([[run[_surface_key(i, j)] for j in range(grid)] for i in range(grid)], float)


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
