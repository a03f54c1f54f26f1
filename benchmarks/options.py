"""Training options at the default's shapes, measured in one run and printed as ratios.

The train step (width 16, small stem, batch 64, 28 x 28, the optimizer as training makes it)
with one option changed at a time, against the same step without it:

- the optimizer: fused SGD (training's) / SGD's per-parameter loop (``fused=False``);
- ``train.channels_last``: channels-last / contiguous, for EN and for BN.
"""

from __future__ import annotations

import torch
from _timing import best_times
from en_layer import train_step


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = best_times(
        {
            "en": train_step("en"),
            "en_loop": train_step("en", fused=False),
            "en_nhwc": train_step("en", channels_last=True),
            "bn": train_step("bn"),
            "bn_nhwc": train_step("bn", channels_last=True),
        },
        repeats=6,
        inner=2,
    )
    print(
        f"EN train step {t['en'] * 1e3:.0f} ms; fused SGD / per-parameter loop = "
        f"{t['en'] / t['en_loop']:.2f}"
    )
    print(
        f"channels_last / contiguous: EN {t['en_nhwc'] / t['en']:.2f}, "
        f"BN {t['bn_nhwc'] / t['bn']:.2f}; EN/BN contiguous {t['en'] / t['bn']:.2f}, "
        f"channels_last {t['en_nhwc'] / t['bn_nhwc']:.2f}"
    )


if __name__ == "__main__":
    main()
