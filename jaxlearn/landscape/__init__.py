"""jaxlearn.landscape — loss surfaces and curvature, as pure functions of params.

Directions (filter-/layer-normalized random, PCA of a trajectory, the plane through three
points), 1-D/2-D surfaces of any function of params (one compiled program, chunked), Hessian
and Gauss–Newton vector products (optionally on a parameter block), top/bottom eigenvalues
(Lanczos, power iteration), Hutchinson traces and stochastic Lanczos quadrature densities.
Mode connectivity (linear paths, barriers, BatchNorm statistics reset along a path, and curves
between minima: quadratic Bézier and polygonal chain, Garipov et al. 2018) and
permutation alignment (Git Re-Basin weight and activation matching); sharpness during training
(warm-started λ_max tracking for edge-of-stability studies, SAM sharpness, m-sharpness) and SAM
as a gradient estimator (defined in :mod:`jaxlearn.rules.sharpness_aware`, by name
``rules.estimator("sam")``). Instability analysis (Frankle et al. 2020: children spawned from a
parent at step k, trained as one vmapped group through the runner) is the experiment
``experiments/instability.py``. The objective is a scalar ``loss_fn(params)`` or a
:class:`ModelObjective` (model, per-example loss, dataset, chunk size); :data:`softmax_cross_entropy`
and :data:`mse` are the per-example losses of :mod:`jaxlearn.train.losses` (``train.per_example_*``).

Renamed (the old names warn when called, for one release): ``grid`` → :func:`symmetric_grid` (``grid``
is :func:`jaxlearn.train.grid`'s hyperparameter grid), ``curvature.project`` → :func:`restrict`
(``project`` is :func:`~jaxlearn.landscape.directions.project`, coordinates in a plane).

Figures: :mod:`jaxlearn.landscape.plots`.
"""

from jaxlearn.landscape import plots
from jaxlearn.landscape.connectivity import (
    Barrier,
    barrier,
    batch_stats_reset,
    interpolate,
    linear_path,
    reset_batch_stats,
)
from jaxlearn.landscape.curvature import ggn_vp, hvp, operator, quadratic_form, restrict
from jaxlearn.landscape.curves import CURVES, curve_model, curve_path, curve_point
from jaxlearn.landscape.directions import normalize_direction, pca_directions, plane, project, random_direction
from jaxlearn.landscape.matching import Matching, activation_matching, hidden_activations, weight_matching
from jaxlearn.landscape.objective import ModelObjective, dataset_loss, dataset_metrics, mse, softmax_cross_entropy
from jaxlearn.landscape.permutation import PermutationSpec, apply_permutation, permutation_spec, spec_from_pairs
from jaxlearn.landscape.sharpness import (
    TopEigenpair,
    m_sharpness,
    random_unit_vector,
    sam_sharpness,
    top_eigenpair,
    track_sharpness,
)
from jaxlearn.landscape.sharpness_aware import sam, sam_perturbation
from jaxlearn.landscape.spectrum import (
    hessian_trace,
    lanczos,
    power_iteration,
    smooth_density,
    spectral_density,
    top_eigenvalues,
)
from jaxlearn.landscape.surface import grid, surface_1d, surface_2d, symmetric_grid

__all__ = [
    "ModelObjective", "dataset_loss", "dataset_metrics", "ggn_vp", "grid", "hessian_trace", "hvp", "lanczos", "mse",
    "normalize_direction", "operator", "pca_directions", "plane", "plots", "power_iteration", "project",
    "quadratic_form", "random_direction", "restrict", "smooth_density", "softmax_cross_entropy", "spectral_density",
    "surface_1d", "surface_2d", "symmetric_grid", "top_eigenvalues",
    "Barrier", "CURVES", "barrier", "batch_stats_reset", "curve_model", "curve_path", "curve_point", "interpolate",
    "linear_path", "reset_batch_stats",
    "Matching", "PermutationSpec", "activation_matching", "apply_permutation", "hidden_activations",
    "permutation_spec", "spec_from_pairs", "weight_matching",
    "TopEigenpair", "m_sharpness", "random_unit_vector", "sam", "sam_perturbation", "sam_sharpness", "top_eigenpair",
    "track_sharpness",
]
