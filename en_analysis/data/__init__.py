"""Datasets (real Fashion-MNIST by default), category tables and the evaluation subset."""

from .datasets import (
    Datasets,
    build_datasets,
    describe_data,
    heldout_fingerprint,
    thumbnail_images,
)
from .subset import balanced_subset, evaluation_subset

__all__ = [
    "Datasets",
    "balanced_subset",
    "build_datasets",
    "describe_data",
    "evaluation_subset",
    "heldout_fingerprint",
    "thumbnail_images",
]
