"""Representation similarity by CKA: corresponding layers of networks trained from different seeds,
the bias of plain CKA at small sample sizes, and how the activation function shapes what a hidden
layer keeps of the task's input and label geometry.

Three claims, each measured with linear CKA (:func:`jaxlearn.analysis.linear_cka`; Kornblith, Norouzi,
Lee & Hinton 2019, "Similarity of Neural Network Representations Revisited", ICML, §3):

* **Sanity check** (Kornblith et al. 2019, §6.1, Table 2): for two architecturally identical networks
  trained from different initialisations, the layer of the second network most similar to a given layer
  of the first is its architectural counterpart. They found this for linear CKA in 99.3% of the cases
  (ten plain 10-layer CNNs on CIFAR-10, every pair). ``setting: seeds``: one member is a PAIR of networks
  (a ReLU MLP of ``widths``, or a plain CNN) trained on ``dataset`` from two keys of the member's seed
  (network A: ``fold_in(key, 0)``, B: ``fold_in(key, 1)``; initialisation and data order), stacked
  as one TrainState and trained by one ``lax.map`` over the two; ``evaluate`` computes the ``L × L``
  matrix ``cka_i_j = CKA(A_i, B_j)`` of the hidden layers' post-activation representations (flattened)
  on the test split and the fraction of layers (both directions, A→B and B→A) whose most similar layer
  is the counterpart (``counterpart_accuracy``).
* **Bias of plain CKA** (the biased HSIC of Gretton et al. 2005 in numerator and denominator, vs the
  debiased CKA of Nguyen, Raghu & Kornblith 2021 with the unbiased HSIC of Song et al. 2012): the same
  pair AT INITIALISATION (two random networks) on ``n`` examples. For each ``n`` of ``sample_sizes`` the
  test split (the rows of the sanity check) is cut into ``⌊N/n⌋`` disjoint subsets and the CKA of
  corresponding layers is averaged over subsets and layers (``random_plain_n{n}``,
  ``random_debiased_n{n}``), next to its value on all
  ``N`` rows (``random_plain_full``, ``random_debiased_full``). The plain estimate rises above its
  large-``n`` value as ``n`` falls; the debiased one stays near it.
* **Task geometry × nonlinearity** (Alleman, Lindsey & Fusi 2024, "Task structure and nonlinearity
  jointly determine learned representational geometry", ICLR): one-hidden-layer networks trained on a
  task whose input geometry and label geometry differ learn, with tanh, hidden representations aligned
  with the LABEL kernel and, with ReLU, representations that keep more of the INPUT kernel. ``setting:
  geometry``: the paper's binary classification of unstructured inputs (their Fig. 1): ``num_conditions``
  conditions, each a random Gaussian point in ``input_dim`` dimensions (so the conditions are nearly
  orthogonal: the input kernel is close to the identity), labelled by a random balanced dichotomy (the
  label kernel has two blocks); ``samples_per_condition`` noisy samples (``noise``) of each condition
  are the training set. The task is drawn from the member's seed, the network from its key, so the tanh
  and the ReLU member of one seed share the task and the initial weights. Per segment and at the end,
  ``input_alignment = CKA(h, x)`` and ``label_alignment = CKA(h, onehot(y))`` of the hidden layer on the
  noise-free conditions. The networks start from a small initialisation (``W_std = init_scale``) and
  train with Adam, full batch: the rich (feature-learning) regime in which the paper's mechanism acts on
  the input weights; at the standard scale with SGD the hidden layer barely moves within our budget.

``setting`` and ``activation`` are static (one compiled group each); seeds are vmapped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import analysis, nn, runner, train
from jaxlearn import data as data_module
from jaxlearn.runner.plots import legend

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config(runner.TrainingConfig):
    """One member: a pair of networks (``seeds``) or one one-hidden-layer network on the
    geometry task (``geometry``); see the module docstring."""

    learning_rate: float = runner.dynamic(1e-3, min=0.0, help="Adam learning rate")
    optimizer: train.OptimizerSpec = runner.static(train.OptimizerSpec(name="adam"), help="optax optimizer")
    setting: Literal["seeds", "geometry"] = runner.static("seeds", help="seeds: a pair of networks "
                                                          "(layer correspondence, random-network bias); geometry: "
                                                          "one hidden layer on the input/label-geometry task")
    activation: str = runner.static("relu", help="hidden nonlinearity (relu, tanh, ...)")
    dataset: Literal["digits", "mnist1d"] = runner.static("mnist1d", help="seeds: the dataset of the pairs")
    architecture: Literal["mlp", "cnn"] = runner.static("mlp", help="seeds: an MLP, or a plain CNN (3-wide "
                                                                 "SAME convolutions, global average pooling, Dense)")
    widths: tuple[int, ...] = runner.static((256,) * 4, min=1, help="seeds: hidden widths (MLP) or channels (CNN)")
    sample_sizes: tuple[int, ...] = runner.static((8, 16, 32, 64, 128), min=4,
                                                  help="seeds: examples per subset for the random-network CKA")
    hidden_width: int = runner.static(256, min=1, help="geometry: hidden units")
    init_scale: float = runner.static(0.1, min=0.0, help="geometry: W_std of both layers (small: rich regime)")
    num_conditions: int = runner.static(32, min=4, help="geometry: input clusters (even: a balanced dichotomy)")
    input_dim: int = runner.static(64, min=1, help="geometry: input dimension")
    samples_per_condition: int = runner.static(16, min=1, help="geometry: noisy training samples per condition")
    noise: float = runner.static(0.5, min=0.0, help="geometry: std of the Gaussian noise around each condition")
    batch_size: int | None = runner.static(64, min=1, help="examples per step (null: the whole training set)")
    num_steps: int = runner.static(2000, min=1, help="training steps")
    segment_steps: int = runner.static(250, min=1, help="steps per segment (metrics and checkpoint after each)")

    def __post_init__(self):
        if self.num_conditions % 2:
            raise ValueError(f"num_conditions: must be even (a balanced dichotomy), got {self.num_conditions}")


class PairState(NamedTuple):
    """A ``seeds`` member: networks A and B stacked as one TrainState (a leading axis of 2 on every
    leaf, A first), and their parameters at step 0 (stacked likewise: the pair of random networks)."""

    train_state: train.TrainState
    initial: Any


class Task(NamedTuple):
    """The geometry task: ``centers (C, D)``, ``labels (C,)`` (0/1), training ``x (C·s, D)``, ``y (C·s,)``."""

    centers: jax.Array
    labels: jax.Array
    x: jax.Array
    y: jax.Array


def model(config: Config):
    """The member's network: the MLP or CNN of a pair (He init) or the one-hidden-layer geometry network."""
    if config.setting == "geometry":
        return nn.mlp((config.hidden_width,), 2, activation=config.activation, W_std=config.init_scale)
    if config.architecture == "cnn":
        return nn.cnn(config.widths, 10, filter_shape=(3,) * len(_SPATIAL[config.dataset]),
                      activation=config.activation, W_std=np.sqrt(2.0))
    return nn.mlp(config.widths, 10, activation=config.activation, W_std=np.sqrt(2.0))


_SPATIAL = {"digits": (8, 8), "mnist1d": (40,)}  # the input's spatial shape (one channel) for a CNN


def data(config: Config) -> data_module.Arrays:
    """The dataset of the ``seeds`` setting, shared by every member (the geometry task is drawn in the
    program from each member's seed): digits (``seed=0`` split) or MNIST-1D (4000 generated, 80% train)."""
    if config.dataset == "mnist1d":
        arrays = data_module.mnist1d(num_samples=4000, seed=0).arrays()
    else:
        arrays = data_module.load("digits", seed=0).arrays()
    if config.architecture == "cnn":
        shape = _SPATIAL[config.dataset] + (1,)
        arrays = arrays._replace(x_train=arrays.x_train.reshape(-1, *shape), x_test=arrays.x_test.reshape(-1, *shape))
    return arrays


def _input_spec(config: Config):
    if config.setting == "geometry":
        return jax.ShapeDtypeStruct((1, config.input_dim), jnp.float32)
    spatial = _SPATIAL[config.dataset]
    shape = spatial + (1,) if config.architecture == "cnn" else (int(np.prod(spatial)),)
    return jax.ShapeDtypeStruct((1, *shape), jnp.float32)


def hidden_representations(net, params, x) -> list:
    """The post-activation outputs of every hidden layer of an ``nn.mlp`` (``Dense, act, …, Dense``) or
    ``nn.cnn`` (``Conv, act, …, GlobalAvgPool, Dense``), in order, each flattened to ``(n, features)``:
    the output of every parameter-free child that follows a child with parameters (the activations)."""
    reps, had_params = [], False
    for layer, p in zip(net.children[:-1], params[:-1]):
        x = layer.apply(p, x)
        has_params = bool(jax.tree.leaves(p))
        if had_params and not has_params:
            reps.append(x.reshape(x.shape[0], -1))
        had_params = has_params
    return reps


def task(config: Config) -> Task:
    """The geometry task of the member's seed (module docstring); the same for every activation."""
    key = jax.random.fold_in(jax.random.key(config.seed), 7919)  # the task's own stream of the seed
    k_centers, k_labels, k_noise = jax.random.split(key, 3)
    c, d, s = config.num_conditions, config.input_dim, config.samples_per_condition
    centers = jax.random.normal(k_centers, (c, d))
    labels = jax.random.permutation(k_labels, jnp.arange(c) % 2)
    condition = jnp.repeat(jnp.arange(c), s)
    x = centers[condition] + config.noise * jax.random.normal(k_noise, (c * s, d))
    return Task(centers, labels, x, labels[condition])


# -- init / segment --------------------------------------------------------------------------------------------

def init(config: Config, key):
    """``seeds``: A and B from ``fold_in(key, 0)``, ``fold_in(key, 1)`` (and their copies at step 0);
    ``geometry``: one network from ``key``."""
    if config.setting == "geometry":
        return runner.study.init(config, key, model(config), _input_spec(config))

    def draw(i):
        return runner.study.init(config, jax.random.fold_in(key, i), model(config), _input_spec(config))

    pair = jax.lax.map(draw, jnp.arange(2))
    return PairState(pair, pair.params)


def _geometry_alignment(net, params, t: Task) -> dict:
    h = hidden_representations(net, params, t.centers)[0]
    return {"input_alignment": analysis.linear_cka(h, t.centers),
            "label_alignment": analysis.linear_cka(h, jax.nn.one_hot(t.labels, 2))}


def segment(state, config: Config, arrays):
    """``segment_steps`` steps: both networks of a pair (metrics averaged), or the
    geometry network on its task (metrics: train loss and the two alignments)."""
    net = model(config)
    if config.setting == "geometry":
        t = task(config)
        state, metrics = train.supervised_segment(
            state, net, train.softmax_cross_entropy, config.build_optimizer(), t.x, t.y,
            batch_size=config.batch_size, num_steps=config.segment_steps, data_seed=config.data_seed)
        return state, {**metrics, **_geometry_alignment(net, state.params, t)}

    def one(ts):
        return runner.study.segment(ts, config, arrays, net,
                                    evaluate=lambda s, c, a: runner.study.classifier_metrics(net, s.params, a))

    # lax.map, not vmap, over the two networks: a vmapped convolution becomes a grouped one, which XLA
    # runs far slower on CPU
    pair, metrics = jax.lax.map(one, state.train_state)
    return PairState(pair, state.initial), {k: jnp.mean(v) for k, v in metrics.items()}


# -- evaluate --------------------------------------------------------------------------------------------------

def cka_matrix(reps_a, reps_b, *, debiased: bool = False):
    """``M[i, j] = linear CKA(reps_a[i], reps_b[j])`` of two lists of ``(n, p_i)`` representations."""
    return jnp.stack([jnp.stack([analysis.linear_cka(x, y, debiased=debiased) for y in reps_b]) for x in reps_a])


def counterpart_hits(matrix):
    """``(2L,)`` booleans: for each layer of A (rows) and of B (columns), whether the most similar layer of
    the other network is its counterpart (Kornblith et al. 2019, §6.1)."""
    idx = jnp.arange(matrix.shape[0])
    return jnp.concatenate([jnp.argmax(matrix, axis=1) == idx, jnp.argmax(matrix, axis=0) == idx])


def subset_cka(reps_a, reps_b, n: int, *, debiased: bool):
    """Mean over layers ``l`` and over the ``⌊N/n⌋`` disjoint row blocks of ``CKA(a_l[block], b_l[block])``."""
    values = []
    for x, y in zip(reps_a, reps_b):
        blocks = x.shape[0] // n
        xs = x[:blocks * n].reshape(blocks, n, -1)
        ys = y[:blocks * n].reshape(blocks, n, -1)
        values.append(jnp.mean(jax.vmap(lambda u, v: analysis.linear_cka(u, v, debiased=debiased))(xs, ys)))
    return jnp.mean(jnp.stack(values))


def _unstack(tree):
    """The two networks of a stacked pair: ``(tree[0], tree[1])`` on every leaf."""
    return tuple(jax.tree.map(lambda leaf, i=i: leaf[i], tree) for i in (0, 1))


def _random_pair_metrics(net, initial, x, sample_sizes) -> dict:
    reps_a, reps_b = (hidden_representations(net, p, x) for p in _unstack(initial))
    out = {}
    for kind, debiased in (("plain", False), ("debiased", True)):
        for n in sample_sizes:
            out[f"random_{kind}_n{n}"] = subset_cka(reps_a, reps_b, n, debiased=debiased)
        out[f"random_{kind}_full"] = subset_cka(reps_a, reps_b, x.shape[0], debiased=debiased)
    return out


def evaluate(state, config: Config, arrays) -> dict:
    """``geometry``: final alignments and training accuracy. ``seeds``: the layer × layer CKA matrix of
    the trained pair on the test split (plain; its diagonal also debiased), the counterpart accuracy,
    test accuracies, and the random-pair CKA against the sample size (module docstring)."""
    net = model(config)
    if config.setting == "geometry":
        t = task(config)
        accuracy = train.accuracy(net.apply(state.params, t.x), t.y)
        return {**_geometry_alignment(net, state.params, t), "train_accuracy": accuracy}
    params_a, params_b = _unstack(state.train_state.params)
    reps_a, reps_b = (hidden_representations(net, p, arrays.x_test) for p in (params_a, params_b))
    matrix = cka_matrix(reps_a, reps_b)
    out = {f"cka_{i}_{j}": matrix[i, j] for i in range(len(reps_a)) for j in range(len(reps_b))}
    debiased_diag = jnp.stack([analysis.linear_cka(x, y, debiased=True) for x, y in zip(reps_a, reps_b)])
    out.update({f"cka_debiased_{i}": debiased_diag[i] for i in range(len(reps_a))})
    out["counterpart_accuracy"] = jnp.mean(counterpart_hits(matrix))
    for name, p in (("test_accuracy", params_a), ("partner_test_accuracy", params_b)):
        out[name] = train.accuracy(net.apply(p, arrays.x_test), arrays.y_test)
    out.update(_random_pair_metrics(net, state.initial, arrays.x_test, config.sample_sizes))
    return out


# -- results ---------------------------------------------------------------------------------------------------

def _seed_runs(results):
    runs = results.finished("setting", "counterpart_accuracy").runs
    return runs[runs["setting"] == "seeds"]


def _geometry_runs(results):
    runs = results.finished("setting", "activation", "input_alignment", "label_alignment", "train_accuracy").runs
    return runs[runs["setting"] == "geometry"]


def _depth(runs) -> int:
    return int(np.sqrt(sum(1 for c in runs.columns if c.startswith("cka_") and c[4].isdigit()
                           and runs[c].notna().any())))


def mean_cka_matrix(results) -> np.ndarray:
    """The layer × layer linear CKA matrix of the trained pairs, mean over pairs: ``(L, L)``."""
    runs = _seed_runs(results)
    depth = _depth(runs)
    return np.array([[runs[f"cka_{i}_{j}"].mean() for j in range(depth)] for i in range(depth)])


def _sample_sizes(runs) -> list[int]:
    return sorted(int(c[len("random_plain_n"):]) for c in runs.columns
                  if c.startswith("random_plain_n") and runs[c].notna().any())


def geometry_pairs(results):
    """One row per seed of the geometry setting: tanh and ReLU alignments side by side (seeds that have
    both activations finished)."""
    runs = _geometry_runs(results)
    wide = runs.pivot_table(index="seed", columns="activation", values=["input_alignment", "label_alignment"])
    wide.columns = [f"{metric}_{act}" for metric, act in wide.columns]
    return wide.dropna().reset_index()


def _row(setting, quantity, values) -> dict:
    values = np.asarray(values, float)
    return {"setting": setting, "quantity": quantity, "mean": float(np.mean(values)) if len(values) else float("nan"),
            "std": float(np.std(values)) if len(values) else float("nan"), "runs": len(values)}


def summarize(results) -> list[dict]:
    """Rows ``(setting, quantity, mean, std over runs, runs)``: the counterpart accuracy, mean diagonal
    and off-diagonal CKA and test accuracy of the trained pairs; the random pair's plain and debiased CKA
    per sample size; each activation's input and label alignment on the geometry task."""
    rows = []
    runs = _seed_runs(results)
    if len(runs):
        depth = _depth(runs)
        diag = runs[[f"cka_{i}_{i}" for i in range(depth)]].mean(axis=1)
        off = runs[[f"cka_{i}_{j}" for i in range(depth) for j in range(depth) if i != j]].mean(axis=1)
        debiased = runs[[f"cka_debiased_{i}" for i in range(depth)]].mean(axis=1)
        rows += [_row("seeds", "counterpart accuracy", runs["counterpart_accuracy"]),
                 _row("seeds", "CKA, corresponding layers", diag),
                 _row("seeds", "CKA, corresponding layers (debiased)", debiased),
                 _row("seeds", "CKA, other layers", off),
                 _row("seeds", "test accuracy", np.concatenate([runs["test_accuracy"], runs["partner_test_accuracy"]]))]
        for n in [*_sample_sizes(runs), "full"]:
            for kind in ("plain", "debiased"):
                rows.append(_row("random", f"{kind} CKA, n = {n}", runs[f"random_{kind}_n{n}" if n != "full"
                                                                        else f"random_{kind}_full"]))
    geo = _geometry_runs(results)
    for act, part in geo.groupby("activation"):
        rows += [_row("geometry", f"{act}: input alignment", part["input_alignment"]),
                 _row("geometry", f"{act}: label alignment", part["label_alignment"]),
                 _row("geometry", f"{act}: train accuracy", part["train_accuracy"])]
    return rows


def _random_bias(runs):
    """Per run: (plain CKA at the smallest n − plain on all rows, |debiased at the smallest n − debiased
    on all rows|)."""
    n = _sample_sizes(runs)[0]
    plain = runs[f"random_plain_n{n}"] - runs["random_plain_full"]
    debiased = (runs[f"random_debiased_n{n}"] - runs["random_debiased_full"]).abs()
    return n, plain.to_numpy(), debiased.to_numpy()


def _check_random_bias(runs) -> None:
    n, plain, debiased = _random_bias(runs)
    assert np.all(np.isfinite(plain)) and np.all(np.isfinite(debiased)), "non-finite random-pair CKA"
    assert np.all(plain > 0.02), f"plain CKA at n = {n} is not above its full-data value in every pair: {plain}"
    assert np.all(debiased < 0.5 * plain), \
        f"debiased CKA at n = {n} moved as much as plain CKA: |Δ| {debiased} vs plain bias {plain}"


def _check_geometry(results, min_seeds: int) -> None:
    pairs = geometry_pairs(results)
    assert len(pairs) >= min_seeds, f"{len(pairs)} seeds with both tanh and relu finished, need {min_seeds}"
    for _, r in pairs.iterrows():
        where = f"seed {int(r['seed'])}"
        assert r["label_alignment_tanh"] > r["label_alignment_relu"], \
            f"{where}: label alignment tanh {r['label_alignment_tanh']:.3f} <= relu {r['label_alignment_relu']:.3f}"
        assert r["input_alignment_relu"] > r["input_alignment_tanh"], \
            f"{where}: input alignment relu {r['input_alignment_relu']:.3f} <= tanh {r['input_alignment_tanh']:.3f}"


def check(results) -> None:
    """The claims, on the paper variant: (Kornblith et al. 2019, §6.1) over ≥ 3 trained pairs, the most
    similar layer by linear CKA is the counterpart in ≥ 90% of the cases (both directions pooled);
    (bias) for every random pair, plain CKA at the smallest sample size exceeds its full-data value by
    > 0.02 while debiased CKA moves by less than half as much; (Alleman et al. 2024) in every one of
    ≥ 3 seeds, the tanh network's hidden layer is more aligned with the label kernel than the ReLU
    network's, and the ReLU network's more with the input kernel."""
    runs = _seed_runs(results)
    assert len(runs) >= 3, f"{len(runs)} finished pairs, need >= 3"
    accuracy = float(runs["counterpart_accuracy"].mean())
    assert accuracy >= 0.9, f"counterpart accuracy {accuracy:.3f} < 0.9"
    _check_random_bias(runs)
    _check_geometry(results, 3)


def smoke_check(results) -> None:
    """At toy scale: finite CKA in [0, 1]; corresponding layers more similar than the mean of the others;
    plain CKA of the random pair biased upward at the smallest n and the debiased one less so (a property
    of the estimators, visible without training); tanh's label alignment above ReLU's in every seed."""
    runs = _seed_runs(results)
    assert len(runs), "no finished pairs"
    matrix = mean_cka_matrix(results)
    assert np.all(np.isfinite(matrix)) and matrix.min() >= -1e-6 and matrix.max() <= 1 + 1e-6, f"CKA matrix {matrix}"
    off = (matrix.sum() - np.trace(matrix)) / (matrix.size - len(matrix))
    assert np.mean(np.diag(matrix)) > off, f"diagonal CKA {np.diag(matrix)} not above the off-diagonal mean {off:.3f}"
    _check_random_bias(runs)
    pairs = geometry_pairs(results)
    assert len(pairs), "no seed with both activations finished"
    assert np.all(pairs["label_alignment_tanh"] > pairs["label_alignment_relu"]), pairs.to_string()


def plot(results):
    """(a) the layer × layer CKA heat map of the trained pairs (mean over pairs); (b) random pairs: plain
    and debiased CKA against the sample size, with the full-data values; (c) the geometry task: input and
    label alignment of the hidden layer over training, tanh vs ReLU (mean ± std over seeds)."""
    from matplotlib.figure import Figure  # object API: no pyplot global state

    fig = Figure(figsize=(15, 4.3))
    ax_map, ax_bias, ax_geo = fig.subplots(1, 3)
    runs = _seed_runs(results)
    if len(runs):
        matrix = mean_cka_matrix(results)
        image = ax_map.imshow(matrix, vmin=0, vmax=1, cmap="magma", origin="lower")
        fig.colorbar(image, ax=ax_map, fraction=0.046)
        ticks = range(len(matrix))
        ax_map.set(xticks=ticks, yticks=ticks, xticklabels=[str(i + 1) for i in ticks],
                   yticklabels=[str(i + 1) for i in ticks], xlabel="hidden layer of network B",
                   ylabel="hidden layer of network A",
                   title=f"Linear CKA, two seeds ({len(runs)} pairs)\ncounterpart accuracy "
                         f"{runs['counterpart_accuracy'].mean():.0%}")
        sizes = _sample_sizes(runs)
        for kind, style in (("plain", "o-"), ("debiased", "s-")):
            values = np.array([[r[f"random_{kind}_n{n}"] for n in sizes] for _, r in runs.iterrows()])
            line = ax_bias.errorbar(sizes, values.mean(0), yerr=values.std(0), fmt=style, capsize=3,
                                    label=f"{kind} CKA")
            ax_bias.axhline(runs[f"random_{kind}_full"].mean(), ls=":", color=line[0].get_color(),
                            label=f"{kind}, all {len(runs) and 'N'} rows")
        ax_bias.set(xscale="log", xlabel="examples n", ylabel="linear CKA, corresponding layers (mean)",
                    title="Two random (untrained) networks")
        legend(ax_bias, fontsize=8)
    curves = results.finished("setting", "activation", "input_alignment", "label_alignment").curves
    if curves is not None:
        part = curves[curves["setting"] == "geometry"] if "setting" in curves else curves.iloc[:0]
        for act, frame in part.groupby("activation"):
            stats = frame.groupby("step")[["input_alignment", "label_alignment"]].agg(["mean", "std"])
            for metric, style in (("label_alignment", "-"), ("input_alignment", "--")):
                ax_geo.errorbar(stats.index, stats[metric]["mean"], yerr=stats[metric]["std"].fillna(0), fmt=style,
                                capsize=2, label=f"{act}: {metric.replace('_', ' ')}")
        ax_geo.set(xlabel="step", ylabel="CKA of the hidden layer", ylim=(0, 1),
                   title="Unstructured inputs, random dichotomy")
        legend(ax_geo, fontsize=8)
    fig.tight_layout()
    return fig
