"""Every choice a setting can take, declared once: the modules that implement a choice and the
config validation that checks it read these same tuples."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..core.errors import UserError

NORMS = ("en", "bn")  # model.norm: Exemplar Normalization or plain BatchNorm2d
STEMS = ("small", "imagenet")  # model.stem
NORMALIZERS = ("in", "ln", "bn", "gn")  # model.normalizers: EN's pool
DEFAULT_NORMALIZERS = ("in", "ln", "bn")
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")  # data.dataset
AUGMENTS = ("none", "flip", "crop-flip")  # data.augment
SCALINGS = ("raw", "zscore", "clr")  # analysis.scaling
TSNE_MODES = ("aligned", "independent")  # analysis.tsne_mode
WORDNET_DISTANCES = ("wup", "path", "lch", "hops")  # analysis.wordnet_distance
CLUSTER_DISTANCES = ("crossvalidated", "centroid", "pairwise")  # analysis.cluster_distance
DEVICE = re.compile(r"cpu|cuda(:\d+)?")  # train.device, extract --device


def check(what: str, value: object, options: Iterable[object]) -> None:
    """One line naming the setting, the value and the options when ``value`` is not one."""
    options = tuple(options)
    if value not in options:
        raise UserError(f"{what} = {value!r} is not one of {', '.join(map(str, options))}")


def check_device(what: str, value: str) -> None:
    """One line naming the setting when ``value`` is not a device en-analysis runs on."""
    if not DEVICE.fullmatch(value):
        raise UserError(f"{what} must be cpu or cuda (or cuda:N), got {value!r}")
