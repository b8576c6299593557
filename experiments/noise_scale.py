"""The gradient noise scale predicts the critical batch size (McCandlish et al. 2018).

McCandlish, Kaplan, Amodei & OpenAI Dota Team 2018 ("An Empirical Model of Large-Batch Training",
arXiv:1812.06162). With ``G`` the true gradient and ``Σ`` the covariance of one example's gradient, the
*simple noise scale* ``B_simple = tr(Σ)/|G|²`` (§2.2, eq. 2.8) measures the batch size at which the
gradient noise and signal are comparable. Their model (§2.3, eq. 2.11): the number of optimisation
steps ``S`` and of examples ``E = B·S`` needed to reach a given loss trade off as
``(S/S_min − 1)(E/E_min − 1) = 1``, i.e. at the tuned learning rate of each batch size

    S(B) = S_min (1 + B_crit / B),      B_crit = E_min / S_min,

and the critical batch size ``B_crit`` is close to the noise scale measured at that loss (Fig. 4–5:
within an order of magnitude across tasks; ``B_simple`` approximates the ``B_noise`` that would be exact
for a quadratic loss with Hessian-aware preconditioning). They also find the noise scale grows as
training progresses and the loss falls (§3, Fig. 7): larger batches become useful later in training.

Setting: a ReLU MLP (``widths``, He init) on MNIST-1D (``num_samples`` generated, 80% train), plain
SGD at a constant learning rate, softmax cross-entropy. One member is one ``(batch size, learning
rate, seed)``; the batch size is static (one compiled group each), the learning rate and the seed are
dynamic, so a batch size's learning-rate grid × seeds is ONE vmapped program.

* Every ``eval_every`` steps the loss on the first ``eval_examples`` training rows is evaluated inside
  the training scan; the member's state keeps the first such step at which it is ``≤ target_loss``
  (``steps_to_target``; ``-1`` if never within ``num_steps``).
* After every segment, the unbiased ``|G|²``, ``tr(Σ)`` and ``B_simple`` of the training loss on the
  first ``noise_examples`` training rows (:func:`jaxlearn.analysis.model_gradient_noise_scale`: from
  per-example gradients, ``tr(Σ̂)`` with ``1/(n−1)`` and ``|Ĝ|² − tr(Σ̂)/n``), with the same loss.

``summarize`` takes, per batch size, the learning rate with the fewest mean steps to the target (over
seeds; the paper tunes the learning rate per batch size the same way), fits ``S = S_min + S_min·B_crit·(1/B)``
by least squares in ``1/B`` (R² on ``S``), and interpolates ``B_simple`` at the target loss along each
tuned run (in log–log between the two measurements that bracket the crossing; median over tuned runs).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import analysis, nn, runner, train
from jaxlearn import data as data_module
from jaxlearn.runner.plots import legend

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: an MLP trained by SGD at ``batch_size`` and ``learning_rate`` on MNIST-1D, with its
    steps to ``target_loss`` and its noise scale along training."""

    learning_rate: float = runner.dynamic(0.1, min=0.0, help="constant SGD learning rate")
    batch_size: int | None = runner.static(64, min=1, help="examples per step")
    widths: tuple[int, ...] = runner.static((64, 64), min=1, help="hidden widths of the ReLU MLP")
    num_samples: int = runner.static(10000, min=10, help="MNIST-1D examples generated (80% train, 20% test)")
    target_loss: float = runner.static(0.5, min=0.0, help="training loss whose first crossing is counted")
    eval_every: int = runner.static(10, min=1, help="steps between evaluations of the training loss")
    eval_examples: int = runner.static(2048, min=1, help="training rows on which the loss is evaluated")
    noise_examples: int = runner.static(2048, min=2, help="training rows of the per-example-gradient noise scale")
    chunk_size: int = runner.static(512, min=1, help="examples per vmapped per-example-gradient chunk")
    num_steps: int = runner.static(4000, min=1, help="training steps (a cap: runs stop counting once they cross)")
    segment_steps: int = runner.static(200, min=1, help="steps per segment (noise scale measured after each)")

    def __post_init__(self):
        if self.segment_steps % self.eval_every:
            raise ValueError(f"segment_steps: must be a multiple of eval_every={self.eval_every}, "
                             f"got {self.segment_steps}")


class NoiseState(NamedTuple):
    """A member: its TrainState and the first evaluated step with loss ``≤ target_loss`` (``-1``: none yet)."""

    train_state: train.TrainState
    first_step: jax.Array


def model(config: Config):
    """A ReLU MLP with He-scaled weights, 10 logits."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


def loss(config: Config):
    """The training loss (softmax cross-entropy, batch mean)."""
    del config
    return train.softmax_cross_entropy


def data(config: Config) -> data_module.Arrays:
    """The MNIST-1D split (generated, ``seed=0``), shared by every member."""
    return data_module.mnist1d(num_samples=config.num_samples, seed=0).arrays()


def init(config: Config, key) -> NoiseState:
    spec = jax.ShapeDtypeStruct((1, 40), jnp.float32)  # one MNIST-1D signal, known without generating the data
    return NoiseState(runner.study.init(config, key, model(config), spec), jnp.asarray(-1, jnp.int32))


def _first_crossing(first_step, losses, start, config: Config):
    """The first evaluated step whose loss is ``≤ target_loss``, keeping an earlier one."""
    steps = start + config.eval_every * jnp.arange(1, losses.shape[0] + 1)
    crossed = losses <= config.target_loss
    here = jnp.where(jnp.any(crossed), steps[jnp.argmax(crossed)], -1)
    return jnp.where(first_step >= 0, first_step, here).astype(jnp.int32)


def segment(state: NoiseState, config: Config, arrays):
    """``segment_steps`` SGD steps with the loss evaluated every ``eval_every``; then the noise scale.
    Metrics: ``train_loss`` (mean minibatch loss), ``eval_loss`` (on the evaluation rows, at the end),
    ``grad_sq``, ``trace_cov``, ``b_simple``, ``test_accuracy``."""
    net = model(config)
    step = train.make_step(net.apply_with_state, loss(config), config.build_optimizer())
    x_eval, y_eval = arrays.x_train[:config.eval_examples], arrays.y_train[:config.eval_examples]

    def batch_fn(key, index):
        return data_module.get_batch(train.order_key(key, config.data_seed), index, arrays.x_train, arrays.y_train,
                                     config.batch_size)

    def eval_fn(ts):
        return loss(config)(net.apply(ts.params, x_eval), y_eval)

    start = state.train_state.step
    ts, metrics = train.train(state.train_state, step, batch_fn, config.segment_steps,
                              eval_every=config.eval_every, eval_fn=eval_fn)
    first = _first_crossing(state.first_step, metrics["eval"], start, config)
    noise = analysis.model_gradient_noise_scale(
        net.apply, train.per_example_softmax_cross_entropy, ts.params, arrays.x_train[:config.noise_examples],
        arrays.y_train[:config.noise_examples], chunk_size=config.chunk_size)
    return NoiseState(ts, first), {
        "train_loss": jnp.mean(metrics["train"]["loss"]), "eval_loss": metrics["eval"][-1],
        "grad_sq": noise.grad_sq, "trace_cov": noise.trace_cov, "b_simple": noise.b_simple,
        "test_accuracy": train.accuracy(net.apply(ts.params, arrays.x_test), arrays.y_test)}


def evaluate(state: NoiseState, config: Config, arrays) -> dict:
    """``steps_to_target`` (``-1`` if the target was not reached: a NaN would mark the run diverged),
    ``reached`` (1/0) and the final evaluation loss."""
    net = model(config)
    reached = state.first_step >= 0
    x_eval, y_eval = arrays.x_train[:config.eval_examples], arrays.y_train[:config.eval_examples]
    return {"steps_to_target": state.first_step.astype(jnp.float32),
            "reached": reached.astype(jnp.float32),
            "final_eval_loss": loss(config)(net.apply(state.train_state.params, x_eval), y_eval)}


# -- results ---------------------------------------------------------------------------------------------------

def _runs(results):
    return results.finished("batch_size", "learning_rate", "steps_to_target", "reached").runs




def tuned(results):
    """Per batch size, the learning rate with the fewest mean steps to the target over seeds, among the
    learning rates at which every seed reached it, counting only rates with as many finished seeds as the
    batch size's best-covered rate (a rate some seed missed, or diverged at, is not tuned): rows
    ``(batch_size, learning_rate, steps, steps_std, seeds, rates)``."""
    runs = _runs(results)
    rows = []
    for b, part in runs.groupby("batch_size"):
        best, seeds = None, part.groupby("learning_rate").size().max()
        for lr, group in part.groupby("learning_rate"):
            ok = len(group) == seeds and (group["reached"] > 0).all()
            if ok and (best is None or group["steps_to_target"].mean() < best[1]):
                best = (lr, group["steps_to_target"].mean(), group["steps_to_target"].std(ddof=0), len(group))
        if best is not None:
            rows.append({"batch_size": int(b), "learning_rate": float(best[0]), "steps": float(best[1]),
                         "steps_std": float(best[2]), "seeds": best[3], "rates": part["learning_rate"].nunique()})
    return sorted(rows, key=lambda r: r["batch_size"])


def fit_critical_batch(batch_sizes, steps) -> dict:
    """Least squares of ``S = S_min + (S_min·B_crit)·(1/B)`` (McCandlish et al. 2018, eq. 2.11 at the tuned
    learning rate): ``s_min`` (intercept), ``b_crit`` (slope / intercept) and ``r2`` (on ``S``)."""
    inv, s = 1.0 / np.asarray(batch_sizes, float), np.asarray(steps, float)
    if len(s) < 2:
        return {"s_min": float("nan"), "b_crit": float("nan"), "r2": float("nan")}
    slope, intercept = np.polyfit(inv, s, 1)
    residual = s - (intercept + slope * inv)
    r2 = 1.0 - np.sum(residual ** 2) / np.sum((s - s.mean()) ** 2)
    return {"s_min": float(intercept), "b_crit": float(slope / intercept), "r2": float(r2)}


def noise_at_loss(eval_loss, b_simple, target: float) -> float:
    """``B_simple`` where the (segment-end) evaluation loss first falls to ``target``: interpolated in
    log–log between the two measurements that bracket the crossing (NaN if it never crosses, the first
    measurement if it is already below, or a bracketing ``B_simple`` is not positive)."""
    eval_loss, b_simple = np.asarray(eval_loss, float), np.asarray(b_simple, float)
    below = np.nonzero(eval_loss <= target)[0]
    if not len(below):
        return float("nan")
    i = below[0]
    if i == 0:
        return float(b_simple[0]) if b_simple[0] > 0 else float("nan")
    (l0, l1), (b0, b1) = eval_loss[i - 1:i + 1], b_simple[i - 1:i + 1]
    if b0 <= 0 or b1 <= 0:
        return float("nan")
    t = (np.log(target) - np.log(l0)) / (np.log(l1) - np.log(l0))
    return float(np.exp(np.log(b0) + t * (np.log(b1) - np.log(b0))))


def _tuned_curves(results):
    """``{batch_size: curves of its tuned runs}`` (step, seed, eval_loss, b_simple)."""
    best = {r["batch_size"]: r["learning_rate"] for r in tuned(results)}
    curves = results.finished("batch_size", "learning_rate", "eval_loss", "b_simple").curves
    if curves is None:
        return {}
    return {b: curves[(curves["batch_size"] == b) & np.isclose(curves["learning_rate"], lr)].sort_values("step")
            for b, lr in best.items()}


def growth_ratio(b_simple, window: int = 3) -> float:
    """How much a run's noise scale grew: ``median(1/B_simple)`` over its first ``window`` measurements
    divided by the same over its last ``window``. Medians, because single estimates scatter by about 2×;
    of the inverse ``|G|²/tr(Σ)``, because it stays ordered through zero: a negative unbiased ``|G|²``
    means ``|G|²`` is below the estimator's noise floor (``B_simple`` too large to measure on the rows
    used), which the inverse ranks above every measurable ``B_simple``. ``inf`` when the late median of
    the inverse is not positive."""
    inverse = 1.0 / np.asarray(b_simple, float)
    first, last = np.median(inverse[:window]), np.median(inverse[-window:])
    return float(first / last) if last > 0 else float("inf")


def noise_scale_summary(results, target: float) -> dict:
    """The measured noise scale along the tuned runs: ``b_simple_at_target`` (median over the tuned runs
    of every batch size of :func:`noise_at_loss`, with its interquartile range ``b_simple_spread``) and
    ``growth`` (median over those runs of :func:`growth_ratio`; ``growth_by_batch``: per batch size, the
    median over its seeds)."""
    at_target, growth, by_batch = [], [], {}
    for b, frame in _tuned_curves(results).items():
        ratios = []
        for _, run in frame.groupby("run_id"):
            at_target.append(noise_at_loss(run["eval_loss"], run["b_simple"], target))
            ratios.append(growth_ratio(run["b_simple"]))
        growth += ratios
        by_batch[b] = float(np.median(ratios)) if ratios else float("nan")
    finite = [v for v in at_target if np.isfinite(v)]
    return {"b_simple_at_target": float(np.median(finite)) if finite else float("nan"),
            "b_simple_spread": (float(np.percentile(finite, 25)), float(np.percentile(finite, 75))) if finite
            else (float("nan"), float("nan")),
            "growth": float(np.median(growth)) if growth else float("nan"), "growth_by_batch": by_batch}


def _target(results) -> float:
    runs = results.finished("target_loss").runs
    return float(runs["target_loss"].iloc[0]) if len(runs) else float("nan")


def summarize(results) -> list[dict]:
    """Per batch size: the tuned learning rate, mean ± std steps to the target over seeds, the fit's
    prediction and the growth of the noise scale; then the fit (``S_min``, ``B_crit``, R²), ``B_simple`` at
    the target loss and its ratio to ``B_crit``, and the overall growth (in the ``steps`` column)."""
    rows = tuned(results)
    if not rows:
        return []
    fit = fit_critical_batch([r["batch_size"] for r in rows], [r["steps"] for r in rows])
    noise = noise_scale_summary(results, _target(results))
    out = [{"batch_size": r["batch_size"], "learning_rate": r["learning_rate"], "steps": r["steps"],
            "steps_std": r["steps_std"], "fit": fit["s_min"] * (1 + fit["b_crit"] / r["batch_size"]),
            "b_simple_growth": noise["growth_by_batch"].get(r["batch_size"], float("nan")), "seeds": r["seeds"]}
           for r in rows]
    for name, value in (("fit: S_min", fit["s_min"]), ("fit: B_crit", fit["b_crit"]), ("fit: R^2", fit["r2"]),
                        ("B_simple at target", noise["b_simple_at_target"]),
                        ("B_simple / B_crit", noise["b_simple_at_target"] / fit["b_crit"]),
                        ("B_simple growth", noise["growth"])):
        out.append({"batch_size": name, "steps": value})
    return out


def check(results) -> None:
    """The claims (McCandlish et al. 2018): the noise scale grows over training (median over the tuned runs
    of :func:`growth_ratio` ≥ 2); the tuned steps to the target over ≥ 5 batch sizes fit
    ``S = S_min(1 + B_crit/B)`` with R² ≥ 0.9; ``B_crit`` and ``B_simple`` at the target loss are within
    10× of each other."""
    rows = tuned(results)
    assert len(rows) >= 5, f"only {len(rows)} batch sizes reached the target at some learning rate, need 5"
    fit = fit_critical_batch([r["batch_size"] for r in rows], [r["steps"] for r in rows])
    noise = noise_scale_summary(results, _target(results))
    assert noise["growth"] >= 2, f"the noise scale grew {noise['growth']:.2f}x over training, need >= 2x"
    assert fit["r2"] >= 0.9, f"S = S_min(1 + B_crit/B) fits with R^2 {fit['r2']:.3f} < 0.9"
    ratio = noise["b_simple_at_target"] / fit["b_crit"]
    assert fit["b_crit"] > 0 and 0.1 <= ratio <= 10, \
        f"B_simple at the target {noise['b_simple_at_target']:.1f} vs B_crit {fit['b_crit']:.1f}: ratio {ratio:.2f}"


def smoke_check(results) -> None:
    """At toy scale: every run trained (final loss below ln 10, chance) with finite, positive noise-scale
    parts; the larger batch reaches the target in no more steps than the smaller one at its tuned rate."""
    runs = _runs(results)
    assert len(runs), "no finished runs"
    final = results.finished("final_eval_loss").runs["final_eval_loss"]
    assert (final < np.log(10)).all(), f"final losses {final.tolist()}"
    curves = results.finished("trace_cov").curves
    assert curves is not None and (curves["trace_cov"] > 0).all(), "tr(Sigma) not positive"
    rows = tuned(results)
    assert len(rows) >= 2, f"only {len(rows)} batch sizes reached the target"
    assert rows[-1]["steps"] <= rows[0]["steps"], f"steps to target {[(r['batch_size'], r['steps']) for r in rows]}"


def plot(results):
    """(a) tuned steps to the target against batch size with the fit ``S_min(1 + B_crit/B)``; (b) the
    simple noise scale against the evaluation loss along the tuned runs, with ``B_crit`` and the target."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(11, 4.3))
    ax_steps, ax_noise = fig.subplots(1, 2)
    rows = tuned(results)
    target = _target(results)
    fit = fit_critical_batch([r["batch_size"] for r in rows], [r["steps"] for r in rows])
    if rows:
        b = np.array([r["batch_size"] for r in rows], float)
        ax_steps.errorbar(b, [r["steps"] for r in rows], yerr=[r["steps_std"] for r in rows], fmt="o", capsize=3,
                          label="tuned learning rate (mean ± std over seeds)")
        grid = np.geomspace(b.min(), b.max(), 100)
        ax_steps.plot(grid, fit["s_min"] * (1 + fit["b_crit"] / grid), "-",
                      label=f"S_min(1 + B_crit/B): S_min={fit['s_min']:.0f}, B_crit={fit['b_crit']:.0f}, "
                            f"R²={fit['r2']:.3f}")
        ax_steps.axhline(fit["s_min"], ls=":", color="gray")
        ax_steps.set(xscale="log", yscale="log")  # (no data: nothing to put on a log axis)
    ax_steps.set(xlabel="batch size B", ylabel=f"steps to training loss {target:g}",
                 title="Steps to a target loss (McCandlish et al. 2018)")
    legend(ax_steps, fontsize=8)
    noise = noise_scale_summary(results, target)
    curves = _tuned_curves(results)
    for b, frame in curves.items():
        stats = frame.groupby("step")[["eval_loss", "b_simple"]].mean()
        shown = stats[np.isfinite(stats["eval_loss"]) & np.isfinite(stats["b_simple"]) & (stats["b_simple"] > 0)]
        ax_noise.plot(shown["eval_loss"], shown["b_simple"], ".-", label=f"B={b}")
    if any(((f["b_simple"] > 0) & np.isfinite(f["b_simple"]) & (f["eval_loss"] > 0)).any() for f in curves.values()):
        ax_noise.set(xscale="log", yscale="log")  # (only positive estimates are drawn)
        ax_noise.invert_xaxis()
    if rows:
        ax_noise.axhline(fit["b_crit"], color="k", ls="--", label=f"B_crit (fit) = {fit['b_crit']:.0f}")
        ax_noise.axvline(target, color="gray", ls=":", label=f"target loss; B_simple there ≈ "
                                                             f"{noise['b_simple_at_target']:.0f}")
    ax_noise.set(xlabel="training loss (evaluation rows)", ylabel="B_simple = tr(Σ)/|G|²",
                 title="Simple noise scale along the tuned runs")
    legend(ax_noise, fontsize=7)
    fig.tight_layout()
    return fig
