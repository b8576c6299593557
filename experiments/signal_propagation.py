"""Deep information propagation: a network trains only if its depth is within a few correlation lengths ξ_c.

Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli 2016 ("Exponential expressivity in deep neural networks
through transient chaos", eqs. 3–5: the length map ``q ↦ σ_w² E[φ(√q z)²] + σ_b²`` and the correlation
map) and Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017 ("Deep information propagation", ICLR; §3
eqs. 9–10: ``ξ_c = −1/ln χ_c``, ``χ_c = σ_w² E[φ'(u₁)φ'(u₂)]`` at the correlation fixed point; §5 and
Fig. 5: random networks are trainable only when their depth is at most about ``6 ξ_c``, and ``ξ_c``
diverges at the order-to-chaos transition, so the trainable region is a band of depths that widens
around the critical ``σ_w²``). The mean-field quantities come from
:func:`jaxlearn.kernels.phase_diagram` with the closed-form dual of ``erf``
(``jaxlearn.nn.dual``; read its module docstring for the conventions).

Each member: an MLP of ``depth`` hidden ``erf`` layers of width ``width`` (weights ``N(0, σ_w²/fan_in)``,
biases ``N(0, σ_b²)``, ``σ_b² = 0.05`` as in Schoenholz et al.; the readout too), trained by SGD for
``num_steps`` steps on scikit-learn's digits (softmax cross-entropy); the final test accuracy is the
metric. ``W_std`` (σ_w) and ``seed`` are dynamic, so each depth is one compiled group with the whole
``σ_w²`` grid × seeds vmapped; the ``depth − 1`` identical hidden-to-hidden layers are one
``lax.scan`` (``erf_stack``), so a depth-100 network compiles like a depth-2 one.

Claim (``check``), per cell (σ_w², depth), with the cell's accuracy the mean over seeds and chance 0.1:
at least 90% of the cells with ``depth < 2 ξ_c`` reach chance + 20 points (0.3), and at most 10% of
the cells with ``depth > 6 ξ_c`` do. Measured with configs/signal_propagation.yaml (paper variant:
σ_w² ∈ {0.5, 1, …, 4}, depths 2 … 96, width 64, 400 SGD steps at learning rate 0.05, batch 64, 3 seeds;
"max std" the largest std over seeds in the row):

=====  ================================================  =======
depth  test accuracy at σ_w² = 0.5 … 4.0 (mean of 3)    max std
=====  ================================================  =======
    2  0.95 0.96 0.97 0.97 0.97 0.97 0.96 0.96           0.007
    6  0.94 0.96 0.97 0.97 0.97 0.97 0.97 0.97           0.007
   12  0.59 0.97 0.98 0.97 0.97 0.97 0.97 0.96           0.084
   24  0.09 0.94 0.97 0.97 0.59 0.24 0.10 0.10           0.134
   48  0.09 0.13 0.10 0.12 0.10 0.10 0.10 0.11           0.044
   96  0.09 0.10 0.10 0.10 0.10 0.13 0.13 0.16           0.043
=====  ================================================  =======

ξ_c (σ_b² = 0.05) at those σ_w²: 1.6, 7.0, 32.3, 10.2, 7.6, 6.5, 5.8, 5.4 (critical σ_w² ≈ 1.4). Of the
22 cells with depth < 2 ξ_c, 21 train (95%; the exception: σ_w² = 1.5, depth 48, 1.5 ξ_c, still at
chance after 400 steps); of the 15 cells with depth > 6 ξ_c, 1 does (7%: σ_w² = 0.5, depth 12, 7.5 ξ_c,
0.59). No run diverged. Wall time of the paper variant: 14 min 37 s on two CPU cores shared with other
jobs (load ~20; 5 min 24 s of CPU time).

Differences from the paper: Schoenholz et al. trained width-300 networks on MNIST/CIFAR-10 for many
more steps (and up to depth 300); here width 64, digits and 400 steps keep the paper variant within
ten minutes of two CPU cores. Fewer steps shrink the trainable band (a network near ``6 ξ_c`` needs
long training to start learning), which is why the criterion's two regions are ``< 2 ξ_c`` and
``> 6 ξ_c``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import kernels, nn, runner, train

VERSION = "1"

CHANCE = 0.1  # ten balanced classes


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a depth-``depth`` erf MLP with weight std ``W_std`` trained by SGD on digits."""

    W_std: float = runner.dynamic(1.5, min=0.0, help="σ_w: weights ~ N(0, σ_w²/fan_in) (every layer)")
    b_std: float = runner.static(0.05 ** 0.5, min=0.0, help="σ_b: biases ~ N(0, σ_b²) (every layer)")
    depth: int = runner.static(10, min=1, help="number of hidden erf layers")
    width: int = runner.static(64, min=1, help="hidden layer width")
    learning_rate: float = runner.dynamic(0.05, min=0.0, help="SGD step size")
    num_steps: int = runner.static(400, min=1, help="training steps")
    segment_steps: int = runner.static(200, min=1, help="steps per segment (metrics and checkpoint after each)")


def erf_stack(num_layers: int, W_std, b_std) -> nn.Layer:
    """``num_layers`` × (``Dense(n → n)`` → ``erf``) with ``n`` the input width, standard
    parameterization (``W ~ N(0, σ_w²/n)``, ``b ~ N(0, σ_b²)``), applied by one ``lax.scan`` over the
    stacked parameters ``{"W": (L, n, n), "b": (L, n)}``. Its infinite-width kernel is that of the same
    layers composed (``nn.Dense`` and ``nn.Erf`` kernel maps)."""
    dense, act = nn.Dense(1, W_std=W_std, b_std=b_std), nn.Erf()

    def init_fn(key, spec):
        n = spec.shape[-1]
        k_w, k_b = jax.random.split(key)
        w = jax.random.normal(k_w, (num_layers, n, n), spec.dtype) * (W_std / np.sqrt(n))
        b = jax.random.normal(k_b, (num_layers, n), spec.dtype) * b_std
        return spec, {"W": w, "b": b}, ()

    def apply_fn(params, state, x, key, train):
        del key, train

        def layer(h, wb):
            return jax.scipy.special.erf(h @ wb[0] + wb[1]), None

        return jax.lax.scan(layer, x, (params["W"], params["b"]))[0], state

    def kernel_fn(k):
        for _ in range(num_layers):
            k = act.kernel(dense.kernel(k))
        return k

    return nn.Layer(init_fn, apply_fn, kernel_fn, f"erf_stack({num_layers})")


def model(config: Config):
    """The network of a member (the ``model`` hook):
    ``Dense(width) → erf → erf_stack(depth − 1) → Dense(10)``."""
    std = dict(W_std=config.W_std, b_std=config.b_std)
    return nn.serial(nn.Dense(config.width, **std), nn.Erf(), erf_stack(config.depth - 1, **std), nn.Dense(10, **std))


data = runner.study.dataset("digits", seed=0)  # the digits split shared by every member


def init(config: Config, key) -> train.TrainState:
    """A member's erf network drawn from its key, with its optimizer state."""
    return runner.study.init(config, key, model(config), data(config).input_spec)


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Test accuracy and loss of a member."""
    return runner.study.classifier_metrics(model(config), state.params, arrays)


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` SGD steps on the softmax cross-entropy, then the test metrics."""
    return runner.study.segment(state, config, arrays, model(config), evaluate=evaluate)


def depth_scale(w_stds, b_std: float) -> np.ndarray:
    """``ξ_c`` (Schoenholz et al. 2017, eq. 9) of the erf network at each ``σ_w`` in ``w_stds`` and the
    given ``σ_b`` (:func:`jaxlearn.kernels.phase_diagram` with the erf dual; ``inf`` at criticality)."""
    w = np.asarray(w_stds, np.float64).reshape(-1)
    point = kernels.phase_diagram("erf", jnp.asarray(w, jnp.result_type(float)), jnp.asarray([b_std],
                                  jnp.result_type(float)))
    return np.asarray(point.xi_c, np.float64)[:, 0]


def _cells(results, *, diverged_fail: bool = False):
    """Per cell (σ_w, depth): mean and std of the final test accuracy over seeds, ξ_c, and depth/ξ_c.
    Finished runs only; with ``diverged_fail`` also the runs that diverged (NaN/Inf), counted at
    chance accuracy (a network whose weights blew up has not trained)."""
    status = ("finished", "diverged") if diverged_fail else ("finished",)
    runs = results.select("W_std", "b_std", "depth", "test_accuracy", status=status).runs
    runs = runs.assign(test_accuracy=runs.test_accuracy.where(runs.status == "finished", CHANCE))
    runs = runs.dropna(subset=["W_std", "depth", "test_accuracy"])
    rows = []
    for (w_std, depth), part in runs.groupby(["W_std", "depth"]):
        acc = part.test_accuracy.to_numpy(np.float64)
        rows.append({"weight_var": float(w_std) ** 2, "W_std": float(w_std), "depth": int(depth),
                     "b_std": float(part.b_std.iloc[0]), "test_accuracy": float(acc.mean()),
                     "std": float(acc.std()), "seeds": len(acc), "diverged": int((part.status != "finished").sum())})
    if rows:
        xi = depth_scale([r["W_std"] for r in rows], rows[0]["b_std"])
        for r, x in zip(rows, xi):
            r["xi_c"] = float(x)
            r["depth_over_xi"] = r["depth"] / float(x)
            r["trains"] = r["test_accuracy"] >= CHANCE + 0.2
    return sorted(rows, key=lambda r: (r["depth"], r["weight_var"]))


def summarize(results) -> list[dict]:
    """Per cell (σ_w², depth): the final test accuracy (mean and std over seeds), ξ_c and depth/ξ_c."""
    return [{k: r[k] for k in ("weight_var", "depth", "test_accuracy", "std", "seeds", "xi_c", "depth_over_xi")}
            for r in _cells(results)]


def _regions(rows):
    shallow = [r for r in rows if r["depth"] < 2 * r["xi_c"]]
    deep = [r for r in rows if r["depth"] > 6 * r["xi_c"]]
    return shallow, deep


def check(results) -> None:
    """The claim (Schoenholz et al. 2017, §5): >= 90% of the cells with depth < 2 ξ_c reach chance + 20
    points, and <= 10% of the cells with depth > 6 ξ_c do (each region needs >= 5 cells; a run that
    diverged counts at chance)."""
    rows = _cells(results, diverged_fail=True)
    shallow, deep = _regions(rows)
    assert len(shallow) >= 5 and len(deep) >= 5, \
        f"check needs >= 5 cells in each region, got {len(shallow)} below 2ξ_c and {len(deep)} above 6ξ_c"
    trained_shallow = np.mean([r["trains"] for r in shallow])
    trained_deep = np.mean([r["trains"] for r in deep])
    assert trained_shallow >= 0.9, f"only {trained_shallow:.0%} of the {len(shallow)} cells with depth < 2ξ_c train"
    assert trained_deep <= 0.1, f"{trained_deep:.0%} of the {len(deep)} cells with depth > 6ξ_c train (> 10%)"


def smoke_check(results) -> None:
    """At toy scale (one depth, an ordered and a near-critical σ_w²): every cell's accuracy is a
    probability, a cell with depth < 2 ξ_c trains to chance + 20 points, and every cell with depth
    > 6 ξ_c stays below it (a run that diverged counts at chance)."""
    rows = _cells(results, diverged_fail=True)
    assert rows, "no finished cells"
    for r in rows:
        assert 0.0 <= r["test_accuracy"] <= 1.0, f"cell {r}: accuracy outside [0, 1]"
    shallow, deep = _regions(rows)
    assert shallow and deep, f"smoke_check needs cells in both regions, got {len(shallow)} and {len(deep)}"
    best_shallow = max(r["test_accuracy"] for r in shallow)
    assert best_shallow >= CHANCE + 0.2, f"no shallow cell trains: best accuracy {best_shallow:.3f}"
    worst_deep = min(r["test_accuracy"] for r in deep)
    assert worst_deep < best_shallow, f"deep cells ({worst_deep:.3f}) train as well as shallow ones"


def plot(results):
    """Heat map of the final test accuracy over (σ_w², depth) with the curves depth = 6 ξ_c (and
    2 ξ_c) overlaid, as Schoenholz et al. 2017, Fig. 5 (diverged runs drawn at chance)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    rows = _cells(results, diverged_fail=True)
    if rows:
        weight_vars = sorted({r["weight_var"] for r in rows})
        depths = sorted({r["depth"] for r in rows})
        grid = np.full((len(depths), len(weight_vars)), np.nan)
        for r in rows:
            grid[depths.index(r["depth"]), weight_vars.index(r["weight_var"])] = r["test_accuracy"]
        depth_edges = np.exp(_edges(np.log(depths)))  # geometric cells: the depths are (about) geometric
        image = ax.pcolormesh(_edges(weight_vars), depth_edges, grid, vmin=0.0, vmax=1.0, cmap="viridis",
                              shading="flat")
        fig.colorbar(image, ax=ax, label="test accuracy (mean over seeds)")
        fine = np.linspace(min(weight_vars), max(weight_vars), 200)
        xi = depth_scale(np.sqrt(fine), rows[0]["b_std"])
        ax.plot(fine, np.minimum(6 * xi, 10 * max(depths)), color="w", lw=2, label="6 ξ_c")
        ax.plot(fine, np.minimum(2 * xi, 10 * max(depths)), color="w", lw=1, ls="--", label="2 ξ_c")
        ax.set(yscale="log", ylim=(depth_edges[0], depth_edges[-1]))
        ax.legend(loc="upper right", fontsize=8)
    ax.set(xlabel="σ_w²", ylabel="depth (hidden layers)", title="Trainability of erf networks (digits)")
    fig.tight_layout()
    return fig


def _edges(values):
    """Cell edges around sorted ``values`` (midpoints; the outer cells mirrored)."""
    v = np.asarray(values, float)
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])
