"""Training options at the default's shapes, measured in one run and printed as ratios.

The train step (width 16, small stem, batch 64, 28 x 28, the optimizer as training makes it)
with one option changed at a time, against the same step without it:

- the optimizer: fused SGD (training's) / SGD's per-parameter loop (``fused=False``);
- ``train.channels_last``: channels-last / contiguous, for EN and for BN;
- ``train.batch_size = 128`` with channels-last: time per image / the default's, for EN and BN.
"""

from __future__ import annotations

import torch
from _timing import best_times
from en_layer import DEFAULT, train_step

BATCH_128 = dict(DEFAULT, batch=128)


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = best_times(
        {
            "en": train_step("en"),
            "en_loop": train_step("en", fused=False),
            "en_nhwc": train_step("en", channels_last=True),
            "bn": train_step("bn"),
            "bn_nhwc": train_step("bn", channels_last=True),
            "en_128": train_step("en", shapes=BATCH_128, channels_last=True),
            "bn_128": train_step("bn", shapes=BATCH_128, channels_last=True),
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
    print(
        f"batch 128, channels_last / batch 64, contiguous, per image: "
        f"EN {t['en_128'] / 2 / t['en']:.2f}, BN {t['bn_128'] / 2 / t['bn']:.2f}; "
        f"EN/BN {t['en_128'] / t['bn_128']:.2f}"
    )


if __name__ == "__main__":
    main()
