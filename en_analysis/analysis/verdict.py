"""The verdict on the paper's three claims: one test per row, on the unit the claim is about,
against the reference distribution that answers it, decided by rules fixed in advance.

Rows (``inference.decide`` turns each into holds / does not hold / inconclusive):

- claim 1, semantic clusters (unit: images; leave-one-out k-NN accuracy at the last epoch):
  *vs chance* (label permutations), then the paired differences *beyond the pixels*, *beyond
  the statistics* (the head inputs) and *beyond random heads* (the mean of ``HEADS_IN_TEST``
  random heads on the same head inputs; the learned ratios' rank among all
  ``analysis.random_heads`` is reported beside it). A difference is taken on the same image
  resamples for both spaces.
- claim 2, appearance embedding (unit: categories; Spearman r between WordNet distances and
  cross-validated cluster distances at the last epoch): *vs no relation* (the exact Mantel test
  over every relabelling of the categories), *beyond the pixels* (r(ratios) - r(pixels), the
  same category resamples for both), *beyond the pixels, partial* (the partial r given the
  pixels' distances, Freedman-Lane relabelings) and *beyond random heads*.
- claim 3, dynamic (unit: images, the same images at every epoch; d = the last epoch before
  the first LR drop): *formed early*, the clustering at d reaches ``analysis.formed_share`` of
  the last epoch's, above chance: (acc_d - chance) - share (acc_last - chance) > 0; *settles*,
  the category geometry moves less in the first epoch after the drop than in the epoch before
  it: Fisher z of r(RDM_d, RDM_d+1) minus that of r(RDM_d-1, RDM_d) > 0 (RDMs of
  cross-validated distances, every resample's images alike at the three epochs).

Holm's adjustment runs within each claim's family of comparisons; the first row of claims 1
and 2 (vs chance, vs no relation) is a family of one. The first rows and claim 3 are computed
for every control space too (pixels, statistics, features, a random head): a row that holds for
a control as well says something about the data or the training schedule, not about EN
(``specific``), and the claim's EN-specific evidence is its comparison rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..core.errors import UserError
from ..core.io import atomic_write_text, read_csv, write_csv
from ..data.wordnet import category_synsets, wordnet_distances
from ..run.folder import RunFolder
from ..run.tables import Space, select
from ..steps.results import StepResult, timed
from . import bootstrap, inference
from .controls import SPACES, head_chunks, space_vectors
from .inference import HOLDS, Result
from .metrics import nearest
from .spaces import scale_ratios
from .statistics import crossvalidated_distances, mantel, upper

HEADS_IN_TEST = 10  # random heads whose mean the learned ratios are compared with (all are ranked)
COLUMNS = [
    "claim",
    "comparison",
    "space",
    "criterion",
    "values",
    "unit",
    "n_units",
    "n_runs",
    "estimate",
    "ci_low",
    "ci_high",
    "null",
    "p_value",
    "p_holm",
    "margin",
    "p_equivalence",
    "rank",
    "p_rank",
    "verdict",
    "reading",
    "specific",
]
CLAIM1, CLAIM2, CLAIM3 = "1 semantic clusters", "2 appearance embedding", "3 dynamic"
DESCRIPTIVE = "descriptive"  # a row that estimates without testing


@dataclass
class Measure:
    """A statistic of S runs (seed replicates of one analysis; S = 1 for one run) on shared
    draws: per run its value, its values on the B resamples, and where there is one, its values
    under P label permutations (``null``) or for H random heads (``reference``)."""

    point: np.ndarray  # (S,)
    replicates: np.ndarray  # (S, B)
    null: np.ndarray | None = None  # (S, P)
    reference: np.ndarray | None = None  # (S, H)

    def __sub__(self, other: Measure) -> Measure:
        return Measure(self.point - other.point, self.replicates - other.replicates)

    def collapse(self, rng: np.random.Generator) -> tuple[float, np.ndarray]:
        """The mean over runs and its replicates: one run's own, or for several runs the
        two-level resampling of runs and draws (``inference.two_level``)."""
        point = float(np.mean(self.point))
        if len(self.point) == 1:
            return point, self.replicates[0]
        return point, inference.two_level(self.point, self.replicates, rng)


@dataclass
class Row:
    """One row of ``verdict.csv`` before Holm's adjustment: the claim and comparison, the space
    and criterion tested, the unit resampled and how many, the test's ``Result``, the compared
    values as text, and the family within which Holm adjusts (plus the rank among random heads
    where the row has one)."""

    claim: str
    comparison: str
    space: str
    criterion: str
    unit: str
    n_units: int
    test: Result
    values: str  # the compared quantities, for the reader
    family: str  # Holm's adjustment runs within a family
    rank: str = ""
    p_rank: float = float("nan")


# --- the measurements of one run --------------------------------------------------------------


class Evidence:
    """What the rows of one run are computed from: its spaces at the epochs the criteria name
    (``spaces(epoch)``: name -> (N, D) vectors) and its random heads (``heads(epoch)``: each
    head's vectors in turn), with the measurements cached. ``of_run`` reads them from a run's
    ratio files; tests plant them."""

    def __init__(
        self,
        labels: np.ndarray,
        wordnet: np.ndarray,
        settings,
        epochs: list[int],
        spaces: Callable[[int], dict[str, np.ndarray]],
        heads: Callable[[int], Iterator[np.ndarray]] | None = None,
        ablation: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.labels, self.wordnet, self.settings = np.asarray(labels), wordnet, settings
        self.classes = list(dict.fromkeys(self.labels.tolist()))
        self.epochs, self.last = epochs, epochs[-1]
        self._space_fn, self._head_fn = spaces, heads
        self.ablation = ablation  # the last epoch's per-image outcomes per condition (``ablate``)
        self._cache: dict[tuple, object] = {}

    @classmethod
    def of_run(cls, run, epochs: list[int] | None = None) -> Evidence:
        """The evidence of a run through its analysis: the WordNet distances of its
        categories, the spaces (ratios, pixels, features, statistics, ...) and random heads of
        every extracted epoch (or of ``epochs``), read from the ratio files when first asked
        for, and the last epoch's ablation outcomes where ``ablate`` has run. Raises
        ``UserError`` when the ratio files lack the heads' inputs (extracted before they were
        stored)."""
        a = run.config.analysis
        epochs = epochs or run.extracted_epochs()
        pixels = run.pixels()["pixels"]
        last = run.ratios(epochs[-1])
        if last.head_inputs is None:
            raise UserError(
                f"{run.files.ratio_file(epochs[-1])} was extracted before the head inputs were "
                f"stored: run `en-analysis extract {run.path} --force`"
            )
        names = [last.categories[c] for c in last.present]
        synsets = category_synsets(names, [last.synsets[c] for c in last.present])

        def spaces(epoch: int) -> dict[str, np.ndarray]:
            return space_vectors(run.ratios(epoch), pixels, a.scaling, a.control_seed)

        def heads(epoch: int) -> Iterator[np.ndarray]:
            r = run.ratios(epoch)
            for chunk in head_chunks(r.head_inputs, r.ratios, a.random_heads, a.control_seed):
                for ratios in chunk:
                    yield scale_ratios(ratios, a.scaling)

        wordnet = wordnet_distances(synsets, a.wordnet_distance)
        return cls(last.labels, wordnet, a, epochs, spaces, heads, _ablation(run, epochs[-1]))

    def _cached(self, key: tuple, compute: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def spaces(self, epoch: int) -> dict[str, np.ndarray]:
        """The spaces at ``epoch``: space name -> (N, D) vectors, computed once and cached."""
        return self._cached(("spaces", epoch), lambda: self._space_fn(epoch))

    def has(self, epoch: int, space: str) -> bool:
        """Whether ``space`` was measured at ``epoch`` (the pixels, for example, only at the
        epochs the evidence holds)."""
        return epoch in self.epochs and space in self.spaces(epoch)

    @property
    def has_heads(self) -> bool:
        """Whether random heads were given (the "beyond random heads" rows need them)."""
        return self._head_fn is not None

    def knn(self, epoch: int, space: str, draws: Draws) -> Measure:
        """k-NN accuracy of a space: its value, on the image resamples, under the label
        permutations."""

        def compute() -> Measure:
            order, k = nearest(self.spaces(epoch)[space]), self.settings.knn
            return Measure(
                bootstrap.knn_accuracy(order, self.labels, np.ones((1, len(order)), int), k),
                bootstrap.knn_accuracy(order, self.labels, draws.images, k)[None],
                bootstrap.knn_label_permutations(order, self.labels, draws.labels, k)[None],
            )

        return self._cached(("knn", epoch, space), compute)

    def heads(self, epoch: int, draws: Draws) -> tuple[Measure, np.ndarray]:
        """The random heads: their k-NN accuracy (every head's value as ``reference``; the mean
        of the first ``HEADS_IN_TEST`` and its resamples) and their cross-validated distances
        (H, P)."""

        def compute() -> tuple[Measure, np.ndarray]:
            k = self.settings.knn
            ones = np.ones((1, len(self.labels)), int)
            values, replicates, rdms = [], [], []
            for x in self._head_fn(epoch):
                order = nearest(x)
                values.append(bootstrap.knn_accuracy(order, self.labels, ones, k)[0])
                if len(replicates) < HEADS_IN_TEST:
                    replicates.append(bootstrap.knn_accuracy(order, self.labels, draws.images, k))
                rdms.append(upper(crossvalidated_distances(x, self.labels, self.classes)))
            values = np.array(values)
            used = values[: len(replicates)]
            knn = Measure(
                used.mean(keepdims=True), np.mean(replicates, 0)[None], None, values[None]
            )
            return knn, np.array(rdms)

        return self._cached(("heads", epoch), compute)

    def rdm(self, epoch: int, space: str) -> np.ndarray:
        """(C, C) cross-validated distances of a space's categories."""
        x = self.spaces(epoch)[space]
        return self._cached(
            ("rdm", epoch, space), lambda: crossvalidated_distances(x, self.labels, self.classes)
        )

    def resampled_rdms(self, epoch: int, space: str, draws: Draws) -> np.ndarray:
        """(B, P) the space's cross-validated distances on each image resample."""
        x = self.spaces(epoch)[space]
        return bootstrap.cluster_distances(
            x, self.labels, self.classes, draws.images, "crossvalidated"
        )


@dataclass
class Draws:
    """The resamples every space, epoch and run shares: image counts (B, N), category draws
    (B, k), label permutations (P, N)."""

    images: np.ndarray
    categories: np.ndarray
    labels: np.ndarray
    rng: np.random.Generator  # for the runs' level of a two-level resampling

    @classmethod
    def make(cls, labels: np.ndarray, k: int, a) -> Draws:
        """The shared resamples of one analysis: ``analysis.verdict_bootstrap`` image and
        category draws from ``analysis.bootstrap_seed`` and ``analysis.permutations`` label
        permutations from ``analysis.permutation_seed``, for ``labels`` in ``k`` categories
        (``a`` is the analysis's settings)."""
        boot = np.random.default_rng([a.bootstrap_seed, 7])
        images = bootstrap.bootstrap_counts(labels, a.verdict_bootstrap, boot)
        categories = bootstrap.category_draws(k, a.verdict_bootstrap, boot)
        perm = np.random.default_rng([a.permutation_seed, 7])
        keys = perm.random((a.permutations, len(labels)))
        return cls(
            images, categories, np.argsort(keys, 1), np.random.default_rng([a.bootstrap_seed, 8])
        )


def _ablation(run, epoch: int) -> dict[str, np.ndarray] | None:
    """The ``ablate`` step's per-image outcomes at ``epoch``, per condition (None without)."""
    from ..core.io import load_npz

    path = run.files.table("ablation.npz")
    if not path.exists():
        return None
    d = load_npz(path)
    where = np.flatnonzero(d["epochs"] == epoch)
    if not len(where):
        return None
    return dict(zip(d["conditions"].tolist(), d["outcomes"][where[0]].astype(float)))


# --- the rows -----------------------------------------------------------------------------------


def _stack(measures: Sequence[Measure]) -> Measure:
    """One Measure of several runs (each run's arrays stacked)."""

    def cat(name: str) -> np.ndarray | None:
        parts = [getattr(m, name) for m in measures]
        return None if parts[0] is None else np.concatenate(parts)

    return Measure(cat("point"), cat("replicates"), cat("null"), cat("reference"))


def _over_runs(evidence: Sequence[Evidence], f: Callable[[Evidence], Measure]) -> Measure:
    return _stack([f(e) for e in evidence])


def _rank(learned: np.ndarray, reference: np.ndarray) -> tuple[str, float]:
    """The learned value's rank among the heads (mean over runs, heads matched by index) and
    the two-sided rank p (exact when the learned head is exchangeable with random ones)."""
    value, ref = float(np.mean(learned)), reference.mean(0)
    return f"{int((ref >= value).sum()) + 1} of {len(ref) + 1}", inference.two_sided_p(ref, value)


def _mean(m: Measure) -> float:
    return float(np.mean(m.point))


def _with_p(result: Result, p: float) -> Result:
    """``result`` with the p-value of another test of the same estimate (a permutation test)."""
    return dataclasses.replace(result, p_value=float(p))


def claim1_rows(evidence: Sequence[Evidence], draws: Draws, spaces: Sequence[str]) -> list[Row]:
    """The rows of claim 1 (semantic clusters): the k-NN accuracy at the last epoch against
    chance for each of ``spaces`` (the ratios', and each control's for the specificity check;
    a family each), then the ratios' against the pixels', the statistics' and random heads'
    (one Holm family; random heads with the ratios' rank among them). Several ``evidence`` are
    replicates: each row then tests their mean."""
    e0 = evidence[0]
    a, last, n = e0.settings, e0.last, len(e0.labels)
    rows = []
    knn = {
        s: _over_runs(evidence, lambda e, s=s: e.knn(last, s, draws))
        for s in spaces
        if all(e.has(last, s) for e in evidence)
    }

    def row(comparison: str, space: str, criterion: str, result: Result, values: str, **kw):
        rows.append(Row(CLAIM1, comparison, space, criterion, "images", n, result, values, **kw))

    for space, m in knn.items():
        point, replicates = m.collapse(draws.rng)
        chance = float(m.null.mean())
        row(
            "vs chance",
            space,
            f"k-NN accuracy (k={a.knn}) at epoch {last} minus its mean under label permutations",
            inference.permutation_test(point, m.null.mean(0), replicates, a.margin_knn),
            f"k-NN {point:.3f}; chance {chance:.3f}",
            family=f"{space}:1a",
        )
    if Space.RATIOS not in knn:
        return rows
    ratios = knn[Space.RATIOS]
    for other in (Space.PIXELS, Space.STATISTICS):
        if other in knn:
            point, replicates = (ratios - knn[other]).collapse(draws.rng)
            row(
                f"beyond the {other}",
                Space.RATIOS,
                f"k-NN accuracy of the ratios minus the {other}' at epoch {last}, same resamples",
                inference.bootstrap_test(point, replicates, 0.0, a.margin_knn),
                f"ratios {_mean(ratios):.3f}; {other} {_mean(knn[other]):.3f}",
                family="ratios:1",
            )
    if all(e.has_heads for e in evidence):
        heads = _over_runs(evidence, lambda e: e.heads(last, draws)[0])
        point, replicates = (ratios - heads).collapse(draws.rng)
        rank, p_rank = _rank(ratios.point, heads.reference)
        row(
            "beyond random heads",
            Space.RATIOS,
            f"k-NN accuracy of the ratios minus the mean of {HEADS_IN_TEST} random heads' at "
            f"epoch {last}, same resamples; rank among {a.random_heads}",
            inference.bootstrap_test(point, replicates, 0.0, a.margin_knn),
            f"ratios {_mean(ratios):.3f}; random heads {_mean(heads):.3f} (median of all "
            f"{heads.reference.shape[1]}: {np.median(heads.reference.mean(0)):.3f})",
            family="ratios:1",
            rank=rank,
            p_rank=p_rank,
        )
    return rows


def _r_measure(model: np.ndarray, data: np.ndarray, draws: Draws, control=None) -> Measure:
    """Spearman (or partial) r of one run's distances with the model, and its category
    resamples."""
    everything = np.arange(draws.categories.shape[1])[None]
    point = bootstrap.category_correlations(model, data, everything, control)[:, 0]
    return Measure(point, bootstrap.category_correlations(model, data, draws.categories, control))


def claim2_rows(evidence: Sequence[Evidence], draws: Draws, spaces: Sequence[str]) -> list[Row]:
    """The rows of claim 2 (appearance embedding): Spearman r between the WordNet distances
    and the cross-validated category distances at the last epoch against no relation (exact
    Mantel test), against the pixels and random heads (one Holm family), and the partial r
    given the pixels' distances (descriptive, untested)."""
    e0 = evidence[0]
    a, last, k = e0.settings, e0.last, len(e0.classes)
    wn = upper(e0.wordnet)
    rng = np.random.default_rng([a.permutation_seed, 8])
    unit = f"categories ({k}, {k * (k - 1) // 2} pairs)"
    what = f"Spearman r between {a.wordnet_distance} and cross-validated distances at epoch {last}"
    present = [s for s in spaces if all(e.has(last, s) for e in evidence)]
    rdms = {s: np.stack([e.rdm(last, s) for e in evidence]) for s in present}
    r = {s: _stack([_r_measure(wn, upper(d), draws) for d in rdms[s]]) for s in present}
    rows = []

    def row(comparison: str, space: str, criterion: str, result: Result, values: str, **kw):
        rows.append(Row(CLAIM2, comparison, space, criterion, unit, k, result, values, **kw))

    def relabelled(exact: bool) -> str:
        return "every relabelling" if exact else f"{a.permutations} random relabelings"

    for space in present:
        _, p, exact = mantel(e0.wordnet, rdms[space], a.permutations, rng, average=True)
        point, replicates = r[space].collapse(draws.rng)
        result = inference.bootstrap_test(point, replicates, 0.0, a.margin_r)
        row(
            "vs no relation",
            space,
            f"{what}; two-sided Mantel p over {relabelled(exact)}",
            _with_p(result, p[0]),
            f"r {point:.3f}",
            family=f"{space}:2a",
        )
    if Space.RATIOS not in present:
        return rows
    if Space.PIXELS in present:
        point, replicates = (r[Space.RATIOS] - r[Space.PIXELS]).collapse(draws.rng)
        row(
            "beyond the pixels",
            Space.RATIOS,
            f"{what}: the ratios' minus the pixels', same category resamples",
            inference.bootstrap_test(point, replicates, 0.0, a.margin_r),
            f"ratios r {_mean(r['ratios']):.3f}; pixels r {_mean(r['pixels']):.3f}",
            family="ratios:2",
        )
        partial = _stack(
            [
                _r_measure(wn, upper(d), draws, upper(c))
                for d, c in zip(rdms[Space.RATIOS], rdms[Space.PIXELS])
            ]
        )
        point, replicates = partial.collapse(draws.rng)
        interval = inference.bootstrap_test(point, replicates)
        row(
            "beyond the pixels, partial",
            Space.RATIOS,
            f"{what}: the ratios' given the pixels' distances (partial r), category resamples; "
            "descriptive, no test (a partial Mantel test does not keep its level when the "
            "pixels' distances follow WordNet)",
            dataclasses.replace(interval, p_value=float("nan")),
            f"partial r {point:.3f}",
            family="descriptive",
        )
    if not all(e.has_heads for e in evidence):
        return rows
    heads = []
    for e in evidence:
        h = e.heads(last, draws)[1]
        values = _r_measure(wn, h, draws).point
        resampled = bootstrap.category_correlations(wn, h[:HEADS_IN_TEST], draws.categories)
        heads.append(
            Measure(
                values[:HEADS_IN_TEST].mean(keepdims=True),
                _nanmean(resampled)[None],
                None,
                values[None],
            )
        )
    heads = _stack(heads)
    point, replicates = (r[Space.RATIOS] - heads).collapse(draws.rng)
    rank, p_rank = _rank(r[Space.RATIOS].point, heads.reference)
    row(
        "beyond random heads",
        Space.RATIOS,
        f"{what}: the ratios' minus the mean of {HEADS_IN_TEST} random heads', same category "
        f"resamples; rank among {a.random_heads}",
        inference.bootstrap_test(point, replicates, 0.0, a.margin_r),
        f"ratios r {_mean(r['ratios']):.3f}; random heads r {_mean(heads):.3f}",
        family="ratios:2",
        rank=rank,
        p_rank=p_rank,
    )
    return rows


def _nanmean(values: np.ndarray) -> np.ndarray:
    """The mean over heads of each resample's r (NaN where every head's is: too few pairs)."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(0), total / finite.sum(0), np.nan)


BEYOND = "beyond the paper: EN uses its ratios"
ABLATIONS = (  # (comparison, condition compared, against, criterion)
    ("per-sample ratios matter", "computed", "dataset-mean", "the layers' mean ratios"),
    ("ratios matter per image", "computed", "shuffled", "the ratios shuffled across images"),
    (
        "category information in the ratios is used",
        "category-mean",
        "dataset-mean",
        "the layers' mean ratios, against their category means",
    ),
)


def ablation_rows(evidence: Sequence[Evidence], draws: Draws) -> list[Row]:
    """Additional rows, beyond the paper's claims (``ablation``): the evaluation accuracy with
    the ratios as named minus with the ratios replaced, at the last epoch, on the same image
    resamples (a mean of per-image outcomes of fixed models)."""
    if not all(e.ablation for e in evidence):
        return []
    e0 = evidence[0]
    rows = []
    for comparison, condition, against, criterion in ABLATIONS:

        def measure(e: Evidence, condition=condition, against=against) -> Measure:
            difference = e.ablation[condition] - e.ablation[against]  # (N,)
            resampled = draws.images @ difference / draws.images.sum(1)
            return Measure(difference.mean(keepdims=True), resampled[None])

        m = _over_runs(evidence, measure)
        point, replicates = m.collapse(draws.rng)
        accuracy = {
            c: np.mean([e.ablation[c].mean() for e in evidence]) for c in (condition, against)
        }
        rows.append(
            Row(
                BEYOND,
                comparison,
                "ratios",
                f"accuracy at epoch {e0.last} with the ratios {condition} minus with {criterion}",
                "images",
                len(e0.labels),
                inference.bootstrap_test(point, replicates, 0.0, e0.settings.margin_knn),
                f"{condition} {accuracy[condition]:.3f}; {against} {accuracy[against]:.3f}",
                family="ratios:beyond",
            )
        )
    return rows


def _fisher(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -0.999999, 0.999999))


def _rdm_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson r of two (B, P) arrays of distances."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / np.sqrt((a**2).sum(1) * (b**2).sum(1))


def claim3_rows(
    evidence: Sequence[Evidence], draws: Draws, spaces: Sequence[str], lr_drops: list[int]
) -> list[Row]:
    """The rows of claim 3 (clustering dynamic): "formed early" (k-NN above chance at the
    epoch before the first of ``lr_drops`` against ``formed_share`` of the last epoch's) and
    "settles after the first drop" (the category geometry moves less in the first epoch at the
    lower rate than in the epoch before), each also for the control spaces that train; "not
    measured", with the reason, where the schedule leaves nothing to compare."""
    e0 = evidence[0]
    a, last, n = e0.settings, e0.last, len(e0.labels)
    d = lr_drops[0] if lr_drops else None
    moving = [s for s in spaces if s != Space.PIXELS]  # the pixels do not change with training
    rows = []

    def row(comparison: str, space: str, criterion: str, unit: str, result: Result, values=""):
        rows.append(
            Row(CLAIM3, comparison, space, criterion, unit, n, result, values, family=f"{space}:3")
        )

    def available(space: str, epochs: tuple[int, ...]) -> bool:
        return all(e.has(x, space) for e in evidence for x in epochs)

    formed, share = "formed early", a.formed_share
    if d is None or d >= last or d < 1 or d not in e0.epochs:
        why = (
            "no LR drop before the last epoch"
            if d is None or d >= last
            else f"epoch {d} (the last before the first LR drop) was not analysed"
        )
        for space in moving:
            row(formed, space, f"not measured: {why}", "images", inference.NOT_MEASURED)
    else:
        for space in (s for s in moving if available(s, (d, last))):

            def early(e: Evidence, space=space) -> Measure:
                at_d, at_last = e.knn(d, space, draws), e.knn(last, space, draws)
                c_d, c_last = at_d.null.mean(), at_last.null.mean()
                return Measure(
                    (at_d.point - c_d) - share * (at_last.point - c_last),
                    (at_d.replicates - c_d) - share * (at_last.replicates - c_last),
                )

            point, replicates = _over_runs(evidence, early).collapse(draws.rng)
            at_d = np.mean([e.knn(d, space, draws).point for e in evidence])
            at_last = np.mean([e.knn(last, space, draws).point for e in evidence])
            row(
                formed,
                space,
                f"k-NN accuracy above chance at epoch {d} (the last before the first LR drop) "
                f"minus {share:g} x that at epoch {last}, same resamples",
                "images (2 epochs)",
                inference.bootstrap_test(point, replicates),
                f"k-NN {at_d:.3f} at epoch {d}, {at_last:.3f} at epoch {last}",
            )
    settles = "settles after the first drop"
    if d is None or d + 1 > last or d - 1 < 1 or not {d - 1, d, d + 1} <= set(e0.epochs):
        why = (
            "no epoch after the first LR drop"
            if d is None or d + 1 > last
            else "needs epochs d-1, d and d+1 around the first drop, after epoch 0"
            if d - 1 < 1
            else "epochs around the first drop were not analysed"
        )
        for space in moving:
            row(settles, space, f"not measured: {why}", "images (3 epochs)", inference.NOT_MEASURED)
        return rows
    for space in (s for s in moving if available(s, (d - 1, d, d + 1))):

        def settle(e: Evidence, space=space) -> Measure:
            before, at, after = (upper(e.rdm(x, space))[None] for x in (d - 1, d, d + 1))
            point = _fisher(_rdm_correlation(at, after)) - _fisher(_rdm_correlation(before, at))
            b, m, f = (e.resampled_rdms(x, space, draws) for x in (d - 1, d, d + 1))
            replicates = _fisher(_rdm_correlation(m, f)) - _fisher(_rdm_correlation(b, m))
            return Measure(point, replicates[None])

        point, replicates = _over_runs(evidence, settle).collapse(draws.rng)
        r_before = np.mean(
            [
                _rdm_correlation(*(upper(e.rdm(x, space))[None] for x in (d - 1, d)))
                for e in evidence
            ]
        )
        r_after = np.mean(
            [
                _rdm_correlation(*(upper(e.rdm(x, space))[None] for x in (d, d + 1)))
                for e in evidence
            ]
        )
        row(
            settles,
            space,
            f"Fisher z of r(RDM {d}, RDM {d + 1}) minus that of r(RDM {d - 1}, RDM {d}): the "
            "category geometry (cross-validated distances) moves less in the first epoch at the "
            "lower rate, same resamples",
            "images (3 epochs)",
            inference.bootstrap_test(point, replicates),
            f"r(RDM {d - 1}, RDM {d}) {r_before:.3f}; r(RDM {d}, RDM {d + 1}) {r_after:.3f}",
        )
    return rows


# --- decisions and the table ---------------------------------------------------------------------


def decide(rows: list[Row], n_runs: int) -> pd.DataFrame:
    """The verdict table: Holm within each family, the decision rule, and for every first row
    and claim-3 row of the ratios, which controls the same test holds for."""
    table = []
    families: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        families.setdefault(row.family, []).append(i)
    p_holm = np.full(len(rows), np.nan)
    p_eq_holm = np.full(len(rows), np.nan)
    for name, members in families.items():
        if name == "descriptive":
            continue
        p_holm[members] = inference.holm([rows[i].test.p_value for i in members])
        p_eq_holm[members] = inference.holm([rows[i].test.p_equivalence for i in members])
    for i, row in enumerate(rows):
        if row.family == "descriptive":
            verdict, reading = DESCRIPTIVE, "an estimate with its interval, not a test"
        else:
            verdict, reading = inference.decide(row.test, p_holm[i], p_eq_holm[i])
        t = row.test
        table.append(
            dict(
                claim=row.claim,
                comparison=row.comparison,
                space=row.space,
                criterion=row.criterion,
                values=row.values,
                unit=row.unit,
                n_units=row.n_units,
                n_runs=n_runs,
                estimate=t.estimate,
                ci_low=t.ci_low,
                ci_high=t.ci_high,
                null=t.null,
                p_value=t.p_value,
                p_holm=p_holm[i],
                margin=t.margin,
                p_equivalence=p_eq_holm[i],
                rank=row.rank,
                p_rank=row.p_rank,
                verdict=verdict,
                reading=reading,
                specific="",
            )
        )
    out = pd.DataFrame(table, columns=COLUMNS)
    for i in out.index[out.space == Space.RATIOS]:
        same = select(out, claim=out.claim[i], comparison=out.comparison[i])
        same = same[same.space != Space.RATIOS]
        if same.empty:
            continue
        also = same[same.verdict == HOLDS].space.tolist()
        if out.verdict[i] != HOLDS:
            out.loc[i, "specific"] = ""
        elif also:
            out.loc[i, "specific"] = "no: holds for " + ", ".join(also) + " too"
        else:
            out.loc[i, "specific"] = "yes: for no control"
    return out


def verdict_table(
    evidence: Sequence[Evidence], lr_drops: list[int], progress: bool = False
) -> pd.DataFrame:
    """The verdict table of the runs whose ``Evidence`` is given (one run, or seed replicates
    of one analysis on the same images): every row tested on the runs' mean. ``progress``: a
    bar over the claims (each measures what it needs, in every space)."""
    e0 = evidence[0]
    draws = Draws.make(e0.labels, len(e0.classes), e0.settings)
    parts = {
        "claim 1": lambda: claim1_rows(evidence, draws, SPACES),
        "claim 2": lambda: claim2_rows(evidence, draws, SPACES),
        "claim 3": lambda: claim3_rows(evidence, draws, SPACES, lr_drops),
        "ablation": lambda: ablation_rows(evidence, draws),
    }
    rows = []
    bar = tqdm(parts.items(), desc="verdict", unit="claim", disable=not progress)
    for name, part in bar:
        bar.set_postfix_str(name)
        rows += part()
    return decide(rows, len(evidence))


def verdicts(
    runs: Sequence, lr_drops: list[int], epochs: list[int] | None = None, progress: bool = False
) -> pd.DataFrame:
    """The verdict table of one run, or of seed replicates of one analysis (the same images);
    ``progress``: a bar over the claims."""
    return verdict_table([Evidence.of_run(run, epochs) for run in runs], lr_drops, progress)


@timed
def write_verdict(run: RunFolder, force: bool = False, progress: bool = True) -> StepResult:
    """The ``verdict`` step: ``verdict.csv`` and ``verdict.md`` of the analysis from its ratio
    files, unless up to date; ``progress``: a bar over the claims."""
    epochs = run.extracted_epochs()
    csv, md = run.files.table("verdict.csv"), run.files.table("verdict.md")
    inputs = [*(run.files.ratio_file(e) for e in epochs), run.files.pixels]
    ablation = run.files.table("ablation.npz")
    inputs += [ablation] if ablation.exists() else []  # the additional rows, where measured
    settings = run.step_settings("verdict")
    table = None

    def write() -> None:
        nonlocal table
        table = verdicts([run], run.config.train.lr_drops, progress=progress)
        write_csv(csv, table)
        atomic_write_text(md, markdown(table) + "\n")

    written = run.make([csv, md], inputs, settings, write, force)
    if table is None:
        table = read_csv(csv)
    return StepResult.of("verdict", [csv, md], written, table=table, summary=markdown(table))


def _number(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.3f}" if abs(v) >= 0.001 else f"{v:.1e}"


def _p(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.3g}" if v >= 0.001 else "<0.001"


def markdown(table: pd.DataFrame) -> str:
    """The ratios' rows as Markdown (printed at the end of ``reproduce``): the compared values,
    the estimate with its interval, the unit, the Holm-adjusted p, the verdict, and whether a
    control passes the same test."""
    head = [
        "claim",
        "comparison",
        "values",
        "estimate [95% CI]",
        "unit",
        "p (Holm)",
        "verdict",
        "specific to EN",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    text = {c: "" for c in ("values", "rank", "reading", "specific")}  # empty in a read CSV
    for row in select(table, space=Space.RATIOS).fillna(text).itertuples(False):
        estimate = (
            f"{_number(row.estimate)} [{_number(row.ci_low)}, {_number(row.ci_high)}]"
            if np.isfinite(row.estimate)
            else ""
        )
        if row.rank:
            estimate += f"; rank {row.rank} (p {_p(row.p_rank)})"
        verdict = row.verdict + (f" ({row.reading})" if row.reading.startswith("no better") else "")
        cells = [
            row.claim,
            row.comparison,
            row.values,
            estimate,
            row.unit,
            _p(row.p_holm),
            verdict,
            row.specific,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
