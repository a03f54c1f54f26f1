"""``train.compile``: compile time and steady-state train step of EN-ResNet50 and BN-ResNet50
under ``torch.compile`` against eager, on CPU, at the default's shapes (width 16, batch 64,
28 x 28) or the paper's (``--paper``: width 64, ImageNet stem, batch 16, 224 x 224). Inside
``torch.compile`` the EN layers run their Python implementation, compiled with the model.

    python benchmarks/compiled.py [--paper]   # minutes: the first compiled step compiles
"""

from __future__ import annotations

import sys
import time

import torch
from _timing import best_times
from en_layer import DEFAULT, PAPER, train_step


def main() -> None:
    # the paper's steps take seconds: one per timed round instead of three
    label, shapes, inner = (
        ("paper", PAPER, 1) if "--paper" in sys.argv[1:] else ("default", DEFAULT, 3)
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {label}'s shapes")
    cases = {}
    for norm in ("en", "bn"):
        for compiled in (False, True):
            step = train_step(norm, compiled, shapes)
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            name = f"{norm}{' compiled' if compiled else ''}"
            print(f"{name}: first step {first:.1f} s")
            cases[name] = step
    t = best_times(cases, repeats=5, inner=inner)
    for name, seconds in t.items():
        print(f"{name}: {seconds * 1e3:.0f} ms per step")
    print(
        f"EN compiled / EN eager = {t['en compiled'] / t['en']:.2f}; EN/BN eager = "
        f"{t['en'] / t['bn']:.2f}, compiled = {t['en compiled'] / t['bn compiled']:.2f}"
    )


if __name__ == "__main__":
    main()
