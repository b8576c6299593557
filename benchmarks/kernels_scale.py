"""Kernels at scale (issue: Performance II, item 3).

``kernels_at_scale`` — two kernels far larger than the other benchmarks', each computed in a fresh
subprocess so that its memory is its own:

* the analytic NNGP and NTK of the depth-3 ReLU MLP of ``kernels_mlp`` (d = 64, float32) for
  N = 20,000 × 20,000 (400 M entries per kernel: 3.2 GB of output for the two), with the default
  ``batch_size="auto"`` row blocks;
* the empirical NTK (``method="auto"``, outputs traced) of the MLP 64-512-512-512-10 of
  ``kernels_empirical`` for N = 4,096 × 4,096, in ``batch_size`` blocks of 512 × 512.

Targets, each case against its smaller twin timed the same way in the same run (2,000 points for
the analytic kernel, 1,024 for the empirical one): the call completes; the rise of the process's
peak resident memory over its resident memory just before the call (compilation done beforehand)
is at most 2.5× the output arrays; the time per kernel entry is at most 1.5× the smaller case's.
The RAM the large analytic case needs: its 3.2 GB of output plus at most 1.5× that again.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time

_MEMORY_FACTOR, _TIME_FACTOR = 2.5, 1.5
_CASES = {  # name: (kind, N, the smaller twin's N)
    "analytic NNGP+NTK, depth-3 ReLU MLP": ("analytic", 20_000, 2_000),
    "empirical NTK, MLP 64-512-512-512-10, blocks of 512": ("empirical", 4_096, 1_024),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _measure(kind: str, n: int) -> dict:
    """One call at size ``n`` in this process: compiled first, then timed once with its memory
    (the sampled peak of the resident set, and the process's peak where the call raised it)."""
    import jax

    from benchmarks.kernels_analytic import _mlp
    from benchmarks.kernels_empirical import _mlp as _empirical_mlp
    from jaxlearn import kernels

    x1 = jax.random.normal(jax.random.key(0), (n, 64))
    x2 = jax.random.normal(jax.random.key(1), (n, 64))
    if kind == "analytic":
        model = _mlp()
        fn = jax.jit(lambda a, b: kernels.analytic(model, a, b, get=("nngp", "ntk")))
        args = (x1, x2)
    else:
        model = _empirical_mlp()
        params, _ = model.init(jax.random.key(2), x1[:1])
        fn = jax.jit(lambda p, a, b: kernels.empirical(model.apply, p, a, b, batch_size=512))
        args = (params, x1, x2)
    compiled = fn.lower(*args).compile()
    jax.block_until_ready(args)
    before, peak_before = _rss_bytes(), _peak_bytes()
    sampled, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            sampled.append(_rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak = max(max(sampled), _peak_bytes() if _peak_bytes() > peak_before else 0)
    output = sum(leaf.nbytes for leaf in jax.tree.leaves(out))
    return {"n": n, "seconds": seconds, "ns_per_entry": seconds / n ** 2 * 1e9, "output_bytes": output,
            "rss_before_bytes": before, "peak_rise_bytes": peak - before, "memory_ratio": (peak - before) / output}


def _in_subprocess(kind: str, n: int) -> dict:
    result = subprocess.run([sys.executable, "-m", "benchmarks.kernels_scale", kind, str(n)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def kernels_at_scale() -> dict:
    from benchmarks.harness import check, report

    cases, extra = {}, {"measurements": {}}
    for name, (kind, n, small) in _CASES.items():
        big, twin = _in_subprocess(kind, n), _in_subprocess(kind, small)
        cases[f"{name} {small}x{small}"] = twin["seconds"]
        cases[f"{name} {n}x{n}"] = big["seconds"]
        per_entry = big["ns_per_entry"] / twin["ns_per_entry"]
        extra["measurements"][name] = {"large": big, "small": twin, "per_entry_ratio": per_entry}
        print(f"  {name}: {n}x{n} in {big['seconds']:.2f} s ({big['ns_per_entry']:.2f} ns/entry, "
              f"{per_entry:.2f}x the {small}x{small} case's {twin['ns_per_entry']:.2f}); output "
              f"{big['output_bytes'] / 1e9:.2f} GB, peak rise {big['peak_rise_bytes'] / 1e9:.2f} GB "
              f"= {big['memory_ratio']:.2f}x the output (before the call: {big['rss_before_bytes'] / 1e9:.2f} GB)")
        check(extra, f"{name} {n}x{n}: peak memory rise / output", big["memory_ratio"], _MEMORY_FACTOR)
        check(extra, f"{name} {n}x{n}: time per entry / {small}x{small}'s", per_entry, _TIME_FACTOR)
    first = next(iter(cases))
    return report("kernels_at_scale", cases, baseline=first, target={}, extra=extra)


BENCHMARKS = [kernels_at_scale]

if __name__ == "__main__":  # one measurement, as a JSON line (what kernels_at_scale runs in a subprocess)
    print(json.dumps(_measure(sys.argv[1], int(sys.argv[2]))))
