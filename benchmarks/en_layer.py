"""EN cost at the default's shapes, measured in one run and printed as ratios.

1. Train step of EN-ResNet50 / BN-ResNet50 (width 16, small stem, batch 64, 28 x 28, 1 channel).
2. One EN layer, forward + backward: fused (x * A + B, hand-written full-size gradients) /
   naive (K normalized copies, autograd).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _timing import best_times

from en_analysis.nn import ExemplarNorm2d, en_resnet50


def train_step(norm: str):
    torch.manual_seed(0)
    model = en_resnet50(10, in_channels=1, width=16, stem="small", norm=norm)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def layer_step(shape, naive: bool):
    layer = ExemplarNorm2d(shape[1])
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    forward = layer.reference_forward if naive else layer

    return lambda: forward(x).backward(g)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = best_times({"en": train_step("en"), "bn": train_step("bn")}, repeats=5, inner=3)
    print(
        f"train step, width 16, batch 64: EN {t['en'] * 1e3:.0f} ms, BN {t['bn'] * 1e3:.0f} ms,"
        f" EN/BN = {t['en'] / t['bn']:.2f}  (target <= 1.3)"
    )
    for shape in [(64, 64, 14, 14), (64, 256, 7, 7), (64, 512, 2, 2)]:
        t = best_times(
            {"fused": layer_step(shape, False), "naive": layer_step(shape, True)},
            repeats=5,
            inner=5,
        )
        print(
            f"EN layer fwd+bwd {shape}: fused {t['fused'] * 1e3:.2f} ms, naive "
            f"{t['naive'] * 1e3:.2f} ms, fused/naive = {t['fused'] / t['naive']:.2f}"
        )


if __name__ == "__main__":
    main()
