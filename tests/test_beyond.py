"""Beyond the paper, on planted data: a layer whose ratios encode the category decodes above
chance and one that does not decodes at chance; linear CKA of a representation with itself is 1
and with an independent one near 0; the noise ceiling of a reliable geometry is near 1 and of
pure noise near 0; and each step on a run."""

import json

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import LeaveOneOut, cross_val_predict

from en_analysis import Run
from en_analysis.analysis.decoding import (
    ALPHA,
    feature_sets,
    loo_accuracy,
    set_accuracies,
    stage,
    write_decoding,
)
from en_analysis.analysis.spaces import standardize
from en_analysis.analysis.stability import EpochCKA, hsic, linear_cka, write_stability
from en_analysis.analysis.statistics import split_half_reliability

LABELS = np.repeat(np.arange(5), 30)


def test_a_layer_that_encodes_the_category_decodes_above_chance_and_one_that_does_not_at_chance():
    rng = np.random.default_rng(0)
    encoding = rng.normal(size=(5, 3))[LABELS] + 0.5 * rng.normal(size=(150, 3))
    noise = rng.normal(size=(150, 3))
    assert loo_accuracy(encoding, LABELS) > 0.6  # chance: 0.2
    chance = [loo_accuracy(rng.normal(size=(150, 3)), LABELS) for _ in range(20)]
    assert abs(np.mean(chance) - 0.2) < 0.05 and loo_accuracy(noise, LABELS) < 0.35


@pytest.mark.parametrize("classes, dims", [(2, 4), (5, 4), (5, 100)])
def test_leave_one_out_decoding_equals_refitting_without_each_image(classes, dims):
    """Against scikit-learn's RidgeClassifier refitted without each image (more features than
    images: the closed form solved in the images)."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(classes), 12)
    x = rng.normal(size=(classes, dims))[labels] + rng.normal(size=(len(labels), dims))
    brute = cross_val_predict(
        RidgeClassifier(alpha=ALPHA), standardize(x), labels, cv=LeaveOneOut()
    )
    assert loo_accuracy(x, labels) == pytest.approx((brute == labels).mean())


def test_each_feature_set_decodes_as_its_columns_do():
    """Wide sets decoded from the sum of their layers' Gram matrices, narrow ones from their
    columns: both equal ``loo_accuracy`` of the set's columns side by side."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(4), 15)  # 60 images
    names = ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1"]
    raw = [rng.normal(size=(4, d))[labels] + rng.normal(size=(60, d)) for d in (3, 40, 30, 70)]
    sets = feature_sets(names)
    got = set_accuracies([standardize(b) for b in raw], sets, labels)
    expected = [loo_accuracy(np.concatenate([raw[j] for j in s[3]], 1), labels) for s in sets]
    # one image's near-tie may fall either way under another summation order
    np.testing.assert_allclose(got, expected, atol=1.01 / len(labels), rtol=0)
    assert {sum(raw[j].shape[1] for j in s[3]) >= 60 for s in sets} == {True, False}  # both


def test_feature_sets_are_layers_stages_and_all():
    names = ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer2.0.bn1"]
    sets = feature_sets(names)
    assert [s for s in sets if s[0] == "stage"] == [
        ("stage", "stem", 0, [0]),
        ("stage", "layer1", 1, [1, 2]),
        ("stage", "layer2", 2, [3]),
    ]
    assert sets[-1] == ("all", "all", 0, [0, 1, 2, 3]) and stage("layer3.2.bn1") == "layer3"


def test_linear_cka_of_itself_is_one_and_of_an_independent_representation_near_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 20))
    rotated = x @ np.linalg.qr(rng.normal(size=(20, 20)))[0] * 3.0
    assert linear_cka(x, x)[0] == pytest.approx(1.0)
    assert linear_cka(x, rotated)[0] == pytest.approx(1.0)  # invariant to rotation and scale
    assert linear_cka(x, rng.normal(size=(300, 20)))[0] < 0.1


def _unbiased_hsic(k, g):
    """Song et al.'s unbiased HSIC as Kornblith et al.'s code computes it: the Gram matrices
    centred the unbiased way (diagonal zeroed, row means over n - 2), their inner product
    over n (n - 3)."""

    def centre(gram):
        n = len(gram)
        gram = gram.copy()
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None] + means[None, :]
        np.fill_diagonal(gram, 0)
        return gram

    n = len(k)
    return centre(k).ravel() @ centre(g).ravel() / (n * (n - 3))


def test_hsic_is_the_unbiased_estimator_of_the_resample_built_copy_by_copy():
    """On the sample: the unbiased HSIC. On a resample: the same estimator on the resample
    built copy by copy, pairs of copies of one image left out (zeroed, as the diagonal is)."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(25, 4)), rng.normal(size=(25, 6))
    k, g = x @ x.T, y @ y.T
    assert hsic(k, g, np.ones((1, 25)))[0] == pytest.approx(_unbiased_hsic(k, g), rel=1e-9)
    for w in rng.multinomial(25, np.full(25, 1 / 25), size=3):
        idx = np.repeat(np.arange(25), w)
        copies = idx[:, None] == idx[None]
        built = [np.where(copies, 0, m[np.ix_(idx, idx)]) for m in (k, g)]
        assert hsic(k, g, w[None].astype(float))[0] == pytest.approx(
            _unbiased_hsic(*built), rel=1e-9
        )


def test_epoch_cka_is_the_linear_cka_of_each_pair():
    rng = np.random.default_rng(6)
    vectors = {e: rng.normal(size=(30, d)) for e, d in ((0, 4), (1, 6), (2, 3))}
    counts = rng.multinomial(30, np.full(30, 1 / 30), size=3)
    cka = EpochCKA(vectors, {"plain": np.ones((1, 30)), "resampled": counts})
    for a, b in ((0, 1), (1, 2), (0, 2), (1, 1)):
        np.testing.assert_allclose(cka(a, b, "plain"), linear_cka(vectors[a], vectors[b]))
        np.testing.assert_allclose(
            cka(a, b, "resampled"), linear_cka(vectors[a], vectors[b], counts)
        )


def test_the_noise_ceiling_of_a_reliable_geometry_is_high_and_of_noise_low():
    rng = np.random.default_rng(4)
    reliable = rng.normal(0, 2, size=(5, 10))[LABELS] + rng.normal(size=(150, 10))
    assert split_half_reliability(reliable, LABELS, list(range(5)), 10, rng) > 0.9
    noise = rng.normal(size=(150, 10))
    assert split_half_reliability(noise, LABELS, list(range(5)), 10, rng) < 0.5
    assert np.isnan(split_half_reliability(noise[:30], LABELS[:30], [0], 2, rng))  # no pairs
    few = np.r_[0:3, 30:33, 60:63]  # 3 images a category: a half needs 2
    assert np.isnan(split_half_reliability(noise[few], LABELS[few], [0, 1, 2], 2, rng))


def test_the_decode_and_stability_steps(run_copy):
    run = Run(run_copy)
    result = write_decoding(run)
    table = result.table
    assert result.written and not write_decoding(run).written
    assert set(table.space) == {"ratios", "random-head", "statistics"}
    assert set(table.level) == {"layer", "stage", "all"} and table.epoch.nunique() == 3
    assert ((table.ci_low <= table.accuracy) & (table.accuracy <= table.ci_high)).all()
    result = write_stability(run)
    stability = result.table
    assert result.written and set(stability.measure) == {"cka", "rdm"}
    consecutive = stability[(stability.epoch_a == 1) & (stability.epoch_b == 2)]
    assert consecutive.ci_low.notna().all() and (consecutive.value <= 1 + 1e-9).all()
    # a table the plug-in CKA made (before the step's method 2) is redone
    records = json.loads(run.files.provenance.read_text())
    assert records["analysis/stability.csv"]["settings"]["method"] == 2
    del records["analysis/stability.csv"]["settings"]["method"]
    run.files.provenance.write_text(json.dumps(records))
    assert not write_decoding(Run(run_copy)).written
    assert write_stability(Run(run_copy)).written


def test_the_explorer_shows_the_decoding_map_beside_the_map(run_copy):
    from en_analysis.figures.explorer import explorer

    run = Run(run_copy)
    assert not any(t.type == "heatmap" for t in explorer(run).figure.data)  # not decoded yet
    write_decoding(run)
    figure = explorer(run).figure
    (heatmap,) = [t for t in figure.data if t.type == "heatmap"]
    assert list(heatmap.y) == run.embedded_epochs() and len(heatmap.x) == 53
    for frame in figure.frames:  # each epoch's row outlined when it is shown
        (shape,) = frame.layout.shapes
        assert shape.y0 == int(frame.name) - 0.5 and shape.y1 == int(frame.name) + 0.5


def test_wilson_interval_is_scipys():
    from scipy.stats import binomtest

    from en_analysis.analysis.decoding import wilson

    for hits, n in ((0, 10), (37, 500), (500, 500)):
        ci = binomtest(hits, n).proportion_ci(method="wilson")
        assert wilson(hits, n) == pytest.approx((ci.low, ci.high), abs=1e-8)
