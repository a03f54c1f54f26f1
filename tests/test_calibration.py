"""Every verdict test, calibrated on simulated data whose truth is known, at the default run's
operating point (10 categories x 50 images, 159-D; 45 category pairs with WordNet-like ties;
one population of categories, the images drawn anew in each of 1,000 draws):

- under a null the test rejects (p < 0.05, two-sided) in at most 5% of the draws (an exact
  binomial test of the observed rate against 5%);
- with a planted effect of the stated size it rejects in at least 80% of the draws;
- 95% intervals cover the true value: within Monte Carlo error of 95% (two-sided exact binomial
  test) for the settling contrast; *at least* 95% for the k-NN and correlation intervals, which
  are conservative at this operating point (coverage 0.98-0.999: resampling nearest-neighbour
  statistics and 10 categories widens them; the tests reject at most as often as they should,
  at the price of power). The observed rates are printed (pytest -s) and quoted in the README.

The stability step's intervals (not verdict rows) are checked the same way: the debiased CKA's
against the population CKA, the RDM correlation's against its mean over the draws; and the
decode step's Wilson intervals, whose lower bound says "above chance", for what they are:
valid as that one-sided test, short of 95% coverage (indicative, as the docs say).

The experiments live in ``en_analysis.analysis.simulate`` (warp-speed resampling: one resample per
draw); ``benchmarks/calibration.py`` prints the same table with every draw resampled 199 times.
"""

import pytest

from en_analysis.analysis import simulate

DRAWS = 1000


def _report(result):
    print(result)  # shown with pytest -s; the closing note quotes them
    return result


def test_knn_vs_chance_under_the_null_and_with_clusters():
    null = _report(simulate.knn_vs_chance(DRAWS, spread=0.0, seed=1))
    assert null.rejected.at_most(0.05)
    planted = _report(simulate.knn_vs_chance(300, spread=0.12, seed=2))  # 0.1 above chance
    assert planted.rejected.at_least(0.8)
    clustered = _report(simulate.knn_vs_chance(DRAWS, spread=0.3, seed=3))  # k-NN ~0.70
    assert clustered.covered.at_least(0.95)  # conservative (see the module's docstring)


@pytest.mark.parametrize("spread", [0.2, 0.35], ids=["k-NN 0.3", "k-NN 0.8"])
def test_paired_knn_difference_is_calibrated(spread):
    null = _report(simulate.knn_difference(DRAWS, spread, spread, seed=4))
    assert null.rejected.at_most(0.05) and null.covered.at_least(0.95)


def test_paired_knn_difference_has_power():
    planted = _report(simulate.knn_difference(300, 0.3, 0.25, seed=5))  # a difference of ~0.08
    assert planted.rejected.at_least(0.8) and planted.covered.at_least(0.95)


def test_mantel_under_the_null_and_with_a_relation():
    null = _report(simulate.mantel_null(DRAWS, relation=0.0, seed=6))
    assert null.rejected.at_most(0.05)
    planted = _report(simulate.mantel_null(300, relation=0.8, seed=7))
    assert planted.rejected.at_least(0.8)


def test_category_interval_of_r_covers():
    result = _report(simulate.category_interval(DRAWS, relation=0.6, seed=8))
    assert result.covered.at_least(0.95)


def test_paired_r_difference_is_calibrated():
    null = _report(simulate.correlation_difference(DRAWS, 0.6, 0.6, seed=9))
    assert null.rejected.at_most(0.05) and null.covered.at_least(0.95)


def test_settling_contrast_is_calibrated_and_has_power():
    same = _report(simulate.settling(DRAWS, 0.1, 0.1, seed=11))
    assert same.covered.near(0.95)
    planted = _report(simulate.settling(300, 0.2, 0.05, seed=12))
    # far from the null the interval is a little short (0.91 here): its p-value is tiny anyway
    assert planted.rejected.at_least(0.8) and planted.covered.at_least(0.9)


def test_seed_replicates_interval():
    result = _report(simulate.seeds_interval(300, seeds=3, seed=13))
    assert result.covered.at_least(0.95)


def test_ablation_accuracy_difference_is_calibrated():
    same = _report(simulate.accuracy_difference(DRAWS, 0.85, 0.85, seed=14))
    assert same.rejected.at_most(0.05) and same.covered.near(0.95)
    planted = _report(simulate.accuracy_difference(300, 0.85, 0.45, seed=15))  # 0.04 lower
    assert planted.rejected.at_least(0.8) and planted.covered.near(0.95)


@pytest.mark.parametrize("drift", [0.5, 2.0], ids=["CKA 0.7", "CKA 0.33"])
def test_stability_intervals_cover(drift):
    cka = _report(simulate.stability_interval(DRAWS, "cka", drift, seed=16))
    assert cka.covered.at_least(0.95)  # the population CKA (the plug-in CKA's bias misses it)
    rdm = _report(simulate.stability_interval(DRAWS, "rdm", drift, seed=17))
    assert rdm.covered.at_least(0.95)


def test_decoding_above_chance_is_valid_and_its_interval_indicative():
    for dims, draws in ((3, DRAWS), (159, 300)):  # no signal: leave-one-out at or below chance
        null = _report(simulate.decoding_interval(draws, dims, 0.0, seed=20 + dims))
        assert null.rejected.at_most(0.025)
    for dims, spread in ((3, 0.5), (159, 0.15)):  # accuracy ~0.25 and ~0.39
        planted = _report(simulate.decoding_interval(300, dims, spread, seed=30 + dims))
        assert planted.rejected.at_least(0.8) and planted.covered.at_least(0.85)
