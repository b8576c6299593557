"""Wide Bayesian networks are Gaussian processes: finite-width readout posteriors converge to the NNGP posterior.

Lee, Bahri, Novak, Schoenholz, Pennington & Sohl-Dickstein 2018 ("Deep neural networks as Gaussian
processes", ICLR; §2.2 eq. 4 the recursion of the NNGP kernel, §2.3 eqs. 7–8 the GP posterior) and
Matthews, Rowland, Hron, Turner & Ghahramani 2018 ("Gaussian process behaviour in wide deep neural
networks", ICLR; Thm. 4: convergence of the prior in distribution as the widths grow): a deep network
with i.i.d. Gaussian weights is, at infinite width, a Gaussian process with the NNGP kernel ``K``,
so exact Bayesian inference with it on noisy regression data ``(X, y)`` gives the posterior (eqs. 7–8)

    μ*(x) = K(x, X) (K(X, X) + σ_ε² I)⁻¹ y,     v*(x) = K(x, x) − K(x, X) (K(X, X) + σ_ε² I)⁻¹ K(X, x).

At finite width ``n`` we draw the hidden layers of a ReLU MLP at random (the prior) and do exact
Bayesian linear regression on its READOUT alone, whose prior is its initialisation,
``w ~ N(0, σ_w²/n · I)``, ``b ~ N(0, σ_b²)``: the readout ``f(x) = φ(x)·w + b`` of the last hidden
layer's features ``φ`` is then exactly a GP with the random-feature kernel

    K_n(x, x') = σ_w² φ(x)·φ(x')/n + σ_b²,

and its posterior is the formula above with ``K_n`` for ``K`` (the ridge / Bayesian-linear-regression
posterior of the readout, written in function space: ``readout_kernel`` and
``jaxlearn.kernels.gp_inference``; the weight-space form is its test). ``K_n → K`` as ``n → ∞``
(law of large numbers over the hidden units, layer by layer), so each member's posterior mean ``μ_n``
and variance ``v_n`` converge to ``μ*``, ``v*``: the fluctuation of one member is ``O(n^-1/2)``
and the bias of the ensemble average ``O(1/n)``.

Each run is one member of the ensemble (``seed``: the draw of the hidden layers; dynamic, so an
ensemble of ``M`` members is one vmapped program per width); ``width`` is static. A run returns its
posterior mean and variance at the ``n_test`` points of a 1-D slice of input space (``mean_XX``,
``var_XX``), the NNGP posterior at the same points (``nngp_mean_XX``, ``nngp_var_XX``, from
``jaxlearn.kernels.analytic``), and its own relative errors ``mean_error = ‖μ_n − μ*‖/‖μ*‖`` and
``var_error = ‖v_n − v*‖/‖v*‖`` (norms over the slice). ``summarize`` averages the ``M`` members:
``ensemble_mean_error = ‖μ̄ − μ*‖/‖μ*‖`` with ``μ̄`` the ensemble-averaged posterior mean, and its
Monte-Carlo standard error ``mean_mc_se = (Σ_x Var_m μ_n(x) / M)^½/‖μ*‖`` — the size that the
ensemble error would have from sampling alone (``E‖μ̄ − μ*‖² = ‖bias‖² + Σ_x Var/M``); likewise for
the variance.

The task: ``y = sin(x)`` on 16 points drawn uniformly in [−π, π] with noise std 0.1
(``jaxlearn.data.sinusoid_regression``), observation noise ``σ_ε² = 0.01``; the slice is 25 points
evenly spaced on [−4, 4] (inside and beyond the data). Network: 2 hidden ReLU layers, ``σ_w = 1.5``,
``σ_b = 0.5`` (standard parameterization, ``W ~ N(0, σ_w²/fan_in)``). Lee et al. used deeper nets and
MNIST/CIFAR; a 1-D task is what makes the posterior drawable, and M = 64 members keep the paper variant
at about a minute of CPU time.

Claim (``check``): for the posterior mean and for the posterior variance, the error of the
ensemble-averaged posterior to the NNGP posterior falls with width, net of its Monte-Carlo standard
error (no width's error exceeds the previous one's by more than twice their combined standard error,
and the widest error plus twice its standard error is below the narrowest error), over ≥ 4 widths,
and at the largest width the error plus twice its standard error is below 10%; each member's own
error (mean over the ensemble) falls strictly with every step in width. Measured with
configs/nngp_posterior.yaml (paper variant, M = 64 members per width; errors in %, ± one MC standard
error; per-member errors mean ± std over the 64 members):

=====  ================  =================  =================  ==================
width  ensemble mean     ensemble variance  per-member mean    per-member variance
=====  ================  =================  =================  ==================
   32  10.6 ± 2.0        18.1 ± 3.3         17.7 ± 7.6         30.7 ± 9.1
  128  2.25 ± 0.97       5.3 ± 1.9          7.5 ± 3.0          14.6 ± 6.9
  512  0.80 ± 0.50       1.39 ± 0.96        3.7 ± 1.5          7.3 ± 2.8
 2048  0.37 ± 0.25       0.74 ± 0.51        1.83 ± 0.85        3.8 ± 1.6
=====  ================  =================  =================  ==================

The ensemble errors fall about as ``1/n`` while the bias dominates (32 → 128) and then at the
Monte-Carlo floor ``∝ (nM)^-½``; the per-member errors fall as ``n^-½``. (Wall time of the paper
variant: 4 min on two CPU cores shared with other jobs, about 1 min of CPU time.)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import kernels, nn, runner
from jaxlearn.runner.plots import legend

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config:
    """One member: a random ReLU MLP of width ``width`` whose readout is fitted by exact Bayesian inference."""

    seed: int = runner.dynamic(0, min=0, help="draw of the hidden layers (one ensemble member)")
    width: int = runner.static(512, min=1, help="hidden layer width")
    depth: int = runner.static(2, min=1, help="number of hidden layers")
    W_std: float = runner.static(1.5, min=0.0, help="σ_w: weights ~ N(0, σ_w²/fan_in), readout included")
    b_std: float = runner.static(0.5, min=0.0, help="σ_b: biases ~ N(0, σ_b²), readout included")
    noise_var: float = runner.static(0.01, min=0.0, help="σ_ε²: observation noise variance of the likelihood")
    n_train: int = runner.static(16, min=1, help="training points of y = sin(x) (x uniform in [−π, π])")
    data_noise: float = runner.static(0.1, min=0.0, help="std of the noise on the training targets")
    n_test: int = runner.static(25, min=2, max=100, help="points of the 1-D slice on which posteriors are compared")
    slice_min: float = runner.static(-4.0, help="left end of the slice")
    slice_max: float = runner.static(4.0, help="right end of the slice")


def hidden(config: Config):
    """The hidden layers (the random features ``φ``): ``depth × (Dense(width) → ReLU)``."""
    layers = []
    for _ in range(config.depth):
        layers += [nn.Dense(config.width, W_std=config.W_std, b_std=config.b_std), nn.Relu()]
    return nn.serial(*layers)


def model(config: Config):
    """The whole network: the hidden layers and the readout ``Dense(1)`` (whose init is the prior)."""
    return nn.serial(hidden(config), nn.Dense(1, W_std=config.W_std, b_std=config.b_std))


def slice_points(config: Config) -> np.ndarray:
    """The ``(n_test, 1)`` inputs of the slice, evenly spaced on ``[slice_min, slice_max]``."""
    return np.linspace(config.slice_min, config.slice_max, config.n_test, dtype=np.float32)[:, None]


def _training_set(n_train: int, data_noise: float):
    ds = data_module.sinusoid_regression(seed=0, n_train=n_train, n_test=1, noise_std=data_noise)
    return ds.x_train, ds.y_train


def data(config: Config) -> data_module.Arrays:
    """The training set and the slice (``y_test = sin(x)`` there), shared by every member."""
    x_train, y_train = _training_set(config.n_train, config.data_noise)
    x_test = slice_points(config)
    real = jnp.result_type(float)  # float64 under JAX_ENABLE_X64
    return data_module.Arrays(*(jnp.asarray(a, real) for a in (x_train, y_train, x_test, np.sin(x_test))))


def readout_kernel(phi1, phi2, W_std, b_std):
    """``K_n = σ_w² φ₁ φ₂ᵀ / n + σ_b²`` for features ``phi1 (N1, n)``, ``phi2 (N2, n)``: the prior
    covariance of ``f = φ·w + b`` with ``w ~ N(0, σ_w²/n I)``, ``b ~ N(0, σ_b²)`` (a standard-parameterized
    ``Dense`` readout at initialisation)."""
    return W_std ** 2 * phi1 @ phi2.T / phi1.shape[-1] + b_std ** 2


def gp_posterior(k_all, y_train, noise_var):
    """Posterior mean ``(M,)`` and marginal variance ``(M,)`` at the last ``M`` of the ``N + M`` points
    of the joint prior covariance ``k_all`` (training points first; ``N = len(y_train)``) of a GP with
    observation noise variance ``noise_var`` (Lee et al. 2018, eqs. 7–8; ``jaxlearn.kernels.gp_inference``,
    "nngp")."""
    n = y_train.shape[0]
    predict = kernels.gp_inference(k_all[:n, :n], y_train, diag_reg=noise_var, diag_reg_absolute_scale=True)
    posterior = predict("nngp", k_all[n:, :n], k_all[n:, n:])
    return posterior.mean[:, 0], jnp.diagonal(posterior.covariance)


def _inputs(arrays):
    return jnp.concatenate([arrays.x_train, arrays.x_test])


def nngp_posterior(config: Config, arrays):
    """The infinite-width posterior: ``gp_posterior`` with the analytic NNGP kernel of ``model(config)``."""
    k_all = kernels.analytic(model(config), _inputs(arrays), get="nngp", batch_size=None)
    return gp_posterior(k_all, arrays.y_train, config.noise_var)


def member_posterior(config: Config, arrays, key):
    """One member's posterior: hidden layers drawn from ``key``, exact Bayesian readout."""
    net = hidden(config)
    params = net.init(key, jax.ShapeDtypeStruct((1, 1), arrays.x_train.dtype))[0]
    phi = net.apply(params, _inputs(arrays))
    return gp_posterior(readout_kernel(phi, phi, config.W_std, config.b_std), arrays.y_train, config.noise_var)


def _relative(a, b):
    return jnp.linalg.norm(a - b) / jnp.linalg.norm(b)


def run(config: Config, arrays) -> dict:
    """The member's and the NNGP's posterior mean and variance on the slice, and the member's relative errors."""
    mean, var = member_posterior(config, arrays, jax.random.key(config.seed))
    mean_star, var_star = nngp_posterior(config, arrays)
    out = {"mean_error": _relative(mean, mean_star), "var_error": _relative(var, var_star)}
    for i in range(config.n_test):
        out |= {f"mean_{i:02d}": mean[i], f"var_{i:02d}": var[i],
                f"nngp_mean_{i:02d}": mean_star[i], f"nngp_var_{i:02d}": var_star[i]}
    return out


def _columns(prefix: str, n_test: int) -> list[str]:
    return [f"{prefix}_{i:02d}" for i in range(n_test)]


def _finished(results):
    runs = results.finished("width", "n_test", "slice_min", "slice_max", "n_train", "data_noise", "mean_error",
                            "var_error").runs
    return runs.dropna(subset=["mean_error", "var_error"])


def _per_width(results) -> list[dict]:
    """Per width: the ensemble's posterior on the slice (averages and MC standard errors) and the NNGP's."""
    out = []
    for width, part in _finished(results).groupby("width"):
        n_test = int(part.n_test.iloc[0])
        row = {"width": int(width), "members": len(part)}
        for kind in ("mean", "var"):
            member = part[_columns(kind, n_test)].to_numpy(np.float64)
            star = part[_columns(f"nngp_{kind}", n_test)].to_numpy(np.float64)[0]
            spread = member.std(0, ddof=1) if len(part) > 1 else np.full(n_test, np.nan)
            row[kind] = {"ensemble": member.mean(0), "se": spread / np.sqrt(len(part)), "nngp": star,
                         "error": np.linalg.norm(member.mean(0) - star) / np.linalg.norm(star),
                         "mc_se": np.sqrt(np.sum(spread ** 2) / len(part)) / np.linalg.norm(star),
                         "member_error": part[f"{kind}_error"].to_numpy(np.float64)}
        out.append(row)
    return sorted(out, key=lambda r: r["width"])


def summarize(results) -> list[dict]:
    """Per width (M members each): the relative error of the ensemble-averaged posterior mean and
    variance to the NNGP's, with its Monte-Carlo standard error, and each member's own error (mean
    and std over the members)."""
    rows = []
    for r in _per_width(results):
        rows.append({"width": r["width"], "members": r["members"],
                     "ensemble_mean_error": float(r["mean"]["error"]), "mean_mc_se": float(r["mean"]["mc_se"]),
                     "ensemble_var_error": float(r["var"]["error"]), "var_mc_se": float(r["var"]["mc_se"]),
                     "member_mean_error": float(r["mean"]["member_error"].mean()),
                     "member_mean_error_std": float(r["mean"]["member_error"].std()),
                     "member_var_error": float(r["var"]["member_error"].mean()),
                     "member_var_error_std": float(r["var"]["member_error"].std())})
    return rows


def smoke_check(results) -> None:
    """At toy scale: every member finite and a full ensemble at each width (>= 2 widths, >= 3 members),
    and the members' own errors (mean over the ensemble) fall from the narrowest to the widest width
    (they scale as width^-1/2; the smoke widths differ 16-fold)."""
    rows = summarize(results)
    assert len(rows) >= 2, f"smoke_check needs >= 2 widths with finished members, got {len(rows)}"
    for row in rows:
        assert row["members"] >= 3, f"width {row['width']}: {row['members']} members, need >= 3"
        assert all(np.isfinite(v) for v in row.values()), f"width {row['width']}: non-finite summary {row}"
    for kind in ("member_mean_error", "member_var_error"):
        assert rows[-1][kind] < rows[0][kind], (f"{kind}: width {rows[-1]['width']} gives {rows[-1][kind]:.3g}, "
                                                f"not below width {rows[0]['width']}'s {rows[0][kind]:.3g}")


def check(results) -> None:
    """The claim (Lee et al. 2018; Matthews et al. 2018): over >= 4 widths, for the posterior mean and
    the posterior variance, the ensemble's error to the NNGP posterior falls with width net of its MC
    standard error and is below 10% (plus twice its standard error) at the largest width; each
    member's own error falls at every step in width."""
    rows = summarize(results)
    assert len(rows) >= 4, f"check needs >= 4 widths with finished members, got {len(rows)}"
    for row in rows:
        assert row["members"] >= 3, f"width {row['width']}: {row['members']} members, need >= 3"
    for kind in ("mean", "var"):
        err, se = [r[f"ensemble_{kind}_error"] for r in rows], [r[f"{kind}_mc_se"] for r in rows]
        for i in range(1, len(rows)):
            tol = 2 * np.hypot(se[i - 1], se[i])
            assert err[i] <= err[i - 1] + tol, (f"{kind}: error rises from {err[i - 1]:.4f} (width "
                                                f"{rows[i - 1]['width']}) to {err[i]:.4f} (width {rows[i]['width']}), "
                                                f"beyond 2 SE = {tol:.4f}")
        assert err[-1] + 2 * se[-1] < err[0], (f"{kind}: widest error {err[-1]:.4f} + 2 SE {2 * se[-1]:.4f} is not "
                                               f"below the narrowest error {err[0]:.4f}")
        assert err[-1] + 2 * se[-1] < 0.10, (f"{kind}: width {rows[-1]['width']} error {err[-1]:.4f} + 2 SE "
                                             f"{2 * se[-1]:.4f} is not below 10%")
        member = [r[f"member_{kind}_error"] for r in rows]
        assert all(b < a for a, b in zip(member, member[1:])), f"{kind}: per-member errors do not fall: {member}"


def plot(results):
    """Left: relative error to the NNGP posterior against width (log-log): ensemble average ± MC SE
    (solid) and per-member mean (dashed), for the posterior mean and variance. Right: the 1-D slice:
    NNGP posterior mean ± 2σ and the ensemble average (mean ± 2·√(average variance)) at the narrowest
    and widest widths, with the training points."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(11, 4))
    ax_err, ax_slice = fig.subplots(1, 2)
    per_width = _per_width(results)
    widths = np.array([r["width"] for r in per_width], float)
    for kind, color, name in (("mean", "C0", "posterior mean"), ("var", "C3", "posterior variance")):
        if not per_width:
            break
        err = np.array([r[kind]["error"] for r in per_width])
        se = np.array([r[kind]["mc_se"] for r in per_width])
        member = np.array([r[kind]["member_error"].mean() for r in per_width])
        ax_err.errorbar(widths, err, yerr=se, color=color, marker="o", capsize=3, label=f"ensemble, {name}")
        ax_err.plot(widths, member, color=color, ls="--", marker="s", label=f"one member, {name}")
    ax_err.axhline(0.10, color="gray", ls=":", lw=1, label="10%")
    ax_err.set(xscale="log", yscale="log", xlabel="width n", ylabel="‖· − NNGP‖ / ‖NNGP‖",
               title="Error to the NNGP posterior")
    legend(ax_err, fontsize=7)
    finished = _finished(results)
    if per_width:
        n_test = int(finished.n_test.iloc[0])
        x = np.linspace(float(finished.slice_min.iloc[0]), float(finished.slice_max.iloc[0]), n_test)
        star_mean, star_var = per_width[0]["mean"]["nngp"], per_width[0]["var"]["nngp"]
        band = 2 * np.sqrt(np.maximum(star_var, 0))
        ax_slice.fill_between(x, star_mean - band, star_mean + band, color="gray", alpha=0.3, label="NNGP ± 2σ")
        ax_slice.plot(x, star_mean, color="k", lw=2, label="NNGP mean")
        for r, color in zip({id(r): r for r in (per_width[0], per_width[-1])}.values(), ("C1", "C2")):
            mean, var = r["mean"]["ensemble"], r["var"]["ensemble"]
            ax_slice.plot(x, mean, color=color, label=f"width {r['width']} ensemble (M={r['members']}) ± 2σ")
            for sign in (-1, 1):
                ax_slice.plot(x, mean + sign * 2 * np.sqrt(np.maximum(var, 0)), color=color, ls="--", lw=1)
        x_train, y_train = _training_set(int(finished.n_train.iloc[0]), float(finished.data_noise.iloc[0]))
        ax_slice.scatter(x_train[:, 0], y_train[:, 0], color="k", s=12, zorder=3, label="training data")
    ax_slice.set(xlabel="x", ylabel="f(x)", title="Posterior on the slice")
    legend(ax_slice, fontsize=7)
    fig.tight_layout()
    return fig
