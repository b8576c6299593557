"""Gradient estimators by name — what a config's ``rule`` field selects.

``estimator(name, **kwargs)`` builds the estimator for ``train.make_step(..., grad_estimator=...)``:

==============================  ==========================================================  =============
name                            estimator                                                   model
==============================  ==========================================================  =============
``backprop``                    exact reverse mode (:func:`jaxlearn.train.backprop`)          any
``dfa``                         direct feedback alignment (:func:`~jaxlearn.rules.dfa`)        block_serial
``forward_gradient``            weight-perturbed forward gradient (Baydin et al. 2022)      any, no custom_vjp
``activity_forward_gradient``   activity-perturbed forward gradient (Ren et al. 2023)       block_serial
``local_losses``                local losses via auxiliary heads (Nøkland & Eidnes 2019;    local_serial
                                Belilovsky et al. 2020)
``forward_forward``             forward-forward (Hinton 2022); loss                         ff_mlp
                                :func:`~jaxlearn.rules.forward_forward_loss`
``synthetic_gradients``         synthetic gradients (Jaderberg et al. 2017)                 synthetic_serial
``equilibrium_propagation``     equilibrium propagation, one-sided or symmetric ±β nudging  eqprop_network
                                (Scellier & Bengio 2017; Laborieux et al. 2021)
``ewc``                         backprop + elastic weight consolidation (Kirkpatrick et     any
                                al. 2017); needs ``anchor``, ``fisher``, ``strength``;
                                ``base``: another estimator, or its name in this table
``sam``                         sharpness-aware minimization (Foret et al. 2021), ASAM      any
                                with ``adaptive=True`` (Kwon et al. 2021); needs ``rho``
==============================  ==========================================================  =============

Feedback alignment and sign symmetry are layer rules (:func:`~jaxlearn.rules.FADense`) trained by
``backprop``: they change the model, not the estimator.
"""

from __future__ import annotations

import inspect
from typing import Any

from jaxlearn import train
from jaxlearn._checks import did_you_mean
from jaxlearn.rules.continual import ewc
from jaxlearn.rules.equilibrium import equilibrium_propagation
from jaxlearn.rules.feedback import dfa
from jaxlearn.rules.ff import forward_forward
from jaxlearn.rules.local import local_losses
from jaxlearn.rules.perturbation import activity_forward_gradient, forward_gradient
from jaxlearn.rules.sharpness_aware import sam
from jaxlearn.rules.synthetic import synthetic_gradients
from jaxlearn.train.step import Estimator

__all__ = ["ESTIMATORS", "estimator"]


def _backprop():
    return train.backprop


def _ewc(anchor, fisher, strength, base=None):
    """:func:`~jaxlearn.rules.ewc` whose ``base`` may also be the name of an estimator of this table
    (built with its defaults)."""
    return ewc(anchor, fisher, strength, estimator(base) if isinstance(base, str) else base)


ESTIMATORS = {
    "backprop": _backprop,
    "dfa": dfa,
    "forward_gradient": forward_gradient,
    "activity_forward_gradient": activity_forward_gradient,
    "local_losses": local_losses,
    "forward_forward": forward_forward,
    "synthetic_gradients": synthetic_gradients,
    "equilibrium_propagation": equilibrium_propagation,
    "ewc": _ewc,
    "sam": sam,
}


def estimator(name: str, **kwargs: Any) -> Estimator:
    """The gradient estimator ``name`` (table above) built with ``kwargs`` (e.g.
    ``estimator("forward_gradient", num_tangents=4)``). Unknown names or arguments raise a
    one-line ``ValueError`` with a suggestion, before anything is traced.

    Examples:
        >>> from jaxlearn import rules
        >>> estimate = rules.estimator("forward_gradient", num_tangents=4)
        >>> callable(estimate), sorted(rules.ESTIMATORS)[:3]
        (True, ['activity_forward_gradient', 'backprop', 'dfa'])
    """
    if name not in ESTIMATORS:
        raise ValueError(f"estimator: unknown name {name!r}{did_you_mean(name, ESTIMATORS)}; expected one of "
                         f"{sorted(ESTIMATORS)}")
    factory = ESTIMATORS[name]
    accepted = inspect.signature(factory).parameters
    for arg in kwargs:
        if arg not in accepted:
            raise ValueError(f"estimator {name!r}: unknown argument {arg!r}{did_you_mean(arg, accepted)}; "
                             f"accepted: {list(accepted)}")
    return factory(**kwargs)
