"""Neural tangent and NNGP kernels: empirical (finite width), Monte-Carlo and infinite-width, and
the predictions they make.

* :func:`empirical` — the finite-width NTK/NNGP of any ``apply(params, x)``, by Jacobian
  contraction, NTK-vector products or structured derivatives (``method="auto"`` picks).
* :func:`monte_carlo` — empirical kernels averaged over initialisations, for any model.
* :func:`linearize` — the network's first-order Taylor expansion in its parameters;
  :func:`relative_weight_change`, :func:`kernel_distance`, :func:`kernel_target_alignment` —
  how far training leaves the linear regime.
* :func:`analytic` — the exact infinite-width NNGP and NTK of a :mod:`jaxlearn.nn` model or of a
  flax module built from layers with closed forms (:func:`flax_layer` reads its jaxpr). Both
  ``analytic`` and ``empirical`` take ``devices=`` to spread their row blocks over local devices
  (:mod:`jaxlearn.kernels.devices`).
* :func:`gradient_descent_mse`, :func:`gp_inference`, :func:`gradient_descent_mse_ensemble` — the
  closed-form outputs of linearized (infinitely wide) networks trained by gradient descent on MSE,
  and the corresponding GP posteriors.
* :func:`fixed_point`, :func:`phase_diagram`, :func:`plot_phase_diagram` — the order–chaos phase
  diagram of deep networks at initialisation (Poole et al. 2016; Schoenholz et al. 2017).

The per-layer kernel maps live beside each layer in :mod:`jaxlearn.nn` (``nn.Kernel``,
``nn.input_kernel``, ``nn.dual``).
"""

from jaxlearn.kernels.analytic import KINDS, analytic
from jaxlearn.kernels.empirical import METHODS, choose_method, empirical
from jaxlearn.kernels.flax_kernel import flax_layer
from jaxlearn.kernels.linearize import kernel_distance, kernel_target_alignment, linearize, relative_weight_change
from jaxlearn.kernels.monte_carlo import monte_carlo
from jaxlearn.kernels.phase import PhasePoint, fixed_point, phase_diagram, plot_phase_diagram
from jaxlearn.kernels.predict import Gaussian, gp_inference, gradient_descent_mse, gradient_descent_mse_ensemble

__all__ = ["Gaussian", "KINDS", "METHODS", "PhasePoint", "analytic", "choose_method", "empirical", "fixed_point",
           "flax_layer", "gp_inference", "gradient_descent_mse", "gradient_descent_mse_ensemble", "kernel_distance",
           "kernel_target_alignment", "linearize", "monte_carlo", "phase_diagram", "plot_phase_diagram",
           "relative_weight_change"]
