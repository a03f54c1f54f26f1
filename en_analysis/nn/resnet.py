"""ResNet-50 topology with a choice of normalization layer, width and stem.

The bottleneck blocks are torchvision's, so module paths (``layer3.2.bn1``) and, for
``norm="bn", width=64, stem="imagenet"``, the parameter count (25,557,032) match ``resnet50``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, conv1x1

from ..core.errors import UserError
from ..settings.choices import DEFAULT_NORMALIZERS, NORMS, STEMS, check
from .exemplar_norm import ExemplarNorm2d

RESNET50_BLOCKS = (3, 4, 6, 3)


class ResNet(nn.Module):
    """Bottleneck ResNet whose every normalization layer is ``norm_layer(C)``."""

    def __init__(
        self,
        blocks: Sequence[int],
        num_classes: int,
        norm_layer: type[nn.Module] | partial,
        in_channels: int = 3,
        width: int = 64,
        stem: str = "imagenet",
        stem_stride: int = 2,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        check("stem", stem, STEMS)
        if width < 1:
            raise UserError(f"width must be positive, got {width}")
        self.inplanes = width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stem_stride, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(norm_layer, width, blocks[0], 1)
        self.layer2 = self._make_layer(norm_layer, width * 2, blocks[1], 2)
        self.layer3 = self._make_layer(norm_layer, width * 4, blocks[2], 2)
        self.layer4 = self._make_layer(norm_layer, width * 8, blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # each block starts as the identity: trains stably at higher lr
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, norm_layer, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                norm_layer(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, norm_layer=norm_layer)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [
            Bottleneck(self.inplanes, planes, norm_layer=norm_layer) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate (pooled) features, the input of ``fc``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, num_classes) of a batch of images."""
        return self.fc(self.features(x))


def en_resnet50(
    num_classes: int = 1000,
    in_channels: int = 3,
    width: int = 64,
    stem: str = "imagenet",
    norm: str = "en",
    stem_stride: int = 2,
    normalizers: Sequence[str] = DEFAULT_NORMALIZERS,
    reduction: int = 16,
    zero_init_residual: bool = False,
    sync_bn_stats: bool = False,
) -> ResNet:
    """ResNet-50 ([3, 4, 6, 3] bottlenecks) with 53 normalization layers, EN (default) or BN."""
    if norm == "en":
        norm_layer = partial(
            ExemplarNorm2d,
            normalizers=tuple(normalizers),
            reduction=reduction,
            sync_bn_stats=sync_bn_stats,
        )
    elif norm == "bn":
        norm_layer = nn.BatchNorm2d
    else:
        check("norm", norm, NORMS)
    return ResNet(
        RESNET50_BLOCKS,
        num_classes,
        norm_layer,
        in_channels=in_channels,
        width=width,
        stem=stem,
        stem_stride=stem_stride,
        zero_init_residual=zero_init_residual,
    )


def en_layers(model: nn.Module) -> list[tuple[str, ExemplarNorm2d]]:
    """The model's EN layers as (module path, layer), in forward order (registration order)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ExemplarNorm2d)]
