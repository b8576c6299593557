"""The finite-width correction to the NNGP: an output's excess kurtosis over initialisations is ∝ 1/width.

Antognini 2019 ("Finite size corrections for neural network Gaussian processes", §3: the output of a
one-hidden-layer network at finite width ``n`` is a sum of ``n`` i.i.d. terms, so its cumulants beyond
the second are ``O(1/n)`` — an Edgeworth correction to the NNGP) and Yaida 2020 ("Non-Gaussian processes
and neural networks at finite widths", §2.3 and eq. 2.23: the connected four-point function, the
"four-point vertex", is ``O(1/n)`` and sets the leading non-Gaussianity). Over random initialisations,
the excess kurtosis of an output, ``κ₄/κ₂²``, times the width is constant.

Network and closed form. ``f(x) = Σ_{i≤n} v_i φ(u_i)`` with ``u_i = w_i·x``, ``w_i ~ N(0, σ_w²/d · I)``,
``v_i ~ N(0, σ_v²/n)``, no biases (standard parameterization, ``jaxlearn.nn.Dense``). For a fixed input
``x`` the terms are i.i.d. with ``u ~ N(0, q)``, ``q = σ_w²|x|²/d``, so cumulants add: ``κ₂(f) = σ_v² E[φ(u)²]``
and, since ``E[v⁴] = 3E[v²]²``, ``κ₄(f) = n κ₄(v φ(u)) = 3σ_v⁴ (E[φ(u)⁴] − E[φ(u)²]²)/n``. Hence

    n · excess kurtosis = 3 (E[φ(u)⁴] / E[φ(u)²]² − 1),

exactly at every width (the ``1/n`` term is the whole correction for one hidden layer). For ReLU,
``E[φ(u)^k] = q^{k/2} (k−1)!!/2`` for even ``k``, so the ratio is ``(3/2)/(1/4) = 6`` and
``n · excess kurtosis = 15``, independent of ``q``, ``σ_w``, ``σ_v``. Other activations: the two Gaussian
expectations by Gauss–Hermite quadrature (``kurtosis_coefficient``).

Estimator and its standard error. From ``N`` draws, the sample central moments ``m_k`` give
``g₂ = m₄/m₂² − 3``. Its delta-method variance (influence function of the ratio of central moments;
``μ_k`` the central moments):

    N · Var(g₂) ≈ a² (μ₈ − μ₄² − 8μ₃μ₅ + 16μ₃²μ₂) + 2ab (μ₆ − μ₄μ₂ − 4μ₃²) + b² (μ₄ − μ₂²),
    a = 1/μ₂²,  b = −2μ₄/μ₂³

(for a Gaussian it is 24/N). ``excess_kurtosis_se`` evaluates it at the sample moments; the
batch-means standard error over the independent runs (seeds) is reported beside it as a cross-check.

Each run (``seed``: dynamic, so the ensemble of runs at one width is one vmapped program) draws
``draws`` initialisations of the network in chunks of ``chunk`` (``lax.map`` over chunks, each chunk a
``vmap`` of ``model(config).init``) and returns the raw moments ``moment_1 … moment_8`` of ``f(x)`` at
the fixed input ``x = (1, …, 1)``, its own ``excess_kurtosis`` and ``width_times_kurtosis``. ``summarize``
pools the runs of a width (their raw moments, equal draws each).

Claim (``check``): over widths 32 … 256 (≥ 4 widths, ≥ 2·10⁵ initialisations each), width × excess
kurtosis is constant within 15% plus two standard errors of its (inverse-variance weighted) mean, and
equals the closed form within the same tolerance. Measured with configs/finite_width_kurtosis.yaml
(ReLU, d = 4, 8 seeds × 125 000 = 10⁶ initialisations per width; ± the delta-method standard error of
the pooled estimate; per-seed values: mean ± std over the 8 seeds):

=====  ===========================  ================  ====================  =====================  ===========
width  n · excess kurtosis, pooled  delta-method SE   batch-means SE (8)    per seed (mean ± std)  closed form
=====  ===========================  ================  ====================  =====================  ===========
   32  14.76                        0.26              0.35                  14.76 ± 0.93           15
   64  15.59                        0.43              0.26                  15.57 ± 0.70           15
  128  15.10                        0.75              0.73                  15.10 ± 1.93           15
  256  14.79                        1.39              0.70                  14.78 ± 1.84           15
=====  ===========================  ================  ====================  =====================  ===========

Every width is within 4% of the closed form (at most 1.4 SE away). Wall time of the paper variant:
6 min 47 s on two CPU cores shared with other jobs (2 min of CPU time).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import nn, runner
from jaxlearn.runner.plots import legend

VERSION = "1"

_MOMENTS = tuple(f"moment_{k}" for k in range(1, 9))


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: ``draws`` random initialisations of a one-hidden-layer network of width ``width``."""

    seed: int = runner.dynamic(0, min=0, help="stream of initialisations (runs with different seeds are independent)")
    width: int = runner.static(64, min=1, help="hidden layer width n")
    activation: str = runner.static("relu", help="hidden activation (jaxlearn.nn.ACTIVATIONS name)")
    d_in: int = runner.static(4, min=1, help="input dimension (the input is x = (1, ..., 1))")
    W_std: float = runner.static(1.0, min=0.0, help="σ_w: hidden weights ~ N(0, σ_w²/d)")
    readout_std: float = runner.static(1.0, min=0.0, help="σ_v: readout weights ~ N(0, σ_v²/n)")
    draws: int = runner.static(125_000, min=2, help="initialisations per run")
    chunk: int = runner.static(2_500, min=1, help="initialisations drawn at once (a vmap); divides draws")

    def __post_init__(self):
        if self.draws % self.chunk:
            raise ValueError(f"chunk: must divide draws={self.draws}, got {self.chunk}")
        if self.activation not in nn.ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(nn.ACTIVATIONS)}, got {self.activation!r}")


def model(config: Config):
    """``Dense(width) → φ → Dense(1)``, no biases, standard parameterization."""
    return nn.serial(nn.Dense(config.width, W_std=config.W_std, b_std=None), nn.activation(config.activation),
                     nn.Dense(1, W_std=config.readout_std, b_std=None))


def _outputs(config: Config, keys):
    """``f(x)`` of the networks drawn from ``keys`` (one each), at ``x = (1, ..., 1)``."""
    net = model(config)
    x = jnp.ones((1, config.d_in))

    def one(key):
        params = net.init(key, jax.ShapeDtypeStruct(x.shape, x.dtype))[0]
        return net.apply(params, x)[0, 0]

    return jax.vmap(one)(keys)


def run(config: Config) -> dict:
    """Raw moments ``E[f^k]``, ``k = 1..8``, over ``draws`` initialisations, and the run's own estimate."""
    key = jax.random.key(config.seed)

    def chunk_moments(index):
        f = _outputs(config, jax.random.split(jax.random.fold_in(key, index), config.chunk))
        return jnp.stack([jnp.mean(f ** k) for k in range(1, 9)])

    raw = jnp.mean(jax.lax.map(chunk_moments, jnp.arange(config.draws // config.chunk)), axis=0)
    mu = _central_from_raw(raw, jnp)
    g2 = mu[4] / mu[2] ** 2 - 3
    return {**dict(zip(_MOMENTS, raw)), "excess_kurtosis": g2, "width_times_kurtosis": config.width * g2}


def _central_from_raw(raw, xp=np):
    """Central moments ``{k: μ_k}``, ``k = 2..8``, from raw moments ``raw[k-1] = E[x^k]``, ``k = 1..8``."""
    m = [1.0, *[raw[k] for k in range(8)]]
    mean = m[1]
    return {k: sum(math.comb(k, j) * m[j] * (-mean) ** (k - j) for j in range(k + 1)) for k in range(2, 9)}


def central_moments(raw) -> dict:
    """Central moments ``{k: μ_k}`` (``k = 2..8``) from the raw moments ``E[x^k]``, ``k = 1..8`` (a sequence of 8)."""
    return _central_from_raw(np.asarray(raw, np.float64))


def excess_kurtosis(raw) -> float:
    """``g₂ = μ₄/μ₂² − 3`` from the raw moments ``E[x^k]``, ``k = 1..8``."""
    mu = central_moments(raw)
    return float(mu[4] / mu[2] ** 2 - 3)


def excess_kurtosis_se(raw, n: int) -> float:
    """The delta-method standard error of ``g₂`` from ``n`` i.i.d. draws whose raw moments are ``raw``
    (``E[x^k]``, ``k = 1..8``): the formula of the module docstring, evaluated at these moments."""
    mu = central_moments(raw)
    a, b = 1 / mu[2] ** 2, -2 * mu[4] / mu[2] ** 3
    var = (a * a * (mu[8] - mu[4] ** 2 - 8 * mu[3] * mu[5] + 16 * mu[3] ** 2 * mu[2])
           + 2 * a * b * (mu[6] - mu[4] * mu[2] - 4 * mu[3] ** 2) + b * b * (mu[4] - mu[2] ** 2))
    return float(np.sqrt(max(var, 0.0) / n))


def kurtosis_coefficient(activation: str, q: float = 1.0, nodes: int = 200) -> float:
    """``n · excess kurtosis = 3 (E[φ(u)⁴]/E[φ(u)²]² − 1)``, ``u ~ N(0, q)``, of the output of a
    bias-free one-hidden-layer network (module docstring): 15 in closed form for ReLU, otherwise
    Gauss–Hermite quadrature with ``nodes`` nodes (exact for polynomials of degree < 2·nodes)."""
    if activation == "relu":
        return 15.0
    z, w = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(−z²/2)
    w = w / w.sum()
    layer = nn.activation(activation)
    phi = np.asarray(layer.apply((), jnp.asarray(np.sqrt(q) * z)), np.float64)
    return float(3 * (np.sum(w * phi ** 4) / np.sum(w * phi ** 2) ** 2 - 1))


def _finished(results):
    runs = results.finished("width", "draws", "activation", "W_std", "d_in", "excess_kurtosis", *_MOMENTS).runs
    return runs.dropna(subset=list(_MOMENTS))


def summarize(results) -> list[dict]:
    """Per width: width × excess kurtosis of the runs pooled, its delta-method and batch-means standard
    errors, the per-seed mean and std, and the closed form."""
    rows = []
    for width, part in _finished(results).groupby("width"):
        draws = int(part.draws.sum())
        raw = part[list(_MOMENTS)].to_numpy(np.float64).mean(0)  # equal draws per run
        per_seed = width * part.excess_kurtosis.to_numpy(np.float64)
        batch_se = float(per_seed.std(ddof=1) / np.sqrt(len(part))) if len(part) > 1 else float("nan")
        q = float(part.W_std.iloc[0]) ** 2  # x = (1, ..., 1): |x|²/d = 1
        rows.append({"width": int(width), "seeds": len(part), "draws": draws,
                     "width_times_kurtosis": float(width * excess_kurtosis(raw)),
                     "se": float(width * excess_kurtosis_se(raw, draws)), "batch_means_se": batch_se,
                     "per_seed_mean": float(per_seed.mean()), "per_seed_std": float(per_seed.std()),
                     "closed_form": kurtosis_coefficient(str(part.activation.iloc[0]), q)})
    return sorted(rows, key=lambda r: r["width"])


def _weighted_mean(rows) -> float:
    weights = np.array([1 / r["se"] ** 2 for r in rows])
    return float(np.sum(weights * np.array([r["width_times_kurtosis"] for r in rows])) / weights.sum())


def smoke_check(results) -> None:
    """At toy scale: >= 2 widths, finite estimates with positive standard errors, and every width's
    excess kurtosis positive and within 50% plus three standard errors of the closed form."""
    rows = summarize(results)
    assert len(rows) >= 2, f"smoke_check needs >= 2 widths, got {len(rows)}"
    for r in rows:
        value, se, exact = r["width_times_kurtosis"], r["se"], r["closed_form"]
        assert np.isfinite(value) and se > 0, f"width {r['width']}: estimate {value} ± {se}"
        assert value > 0, f"width {r['width']}: width × excess kurtosis {value:.3f} is not positive"
        assert abs(value - exact) <= 0.5 * abs(exact) + 3 * se, \
            f"width {r['width']}: width × excess kurtosis {value:.3f} ± {se:.3f} is far from {exact:.3f}"


def check(results) -> None:
    """The claim (Antognini 2019; Yaida 2020): over widths 32 … 256 (>= 4 widths, >= 2·10⁵
    initialisations each), width × excess kurtosis is within 15% plus two standard errors of its
    weighted mean at every width, and of the closed form."""
    rows = summarize(results)
    assert len(rows) >= 4, f"check needs >= 4 widths, got {len(rows)}"
    widths = [r["width"] for r in rows]
    assert widths[0] <= 32 and widths[-1] >= 256, f"check needs widths spanning 32 … 256, got {widths}"
    for r in rows:
        assert r["draws"] >= 200_000, f"width {r['width']}: {r['draws']} initialisations, need >= 2e5"
    mean = _weighted_mean(rows)
    for r in rows:
        value, se = r["width_times_kurtosis"], r["se"]
        for name, target in (("weighted mean", mean), ("closed form", r["closed_form"])):
            assert abs(value - target) <= 0.15 * abs(target) + 2 * se, \
                (f"width {r['width']}: width × excess kurtosis {value:.3f} ± {se:.3f} differs from the {name} "
                 f"{target:.3f} by more than 15% + 2 SE")


def plot(results):
    """Left: width × excess kurtosis against width (pooled ± 2 SE), its weighted mean with the ±15%
    band and the closed form. Right: the excess kurtosis itself against width (log-log) with the
    closed form ``c/n``."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_scaled, ax_raw = fig.subplots(1, 2)
    rows = summarize(results)
    if rows:
        widths = np.array([r["width"] for r in rows], float)
        value = np.array([r["width_times_kurtosis"] for r in rows])
        se = np.array([r["se"] for r in rows])
        exact = rows[0]["closed_form"]
        ax_scaled.errorbar(widths, value, yerr=2 * se, marker="o", capsize=3, label="measured (± 2 SE)")
        ax_scaled.axhline(exact, color="k", ls="--", label=f"closed form {exact:.3g}")
        mean = _weighted_mean(rows)
        ax_scaled.axhspan(0.85 * mean, 1.15 * mean, color="C0", alpha=0.15, label="weighted mean ± 15%")
        ax_raw.errorbar(widths, value / widths, yerr=2 * se / widths, marker="o", capsize=3, ls="none",
                        label="measured (± 2 SE)")
        grid = np.geomspace(widths.min(), widths.max(), 50)
        ax_raw.plot(grid, exact / grid, color="k", ls="--", label=f"{exact:.3g} / n")
    ax_scaled.set(xscale="log", xlabel="width n", ylabel="n × excess kurtosis of f(x)", title="Finite-width correction")
    ax_raw.set(xscale="log", yscale="log", xlabel="width n", ylabel="excess kurtosis of f(x)",
               title="Excess kurtosis over initialisations")
    legend(ax_scaled, fontsize=8)
    legend(ax_raw, fontsize=8)
    fig.tight_layout()
    return fig
