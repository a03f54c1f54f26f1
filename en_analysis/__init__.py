"""en-analysis: train EN-ResNet50, collect its importance ratios per epoch, and analyse them."""

from .nn import ExemplarNorm2d, en_layers, en_resnet50
from .nn.recording import RatioRecorder
from .run.folder import Ratios, Run

__all__ = ["ExemplarNorm2d", "RatioRecorder", "Ratios", "Run", "en_layers", "en_resnet50"]
