"""Lottery tickets with rewinding: iterative magnitude pruning finds sparse subnetworks that train
to the dense network's accuracy, where random subnetworks of the same size do not.

Frankle & Carbin 2019 ("The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks", ICLR, §1–2: identifying winning tickets, the random-reinitialisation control; LeNet
on MNIST) and Frankle, Dziugaite, Roy & Carbin 2020 ("Linear Mode Connectivity and the Lottery
Ticket Hypothesis", ICML, §5 Algorithm 2: IMP with rewinding to iteration ``k``; the random-pruning
control). Iterative magnitude pruning (IMP, :func:`jaxlearn.analysis.imp`): train the network for
``T`` steps, prune the fraction ``rate`` (20%) of the remaining weights with the smallest
magnitude (:func:`jaxlearn.analysis.magnitude_mask`, ranked over all layers together), *rewind*
the surviving weights to their values at step ``k``, train again from step ``k`` to ``T``, and
repeat. After ``r`` rounds a fraction ``0.8^r`` of the weights remains (up to rounding); the
subnetwork of the last round, trained, is the *ticket*. The claim: down to a small fraction of
the weights the ticket trains to at least the dense network's test accuracy, and better than
two controls with the same sparsity that share everything but the ticket's particular weights:

* **random reinitialisation** (:func:`jaxlearn.analysis.random_reinit`): the ticket's mask on a
  fresh draw of the initial weights, ``m ⊙ θ'₀`` — is it the mask alone?
* **random mask** (:func:`jaxlearn.analysis.random_mask`): the rewound weights ``θ_k`` under a
  uniformly random mask with the ticket's per-layer counts — is it the sparsity pattern's layer
  profile alone?

One member is one seed and runs the whole procedure in ONE segment: the dense network is drawn
(``θ₀``) and trained ``k = rewind_step`` steps to the rewind point; then
:func:`~jaxlearn.analysis.imp` runs ``rounds + 1`` trainings (the dense network first, then one
per pruning round) in ``lax.scan``, each from the training state at step ``k`` with its weights
replaced by ``m_r ⊙ θ_k``, for ``T − k`` steps with the optimizer restricted to the mask
(:func:`~jaxlearn.analysis.masked`: pruned weights stay exactly 0). Rewinding restores the whole
training state at step ``k`` but the weights' pruned entries — the step counter (hence the data
order continues from step ``k``) and the optimizer state (Adam's step count and moment estimates
at step ``k``, the default; with plain SGD only the position in the learning-rate schedule, the
weight rewinding of Frankle et al. 2020 and Renda et al. 2020). Round 0 is therefore the dense
network trained for ``T`` steps without interruption: the *dense* baseline. The two controls of
every round (masks ``m_0 … m_R``) then train as one vmapped program, from the same step-``k``
state with the same data order; their keys are ``fold_in(fold_in(key, 2), r)`` for round ``r``,
``key`` the train state's (streams 0 and 1 are its data order and step keys). ``seed`` (and
``learning_rate``, ``rate``, ``data_seed``) are dynamic, so the seeds are one vmapped
group: ``T`` steps of pretraining-and-dense plus ``rounds × (T − k)`` sequential steps, and the
controls' ``2 (rounds + 1)`` trainings side by side.

The state (:class:`LotteryState`) holds the final ticket as the member's
:class:`jaxlearn.train.TrainState` (the ``model`` hook's network: ``runner.load_networks`` gives
it back) and, stacked over rounds, every mask, trained ticket and trained control. Final metrics
(``evaluate``, on the MNIST-1D test split): per round ``r`` (two digits), ``density_rNN`` (the
fraction of prunable weights kept: Dense kernels, biases are never pruned), ``ticket_accuracy_rNN``,
``reinit_accuracy_rNN`` and ``random_mask_accuracy_rNN``; and ``dense_accuracy`` (round 0),
``test_accuracy`` (the final ticket's) and ``final_density``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import analysis, nn, runner, train
from jaxlearn import data as data_module
from jaxlearn.runner.plots import legend

VERSION = "1"

ARMS = ("ticket", "reinit", "random_mask")
_CONTROLS = 2  # the controls' stream of the train state's key (0 and 1 are its data and step streams)
_LABELS = {"ticket": "IMP ticket (rewound to step k)", "reinit": "random reinitialisation (ticket's mask)",
           "random_mask": "random mask (ticket's layer counts, θ_k)"}


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: IMP with rewinding of an MLP on MNIST-1D, ``rounds`` rounds, with both controls
    at every round. ``num_steps`` is ``T``, the length of one training (and the horizon of the
    learning-rate schedule); the member runs as one segment (``segment_steps = num_steps``)."""

    seed: int = runner.dynamic(0, min=0, help="initialisation seed (and the data order unless data_seed is set); "
                                              "the controls' keys derive from it")
    learning_rate: float = runner.dynamic(1.2e-3, min=0.0, help="Adam learning rate (Frankle & Carbin's LeNet)")
    rate: float = runner.dynamic(0.2, min=0.0, max=0.99, help="fraction of the remaining weights pruned per round")
    optimizer: train.OptimizerSpec = runner.static(
        train.OptimizerSpec(name="adam"), help="optax optimizer and schedule (Adam, constant learning rate)")
    widths: tuple[int, ...] = runner.static((300, 100), min=1, help="hidden layer widths (ReLU MLP, He init; "
                                                                     "LeNet-300-100 of Frankle & Carbin 2019)")
    num_samples: int = runner.static(5000, min=10, help="MNIST-1D examples generated (80% train, 20% test)")
    rounds: int = runner.static(10, min=0, help="pruning rounds R: R + 1 trainings, final density ≈ (1 − rate)^R")
    rewind_step: int = runner.static(100, min=0, help="k: the step the surviving weights are rewound to")
    scope: str = runner.static("global", choices=("global", "layer"),
                               help="magnitude ranking over all layers together, or layer by layer")
    batch_size: int | None = runner.static(100, min=1, help="examples per step")
    num_steps: int = runner.static(2000, min=1, help="T: steps of one training (rewind point included)")
    segment_steps: int = runner.static(2000, min=1, help="must equal num_steps: the member is one segment")

    def __post_init__(self):
        if self.rewind_step >= self.num_steps:
            raise ValueError(f"rewind_step: must be < num_steps={self.num_steps}, got {self.rewind_step}")
        if self.segment_steps != self.num_steps:
            raise ValueError(f"segment_steps: must equal num_steps={self.num_steps} (IMP runs its rounds inside one "
                             f"segment), got {self.segment_steps}")


class LotteryState(NamedTuple):
    """One member. ``train_state``: θ₀ at first, the trained final ticket after the segment (the
    ``model`` hook's network). Stacked over rounds ``r = 0 … R`` (leading axis R + 1): ``masks``
    (the ticket's mask of round r; ``masks[0]`` all kept), ``tickets`` (trained from ``masks[r] ⊙ θ_k``),
    ``reinit`` (trained from ``masks[r] ⊙ θ'₀``), ``random_masks`` and ``random`` (trained from
    ``random_masks[r] ⊙ θ_k``)."""

    train_state: train.TrainState
    masks: Any
    tickets: Any
    reinit: Any
    random_masks: Any
    random: Any


def model(config: Config):
    """The network (the ``model`` hook): a ReLU MLP with He-scaled weights, 10 outputs."""
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


def data(config: Config) -> data_module.Arrays:
    """MNIST-1D (Greydanus 2020; the reference generator, ``seed=42``: the published dataset at
    ``num_samples=5000``), shared by every member."""
    return data_module.mnist1d(num_samples=config.num_samples, seed=42).arrays()


def _input_spec(config: Config):
    """One MNIST-1D signal, 40 float32 samples, known without generating the data."""
    del config
    return jax.ShapeDtypeStruct((1, 40), jnp.float32)


def _stack(tree, n):
    return jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (n,) + jnp.shape(leaf)), tree)


def init(config: Config, key) -> LotteryState:
    """θ₀ and the optimizer (the member's train state); the per-round fields zero-filled (all
    kept for the masks) until the segment fills them."""
    state = runner.study.init(config, key, model(config), _input_spec(config))
    n = config.rounds + 1
    zeros = _stack(jax.tree.map(jnp.zeros_like, state.params), n)
    kept = _stack(jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), state.params), n)
    return LotteryState(state, kept, zeros, zeros, kept, zeros)


def _trainer(config: Config, arrays, start: train.TrainState):
    """``train_fn(params, mask)``: the training state ``start`` (at the rewind step) with its weights
    replaced by ``params``, trained to step ``T`` with the optimizer restricted to ``mask``."""
    net = model(config)

    def train_fn(params, mask):
        optimizer = analysis.masked(config.build_optimizer(), mask)
        trained, _ = train.supervised_segment(
            start._replace(params=params), net, train.softmax_cross_entropy, optimizer, arrays.x_train,
            arrays.y_train, batch_size=config.batch_size, num_steps=config.num_steps - config.rewind_step,
            data_seed=config.data_seed)
        return trained.params

    return train_fn


def _controls(config: Config, key, rewound, masks):
    """The controls' starting weights and masks, stacked ``[reinit rounds…, random-mask rounds…]``:
    ``masks[r] ⊙ θ'₀`` with a fresh θ'₀, and θ_k under a random mask with ``masks[r]``'s layer counts."""
    net, spec = model(config), _input_spec(config)

    def one(r, mask):
        k_init, k_mask = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, _CONTROLS), r))
        fresh = analysis.random_reinit(k_init, lambda kk: net.init(kk, spec)[0], mask)
        shuffled = analysis.random_mask(k_mask, mask, scope="layer")
        return fresh, shuffled

    fresh, shuffled = jax.vmap(one)(jnp.arange(config.rounds + 1), masks)
    start = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), fresh, jax.vmap(analysis.apply_mask, (None, 0))(
        rewound, shuffled))
    control_masks = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), masks, shuffled)
    return start, control_masks, shuffled


def segment(state: LotteryState, config: Config, arrays):
    """The whole procedure (module docstring): pretraining to step ``k``, IMP's ``R + 1`` trainings,
    both controls at every round. Metric: ``final_density``."""
    net, n = model(config), config.rounds + 1
    at_k, _ = train.supervised_segment(state.train_state, net, train.softmax_cross_entropy, config.build_optimizer(),
                                       arrays.x_train, arrays.y_train, batch_size=config.batch_size,
                                       num_steps=config.rewind_step, data_seed=config.data_seed)
    train_fn = _trainer(config, arrays, at_k)
    found = analysis.imp(train_fn, at_k.params, rounds=config.rounds, rate=config.rate, scope=config.scope)
    start, control_masks, shuffled = _controls(config, state.train_state.key, at_k.params, found.masks)
    trained = jax.vmap(train_fn)(start, control_masks)
    reinit, random = (jax.tree.map(lambda leaf, i=i: leaf[i * n:(i + 1) * n], trained) for i in (0, 1))
    final = state.train_state._replace(params=jax.tree.map(lambda leaf: leaf[-1], found.params),
                                       step=jnp.asarray(config.num_steps, state.train_state.step.dtype))
    new = LotteryState(final, found.masks, found.params, reinit, shuffled, random)
    return new, {"final_density": analysis.density(jax.tree.map(lambda m: m[-1], found.masks))[0]}


def evaluate(state: LotteryState, config: Config, arrays) -> dict:
    """Test accuracy of every trained network and the density of every round (module docstring)."""
    net = model(config)

    def accuracy(params):
        return train.accuracy(net.apply(params, arrays.x_test), arrays.y_test)

    densities = jax.vmap(lambda m: analysis.density(m)[0])(state.masks)
    out = {"dense_accuracy": accuracy(jax.tree.map(lambda leaf: leaf[0], state.tickets)),
           "test_accuracy": accuracy(state.train_state.params), "final_density": densities[-1]}
    for arm, params in zip(ARMS, (state.tickets, state.reinit, state.random)):
        accuracies = jax.vmap(accuracy)(params)
        out.update({f"{arm}_accuracy_r{r:02d}": accuracies[r] for r in range(config.rounds + 1)})
    out.update({f"density_r{r:02d}": densities[r] for r in range(config.rounds + 1)})
    return out


# -- results -----------------------------------------------------------------------------------------------------
def _per_round(results) -> list[dict]:
    """One row per (seed, round) of the finished runs: density and the three accuracies."""
    runs = results.finished("seed", "dense_accuracy").runs
    rows = []
    for _, run in runs.iterrows():
        for r in range(int(run["rounds"]) + 1):
            rows.append({"seed": int(run["seed"]), "round": r, "density": float(run[f"density_r{r:02d}"]),
                         "dense": float(run["dense_accuracy"]),
                         **{arm: float(run[f"{arm}_accuracy_r{r:02d}"]) for arm in ARMS}})
    return rows


def summarize(results) -> list[dict]:
    """Per round: density (fraction of prunable weights kept) and the test accuracy of the ticket,
    the dense network and both controls, mean and std over seeds."""
    rows = _per_round(results)
    table = []
    for r in sorted({row["round"] for row in rows}):
        part = [row for row in rows if row["round"] == r]
        entry = {"round": r, "density": float(np.mean([row["density"] for row in part]))}
        for arm in ("dense",) + ARMS:
            values = np.array([row[arm] for row in part])
            entry[arm] = float(values.mean())
            entry[f"{arm}_std"] = float(values.std())
        entry["seeds"] = len(part)
        table.append(entry)
    return table


def check(results) -> None:
    """The claim (Frankle & Carbin 2019; Frankle et al. 2020, §5), at the densest round with at most
    15% of the weights left, means over ≥ 3 seeds: the ticket's test accuracy is at least the dense
    network's minus one point, and above both the random-reinitialisation and the random-mask
    control."""
    table = summarize(results)
    assert table, "no finished runs"
    sparse = [row for row in table if row["density"] <= 0.15]
    assert sparse, f"no round reaches 15% of the weights (lowest density {min(r['density'] for r in table):.3f})"
    row = max(sparse, key=lambda r: r["density"])
    assert row["seeds"] >= 3, f"needs >= 3 seeds, got {row['seeds']}"
    where = f"at density {row['density']:.3f} (round {row['round']})"
    assert row["ticket"] >= row["dense"] - 0.01, \
        f"{where}: ticket {row['ticket']:.4f} below dense {row['dense']:.4f} minus one point"
    for control in ("reinit", "random_mask"):
        assert row["ticket"] > row[control], \
            f"{where}: ticket {row['ticket']:.4f} not above {control} {row[control]:.4f}"


def smoke_check(results) -> None:
    """The pipeline at toy size: densities follow IMP's count recurrence ``n_{r+1} = n_r −
    round(rate · n_r)`` over the prunable weights; round 0's random mask is the full mask, so that
    control is the dense network itself (trained by the controls' vmapped program, whose float
    differences training amplifies: the same accuracy within a point); and at the sparsest round the
    ticket beats the random mask on average (the effect's direction)."""
    runs = results.finished("seed", "dense_accuracy").runs
    assert len(runs), "no finished runs"
    rows = _per_round(results)
    for _, run in runs.iterrows():
        widths = [40, *run["widths"], 10]
        n = total = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        for r in range(int(run["rounds"]) + 1):
            got = run[f"density_r{r:02d}"]
            assert abs(got - n / total) < 1e-6, f"seed {run['seed']} round {r}: density {got} != {n}/{total}"
            n -= int(np.round(run["rate"] * n))
        assert run["dense_accuracy"] == run["ticket_accuracy_r00"]
        assert abs(run["random_mask_accuracy_r00"] - run["dense_accuracy"]) <= 0.01, \
            f"seed {run['seed']}: round 0's random mask is the full mask, yet its accuracy differs from dense"
    last = max(row["round"] for row in rows)
    ticket = np.mean([row["ticket"] for row in rows if row["round"] == last])
    random = np.mean([row["random_mask"] for row in rows if row["round"] == last])
    assert ticket > random, f"sparsest round: ticket {ticket:.4f} not above the random mask {random:.4f}"


def plot(results):
    """Test accuracy against the fraction of weights remaining (log axis, dense at the right): the
    ticket, both controls (mean ± std over seeds) and the dense network (a band)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    table = summarize(results)
    density = np.array([row["density"] for row in table])
    if table:  # round 0 is the dense network
        dense, dense_std = table[0]["dense"], table[0]["dense_std"]
        ax.axhspan(dense - dense_std, dense + dense_std, color="0.85", zorder=0)
        ax.axhline(dense, color="0.3", linestyle="--", label="dense network (round 0)")
    for arm, marker in zip(ARMS, "osd"):
        ax.errorbar(density, [r[arm] for r in table], yerr=[r[f"{arm}_std"] for r in table], marker=marker,
                    capsize=3, label=_LABELS[arm])
    ax.axvline(0.15, color="0.6", linestyle=":", linewidth=1)
    ax.set(xscale="log", xlabel="fraction of weights remaining", ylabel="test accuracy (MNIST-1D)",
           title=f"IMP with rewinding, {table[0]['seeds'] if table else 0} seeds")
    ticks = [1.0, 0.5, 0.25, 0.15, 0.1, 0.05, 0.02, 0.01]
    lowest = density.min() if len(density) else 0.1
    ax.set_xticks([t for t in ticks if t >= 0.8 * lowest], [f"{t:.0%}" for t in ticks if t >= 0.8 * lowest])
    ax.minorticks_off()
    ax.invert_xaxis()
    legend(ax, fontsize=8)
    fig.tight_layout()
    return fig
