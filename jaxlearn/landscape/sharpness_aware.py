"""SAM and ASAM (Foret et al. 2021; Kwon et al. 2021) as gradient estimators: defined, with the
other gradient estimators, in :mod:`jaxlearn.rules.sharpness_aware` (``rules.estimator("sam")``);
public here too because the landscape's sharpness measures (:func:`~jaxlearn.landscape.sam_sharpness`,
:func:`~jaxlearn.landscape.m_sharpness`) use the same perturbation ``ε̂``."""

from jaxlearn.rules.sharpness_aware import sam, sam_perturbation

__all__ = ["sam_perturbation", "sam"]
