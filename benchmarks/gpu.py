"""EN-ResNet50 vs BN-ResNet50 at width 64, 224 x 224, synthetic data, on a GPU (or --device cpu
for a smoke run): images/s for a training step and for extraction, the EN/BN ratio, peak memory.

    python benchmarks/gpu.py                  # cuda, batch 64, bf16 autocast for training
    python benchmarks/gpu.py --compile        # the same under torch.compile (CUDA graphs off)
    python benchmarks/gpu.py --device cpu --batch 4 --size 64 --steps 2   # smoke run
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from en_analysis.nn import en_resnet50
from en_analysis.nn.recording import RatioRecorder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(norm: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = en_resnet50(1000, width=64, stem="imagenet", norm=norm).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.no_amp)
    forward = torch.compile(model) if args.compile else model

    def step() -> None:
        with amp:
            loss = F.cross_entropy(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn, steps: int) -> float:
        for _ in range(2):
            fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        return args.batch * steps / (time.perf_counter() - start)

    start = time.perf_counter()
    step()  # the first step compiles under --compile
    sync(device)
    first = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train = timed(step, args.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    model.eval()

    def infer() -> None:
        with torch.no_grad():
            model(x)

    if norm == "en":
        with RatioRecorder(model):
            extract = timed(infer, args.steps)
    else:
        extract = timed(infer, args.steps)
    return dict(train=train, extract=extract, peak=peak, first=first)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-amp", action="store_true", help="float32 training")
    p.add_argument("--compile", action="store_true", help="train under torch.compile")
    args = p.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{name}, torch {torch.__version__}, batch {args.batch}, {args.size}x{args.size}, "
        f"{'fp32' if args.no_amp else 'bf16 autocast'} training"
        + (", torch.compile" if args.compile else ", eager")
    )
    results = {norm: measure(norm, args, device) for norm in ("bn", "en")}
    for norm, r in results.items():
        print(
            f"{norm.upper()}-ResNet50: train {r['train']:.0f} img/s, extract "
            f"{r['extract']:.0f} img/s, peak memory {r['peak']:.2f} GiB, first step "
            f"{r['first']:.1f} s"
        )
    en, bn = results["en"], results["bn"]
    print(
        f"EN/BN throughput: train {en['train'] / bn['train']:.2f}, "
        f"extract {en['extract'] / bn['extract']:.2f}"
    )


if __name__ == "__main__":
    main()
