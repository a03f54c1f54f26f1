"""Network building blocks: the EN layer and the ResNet-50 it goes into."""

from .exemplar_norm import ExemplarNorm2d
from .resnet import ResNet, en_layers, en_resnet50

__all__ = [
    "ExemplarNorm2d",
    "ResNet",
    "en_layers",
    "en_resnet50",
]
