"""Extraction throughput with the RatioRecorder vs a plain eval forward pass, same data, and
with the head inputs recorded too (what ``extract`` does: one more read of every EN layer's
input for its per-channel statistics).

Target: recorder / plain throughput >= 0.95 (the hooks add next to nothing).
"""

from __future__ import annotations

import torch
from _timing import best_times

from en_analysis.nn import en_resnet50
from en_analysis.nn.recording import RatioRecorder


def main() -> None:
    torch.manual_seed(0)
    model = en_resnet50(10, in_channels=1, width=16, stem="small").eval()
    batches = [torch.randn(100, 1, 28, 28) for _ in range(5)]  # 500 images, the paper's size

    def plain():
        with torch.no_grad():
            for x in batches:
                model(x)

    def recorded():
        with RatioRecorder(model, features=True) as rec, torch.no_grad():
            for x in batches:
                model(x)
        return rec.ratios()

    def with_inputs():
        with RatioRecorder(model, features=True, inputs=True) as rec, torch.no_grad():
            for x in batches:
                model(x)
        return rec.head_inputs()

    t = best_times(
        {"plain": plain, "recorder": recorded, "inputs": with_inputs}, repeats=7, inner=2
    )
    n = sum(len(x) for x in batches)
    print(
        f"plain eval: {n / t['plain']:.0f} images/s; with RatioRecorder: "
        f"{n / t['recorder']:.0f} images/s; throughput ratio recorder/plain = "
        f"{t['plain'] / t['recorder']:.3f}  (target >= 0.95); with the head inputs too "
        f"(what extract records): {n / t['inputs']:.0f} images/s, ratio "
        f"{t['plain'] / t['inputs']:.3f}"
    )


if __name__ == "__main__":
    main()
