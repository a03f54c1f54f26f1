"""Intervals: the vectorised resampled statistics equal the plain ones and a naive copy-by-copy
implementation, and the 95% intervals cover the population value in >= 85 of 100 draws."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness
from sklearn.metrics import silhouette_score

from en_analysis.analysis import bootstrap
from en_analysis.analysis.metrics import knn_accuracy, neighbour_order
from en_analysis.analysis.statistics import cluster_distances, upper

CENTRES = np.array([[0.0, 0.0], [2.0, 0.5], [1.0, 2.0]])  # one fixed population of 3 classes


def blobs(n_per=20, seed=0):
    """A sample of ``n_per`` images per class from the fixed population."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CENTRES)), n_per)
    return CENTRES[labels] + rng.normal(0, 1, (len(labels), 2)), labels


def test_a_row_of_ones_gives_the_plain_statistics():
    x, labels = blobs(seed=1)
    ones = np.ones((1, len(labels)), np.int32)
    d = squareform(pdist(x))
    order = neighbour_order(d)
    assert bootstrap.silhouette(d, labels, ones)[0] == pytest.approx(silhouette_score(x, labels))
    assert bootstrap.knn_accuracy(order, labels, ones, 5)[0] == knn_accuracy(x, labels, 5)
    y = x[:, :1] + 0.3 * np.random.default_rng(2).normal(size=(len(x), 1))
    y_order = neighbour_order(squareform(pdist(y)))
    assert bootstrap.trustworthiness(order, y_order, ones, 5)[0] == pytest.approx(
        trustworthiness(x, y, n_neighbors=5)
    )
    for kind in ("crossvalidated", "centroid", "pairwise"):
        expected = upper(cluster_distances(x, labels, [0, 1, 2], kind))
        got = bootstrap.cluster_distances(x, labels, [0, 1, 2], ones, kind)[0]
        np.testing.assert_allclose(got, expected)
    a = np.random.default_rng(3).random((4, 10))
    b = np.random.default_rng(4).random(10)
    np.testing.assert_allclose(bootstrap.spearman_rows(a, b), [spearmanr(r, b)[0] for r in a])


def _naive(x, labels, counts, k):
    """The resample built copy by copy; an image's copies are never its neighbours nor in its
    own-category distances; for k-NN each copy is judged by the k nearest distinct other
    images drawn (one vote each)."""
    idx = np.repeat(np.arange(len(labels)), counts)
    xs, ls = x[idx], labels[idx]
    d = squareform(pdist(xs))
    same_origin = idx[:, None] == idx[None]
    first_copy = np.r_[True, idx[1:] != idx[:-1]]  # one entry per distinct drawn image
    correct, sil = 0, []
    for i in range(len(idx)):
        dist = np.where(same_origin[i] | ~first_copy, np.inf, d[i])
        nearest = np.argsort(dist, kind="stable")[:k]
        votes = np.bincount(ls[nearest], minlength=labels.max() + 1)
        best = np.flatnonzero(votes == votes.max())
        correct += (ls[nearest[0]] if ls[nearest[0]] in best else best[0]) == ls[i]
        own = (ls == ls[i]) & ~same_origin[i]
        a = d[i, own].mean() if own.any() else 0.0
        b = min(d[i, ls == c].mean() for c in np.unique(ls) if c != ls[i])
        sil.append(0.0 if not own.any() else (b - a) / max(a, b))
    return correct / len(idx), float(np.mean(sil))


def test_resampled_statistics_equal_a_naive_copy_by_copy_implementation():
    x, labels = blobs(n_per=8, seed=5)
    counts = bootstrap.bootstrap_counts(labels, 6, np.random.default_rng(6))
    assert (counts > 1).any()  # there are copies to get wrong
    d = squareform(pdist(x))
    knn = bootstrap.knn_accuracy(neighbour_order(d), labels, counts, 3)
    sil = bootstrap.silhouette(d, labels, counts)
    for b in range(len(counts)):
        expected_knn, expected_sil = _naive(x, labels, counts[b], 3)
        assert knn[b] == pytest.approx(expected_knn)
        assert sil[b] == pytest.approx(expected_sil)


def test_resamples_keep_each_category_and_its_size():
    labels = np.repeat([0, 1, 2], [5, 7, 9])
    rng = np.random.default_rng(0)
    counts = bootstrap.bootstrap_counts(labels, 50, rng)
    for c in range(3):
        assert (counts[:, labels == c].sum(1) == (labels == c).sum()).all()
    member = bootstrap.half_samples(labels, 50, rng)
    assert set(np.unique(member)) == {0, 1}
    assert [int(member[0, labels == c].sum()) for c in range(3)] == [2, 3, 4]


def _coverage(statistic, resampled, interval, draws=100, n_per=20, seed=0):
    """How many of ``draws`` independent samples' 95% intervals cover the population value (the
    statistic's mean over 2,000 further independent samples of the same size)."""
    rng = np.random.default_rng(seed)
    population = np.mean(
        [statistic(*blobs(n_per, seed=int(s))) for s in rng.integers(1e9, size=2000)]
    )
    covered = 0
    for s in rng.integers(1e9, size=draws):
        x, labels = blobs(n_per, seed=int(s))
        replicates = resampled(x, labels, rng)
        lo, hi = interval(statistic(x, labels), replicates)
        covered += lo <= population <= hi
    return covered


def _knn_replicates(x, labels, rng):
    order = neighbour_order(squareform(pdist(x)))
    return bootstrap.knn_accuracy(order, labels, bootstrap.bootstrap_counts(labels, 200, rng), 5)


def _silhouette_replicates(x, labels, rng):
    d = squareform(pdist(x))
    return bootstrap.silhouette(d, labels, bootstrap.bootstrap_counts(labels, 200, rng))


def _map(x):
    """A fixed, imperfect 2-D -> 1-D map: its trustworthiness is well below 1."""
    return x[:, :1] + 0.5 * x[:, 1:] ** 2


def _trust(x, labels):
    return trustworthiness(x, _map(x), n_neighbors=5)


def _trust_replicates(x, labels, rng):
    orders = [neighbour_order(squareform(pdist(v))) for v in (x, _map(x))]
    return bootstrap.trustworthiness(*orders, bootstrap.half_samples(labels, 200, rng), 5)


@pytest.mark.parametrize(
    "statistic, resampled",
    [
        (lambda x, lab: knn_accuracy(x, lab, 5), _knn_replicates),
        (lambda x, lab: silhouette_score(x, lab), _silhouette_replicates),
        (_trust, _trust_replicates),
    ],
    ids=["knn", "silhouette", "trustworthiness"],
)
def test_intervals_are_calibrated(statistic, resampled):
    """Measured: 99, 95 and 97 of 100."""
    assert _coverage(statistic, resampled, bootstrap.centred_interval) >= 85


def test_nearest_is_the_prefix_of_the_full_neighbour_order():
    from en_analysis.analysis.metrics import nearest

    x, labels = blobs(n_per=30, seed=7)
    x = np.c_[x, np.random.default_rng(8).normal(size=(len(x), 3))]  # no distance ties
    full = neighbour_order(squareform(pdist(x)))
    np.testing.assert_array_equal(nearest(x, 12), full[:, :12])
    np.testing.assert_array_equal(nearest(x, 1000, block=7), full)  # every other, in blocks


def test_knn_with_only_a_prefix_of_the_neighbours_equals_the_full_list():
    """The resampled k-NN reads each image's first 2k + 10 neighbours and falls back on the
    whole list for the rare draw that leaves fewer than k of them drawn."""
    x, labels = blobs(n_per=40, seed=9)
    order = neighbour_order(squareform(pdist(x)))
    counts = bootstrap.bootstrap_counts(labels, 300, np.random.default_rng(10))
    counts[0, order[0, :15]] = 0  # image 0 keeps none of its 15 nearest: the fallback
    counts[0, 0] = max(counts[0, 0], 1)
    full = bootstrap.knn_accuracy(order, labels, counts, 5)
    for b in (0, 1, 2):  # copy by copy
        expected, _ = _naive(x, labels, counts[b], 5)
        assert full[b] == pytest.approx(expected)


def test_label_permutations_are_plain_knn_with_permuted_labels():
    x, labels = blobs(n_per=10, seed=11)
    order = neighbour_order(squareform(pdist(x)))
    perms = np.stack([np.random.default_rng(s).permutation(len(labels)) for s in range(5)])
    null = bootstrap.knn_label_permutations(order, labels, perms, 5)
    np.testing.assert_allclose(null, [knn_accuracy(x, labels[p], 5) for p in perms])
