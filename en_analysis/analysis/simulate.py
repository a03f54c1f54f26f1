"""Simulated data whose truth is known, and the calibration of every verdict test on it.

The verdict's tests and intervals (``verdict``, ``inference``) are checked here at the default
run's operating point - 10 categories x 50 images, 159-D vectors, 45 category pairs with
WordNet-like ties - before they decide anything: under a null the rate of ``holds`` must stay
at 5% or below, with a planted effect of a stated size it must reach 80%, and 95% intervals
must cover the true value 95% of the time (within Monte Carlo error).

Each experiment draws ``draws`` independent datasets. An interval needs the resampling
distribution of its statistic; resampling every dataset B times would make 1,000 draws cost
B times as much, so the experiments use the *warp-speed* method (Giacomini, Politis & White,
Econometric Theory 2013): one resample per dataset (``resamples=1``), the deviations
(resampled minus point estimate) pooled over the datasets as every dataset's resampling
distribution - what makes 1,000 draws cheap enough for the test suite.
``benchmarks/calibration.py`` runs the full version (``resamples=199``: every dataset resampled
and tested on its own). The true value of an estimate is its mean over the draws (the estimand
is the expectation of the statistic at this sample size, for these categories).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist, squareform
from scipy.stats import binomtest

from . import bootstrap, inference
from .statistics import crossvalidated_distances, mantel, upper

K, PER_CATEGORY, DIMS = 10, 50, 159  # the default run's operating point


@dataclass(frozen=True)
class Rate:
    """How often something happened in ``n`` draws, with its exact 95% binomial interval."""

    hits: int
    n: int

    @property
    def value(self) -> float:
        """The observed rate, ``hits / n``."""
        return self.hits / self.n

    def interval(self) -> tuple[float, float]:
        """The rate's exact (Clopper-Pearson) 95% binomial interval, ``(low, high)``."""
        ci = binomtest(self.hits, self.n).proportion_ci(0.95, method="exact")
        return ci.low, ci.high

    def at_most(self, rate: float) -> bool:
        """Not significantly above ``rate`` (one-sided exact binomial test at 5%)."""
        return binomtest(self.hits, self.n, rate, alternative="greater").pvalue >= 0.05

    def at_least(self, rate: float) -> bool:
        """Not significantly below ``rate`` (one-sided exact binomial test at 5%)."""
        return binomtest(self.hits, self.n, rate, alternative="less").pvalue >= 0.05

    def near(self, rate: float) -> bool:
        """Consistent with ``rate`` (two-sided exact binomial test at 5%)."""
        return binomtest(self.hits, self.n, rate).pvalue >= 0.05

    def __str__(self) -> str:
        low, high = self.interval()
        return f"{self.hits}/{self.n} = {self.value:.3f} [{low:.3f}, {high:.3f}]"


def labels(k: int = K, per_category: int = PER_CATEGORY) -> np.ndarray:
    """The labels of a simulated evaluation set: ``per_category`` images of each of ``k``
    categories, in category order."""
    return np.repeat(np.arange(k), per_category)


def centres(rng: np.random.Generator, k: int = K, dims: int = DIMS, spread: float = 0.2):
    """(k, dims) category centres, N(0, spread^2) per dimension."""
    return rng.normal(0, spread, (k, dims))


def space(
    rng: np.random.Generator, centre: np.ndarray, lab: np.ndarray, shared: np.ndarray | None = None
) -> np.ndarray:
    """Images of the categories ``lab``: their centre plus unit noise; ``shared`` (N, dims),
    image-specific noise common to two spaces of the same images, replaces half the noise."""
    noise = rng.normal(size=(len(lab), centre.shape[1]))
    if shared is not None:
        noise = np.sqrt(0.5) * (noise + shared)
    return centre[lab] + noise


def wordnet_like(rng: np.random.Generator, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """(positions (k, 2), distances (k, k)): categories at random places in a plane, their
    distances rounded to 14 levels, as tied as Wu-Palmer's on Fashion-MNIST (31 of 45 ties)."""
    positions = rng.normal(size=(k, 2))
    d = squareform(pdist(positions))
    levels = np.quantile(upper(d), np.linspace(0, 1, 14))
    return positions, levels[np.abs(d[..., None] - levels).argmin(-1)] * (1 - np.eye(k))


def _order(x: np.ndarray) -> np.ndarray:
    from .metrics import nearest

    return nearest(x)


def _tests(
    points: np.ndarray, replicates: np.ndarray, null: float = 0.0, margin: float = float("nan")
) -> list[inference.Result]:
    """One ``inference.Result`` per draw from its point estimate and its resamples
    (``replicates``, (draws, R)): with one resample a draw (R = 1), the deviations of every
    draw's resample pooled as each draw's resampling distribution (warp-speed)."""
    points, replicates = np.asarray(points), np.asarray(replicates).reshape(len(points), -1)
    if replicates.shape[1] == 1:
        deviations = replicates[:, 0] - points
        return [inference.bootstrap_test(p, p + deviations, null, margin) for p in points]
    return [inference.bootstrap_test(p, r, null, margin) for p, r in zip(points, replicates)]


def _with_point(counts: np.ndarray) -> np.ndarray:
    """A row of ones (the sample itself) above the resamples."""
    return np.concatenate([np.ones((1, counts.shape[1]), counts.dtype), counts])


@dataclass
class Calibration:
    """Rejection and coverage rates of one experiment."""

    name: str
    rejected: Rate  # p < 0.05 (two-sided)
    covered: Rate | None = None  # the 95% interval holds the true value
    equivalent: Rate | None = None  # the equivalence test at the margin says "equivalent"
    truth: float = float("nan")  # the true value of the estimate (its mean over the draws)

    def __str__(self) -> str:
        truth = f" (true value {self.truth:.3f})" if np.isfinite(self.truth) else ""
        parts = [f"{self.name}{truth}: p < 0.05 in {self.rejected}"]
        if self.covered:
            parts.append(f"95% interval covers the truth in {self.covered}")
        if self.equivalent:
            parts.append(f"equivalent within the margin in {self.equivalent}")
        return "; ".join(parts)


def _summary(name: str, tests: list[inference.Result], truth: float | None = None) -> Calibration:
    rejected = Rate(sum(t.p_value < 0.05 for t in tests), len(tests))
    covered = None
    if truth is not None:
        covered = Rate(sum(t.ci_low <= truth <= t.ci_high for t in tests), len(tests))
    equivalent = None
    if np.isfinite(tests[0].margin):
        equivalent = Rate(sum(t.p_equivalence < 0.05 for t in tests), len(tests))
    return Calibration(name, rejected, covered, equivalent, np.nan if truth is None else truth)


def knn_vs_chance(
    draws: int, spread: float, seed: int = 0, permutations: int = 199, resamples: int = 1
) -> Calibration:
    """Claim 1's first row: k-NN accuracy against its label-permutation distribution, and the
    interval of the accuracy above chance. ``spread`` 0: no category structure (a null)."""
    rng = np.random.default_rng(seed)
    lab = labels()
    c = centres(rng, spread=spread)  # one population of categories; the images are drawn
    tests, points, replicates, chances = [], [], [], []
    for _ in range(draws):
        x = space(rng, c, lab)
        order = _order(x)
        ones = np.ones((1, len(lab)), np.int32)
        point = bootstrap.knn_accuracy(order, lab, ones, 5)[0]
        counts = bootstrap.bootstrap_counts(lab, resamples, rng)
        perms = np.argsort(rng.random((permutations, len(lab))), 1)
        null = bootstrap.knn_label_permutations(order, lab, perms, 5)
        points.append(point)
        replicates.append(bootstrap.knn_accuracy(order, lab, counts, 5))
        chances.append(null)
    intervals = _tests(np.array(points), np.array(replicates), margin=0.02)
    for p, null, interval in zip(points, chances, intervals):
        test = inference.permutation_test(p, null, np.zeros(1), 0.02)
        centre = p - test.estimate  # the permutation mean: the interval is of p - centre
        tests.append(
            dataclasses.replace(
                test, ci_low=interval.ci_low - centre, ci_high=interval.ci_high - centre
            )
        )
    truth = float(np.mean([t.estimate for t in tests]))
    return _summary(f"k-NN vs chance, spread {spread}", tests, truth)


def knn_difference(
    draws: int,
    spread_a: float,
    spread_b: float,
    seed: int = 0,
    margin: float = 0.02,
    resamples: int = 1,
) -> Calibration:
    """Claim 1's paired differences: k-NN accuracy of space A minus space B on the same images
    (half of each image's noise shared by both spaces), the same resample for both. One
    population of categories for every draw: B's category centres are A's with the dimensions
    permuted and scaled by ``spread_b / spread_a``; with equal spreads the two spaces are
    exchangeable and the true difference is 0 (a null)."""
    rng = np.random.default_rng(seed)
    lab = labels()
    centres_a = centres(rng, spread=spread_a)
    centres_b = centres_a[:, rng.permutation(DIMS)] * (spread_b / spread_a)
    points, replicates = [], []
    for _ in range(draws):
        shared = rng.normal(size=(len(lab), DIMS))
        xa = space(rng, centres_a, lab, shared)
        xb = space(rng, centres_b, lab, shared)
        counts = _with_point(bootstrap.bootstrap_counts(lab, resamples, rng))
        acc = [bootstrap.knn_accuracy(_order(x), lab, counts, 5) for x in (xa, xb)]
        difference = acc[0] - acc[1]
        points.append(difference[0])
        replicates.append(difference[1:])
    tests = _tests(np.array(points), np.array(replicates), margin=margin)
    truth = 0.0 if spread_a == spread_b else float(np.mean(points))
    return _summary(f"k-NN difference, spreads {spread_a} vs {spread_b}", tests, truth)


def mantel_null(draws: int, relation: float, seed: int = 0, permutations: int = 199) -> Calibration:
    """Claim 2's first row: the Mantel test of WordNet-like distances against the categories'
    cross-validated distances. The category centres are ``relation`` times the categories'
    WordNet positions (embedded in the first 2 of 159 dimensions) plus independent ones;
    ``relation`` 0: no relation (a null)."""
    rng = np.random.default_rng(seed)
    lab = labels()
    rejected = 0
    for _ in range(draws):
        positions, wn = wordnet_like(rng)
        c = centres(rng)
        c[:, :2] += relation * positions
        x = space(rng, c, lab)
        d = crossvalidated_distances(x, lab, list(range(K)))
        _, p, _ = mantel(wn, d, permutations, rng, exact_max=0)
        rejected += p[0] < 0.05
    return Calibration(f"Mantel, relation {relation}", Rate(int(rejected), draws))


def category_interval(
    draws: int, relation: float, seed: int = 0, population: int = 100, resamples: int = 1
) -> Calibration:
    """Claim 2's interval: r between WordNet-like and cross-validated distances of K categories
    drawn from a population of ``population`` categories, its interval from resampling the
    categories; the truth is the mean r over the draws."""
    rng = np.random.default_rng(seed)
    lab = labels()
    positions = rng.normal(size=(population, 2))
    points, replicates = [], []
    for _ in range(draws):
        chosen = rng.choice(population, K, replace=False)
        d_wn = squareform(pdist(positions[chosen]))
        levels = np.quantile(upper(d_wn), np.linspace(0, 1, 14))
        wn = levels[np.abs(d_wn[..., None] - levels).argmin(-1)] * (1 - np.eye(K))
        c = centres(rng)
        c[:, :2] += relation * positions[chosen]
        x = space(rng, c, lab)
        d = upper(crossvalidated_distances(x, lab, list(range(K))))
        draw = np.concatenate([np.arange(K)[None], bootstrap.category_draws(K, resamples, rng)])
        r = bootstrap.category_correlations(upper(wn), d, draw)[0]
        points.append(r[0])
        replicates.append(r[1:])
    points = np.array(points)
    tests = _tests(points, np.array(replicates))
    return _summary(f"category interval of r, relation {relation}", tests, float(points.mean()))


def _related_centres(
    rng: np.random.Generator, positions: np.ndarray, relation: float, base: np.ndarray | None = None
) -> np.ndarray:
    """Category centres: independent ones (or ``base``) plus ``relation`` times the categories'
    WordNet positions in the first two dimensions."""
    c = centres(rng, len(positions)) if base is None else base.copy()
    c[:, :2] += relation * positions
    return c


def correlation_difference(
    draws: int,
    relation_a: float,
    relation_b: float,
    seed: int = 0,
    margin: float = 0.1,
    resamples: int = 1,
) -> Calibration:
    """Claim 2's "beyond the pixels": r(A) - r(B) of two spaces of the same categories and
    images (half of each image's noise shared), the same category resample for both. Equal
    relations make the spaces exchangeable: the true difference is 0 (a null)."""
    rng = np.random.default_rng(seed)
    lab = labels()
    points, replicates = [], []
    for _ in range(draws):
        positions, wn = wordnet_like(rng)
        shared = rng.normal(size=(len(lab), DIMS))
        d = [
            upper(
                crossvalidated_distances(
                    space(rng, _related_centres(rng, positions, r), lab, shared),
                    lab,
                    list(range(K)),
                )
            )
            for r in (relation_a, relation_b)
        ]
        draw = np.concatenate([np.arange(K)[None], bootstrap.category_draws(K, resamples, rng)])
        r = bootstrap.category_correlations(upper(wn), np.stack(d), draw)
        difference = r[0] - r[1]
        points.append(difference[0])
        replicates.append(difference[1:])
    tests = _tests(np.array(points), np.array(replicates), margin=margin)
    truth = 0.0 if relation_a == relation_b else float(np.mean(points))
    return _summary(f"r difference, relations {relation_a} vs {relation_b}", tests, truth)


def partial_mantel_null(draws: int, relation: float, seed: int = 0, permutations: int = 199):
    """Claim 2's partial row under its null: the pixels' category geometry follows WordNet
    (``relation``) and the ratios' follows the pixels' (their centres plus independent ones),
    so the ratios relate to WordNet only through the pixels."""
    rng = np.random.default_rng(seed)
    lab = labels()
    rejected = 0
    for _ in range(draws):
        positions, wn = wordnet_like(rng)
        pixel_centres = _related_centres(rng, positions, relation)
        ratio_centres = pixel_centres + centres(rng, spread=0.2)
        d_pixels, d_ratios = (
            crossvalidated_distances(space(rng, c, lab), lab, list(range(K)))
            for c in (pixel_centres, ratio_centres)
        )
        _, p, _ = mantel(wn, d_ratios, permutations, rng, control=d_pixels, exact_max=0)
        rejected += p[0] < 0.05
    return Calibration(
        f"partial Mantel (Freedman-Lane), relation {relation}", Rate(int(rejected), draws)
    )


def seeds_interval(
    draws: int, seeds: int, seed_spread: float = 0.05, seed: int = 0, resamples: int = 1
) -> Calibration:
    """Seed replicates, as ``replicate`` makes them: S runs of one setting analyse the same
    images. The statistic is a paired difference (the k-NN accuracy of a trained space minus
    that of the pixels, which no run changes); each run's trained space has the setting's
    category centres scaled by a run-specific factor. The two-level interval (runs
    and images resampled, crossed) of the runs' mean difference, against its mean over new runs
    and new images (the truth). A run's separation of the categories is the setting's times
    exp(N(0, ``seed_spread``^2)): runs differ systematically, as trained networks do."""
    rng = np.random.default_rng(seed)
    lab = labels()
    c = centres(rng, spread=0.3)  # one setting's categories; runs and images are drawn
    pixel_centres = centres(rng, spread=0.3)
    points, replicates, spreads = [], [], []
    for _ in range(draws):
        shared = rng.normal(size=(len(lab), DIMS))
        counts = _with_point(bootstrap.bootstrap_counts(lab, resamples, rng))
        pixels = bootstrap.knn_accuracy(
            _order(space(rng, pixel_centres, lab, shared)), lab, counts, 5
        )
        per_run = np.array(
            [
                bootstrap.knn_accuracy(
                    _order(space(rng, c * np.exp(rng.normal(0, seed_spread)), lab, shared)),
                    lab,
                    counts,
                    5,
                )
                - pixels
                for _ in range(seeds)
            ]
        )  # (S, 1 + R): each run's difference and its resamples
        points.append(per_run[:, 0].mean())
        spreads.append(per_run[:, 0].std(ddof=1))
        replicates.append(inference.two_level(per_run[:, 0], per_run[:, 1:], rng))
    tests = _tests(np.array(points), np.array(replicates))
    return _summary(
        f"{seeds} seeds (sd of a run's difference across runs {np.mean(spreads):.3f}), "
        "two-level interval of a k-NN difference",
        tests,
        float(np.mean(points)),
    )


def settling(
    draws: int, step_before: float, step_after: float, seed: int = 0, resamples: int = 1
) -> Calibration:
    """Claim 3's "settles": three checkpoints of the same images (their noise shared, one
    tenth new per epoch) whose category centres move by ``step_before`` then ``step_after``
    (one trajectory of the categories for every draw; the images are drawn); Fisher z of
    r(RDM_d, RDM_d+1) minus that of r(RDM_d-1, RDM_d) over the same resample."""
    from .verdict import _fisher, _rdm_correlation

    rng = np.random.default_rng(seed)
    lab = labels()
    c0 = centres(rng)
    c1 = c0 + centres(rng, spread=step_before)
    c2 = c1 + centres(rng, spread=step_after)
    points, replicates = [], []
    for _ in range(draws):
        shared = rng.normal(size=(len(lab), DIMS))
        counts = _with_point(bootstrap.bootstrap_counts(lab, resamples, rng))
        rdms = [
            bootstrap.cluster_distances(
                c[lab] + np.sqrt(0.9) * shared + np.sqrt(0.1) * rng.normal(size=shared.shape),
                lab,
                list(range(K)),
                counts,
                "crossvalidated",
            )
            for c in (c0, c1, c2)
        ]
        contrast = _fisher(_rdm_correlation(rdms[1], rdms[2])) - _fisher(
            _rdm_correlation(rdms[0], rdms[1])
        )
        points.append(contrast[0])
        replicates.append(contrast[1:])
    tests = _tests(np.array(points), np.array(replicates))
    truth = float(np.mean(points))
    return _summary(f"settling contrast, steps {step_before} then {step_after}", tests, truth)


def accuracy_difference(
    draws: int, accuracy_a: float, accuracy_b: float, seed: int = 0, resamples: int = 1
) -> Calibration:
    """The ablation rows: the accuracy of a fixed model on the same images under two
    conditions - each image right with probability ``accuracy_a`` under the first; under the
    second the same decision, but for a tenth of the images decided afresh with probability
    ``accuracy_b`` (one condition changes few decisions) - the difference over the same image
    resamples; the truth is its mean, 0.1 (accuracy_a - accuracy_b)."""
    rng = np.random.default_rng(seed)
    lab = labels()
    points, replicates = [], []
    for _ in range(draws):
        a = rng.random(len(lab)) < accuracy_a
        flip = rng.random(len(lab)) < 0.1  # a tenth of the images decided afresh
        b = np.where(flip, rng.random(len(lab)) < accuracy_b, a)
        difference = a.astype(float) - b
        counts = _with_point(bootstrap.bootstrap_counts(lab, resamples, rng))
        resampled = counts @ difference / counts.sum(1)
        points.append(resampled[0])
        replicates.append(resampled[1:])
    tests = _tests(np.array(points), np.array(replicates))
    return _summary(
        f"accuracy difference, {accuracy_a} vs {accuracy_b}", tests, float(np.mean(points))
    )


def stability_interval(
    draws: int, measure: str, drift: float, seed: int = 0, resamples: int = 1
) -> Calibration:
    """The stability step's measures between two epochs' representations of the same images,
    x (the categories' centres plus unit noise) and y = x A + ``drift`` x fresh noise (A = I +
    a random N(0, 1 / DIMS) matrix, one for every draw), with their intervals from resampling
    the images within categories. ``measure`` ``cka``: the truth is the population CKA, from
    the covariances (Sx = the centres' covariance + I, Syx = A'Sx, Sy = A'Sx A + drift^2 I),
    which the debiased CKA estimates; ``rdm``: the correlation of the cross-validated category
    RDMs, whose truth is its mean over the draws (the module's convention: the noise in the
    distances attenuates the correlation at this sample size)."""
    from .stability import _rdm_correlation, linear_cka

    rng = np.random.default_rng(seed)
    lab = labels()
    c = centres(rng)
    a = np.eye(DIMS) + rng.normal(0, 1 / np.sqrt(DIMS), (DIMS, DIMS))
    points, replicates = [], []
    for _ in range(draws):
        x = space(rng, c, lab)
        y = x @ a + drift * rng.normal(size=x.shape)
        counts = _with_point(bootstrap.bootstrap_counts(lab, resamples, rng))
        if measure == "cka":
            values = linear_cka(x, y, counts)
        else:
            rdms = [
                bootstrap.cluster_distances(v, lab, list(range(K)), counts, "crossvalidated")
                for v in (x, y)
            ]
            values = _rdm_correlation(*rdms)
        points.append(values[0])
        replicates.append(values[1:])
    if measure == "cka":
        sx = np.cov(c.T, bias=True) + np.eye(DIMS)
        sy = a.T @ sx @ a + drift**2 * np.eye(DIMS)
        truth = np.linalg.norm(a.T @ sx) ** 2 / (np.linalg.norm(sx) * np.linalg.norm(sy))
    else:
        truth = np.mean(points)
    tests = _tests(np.array(points), np.array(replicates))
    return _summary(f"stability {measure}, drift {drift}", tests, float(truth))


def decoding_interval(draws: int, dims: int, spread: float, seed: int = 0) -> Calibration:
    """The decode step's leave-one-out accuracy and its Wilson interval, on images of the
    simulated categories with ``dims`` features (centres of ``spread``). ``rejected``: the
    interval's lower bound above chance (a one-sided test at 2.5%: with ``spread`` 0 a null);
    ``covered``: the interval holds the expected accuracy of the classifier fitted on the draw,
    measured on 20,000 fresh images and averaged over the draws."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .decoding import ALPHA, loo_accuracy, wilson

    rng = np.random.default_rng(seed)
    lab, fresh = labels(), labels(per_category=2000)
    c = centres(rng, dims=dims, spread=spread)
    x_fresh = space(rng, c, fresh)
    intervals, accuracies = [], []
    for _ in range(draws):
        x = space(rng, c, lab)
        estimate = loo_accuracy(x, lab)
        intervals.append(wilson(round(estimate * len(lab)), len(lab)))
        model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=ALPHA)).fit(x, lab)
        accuracies.append(float((model.predict(x_fresh) == fresh).mean()))
    truth = float(np.mean(accuracies))
    low, high = np.array(intervals).T
    return Calibration(
        f"decoding, {dims} features, spread {spread} ('p < 0.05': lower bound above chance)",
        rejected=Rate(int((low > 1 / K).sum()), draws),
        covered=Rate(int(((low <= truth) & (truth <= high)).sum()), draws),
        truth=truth,
    )
