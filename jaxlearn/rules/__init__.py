"""jaxlearn.rules — custom gradient rules and alternative learning rules.

* layer rules (change a layer's backward pass; train with ``backprop``): straight-through
  estimators (:mod:`~jaxlearn.rules.ste`), few-bit backward of activations
  (:mod:`~jaxlearn.rules.fewbit`), feedback alignment and sign symmetry
  (:func:`FADense`, :mod:`~jaxlearn.rules.feedback`);
* gradient estimators (the ``grad_estimator`` of ``train.make_step``, by name with
  :func:`estimator`): direct feedback alignment (:func:`dfa`), forward gradients
  (:func:`forward_gradient`, :func:`activity_forward_gradient`, :mod:`~jaxlearn.rules.perturbation`); the network-level ones need a
  :func:`block_serial` model (:mod:`~jaxlearn.rules.blocks`);
* gradient transforms (optax): :mod:`~jaxlearn.rules.noise`;
* forward mode: ``custom_vjp`` rules have no ``jax.jvp``; :func:`forward_mode_safe` names the rules
  that block it.
"""

from jaxlearn.rules import blocks, feedback, fewbit, forward_mode, noise, perturbation, registry, ste
from jaxlearn.rules.blocks import BlockRequest, block_mlp, block_serial
from jaxlearn.rules.feedback import FEEDBACKS, FADense, dfa
from jaxlearn.rules.fewbit import *  # noqa: F401,F403 (re-exports fewbit.__all__)
from jaxlearn.rules.perturbation import (
    DISTRIBUTIONS, activity_forward_gradient, forward_gradient, forward_gradient_from_tangents, sample_tangents,
)
from jaxlearn.rules.forward_mode import ForwardModeReport, forward_mode_safe, require_forward_mode
from jaxlearn.rules.noise import *  # noqa: F401,F403 (re-exports noise.__all__)
from jaxlearn.rules.registry import ESTIMATORS, estimator
from jaxlearn.rules.ste import *  # noqa: F401,F403 (re-exports ste.__all__)

__all__ = sorted({
    "BlockRequest", "DISTRIBUTIONS", "ESTIMATORS", "FADense", "FEEDBACKS", "ForwardModeReport",
    "activity_forward_gradient", "block_mlp", "block_serial", "blocks", "dfa", "estimator", "feedback", "fewbit",
    "forward_gradient", "forward_gradient_from_tangents", "forward_mode", "forward_mode_safe", "noise", "perturbation",
    "registry",
    "require_forward_mode", "sample_tangents", "ste",
    *fewbit.__all__, *noise.__all__, *ste.__all__,
})
