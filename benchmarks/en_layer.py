"""EN cost, measured in one run and printed as ratios.

1. Train step of EN-ResNet50 / BN-ResNet50 at the default's shapes (width 16, small stem,
   batch 64, 28 x 28, 1 channel) and at the paper's (width 64, ImageNet stem, batch 16,
   224 x 224, 3 channels), with the EN layers' share of the EN step: EN layers as the C++
   kernel (the default on CPU), as the Python layer (hand-written backward), and as the
   Python layer compiled (``train.compile_en_layers``).
2. One EN layer, forward + backward: the C++ kernel and the Python layer / naive (K normalized
   copies, autograd through ``reference_forward``).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from _timing import best_times

from en_analysis.nn import ExemplarNorm2d, cpu_kernel, en_resnet50
from en_analysis.nn.exemplar_norm import compile_layers
from en_analysis.settings.config import TrainConfig
from en_analysis.training.train import make_optimizer

DEFAULT = dict(classes=10, channels=1, width=16, stem="small", batch=64, size=28)
PAPER = dict(classes=1000, channels=3, width=64, stem="imagenet", batch=16, size=224)


def train_step(
    norm: str,
    compiled: bool = False,
    shapes: dict = DEFAULT,
    fused: bool = True,
    channels_last: bool = False,
):
    """One SGD step on a fixed batch, the optimizer as training makes it (``fused=False``:
    SGD's per-parameter loop instead)."""
    torch.manual_seed(0)
    s = shapes
    model = en_resnet50(
        s["classes"], in_channels=s["channels"], width=s["width"], stem=s["stem"], norm=norm
    )
    x = torch.randn(s["batch"], s["channels"], s["size"], s["size"])
    y = torch.randint(0, s["classes"], (s["batch"],))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, TrainConfig())
    for group in opt.param_groups:
        group["fused"] = fused
    forward = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        opt.step()

    return step


def with_layer(implementation: str, step):
    """``step`` with the EN layers as the C++ kernel, the Python layer or the compiled Python
    layer (``cpu_kernel.use``, ``compile_layers``)."""

    def run():
        cpu_kernel.use(implementation == "kernel")
        compile_layers(implementation == "compiled")
        step()

    return run


def layer_step(shape, implementation: str):
    layer = ExemplarNorm2d(shape[1])
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    forward = layer.reference_forward if implementation == "naive" else layer

    return with_layer(implementation, lambda: forward(x).backward(g))


def en_share(step) -> float:
    """The fraction of one (profiled) training step spent inside the EN layers, forward and
    backward: the profiler's time of the layer's function and its backward over the wall time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    inside = sum(e.cpu_time_total for e in events if _is_en_layer(e.key))
    return inside / 1e6 / wall


def _is_en_layer(event: str) -> bool:
    """A profiler event of an EN layer, forward or backward, in either implementation."""
    return (
        event == "en_layer::exemplar_norm"  # the kernel's forward
        or (event.startswith("torch::autograd::CppNode<") and "ExemplarNorm" in event)
        or event.startswith("_ExemplarNormFunction")  # the Python layer, both ways
    )


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, shapes, repeats, target in (
        ("default's shapes (width 16, batch 64, 28 x 28)", DEFAULT, 5, 1.3),
        ("paper's shapes (width 64, ImageNet stem, batch 16, 224 x 224)", PAPER, 2, 1.25),
    ):
        en, bn = train_step("en", shapes=shapes), train_step("bn", shapes=shapes)
        start = time.perf_counter()
        with_layer("compiled", en)()
        compile_seconds = time.perf_counter() - start
        t = best_times(
            {name: with_layer(name, en) for name in ("kernel", "python", "compiled")} | {"bn": bn},
            repeats=repeats,
            inner=2,
        )
        print(
            f"train step, {name}: EN {t['kernel'] * 1e3:.0f} ms, BN {t['bn'] * 1e3:.0f} ms, "
            f"EN/BN = {t['kernel'] / t['bn']:.2f} (target <= {target}); EN layers: "
            f"{en_share(with_layer('kernel', en)):.0%} of the EN step. Python layer: "
            f"{t['python'] * 1e3:.0f} ms, EN/BN = {t['python'] / t['bn']:.2f}; compiled Python "
            f"layer (train.compile_en_layers): {t['compiled'] * 1e3:.0f} ms, EN/BN = "
            f"{t['compiled'] / t['bn']:.2f}, first step {compile_seconds:.0f} s"
        )
    for shape in [(64, 64, 14, 14), (64, 256, 7, 7), (64, 512, 2, 2)]:
        t = best_times(
            {name: layer_step(shape, name) for name in ("kernel", "python", "naive")},
            repeats=5,
            inner=5,
        )
        print(
            f"EN layer fwd+bwd {shape}: C++ kernel {t['kernel'] * 1e3:.2f} ms, Python layer "
            f"{t['python'] * 1e3:.2f} ms, naive {t['naive'] * 1e3:.2f} ms; kernel/naive = "
            f"{t['kernel'] / t['naive']:.2f}, Python layer/naive = {t['python'] / t['naive']:.2f}"
        )
    cpu_kernel.use(True)
    compile_layers(False)


if __name__ == "__main__":
    main()
