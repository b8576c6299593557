"""The package layout that pyproject.toml cannot express: the repository's ``experiments/`` and
``configs/`` install as ``jaxlearn.experiments`` and ``jaxlearn.configs`` (package data), so that a
plain ``pip install`` brings the studies (``jaxlearn run population_digits`` from any directory)
while the repository keeps one file per study in ``experiments/`` and its config in ``configs/``.
Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

STUDIES = {"jaxlearn.experiments": "experiments", "jaxlearn.configs": "configs"}

setup(
    packages=find_packages(include=["jaxlearn", "jaxlearn.*"]) + list(STUDIES),
    package_dir=STUDIES,
    package_data={"jaxlearn": ["py.typed"], "jaxlearn.configs": ["*.yaml"]},
)
