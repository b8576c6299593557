"""jaxlearn.analysis — measurements of trained networks, as pure functions of arrays and params.

* representation similarity (:mod:`~jaxlearn.analysis.similarity`): HSIC and centered kernel
  alignment, linear and RBF, biased and debiased, and the minibatch CKA of Nguyen et al. 2021
  (:func:`linear_cka`, :func:`rbf_cka`, :func:`cka`, :func:`hsic`, :func:`minibatch_cka`);
* effective dimensionality (:mod:`~jaxlearn.analysis.spectra`): the effective rank of Roy &
  Vetterli 2007 and the participation ratio, of representations or of given spectra (kernels);
* pruning (:mod:`~jaxlearn.analysis.pruning`): magnitude masks (global or layer-wise) as pytrees of
  booleans, masked training (:func:`masked` wraps any optax optimizer so pruned weights stay
  exactly zero), iterative magnitude pruning with rewinding (:func:`imp`; the rewind point is a
  runner snapshot, ``runner.load_state(root, run, step=k).params``), random-mask and
  random-reinitialisation controls;
* per-example gradients (:mod:`~jaxlearn.analysis.gradients`, vmapped and chunked) and the
  statistics built on them: norms, the gradient noise scale of McCandlish et al. 2018 (unbiased
  ``|G|²`` and ``tr(Σ)``, from per-example gradients or from two batch sizes), gradient SNR;
* update angles (:mod:`~jaxlearn.analysis.angles`): the angle between a learning rule's update and
  the true gradient (:func:`gradient_angle`, :func:`gradient_cosine`; Lillicrap et al. 2016, Nøkland
  2016), over whole pytrees;
* learning order (:mod:`~jaxlearn.analysis.learning_order`): per-example correctness tracked inside
  the training scan (:func:`correctness_eval_fn` for ``train.train(eval_every=...)``), first-learned
  steps and forgetting events (Toneva et al. 2019), and the rank correlation of per-example
  statistics across runs (:func:`spearman`).

Everything runs under ``jit`` and ``vmap`` (over seeds, layers, masks), is checked against a
brute-force float64 computation, and applies to saved runs through
:func:`jaxlearn.runner.load_networks`.
"""

from jaxlearn.analysis import angles, gradients, learning_order, pruning, similarity, spectra
from jaxlearn.analysis.angles import gradient_angle, gradient_cosine
from jaxlearn.analysis.gradients import (
    GradientSNR,
    NoiseScale,
    gradient_noise_scale,
    gradient_snr,
    model_gradient_noise_scale,
    noise_scale_from_norms,
    per_example_grad_norms,
    per_example_grads,
)
from jaxlearn.analysis.learning_order import (
    average_ranks,
    correctness,
    correctness_eval_fn,
    first_learned_step,
    forgetting_events,
    learning_events,
    never_learned,
    spearman,
    unforgettable,
)
from jaxlearn.analysis.pruning import (
    IMPResult,
    apply_mask,
    density,
    imp,
    magnitude_mask,
    masked,
    random_mask,
    random_reinit,
    sparsity,
)
from jaxlearn.analysis.similarity import cka, hsic, linear_cka, minibatch_cka, rbf_cka
from jaxlearn.analysis.spectra import (
    effective_rank,
    participation_ratio,
    spectrum_effective_rank,
    spectrum_participation_ratio,
)

__all__ = [
    "GradientSNR", "IMPResult", "NoiseScale", "angles", "apply_mask", "average_ranks", "cka", "correctness",
    "correctness_eval_fn", "density", "effective_rank", "first_learned_step", "forgetting_events", "gradient_angle",
    "gradient_cosine", "gradient_noise_scale", "gradient_snr", "gradients", "hsic", "imp", "learning_events",
    "learning_order", "linear_cka", "magnitude_mask", "masked", "minibatch_cka", "model_gradient_noise_scale",
    "never_learned", "noise_scale_from_norms", "participation_ratio", "per_example_grad_norms", "per_example_grads",
    "pruning", "random_mask", "random_reinit", "rbf_cka", "similarity", "sparsity", "spearman", "spectra",
    "spectrum_effective_rank", "spectrum_participation_ratio", "unforgettable",
]
