"""Clustering metrics rise with planted clusters, sit at chance when shuffled, and never NaN."""

import numpy as np

from en_analysis import Run
from en_analysis.analysis.metrics import clustering_table, knn_accuracy, label_metrics, silhouette
from en_analysis.analysis.spaces import is_degenerate, scale_ratios, standardize

from test_embedding import planted


def test_metrics_rise_as_clusters_are_planted():
    rng = np.random.default_rng(0)
    values = []
    for separation in (0.0, 0.5, 1.5, 4.0):
        x, labels = planted(separation=separation, seed=2)
        values.append(label_metrics(x, labels, 5, rng))
    sil = [v["silhouette"][0] for v in values]
    knn = [v["knn"][0] for v in values]
    assert sil == sorted(sil) and knn == sorted(knn)
    assert sil[-1] > 0.5 and knn[-1] > 0.95 and knn[0] < 0.5
    for v in values:  # shuffled labels: no clusters
        assert abs(v["silhouette"][1]) < 0.1 and v["knn"][1] < 0.5


def test_knn_known_values():
    x = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    assert knn_accuracy(x, np.array([0, 0, 0, 1, 1, 1]), k=2) == 1.0
    assert knn_accuracy(x, np.array([0, 1, 0, 1, 0, 1]), k=1) == 0.0


def test_degenerate_inputs_give_numbers_not_nan():
    x = np.ones((12, 4))
    labels = np.arange(12) % 3
    assert is_degenerate(x) and silhouette(x, labels) == 0.0
    assert knn_accuracy(x, labels) == 1 / 3
    z = standardize(x)
    assert np.isfinite(z).all() and (z == 0).all()


def test_scalings():
    rng = np.random.default_rng(0)
    r = rng.dirichlet([5, 5, 5], size=(10, 4))
    assert scale_ratios(r, "raw").shape == (10, 12)
    np.testing.assert_allclose(scale_ratios(r, "zscore").std(0), 1)
    clr = scale_ratios(r, "clr").reshape(10, 4, 3)
    np.testing.assert_allclose(clr.sum(2), 0, atol=1e-12)


def test_run_table_has_every_space_and_baseline(analysed_run):
    run = Run(analysed_run)
    table = clustering_table(run)
    assert set(table.space) == {"ratios", "random-head", "statistics", "features", "pixels"}
    ratios = table[(table.space == "ratios") & (table.dims == "high")]
    assert set(ratios.metric) == {"silhouette", "knn", "centroid_shift"}
    assert "degenerate" in ratios[ratios.epoch == 0].note.iloc[0]
    trust = table[table.metric == "trustworthiness"]
    assert len(trust) == 3 and trust.shuffled.isna().all()
    shift = table[table.metric == "centroid_shift"]
    assert shift.epoch.tolist() == [1, 2] and (shift.value > 0).all()
    # a map of identical points has no trustworthiness; everything else is a number
    assert trust.value.isna().tolist() == [True, False, False]
    assert table[~table.metric.isin(["trustworthiness"])].value.notna().all()
    # every number has an interval, but the degenerate epoch and the metrics that have none
    live = table[(table.epoch > 0) & (table.metric != "centroid_shift")]
    assert live.ci_low.notna().all() and (live.ci_low <= live.ci_high).all()
    labelled = live[live.metric.isin(["silhouette", "knn"])]
    assert labelled.shuffled_ci_low.notna().all()


def test_ratio_movement_known_values():
    from en_analysis.analysis.metrics import ratio_movement

    uniform = np.full((5, 2, 3), 1 / 3)
    assert ratio_movement(uniform) == {
        "std_across_samples": 0.0,
        "mean_shift": 0.0,
        "max_shift": 0.0,
    }
    moved = uniform.copy()
    moved[:, 1] = [0.5, 0.25, 0.25]
    m = ratio_movement(moved)
    assert m["max_shift"] == np.float64(0.5 - 1 / 3) and m["mean_shift"] == m["max_shift"] / 2


def test_centroid_shift_is_zero_for_still_clusters_and_grows_with_movement():
    from en_analysis.analysis.metrics import centroid_shift

    x, labels = planted(separation=3.0, seed=1)
    assert centroid_shift(x, x, labels) == 0.0
    small = centroid_shift(x, x + 0.1, labels)
    moved = x.copy()
    moved[labels == 0] += 5.0
    assert 0 < small < centroid_shift(x, moved, labels)
    assert np.isnan(centroid_shift(x, np.ones_like(x), labels))  # degenerate: no spread
