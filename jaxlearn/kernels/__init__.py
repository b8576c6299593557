"""Infinite-width kernels (NNGP/NTK) and the predictions they make.

* :func:`analytic` — the exact infinite-width NNGP and NTK of a :mod:`jaxlearn.nn` model.
* :func:`gradient_descent_mse`, :func:`gp_inference`, :func:`gradient_descent_mse_ensemble` — the
  closed-form outputs of linearized (infinitely wide) networks trained by gradient descent on MSE,
  and the corresponding GP posteriors.
* :func:`fixed_point`, :func:`phase_diagram`, :func:`plot_phase_diagram` — the order–chaos phase
  diagram of deep networks at initialisation (Poole et al. 2016; Schoenholz et al. 2017).

The per-layer kernel maps live beside each layer in :mod:`jaxlearn.nn` (``nn.Kernel``,
``nn.input_kernel``, ``nn.dual``).
"""

from jaxlearn.kernels.analytic import KINDS, analytic
from jaxlearn.kernels.phase import PhasePoint, fixed_point, phase_diagram, plot_phase_diagram
from jaxlearn.kernels.predict import Gaussian, gp_inference, gradient_descent_mse, gradient_descent_mse_ensemble

__all__ = ["Gaussian", "KINDS", "PhasePoint", "analytic", "fixed_point", "gp_inference", "gradient_descent_mse",
           "gradient_descent_mse_ensemble", "phase_diagram", "plot_phase_diagram"]
