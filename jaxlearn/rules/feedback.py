"""Feedback alignment, sign symmetry and direct feedback alignment.

Shape convention (that of :func:`jaxlearn.nn.Dense`): ``z = m_W · x W + m_b · b`` on the last axis,
``x: (..., n)``, ``W: (n, out)``, with the parameterization's multipliers ``m_W``, ``m_b``
(``m_W = 1`` under ``standard``). Backprop sends the input cotangent ``∂L/∂x = m_W · g Wᵀ``
(``g = ∂L/∂z``); the rules below replace ``W`` there by a feedback matrix ``B`` *of the same shape
as W* and keep the true parameter gradients ``∂L/∂W = m_W · xᵀ g`` (summed over leading axes),
``∂L/∂b = m_b · Σ g``:

* feedback alignment (Lillicrap et al. 2016, "Random synaptic feedback weights support error
  backpropagation for deep learning", eq. (1): ``δ = B e`` instead of ``Wᵀ e``): ``B`` fixed random,
  drawn like ``W``, kept in the layer's non-trainable ``state``;
* sign symmetry (Liao, Leibo & Poggio 2016, "How important is weight symmetry in
  backpropagation?", §2: ``B = sign(W)``): ``B`` computed from the *current* ``W`` in the backward
  pass; no state. ``sign(W)`` has entries ±1 whatever the scale of ``W``: under ``ntk``
  parameterization (``W ~ N(0, 1)``) it is on the scale of ``W``; under ``standard`` it is
  ``≈ √n / W_std`` times larger, which adaptive optimizers (Adam) absorb;
* direct feedback alignment (Nøkland 2016, "Direct feedback alignment provides learning in deep
  neural networks", eq. (3)): every hidden block of a :func:`~jaxlearn.rules.block_serial` network
  receives the output error through its own fixed matrix — a network-level estimator, :func:`dfa`.

Forward mode: :func:`FADense` is a ``jax.custom_vjp`` rule (named ``feedback_alignment`` or
``sign_symmetry`` in programs), which has no forward-mode derivative: ``jax.jvp`` through it raises
``TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp function``. Find such rules
with :func:`jaxlearn.rules.forward_mode_safe`. ``grad`` (and so ``jvp`` of ``grad``, i.e. Hessian-vector
products) works. :func:`dfa` uses no custom rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlearn._types import Scalar
from jaxlearn.nn.core import Layer, LayerError
from jaxlearn.nn.linear import Dense
from jaxlearn.rules.blocks import routed_value_and_grad
from jaxlearn.train.step import Estimator

__all__ = ["FADense", "FEEDBACKS", "dfa"]

FEEDBACKS = ("random", "sign")


def _rule(dense: Layer, feedback: str):
    """The custom_vjp rule ``(params, x, B) -> z`` of a Dense layer with feedback ``B`` (module docstring)."""

    def forward(params, x):
        return dense.apply_fn(params, (), x, None, False)[0]

    def backward(params, x, B, g):
        # The primal parts of these vjps are dead code that XLA removes: what remains is
        # m_W·xᵀg, m_b·Σg and m_W·g Bᵀ — the three products of backprop, with B for W.
        grads = jax.vjp(lambda p: forward(p, x), params)[1](g)[0]
        dx = jax.vjp(lambda v: forward({**params, "W": B.astype(params["W"].dtype)}, v), x)[1](g)[0]
        return grads, dx

    if feedback == "random":
        @jax.custom_vjp
        def feedback_alignment(params, x, B):
            return forward(params, x)

        def fa_fwd(params, x, B):
            return forward(params, x), (params, x, B)

        def fa_bwd(res, g):
            params, x, B = res
            return (*backward(params, x, B, g), jnp.zeros_like(B))

        feedback_alignment.defvjp(fa_fwd, fa_bwd)
        return feedback_alignment

    @jax.custom_vjp
    def sign_symmetry(params, x):
        return forward(params, x)

    def ss_fwd(params, x):
        return forward(params, x), (params, x)

    def ss_bwd(res, g):
        params, x = res
        return backward(params, x, jnp.sign(params["W"]), g)

    sign_symmetry.defvjp(ss_fwd, ss_bwd)
    return lambda params, x, B: sign_symmetry(params, x)


def FADense(  # noqa: N802 (layer constructors are capitalised, like classes)
    out_dim: int,
    W_std: Scalar = 1.0,
    b_std: Scalar | None = 0.0,
    parameterization: str = "standard",
    role: str | None = None,
    *,
    feedback: str = "random",
) -> Layer:
    """A :func:`jaxlearn.nn.Dense` whose backward pass sends ``∂L/∂x = m_W · g Bᵀ`` instead of
    ``m_W · g Wᵀ`` (module docstring; ``B`` has the shape ``(n, out_dim)`` of ``W``).

    ``feedback="random"`` (Lillicrap et al. 2016): ``state = {"B": B}``, ``B`` drawn exactly as
    ``Dense`` draws ``W`` (same distribution and parameterization) from ``fold_in(key, 1)``, so a
    population vmapped over seeds has one ``B`` per member; it is non-trainable state
    (``TrainState.model_state``), never seen by the optimizer or weight decay, and ``apply`` returns
    it unchanged. ``feedback="sign"`` (Liao et al. 2016): ``B = sign(W)`` at backward time, no state.

    Params, their initialisation (the same key gives the same ``W``, ``b`` as ``Dense``), the
    forward pass and the parameter gradients are ``Dense``'s. With ``B = W`` the gradients are
    exactly backprop's. No infinite-width kernel (the rule changes training, not the function).
    Forward mode: a ``custom_vjp`` rule — ``jax.jvp`` through it raises (module docstring).
    """
    if feedback not in FEEDBACKS:
        raise LayerError(f"FADense: feedback must be one of {list(FEEDBACKS)}, got {feedback!r}")
    dense = Dense(out_dim, W_std, b_std, parameterization, role)
    rule = _rule(dense, feedback)
    name = f"FADense({out_dim}, {feedback})"

    def init_fn(key, spec):
        out_spec, params, _ = dense.init_fn(key, spec)
        if feedback == "sign":
            return out_spec, params, ()
        B = dense.init_fn(jax.random.fold_in(key, 1), spec)[1]["W"]
        return out_spec, params, {"B": B}

    def apply_fn(params, state, x, key, train):
        if feedback == "random" and not (isinstance(state, dict) and "B" in state):
            raise LayerError(f"{name}: state must hold the feedback matrix {{'B': ...}} that init returned, "
                             f"got {state!r}")
        return rule(params, x, state["B"] if feedback == "random" else None), state

    return Layer(init_fn, apply_fn, None, name, dense.lr_fn)


def dfa() -> Estimator:
    """Direct feedback alignment (Nøkland 2016, eq. (3)) as a gradient estimator for
    ``train.make_step(..., grad_estimator=dfa())``; the model must be a
    :func:`jaxlearn.rules.block_serial` network (e.g. :func:`jaxlearn.rules.block_mlp`).

    With ``h_0 = x``, hidden blocks ``h_l = f_l(h_{l-1}; θ_l)`` (``l < L``), output
    ``y = f_L(h_{L-1}; θ_L)`` and output error ``e = ∂L/∂y`` (shape ``y.shape``), the estimate is

        ``Δθ_L = (∂y/∂θ_L)ᵀ e``                  (the output layer: its true gradient),
        ``Δθ_l = (∂h_l/∂θ_l)ᵀ (e B_l)``          (hidden blocks: the error through ``B_l``),

    with ``B_l: (out_dim, width_l)`` the network's fixed feedback matrices (model state, drawn from
    the member's key at init). For a block ``Dense → φ`` this is Nøkland's
    ``δa_l = (e B_l) ⊙ φ'(a_l)``, ``ΔW_l = m_W · h_{l-1}ᵀ δa_l``, ``Δb_l = m_b · Σ δa_l``; the returned
    pseudo-gradient is what the optimizer then descends. The loss and aux are exact; ``key`` is unused.
    """

    def estimator(objective, params, key):
        del key
        return routed_value_and_grad("dfa", objective, params, "dfa")

    return estimator
