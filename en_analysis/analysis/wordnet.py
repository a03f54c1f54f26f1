"""The ``wordnet`` step: the appearance-embedding claim, measured - WordNet distances vs cluster
distances per epoch.

The claim is about categories, so its evidence is too: for every epoch and space, the distances
between the category clusters (``analysis.cluster_distance``: by default cross-validated, i.e.
unbiased, squared distances between the category means - plain centroid distances are inflated
by the noise within each category) are compared with WordNet distances by Spearman's r, with

- the Mantel p-value over every relabelling of the categories (exact up to 10 categories,
  ``statistics.mantel``), two-sided;
- a 95% interval from resampling the categories (rsatoolbox's bootstrap over conditions: pairs
  of copies of one category left out), the doubt that comes from which categories were chosen;
- Kendall's tau-a beside r (rsatoolbox): WordNet's distances have many ties, which tau-a does
  not reward;
- a noise ceiling: the split-half reliability of the space's category RDM (the images of each
  category split in halves, ``SPLITS`` times, Spearman-Brown corrected) and its square root,
  the highest correlation any model - WordNet included - could reach with an RDM that noisy.

The spaces are those of ``controls.space_vectors`` (ratios, pixels, features, statistics, a
random head) and the t-SNE map (space ``ratios``, dims ``2d``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..core.errors import UserError
from ..data.wordnet import category_synsets, wordnet_distances
from ..run.folder import RunFolder
from ..run.tables import Dims, Space
from ..steps.results import StepResult, timed
from . import bootstrap
from .controls import CONTROLS, space_vectors
from .spaces import is_degenerate, scale_ratios
from .statistics import cluster_distances, mantel, split_half_reliability, upper

SPLITS = 20  # random half-splits of the images behind each reliability

COLUMNS = [
    "epoch",
    "space",
    "dims",
    "wordnet_distance",
    "cluster_distance",
    "spearman",
    "ci_low",
    "ci_high",
    "tau_a",
    "reliability",
    "ceiling",
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


def _wordnet_matrix(run: RunFolder, epoch: int) -> tuple[list[int], list[str], np.ndarray]:
    """The categories of the subset (class indices, names) and their WordNet distances."""
    r = run.ratios(epoch)
    classes = r.present
    if len(classes) < 3:
        raise UserError("the WordNet comparison needs at least 3 categories")
    names = [r.categories[c] for c in classes]
    synsets = category_synsets(names, [r.synsets[c] for c in classes])
    return classes, names, wordnet_distances(synsets, run.config.analysis.wordnet_distance)


def wordnet_comparison(
    run: RunFolder, epochs: list[int] | None = None, progress: bool = False
) -> Comparison:
    """The WordNet comparison of every epoch (``COLUMNS``), with the analysis's settings.
    ``progress``: a bar over the epochs, then the Mantel test of them all."""
    a = run.config.analysis
    epochs = epochs or run.extracted_epochs()
    classes, names, wn = _wordnet_matrix(run, epochs[0])
    pixels = run.pixels()
    keys, matrices, notes, reliability = [], [], {}, {}
    clusters = np.zeros_like(wn)
    ratios = (Space.RATIOS, Dims.HIGH)
    bar = tqdm(total=len(epochs) + 1, desc="wordnet", disable=not progress)
    for e in epochs:
        bar.set_postfix_str(f"epoch {e}")
        r = run.ratios(e)
        vectors = space_vectors(r, pixels["pixels"], a.scaling, a.control_seed)
        spaces = {(space, Dims.HIGH): x for space, x in vectors.items()}
        if e in run.embedding_epochs and not run.embedding(e).degenerate:
            spaces[Space.RATIOS, Dims.MAP] = run.embedding(e).embedding
        for (space, dims), x in spaces.items():
            if is_degenerate(x):
                notes[(e, space, dims)] = f"degenerate: every sample has the same {space} vector"
                continue
            keys.append((e, space, dims))
            matrices.append(cluster_distances(x, r.labels, classes, a.cluster_distance))
            rng = np.random.default_rng([a.bootstrap_seed, 6])  # the same splits everywhere
            reliability[(e, space, dims)] = split_half_reliability(
                x, r.labels, classes, SPLITS, rng
            )
        if (e, *ratios) in notes:
            clusters = np.zeros_like(wn)
        else:
            clusters = matrices[keys.index((e, *ratios))]
        bar.update()
    bar.set_postfix_str("Mantel test")
    results, relabelings = {}, 0
    if matrices:
        data = np.stack(matrices)
        rng = np.random.default_rng([a.permutation_seed, 2])
        r_values, p_values, exact = mantel(wn, data, a.permutations, rng)
        draws = bootstrap.category_draws(
            len(classes), a.bootstrap, np.random.default_rng([a.bootstrap_seed, 2])
        )
        uppers = np.stack([upper(m) for m in matrices])
        resampled = bootstrap.category_correlations(upper(wn), uppers, draws)
        taus = tau_a(wn, data)
        for i, key in enumerate(keys):
            interval = (
                bootstrap.centred_interval(r_values[i], resampled[i])
                if a.bootstrap
                else (np.nan, np.nan)
            )
            results[key] = (r_values[i], interval, taus[i], p_values[i])
        relabelings = math.factorial(len(classes)) if exact else a.permutations
    bar.update()
    bar.close()
    rows = []
    order = [ratios, (Space.RATIOS, Dims.MAP), *((s, Dims.HIGH) for s in CONTROLS)]
    for e in epochs:
        for space, dims in order:
            key = (e, space, dims)
            if key not in results and key not in notes:
                continue
            r_value, (lo, hi), tau, p = results.get(key, (np.nan, (np.nan, np.nan), np.nan, np.nan))
            reliable = reliability.get(key, np.nan)
            rows.append(
                dict(
                    epoch=e,
                    space=space,
                    dims=dims,
                    wordnet_distance=a.wordnet_distance,
                    cluster_distance=a.cluster_distance,
                    spearman=r_value,
                    ci_low=lo,
                    ci_high=hi,
                    tau_a=tau,
                    reliability=reliable,
                    ceiling=np.sqrt(reliable) if reliable > 0 else np.nan,
                    p_value=p,
                    permutations=relabelings if key in results else 0,
                    n_categories=len(classes),
                    note=notes.get(key, ""),
                )
            )
    return Comparison(pd.DataFrame(rows, columns=COLUMNS), names, wn, clusters, epochs[-1])


def tau_a(wn: np.ndarray, data: np.ndarray) -> np.ndarray:
    """(S,) Kendall's tau-a between the WordNet distances and each (k, k) matrix of ``data``
    (rsatoolbox's ``compare``)."""
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.rdm import compare as compare_rdms

    iu = np.triu_indices(len(wn), 1)
    model, rdms = RDMs(wn[iu][None]), RDMs(data[:, iu[0], iu[1]])
    return compare_rdms(model, rdms, method="tau-a")[0]


def extreme_pairs(d: np.ndarray, names: list[str], n: int = 3) -> tuple[list, list]:
    """The n closest and n farthest category pairs of a distance matrix: [(a, b, distance)]."""
    i, j = np.triu_indices(len(d), 1)
    order = np.argsort(d[i, j], kind="stable")
    pairs = [(names[i[k]], names[j[k]], float(d[i[k], j[k]])) for k in order]
    return pairs[:n], pairs[::-1][:n]


def last_epoch_matrices(run: RunFolder, table: pd.DataFrame) -> Comparison:
    """The comparison of a written table: its last epoch's WordNet and ratio-cluster distances
    recomputed (cheap: no relabelings, no resamples)."""
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


@timed
def write_comparison(
    run: RunFolder, epochs: list[int] | None = None, force: bool = False, progress: bool = True
) -> StepResult:
    """The ``wordnet`` step's table: ``wordnet.csv`` of the analysis, computed unless up to
    date (its figure: ``plotting.write_wordnet_figure``); the summary names the closest and
    farthest category pairs in WordNet and in the ratios at the last epoch."""
    written = run.write_table(
        "wordnet",
        "wordnet.csv",
        lambda e: wordnet_comparison(run, e, progress).table,
        epochs,
        force,
    )
    comparison = last_epoch_matrices(run, run.wordnet())
    t = comparison.table
    lines = [
        t[["epoch", "space", "dims", "spearman", "ci_low", "ci_high", "p_value"]].to_string(
            index=False
        )
    ]
    for title, matrix in (
        ("WordNet", comparison.wordnet),
        (f"ratio clusters, epoch {comparison.epoch}", comparison.clusters),
    ):
        close, far = extreme_pairs(matrix, comparison.categories, 3)
        lines.append(
            f"{title}: closest "
            + ", ".join(f"{a}/{b}" for a, b, _ in close)
            + "; farthest "
            + ", ".join(f"{a}/{b}" for a, b, _ in far)
        )
    path = run.files.table("wordnet.csv")
    return StepResult.of("wordnet", [path], written, table=t, summary="\n".join(lines))
