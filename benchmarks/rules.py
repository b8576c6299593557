"""Learning-rule benchmarks (issue 9, "Custom gradient rules I").

Fixed model: an MLP 64-256-256-10 (ReLU) on random inputs shaped like digits, batch 128, Adam,
200 steps in one ``lax.scan`` (``jaxlearn.train.train``); every rule trains the same network.

1. ``rules_step_time`` — time per step of feedback alignment (``FADense`` layers), sign symmetry,
   DFA (``rules.dfa`` on ``rules.block_mlp``), the forward gradient (1 tangent), a 2-bit few-bit
   backward of the ReLUs and the block-local and energy-based rules of issue 10 — local losses
   (``rules.local_mlp``-like: a linear head per hidden block), forward-forward (``rules.ff_mlp``, loss
   ``rules.forward_forward_loss``, all 9 wrong labels as negatives: a forward pass over the 10
   label-embedded copies of the batch), synthetic gradients (``rules.synthetic_serial``, linear
   predictors, bootstrapped targets) and equilibrium propagation (``rules.eqprop_network`` with the
   settings of ``experiments/learning_rules.py``: sigmoid, step 0.5, at most 100 relaxation steps,
   tolerance 1e-4; symmetric ±β phases; its cost is set by the relaxation loops, whose length
   depends on the data and weights, so it runs ``EQPROP_NUM_STEPS`` steps per timed call) — against
   plain backprop measured in the same run, on the same widths. Targets: FA and DFA at most 1.3×
   backprop's time per step (speed-up ≥ 1/1.3); the issue-10 rules are reported without targets.
2. ``rules_residual_bytes`` — bytes ``jax.vjp`` keeps for the backward pass of the activation on a
   (128, 256) float32 batch: ReLU vs its 2-bit few-bit backward. Target: ≤ 1/8 of the float32
   residual (1/16 with bit packing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks.harness import check, interleaved_best, print_checks, report
from jaxlearn import nn, rules, train

NUM_STEPS, BATCH, WIDTHS, IN_DIM, OUT_DIM, ROUNDS = 200, 128, (256, 256), 64, 10, 5
EQPROP_NUM_STEPS = 20


def _fa(feedback):
    blocks = [nn.serial(rules.FADense(w, feedback=feedback), nn.Relu()) for w in WIDTHS]
    return rules.block_serial(*blocks, rules.FADense(OUT_DIM, feedback=feedback))


def _few_bit():
    blocks = [nn.serial(nn.Dense(w), rules.FewBit("relu", 2)) for w in WIDTHS]
    return rules.block_serial(*blocks, nn.Dense(OUT_DIM))


def _blocks():
    return [nn.serial(nn.Dense(w), nn.Relu()) for w in WIDTHS] + [nn.Dense(OUT_DIM)]


def _local():
    *blocks, out = _blocks()
    return rules.local_serial(*blocks, out, heads=[nn.Dense(OUT_DIM) for _ in blocks])


def _eqprop():  # the relaxation settings of experiments/learning_rules.py
    return rules.eqprop_network(WIDTHS, OUT_DIM, "sigmoid", step_size=0.5, max_steps=100, tol=1e-4)


def _case(make, rule="backprop", loss=train.softmax_cross_entropy, num_steps=NUM_STEPS, **kwargs):
    """(model factory, estimator name, its kwargs, loss, steps per timed call)."""
    return make, rule, kwargs, loss, num_steps


CASES = {
    "backprop": _case(lambda: rules.block_mlp(WIDTHS, OUT_DIM)),
    "feedback alignment": _case(lambda: _fa("random")),
    "sign symmetry": _case(lambda: _fa("sign")),
    "dfa": _case(lambda: rules.block_mlp(WIDTHS, OUT_DIM), "dfa"),
    "forward gradient (1 tangent)": _case(lambda: rules.block_mlp(WIDTHS, OUT_DIM), "forward_gradient"),
    "few-bit backward (2-bit ReLU)": _case(_few_bit),
    "local losses": _case(_local, "local_losses"),
    "forward-forward": _case(lambda: rules.ff_mlp(WIDTHS, OUT_DIM), "forward_forward", rules.forward_forward_loss),
    "synthetic gradients": _case(lambda: rules.synthetic_serial(*_blocks()), "synthetic_gradients",
                                 gradient_scale=float(BATCH)),
    "equilibrium propagation": _case(_eqprop, "equilibrium_propagation", num_steps=EQPROP_NUM_STEPS),
}


def _runner(model, estimator_name, estimator_kwargs=None, loss=train.softmax_cross_entropy, num_steps=NUM_STEPS):
    """A jitted call training ``model`` for ``num_steps`` steps with ``loss`` and the named estimator."""
    x = jax.random.normal(jax.random.key(1), (2048, IN_DIM))
    y = jax.random.randint(jax.random.key(2), (2048,), 0, OUT_DIM)
    opt = train.optimizer("adam", learning_rate=1e-3)
    step = train.make_step(model.apply_with_state, loss, opt,
                           grad_estimator=rules.estimator(estimator_name, **(estimator_kwargs or {})))
    state = train.init(model, opt, jax.random.key(0), jax.ShapeDtypeStruct((1, IN_DIM), jnp.float32))

    def batch_fn(key, index):
        start = (index * BATCH) % (x.shape[0] - BATCH)
        return jax.lax.dynamic_slice_in_dim(x, start, BATCH), jax.lax.dynamic_slice_in_dim(y, start, BATCH)

    run = jax.jit(lambda s: train.train(s, step, batch_fn, num_steps)[1]["train"]["loss"])
    return lambda: run(state)


def rules_step_time():
    runs = {name: (_runner(make(), rule, kwargs, loss, num_steps), num_steps)
            for name, (make, rule, kwargs, loss, num_steps) in CASES.items()}
    best = interleaved_best({name: run for name, (run, _) in runs.items()}, rounds=ROUNDS, repeats=3)
    cases = {name: best[name] / num_steps for name, (_, num_steps) in runs.items()}
    target = {"feedback alignment": 1 / 1.3, "dfa": 1 / 1.3}
    payload = report("rules_step_time", cases, "backprop", target,
                     extra={"model": f"MLP {IN_DIM}-{'-'.join(map(str, WIDTHS))}-{OUT_DIM}, batch {BATCH}, adam",
                            "unit": "seconds per step"})
    for case, row in payload["cases"].items():
        print(f"  {case:<40s} {1 / row['speedup_vs_baseline']:.2f}x backprop's time per step")
    return payload


def rules_residual_bytes():
    x = jax.random.normal(jax.random.key(0), (BATCH, WIDTHS[0]), jnp.float32)
    full = rules.residual_bytes(jax.nn.relu, x)
    two_bit = rules.residual_bytes(rules.few_bit("relu", 2), x)
    ratio = two_bit / full
    payload = {"benchmark": "rules_residual_bytes", "cases": {}, "float32_bytes": full, "two_bit_bytes": two_bit,
               "residual_ratio": ratio}
    check(payload, "2-bit few-bit ReLU residual / float32's", ratio, 1 / 8, unit="", digits=4)
    print(f"\n== rules_residual_bytes ==\n  ReLU float32 residual {full} B, 2-bit few-bit {two_bit} B "
          f"(1/16 with packing: {'met' if ratio <= 1 / 16 else 'not met'})")
    print_checks(payload)
    return payload


BENCHMARKS = [rules_step_time, rules_residual_bytes]
