"""Forward gradients (Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without backpropagation").

The forward gradient ``g(θ) = (∇f(θ)·v) v`` with ``v ~ N(0, I)`` needs one forward-mode pass (a
``jax.jvp``) and no backward pass, and is an unbiased estimate of ``∇f`` (§3, eq. (2); Theorem 1).
Averaged over ``k`` independent tangents, ``ĝ_k = (1/k) Σ_j (∇f·v_j) v_j``, and for Gaussian tangents
its error has the closed form (from ``E[v_i v_j v_l²]``)

    ``E|ĝ_k − ∇f|² = (P + 1) |∇f|² / k``      (``P`` the number of parameters),

so the relative error falls like ``1/√k`` (no plateau: no bias) and grows with ``P`` — why forward
gradients are noisier on wider networks (Belouze 2022; Ren et al. 2023). Baydin et al. §5 train
MLPs on MNIST with it and report a lower loss per unit of *wall-clock* time than backprop (Fig. 5):
a forward-mode step costs about one forward pass more, a backprop step about two.

Setting: one-hidden-layer ReLU MLPs (He init) on the 8×8 digits (1437 train / 360 test), trained by
``rule`` — ``backprop`` or ``forward_gradient`` (:func:`jaxlearn.rules.forward_gradient`,
``num_tangents`` tangents per step) — with the config's optimizer over a grid of learning rates and
seeds; hidden widths 16, 64 and 256 (``P`` ≈ 1.2k, 4.8k and 19k parameters).

Statistics of the estimator (final metrics of every ``forward_gradient`` run, :func:`estimator_errors`):
at the run's final parameters, on its first ``estimator_examples`` training examples, the exact
gradient ``g`` (backprop) and ``estimator_draws × tangents_per_draw`` single-tangent forward gradients
(:func:`jaxlearn.rules.forward_gradient_from_tangents`, i.e. real ``jvp`` passes); their means over
disjoint groups of ``k = 1, 4, 16, …, tangents_per_draw`` tangents and over all of them give the
relative mean squared error ``fg_rel_mse_k{k} = E|ĝ_k − g|² / |g|²``, which the claim compares with
``(P + 1)/k``.

Wall-clock: :func:`seconds_per_step` times one network's jitted training step of a rule on this
machine (after compiling it) — a machine-dependent number; the plot puts the training loss of each
rule against ``step × seconds_per_step``. No check depends on it.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxlearn import nn, rules, runner, train
from jaxlearn.runner.plots import legend, mean_band

VERSION = "1"

RULES = ("backprop", "forward_gradient")
CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an MLP on digits trained by ``rule``. ``seed``, ``data_seed`` and
    ``learning_rate`` are dynamic (one vmapped program per rule and width); the rest shapes the program."""

    learning_rate: float = runner.dynamic(1e-3, min=0.0, help="peak learning rate")
    rule: str = runner.static("forward_gradient", choices=RULES, help="gradient estimator")
    num_tangents: int = runner.static(1, min=1, help="forward_gradient: random tangents per training step")
    widths: tuple[int, ...] = runner.static((64,), min=1, help="hidden layer widths")
    estimator_examples: int = runner.static(32, min=1, help="training examples of the loss whose gradient the "
                                                            "estimator statistics are taken of")
    estimator_draws: int = runner.static(16, min=1, help="independent draws of tangents_per_draw tangents")
    tangents_per_draw: int = runner.static(256, min=1, help="tangents per draw (a power of 4: the largest group)")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adam"),
                                                   help="optax optimizer and schedule")

    def __post_init__(self):
        k = self.tangents_per_draw
        if isinstance(k, int) and 4 ** round(np.log(k) / np.log(4)) != k:
            raise ValueError(f"tangents_per_draw: must be a power of 4, got {k}")


def group_sizes(config: Config) -> tuple[int, ...]:
    """The tangent counts ``k`` of the estimator statistics: ``1, 4, …, tangents_per_draw`` (groups
    within a draw) and ``estimator_draws · tangents_per_draw`` (all tangents of all draws)."""
    sizes = tuple(4 ** i for i in range(round(np.log(config.tangents_per_draw) / np.log(4)) + 1))
    total = config.estimator_draws * config.tangents_per_draw
    return sizes + ((total,) if total > sizes[-1] else ())


def model(config: Config):
    """The MLP (the ``model`` hook): ReLU hidden layers of ``widths``, He-scaled, 10 outputs."""
    return nn.mlp(config.widths, CLASSES, activation="relu", W_std=np.sqrt(2.0))


def _estimator(config: Config):
    if config.rule == "forward_gradient":
        return rules.forward_gradient(num_tangents=config.num_tangents)
    return train.backprop


data = runner.study.dataset("digits", seed=0)


def init(config: Config, key) -> train.TrainState:
    return runner.study.init(config, key, model(config), data(config).input_spec)


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` steps of the rule; metrics ``train_loss``, ``test_accuracy``, ``test_loss``."""
    return runner.study.segment(state, config, arrays, model(config), grad_estimator=_estimator(config),
                                evaluate=lambda s, c, a: runner.study.classifier_metrics(model(c), s.params, a))


def estimator_errors(params, config: Config, x, y, key) -> dict:
    """``{"fg_rel_mse_k{k}": E|ĝ_k − g|²/|g|²}`` for every ``k`` of :func:`group_sizes` (module
    docstring), on the mean softmax cross-entropy of ``(x, y)``, and ``num_params`` (``P``).

    Each draw (``lax.map``: memory of one draw) samples ``tangents_per_draw`` Gaussian tangents and
    computes each one's forward gradient ``(g·v) v`` by a ``jvp``; the estimate of ``k`` tangents is
    the mean of a group of ``k`` of them, and the squared error is averaged over the disjoint groups
    of a draw and over draws. The last ``k`` (all tangents) is one sample of ``|ĝ_N − g|²``."""
    apply = model(config).apply

    def objective(p):
        return train.softmax_cross_entropy(apply(p, x), y), None

    g, _ = ravel_pytree(jax.grad(lambda p: objective(p)[0])(params))
    per_draw = config.tangents_per_draw
    sizes = [k for k in group_sizes(config) if k <= per_draw]

    def draw(k_draw):
        tangents = rules.sample_tangents(k_draw, params, per_draw)
        single = jax.vmap(lambda v: rules.forward_gradient_from_tangents(
            objective, params, jax.tree.map(lambda leaf: leaf[None], v))[1])(tangents)
        flat = jax.vmap(lambda s: ravel_pytree(s)[0])(single)  # (per_draw, P)
        errors = jnp.stack([jnp.mean(jnp.sum((flat.reshape(per_draw // k, k, -1).mean(1) - g) ** 2, -1))
                            for k in sizes])
        return errors, flat.sum(0)

    errors, sums = jax.lax.map(draw, jax.random.split(key, config.estimator_draws))
    norm_sq = jnp.sum(g ** 2)
    out = {f"fg_rel_mse_k{k}": e / norm_sq for k, e in zip(sizes, errors.mean(0))}
    total = config.estimator_draws * per_draw
    if total > per_draw:
        out[f"fg_rel_mse_k{total}"] = jnp.sum((sums.sum(0) / total - g) ** 2) / norm_sq
    out["num_params"] = jnp.asarray(g.size, g.dtype)
    return out


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Final metrics: test accuracy and loss, and for the forward-gradient rule the estimator
    statistics at the final parameters (:func:`estimator_errors`; tangents from the member's key)."""
    metrics = runner.study.classifier_metrics(model(config), state.params, arrays)
    if config.rule == "forward_gradient":
        n = config.estimator_examples
        key = jax.random.fold_in(state.key, 7)  # a stream the training steps (fold_in by step) do not use
        metrics.update(estimator_errors(state.params, config, arrays.x_train[:n], arrays.y_train[:n], key))
    return metrics


_SECONDS: dict[str, float] = {}


def seconds_per_step(config: Config, steps: int = 200) -> float:
    """Wall-clock seconds of one training step of ONE network of ``config`` (its rule, widths, batch
    size, optimizer) on this machine: the jitted step compiled and run once, then ``steps`` steps
    timed on a fixed batch. Machine-dependent (and load-dependent on a shared machine); cached per
    config within a process."""
    if repr((config, steps)) not in _SECONDS:
        _SECONDS[repr((config, steps))] = _time_step(config, steps)
    return _SECONDS[repr((config, steps))]


def _time_step(config: Config, steps: int) -> float:
    arrays = data(config)
    mdl, opt = model(config), config.build_optimizer()
    step = jax.jit(train.make_step(mdl.apply_with_state, train.softmax_cross_entropy, opt,
                                   grad_estimator=_estimator(config)))
    state = train.init(mdl, opt, jax.random.key(0), arrays.input_spec)
    batch = (arrays.x_train[:config.batch_size], arrays.y_train[:config.batch_size])
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = step(state, batch)
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / steps


def _width(row) -> int:
    return int(np.prod(row)) if np.ndim(row) == 0 else int(row[0])


_COLUMNS = ("rule", "widths", "seed", "learning_rate", "test_accuracy")


def _mse_columns(runs) -> list[tuple[int, str]]:
    """``(k, column)`` of the estimator statistics present, by ``k``."""
    found = [(int(c[len("fg_rel_mse_k"):]), c) for c in runs.columns if c.startswith("fg_rel_mse_k")]
    return sorted(found)


def summarize(results) -> list[dict]:
    """Per rule and width, at the best learning rate (mean final test accuracy over seeds): test
    accuracy (mean, std); for the forward gradient also ``P``, the relative MSE at ``k = 1`` over its
    closed form ``P + 1`` (``ratio_k1``) and at the largest ``k`` (``ratio_kmax``, over ``(P+1)/k``),
    the log-log slope of the relative RMS error against ``k`` (``slope``; −½ for an unbiased estimate)."""
    runs = results.finished(*_COLUMNS).runs
    rows = []
    if not len(runs):
        return rows
    runs = runs.assign(width=[_width(w) for w in runs.widths])
    columns = _mse_columns(runs)
    for (rule, width), part in runs.groupby(["rule", "width"], sort=True):
        lr = float(part.groupby("learning_rate")["test_accuracy"].mean().idxmax())
        best = part[np.isclose(part.learning_rate, lr)]
        row = {"rule": rule, "width": int(width), "learning_rate": lr,
               "test_accuracy": float(best.test_accuracy.mean()), "std": float(best.test_accuracy.std(ddof=0)),
               "seeds": len(best)}
        if rule == "forward_gradient" and columns and "num_params" in part:
            P = float(part.num_params.iloc[0])
            ks = np.array([k for k, _ in columns], float)
            mse = np.array([part[c].mean() for _, c in columns])  # over every lr and seed: a property of P
            row.update({"num_params": int(P), "rel_mse_k1": float(mse[0]), "ratio_k1": float(mse[0] / (P + 1)),
                        "ratio_kmax": float(mse[-1] * ks[-1] / (P + 1)),
                        "slope": runner.study.loglog_slope(ks, np.sqrt(mse))})
        rows.append(row)
    order = {r: i for i, r in enumerate(RULES)}
    return sorted(rows, key=lambda r: (order[r["rule"]], r["width"]))


def _ratios(results) -> list[tuple[int, int, float]]:
    """``(width, k, measured / closed form)`` of every forward-gradient run's relative MSE."""
    runs = results.finished(*_COLUMNS).runs
    out = []
    for _, r in runs[runs.rule == "forward_gradient"].iterrows():
        for k, c in _mse_columns(runs):
            out.append((_width(r.widths), k, float(r[c] * k / (r.num_params + 1))))
    return out


def _check_estimator(results, rows, slope_range, ratio_range) -> None:
    fg = [r for r in rows if r["rule"] == "forward_gradient" and "slope" in r]
    assert fg, "no forward-gradient run with estimator statistics"
    for r in fg:
        assert slope_range[0] <= r["slope"] <= slope_range[1], \
            f"width {r['width']}: relative error falls like k^{r['slope']:.3f}, not k^-1/2"
    for width, k, ratio in _ratios(results):
        assert ratio_range[0] <= ratio <= ratio_range[1], \
            f"width {width}, k={k}: relative MSE is {ratio:.3f} x its closed form (P+1)/k"
    if len(fg) >= 2:
        P, mse = [r["num_params"] for r in fg], [r["rel_mse_k1"] for r in fg]
        assert all(b > a for a, b in zip(mse, mse[1:])), f"relative MSE {mse} does not grow with P = {P}"
        slope = runner.study.loglog_slope(P, mse)
        assert 0.8 <= slope <= 1.2, f"relative MSE grows like P^{slope:.2f} (closed form: P + 1)"


def _check_training(rows, fg_floor, bp_floor) -> None:
    fg = [r for r in rows if r["rule"] == "forward_gradient"]
    assert fg, "no forward-gradient runs"
    best = max(fg, key=lambda r: r["test_accuracy"])
    assert best["test_accuracy"] >= fg_floor, \
        f"forward gradient: best test accuracy {best['test_accuracy']:.3f} < {fg_floor}"
    bp = [r for r in rows if r["rule"] == "backprop" and r["width"] == best["width"]]
    assert bp, f"no backprop runs at width {best['width']}"
    assert bp[0]["test_accuracy"] >= bp_floor, \
        f"backprop (width {best['width']}): test accuracy {bp[0]['test_accuracy']:.3f} < {bp_floor}"


def check(results) -> None:
    """The claims (Baydin et al. 2022; no timing enters): the forward gradient is unbiased — its
    relative RMS error against the true gradient falls like ``k^−½`` (log-log slope in
    [−0.6, −0.4] at every width) and every measured relative MSE is within 20% of the closed form
    ``(P+1)/k``; its variance grows with the number of parameters (strictly over the widths, like
    ``P^1`` within 0.2); an MLP trained with it reaches ≥ 85% test accuracy on digits, backprop at the
    same width ≥ 95% (best learning rate, mean over seeds)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    _check_estimator(results, rows, (-0.6, -0.4), (0.8, 1.2))
    _check_training(rows, 0.85, 0.95)


def smoke_check(results) -> None:
    """At toy scale (few tangents, short training): the relative error falls like ``k^−½`` within
    0.15 and matches the closed form within 40%; the forward gradient learns well above chance
    (> 30%; 10% is chance) and backprop more (> 80%)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    _check_estimator(results, rows, (-0.65, -0.35), (0.6, 1.4))
    _check_training(rows, 0.3, 0.8)


def plot(results):
    """Left: test accuracy against steps, per rule and width at the best learning rate (mean ± std
    over seeds). Middle: training loss against wall-clock seconds (steps × :func:`seconds_per_step`
    measured now, on this machine) for the width where the forward gradient does best. Right: the
    relative MSE of the k-tangent forward gradient against ``k`` (markers: measured, mean over runs;
    lines: the closed form ``(P+1)/k``), per width."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(15, 4))
    ax_acc, ax_time, ax_mse = fig.subplots(1, 3)
    finished = results.finished(*_COLUMNS)
    curves = finished.curves.assign(width=[_width(w) for w in finished.curves.widths]) if len(finished.curves) \
        else finished.curves.assign(width=[])
    rows = summarize(results)
    fg = [r for r in rows if r["rule"] == "forward_gradient"]
    timed = max(fg, key=lambda r: r["test_accuracy"])["width"] if fg else None
    for row in rows:
        part = curves[(curves.rule == row["rule"]) & (curves.width == row["width"])
                      & np.isclose(curves.learning_rate, row["learning_rate"])]
        label = f"{row['rule']}, width {row['width']} (lr={row['learning_rate']:g})"
        mean_band(ax_acc, part, "test_accuracy", label=label)
        if row["width"] == timed and len(part):
            run = finished.runs[finished.runs.run_id == part.run_id.iloc[0]].iloc[0]
            config = Config(rule=row["rule"], widths=(row["width"],), batch_size=int(run.batch_size),
                            num_tangents=int(run.num_tangents), learning_rate=row["learning_rate"])
            seconds = seconds_per_step(config)
            mean_band(ax_time, part.assign(seconds=part.step * seconds), "train_loss", x="seconds",
                      label=f"{row['rule']} ({1e3 * seconds:.2f} ms/step)")
    runs = finished.runs
    for i, row in enumerate(r for r in fg if "num_params" in r):
        part = runs[(runs.rule == "forward_gradient") & np.array([_width(w) == row["width"] for w in runs.widths])]
        columns = _mse_columns(part)
        ks = np.array([k for k, _ in columns], float)
        color = f"C{i}"
        ax_mse.loglog(ks, [part[c].mean() for _, c in columns], "o", color=color,
                      label=f"width {row['width']} (P={row['num_params']})")
        ax_mse.loglog(ks, (row["num_params"] + 1) / ks, "-", color=color, lw=0.8)
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="MLP on digits", ylim=(0, 1))
    ax_time.set(xlabel="wall-clock seconds (this machine)", ylabel="training loss", yscale="log",
                title=f"Loss vs time, width {timed}")
    ax_mse.set(xlabel="tangents k", ylabel="E|ĝ_k − g|² / |g|²", title="Forward-gradient error (lines: (P+1)/k)")
    for ax in (ax_acc, ax_time, ax_mse):
        legend(ax, fontsize=7)
    fig.tight_layout()
    return fig
