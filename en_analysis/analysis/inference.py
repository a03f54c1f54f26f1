"""Tests and intervals for the verdict: resampled differences, ranks among random heads,
Holm's adjustment, equivalence (two one-sided tests) and the decision rule.

Every verdict row is a ``Result``: an estimate, its 95% interval, a two-sided p-value for "the
estimate equals ``null``" and, where a margin is declared, the p-value of the equivalence test
"the estimate is within ``null`` +- ``margin``". The interval is the *re-centred percentile*
interval: the point estimate plus the central 95% of the replicates' deviations from their own
mean, which removes the resampling's own bias to first order (copies make a resample clumpier,
resampled centroids noisier). Its p-value is that interval inverted - twice the share of the
re-centred replicates on the far side of ``null`` - so p < alpha exactly when the 1 - alpha
interval excludes ``null`` (up to the +1 of a Monte Carlo p-value), whatever the distribution's
skew. Equivalence is the same construction at ``null`` -+ ``margin`` (two one-sided tests):
p < alpha when the 1 - 2 alpha interval lies inside the margin.

``decide`` turns a row into ``holds`` (the estimate differs from ``null`` in the claimed
direction, Holm-adjusted p < alpha), ``does not hold`` (it differs in the other direction, or is
shown equivalent to ``null`` within the margin: "no better than"), ``inconclusive`` (neither) or
``not measured``. An inconclusive row never means "the same": only the equivalence test can
say that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
ALPHA = 1 - LEVEL
HOLDS, FAILS, INCONCLUSIVE, UNMEASURED = "holds", "does not hold", "inconclusive", "not measured"


@dataclass(frozen=True)
class Result:
    """One test's result: estimate, 95% interval, two-sided p for ``estimate == null``, and
    the equivalence p for ``|estimate - null| < margin`` (NaN without a margin)."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    null: float = 0.0
    margin: float = float("nan")
    p_equivalence: float = float("nan")

    @property
    def measured(self) -> bool:
        """Whether the test was computed: a finite estimate and p-value (not ``NOT_MEASURED``)."""
        return bool(np.isfinite(self.estimate) and np.isfinite(self.p_value))


NOT_MEASURED = Result(*(float("nan"),) * 4)


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, float).ravel()
    return v[np.isfinite(v)]


def tail_p(null_values: np.ndarray, observed: float, upper: bool) -> float:
    """Monte Carlo one-sided p: (1 + #null >= observed) / (1 + n), or <= with ``upper=False``."""
    v = _finite(null_values)
    tie = 1e-12 * max(1.0, abs(observed))  # equal up to rounding counts as reaching it
    hits = (v >= observed - tie).sum() if upper else (v <= observed + tie).sum()
    return float((1 + hits) / (1 + len(v)))


def two_sided_p(null_values: np.ndarray, observed: float) -> float:
    """Twice the smaller tail, at most 1."""
    return min(
        1.0, 2 * min(tail_p(null_values, observed, True), tail_p(null_values, observed, False))
    )


def bootstrap_test(
    point: float,
    replicates: np.ndarray,
    null: float = 0.0,
    margin: float = float("nan"),
) -> Result:
    """``Result`` of a point estimate from its bootstrap replicates: the re-centred percentile
    interval, its inversion as the p-value (the share of re-centred replicates on the far side
    of ``null``, twice the smaller one), and with ``margin`` the two one-sided tests of
    equivalence (the shares beyond ``null`` -+ ``margin``)."""
    r = _finite(replicates)
    if not len(r) or not np.isfinite(point):
        return Result(float(point), float("nan"), float("nan"), float("nan"), null, margin)
    centred = point + (r - r.mean())  # the estimate's resampling distribution, bias removed
    low, high = np.quantile(centred, [ALPHA / 2, 1 - ALPHA / 2])
    p = two_sided_p(centred, null)
    p_eq = float("nan")
    if np.isfinite(margin):
        above_lower = tail_p(centred, null - margin, upper=False)  # H0: theta <= null - m
        below_upper = tail_p(centred, null + margin, upper=True)  # H0: theta >= null + m
        p_eq = max(above_lower, below_upper)
    return Result(float(point), float(low), float(high), p, null, margin, p_eq)


def permutation_test(
    point: float, null_values: np.ndarray, replicates: np.ndarray, margin: float = float("nan")
) -> Result:
    """``Result`` of "no structure": the estimate is ``point`` minus the permutation
    distribution's mean, p the two-sided permutation p (deviation from that mean), the
    interval and the equivalence p from the bootstrap ``replicates`` of ``point``."""
    v = _finite(null_values)
    centre = float(v.mean())
    deviation = abs(point - centre)
    p = float((1 + (np.abs(v - centre) >= deviation - 1e-12).sum()) / (1 + len(v)))
    interval = bootstrap_test(point - centre, np.asarray(replicates) - centre, 0.0, margin)
    return Result(
        point - centre, interval.ci_low, interval.ci_high, p, 0.0, margin, interval.p_equivalence
    )


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN: not in the family)."""
    p = np.asarray(p, float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def decide(
    test: Result, p_holm: float, p_equivalence_holm: float, alpha: float = ALPHA
) -> tuple[str, str]:
    """(verdict, reading) of a row whose claim is "the estimate is above ``test.null``"."""
    if not test.measured:
        return UNMEASURED, ""
    if p_holm < alpha:
        if test.estimate > test.null:
            return HOLDS, "above"
        return FAILS, "below"
    if np.isfinite(p_equivalence_holm) and p_equivalence_holm < alpha:
        return FAILS, f"no better: equivalent within +-{test.margin:g}"
    return INCONCLUSIVE, "neither a difference nor an equivalence shown"


def two_level(points: np.ndarray, replicates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B,) replicates of the mean over runs (seeds) of a statistic, resampling the runs as well
    as the images (or categories): ``replicates`` (S, B) hold each run's statistic on the same
    B draws of the shared images; each replicate draws S runs with replacement and averages
    their values on that draw (a crossed design: the images are the same in every run)."""
    replicates = np.asarray(replicates, float)
    s, b = replicates.shape
    weights = rng.multinomial(s, np.full(s, 1 / s), size=b).T / s  # (S, B)
    return (weights * replicates).sum(0)
