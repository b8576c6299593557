"""jaxlearn.rules — custom gradient rules and alternative learning rules.

* layer rules (change a layer's backward pass; train with ``backprop``): straight-through
  estimators (:mod:`~jaxlearn.rules.ste`), binary-weight layers with their latents' clipping
  (:func:`BinaryDense`, :func:`clip_latents`, :mod:`~jaxlearn.rules.binary`), few-bit backward of activations
  (:mod:`~jaxlearn.rules.fewbit`), feedback alignment and sign symmetry
  (:func:`FADense`, :mod:`~jaxlearn.rules.feedback`);
* gradient estimators (the ``grad_estimator`` of ``train.make_step``, by name with
  :func:`estimator`): direct feedback alignment (:func:`dfa`), forward gradients
  (:func:`forward_gradient`, :func:`activity_forward_gradient`, :mod:`~jaxlearn.rules.perturbation`); the network-level
  ones need a :func:`block_serial` model (:mod:`~jaxlearn.rules.blocks`);
* block-local and energy-based rules (gradient estimators on models that declare their blocks):
  local losses through auxiliary heads (:func:`local_losses`, :func:`local_serial`),
  forward-forward (:func:`forward_forward`, :func:`ff_mlp`, :func:`forward_forward_loss`),
  synthetic gradients (:func:`synthetic_gradients`, :func:`synthetic_serial`), equilibrium
  propagation (:func:`equilibrium_propagation` on an :func:`eqprop_network`,
  :mod:`~jaxlearn.rules.equilibrium`);
* sharpness-aware minimization: SAM and ASAM as gradient estimators wrapping any base estimator
  (:func:`sam`, :func:`sam_perturbation`, :mod:`~jaxlearn.rules.sharpness_aware`; also
  ``jaxlearn.landscape.sam``);
* continual learning: elastic weight consolidation (:mod:`~jaxlearn.rules.continual`: :func:`ewc`,
  :func:`fisher_diagonal`, :func:`ewc_penalty`);
* gradient transforms (optax): :mod:`~jaxlearn.rules.noise`;
* forward mode: ``custom_vjp`` rules have no ``jax.jvp``; :func:`forward_mode_safe` names the rules
  that block it.
"""

from jaxlearn.rules import (
    binary,
    blocks,
    continual,
    equilibrium,
    feedback,
    fewbit,
    ff,
    forward_mode,
    local,
    noise,
    perturbation,
    registry,
    sharpness_aware,
    ste,
    synthetic,
)
from jaxlearn.rules.binary import *  # noqa: F401,F403 (re-exports binary.__all__)
from jaxlearn.rules.blocks import BlockRequest, block_mlp, block_serial
from jaxlearn.rules.continual import FISHER_KINDS, FISHER_LOSSES, ewc, ewc_combine, ewc_penalty, fisher_diagonal
from jaxlearn.rules.equilibrium import (
    EQPROP_ACTIVATIONS,
    EquilibriumRequest,
    eqprop_network,
    equilibrium_propagation,
    hopfield_energy,
)
from jaxlearn.rules.feedback import FEEDBACKS, FADense, dfa
from jaxlearn.rules.fewbit import *  # noqa: F401,F403 (re-exports fewbit.__all__)
from jaxlearn.rules.ff import NEGATIVES, FFRequest, ff_mlp, forward_forward, forward_forward_loss
from jaxlearn.rules.forward_mode import ForwardModeReport, forward_mode_safe, require_forward_mode
from jaxlearn.rules.local import LocalRequest, local_losses, local_mlp, local_serial
from jaxlearn.rules.noise import *  # noqa: F401,F403 (re-exports noise.__all__)
from jaxlearn.rules.perturbation import (
    DISTRIBUTIONS,
    activity_forward_gradient,
    forward_gradient,
    forward_gradient_from_tangents,
    sample_tangents,
)
from jaxlearn.rules.registry import ESTIMATORS, estimator
from jaxlearn.rules.sharpness_aware import sam, sam_perturbation
from jaxlearn.rules.ste import *  # noqa: F401,F403 (re-exports ste.__all__)
from jaxlearn.rules.synthetic import PREDICTORS, TARGETS, synthetic_gradients, synthetic_serial

__all__ = [
    "BlockRequest", "DISTRIBUTIONS", "EQPROP_ACTIVATIONS", "ESTIMATORS", "EquilibriumRequest", "FADense",
    "FEEDBACKS", "FFRequest", "FISHER_KINDS", "FISHER_LOSSES", "ForwardModeReport", "LocalRequest", "NEGATIVES",
    "PREDICTORS", "TARGETS", "activity_forward_gradient", "binary", "block_mlp", "block_serial", "blocks",
    "continual", "dfa",
    "eqprop_network", "equilibrium", "equilibrium_propagation", "estimator", "ewc", "ewc_combine", "ewc_penalty",
    "feedback", "fewbit", "ff", "ff_mlp", "fisher_diagonal", "forward_forward", "forward_forward_loss",
    "forward_gradient", "forward_gradient_from_tangents", "forward_mode", "forward_mode_safe", "hopfield_energy",
    "local", "local_losses", "local_mlp", "local_serial", "noise", "perturbation", "registry",
    "require_forward_mode", "sam", "sam_perturbation", "sample_tangents", "sharpness_aware", "ste", "synthetic",
    "synthetic_gradients", "synthetic_serial",
]
# the layer rules' own lists: ste, binary, fewbit and noise export many small names
__all__ += binary.__all__
__all__ += fewbit.__all__
__all__ += noise.__all__
__all__ += ste.__all__
