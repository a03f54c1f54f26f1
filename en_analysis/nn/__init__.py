"""The network: ``ExemplarNorm2d`` (its Python implementation and its C++ kernel,
``cpu_kernel``), the ResNet-50 it goes into, and what a forward pass records (``recording``:
``RatioRecorder``, the heads' inputs). It may import ``core`` and ``settings``."""

from .exemplar_norm import ExemplarNorm2d
from .resnet import ResNet, en_layers, en_resnet50

__all__ = [
    "ExemplarNorm2d",
    "ResNet",
    "en_layers",
    "en_resnet50",
]
