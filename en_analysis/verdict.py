"""The verdict on the paper's three claims, from one run's tables and criteria fixed in advance.

Each row is one claim and one comparison: the criterion, the numbers with their 95% intervals,
and ``holds``, ``does not hold``, ``inconclusive`` (intervals overlap, or p is not small but the
correlation's interval still reaches above 0) or ``not measured``. Criteria:

- claim 1, semantic clusters: the ratios' k-NN accuracy at the last epoch, its interval above
  the shuffled-label interval; "beyond the input": above the raw pixels' interval; "beyond a
  random head": above the interval of the same network with random ratio sub-networks.
- claim 2, appearance embedding: Mantel p < 0.05 for the ratios at the last epoch; "beyond the
  input": the ratios' Spearman r interval above the pixels' r interval.
- claim 3, dynamic: the centroid shift of the first epoch after the first LR drop is below half
  the mean shift of the epochs before it; the last epoch's silhouette lies inside the interval
  of the first epoch after the first drop (the clusters have settled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

HOLDS, FAILS, INCONCLUSIVE, UNMEASURED = "holds", "does not hold", "inconclusive", "not measured"
COLUMNS = ["claim", "comparison", "criterion", "numbers", "verdict"]


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if not np.isfinite(self.low):
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def above(a: Estimate | None, b: Estimate | None) -> str:
    """Is ``a``'s interval entirely above ``b``'s (holds), entirely below or touching from below
    (does not hold), or do they overlap (inconclusive)?"""
    if a is None or b is None or not all(np.isfinite([a.low, a.high, b.low, b.high])):
        return UNMEASURED
    if a.low > b.high:
        return HOLDS
    if a.high <= b.low:
        return FAILS
    return INCONCLUSIVE


def _estimate(table: pd.DataFrame, value: str = "value", prefix: str = "") -> Estimate | None:
    if table.empty:
        return None
    row = table.iloc[0]
    return Estimate(row[value], row[f"{prefix}ci_low"], row[f"{prefix}ci_high"])


def verdicts(
    clustering: pd.DataFrame, wordnet: pd.DataFrame, lr_drops: list[int], alpha: float = 0.05
) -> pd.DataFrame:
    """The verdict table of one run from its ``clustering.csv`` and ``wordnet.csv`` tables."""
    last = int(clustering.epoch.max())
    rows = []

    def add(claim: str, comparison: str, criterion: str, numbers: str, verdict: str) -> None:
        rows.append(dict(zip(COLUMNS, (claim, comparison, criterion, numbers, verdict))))

    def knn(space: str) -> pd.DataFrame:
        c = clustering
        return c[(c.space == space) & (c.dims == "high") & (c.metric == "knn") & (c.epoch == last)]

    ratios = _estimate(knn("ratios"))
    shuffled = _estimate(knn("ratios"), "shuffled", "shuffled_")
    claim1 = "1 semantic clusters"
    add(
        claim1,
        "ratios vs shuffled labels",
        f"k-NN accuracy at epoch {last}: interval above the shuffled-label interval",
        f"ratios {ratios}; shuffled {shuffled}",
        above(ratios, shuffled),
    )
    for space, name in (("pixels", "raw pixels"), ("random-head", "random ratio heads")):
        other = _estimate(knn(space))
        add(
            claim1,
            f"ratios vs {name}",
            f"k-NN accuracy at epoch {last}: interval above the {name}' interval",
            f"ratios {ratios}; {name} {other if other else 'not measured'}",
            above(ratios, other),
        )

    w = wordnet[wordnet.epoch == last]
    r_ratios = _estimate(w[w.space == "ratios"], "spearman")
    r_pixels = _estimate(w[w.space == "pixels"], "spearman")
    claim2 = "2 appearance embedding"
    p = float(w[w.space == "ratios"].p_value.iloc[0]) if r_ratios else np.nan
    if not np.isfinite(p):
        verdict = UNMEASURED
    elif p < alpha:
        verdict = HOLDS
    else:
        verdict = FAILS if r_ratios.high <= 0 else INCONCLUSIVE
    add(
        claim2,
        "ratios vs no relation",
        f"Mantel p < {alpha} at epoch {last}",
        f"Spearman r {r_ratios}, p {p:.3g}",
        verdict,
    )
    add(
        claim2,
        "ratios vs raw pixels",
        f"Spearman r at epoch {last}: interval above the pixels' interval",
        f"ratios {r_ratios}; pixels {r_pixels}",
        above(r_ratios, r_pixels),
    )

    claim3 = "3 dynamic"
    c = clustering
    shift = c[(c.space == "ratios") & (c.metric == "centroid_shift")].set_index("epoch").value
    sil = c[(c.space == "ratios") & (c.dims == "high") & (c.metric == "silhouette")]
    if not lr_drops or lr_drops[0] + 1 > last:
        for comparison in ("centroid shift after the first LR drop", "silhouette settles"):
            add(claim3, comparison, "needs an epoch after the first LR drop", "", UNMEASURED)
        return pd.DataFrame(rows, columns=COLUMNS)
    after = lr_drops[0] + 1
    before = shift[(shift.index <= lr_drops[0])].dropna()
    if after in shift.index and len(before):
        ok = shift[after] < before.mean() / 2
        add(
            claim3,
            "centroid shift after the first LR drop",
            f"shift at epoch {after} < half the mean shift of epochs {before.index.min()}-"
            f"{before.index.max()}",
            f"{shift[after]:.3f} vs mean {before.mean():.3f}",
            HOLDS if ok else FAILS,
        )
    else:
        add(claim3, "centroid shift after the first LR drop", "", "", UNMEASURED)
    at_drop = _estimate(sil[sil.epoch == after])
    at_last = sil[sil.epoch == last].value
    if at_drop is None or at_last.empty or not np.isfinite(at_drop.low):
        verdict, numbers = UNMEASURED, ""
    else:
        inside = at_drop.low <= float(at_last.iloc[0]) <= at_drop.high
        verdict = HOLDS if inside else FAILS
        numbers = f"epoch {last}: {float(at_last.iloc[0]):.3f}; epoch {after}: {at_drop}"
    add(
        claim3,
        "silhouette settles",
        f"silhouette at epoch {last} inside the interval of epoch {after}",
        numbers,
        verdict,
    )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_verdict(run, force: bool = False) -> tuple[pd.DataFrame, bool]:
    """The ``verdict`` step: ``verdict.csv`` and ``verdict.md`` of the analysis from its
    clustering and WordNet tables, unless up to date; (the table, whether it was written)."""
    from .errors import UserError
    from .io import atomic_write_text, write_csv

    tables = [run.files.table(n) for n in ("clustering.csv", "wordnet.csv")]
    missing = [p.name for p in tables if not p.exists()]
    if missing:
        raise UserError(
            f"{run.path} has no {' or '.join(missing)} yet: run `en-analysis metrics` and "
            f"`en-analysis wordnet` on it first"
        )
    csv, md = run.files.table("verdict.csv"), run.files.table("verdict.md")
    table = verdicts(run.clustering(), run.wordnet(), run.config.train.lr_drops)

    def write() -> None:
        write_csv(csv, table)
        atomic_write_text(md, markdown(table) + "\n")

    written = run.make([csv, md], tables, {"lr_drops": run.config.train.lr_drops}, write, force)
    return table, written


def markdown(table: pd.DataFrame) -> str:
    """The verdict table as Markdown (printed at the end of ``reproduce``)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)
