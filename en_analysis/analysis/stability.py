"""How the representations move over training: the ``stability`` step, the measured form of
"clusters form early and settle".

For the ratios, the statistics their heads read and the penultimate features, between every
pair of epochs:

- linear CKA of the image representations (Kornblith et al., ICML 2019): with X, Y centred
  (N x D), ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), computed from the N x N Gram matrices; 1
  for a representation with itself (or a rotation and scaling of it), near 0 for unrelated ones.
  Debiased (``hsic``: the unbiased HSIC in place of the plug-in one, as Kornblith et al.'s code
  offers): the plug-in CKA overestimates a moderate CKA at 500 images by several standard
  errors, and intervals around it missed the population value (``simulate.stability_interval``);
- the Pearson correlation of the category RDMs (cross-validated distances between the category
  means, ``statistics.crossvalidated_distances``): how far the category geometry moved.

Between consecutive epochs and between every epoch and the last, each has a 95% interval from
resampling the images within categories (the same resamples for every epoch and space; CKA on a
resample weighs each drawn image by its count and, like the cross-validated distances, leaves
out pairs of copies of one image). Both intervals are checked on simulated data whose truth is
known (``simulate.stability_interval``, ``tests/test_calibration.py``): they cover it in at
least 95% of draws - a little conservatively, the resampled spread ~1.2-1.35 times the true
one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..run.folder import RunFolder
from ..steps.results import StepResult, timed
from . import bootstrap
from .controls import space_vectors
from .spaces import is_degenerate
from .statistics import crossvalidated_distances, upper

SPACES = ("ratios", "statistics", "features")
MEASURES = ("cka", "rdm")
COLUMNS = ["space", "measure", "epoch_a", "epoch_b", "value", "ci_low", "ci_high"]


def hsic(k: np.ndarray, g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) the unbiased HSIC (Song et al., JMLR 2012) of two N x N Gram matrices, on the
    sample in which image i appears ``w[b, i]`` times (each row of ``w`` (B, N): a resample,
    or ones), from matrix products only. With K~ and G~ the Gram matrices of that sample built
    copy by copy, an image's entries with itself *and with its copies* zeroed (the estimator
    leaves out pairs of one image; a copy is the same image), and n = sum w:
    [tr(K~G~) + (1'K~1)(1'G~1) / ((n-1)(n-2)) - 2 (1'K~G~1) / (n-2)] / (n(n-3))."""
    n = w.sum(1)
    w2 = w**2
    dk, dg = np.diag(k), np.diag(g)
    kw, gw = w @ k, w @ g  # (B, N)
    trace = ((w @ (k * g)) * w).sum(1) - w2 @ (dk * dg)
    sum_k, sum_g = (kw * w).sum(1) - w2 @ dk, (gw * w).sum(1) - w2 @ dg
    rows = (w * (kw - w * dk) * (gw - w * dg)).sum(1)
    return (trace + sum_k * sum_g / ((n - 1) * (n - 2)) - 2 * rows / (n - 2)) / (n * (n - 3))


def linear_cka(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(B,) linear CKA of x and y (N x D each), each image weighted by ``weights`` (B, N)
    (default: one row of ones, the plain CKA)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones((1, len(x))) if weights is None else np.asarray(weights, np.float64)
    k, g = x @ x.T, y @ y.T
    return _cka(hsic(k, g, w), hsic(k, k, w), hsic(g, g, w))


def _cka(cross: np.ndarray, self_x: np.ndarray, self_y: np.ndarray) -> np.ndarray:
    """CKA from the HSIC of x with y and of each with itself."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return cross / np.sqrt(self_x * self_y)


class EpochCKA:
    """Linear CKA between the epochs of one space under each set of image weights (name ->
    (B, N)): each epoch's Gram matrix, and its HSIC with itself, computed once."""

    def __init__(self, vectors: dict[int, np.ndarray], weights: dict[str, np.ndarray]) -> None:
        arrays = {e: np.asarray(x, np.float64) for e, x in vectors.items()}
        self.grams = {e: x @ x.T for e, x in arrays.items()}
        self.weights = weights
        self.selves = {
            (e, w): hsic(k, k, weights[w]) for e, k in self.grams.items() for w in weights
        }

    def __call__(self, a: int, b: int, weights: str) -> np.ndarray:
        """(B,) the CKA of epochs a and b under the weights named ``weights``."""
        cross = hsic(self.grams[a], self.grams[b], self.weights[weights])
        return _cka(cross, self.selves[a, weights], self.selves[b, weights])


def _pairs(epochs: list[int]) -> list[tuple[int, int]]:
    """Every pair of epochs (a < b), point estimates only for the ones that are neither
    consecutive nor against the last epoch (``_resampled``)."""
    return [(a, b) for i, a in enumerate(epochs) for b in epochs[i + 1 :]]


def _resampled(a: int, b: int, epochs: list[int]) -> bool:
    return b == epochs[-1] or epochs.index(b) == epochs.index(a) + 1


def _rdm_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a**2).sum(-1) * (b**2).sum(-1))


def stability_table(
    run: RunFolder, epochs: list[int] | None = None, progress: bool = False
) -> pd.DataFrame:
    """``stability.csv``: one row per (space, measure, pair of epochs); ``progress``: a bar
    over the spaces."""
    a = run.config.analysis
    epochs = sorted(epochs or run.extracted_epochs())
    first = run.ratios(epochs[0])
    labels, classes = first.labels, first.present
    counts = bootstrap.bootstrap_counts(
        labels, a.bootstrap, np.random.default_rng([a.bootstrap_seed, 5])
    )
    weights = {"plain": np.ones((1, len(labels))), "resampled": counts.astype(np.float64)}
    vectors = {
        e: space_vectors(run.ratios(e), None, a.scaling, a.control_seed, SPACES) for e in epochs
    }
    rows = []
    for space in tqdm(SPACES, desc="stability", unit="space", disable=not progress):
        live = [e for e in epochs if space in vectors[e] and not is_degenerate(vectors[e][space])]
        rdms = {
            e: upper(crossvalidated_distances(vectors[e][space], labels, classes)) for e in live
        }
        resampled = {
            e: bootstrap.cluster_distances(
                vectors[e][space], labels, classes, counts, "crossvalidated"
            )
            for e in live
        }
        cka = EpochCKA({e: vectors[e][space] for e in live}, weights)
        for e_a, e_b in _pairs(live):
            intervals = _resampled(e_a, e_b, live) and len(counts)
            for measure in MEASURES:
                if measure == "cka":
                    value = float(cka(e_a, e_b, "plain")[0])
                    replicates = cka(e_a, e_b, "resampled") if intervals else None
                else:
                    value = float(_rdm_correlation(rdms[e_a], rdms[e_b]))
                    replicates = (
                        _rdm_correlation(resampled[e_a], resampled[e_b]) if intervals else None
                    )
                low, high = (
                    bootstrap.centred_interval(value, replicates)
                    if replicates is not None
                    else (np.nan, np.nan)
                )
                rows.append(
                    dict(
                        space=space,
                        measure=measure,
                        epoch_a=e_a,
                        epoch_b=e_b,
                        value=value,
                        ci_low=low,
                        ci_high=high,
                    )
                )
    return pd.DataFrame(rows, columns=COLUMNS)


@timed
def write_stability(
    run: RunFolder, epochs: list[int] | None = None, force: bool = False, progress: bool = True
) -> StepResult:
    """The ``stability`` step's table: ``analysis/stability.csv``, unless up to date (its
    figure: ``plotting.write_stability_figure``); ``progress``: a bar per space."""
    written = run.write_table(
        "stability",
        "stability.csv",
        lambda e: stability_table(run, e, progress),
        epochs,
        force,
    )
    table = run.stability()
    last = table[(table.epoch_b == table.epoch_b.max()) & (table.measure == "cka")]
    text = (
        f"linear CKA with epoch {table.epoch_b.max()}:\n"
        + last.pivot(index="epoch_a", columns="space", values="value").round(3).to_string()
    )
    path = run.files.table("stability.csv")
    return StepResult.of("stability", [path], written, table=table, summary=text)
