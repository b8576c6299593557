"""Double descent of random-features regression: test error peaks where features = samples.

A study without training (one pure ``run(config)``): fit ``y ≈ φ(x) a`` with random ReLU
features ``φ(x) = relu(x W / √d)``, ``W ~ N(0, 1)``, by ridge regression in closed form,

    a = φᵀ (φ φᵀ + λ n I)⁻¹ y = (φᵀφ + λ n I)⁻¹ φᵀ y   (→ the minimum-norm least-squares fit as λ → 0),

and report train and test MSE. Belkin et al. 2019 ("Reconciling modern machine-learning practice
and the classical bias–variance trade-off", PNAS) and Mei & Montanari 2019 (random features
regression) show the test error of the (near-)ridgeless fit diverging at the interpolation
threshold ``num_features = n_train`` and falling again beyond it; ridge regularisation (λ > 0)
removes the peak. ``seed`` (features and noise) and ``ridge`` are dynamic, so a sweep over
them is one vmapped program per ``num_features``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import runner
from jaxlearn.runner.plots import legend

VERSION = "2"


@dataclasses.dataclass(frozen=True)
class Config:
    seed: int = runner.dynamic(0, min=0, help="random features seed")
    ridge: float = runner.dynamic(1e-6, min=0.0, help="ridge strength λ (per sample)")
    num_features: int = runner.static(100, min=1)
    n_train: int = runner.static(100, min=1)
    d_in: int = runner.static(20, min=1)
    noise_std: float = runner.static(0.2, min=0.0)


def data(config: Config):
    """A linear teacher with noisy training labels, shared by every member."""
    ds = data_module.teacher_student(seed=0, n_train=config.n_train, n_test=1000, d_in=config.d_in,
                                     activation="linear", noise_std=config.noise_std)
    real = jnp.result_type(float)  # float64 under JAX_ENABLE_X64
    return tuple(jnp.asarray(a, real) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def features(key, x, num_features: int):
    """``relu(x W / √d)`` with ``W ~ N(0, 1)`` of shape ``(d, num_features)``."""
    w = jax.random.normal(key, (x.shape[-1], num_features), x.dtype)
    return jax.nn.relu(x @ w / np.sqrt(x.shape[-1]))


def run(config: Config, arrays) -> dict:
    """Train and test MSE (½·mean, as ``train.mse``) of the ridge fit, and the norm of ``a``."""
    x_train, y_train, x_test, y_test = arrays
    key = jax.random.key(config.seed)
    phi_train, phi_test = features(key, x_train, config.num_features), features(key, x_test, config.num_features)
    n, p = phi_train.shape
    # The smaller of the two equivalent systems: primal (φᵀφ + λn I) a = φᵀy when p < n, dual
    # a = φᵀ(φφᵀ + λn I)⁻¹ y otherwise; a floor relative to the spectrum keeps λ → 0 solvable.
    if p < n:
        gram = phi_train.T @ phi_train
        jitter = config.ridge * n + 1e-9 * jnp.trace(gram) / p
        coef = jnp.linalg.solve(gram + jitter * jnp.eye(p, dtype=gram.dtype), phi_train.T @ y_train)
    else:
        gram = phi_train @ phi_train.T
        jitter = config.ridge * n + 1e-9 * jnp.trace(gram) / n
        coef = phi_train.T @ jnp.linalg.solve(gram + jitter * jnp.eye(n, dtype=gram.dtype), y_train)
    return {
        "train_mse": 0.5 * jnp.mean((phi_train @ coef - y_train) ** 2),
        "test_mse": 0.5 * jnp.mean((phi_test @ coef - y_test) ** 2),
        "coef_norm": jnp.linalg.norm(coef),
    }


def _final(results):
    return results.finished("num_features", "ridge", "n_train", "test_mse", "train_mse").runs


def summarize(results) -> list[dict]:
    """Mean test MSE over seeds per (num_features, ridge), finished runs only."""
    rows = []
    for (p, ridge), part in _final(results).groupby(["num_features", "ridge"]):
        rows.append({"num_features": int(p), "ridge": float(ridge), "test_mse": float(part.test_mse.mean()),
                     "train_mse": float(part.train_mse.mean()), "seeds": len(part)})
    return rows


def check(results) -> None:
    """The claim: with (almost) no ridge, the test error at the interpolation threshold
    (num_features = n_train) exceeds the error both well below and well above it."""
    final = _final(results)
    assert len(final), "no finished runs"
    rows = [r for r in summarize(results) if r["ridge"] <= 1e-5]
    n = int(final.n_train.iloc[0])
    by_p = {r["num_features"]: r["test_mse"] for r in rows}
    assert n in by_p, f"the sweep must include num_features = n_train = {n}"
    below = [v for p, v in by_p.items() if p <= n // 2]
    above = [v for p, v in by_p.items() if p >= 2 * n]
    assert below and above, "the sweep needs num_features <= n_train/2 and >= 2 n_train"
    assert by_p[n] > 2 * min(below) and by_p[n] > 2 * min(above), f"no peak at the threshold: {by_p}"


def plot(results):
    """Test MSE against num_features / n_train, one line per ridge (mean over seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    final = _final(results)
    n = int(final.n_train.iloc[0]) if len(final) else 1
    rows = summarize(results)
    for ridge in sorted({r["ridge"] for r in rows}):
        pts = sorted((r["num_features"] / n, r["test_mse"]) for r in rows if r["ridge"] == ridge)
        ax.plot(*zip(*pts), marker="o", label=f"ridge={ridge:g}")
    ax.axvline(1.0, color="gray", linestyle=":")
    ax.set(xscale="log", yscale="log", xlabel="num_features / n_train", ylabel="test MSE", title="Double descent")
    legend(ax)
    fig.tight_layout()
    return fig
