"""Datasets as host-side arrays, label corruption, and deterministic pure batching."""
from jaxlearn.data.batching import batch_indices, get_batch, merge_rows, permute_index, row_blocks, split_rows
from jaxlearn.data.dataset import Arrays, Dataset
from jaxlearn.data.labels import corrupt_labels, label_noise, random_labels
from jaxlearn.data.real import digits, from_npz, mnist1d
from jaxlearn.data.registry import available_datasets, load
from jaxlearn.data.synthetic import (
    gaussian_regression,
    modular_arithmetic,
    sinusoid_regression,
    sparse_parity,
    teacher_student,
)

__all__ = [
    "Arrays",
    "Dataset",
    "available_datasets",
    "batch_indices",
    "corrupt_labels",
    "digits",
    "from_npz",
    "gaussian_regression",
    "get_batch",
    "label_noise",
    "load",
    "merge_rows",
    "mnist1d",
    "modular_arithmetic",
    "permute_index",
    "random_labels",
    "row_blocks",
    "sinusoid_regression",
    "split_rows",
    "sparse_parity",
    "teacher_student",
]
