"""jaxlearn against neural-tangents 0.6.5 on the kernel cases of the performance issue, in one run.

``python -m benchmarks.compare_nt`` (or ``make bench`` with ``NT_PYTHON`` set) needs a second Python
that has neural-tangents, given as ``NT_PYTHON=/path/to/python``. The recipe (neural-tangents no
longer imports on current JAX; each pin is needed)::

    python3.11 -m venv /tmp/nt-venv
    /tmp/nt-venv/bin/pip install neural-tangents==0.6.5 jax==0.4.23 jaxlib==0.4.23 tensorflow==2.15.1 \\
        tf2jax==0.3.5 "numpy<2" "scipy<1.13"
    NT_PYTHON=/tmp/nt-venv/bin/python python -m benchmarks.compare_nt

Protocol: every case is timed in a fresh process of its library (neural-tangents on its own JAX
0.4.23, jaxlearn on the current JAX: different XLA versions), the two libraries one after the
other, interleaved ``ROUNDS`` times; in each process the best of 7 timed calls after a warm-up
call, default thread settings, float32, cross kernels (x1 ≠ x2); neural-tangents' empirical kernels
with ``vmap_axes=0`` (its fast path for networks whose examples are independent). The table keeps each side's best
over the rounds. This file runs under both interpreters: the neural-tangents side imports nothing
of jaxlearn.

Cases and goals (jaxlearn's time over neural-tangents' best method):

* empirical NTK of a CNN, Conv(32, 3×3, SAME)-ReLU-Conv(32, 3×3, SAME)-ReLU-GlobalAvgPool-Dense(10),
  NTK parameterization, W_std 1.5, b_std 0.05, 64 × 64 pairs of 16×16×3 images, outputs traced
  (``trace_axes=(-1,)``): ≤ 0.7;
* empirical NTK of the MLP 64-512-512-512-10 (same parameterization), 128 × 128, outputs traced:
  ≤ 0.55;
* analytic NNGP and NTK of the depth-3 ReLU MLP (3 × Dense(512) + ReLU, Dense(1)), 2000 × 2000,
  d = 64: ≤ 0.25.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROUNDS, REPEATS = 2, 7
W_STD, B_STD = 1.5, 0.05
CASES = {  # name: goal (jaxlearn / neural-tangents' best)
    "cnn_empirical": 0.7,
    "mlp_empirical": 0.55,
    "mlp_analytic": 0.25,
}
NT_METHODS = {"cnn_empirical": ("structured", "jacobian"), "mlp_empirical": ("structured",),
              "mlp_analytic": ("analytic",)}


def _inputs(case):
    import jax

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    if case == "cnn_empirical":
        shape = (64, 16, 16, 3)
    elif case == "mlp_empirical":
        shape = (128, 64)
    else:
        shape = (2000, 64)
    return jax.random.normal(k1, shape), jax.random.normal(k2, shape)


def _best(fn) -> float:
    from benchmarks.harness import best_time  # jax and the standard library only: both sides import it

    return best_time(fn, repeats=REPEATS)


def _time_neural_tangents(case: str) -> dict[str, float]:
    """Runs under NT_PYTHON: neural-tangents 0.6.5's stax and kernel functions."""
    import jax
    import neural_tangents as nt
    from neural_tangents import stax

    x1, x2 = _inputs(case)
    if case == "cnn_empirical":
        layers = [stax.Conv(32, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), stax.Relu(),
                  stax.Conv(32, (3, 3), padding="SAME", W_std=W_STD, b_std=B_STD), stax.Relu(),
                  stax.GlobalAvgPool(), stax.Dense(10, W_std=W_STD, b_std=B_STD)]
    else:
        width_out = 10 if case == "mlp_empirical" else 1
        layers = []
        for _ in range(3):
            layers += [stax.Dense(512, W_std=W_STD, b_std=B_STD), stax.Relu()]
        layers.append(stax.Dense(width_out, W_std=W_STD, b_std=B_STD))
    init_fn, apply_fn, kernel_fn = stax.serial(*layers)
    out = {}
    if case == "mlp_analytic":
        fn = jax.jit(lambda a, b: kernel_fn(a, b, ("nngp", "ntk")))
        out["analytic"] = _best(lambda: fn(x1, x2))
        return out
    _, params = init_fn(jax.random.PRNGKey(1), x1.shape)
    impls = {"structured": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
             "jacobian": nt.NtkImplementation.JACOBIAN_CONTRACTION}
    for method in NT_METHODS[case]:
        # vmap_axes=0: the batch axis is independent, neural-tangents' fast setting (without it, 64 × 64
        # CNN pairs take seconds)
        ntk = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0, implementation=impls[method]))
        out[method] = _best(lambda: ntk(x1, x2, params))
    return out


def _time_jaxlearn(case: str) -> dict[str, float]:
    import jax

    from jaxlearn import kernels, nn

    x1, x2 = _inputs(case)
    p = dict(W_std=W_STD, b_std=B_STD, parameterization="ntk")
    if case == "cnn_empirical":
        model = nn.serial(nn.Conv(32, (3, 3), padding="SAME", **p), nn.Relu(), nn.Conv(32, (3, 3), padding="SAME", **p),
                          nn.Relu(), nn.GlobalAvgPool(), nn.Dense(10, **p))
    else:
        layers = []
        for _ in range(3):
            layers += [nn.Dense(512, **p), nn.Relu()]
        model = nn.serial(*layers, nn.Dense(10 if case == "mlp_empirical" else 1, **p))
    if case == "mlp_analytic":
        fn = jax.jit(lambda a, b: kernels.analytic(model, a, b, get=("nngp", "ntk")))
        return {"analytic": _best(lambda: fn(x1, x2))}
    params, _ = model.init(jax.random.PRNGKey(1), x1)
    out = {}
    for method in ("auto", "structured", "jacobian"):
        fn = jax.jit(lambda q, a, b, m=method: kernels.empirical(model.apply, q, a, b, method=m, trace_axes=(-1,)))
        out[method] = _best(lambda: fn(params, x1, x2))
    return out


def _side(python: str, library: str, case: str) -> dict[str, float]:
    """One case timed by ``library`` ("nt" or "jaxlearn") in a fresh process of ``python``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([python, "-m", "benchmarks.compare_nt", "--side", library, case], cwd=root, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(nt_python: str, rounds: int = ROUNDS) -> dict:
    """Both sides of every case, interleaved ``rounds`` times; the best of each method over rounds."""
    best = {case: {"jaxlearn": {}, "neural-tangents": {}} for case in CASES}
    for _ in range(rounds):
        for case in CASES:
            for library, python, label in (("nt", nt_python, "neural-tangents"), ("jaxlearn", sys.executable,
                                                                                   "jaxlearn")):
                for method, seconds in _side(python, library, case).items():
                    previous = best[case][label].get(method, float("inf"))
                    best[case][label][method] = min(previous, seconds)
    return best


def compare_nt() -> dict | None:
    """The benchmark ``make bench`` runs when ``NT_PYTHON`` is set (skipped, ``None``, otherwise)."""
    from benchmarks.harness import check, report

    nt_python = os.environ.get("NT_PYTHON")
    if not nt_python:
        print("compare_nt: NT_PYTHON not set; skipped (see benchmarks/compare_nt.py for the environment)")
        return None
    best = compare(nt_python)
    cases, extra = {}, {"ratios": {}}
    for case, goal in CASES.items():
        ours = best[case]["jaxlearn"]
        theirs = best[case]["neural-tangents"]
        ours_main = ours.get("auto", ours.get("analytic"))
        theirs_best = min(theirs.values())
        ratio = ours_main / theirs_best
        extra["ratios"][case] = {"ratio": ratio, "goal": goal, "jaxlearn": ours, "neural-tangents": theirs}
        for method, seconds in theirs.items():
            cases[f"{case} neural-tangents {method}"] = seconds
        for method, seconds in ours.items():
            cases[f"{case} jaxlearn {method}"] = seconds
        check(extra, f"{case}: jaxlearn {ours_main * 1e3:.1f} ms / neural-tangents' best {theirs_best * 1e3:.1f} ms",
              ratio, goal)
    baseline = next(iter(cases))
    return report("compare_nt", cases, baseline=baseline, target={}, extra=extra)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--side"]:
        library, case = sys.argv[2], sys.argv[3]
        timed = _time_neural_tangents(case) if library == "nt" else _time_jaxlearn(case)
        print(json.dumps(timed))
    else:
        compare_nt()
