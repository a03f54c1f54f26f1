"""The images: datasets (real Fashion-MNIST by default, CIFAR, image folders, synthetic), the
category -> synset tables and mapping files, offline WordNet, the evaluation subset and the
thumbnails. It may import ``core`` and ``settings``."""

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
