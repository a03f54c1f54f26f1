"""95% intervals for the clustering and WordNet numbers: the evaluation images resampled within
each category, ``analysis.bootstrap`` times, everything vectorised over the resamples.

A resample is a (B, N) array of counts: how often each image is drawn. Drawing with replacement
puts copies of one image in a resample, and a copy must never be its own neighbour or give a
zero distance to itself (it would inflate k-NN accuracy and shrink silhouettes). So:

- silhouette (``bootstrap_counts``, with replacement): an image's copies are left out of its
  own-category distances; other images count with their multiplicity.
- k-NN accuracy (with replacement): each image counts with its multiplicity; its neighbours
  are the distinct drawn images other than itself, each voting once (``knn_accuracy``).
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


def vote(slots: np.ndarray) -> np.ndarray:
    """The k-NN rule on the labels of each image's k nearest neighbours (``slots``, (..., k),
    nearest first): the majority label; a tie goes to the nearest neighbour's label if it is
    among the tied, else to the lowest tied label."""
    count = (slots[..., :, None] == slots[..., None, :]).sum(-1)  # votes for each slot's label
    tied = count == count.max(-1, keepdims=True)
    lowest = np.where(tied, slots, np.iinfo(slots.dtype).max).min(-1)
    return np.where(tied[..., 0], slots[..., 0], lowest)


def knn_accuracy(
    order: np.ndarray, labels: np.ndarray, counts: np.ndarray, k: int, chunk: int = 256
) -> np.ndarray:
    """(B,) leave-one-out k-NN accuracy of each resample, from each image's other images sorted
    by distance (``order``, (N, N - 1) or its first columns, nearest first). Each image counts
    with its multiplicity in the accuracy; its neighbours are the k nearest *distinct* drawn
    images, each voting once, and never its own copies. (Counting a neighbour drawn twice as two
    votes makes the votes clumpier than in any real sample: on simulated data at the default's
    operating point that widened the spread of the resampled accuracy to 1.2-1.6 times the true
    sampling spread, distinct neighbours to 1.1-1.2 times; ``simulate``.) The rule is ``vote``;
    a row of ones gives ``metrics.knn_accuracy``.

    Vectorised over the resamples: the k nearest drawn neighbours of every image are found in a
    short prefix of its neighbour list (each image is drawn with probability ~0.63, so the first
    ``4k + 20`` neighbours hold k drawn ones but for about 1 in 10^11 of the (resample, image)
    pairs, which are then read off the whole list)."""
    labels = np.asarray(labels)
    b, n = counts.shape
    prefix = min(order.shape[1], 4 * k + 20)
    near = order[:, :prefix]
    near_labels = labels[near].astype(np.int32)  # (N, P)
    drawn_once = np.minimum(counts, 1).astype(np.uint8)  # a drawn neighbour votes once
    columns = np.arange(n)[None, :]
    correct = np.zeros(b)
    for s in range(0, b, chunk):
        drawn = np.cumsum(drawn_once[s : s + chunk][:, near], axis=2, dtype=np.uint8)  # (b, N, P)
        slots = np.empty((*drawn.shape[:2], k), np.int32)
        for t in range(k):  # slot t: the (t + 1)-th drawn neighbour
            position = np.minimum((drawn <= t).sum(2), prefix - 1)
            slots[:, :, t] = near_labels[columns, position]
        short = np.argwhere((drawn[:, :, -1] < k) & (counts[s : s + chunk] > 0))
        for row, i in short:  # fewer than k drawn in the prefix: the whole list (or all given)
            taken = order[i][counts[s + row, order[i]] > 0][:k]
            slots[row, i] = -1 - np.arange(k)  # fewer than k in all: distinct labels, no votes
            slots[row, i, : len(taken)] = labels[taken]
        predicted = vote(slots)
        correct[s : s + chunk] = ((predicted == labels[None]) * counts[s : s + chunk]).sum(1)
    return correct / counts.sum(1)


def knn_label_permutations(
    order: np.ndarray, labels: np.ndarray, permutations: np.ndarray, k: int
) -> np.ndarray:
    """(P,) leave-one-out k-NN accuracy with the labels permuted (``permutations``, (P, N)
    indices): the null distribution of "no category structure" (the neighbours stay)."""
    labels = np.asarray(labels)
    near = order[:, :k]
    out = np.empty(len(permutations))
    for s in range(0, len(permutations), 256):
        permuted = labels[permutations[s : s + 256]].astype(np.int32)  # (p, N)
        predicted = vote(permuted[:, near])  # (p, N, k) -> (p, N)
        out[s : s + 256] = (predicted == permuted).mean(1)
    return out


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
    scale = m * k * (2 * m - 3 * k - 1)  # sklearn's normaliser: positive only for k < (2m - 1) / 3
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, 1 - 2 / scale * penalty, np.nan)


def cluster_distances(
    x: np.ndarray, labels: np.ndarray, classes: list[int], counts: np.ndarray, kind: str
) -> np.ndarray:
    """(B, P) distances between categories in each resample, upper triangle in
    ``np.triu_indices`` order (P = C (C - 1) / 2): cross-validated squared distances between
    the drawn images' means (``crossvalidated``: pairs of copies of one image left out, as pairs
    of one image are), between their centroids (``centroid``), or the mean distance over pairs
    of drawn images (``pairwise``); a row of ones gives ``statistics.cluster_distances``."""
    labels = np.asarray(labels)
    x = np.asarray(x, np.float64)
    w = counts.astype(np.float64)
    groups = [labels == c for c in classes]
    i, j = np.triu_indices(len(classes), 1)
    if kind in ("centroid", "crossvalidated"):
        sums = np.stack([w[:, g] @ x[g] for g in groups], 1)  # (B, C, D)
        sizes = np.stack([w[:, g].sum(1) for g in groups], 1)  # (B, C)
        means = sums / sizes[:, :, None]
        if kind == "centroid":
            return np.linalg.norm(means[:, i] - means[:, j], axis=2)
        # unbiased |mean_c|^2, pairs of one image out: (|S|^2 - sum w^2 |x|^2) / (W^2 - sum w^2)
        sq = (x**2).sum(1)
        own = np.stack([(w[:, g] ** 2) @ sq[g] for g in groups], 1)  # (B, C)
        pairs = sizes**2 - np.stack([(w[:, g] ** 2).sum(1) for g in groups], 1)
        unbiased = ((sums**2).sum(2) - own) / pairs  # (B, C)
        cross = (means[:, i] * means[:, j]).sum(2)  # (B, P)
        return (unbiased[:, i] + unbiased[:, j] - 2 * cross) / x.shape[1]
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


def category_draws(k: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, k): the categories drawn with replacement (rsatoolbox's bootstrap over conditions)."""
    return rng.integers(0, k, (n, k))


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis, NaN left out (and kept), centred."""
    r = rankdata(v, axis=-1, nan_policy="omit")
    count = np.isfinite(r).sum(-1, keepdims=True)
    return r - np.nansum(r, axis=-1, keepdims=True) / np.maximum(count, 1)


def category_correlations(
    model: np.ndarray,
    data: np.ndarray,
    draws: np.ndarray,
    control: np.ndarray | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """(S, B) Spearman r between the model's and each data vector's pair distances (upper
    triangles, (P,) and (S, P), of k categories) over the categories of each draw (``draws``,
    (B, k)); pairs of copies of one category are left out, as rsatoolbox's
    ``subsample_pattern`` does. With ``control`` (P,), the partial r given the control's
    distances (ranks residualised on the control's). NaN where a draw leaves fewer than 3
    pairs or a constant vector."""
    k = draws.shape[1]
    pair = np.zeros((k, k), np.int64)
    iu = np.triu_indices(k, 1)
    pair[iu] = np.arange(len(iu[0]))
    pair = pair + pair.T
    a, b = draws[:, iu[0]], draws[:, iu[1]]  # (B, P): the categories of each drawn pair
    index = pair[a, b]
    copies = a == b  # a category paired with its own copy: left out

    def drawn(v: np.ndarray) -> np.ndarray:
        """(..., B, P) the drawn pairs' values, NaN where left out, as centred ranks."""
        return _centred_ranks(np.where(copies, np.nan, v[..., index]))

    m = drawn(np.asarray(model, float))  # (B, P)
    unit = None
    if control is not None:
        c = drawn(np.asarray(control, float))
        norm = np.sqrt(np.nansum(c**2, -1, keepdims=True))
        unit = np.where(norm > 1e-12, c / np.where(norm > 0, norm, 1), 0)
        m = m - np.nansum(m * unit, -1, keepdims=True) * unit
    m_norm = np.sqrt(np.nansum(m**2, -1))
    data = np.atleast_2d(np.asarray(data, float))
    out = np.empty((len(data), len(draws)))
    for s in range(0, len(data), chunk):
        d = drawn(data[s : s + chunk])  # (s, B, P)
        if unit is not None:
            d = d - np.nansum(d * unit, -1, keepdims=True) * unit
        denominator = np.sqrt(np.nansum(d**2, -1)) * m_norm
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + chunk] = np.nansum(d * m, -1) / denominator
    out[:, (~copies).sum(1) < 3] = np.nan
    out[~np.isfinite(out) | (np.abs(out) > 1 + 1e-9)] = np.nan
    return out
