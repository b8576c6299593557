"""Datasets by name, for configs and the command line: ``load("digits", seed=1)``."""
from __future__ import annotations

import inspect

from jaxlearn._checks import did_you_mean
from jaxlearn.data.dataset import Dataset
from jaxlearn.data.real import digits, from_npz, mnist1d
from jaxlearn.data.synthetic import (
    gaussian_regression,
    modular_arithmetic,
    sinusoid_regression,
    sparse_parity,
    teacher_student,
)

_REGISTRY = {
    "digits": digits,
    "mnist1d": mnist1d,
    "modular_arithmetic": modular_arithmetic,
    "teacher_student": teacher_student,
    "sparse_parity": sparse_parity,
    "gaussian_regression": gaussian_regression,
    "sinusoid_regression": sinusoid_regression,
    "npz": from_npz,
}


def available_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load`, sorted."""
    return tuple(sorted(_REGISTRY))


def load(name: str, **kwargs) -> Dataset:
    """Build the dataset registered under ``name`` with keyword arguments ``kwargs``.

    Names: ``"digits"``, ``"mnist1d"``, ``"modular_arithmetic"``, ``"teacher_student"``,
    ``"sparse_parity"``, ``"gaussian_regression"``, ``"sinusoid_regression"`` (the functions
    of the same name) and ``"npz"`` (:func:`from_npz`, e.g. ``load("npz", path=...)``).
    Arguments are checked against the constructor's signature before anything is built.

    Raises:
      ValueError: unknown ``name`` (the message suggests the closest names).
      TypeError: a keyword the dataset does not take, or a required one missing.

    Examples:
        >>> from jaxlearn import data
        >>> data.load("teacher_student", seed=0, n_train=8, n_test=4, d_in=3).x_train.shape
        (8, 3)
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, _REGISTRY, n=3)}; "
                         f"Available: {', '.join(available_datasets())}")
    fn = _REGISTRY[name]
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(f"dataset {name!r} got unexpected argument(s) "
                        f"{', '.join(map(repr, unknown))}; it accepts: {', '.join(params)}")
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"dataset {name!r}: {err}") from None
    return fn(**kwargs)
