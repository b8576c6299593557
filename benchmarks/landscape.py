"""Landscape benchmarks (issue: Landscape I).

Fixed model: a 64-128-128-10 tanh MLP (26k parameters) on 1,024 digits, float32, softmax
cross-entropy over the whole batch.

1. ``surface`` — a 41×41 filter-normalized loss surface: ``landscape.surface_2d`` vs the
   straightforward baseline, one jitted ``vmap`` of the loss over all grid points.
   Target: <= 0.8x the baseline's time. For context, ``chunk_size=256`` instead of the
   cache-sized ``"auto"`` chunks (the affine first layer is shared in both).
2. ``curvature`` — one HVP; top-5 eigenvalues by 64-step Lanczos; Hutchinson with 100 probes;
   SLQ with 100 steps; each vs a baseline that calls a jitted HVP from a Python loop and does the
   Lanczos / Hutchinson arithmetic on the host (NumPy). Target: <= 0.8x the baseline's time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from benchmarks.harness import best_time, report
from jaxlearn import data, nn
from jaxlearn import landscape as ls
from jaxlearn.train import softmax_cross_entropy


def _setup():
    ds = data.digits(seed=0)
    x, y = jnp.asarray(ds.x_train[:1024]), jnp.asarray(ds.y_train[:1024])
    model = nn.mlp([128, 128], 10, activation="tanh")
    params, _ = model.init(jax.random.key(0), ds.input_spec)

    def loss_fn(p):
        return softmax_cross_entropy(model.apply(p, x), y)

    return params, loss_fn


def surface() -> dict:
    params, loss_fn = _setup()
    d1 = ls.random_direction(jax.random.key(1), params, normalization="filter")
    d2 = ls.random_direction(jax.random.key(2), params, normalization="filter")
    xs = ys = jnp.linspace(-1.0, 1.0, 41)

    @jax.jit
    def baseline(params, d1, d2):
        gx, gy = jnp.meshgrid(xs, ys, indexing="ij")

        def at(a, b):
            return loss_fn(jax.tree.map(lambda p, u, v: p + a * u + b * v, params, d1, d2))

        return jax.vmap(at)(gx.ravel(), gy.ravel()).reshape(41, 41)

    ours = jax.jit(lambda params, d1, d2: ls.surface_2d(loss_fn, params, d1, d2, xs, ys))
    fixed = jax.jit(lambda params, d1, d2: ls.surface_2d(loss_fn, params, d1, d2, xs, ys, chunk_size=256))
    np.testing.assert_allclose(ours(params, d1, d2), baseline(params, d1, d2), rtol=2e-4, atol=2e-5)
    cases = {"jitted vmap over 41x41 grid points": best_time(lambda: baseline(params, d1, d2)),
             "landscape.surface_2d": best_time(lambda: ours(params, d1, d2)),
             "landscape.surface_2d chunk_size=256": best_time(lambda: fixed(params, d1, d2))}
    return report("landscape_surface", cases, baseline="jitted vmap over 41x41 grid points",
                  target={"landscape.surface_2d": 1 / 0.8})


def _host_lanczos(matvec, v0, m):
    """Lanczos with full reorthogonalization, the arithmetic in NumPy, one jitted HVP per step."""
    q = np.asarray(v0) / np.linalg.norm(v0)
    basis, alphas, betas = [q], [], []
    for j in range(m):
        w = np.asarray(matvec(jnp.asarray(basis[-1])))
        alphas.append(float(q @ w))
        stacked = np.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = np.linalg.norm(w)
        if j == m - 1:
            break
        betas.append(beta)
        q = w / beta
        basis.append(q)
    return np.asarray(alphas), np.asarray(betas)


def curvature() -> dict:
    params, loss_fn = _setup()
    flat, unravel = ravel_pytree(params)
    # params passed as an argument: closed over, XLA would constant-fold the forward pass
    hvp_params = jax.jit(lambda p, f: ravel_pytree(ls.hvp(loss_fn, p, unravel(f)))[0])

    def hvp_flat(f):
        return hvp_params(params, f)

    v0 = jax.random.normal(jax.random.key(3), flat.shape)
    probes = jax.random.rademacher(jax.random.key(4), (100,) + flat.shape, flat.dtype)

    def host_top5():
        alphas, betas = _host_lanczos(hvp_flat, v0, 64)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        return np.linalg.eigvalsh(t)[-5:]

    def host_hutchinson():
        return np.mean([float(np.asarray(z) @ np.asarray(hvp_flat(z))) for z in probes])

    def host_slq():
        alphas, betas = _host_lanczos(hvp_flat, probes[0], 100)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        nodes, vecs = np.linalg.eigh(t)
        return nodes, vecs[0] ** 2

    top5 = jax.jit(lambda p: ls.top_eigenvalues(loss_fn, p, k=5, method="lanczos", num_iters=64))
    trace = jax.jit(lambda p: ls.hessian_trace(loss_fn, p, num_probes=100, key=jax.random.key(4)))
    slq = jax.jit(lambda p: ls.spectral_density(loss_fn, p, num_steps=100, num_probes=1, key=jax.random.key(4)))
    np.testing.assert_allclose(np.sort(np.asarray(top5(params)))[-1], host_top5()[-1], rtol=1e-2)

    cases = {
        "one HVP (jitted)": best_time(lambda: hvp_flat(v0), repeats=10),
        "host loop: top-5 Lanczos 64 steps": best_time(host_top5, repeats=5),
        "top_eigenvalues k=5 lanczos 64": best_time(lambda: top5(params), repeats=5),
        "host loop: Hutchinson 100 probes": best_time(host_hutchinson, repeats=5),
        "hessian_trace 100 probes": best_time(lambda: trace(params), repeats=5),
        "host loop: SLQ 100 steps": best_time(host_slq, repeats=5),
        "spectral_density 100 steps": best_time(lambda: slq(params), repeats=5),
    }
    payloads = {}
    for name, host, ours in [("lanczos_top5", "host loop: top-5 Lanczos 64 steps", "top_eigenvalues k=5 lanczos 64"),
                             ("hutchinson", "host loop: Hutchinson 100 probes", "hessian_trace 100 probes"),
                             ("slq", "host loop: SLQ 100 steps", "spectral_density 100 steps")]:
        payloads[name] = report(f"landscape_{name}", {host: cases[host], ours: cases[ours]}, baseline=host,
                                target={ours: 1 / 0.8})
    print(f"  one HVP: {cases['one HVP (jitted)'] * 1e3:.2f} ms")
    # three payloads, each against its own host-loop baseline (each written to its JSON by report)
    return {"cases": {}, "parts": {f"landscape_{name}": payload for name, payload in payloads.items()}}


BENCHMARKS = [surface, curvature]
