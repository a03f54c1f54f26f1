"""95% intervals for the clustering and WordNet numbers: the evaluation images resampled within
each category, ``analysis.bootstrap`` times, everything vectorised over the resamples.

A resample is a (B, N) array of counts: how often each image is drawn. Drawing with replacement
puts copies of one image in a resample, and a copy must never be its own neighbour or give a
zero distance to itself (it would inflate k-NN accuracy and shrink silhouettes). So:

- silhouette and k-NN accuracy (``bootstrap_counts``, with replacement): an image's copies are
  left out of its own neighbour set and its own-category distances; other images count with
  their multiplicity, as draws from the population would.
- trustworthiness (``half_samples``: half of each category without replacement, no copies): the
  half-sample spread has the full sample's scale (finite-population correction: variance
  s^2 (1/m - 1/n) = s^2 / n at m = n/2).
- Mantel r (with replacement): category centroids of the resampled images, their distances
  against the fixed WordNet distances.

Every interval is ``centred_interval``: the point estimate plus the central 95% of the resampled
values' deviations from their own mean. Resampling has a bias of its own (copies make a sample
clumpier, half-samples sparser, resampled centroids noisier); centring removes it to first order.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

LEVEL = 0.95


def bootstrap_counts(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, N) draw counts: each category's images drawn with replacement, as many as it has."""
    labels = np.asarray(labels)
    counts = np.zeros((n, len(labels)), np.int32)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        counts[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=n)
    return counts


def half_samples(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, N) 0/1: half of each category's images (rounded down, at least 2), without
    replacement."""
    labels = np.asarray(labels)
    member = np.zeros((n, len(labels)), np.int32)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        m = max(2, len(idx) // 2)
        keys = rng.random((n, len(idx)))
        chosen = np.argsort(keys, 1)[:, :m]
        member[np.arange(n)[:, None], idx[chosen]] = 1
    return member


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    """The central 95% of the replicates (NaN where there are none)."""
    r = np.asarray(replicates, float)
    r = r[np.isfinite(r)]
    if not len(r):
        return float("nan"), float("nan")
    lo, hi = np.quantile(r, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(lo), float(hi)


def centred_interval(point: float, replicates: np.ndarray) -> tuple[float, float]:
    """``point`` plus the central 95% of the replicates' deviations from their mean."""
    r = np.asarray(replicates, float)
    r = r[np.isfinite(r)]
    if not len(r) or not np.isfinite(point):
        return float("nan"), float("nan")
    lo, hi = percentile_interval(r - r.mean())
    return point + lo, point + hi


def silhouette(d: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B,) silhouette of each resample from the (N, N) distances; copies of an image are not
    counted among its own category (their distance to it is 0), other images with their
    multiplicity. A row of ones gives sklearn's ``silhouette_score``."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    w = counts.astype(np.float64)  # (B, N)
    sums = np.stack([d[:, labels == c] @ w[:, labels == c].T for c in classes])  # (C, N, B)
    sizes = np.stack([w[:, labels == c].sum(1) for c in classes])  # (C, B)
    own = np.searchsorted(classes, labels)  # (N,)
    n_idx = np.arange(len(labels))
    own_sum = sums[own, n_idx]  # (N, B)
    own_size = sizes[own] - w.T  # (N, B): the image's own copies left out
    with np.errstate(invalid="ignore", divide="ignore"):
        a = own_sum / own_size
        means = sums / sizes[:, None, :]  # (C, N, B)
        means[own, n_idx] = np.inf
        b = means.min(0)
        s = np.where(own_size > 0, (b - a) / np.maximum(a, b), 0.0)  # sklearn: 0 for singletons
    s = np.nan_to_num(s)
    return (s * w.T).sum(0) / w.sum(1)


def knn_accuracy(order: np.ndarray, labels: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """(B,) leave-one-out k-NN accuracy of each resample, from each image's other images sorted
    by distance (``order``, (N, N - 1), nearest first, stable). A neighbour counts with its
    multiplicity; an image's own copies are never its neighbours. Majority vote, a tie goes to
    the nearest neighbour's class if it is among the tied, else to the lowest class index; a row
    of ones gives ``metrics.knn_accuracy``."""
    labels = np.asarray(labels)
    n_classes = int(labels.max()) + 1
    b, n = counts.shape
    w = counts.astype(np.int64)
    correct = np.zeros(b)
    prefix = min(order.shape[1], 8 * k + 32)  # enough drawn neighbours for k, all but surely
    rows = np.arange(b)
    onehot = np.eye(n_classes, dtype=np.int64)[labels]
    for i in range(n):
        drawn = w[:, i] > 0
        if not drawn.any():
            continue
        nb = order[i, :prefix]
        wn = w[:, nb]  # (B, P)
        before = np.cumsum(wn, 1) - wn
        take = np.clip(k - before, 0, wn)  # copies of each neighbour inside the first k
        votes = take @ onehot[nb]  # (B, classes)
        best = votes == votes.max(1, keepdims=True)
        first = labels[nb][np.argmax(wn > 0, 1)]  # the nearest drawn neighbour's class
        pred = np.where(best[rows, first], first, np.argmax(best, 1))
        correct += np.where(drawn, w[:, i] * (pred == labels[i]), 0)
    return correct / w.sum(1)


def trustworthiness(
    x_order: np.ndarray, y_order: np.ndarray, member: np.ndarray, k: int
) -> np.ndarray:
    """(B,) trustworthiness of each half-sample (0/1 ``member``): sklearn's formula over the
    members only, with ranks among the members. ``x_order``/``y_order``: each image's other
    images by distance in the high-dimensional space and in the map, (N, N - 1)."""
    b, n = member.shape
    pos_x = np.zeros((n, n), np.int64)  # pos_x[i, j]: position of j in i's order in x
    pos_x[np.arange(n)[:, None], x_order] = np.arange(x_order.shape[1])
    penalty = np.zeros(b)
    for i in range(n):
        drawn = member[:, i] > 0
        in_y = member[:, y_order[i]]  # (B, N - 1)
        first_k = (np.cumsum(in_y, 1) <= k) & (in_y > 0)  # the k nearest members in the map
        rank_x = np.cumsum(member[:, x_order[i]], 1)  # 1-based rank among members, by position
        ranks = np.take_along_axis(rank_x, pos_x[i, y_order[i]][None].repeat(b, 0), 1)
        penalty += np.where(drawn, (np.maximum(ranks - k, 0) * first_k).sum(1), 0)
    m = member.sum(1).astype(float)
    return 1 - 2 / (m * k * (2 * m - 3 * k - 1)) * penalty


def cluster_distances(
    x: np.ndarray, labels: np.ndarray, classes: list[int], counts: np.ndarray, kind: str
) -> np.ndarray:
    """(B, P) distances between categories in each resample, upper triangle in
    ``np.triu_indices`` order (P = C (C - 1) / 2): between the centroids of the drawn images
    (``centroid``), or the mean distance over pairs of drawn images (``pairwise``); a row of
    ones gives ``wordnet.cluster_distances``."""
    labels = np.asarray(labels)
    x = np.asarray(x, np.float64)
    w = counts.astype(np.float64)
    groups = [labels == c for c in classes]
    i, j = np.triu_indices(len(classes), 1)
    if kind == "centroid":
        centroids = np.stack(
            [(w[:, g] @ x[g]) / w[:, g].sum(1, keepdims=True) for g in groups], 1
        )  # (B, C, D)
        return np.linalg.norm(centroids[:, i] - centroids[:, j], axis=2)
    out = np.empty((len(w), len(i)))
    for p, (a, b) in enumerate(zip(i, j)):
        ga, gb = groups[a], groups[b]
        d = np.sqrt(((x[ga][:, None] - x[gb][None]) ** 2).sum(2))
        out[:, p] = ((w[:, ga] @ d) * w[:, gb]).sum(1) / (w[:, ga].sum(1) * w[:, gb].sum(1))
    return out


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B,) Spearman correlation of each row of ``a`` (B, P) with the vector ``b`` (P,)."""
    ra = rankdata(a, axis=1)
    rb = rankdata(b)
    ra = ra - ra.mean(1, keepdims=True)
    rb = rb - rb.mean()
    return (ra @ rb) / np.sqrt((ra**2).sum(1) * (rb**2).sum())
