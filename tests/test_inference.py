"""The verdict's statistics on known values: Holm's adjustment, the resampled test (its interval
and p-value agree, its p matches normal theory), equivalence, the permutation test, the
decision rule and the two-level resampling of seeds."""

import numpy as np
import pytest
from scipy.stats import norm

from en_analysis.analysis import inference
from en_analysis.analysis.inference import FAILS, HOLDS, INCONCLUSIVE, UNMEASURED, Result


def test_holm_known_values():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 -> 0.06 (monotone)
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    np.testing.assert_allclose(inference.holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    assert inference.holm([0.5, 0.9])[1] == 1.0  # capped at 1
    assert np.isnan(inference.holm([np.nan])).all()


def _gaussian(point, sd, n=20000, seed=0):
    """Replicates of a statistic whose resampling distribution is N(point - bias, sd^2)."""
    return point - 0.01 + sd * np.random.default_rng(seed).standard_normal(n)


@pytest.mark.parametrize("point", [0.0, 0.01, 0.03, 0.05, -0.04])
def test_the_interval_and_the_p_value_agree_and_match_normal_theory(point):
    """The 95% interval excludes the null exactly when p < 0.05; for a normal resampling
    distribution p is the normal two-sided p; the resampling bias (0.01 here) is removed."""
    sd = 0.02
    t = inference.bootstrap_test(point, _gaussian(point, sd))
    assert (t.ci_low > 0 or t.ci_high < 0) == (t.p_value < 0.05)
    assert t.p_value == pytest.approx(2 * norm.sf(abs(point) / sd), abs=0.02)  # 3 Monte Carlo SE
    assert t.ci_low == pytest.approx(point - 1.96 * sd, abs=0.002)
    assert t.ci_high == pytest.approx(point + 1.96 * sd, abs=0.002)


def test_equivalence_is_two_one_sided_tests():
    """Equivalent within the margin when the 90% interval lies inside it: p_equivalence is
    the larger one-sided p at -margin and +margin."""
    sd = 0.01
    inside = inference.bootstrap_test(0.002, _gaussian(0.002, sd), margin=0.03)
    expected = max(norm.sf((0.002 + 0.03) / sd), norm.sf((0.03 - 0.002) / sd))
    assert (
        inside.p_equivalence == pytest.approx(expected, abs=0.003) and inside.p_equivalence < 0.05
    )
    wide = inference.bootstrap_test(0.002, _gaussian(0.002, 0.05), margin=0.03)
    assert wide.p_equivalence > 0.05  # too uncertain to say "the same"
    assert np.isnan(inference.bootstrap_test(0.0, _gaussian(0.0, sd)).p_equivalence)


def test_a_constant_resampling_distribution_gives_no_evidence():
    t = inference.bootstrap_test(0.0, np.zeros(999))
    assert t.p_value == 1.0 and t.ci_low == t.ci_high == 0.0


def test_permutation_test():
    null = np.random.default_rng(1).normal(0.1, 0.01, 999)  # chance 0.1
    t = inference.permutation_test(0.13, null, 0.13 + np.zeros(10))
    assert t.estimate == pytest.approx(0.03, abs=0.002)
    assert t.p_value == pytest.approx(2 * norm.sf(3), abs=0.005)
    assert inference.permutation_test(0.5, null, np.full(10, 0.5)).p_value == 1 / 1000


def test_two_sided_rank_p():
    reference = np.arange(99.0)
    assert inference.two_sided_p(reference, 1000.0) == 2 / 100  # above every head
    assert inference.two_sided_p(reference, 49.0) == 1.0


@pytest.mark.parametrize(
    "estimate, p, p_eq, expected",
    [
        (0.1, 0.01, 0.9, HOLDS),
        (-0.1, 0.01, 0.9, FAILS),  # significantly the other way
        (0.001, 0.6, 0.01, FAILS),  # equivalent within the margin: no better
        (0.05, 0.2, 0.3, INCONCLUSIVE),  # neither
        (float("nan"), float("nan"), float("nan"), UNMEASURED),
    ],
)
def test_decision_rule(estimate, p, p_eq, expected):
    test = Result(estimate, estimate - 0.1, estimate + 0.1, p, 0.0, 0.02, p_eq)
    verdict, reading = inference.decide(test, p, p_eq)
    assert verdict == expected
    if expected == FAILS and p_eq < 0.05:
        assert reading.startswith("no better")


def test_two_level_resampling_adds_the_spread_of_the_runs():
    rng = np.random.default_rng(0)
    draws = rng.normal(0, 0.01, 4000)
    same = inference.two_level(np.zeros(3), np.tile(draws, (3, 1)), rng)
    np.testing.assert_allclose(same, draws)  # identical runs: only the images' spread
    apart = inference.two_level(
        np.array([-0.1, 0.0, 0.1]), np.array([-0.1, 0, 0.1])[:, None] + draws, rng
    )
    assert apart.std() > 2 * draws.std()  # runs that differ widen the interval
    assert apart.mean() == pytest.approx(0.0, abs=0.005)


@pytest.mark.parametrize("sign", [1, -1])
def test_interval_and_p_agree_for_a_skewed_resampling_distribution(sign):
    """The p-value is the interval inverted whatever the skew: p < 0.05 exactly when the 95%
    interval excludes the null, for nulls on either side of the estimate."""
    replicates = sign * np.random.default_rng(2).exponential(0.02, 20000)
    point = sign * 0.03
    for null in np.linspace(-0.08, 0.12, 41) * sign:
        t = inference.bootstrap_test(point, replicates, null)
        excluded = null < t.ci_low or null > t.ci_high
        if abs(null - t.ci_low) > 1e-3 and abs(null - t.ci_high) > 1e-3:  # not at the edge
            assert excluded == (t.p_value < 0.05), (null, t)
