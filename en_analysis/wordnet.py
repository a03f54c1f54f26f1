"""The ``wordnet`` step: the appearance-embedding claim, measured - WordNet distances vs cluster
distances per epoch.

For every epoch, the distances between category clusters (in the same space the embedding used)
are compared with WordNet distances by Spearman correlation and a Mantel permutation test; the
same comparison on raw pixels and on penultimate features says what the ratios add. Each
correlation has a 95% interval from resampling the images within each category (the cluster
distances recomputed from the drawn images, ``analysis.bootstrap`` times).

Correlating a WordNet distance matrix with cluster distances is a representational similarity
analysis, and ``rsatoolbox`` gives the field's conventions for it: Kendall's tau-a beside
Spearman (WordNet's Wu-Palmer distances have ties, which tau-a does not reward), and a bootstrap
over conditions - here the categories, drawn with replacement; pairs of copies of one category
are left out (rsatoolbox's ``subsample_pattern``) - for the doubt that comes from which
categories were chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import bootstrap
from .data.wordnet import category_synsets, wordnet_distances
from .errors import UserError
from .runs import Run
from .spaces import is_degenerate, scale_ratios, standardize
from .statistics import cluster_distances, mantel, upper

COLUMNS = [
    "epoch",
    "space",
    "wordnet_distance",
    "cluster_distance",
    "spearman",
    "ci_low",
    "ci_high",
    "tau_a",
    "category_ci_low",
    "category_ci_high",
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


def _wordnet_matrix(run: Run, epoch: int) -> tuple[list[int], list[str], np.ndarray]:
    """The categories of the subset (class indices, names) and their WordNet distances."""
    r = run.ratios(epoch)
    classes = r.present
    if len(classes) < 3:
        raise UserError("the WordNet comparison needs at least 3 categories")
    names = [r.categories[c] for c in classes]
    synsets = category_synsets(names, [r.synsets[c] for c in classes])
    return classes, names, wordnet_distances(synsets, run.config.analysis.wordnet_distance)


def compare(run: Run, epochs: list[int] | None = None) -> Comparison:
    """The WordNet comparison of every epoch (``COLUMNS``), with the analysis's settings."""
    a = run.config.analysis
    epochs = epochs or run.extracted_epochs()
    classes, names, wn = _wordnet_matrix(run, epochs[0])
    wn_upper = upper(wn)

    def interval(
        r: float, x: np.ndarray, labels: np.ndarray, counts: np.ndarray
    ) -> tuple[float, float]:
        if not len(counts):
            return np.nan, np.nan
        d = bootstrap.cluster_distances(x, labels, classes, counts, a.cluster_distance)
        return bootstrap.centred_interval(r, bootstrap.spearman_rows(d, wn_upper))

    def measured(x: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> tuple:
        """(r, p, interval, tau-a, category interval) of the space ``x``, and its distances."""
        d = cluster_distances(x, labels, classes, a.cluster_distance)
        r, p = mantel(wn, d, a.permutations, a.tsne_seed)
        rng = np.random.default_rng([a.tsne_seed, 3])  # the same category draws for every space
        tau, category = rsa_measures(wn, d, r, a.bootstrap, rng)
        return (r, p, interval(r, x, labels, counts), tau, category), d

    pixels = run.pixels()
    rng = np.random.default_rng([a.tsne_seed, 0, 2])
    pixel_result, _ = measured(
        standardize(pixels["pixels"]),
        pixels["labels"],
        bootstrap.bootstrap_counts(pixels["labels"], a.bootstrap, rng),
    )
    rows = []

    def row(epoch: int, space: str, result: tuple, note: str = "") -> None:
        r, p, (lo, hi), tau, (category_lo, category_hi) = result
        rows.append(
            dict(
                epoch=epoch,
                space=space,
                wordnet_distance=a.wordnet_distance,
                cluster_distance=a.cluster_distance,
                spearman=r,
                ci_low=lo,
                ci_high=hi,
                tau_a=tau,
                category_ci_low=category_lo,
                category_ci_high=category_hi,
                p_value=p,
                permutations=a.permutations,
                n_categories=len(classes),
                note=note,
            )
        )

    nothing = (np.nan, np.nan, (np.nan, np.nan), np.nan, (np.nan, np.nan))
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
                row(e, "ratios-2d", measured(run.embedding(e).embedding, r.labels, counts)[0])
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


def rsa_measures(
    wn: np.ndarray, d: np.ndarray, r: float, n: int, rng: np.random.Generator
) -> tuple[float, tuple[float, float]]:
    """Kendall's tau-a between the WordNet and cluster distance matrices, and the 95% interval
    of the Spearman ``r`` from ``n`` resamples of the categories (rsatoolbox)."""
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.rdm import compare as compare_rdms

    model, data = RDMs(upper(wn)[None]), RDMs(upper(d)[None])
    tau = float(compare_rdms(model, data, method="tau-a")[0, 0])
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(wn), len(wn))
        if len(np.unique(idx)) < 3:  # fewer than three distinct categories: no correlation
            continue
        sample = [rdms.subsample_pattern("index", idx) for rdms in (model, data)]
        values.append(compare_rdms(*sample, method="spearman")[0, 0])
    return tau, bootstrap.centred_interval(r, np.array(values))


def extreme_pairs(d: np.ndarray, names: list[str], n: int = 3) -> tuple[list, list]:
    """The n closest and n farthest category pairs of a distance matrix: [(a, b, distance)]."""
    i, j = np.triu_indices(len(d), 1)
    order = np.argsort(d[i, j], kind="stable")
    pairs = [(names[i[k]], names[j[k]], float(d[i[k], j[k]])) for k in order]
    return pairs[:n], pairs[::-1][:n]


def last_epoch_matrices(run: Run, table: pd.DataFrame) -> Comparison:
    """The comparison of a written table: its last epoch's WordNet and ratio-cluster distances
    recomputed (cheap: no permutations, no resamples)."""
    a = run.config.analysis
    epoch = int(table.epoch.max())
    classes, names, wn = _wordnet_matrix(run, epoch)
    r = run.ratios(epoch)
    x = scale_ratios(r.ratios, a.scaling)
    clusters = (
        np.zeros_like(wn)
        if is_degenerate(x)
        else cluster_distances(x, r.labels, classes, a.cluster_distance)
    )
    return Comparison(table, names, wn, clusters, epoch)


def write_comparison(
    run: Run, epochs: list[int] | None = None, force: bool = False
) -> tuple[Comparison, bool]:
    """The ``wordnet`` step: ``wordnet.csv`` of the analysis, computed unless up to date;
    (the comparison, whether it was written)."""
    written = run.write_table("wordnet.csv", lambda e: compare(run, e).table, epochs, force)
    return last_epoch_matrices(run, run.wordnet()), written
