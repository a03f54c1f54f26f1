"""Distances between category clusters and the Mantel test of two distance matrices."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import rankdata

from .errors import UserError


def cluster_distances(
    x: np.ndarray, labels: np.ndarray, classes: list[int], kind: str = "centroid"
) -> np.ndarray:
    """Distances between categories in a space: between centroids, or mean pairwise distance."""
    groups = [np.asarray(x[labels == c], np.float64) for c in classes]
    if kind == "centroid":
        centroids = np.stack([g.mean(0) for g in groups])
        return cdist(centroids, centroids)
    n = len(groups)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = cdist(groups[i], groups[j]).mean()
    return d


def upper(d: np.ndarray) -> np.ndarray:
    return d[np.triu_indices(len(d), 1)]


def mantel(
    a: np.ndarray, b: np.ndarray, permutations: int = 999, seed: int = 0
) -> tuple[float, float]:
    """Spearman correlation of two distance matrices' upper triangles and its Mantel p-value.

    The p-value is one-sided (are the two distances positively related?): the share of joint
    row/column permutations of ``b`` whose correlation is at least the observed one, counting
    the observed arrangement itself.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.shape[0] != a.shape[1] or len(a) < 3:
        raise UserError("mantel needs two square matrices of the same size, at least 3 x 3")
    ua, ub = upper(a), upper(b)
    if np.ptp(ua) == 0 or np.ptp(ub) == 0:
        return float("nan"), float("nan")
    rank_a = rankdata(ua)
    observed = _pearson(rank_a, rankdata(ub))
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(len(a), 1)
    hits = 0
    for _ in range(permutations):
        p = rng.permutation(len(a))
        if _pearson(rank_a, rankdata(b[p][:, p][iu])) >= observed - 1e-12:
            hits += 1
    return float(observed), (hits + 1) / (permutations + 1)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    return float((x @ y) / np.sqrt((x @ x) * (y @ y)))
