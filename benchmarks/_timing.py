"""Timing helper: interleaved repeats, best of each, so machine noise hits every case alike."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_times(
    cases: dict[str, Callable[[], object]], repeats: int = 5, inner: int = 3
) -> dict[str, float]:
    """Seconds per call of each case: the minimum over ``repeats`` rounds, cases interleaved."""
    for fn in cases.values():  # warm-up
        fn()
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / inner)
    return best
