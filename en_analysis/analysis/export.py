"""The ``export`` step: per-category ratio statistics as tidy (and wide) CSV tables, and
TensorBoard projector files (``projector``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.io import write_csv
from ..run.folder import Ratios, RunFolder
from ..steps.results import StepResult, timed
from .projector import write_projector

STAT_COLUMNS = [
    "epoch",
    "category",
    "synset",
    "layer_index",
    "layer",
    "normalizer",
    "n",
    "mean",
    "std",
    "median",
    "q25",
    "q75",
]


def category_stats(r: Ratios) -> pd.DataFrame:
    """One row per (category, layer, normalizer): n, mean, std (ddof=1), median, q25, q75."""
    layers, k = r.ratios.shape[1:]
    frames = []
    for c in r.present:
        x = r.ratios[r.labels == c]  # (n, L, K)
        q25, median, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=0)
        frames.append(
            pd.DataFrame(
                {
                    "epoch": r.epoch,
                    "category": r.categories[c],
                    "synset": r.synsets[c],
                    "layer_index": np.repeat(np.arange(layers), k),
                    "layer": np.repeat(np.array(r.layer_names), k),
                    "normalizer": np.tile(np.array(r.normalizers), layers),
                    "n": len(x),
                    "mean": x.mean(0).ravel(),
                    "std": x.std(0, ddof=1).ravel() if len(x) > 1 else np.nan,
                    "median": median.ravel(),
                    "q25": q25.ravel(),
                    "q75": q75.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[STAT_COLUMNS]


def wide(stats: pd.DataFrame) -> pd.DataFrame:
    """Spreadsheet form: one row per (epoch, category), one column per ``layer/normalizer`` mean."""
    table = stats.assign(column=stats["layer"] + "/" + stats["normalizer"]).pivot_table(
        index=["epoch", "category", "synset", "n"], columns="column", values="mean", sort=False
    )
    order = list(dict.fromkeys(stats["layer"] + "/" + stats["normalizer"]))
    return table[order].reset_index()


@timed
def export(
    run: RunFolder,
    epochs: list[int] | None = None,
    samples: bool = False,
    wide_table: bool = False,
    projector: bool = False,
    force: bool = False,
) -> StepResult:
    """The ``export`` step: ``category_stats.csv`` of the analysis (and the samples / wide
    variants), unless up to date; with ``projector``, the TensorBoard projector files too."""
    epochs = epochs or run.extracted_epochs()
    paths = [run.files.table("category_stats.csv")]
    if wide_table:
        paths.append(run.files.table("category_stats_wide.csv"))
    if samples:
        paths.append(run.files.table("sample_ratios.csv"))

    def write() -> None:
        loaded = [run.ratios(e) for e in epochs]
        stats = pd.concat([category_stats(r) for r in loaded], ignore_index=True)
        write_csv(paths[0], stats)
        if wide_table:
            write_csv(run.files.table("category_stats_wide.csv"), wide(stats))
        if samples:
            frame = pd.concat([r.to_frame() for r in loaded], ignore_index=True)
            write_csv(run.files.table("sample_ratios.csv"), frame)

    inputs = [run.files.ratio_file(e) for e in epochs]
    written = run.make(paths, inputs, run.step_settings("export"), write, force)
    result = StepResult.of("export", paths, written)
    if projector:
        folder = write_projector(run, epochs)
        result.written.append(folder)
        result.summary = f"projector: {folder} (open it with: tensorboard --logdir {folder})"
    return result
