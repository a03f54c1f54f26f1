"""EN cost, measured in one run and printed as ratios.

1. Train step of EN-ResNet50 / BN-ResNet50 at the default's shapes (width 16, small stem,
   batch 64, 28 x 28, 1 channel) and at the paper's (width 64, ImageNet stem, batch 16,
   224 x 224, 3 channels), with the EN layers' share of the EN step.
2. One EN layer, forward + backward: the layer (hand-written backward) / naive (K normalized
   copies, autograd through ``reference_forward``).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from _timing import best_times

from en_analysis.nn import ExemplarNorm2d, en_resnet50
from en_analysis.nn.exemplar_norm import compile_layers

DEFAULT = dict(classes=10, channels=1, width=16, stem="small", batch=64, size=28)
PAPER = dict(classes=1000, channels=3, width=64, stem="imagenet", batch=16, size=224)


def train_step(norm: str, compiled: bool = False, shapes: dict = DEFAULT):
    torch.manual_seed(0)
    s = shapes
    model = en_resnet50(
        s["classes"], in_channels=s["channels"], width=s["width"], stem=s["stem"], norm=norm
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(s["batch"], s["channels"], s["size"], s["size"])
    y = torch.randint(0, s["classes"], (s["batch"],))
    forward = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        opt.step()

    return step


def with_compiled(enabled: bool, step):
    """``step`` with the EN layers compiled or eager (``compile_layers``)."""

    def run():
        compile_layers(enabled)
        step()

    return run


def layer_step(shape, naive: bool):
    layer = ExemplarNorm2d(shape[1])
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    forward = layer.reference_forward if naive else layer

    return lambda: forward(x).backward(g)


def en_share(step) -> float:
    """The fraction of one (profiled) training step spent inside the EN layers, forward and
    backward: the profiler's time of the layer's function and its backward over the wall time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    inside = sum(e.cpu_time_total for e in events if e.key.startswith("_ExemplarNormFunction"))
    return inside / 1e6 / wall


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, shapes, repeats, target in (
        ("default's shapes (width 16, batch 64, 28 x 28)", DEFAULT, 5, 1.3),
        ("paper's shapes (width 64, ImageNet stem, batch 16, 224 x 224)", PAPER, 2, 1.25),
    ):
        en, bn = train_step("en", shapes=shapes), train_step("bn", shapes=shapes)
        start = time.perf_counter()
        with_compiled(True, en)()
        compile_seconds = time.perf_counter() - start
        cases = {"en": with_compiled(False, en), "compiled": with_compiled(True, en), "bn": bn}
        t = best_times(cases, repeats=repeats, inner=2)
        print(
            f"train step, {name}: EN {t['en'] * 1e3:.0f} ms, BN {t['bn'] * 1e3:.0f} ms, "
            f"EN/BN = {t['en'] / t['bn']:.2f} (target <= {target}); EN layers: "
            f"{en_share(with_compiled(False, en)):.0%} of the EN step; with compiled EN "
            f"layers (train.compile_en_layers) {t['compiled'] * 1e3:.0f} ms, EN/BN = "
            f"{t['compiled'] / t['bn']:.2f}, first step {compile_seconds:.0f} s"
        )
    for shape in [(64, 64, 14, 14), (64, 256, 7, 7), (64, 512, 2, 2)]:
        t = best_times(
            {"fused": layer_step(shape, False), "naive": layer_step(shape, True)},
            repeats=5,
            inner=5,
        )
        print(
            f"EN layer fwd+bwd {shape}: layer {t['fused'] * 1e3:.2f} ms, naive "
            f"{t['naive'] * 1e3:.2f} ms, layer/naive = {t['fused'] / t['naive']:.2f}"
        )


if __name__ == "__main__":
    main()
