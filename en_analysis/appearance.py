"""The appearance-embedding claim, measured: WordNet distances vs cluster distances per epoch.

For every epoch, the distances between category clusters (in the same space the embedding used)
are compared with WordNet distances by Spearman correlation and a Mantel permutation test; the
same comparison on raw pixels and on penultimate features says what the ratios add. Each
correlation has a 95% interval from resampling the images within each category (the cluster
distances recomputed from the drawn images, ``analysis.bootstrap`` times).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import bootstrap
from .config import AnalysisConfig
from .errors import UserError
from .io import write_csv
from .runs import Run
from .spaces import is_degenerate, scale_ratios, standardize
from .wordnet import category_synsets, cluster_distances, mantel, upper, wordnet_distances

COLUMNS = [
    "epoch",
    "space",
    "wordnet_distance",
    "cluster_distance",
    "spearman",
    "ci_low",
    "ci_high",
    "p_value",
    "permutations",
    "n_categories",
    "note",
]


@dataclass
class Comparison:
    """The WordNet comparison of a run: the table and the last epoch's matrices."""

    table: pd.DataFrame
    categories: list[str]
    wordnet: np.ndarray
    clusters: np.ndarray  # ratio-space cluster distances at the last epoch
    epoch: int


def compare(run: Run, a: AnalysisConfig, epochs: list[int] | None = None) -> Comparison:
    epochs = epochs or run.extracted_epochs()
    first = run.ratios(epochs[0])
    classes = first.present
    if len(classes) < 3:
        raise UserError("the WordNet comparison needs at least 3 categories")
    names = [first.categories[c] for c in classes]
    synsets = category_synsets(names, [first.synsets[c] for c in classes])
    wn = wordnet_distances(synsets, a.wordnet_distance)
    wn_upper = upper(wn)

    def interval(x: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
        if not len(counts):
            return np.nan, np.nan
        d = bootstrap.cluster_distances(x, labels, classes, counts, a.cluster_distance)
        return bootstrap.percentile_interval(bootstrap.spearman_rows(d, wn_upper))

    def measured(x: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple:
        """(r, p, interval) of the space ``x``."""
        d = cluster_distances(x, labels, classes, a.cluster_distance)
        return (*mantel(wn, d, a.permutations, a.tsne_seed), interval(x, labels, counts)), d

    pixels = run.pixels()
    rng = np.random.default_rng([a.tsne_seed, 0, 2])
    pixel_result, _ = measured(
        standardize(pixels["pixels"]),
        pixels["labels"],
        bootstrap.bootstrap_counts(pixels["labels"], a.bootstrap, rng),
    )
    rows = []

    def row(epoch: int, space: str, result: tuple, note: str = "") -> None:
        r, p, (lo, hi) = result
        rows.append(
            dict(
                epoch=epoch,
                space=space,
                wordnet_distance=a.wordnet_distance,
                cluster_distance=a.cluster_distance,
                spearman=r,
                ci_low=lo,
                ci_high=hi,
                p_value=p,
                permutations=a.permutations,
                n_categories=len(classes),
                note=note,
            )
        )

    nothing = (np.nan, np.nan, (np.nan, np.nan))
    clusters = np.zeros_like(wn)
    for e in epochs:
        r = run.ratios(e)
        counts = bootstrap.bootstrap_counts(
            r.labels, a.bootstrap, np.random.default_rng([a.tsne_seed, e, 2])
        )
        x = scale_ratios(r.ratios, a.scaling)
        if is_degenerate(x):
            note = "degenerate: every sample has the same ratio vector, no distances"
            row(e, "ratios", nothing, note)
            clusters = np.zeros_like(wn)
        else:
            result, clusters = measured(x, r.labels, counts)
            row(e, "ratios", result)
            if e in run.embedding_epochs:
                row(e, "ratios-2d", measured(run.embedding(e)["embedding"], r.labels, counts)[0])
            if r.random_head is not None:
                xr = scale_ratios(r.random_head, a.scaling)
                row(e, "random-head", measured(xr, r.labels, counts)[0])
        if r.features is not None and r.features.size:
            f = standardize(r.features)
            if is_degenerate(f):
                row(e, "features", nothing, "degenerate features")
            else:
                row(e, "features", measured(f, r.labels, counts)[0])
        row(e, "pixels", pixel_result)
    return Comparison(pd.DataFrame(rows, columns=COLUMNS), names, wn, clusters, epochs[-1])


def extreme_pairs(d: np.ndarray, names: list[str], n: int = 3) -> tuple[list, list]:
    """The n closest and n farthest category pairs of a distance matrix: [(a, b, distance)]."""
    i, j = np.triu_indices(len(d), 1)
    order = np.argsort(d[i, j], kind="stable")
    pairs = [(names[i[k]], names[j[k]], float(d[i[k], j[k]])) for k in order]
    return pairs[:n], pairs[::-1][:n]


def write_comparison(run: Run, a: AnalysisConfig, epochs: list[int] | None = None) -> Comparison:
    result = compare(run, a, epochs)
    write_csv(run.path / "analysis" / "wordnet.csv", result.table)
    return result
