"""Git Re-Basin's width effect: after weight matching, the loss barrier between two independently
trained networks falls as they widen.

Ainsworth, Hayase & Srinivasa 2022 ("Git Re-Basin: Merging Models modulo Permutation
Symmetries", ICLR 2023). Two networks ``θ_A``, ``θ_B`` trained from different seeds
(initialisation and data order) are joined by the segment ``θ(λ) = (1 − λ) θ_A + λ θ_B``; its
loss barrier (§2, eq. 1) is

    B(θ_A, θ_B) = max_λ L(θ(λ)) − ½ (L(θ_A) + L(θ_B))

(:func:`jaxlearn.landscape.barrier`, ``mean``; the maximum over 25 equally spaced ``λ``, as in the
paper). Weight matching (§3.2, Algorithm 1) permutes the hidden units of ``θ_B`` to maximise
``Σ_ℓ ⟨W_ℓ^A, P_ℓ W_ℓ^B P_{ℓ−1}ᵀ⟩`` (coordinate descent over layers, each step a linear
assignment), which leaves B's function unchanged but moves it towards A's basin. The paper's width
ablation (VGG-16 and ResNet-20 on CIFAR-10 at width multipliers; networks trained to convergence)
finds that the train- and test-loss barriers after matching fall as the width grows, towards zero
for the widest networks: linear mode connectivity modulo permutations emerges with width.

Each member is ONE pair: a ReLU MLP of ``depth`` hidden layers of ``width`` units trained twice
on MNIST-1D (Greydanus 2020; ``num_samples`` examples, 80% train) with Adam, from two keys drawn
from the member's seed (network A: ``fold_in(key, 0)``, B: ``fold_in(key, 1)``; the data order of
each follows its key). The two train as one vmapped program; the state holds A as the member's
:class:`jaxlearn.train.TrainState` (the ``model`` hook's network) and B as a :class:`Partner`.
After training (``evaluate``), B is aligned to A by :func:`jaxlearn.landscape.weight_matching`
and both segments (``θ_A → θ_B`` and ``θ_A → π(θ_B)``) are evaluated, as one vmapped path, on the
whole training split: ``barrier_naive`` and ``barrier_matched`` (softmax cross-entropy, the
``mean`` convention above), ``end_loss_gap`` (the loss of π(θ_B) minus that of θ_B: zero, since a
permutation does not change the function), A's final train loss and the test accuracies. Seeds
are vmapped; ``width`` is static (one compiled group per width).

Weight matching is host-side (scipy's linear assignment, not jittable), so ``evaluate`` calls it
through ``jax.pure_callback`` (one call per member, after training: no host round-trip in the
training loop). The alternatives are worse: matching in ``summarize`` would make the table reload
every run's parameters and recompute the paths outside the runner, and a pure-JAX assignment
solver (e.g. an auction algorithm in ``lax.while_loop``) would be a new library routine for one
call per run.

Claim (``check``, ≥ 3 pairs per width, means): the matched barrier is below the naive barrier at
every width, and it falls as width grows (every width's matched barrier is below the narrowest
width's, and the widest's is less than half the narrowest's). Measured with the ``paper`` variant
of ``configs/rebasin_width.yaml`` (2 hidden layers, 800 training examples, 1500 Adam steps of
batch 32, lr 1e-3; 3 pairs, mean ± std over pairs):

=====  ===============  ===============  ==========================  =============
width  naive barrier    matched barrier  final train loss (A)        test accuracy
=====  ===============  ===============  ==========================  =============
   64  2.22 ± 0.15      1.28 ± 0.16      0.19                        0.41
  128  2.29 ± 0.41      1.10 ± 0.08      0.026                       0.44
  256  1.86 ± 0.12      0.93 ± 0.09      0.0059                      0.46
  512  1.62 ± 0.04      0.70 ± 0.05      0.0021                      0.48
 1024  1.45 ± 0.03      0.59 ± 0.04      0.0010                      0.48
=====  ===============  ===============  ==========================  =============

The width range starts where the networks fit their training set at this budget, which is the
paper's regime (converged networks). Narrower networks are under-trained after 1500 steps, and
their barriers are smaller because their endpoints sit high on the loss surface (width 32: train
loss 0.79, matched barrier 0.76 ± 0.05, naive 1.47 ± 0.18); with 3200 training examples the
matched barrier rises up to width 256 and falls only beyond it (``docs/gallery/rebasin_width.md``).
The matched barrier stays far from the paper's near-zero values: these MLPs overfit MNIST-1D
(train loss near 0, test accuracy under 0.5), and widths beyond 1024 were not run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data as data_module
from jaxlearn import landscape, nn, runner, train
from jaxlearn.runner.plots import legend

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: two MLPs of width ``width`` trained from two keys of ``seed``, and their barriers."""

    seed: int = runner.dynamic(0, min=0, help="pair seed: network A draws from fold_in(key, 0), B from fold_in(key, 1)")
    learning_rate: float = runner.dynamic(1e-3, min=0.0, help="Adam learning rate (the paper's MLP: 1e-3)")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adam"), help="optax optimizer")
    width: int = runner.static(128, min=1, help="hidden units per layer")
    depth: int = runner.static(2, min=1, help="hidden layers")
    num_samples: int = runner.static(1000, min=10, help="MNIST-1D examples generated (80% train, 20% test)")
    batch_size: int | None = runner.static(32, min=1, help="examples per step")
    num_steps: int = runner.static(1500, min=1, help="training steps of each network")
    segment_steps: int = runner.static(500, min=1, help="steps per segment (metrics and checkpoint after each)")
    path_points: int = runner.static(25, min=3, help="points on each segment, endpoints included")


class Partner(NamedTuple):
    """Network B of the pair: the fields of a :class:`jaxlearn.train.TrainState`, kept under another
    type so that a member's state holds exactly one TrainState (network A, the ``model`` hook's)."""

    params: Any
    opt_state: Any
    model_state: Any
    step: jax.Array
    key: jax.Array


class PairState(NamedTuple):
    """A member: network A (``train_state``) and network B (``partner``)."""

    train_state: train.TrainState
    partner: Partner


def model(config: Config):
    """The network of a member (the ``model`` hook): a ReLU MLP with He-scaled weights."""
    return nn.mlp((config.width,) * config.depth, 10, activation="relu", W_std=np.sqrt(2.0))


def data(config: Config) -> data_module.Arrays:
    """The MNIST-1D split (generated, ``seed=0``), shared by every member."""
    return data_module.mnist1d(num_samples=config.num_samples, seed=0).arrays()


def _input_spec(config: Config):
    """One MNIST-1D signal: 40 float32 samples (the generator's default length), known without
    generating the data (which takes seconds)."""
    del config
    return jax.ShapeDtypeStruct((1, 40), jnp.float32)


def init(config: Config, key) -> PairState:
    """Networks A and B drawn from ``fold_in(key, 0)`` and ``fold_in(key, 1)``, by one ``lax.map``
    over the two keys: one copy of the initialiser in the program. XLA compiles the random draws
    slowly, and most of a smoke run is compile time; a vmapped draw compiled about 1.8× slower
    than two copies."""
    def draw(i):
        return runner.study.init(config, jax.random.fold_in(key, i), model(config), _input_spec(config))

    return _unstack(jax.lax.map(draw, jnp.arange(2)))


def _stack(state: PairState) -> train.TrainState:
    """A and B as one TrainState with a leading axis of 2 (A first), for one vmapped program."""
    return jax.tree.map(lambda a, b: jnp.stack([a, b]), state.train_state, train.TrainState(*state.partner))


def _unstack(stacked: train.TrainState) -> PairState:
    a, b = (jax.tree.map(lambda leaf, i=i: leaf[i], stacked) for i in (0, 1))
    return PairState(a, Partner(*b))


def segment(state: PairState, config: Config, arrays):
    """``segment_steps`` steps of both networks (one vmapped program); ``train_loss`` is their mean."""
    def one(ts):
        return runner.study.segment(ts, config, arrays, model(config))

    stacked, metrics = jax.vmap(one)(_stack(state))
    return _unstack(stacked), {k: jnp.mean(v) for k, v in metrics.items()}


def _matched(config: Config, params_a, params_b):
    """``π(θ_B)``: B's parameters permuted by weight matching to A (host-side, float64 inside)."""
    spec = landscape.permutation_spec(model(config), _input_spec(config))

    def host(a, b):
        permuted = landscape.weight_matching(spec, a, b).params
        return jax.tree.map(lambda p, like: np.asarray(p, like.dtype), permuted, b)

    shapes = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params_b)
    return jax.pure_callback(host, shapes, params_a, params_b, vmap_method="sequential")


def evaluate(state: PairState, config: Config, arrays) -> dict:
    """Barriers on the training split before and after weight matching (module docstring): the
    segments ``θ_A → θ_B`` and ``θ_A → π(θ_B)`` are evaluated as one vmapped path."""
    net = model(config)
    objective = landscape.ModelObjective(net.apply, landscape.softmax_cross_entropy, (arrays.x_train, arrays.y_train))
    params_a, params_b = state.train_state.params, state.partner.params
    ends = jax.tree.map(lambda b, m: jnp.stack([b, m]), params_b, _matched(config, params_a, params_b))
    paths = jax.vmap(lambda end: landscape.linear_path(objective, params_a, end, num_points=config.path_points))(ends)
    loss = paths["loss"]  # (2, P): row 0 the naive segment, row 1 the matched one
    barriers = landscape.barrier(loss, paths["alpha"][0])
    accuracy = jax.vmap(lambda p: train.accuracy(net.apply(p, arrays.x_test), arrays.y_test))(
        jax.tree.map(lambda a, b: jnp.stack([a, b]), params_a, params_b))
    return {"barrier_naive": barriers.mean[0], "barrier_matched": barriers.mean[1],
            "barrier_naive_linear": barriers.linear[0], "barrier_matched_linear": barriers.linear[1],
            "end_loss_gap": loss[1, -1] - loss[0, -1], "train_loss_a": loss[0, 0],
            "test_accuracy": accuracy[0], "partner_test_accuracy": accuracy[1]}


# -- results ---------------------------------------------------------------------------------------------------
_FINAL = ("barrier_naive", "barrier_matched", "end_loss_gap", "train_loss_a", "test_accuracy", "partner_test_accuracy")


def _final(results):
    return results.finished("width", *_FINAL).runs


def summarize(results) -> list[dict]:
    """Per width: the naive and matched barriers (mean and std over pairs), network A's final train
    loss (mean) and the test accuracy (mean over both networks of every pair)."""
    rows = []
    for width, part in _final(results).groupby("width"):
        rows.append({"width": int(width), "pairs": len(part),
                     "barrier_naive": float(part["barrier_naive"].mean()),
                     "barrier_naive_std": float(part["barrier_naive"].std(ddof=0)),
                     "barrier_matched": float(part["barrier_matched"].mean()),
                     "barrier_matched_std": float(part["barrier_matched"].std(ddof=0)),
                     "train_loss": float(part["train_loss_a"].mean()),
                     "test_accuracy": float(np.mean([part["test_accuracy"], part["partner_test_accuracy"]]))})
    return sorted(rows, key=lambda r: r["width"])


def smoke_check(results) -> None:
    """The pipeline at toy scale: finite barriers, matching leaves B's function unchanged (its loss
    at the end of the matched segment equals the naive one), and it lowers the barrier of every pair."""
    runs = _final(results)
    assert len(runs), "no finished runs"
    for _, r in runs.iterrows():
        where = f"width={r['width']} seed={r['seed']}"
        assert np.isfinite(r["barrier_naive"]) and np.isfinite(r["barrier_matched"]), f"{where}: non-finite barriers"
        assert abs(r["end_loss_gap"]) < 1e-4, f"{where}: matching changed B's loss by {r['end_loss_gap']:.3g}"
        assert r["barrier_matched"] < r["barrier_naive"], \
            f"{where}: matched barrier {r['barrier_matched']:.4f} >= naive {r['barrier_naive']:.4f}"


def check(results) -> None:
    """The claim (Ainsworth et al. 2022, width ablation): with ≥ 3 pairs per width, the mean matched barrier is
    below the mean naive barrier at every width and falls with width (below the narrowest width's at
    every wider width; the widest's under half the narrowest's)."""
    rows = summarize(results)
    assert rows, "no finished runs"
    assert min(r["pairs"] for r in rows) >= 3, f"fewer than 3 finished pairs at a width: {[r['pairs'] for r in rows]}"
    assert len(rows) >= 2, "check needs at least two widths"
    for r in rows:
        assert r["barrier_matched"] < r["barrier_naive"], \
            f"width {r['width']}: matched barrier {r['barrier_matched']:.4f} >= naive {r['barrier_naive']:.4f}"
    narrow = rows[0]
    for r in rows[1:]:
        assert r["barrier_matched"] < narrow["barrier_matched"], \
            f"width {r['width']}: matched barrier {r['barrier_matched']:.4f} not below width {narrow['width']}'s " \
            f"{narrow['barrier_matched']:.4f}"
    assert rows[-1]["barrier_matched"] < 0.5 * narrow["barrier_matched"], \
        f"widest ({rows[-1]['width']}) matched barrier {rows[-1]['barrier_matched']:.4f} is not under half of " \
        f"width {narrow['width']}'s {narrow['barrier_matched']:.4f}"


def plot(results):
    """The width ablation of Ainsworth et al. (train-loss barrier against width, after weight
    matching; here also without it), mean ± std over pairs; and the endpoints: network A's final
    train loss and the test accuracy, which say how far each width trained."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(13, 4))
    ax_barrier, ax_loss, ax_acc = fig.subplots(1, 3)
    rows = summarize(results)
    widths = [r["width"] for r in rows]
    for key, label, style in (("barrier_naive", "naive (no matching)", "s--"),
                              ("barrier_matched", "weight matching", "o-")):
        ax_barrier.errorbar(widths, [r[key] for r in rows], yerr=[r[f"{key}_std"] for r in rows], fmt=style,
                            capsize=3, label=label)
    ax_barrier.set(xscale="log", xlabel="hidden width", ylabel="train-loss barrier  max L(λ) − (L_A + L_B)/2",
                   title="Loss barrier between two MLPs (MNIST-1D)")
    legend(ax_barrier, fontsize=8)
    ax_loss.plot(widths, [r["train_loss"] for r in rows], "o-")
    ax_loss.set(xscale="log", yscale="log" if rows else "linear",  # (no data: nothing to put on a log axis)
                xlabel="hidden width", ylabel="final train loss of A", title="Endpoints: how far they trained")
    ax_acc.plot(widths, [r["test_accuracy"] for r in rows], "o-")
    ax_acc.set(xscale="log", xlabel="hidden width", ylabel="test accuracy (mean of A and B)", title="Endpoints")
    fig.tight_layout()
    return fig
