"""Seed replicates: one ordinary run per training seed, and the spread of every number across
runs (``compare``): how much of a difference is the seed, not the effect.

Runs are comparable when they analysed the same evaluation images (same categories, same
samples); ``compare`` refuses others in one line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.verdict import markdown, verdicts
from ..core.errors import UserError
from ..core.io import atomic_write_text, write_csv
from ..core.layout import AnalysisLayout
from ..figures.explorer import Run
from ..figures.plotting import replicates_figure, save
from ..run.tables import one
from ..settings.config import Config, validate
from ..settings.rules import Effect
from ..steps.changes import Change, Changes
from .reproduce import reproduce

KEYS = ["source", "space", "dims", "metric", "epoch"]
COLUMNS = [*KEYS, "mean", "sd", "min", "max", "n"]


@dataclass
class Replicates:
    """Runs of one setting with different seeds, and their numbers side by side: ``values`` one
    row per run and number, ``table`` the mean, sd (ddof=1), min, max and n of each number."""

    runs: list[Run]
    values: pd.DataFrame
    table: pd.DataFrame

    def number(self, source: str, space: str, metric: str, epoch: int, dims: str = "high"):
        """One row of ``table`` (a Series), e.g. ``("clustering", "ratios", "knn", 12)``."""
        return one(self.table, source=source, space=space, dims=dims, metric=metric, epoch=epoch)


def _long(run: Run) -> pd.DataFrame:
    """Every number of a run in one long table: clustering values, WordNet r and p."""
    c = run.clustering()
    w = run.wordnet()
    clustering = c.assign(source="clustering")[[*KEYS, "value"]]
    wordnet = pd.concat(
        [
            w.assign(source="wordnet", metric="spearman", value=w.spearman),
            w.assign(source="wordnet", metric="p_value", value=w.p_value),
        ]
    )[clustering.columns]
    return pd.concat([clustering, wordnet], ignore_index=True).assign(run=str(run.path))


# the steps whose outputs replicates are compared by: their tables and the ratio files
COMPARED = ("extract", "embed", "metrics", "wordnet", "verdict")


def differs_beyond_seed(change: Change) -> bool:
    """Whether replicates may not differ in a setting: anything but the training seed, where
    and how fast they ran, and analysis settings that shape none of the compared outputs."""
    free = change.key == "train.seed" or change.effect == Effect.RUNTIME
    return not free and (
        change.effect != Effect.ANALYSIS or bool(set(change.steps) & set(COMPARED))
    )


def check_comparable(runs: list[Run]) -> None:
    """One line, naming the first run that differs, if a run is listed twice, if the runs did
    not analyse the same evaluation images (categories and samples), or if they differ in a
    setting other than the training seed (and where they ran); or naming a table that is not
    the file its step wrote."""
    if len(runs) < 2:
        raise UserError("compare needs at least two runs")
    for run in runs:
        run.check_inputs([run.files.table(n) for n in ("clustering.csv", "wordnet.csv")])
    folders = [run.path.resolve() for run in runs]
    twice = next((run for run, f in zip(runs, folders) if folders.count(f) > 1), None)
    if twice is not None:
        raise UserError(f"{twice.path} is listed more than once: a run is not its own replicate")
    reference = runs[0].ratios(runs[0].extracted_epochs()[0])
    for run in runs[1:]:
        r = run.ratios(run.extracted_epochs()[0])
        if r.categories != reference.categories or not np.array_equal(
            r.sample_index, reference.sample_index
        ):
            raise UserError(
                f"{run.path} analysed other evaluation images than {runs[0].path} (categories "
                "or samples differ: analysis.categories, per_category and subset_seed must match)"
            )
        change = next(filter(differs_beyond_seed, Changes(runs[0].config, run.config).all), None)
        if change:
            raise UserError(
                f"{run.path} has {change.key} = {change.new!r}, {runs[0].path} {change.old!r}: "
                "replicates differ in train.seed only"
            )


def compare(paths: list[Path | str]) -> Replicates:
    """The spread of every clustering and WordNet number across finished runs."""
    runs = [Run(p) for p in paths]
    check_comparable(runs)
    values = pd.concat([_long(run) for run in runs], ignore_index=True)
    grouped = values.groupby(KEYS, sort=False).value
    table = pd.DataFrame(
        {
            "mean": grouped.mean(),
            "sd": grouped.std(ddof=1),
            "min": grouped.min(),
            "max": grouped.max(),
            "n": grouped.count(),
        }
    ).reset_index()[COLUMNS]
    return Replicates(runs, values, table)


def write_replicates(out: Path | str, paths: list[Path | str]) -> tuple[Replicates, pd.DataFrame]:
    """``OUT/analysis/replicates.csv``, ``replicate_verdict.csv`` and
    ``OUT/figures/replicates.png``: the spread across ``paths``, and the verdict on the runs'
    mean - every row one test, the runs resampled with the images (or categories) they share
    (``verdict.verdicts``)."""
    out = Path(out)
    result = compare(paths)
    files = AnalysisLayout(out)  # the replicates folder holds tables and figures like a run's
    write_csv(files.table("replicates.csv"), result.table)
    verdict = verdicts(result.runs, result.runs[0].config.train.lr_drops)
    write_csv(files.table("replicate_verdict.csv"), verdict)
    atomic_write_text(files.table("replicate_verdict.md"), markdown(verdict) + "\n")
    save(replicates_figure(result.table, result.runs), files.figures / "replicates")
    return result, verdict


def replicate(
    config: Config, seeds: list[int], out: Path | str, progress: bool = True
) -> tuple[Replicates, pd.DataFrame]:
    """Train and analyse one run per seed in ``OUT/seed-K`` (each resumable, steps skipped when
    up to date), then ``write_replicates``."""
    if len(set(seeds)) < 2:
        raise UserError(f"replicate needs at least two different seeds, got {seeds}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UserError(f"--seeds lists {', '.join(map(str, twice))} more than once")
    configs = []
    for seed in seeds:  # every seed checked before any run trains
        cfg = copy.deepcopy(config)
        cfg.train.seed = seed
        try:
            validate(cfg)
        except UserError as e:
            raise UserError(f"--seeds {seed}: {e}") from None
        configs.append(cfg)
    out = Path(out)
    paths = []
    for cfg in configs:
        path = out / f"seed-{cfg.train.seed}"
        summary = reproduce(cfg, path, progress=progress)
        if progress:
            print(summary.text())
        paths.append(path)
    return write_replicates(out, paths)
