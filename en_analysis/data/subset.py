"""Seeded, class-balanced index subsets: training subsets and the evaluation subset."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from ..core.errors import UserError


def balanced_subset(labels: np.ndarray, total: int, seed: int) -> np.ndarray:
    """``total`` indices, as equal per class as possible, chosen from ``seed``; sorted."""
    labels = np.asarray(labels)
    if total <= 0 or total >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = np.full(len(classes), total // len(classes))
    per_class[: total % len(classes)] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:n] for c, n in zip(classes, per_class)]
    return np.sort(np.concatenate(chosen))


def resolve_categories(wanted: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Class indices of the named categories ([] = all), with close matches for unknown names."""
    if not wanted:
        return list(range(len(classes)))
    out = []
    for name in wanted:
        if name not in classes:
            close = difflib.get_close_matches(name, list(classes), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UserError(
                f"category {name!r} is not in this dataset.{hint} Categories: {', '.join(classes)}"
            )
        out.append(list(classes).index(name))
    return out


def evaluation_subset(
    labels: np.ndarray,
    classes: Sequence[str],
    categories: Sequence[str],
    per_category: int,
    seed: int,
) -> np.ndarray:
    """Held-out indices: ``per_category`` samples of each category, grouped in category order.

    The choice depends only on the labels and the seed, so every checkpoint of a run sees the
    same images in the same order.
    """
    labels = np.asarray(labels)
    chosen = []
    for c in resolve_categories(categories, classes):
        rng = np.random.default_rng([seed, c])  # a category's samples don't depend on the others
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_category:
            raise UserError(
                f"category {classes[c]!r} has only {len(pool)} held-out samples, "
                f"{per_category} asked for (lower analysis.per_category)"
            )
        chosen.append(np.sort(rng.permutation(pool)[:per_category]))
    return np.concatenate(chosen)
