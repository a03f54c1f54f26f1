"""The appearance-embedding claim, measured: WordNet distances vs cluster distances per epoch.

For every epoch, the distances between category clusters (in the same space the embedding used)
are compared with WordNet distances by Spearman correlation and a Mantel permutation test; the
same comparison on raw pixels and on penultimate features says what the ratios add.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import AnalysisConfig
from .errors import UserError
from .io import write_csv
from .runs import Run
from .spaces import is_degenerate, scale_ratios, standardize
from .wordnet import category_synsets, cluster_distances, mantel, wordnet_distances

COLUMNS = [
    "epoch",
    "space",
    "wordnet_distance",
    "cluster_distance",
    "spearman",
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
    pixels = run.pixels()
    px = cluster_distances(
        standardize(pixels["pixels"]), pixels["labels"], classes, a.cluster_distance
    )
    pixel_result = mantel(wn, px, a.permutations, a.tsne_seed)
    rows = []

    def row(epoch: int, space: str, result: tuple[float, float], note: str = "") -> None:
        rows.append(
            dict(
                epoch=epoch,
                space=space,
                wordnet_distance=a.wordnet_distance,
                cluster_distance=a.cluster_distance,
                spearman=result[0],
                p_value=result[1],
                permutations=a.permutations,
                n_categories=len(classes),
                note=note,
            )
        )

    clusters = np.zeros_like(wn)
    for e in epochs:
        r = run.ratios(e)
        x = scale_ratios(r.ratios, a.scaling)
        if is_degenerate(x):
            note = "degenerate: every sample has the same ratio vector, no distances"
            row(e, "ratios", (np.nan, np.nan), note)
            clusters = np.zeros_like(wn)
        else:
            clusters = cluster_distances(x, r.labels, classes, a.cluster_distance)
            row(e, "ratios", mantel(wn, clusters, a.permutations, a.tsne_seed))
            if e in run.embedding_epochs:
                y = run.embedding(e)["embedding"]
                d2 = cluster_distances(y, r.labels, classes, a.cluster_distance)
                row(e, "ratios-2d", mantel(wn, d2, a.permutations, a.tsne_seed))
        if r.features is not None and r.features.size:
            f = standardize(r.features)
            if is_degenerate(f):
                row(e, "features", (np.nan, np.nan), "degenerate features")
            else:
                df = cluster_distances(f, r.labels, classes, a.cluster_distance)
                row(e, "features", mantel(wn, df, a.permutations, a.tsne_seed))
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
