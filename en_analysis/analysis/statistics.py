"""Distances between category clusters, and the Mantel test of a model distance matrix (WordNet)
against data distance matrices, plain or partial, with exact or random relabelings.

The Mantel statistic is Spearman's r between the upper triangles (Pearson's r of their average
ranks, so ties are handled). Its null distribution comes from relabelling the categories of the
model matrix: with k categories there are k! relabelings, all enumerated when k <= ``EXACT_MAX``
(10! = 3,628,800, vectorised in chunks: about a second), else ``permutations`` random ones.
The partial test (the data's relation to the model once a control's distances are accounted
for) residualises the data's and the relabelled model's ranks on the control's, and permutes the
model, as in Legendre & Legendre, Numerical Ecology (2012), ch. 10.5.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import rankdata

from ..core.errors import UserError

EXACT_MAX = 10  # enumerate every relabelling up to this many categories
CHUNK = 1 << 17  # relabelings per vectorised chunk (45 pairs: ~24 MB of float32)
TIES = 1e-5  # float32 r: relabelings within this of the observed |r| reach it


def cluster_distances(
    x: np.ndarray, labels: np.ndarray, classes: list[int], kind: str = "centroid"
) -> np.ndarray:
    """Distances between categories in a space: cross-validated squared distances between the
    category means (``crossvalidated_distances``), between centroids, or the mean pairwise
    distance."""
    if kind == "crossvalidated":
        return crossvalidated_distances(x, labels, classes)
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


def crossvalidated_distances(x: np.ndarray, labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """(C, C) cross-validated squared distances between category means, per dimension.

    The squared distance between two sample means is biased upward by the within-category noise
    (E|mean_a - mean_b|^2 = |mu_a - mu_b|^2 + tr(S_a)/n_a + tr(S_b)/n_b). This is its unbiased
    version: the mean over pairs of *distinct* images of each category of
    (x_i - y_j) . (x_i' - y_j'), i.e. every split of the images at once - rsatoolbox's
    cross-validated Euclidean (crossnobis with identity noise) with all splits averaged, divided
    by the number of dimensions as rsatoolbox does. It can be negative when two categories do
    not differ. Needs at least 2 images per category.
    """
    x = np.asarray(x, np.float64)
    means, corrections = [], []
    for c in classes:
        g = x[labels == c]
        if len(g) < 2:
            raise UserError("cross-validated distances need at least 2 images per category")
        m = g.mean(0)
        means.append(m)
        corrections.append(((g - m) ** 2).sum() / (len(g) - 1) / len(g))  # tr(S) / n
    means = np.stack(means)
    corrections = np.array(corrections)
    sq = (means**2).sum(1)
    d = sq[:, None] + sq[None] - 2 * means @ means.T
    d = d - corrections[:, None] - corrections[None]
    np.fill_diagonal(d, 0)
    return d / x.shape[1]


def split_half_reliability(
    x: np.ndarray, labels: np.ndarray, classes: list[int], splits: int, rng: np.random.Generator
) -> float:
    """The reliability of the category RDM (cross-validated distances): the Spearman r between
    the RDMs of two halves of every category's images, averaged over ``splits`` random splits,
    then Spearman-Brown corrected to the full sample, 2r / (1 + r). NaN with fewer than 4 images
    in a category (a half needs 2)."""
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == c) for c in classes]
    if min(len(g) for g in groups) < 4:
        return float("nan")
    values = []
    for _ in range(splits):
        first = np.zeros(len(labels), bool)
        for g in groups:
            first[rng.permutation(g)[: len(g) // 2]] = True
        halves = [
            upper(crossvalidated_distances(x[part], labels[part], classes))
            for part in (first, ~first)
        ]
        values.append(spearman(*halves))
    values = np.array(values)
    if not np.isfinite(values).any():  # fewer than 3 categories: no pairs to rank
        return float("nan")
    r = float(values[np.isfinite(values)].mean())
    return 2 * r / (1 + r) if r > -1 else float("nan")


def upper(d: np.ndarray) -> np.ndarray:
    """The upper triangle of a square matrix, in ``np.triu_indices`` order."""
    return d[np.triu_indices(len(d), 1)]


@lru_cache(maxsize=2)
def all_permutations(n: int) -> np.ndarray:
    """(n!, n) int8: every permutation of range(n), built by inserting one element at a time."""
    perms = np.zeros((1, 0), np.int8)
    for m in range(n):
        rows = []
        for position in range(m + 1):
            rows.append(np.insert(perms, position, m, axis=1))
        perms = np.concatenate(rows)
    perms.flags.writeable = False
    return perms


def relabelings(
    n: int, permutations: int, rng: np.random.Generator, exact_max: int = EXACT_MAX
) -> tuple[bool, list[np.ndarray]]:
    """(exact, chunks of relabelings): all n! when n <= ``exact_max``, else ``permutations``
    random ones (the identity not among them)."""
    if n <= exact_max:
        perms = all_permutations(n)
        return True, [perms[s : s + CHUNK] for s in range(0, len(perms), CHUNK)]
    keys = rng.random((permutations, n))
    perms = np.argsort(keys, 1).astype(np.int16)
    return False, [perms[s : s + CHUNK] for s in range(0, len(perms), CHUNK)]


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    r = rankdata(v, axis=-1)
    return r - r.mean(-1, keepdims=True)


def _unit(v: np.ndarray) -> np.ndarray | None:
    norm = np.linalg.norm(v)
    return v / norm if norm > 1e-12 else None


def mantel(
    model: np.ndarray,
    data: np.ndarray,
    permutations: int = 9999,
    rng: np.random.Generator | None = None,
    control: np.ndarray | None = None,
    average: bool = False,
    exact_max: int = EXACT_MAX,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Spearman r between a model distance matrix and each of several data matrices, and its
    two-sided Mantel p-value; with ``control``, the partial r given the control's distances.

    ``model`` (k, k); ``data`` (S, k, k) or (k, k); ``control`` (k, k). Plain test: the
    model's categories are relabelled. Partial test: Freedman-Lane - the data's ranks
    residualised on the control's are relabelled and residualised again (Legendre 2000: this
    keeps its level where relabelling the model does not, when the control relates to both).
    All k! relabelings when k <= ``exact_max``, else ``permutations`` random ones; p is the
    share of relabelings whose |r| reaches the observed |r| (random ones count the observed
    arrangement too: (1 + hits) / (1 + permutations)). ``average``: one test of the mean r over
    the S data matrices (seed replicates of one analysis), each relabelled alike. Returns
    (r, p, exact), NaN where a matrix is constant (no ranks to correlate).
    """
    model = np.asarray(model, float)
    data = np.asarray(data, float)
    data = data[None] if data.ndim == 2 else data
    k = len(model)
    if model.shape != (k, k) or data.shape[1:] != (k, k) or k < 3:
        raise UserError("mantel needs square matrices of the same size, at least 3 x 3")
    iu = np.triu_indices(k, 1)
    w = _centred_ranks(model[iu])
    a = _centred_ranks(data[:, iu[0], iu[1]])  # (S, P)
    unit = None if control is None else _unit(_centred_ranks(np.asarray(control, float)[iu]))
    if unit is not None:  # the ranks given the control's
        a = a - (a @ unit)[:, None] * unit
        w = w - (w @ unit) * unit
    # relabelled: the model (plain) or each data vector's residual (partial); fixed: the other
    moving = a if unit is not None else w[None]
    fixed = w[None] if unit is not None else a
    fixed_norm = np.linalg.norm(fixed, axis=1)
    valid = (np.linalg.norm(a, axis=1) > 1e-12) & (np.linalg.norm(w) > 1e-12)
    fixed_unit = (fixed / np.where(fixed_norm > 1e-12, fixed_norm, 1)[:, None]).astype(np.float32)
    moving32 = moving.astype(np.float32)
    moving_sq = (moving**2).sum(1).astype(np.float32)
    unit32 = None if unit is None else unit.astype(np.float32)

    def correlations(index: np.ndarray | None) -> np.ndarray:
        """(p, S) r of the relabelled vectors (``index``: where each pair's distance comes
        from; None: as observed); float32, r to ~1e-6 (``TIES``)."""
        if unit32 is None:  # one relabelled model against every data vector
            v = moving32[0] if index is None else moving32[0][index]
            v = np.atleast_2d(v)
            return (v @ fixed_unit.T) / np.sqrt(moving_sq[0])
        out = []
        for s in range(len(moving32)):  # each data residual relabelled, against the model
            v = np.atleast_2d(moving32[s] if index is None else moving32[s][index])
            along = v @ unit32
            norm = np.sqrt(np.maximum(moving_sq[s] - along**2, 1e-30))
            out.append((v @ fixed_unit[0]) / norm)
        return np.stack(out, 1)

    def statistic(r: np.ndarray) -> np.ndarray:
        return r.mean(1, keepdims=True) if average else r

    observed = statistic(correlations(None))[0]
    pair = np.zeros((k, k), np.int16)
    pair[iu] = np.arange(len(w))
    pair = (pair + pair.T).ravel()  # pair[i * k + j]: the index of the pair (i, j)
    exact, chunks = relabelings(k, permutations, rng or np.random.default_rng(0), exact_max)
    hits = np.zeros(len(observed))
    total = 0
    for perms in chunks:
        p = perms.astype(np.int16)
        index = pair[p[:, iu[0]] * k + p[:, iu[1]]]  # (p, P): where each pair's distance comes from
        r = statistic(correlations(index))
        hits += (np.abs(r) >= np.abs(observed) - TIES).sum(0)
        total += len(p)
    p_value = hits / total if exact else (1 + hits) / (1 + total)
    ok = valid.all(keepdims=True) if average else valid
    observed = np.where(ok, observed.astype(np.float64), np.nan)
    return observed, np.where(ok, p_value, np.nan), exact


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's r of two vectors (average ranks for ties); NaN when either is constant."""
    if len(a) < 2:
        return float("nan")
    ra, rb = _centred_ranks(np.asarray(a, float)), _centred_ranks(np.asarray(b, float))
    denominator = np.linalg.norm(ra) * np.linalg.norm(rb)
    return float(ra @ rb / denominator) if denominator > 1e-12 else float("nan")
