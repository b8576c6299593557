"""Binarized neural networks: ±1 weights and activations trained with the straight-through estimator.

Hubara, Courbariaux, Soudry, El-Yaniv & Bengio 2016 ("Binarized Neural Networks", NeurIPS; §1 and
Algorithm 1; Table 1: a binarized MLP on MNIST at 0.96% error against ≈ 1% in full precision).
Every hidden layer computes with ``W_b = sign(W_r)`` and outputs ``sign(BatchNorm(·))``; the
gradients reach the real-valued latent weights ``W_r`` straight through the sign
(:func:`jaxlearn.rules.BinaryDense`: ``∂L/∂W_r = ∂L/∂W_b``) and reach earlier layers through the
activations' sign with the hard-tanh derivative ``1{|r| ≤ 1}`` (:func:`jaxlearn.rules.SignSTE`
``("clipped")``); after every optimizer step the latents are clipped to ``[−1, 1]``
(:func:`jaxlearn.rules.clip_latents`, chained after Adam). The input layer sees real pixels and the
output layer is binary too, followed by a BatchNorm that sets the logits' scale (as in the paper).

Networks (``network``, static: one compiled group each; seeds vmapped):

* ``binary``: ``[BinaryDense(h) → BatchNorm → SignSTE("clipped")] × L → BinaryDense(10) → BatchNorm``;
* ``binary_weights``: the same with real hard-tanh activations (BinaryConnect, Courbariaux et
  al. 2015: only the weights binary);
* ``full``: the full-precision twin — ``Dense`` weights, hard-tanh activations, the same
  BatchNorms, widths, optimizer, schedule, data order and number of steps.

One member is one network trained with Adam (warmup + cosine) on scikit-learn's digits (1438
training, 359 test images, 8×8) with softmax cross-entropy. Per segment: ``train_loss``,
``test_accuracy``, ``train_accuracy`` (evaluation mode: BatchNorm's running statistics), and for
binary networks ``latents_at_bound`` (the fraction of latents clipped to ±1) and ``sign_flips``
(the fraction of binary weights whose sign changed during the segment).

Claim (``check``, paper variant): the binarized network trains well above chance (test accuracy
≥ 0.5, five times chance) and within 5 points of its full-precision twin — the gap ``full −
binary`` in test accuracy, paired by seed, has mean ≤ 0.05 over ≥ 3 seeds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import nn, rules, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

NETWORKS = ("binary", "binary_weights", "full")
CHANCE = 0.1


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a binarized (or full-precision) MLP with BatchNorm, trained by Adam on digits."""

    learning_rate: float = runner.dynamic(0.01, min=0.0, help="peak Adam learning rate (warmup, cosine decay)")
    network: str = runner.static("binary", choices=NETWORKS,
                                 help="binary (weights and activations), binary_weights, or full precision")
    widths: tuple[int, ...] = runner.static((256, 256), min=1, help="hidden layer widths")
    latent_init: float = runner.static(1.0, min=0.0, max=1.0,
                                       help="binary latents drawn from U[-latent_init, latent_init]")
    optimizer: train.OptimizerSpec = runner.static(
        train.OptimizerSpec(name="adam", schedule="warmup_cosine", warmup_steps=100),
        help="optax optimizer and schedule")
    batch_size: int | None = runner.static(64, min=1, help="examples per step")
    num_steps: int = runner.static(3000, min=1, help="training steps")
    segment_steps: int = runner.static(250, min=1, help="steps per segment (metrics and checkpoint after each)")


def model(config: Config) -> nn.Layer:
    """The member's network (the ``model`` hook; module docstring). Biases are omitted: every
    weight layer is followed by a BatchNorm, whose offset plays their part."""
    binary_weights = config.network in ("binary", "binary_weights")

    def dense(width):
        return rules.BinaryDense(width, None, latent_init=config.latent_init) if binary_weights \
            else nn.Dense(width, b_std=None)

    def activation():
        return rules.SignSTE("clipped") if config.network == "binary" else nn.Elementwise(_hard_tanh, "HardTanh")

    hidden = [layer for width in config.widths for layer in (dense(width), nn.BatchNorm(), activation())]
    return nn.serial(*hidden, dense(10), nn.BatchNorm())


def _hard_tanh(x):
    return jnp.clip(x, -1.0, 1.0)


def optimizer(config: Config) -> optax.GradientTransformation:
    """The config's optimizer followed by the latents' projection onto ``[−1, 1]`` (a no-op on the
    full-precision net, which has no latents: every network has the same optimizer state)."""
    return optax.chain(config.build_optimizer(), rules.clip_latents())


data = runner.study.dataset("digits", seed=0)


def init(config: Config, key) -> train.TrainState:
    return train.init(model(config), optimizer(config), key, data(config).input_spec)


def _latents(params) -> list:
    return [leaf for leaf, keep in zip(jax.tree.leaves(params), jax.tree.leaves(rules.binary_latents(params))) if keep]


def _fraction(arrays_bool) -> jax.Array:
    if not arrays_bool:
        return jnp.zeros(())
    return sum(jnp.sum(a) for a in arrays_bool) / sum(a.size for a in arrays_bool)


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Test and train accuracy in evaluation mode (running BatchNorm statistics), test loss, and
    the fraction of latents at the clipping bounds (0 for the full-precision net)."""
    net = model(config)
    logits = net.apply(state.params, arrays.x_test, state.model_state)
    train_logits = net.apply(state.params, arrays.x_train, state.model_state)
    return {"test_accuracy": train.accuracy(logits, arrays.y_test),
            "test_loss": train.softmax_cross_entropy(logits, arrays.y_test),
            "train_accuracy": train.accuracy(train_logits, arrays.y_train),
            "latents_at_bound": _fraction([jnp.abs(w) >= 1.0 for w in _latents(state.params)])}


def segment(state: train.TrainState, config: Config, arrays):
    """``segment_steps`` steps of Adam + latent clipping; the segment's sign flips and :func:`evaluate`."""
    before = [jnp.sign(w) for w in _latents(state.params)]
    state, metrics = train.supervised_segment(
        state, model(config), train.softmax_cross_entropy, optimizer(config), arrays.x_train, arrays.y_train,
        batch_size=config.batch_size, num_steps=config.segment_steps, data_seed=config.data_seed,
        evaluate=lambda s: evaluate(s, config, arrays))
    after = [jnp.sign(w) for w in _latents(state.params)]
    metrics["sign_flips"] = _fraction([a != b for a, b in zip(after, before)])
    return state, metrics


# -- summary, claim, figure ---------------------------------------------------------------------

def _final(results):
    return results.finished("network", "seed", "test_accuracy", "train_accuracy", "latents_at_bound").runs


def summarize(results) -> list[dict]:
    """Per network: final test and train accuracy (mean ± std over seeds), the fraction of
    latents at ±1, and the gap to the full-precision twin paired by seed (mean ± std)."""
    runs = _final(results)
    full = runs[runs["network"] == "full"].set_index("seed")["test_accuracy"]
    rows = []
    for network in [n for n in NETWORKS if n in set(runs["network"])]:
        part = runs[runs["network"] == network]
        acc = part["test_accuracy"].to_numpy()
        paired = part.set_index("seed")["test_accuracy"]
        common = sorted(set(paired.index) & set(full.index))
        gap = (full[common] - paired[common]).to_numpy() if common else np.array([np.nan])
        rows.append({"network": network, "test_accuracy": float(acc.mean()), "std": float(acc.std()),
                     "train_accuracy": float(part["train_accuracy"].mean()),
                     "latents_at_bound": float(part["latents_at_bound"].mean()),
                     "gap_to_full": float(gap.mean()), "gap_std": float(gap.std()), "seeds": len(part)})
    return rows


def check(results) -> None:
    """Hubara et al. 2016: the binarized net trains well above chance (test accuracy ≥ 5× chance)
    and within 5 points of its full-precision twin (mean paired gap ≤ 0.05, ≥ 3 seeds)."""
    rows = {r["network"]: r for r in summarize(results)}
    assert "binary" in rows and "full" in rows, f"need the binary and full networks, got {sorted(rows)}"
    binary = rows["binary"]
    assert binary["seeds"] >= 3 and rows["full"]["seeds"] >= 3, f"need >= 3 seeds, got {binary['seeds']}"
    assert binary["test_accuracy"] >= 5 * CHANCE, f"binary net: test accuracy {binary['test_accuracy']:.3f} < 0.5"
    assert binary["gap_to_full"] <= 0.05, \
        (f"binary net is {100 * binary['gap_to_full']:.1f} ± {100 * binary['gap_std']:.1f} points below its "
         f"full-precision twin (> 5)")


def smoke_check(results) -> None:
    """At toy scale: every network learns (test accuracy ≥ 2.5× chance), the binary net's latents
    stay in the clipping box (the fraction at ±1 is a fraction) and some of its signs flipped."""
    rows = summarize(results)
    assert rows, "no finished runs"
    for r in rows:
        assert r["test_accuracy"] >= 2.5 * CHANCE, f"{r['network']}: test accuracy {r['test_accuracy']:.3f}"
        assert 0.0 <= r["latents_at_bound"] <= 1.0
    curves = results.finished("network").curves
    if curves is not None and "sign_flips" in curves:
        flips = curves[curves["network"] == "binary"]["sign_flips"]
        assert len(flips) == 0 or flips.max() > 0, "no binary weight ever changed sign"


def _curve(ax, curves, metric):
    for network in NETWORKS:
        part = curves[curves["network"] == network].dropna(subset=[metric])
        if part.empty:
            continue
        stats = part.groupby("step")[metric].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], marker=".", label=network)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)


def plot(results):
    """Training loss and test accuracy over training (mean ± std over seeds) per network, and the
    final test accuracies with the paired gaps to full precision."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(14, 4))
    ax_loss, ax_acc, ax_bar = fig.subplots(1, 3)
    curves = results.finished("network").curves
    if curves is not None and "test_accuracy" in curves:
        _curve(ax_loss, curves, "train_loss")
        _curve(ax_acc, curves, "test_accuracy")
    ax_loss.set(yscale="log", xlabel="step", ylabel="training loss (segment mean)", title="Training loss")
    ax_acc.set(xlabel="step", ylabel="test accuracy", title="Test accuracy (digits)")
    legend(ax_loss, fontsize=8)
    rows = summarize(results)
    ax_bar.bar([r["network"] for r in rows], [r["test_accuracy"] for r in rows],
               yerr=[r["std"] for r in rows], capsize=4, color=["C0", "C1", "C2"][:len(rows)])
    for i, r in enumerate(rows):
        label = f"{r['test_accuracy']:.3f}\ngap {100 * r['gap_to_full']:.1f} pt"
        ax_bar.annotate(label, (i, r["test_accuracy"] + r["std"]), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 6), textcoords="offset points")
    low = min([r["test_accuracy"] - r["std"] for r in rows], default=0.0)
    ax_bar.set(ylim=(max(0.0, low - 0.05), 1.02), ylabel="final test accuracy (mean ± std over seeds)",
               title="Final test accuracy, gap to full precision")
    fig.tight_layout()
    return fig
