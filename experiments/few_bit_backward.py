"""Few-bit backward: GELU networks trained with 1-, 2- and 4-bit saved derivative codes vs exact.

Novikov, Bykov, Oseledets et al. 2023 ("Few-Bit Backward: Quantized Gradients of Activation
Functions for Memory Footprint Reduction", ICML; §3 for the method, §5 / Tables 1–2 for the
claim): the backward pass of an activation needs only ``φ'(x)``, so the forward pass may save, per
entry, the ``bits``-bit index of the interval of a piecewise-constant approximation of ``φ'``
instead of the float input. With 2 bits the trained models match exact-backward training
(RoBERTa on GLUE, ResNets on CIFAR/ImageNet) while the activations' saved memory shrinks 16-fold
against float32 (up to ≈ 40% of the whole training memory in their models); 1 bit costs a little
accuracy. The approximation used here (:func:`jaxlearn.rules.few_bit`) is the paper's: the
levels and boundaries that minimise the N(0, 1)-weighted L2 error of ``φ'``, found by dynamic
programming, codes bit-packed into ``uint8``.

One member: an MLP ``Dense(h) → GELU → … → Dense(10)`` (exact-erf GELU) trained with Adam
(warmup + cosine) on MNIST-1D (4000 training, 1000 test sequences of length 40). ``bits``
(static: one compiled group per value) is ``0`` for the exact backward (``jaxlearn.nn.Gelu``) or
the code width of :func:`jaxlearn.rules.FewBit` ``("gelu", bits)``; the forward pass is the same
function in every case, so members with the same ``seed`` start from the same weights and see
the same batches (paired seeds): only the backward pass differs.

Metrics: ``test_accuracy``, ``test_loss`` and ``train_accuracy`` per segment. Memory (static,
measured from what ``jax.vjp`` keeps, :func:`jaxlearn.rules.residual_bytes`: the residuals of the
un-optimised linearisation, shapes only): ``activation_residual_bytes`` — bytes saved per
activation entry by the activation's own backward (exact GELU keeps three float32 arrays
(``x``, ``erfc`` and ``exp`` terms) and a scalar: 12 bytes; ``bits``-bit codes: ``bits/8`` bytes) — and
``network_residual_bytes`` — every residual of the training loss's vjp for one batch (the Dense
layers' saved inputs included, which few-bit leaves alone).

Claim (``check``, paper variant): the paired-seed difference in final test accuracy between the
2-bit and the exact backward, ``Δ = acc(2 bit) − acc(exact)``, has ``|mean Δ| ≤ max(1 point,
2 standard errors of Δ)``, over ≥ 3 seeds; and the saved residual per activation entry is
``bits/8`` bytes (2 bits: 1/48 of the exact GELU's 12 bytes).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import nn, rules, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"

EXACT = 0  # the value of ``bits`` that means the exact backward


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a GELU MLP on MNIST-1D whose activations save ``bits``-bit codes (0: exact)."""

    learning_rate: float = runner.dynamic(3e-3, min=0.0, help="peak Adam learning rate (warmup, cosine decay)")
    bits: int = runner.static(2, min=0, max=8, help="bits of the saved derivative code; 0: exact GELU backward")
    widths: tuple[int, ...] = runner.static((256, 256), min=1, help="hidden layer widths")
    optimizer: train.OptimizerSpec = runner.static(
        train.OptimizerSpec(name="adam", schedule="warmup_cosine", warmup_steps=100),
        help="optax optimizer and schedule")
    batch_size: int | None = runner.static(128, min=1, help="examples per step")
    num_steps: int = runner.static(4000, min=1, help="training steps")
    segment_steps: int = runner.static(500, min=1, help="steps per segment (metrics and checkpoint after each)")


def activation(bits: int) -> nn.Layer:
    """Exact GELU (``bits = 0``) or its few-bit-backward twin (same forward function)."""
    return nn.Gelu() if bits == EXACT else rules.FewBit("gelu", bits)


def model(config: Config) -> nn.Layer:
    """The member's network (the ``model`` hook): ``[Dense(h) → GELU] × L → Dense(10)``, He-like init."""
    hidden = [layer for width in config.widths
              for layer in (nn.Dense(width, W_std=np.sqrt(2.0)), activation(config.bits))]
    return nn.serial(*hidden, nn.Dense(10))


data = runner.study.dataset("mnist1d", seed=0)


def init(config: Config, key) -> train.TrainState:
    return runner.study.init(config, key, model(config), data(config).input_spec)


@functools.lru_cache(maxsize=None)
def residual_memory(bits: int, widths: tuple[int, ...], batch_size: int, in_dim: int) -> dict:
    """Bytes kept for the backward pass (float32): ``activation_residual_bytes`` per activation
    entry and ``network_residual_bytes`` for the training loss of one batch of a ``widths``
    network, both read from ``jax.vjp``'s residuals (:func:`jaxlearn.rules.residual_bytes`,
    shapes only); and ``network_temp_bytes``, XLA's temporary buffers of the compiled gradient
    program of that loss on the current backend (``memory_analysis().temp_size_in_bytes``, where
    XLA has already dropped what it can recompute; NaN if the backend does not report it)."""
    spec = jax.ShapeDtypeStruct((batch_size, widths[0]), jnp.float32)
    act = (lambda x: jax.nn.gelu(x, approximate=False)) if bits == EXACT else rules.few_bit("gelu", bits)
    per_entry = rules.residual_bytes(act, spec) / spec.size
    net = model(Config(bits=bits, widths=widths))
    x = jax.ShapeDtypeStruct((batch_size, in_dim), jnp.float32)
    params, _ = jax.eval_shape(lambda k: net.init(k, x), jax.random.key(0))
    labels = jax.ShapeDtypeStruct((batch_size,), jnp.int32)

    def loss(p, x, y):
        return train.softmax_cross_entropy(net.apply(p, x), y)

    whole = rules.residual_bytes(loss, params, x, labels)
    analysis = jax.jit(jax.grad(loss)).lower(params, x, labels).compile().memory_analysis()
    temp = float(analysis.temp_size_in_bytes) if analysis is not None else float("nan")
    return {"activation_residual_bytes": float(per_entry), "network_residual_bytes": float(whole),
            "network_temp_bytes": temp}


def evaluate(state: train.TrainState, config: Config, arrays) -> dict:
    """Test loss and accuracy, train accuracy, and the (static) residual memory of the config."""
    net = model(config)
    metrics = runner.study.classifier_metrics(net, state.params, arrays)
    metrics["train_accuracy"] = train.accuracy(net.apply(state.params, arrays.x_train), arrays.y_train)
    memory = residual_memory(config.bits, config.widths, config.batch_size or len(arrays.x_train),
                             arrays.x_train.shape[-1])
    return metrics | {name: jnp.asarray(value, jnp.float32) for name, value in memory.items()}


def segment(state: train.TrainState, config: Config, arrays):
    return runner.study.segment(state, config, arrays, model(config), evaluate=evaluate)


# -- summary, claim, figure ---------------------------------------------------------------------

def _final(results):
    return results.finished("bits", "seed", "test_accuracy", "train_accuracy", "activation_residual_bytes",
                            "network_residual_bytes", "network_temp_bytes").runs


def _label(bits: int) -> str:
    return "exact" if bits == EXACT else f"{bits}-bit"


def summarize(results) -> list[dict]:
    """Per code width: final test and train accuracy (mean ± std over seeds), the paired
    difference to the exact backward (mean, its standard error), and the residual memory."""
    runs = _final(results)
    exact = runs[runs["bits"] == EXACT].set_index("seed")["test_accuracy"]
    rows = []
    for bits in sorted(set(runs["bits"].astype(int))):
        part = runs[runs["bits"] == bits]
        acc = part["test_accuracy"].to_numpy()
        paired = part.set_index("seed")["test_accuracy"]
        common = sorted(set(paired.index) & set(exact.index))
        diff = (paired[common] - exact[common]).to_numpy()
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
        rows.append({"backward": _label(bits), "bits": bits, "test_accuracy": float(acc.mean()),
                     "std": float(acc.std()), "train_accuracy": float(part["train_accuracy"].mean()),
                     "diff_to_exact": float(diff.mean()) if len(diff) else float("nan"), "diff_se": se,
                     "bytes_per_activation": float(part["activation_residual_bytes"].iloc[0]),
                     "network_residual_kib": float(part["network_residual_bytes"].iloc[0]) / 1024,
                     "compiled_temp_kib": float(part["network_temp_bytes"].iloc[0]) / 1024,
                     "seeds": len(part)})
    return rows


def check(results) -> None:
    """Novikov et al. 2023: 2-bit codes train as well as the exact backward — the paired mean
    difference in test accuracy is within max(1 point, 2 standard errors), ≥ 3 seeds — and the
    activation's saved residual is ``bits/8`` bytes per entry for every code width."""
    rows = {r["bits"]: r for r in summarize(results)}
    assert EXACT in rows and 2 in rows, f"need the exact and 2-bit runs, got bits {sorted(rows)}"
    two = rows[2]
    assert two["seeds"] >= 3 and rows[EXACT]["seeds"] >= 3, f"need >= 3 paired seeds, got {two['seeds']}"
    bound = max(0.01, 2 * two["diff_se"])
    assert abs(two["diff_to_exact"]) <= bound, \
        (f"2-bit vs exact: paired difference {100 * two['diff_to_exact']:+.2f} points, beyond "
         f"{100 * bound:.2f} (max of 1 point and 2 s.e.)")
    _check_memory(rows)


def _check_memory(rows: dict) -> None:
    for bits, r in rows.items():
        if bits != EXACT:
            assert math.isclose(r["bytes_per_activation"], bits / 8, rel_tol=1e-3), \
                f"{bits}-bit: {r['bytes_per_activation']} bytes saved per activation entry, expected {bits / 8}"
            if EXACT in rows:
                assert r["network_residual_kib"] < rows[EXACT]["network_residual_kib"], \
                    f"{bits}-bit: the network's residuals are not smaller than the exact backward's"


def smoke_check(results) -> None:
    """At toy scale: every backward learns (test accuracy ≥ 2× chance), and the saved residuals
    are ``bits/8`` bytes per activation entry and shrink the network's residuals."""
    rows = {r["bits"]: r for r in summarize(results)}
    assert rows, "no finished runs"
    for r in rows.values():
        assert r["test_accuracy"] >= 0.2, f"{r['backward']}: test accuracy {r['test_accuracy']:.3f}"
    _check_memory(rows)


def plot(results):
    """Test accuracy over training per backward (mean ± std over seeds), and the paired
    differences to the exact backward against the saved bytes per activation."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(10, 4))
    ax_curve, ax_diff = fig.subplots(1, 2)
    curves = results.finished("bits").curves
    if curves is not None and "test_accuracy" in curves:
        for bits in sorted(set(curves["bits"].dropna().astype(int))):
            part = curves[curves["bits"] == bits].dropna(subset=["test_accuracy"])
            stats = part.groupby("step")["test_accuracy"].agg(["mean", "std"]).fillna(0.0)
            ax_curve.plot(stats.index, stats["mean"], marker="o", label=_label(bits))
            ax_curve.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.15)
    ax_curve.set(xlabel="step", ylabel="test accuracy", title="GELU MLP on MNIST-1D: exact vs few-bit backward")
    legend(ax_curve, fontsize=8)
    rows = [r for r in summarize(results) if np.isfinite(r["diff_to_exact"])]  # those with paired exact runs
    for r in rows:
        ax_diff.errorbar(r["bytes_per_activation"], 100 * r["diff_to_exact"], yerr=200 * r["diff_se"]
                         if np.isfinite(r["diff_se"]) else None, marker="o", capsize=4, label=r["backward"])
    ax_diff.axhline(0, color="gray", lw=0.8)
    ax_diff.axhspan(-1, 1, color="gray", alpha=0.1, label="±1 point")
    ax_diff.set(xscale="log" if rows else "linear", xlabel="bytes saved per activation entry (log)",
                ylabel="test accuracy − exact (points, ± 2 s.e.)", title="Paired difference to the exact backward")
    legend(ax_diff, fontsize=8)
    fig.tight_layout()
    return fig
