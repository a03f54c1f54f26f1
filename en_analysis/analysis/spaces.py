"""The feature spaces analysed: ratio vectors under a recorded scaling, pixels, features.

t-SNE, the clustering metrics and the WordNet comparison all use the same space, so a number in
one can be read against the figure of another.
"""

from __future__ import annotations

import numpy as np

from ..settings.choices import SCALINGS, check

CONSTANT = 1e-7  # a dimension whose std across samples is below this carries no information


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score each column; constant columns become 0 (never NaN)."""
    x = np.asarray(x, np.float64)
    std = x.std(0)
    live = std > CONSTANT
    out = np.zeros_like(x)
    out[:, live] = (x[:, live] - x[:, live].mean(0)) / std[live]
    return out


def scale_ratios(ratios: np.ndarray, scaling: str) -> np.ndarray:
    """(N, L, K) ratios -> (N, L * K) vectors in the chosen space.

    raw: the ratios; zscore: each of the L * K dimensions standardised across samples (the
    ratios differ by ~1e-3 between samples and a few dimensions would otherwise dominate
    distances); clr: centred log-ratio per layer (log lam_k - mean_k log lam_k), the usual
    coordinates for compositions.
    """
    check("scaling", scaling, SCALINGS)
    r = np.asarray(ratios, np.float64)
    if scaling == "clr":
        log = np.log(np.clip(r, 1e-12, None))
        r = log - log.mean(2, keepdims=True)
    flat = r.reshape(len(r), -1)
    return standardize(flat) if scaling == "zscore" else flat


def is_degenerate(x: np.ndarray) -> bool:
    """True when every sample has the same vector (e.g. epoch 0 of EN: uniform ratios)."""
    return len(x) < 2 or float(np.asarray(x).std(0).max()) <= CONSTANT
