"""Default experiment: a population of MLPs on scikit-learn's digits, seeds × learning rates.

Every member (one seed, one learning rate) trains as part of ONE vmapped program: the whole
population is a single ``jit(vmap(...))`` call per segment of ``eval_every`` steps. The study
answers a basic question of the science of training: how does test accuracy after a fixed
budget depend on the learning rate, and how much of the spread is seed noise?

Run with ``make run`` (or ``python -m experiments.population_digits``); it prints a table of test
accuracy per learning rate (mean ± std over seeds) and saves a plot of the learning curves.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn import data, nn, train

VERSION = "1"


@dataclasses.dataclass(frozen=True)
class Config:
    """Static fields shape the program; ``seeds`` × ``learning_rates`` are the population axes."""

    seeds: tuple[int, ...] = (0, 1, 2, 3)
    learning_rates: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    widths: tuple[int, ...] = (128, 128)
    momentum: float = 0.0
    batch_size: int = 64
    num_steps: int = 2000
    eval_every: int = 100


SMOKE = Config(seeds=(0, 1), learning_rates=(0.01, 0.1), widths=(32,), num_steps=200, eval_every=50)


def _model(config: Config):
    return nn.mlp(config.widths, 10, activation="relu", W_std=np.sqrt(2.0))


def _optimizer(config: Config, learning_rate):
    return train.optimizer("sgd", learning_rate=learning_rate, momentum=config.momentum)


def init(config: Config, ds: data.Dataset, seed, learning_rate) -> train.TrainState:
    """One member's initial state (``seed`` and ``learning_rate`` may be traced)."""
    return train.init(_model(config), _optimizer(config, learning_rate), jax.random.key(seed), ds.input_spec)


def segment(state: train.TrainState, config: Config, arrays, learning_rate):
    """Advances one member by ``eval_every`` steps; returns the state and its metrics."""
    model = _model(config)
    x_train, y_train, x_test, y_test = arrays
    step = train.make_step(model.apply_with_state, train.softmax_cross_entropy, _optimizer(config, learning_rate))

    def batch_fn(key, step_index):
        return data.get_batch(key, step_index, x_train, y_train, config.batch_size)

    def evaluate(state):
        logits = model.apply(state.params, x_test)
        return {"test_accuracy": train.accuracy(logits, y_test), "test_loss": train.softmax_cross_entropy(logits, y_test)}

    state, metrics = train.train(state, step, batch_fn, config.eval_every, eval_every=config.eval_every, eval_fn=evaluate)
    return state, {"train_loss": jnp.mean(metrics["train"]["loss"]), **jax.tree.map(lambda a: a[-1], metrics["eval"])}


def run(config: Config, progress: bool = True) -> dict:
    """Trains the whole population; returns per-member hyperparameters and metric curves."""
    from tqdm.auto import tqdm

    ds = data.digits(seed=0)
    arrays = tuple(jnp.asarray(a) for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    hp = train.grid(seed=list(config.seeds), learning_rate=list(config.learning_rates))
    states = jax.jit(jax.vmap(lambda s, lr: init(config, ds, s, lr)))(hp["seed"], hp["learning_rate"])
    advance = jax.jit(jax.vmap(lambda st, lr, arr: segment(st, config, arr, lr), in_axes=(0, 0, None)))
    curves = []
    bar = tqdm(total=config.num_steps, desc=f"{len(hp['seed'])} MLPs as one program", unit="step",
               disable=not progress)
    for _ in range(config.num_steps // config.eval_every):
        states, metrics = advance(states, hp["learning_rate"], arrays)
        curves.append(jax.device_get(metrics))
        bar.update(config.eval_every)
        bar.set_postfix(best_test_acc=f"{float(np.max(curves[-1]['test_accuracy'])):.3f}")
    bar.close()
    steps = np.arange(1, len(curves) + 1) * config.eval_every
    return {
        "seed": np.asarray(hp["seed"]),
        "learning_rate": np.asarray(hp["learning_rate"]),
        "steps": steps,
        **{k: np.stack([c[k] for c in curves], axis=1) for k in curves[0]},  # (members, evals)
    }


def summarize(results: dict) -> list[dict]:
    """Final test accuracy per learning rate: mean and std over seeds."""
    rows = []
    for lr in np.unique(results["learning_rate"]):
        final = results["test_accuracy"][results["learning_rate"] == lr, -1]
        rows.append({"learning_rate": float(lr), "mean": float(final.mean()), "std": float(final.std()), "n": len(final)})
    return rows


def check(results: dict) -> None:
    """The claim: a well-chosen learning rate reaches > 90% test accuracy on digits, and the
    accuracy-vs-learning-rate curve is not flat (the learning rate matters)."""
    rows = summarize(results)
    best = max(r["mean"] for r in rows)
    worst = min(r["mean"] for r in rows)
    assert best > 0.9, f"best mean test accuracy {best:.3f} <= 0.9"
    assert best - worst > 0.02, f"accuracy barely depends on the learning rate ({worst:.3f}..{best:.3f})"


def plot(results: dict):
    """Test accuracy curves, mean ± std over seeds, one line per learning rate."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # object API: no pyplot global state, no display needed

    fig = Figure(figsize=(10, 4))
    ax_curve, ax_final = fig.subplots(1, 2)
    lrs = np.unique(results["learning_rate"])
    colors = colormaps["viridis"](np.linspace(0, 0.9, len(lrs)))
    for lr, color in zip(lrs, colors):
        acc = results["test_accuracy"][results["learning_rate"] == lr]
        mean, std = acc.mean(0), acc.std(0)
        ax_curve.plot(results["steps"], mean, color=color, label=f"lr={lr:g}")
        ax_curve.fill_between(results["steps"], mean - std, mean + std, color=color, alpha=0.2)
    ax_curve.set(xlabel="step", ylabel="test accuracy", title="Learning curves (mean ± std over seeds)", ylim=(0, 1))
    ax_curve.legend(fontsize=8)
    rows = summarize(results)
    ax_final.errorbar([r["learning_rate"] for r in rows], [r["mean"] for r in rows],
                      yerr=[r["std"] for r in rows], marker="o", capsize=3)
    ax_final.set(xscale="log", xlabel="learning rate", ylabel="final test accuracy", title="Final accuracy vs learning rate")
    fig.tight_layout()
    return fig


def _save_figure(fig, path: str) -> None:
    """Atomic write: render to a temporary file beside ``path``, then rename over it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configuration (seconds)")
    parser.add_argument("--out", default="runs/population_digits", help="directory for the plot")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else Config()
    start = time.perf_counter()
    results = run(config)
    elapsed = time.perf_counter() - start
    print(f"\n{len(results['seed'])} members x {config.num_steps} steps in {elapsed:.1f} s "
          f"(one vmapped program on {jax.devices()[0].platform})")
    print(f"{'learning rate':>14} | {'test accuracy (mean ± std over seeds)':>38}")
    for row in summarize(results):
        print(f"{row['learning_rate']:>14g} | {row['mean']:>30.3f} ± {row['std']:.3f}")
    path = os.path.join(args.out, "population_digits.png")
    _save_figure(plot(results), path)
    print(f"plot saved to {path}")
    check(results)


if __name__ == "__main__":
    main()
