"""Clustering of the categories, per epoch: silhouette, leave-one-out k-NN, trustworthiness.

Each label metric comes with a shuffled-label baseline (what "no clusters" scores), and the same
metrics are computed on the control spaces (``controls.space_vectors``): the evaluation images'
raw pixels, the network's penultimate features, the statistics the ratio heads read and the
ratios of a random head, so the ratios' category information can be read against the input's,
the network's and what any head of the same statistics gives.
Every number has a 95% interval from resampling the images within each category
(``analysis.bootstrap`` resamples; see ``bootstrap``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform
from sklearn.manifold import trustworthiness
from sklearn.metrics import silhouette_score
from tqdm import tqdm

from ..core.errors import UserError
from ..run.folder import RunFolder
from ..run.tables import Dims, Metric, Space, select
from ..steps.results import StepResult, timed
from . import bootstrap
from .controls import CONTROLS, space_vectors
from .spaces import is_degenerate

COLUMNS = [
    "epoch",
    "space",
    "dims",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "shuffled",
    "shuffled_ci_low",
    "shuffled_ci_high",
    "note",
]
NO_INTERVAL = (float("nan"), float("nan"))
# trustworthiness's resamples need every image's whole neighbour order in both spaces (N x N):
# beyond this many images the value is given without an interval
TRUSTWORTHINESS_INTERVAL_MAX = 1000


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of the labels in x; 0 when every sample is identical (no structure)."""
    if is_degenerate(x) or len(np.unique(labels)) < 2:
        return 0.0
    return float(silhouette_score(x, labels))


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (majority vote, ties to the nearest neighbour's label:
    ``bootstrap.vote``).

    Degenerate input (all samples equal) gives the majority-class rate: there are no neighbours
    to tell apart.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if is_degenerate(x):
        return float(np.bincount(labels).max() / n)
    order = nearest(x, min(k, n - 1))
    return float((bootstrap.vote(labels[order].astype(np.int32)) == labels).mean())


def label_metrics(
    x: np.ndarray,
    labels: np.ndarray,
    k: int,
    rng: np.random.Generator,
    counts: np.ndarray | None = None,
) -> dict[str, tuple]:
    """{metric: (value, shuffled value, interval, shuffled interval)} for silhouette and k-NN
    accuracy; the intervals come from the resamples ``counts`` (none: NaN)."""
    shuffled = rng.permutation(labels)
    out = {
        Metric.SILHOUETTE: [silhouette(x, labels), silhouette(x, shuffled)],
        Metric.KNN: [knn_accuracy(x, labels, k), knn_accuracy(x, shuffled, k)],
    }
    if counts is None or not len(counts) or is_degenerate(x):
        return {m: (v, sv, NO_INTERVAL, NO_INTERVAL) for m, (v, sv) in out.items()}
    d = squareform(pdist(np.asarray(x, np.float64)))
    order = nearest(x)
    intervals = {
        m: [
            bootstrap.centred_interval(point, f(lab))
            for point, lab in zip(out[m], (labels, shuffled))
        ]
        for m, f in (
            (Metric.SILHOUETTE, lambda lab: bootstrap.silhouette(d, lab, counts)),
            (Metric.KNN, lambda lab: bootstrap.knn_accuracy(order, lab, counts, k)),
        )
    }
    return {m: (v, sv, *intervals[m]) for m, (v, sv) in out.items()}


def neighbour_order(d: np.ndarray) -> np.ndarray:
    """(N, N - 1): each sample's other samples, nearest first (stable)."""
    d = d.copy()
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, 1, kind="stable")[:, :-1]


NEAREST = 64  # neighbours kept per image for k-NN: k draws lie among them but with p ~ 1e-20


def nearest(x: np.ndarray, count: int = NEAREST, block: int = 2048) -> np.ndarray:
    """(N, min(count, N - 1)): each sample's nearest other samples, nearest first - the
    prefix of ``neighbour_order`` that k-NN reads (``bootstrap.knn_accuracy``), without an
    N x N order: squared distances from one matrix product per block of rows."""
    x = np.asarray(x, np.float64)
    n = len(x)
    count = min(count, n - 1)
    sq = (x**2).sum(1)
    out = np.empty((n, count), np.int64)
    for s in range(0, n, block):
        d = sq[s : s + block, None] + sq[None] - 2 * x[s : s + block] @ x.T
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
        part = (
            np.argpartition(d, count - 1, 1)[:, :count]
            if count < n - 1
            else np.argsort(d, 1)[:, :count]
        )
        rows = np.arange(len(d))[:, None]
        out[s : s + block] = part[rows, np.argsort(d[rows, part], 1, kind="stable")]
    return out


def trustworthiness_with_interval(
    x: np.ndarray, y: np.ndarray, k: int, member: np.ndarray | None
) -> tuple[float, tuple[float, float]]:
    """sklearn's trustworthiness of the map ``y`` of ``x`` and its half-sample interval."""
    value = float(trustworthiness(x, y, n_neighbors=k))
    if member is None or not len(member) or len(x) > TRUSTWORTHINESS_INTERVAL_MAX:
        return value, NO_INTERVAL
    orders = [neighbour_order(squareform(pdist(np.asarray(v, np.float64)))) for v in (x, y)]
    return value, bootstrap.centred_interval(value, bootstrap.trustworthiness(*orders, member, k))


def centroid_shift(previous: np.ndarray, current: np.ndarray, labels: np.ndarray) -> float:
    """How far the category centroids moved since the previous epoch, relative to how far apart
    they are now: mean_c |mu_c(t) - mu_c(t-1)| / mean_{c != c'} |mu_c(t) - mu_c'(t)|.

    Computed on the raw vectors: the z-scoring is per epoch, so only the raw space is shared by
    two epochs. NaN when the current centroids coincide (a degenerate epoch).
    """
    classes = np.unique(labels)
    now = np.stack([current[labels == c].mean(0) for c in classes]).astype(np.float64)
    before = np.stack([previous[labels == c].mean(0) for c in classes]).astype(np.float64)
    spread = pdist(now).mean() if len(classes) > 1 else 0.0
    if spread <= 0:
        return float("nan")
    return float(np.linalg.norm(now - before, axis=1).mean() / spread)


def _rows(epoch: int, space: str, dims: str, values: dict, note: str = "") -> list[dict]:
    """Table rows from {metric: (value, shuffled[, interval, shuffled interval])}."""
    rows = []
    for metric, (value, shuffled, *intervals) in values.items():
        (lo, hi), (slo, shi) = (*intervals, NO_INTERVAL, NO_INTERVAL)[:2]
        rows.append(
            dict(
                epoch=epoch,
                space=space,
                dims=dims,
                metric=metric,
                value=value,
                ci_low=lo,
                ci_high=hi,
                shuffled=shuffled,
                shuffled_ci_low=slo,
                shuffled_ci_high=shi,
                note=note,
            )
        )
    return rows


def clustering_table(
    run: RunFolder, epochs: list[int] | None = None, progress: bool = False
) -> pd.DataFrame:
    """Long table: one row per (epoch, space, dims, metric) with its shuffled baseline and the
    95% intervals of both. Every space and epoch shares the same image resamples
    (``analysis.bootstrap_seed``) and the same shuffled labels (``analysis.permutation_seed``),
    so differences between them are paired. ``progress``: a bar over the epochs."""
    a = run.config.analysis
    epochs = epochs or run.extracted_epochs()
    rows: list[dict] = []
    pixels = run.pixels()
    previous = None
    for e in tqdm(epochs, desc="metrics", unit="epoch", disable=not progress):
        r = run.ratios(e)
        if not np.array_equal(r.sample_index, pixels["sample_index"]):
            raise UserError(
                f"{run.path}: ratios of epoch {e} and pixels.npz cover other samples; "
                "rerun `en-analysis extract --force`"
            )
        spaces = space_vectors(r, pixels["pixels"], a.scaling, a.control_seed)
        x = spaces[Space.RATIOS]
        note = "degenerate: every sample has the same ratio vector" if is_degenerate(x) else ""
        counts = bootstrap.bootstrap_counts(
            r.labels, a.bootstrap, np.random.default_rng([a.bootstrap_seed, 1])
        )

        def metrics(v: np.ndarray, labels=r.labels, counts=counts) -> dict[str, tuple]:
            rng = np.random.default_rng([a.permutation_seed, 1])  # the same shuffle everywhere
            return label_metrics(v, labels, a.knn, rng, counts)

        rows += _rows(e, Space.RATIOS, Dims.HIGH, metrics(x), note)
        if previous is not None:
            shift = centroid_shift(previous, r.vectors, r.labels)
            shift_row = {Metric.CENTROID_SHIFT: (shift, np.nan)}
            rows += _rows(e, Space.RATIOS, Dims.HIGH, shift_row, note)
        previous = r.vectors
        if e in run.embedding_epochs:
            embedding = run.embedding(e)
            y = embedding.embedding
            rows += _rows(e, Space.RATIOS, Dims.MAP, metrics(y), note)
            if embedding.degenerate:
                trust = (np.nan, np.nan)
            else:
                member = bootstrap.half_samples(
                    r.labels, a.bootstrap, np.random.default_rng([a.bootstrap_seed, 2])
                )
                value, ci = trustworthiness_with_interval(x, y, a.knn, member)
                trust = (value, np.nan, ci, NO_INTERVAL)
            rows += _rows(e, Space.RATIOS, Dims.MAP, {Metric.TRUSTWORTHINESS: trust}, note)
        for space in CONTROLS:
            if space in spaces:  # the controls (``controls.space_vectors``)
                rows += _rows(e, space, Dims.HIGH, metrics(spaces[space]))
    return pd.DataFrame(rows, columns=COLUMNS)


@timed
def write_clustering(
    run: RunFolder, epochs: list[int] | None = None, force: bool = False, progress: bool = True
) -> StepResult:
    """The ``metrics`` step's table: ``clustering.csv`` of the analysis, computed unless up to
    date (its figure: ``plotting.write_clustering_figure``); ``progress``: a bar per epoch."""
    written = run.write_table(
        "metrics", "clustering.csv", lambda e: clustering_table(run, e, progress), epochs, force
    )
    table = run.clustering()
    path, text = run.files.table("clustering.csv"), summary(table).to_string(index=False)
    return StepResult.of("metrics", [path], written, table=table, summary=text)


def summary(
    table: pd.DataFrame,
    space: str = Space.RATIOS,
    dims: str = Dims.HIGH,
    metric: str = Metric.SILHOUETTE,
) -> pd.DataFrame:
    """One metric over epochs: epoch, value and its 95% interval, shuffled."""
    sel = select(table, space=space, dims=dims, metric=metric)
    return sel[["epoch", "value", "ci_low", "ci_high", "shuffled"]].reset_index(drop=True)


def ratio_movement(ratios: np.ndarray) -> dict[str, float]:
    """How far the ratios moved: do they carry anything to visualise?

    ``std_across_samples``: the std of each (layer, normalizer) ratio across samples, averaged
    over layers and normalizers; ``mean_shift`` / ``max_shift``: per layer, the largest distance
    of a normalizer's mean ratio from 1/K, averaged over layers / at its largest.
    """
    k = ratios.shape[2]
    shift = np.abs(ratios.mean(0) - 1 / k).max(1)  # (L,)
    return {
        "std_across_samples": float(ratios.std(0).mean()),
        "mean_shift": float(shift.mean()),
        "max_shift": float(shift.max()),
    }
