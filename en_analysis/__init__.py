"""en-analysis: train EN-ResNet50, collect its importance ratios per epoch, and analyse them.

The public names are imported when first used, so that ``import en_analysis`` (and the CLI's
``--help``) does not import torch:

- ``Run``: a run folder seen through one analysis (``figures.explorer.Run``);
- ``Ratios``: one epoch's ratio file (``run.folder.Ratios``);
- ``ExemplarNorm2d``, ``en_resnet50``, ``en_layers``: the EN layer and the model (``nn``);
- ``RatioRecorder``: hooks that record the ratios of a forward pass (``nn.recording``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .figures.explorer import Run
    from .nn import ExemplarNorm2d, en_layers, en_resnet50
    from .nn.recording import RatioRecorder
    from .run.folder import Ratios

PUBLIC = {
    "ExemplarNorm2d": "en_analysis.nn",
    "RatioRecorder": "en_analysis.nn.recording",
    "Ratios": "en_analysis.run.folder",
    "Run": "en_analysis.figures.explorer",
    "en_layers": "en_analysis.nn",
    "en_resnet50": "en_analysis.nn",
}
__all__ = ["ExemplarNorm2d", "RatioRecorder", "Ratios", "Run", "en_layers", "en_resnet50"]


def __getattr__(name: str) -> Any:
    if name in PUBLIC:
        return getattr(import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'en_analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *PUBLIC])
