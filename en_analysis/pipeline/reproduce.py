"""``reproduce``: train -> extract -> embed -> metrics -> wordnet -> verdict -> export -> plot,
each step skipped when its outputs are up to date (``provenance``), so an interrupted run picks
up where it stopped and a changed input or setting redoes exactly what depends on it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ..analysis.embedding import embed
from ..analysis.export import export
from ..analysis.extract import extract
from ..analysis.metrics import ratio_movement, write_clustering
from ..analysis.verdict import markdown, write_verdict
from ..analysis.wordnet import Comparison, extreme_pairs, write_comparison
from ..core.errors import UserError
from ..core.io import run_lock
from ..core.layout import DEFAULT_ANALYSIS, RunLayout, epoch_files
from ..figures import plotting
from ..figures.explorer import write_explorer
from ..run.folder import Run
from ..settings.config import Config, read_config
from ..training.train import (
    final_metrics,
    refuse_conflicts,
    refuse_unused_changes,
    repair_metrics,
    train,
)


@dataclass
class Summary:
    """What a reproduce run measured and where it put things."""

    run: Path
    steps: dict[str, str] = field(default_factory=dict)  # step -> "done in 12s" / "up to date"
    numbers: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""  # the verdict table, Markdown

    def text(self) -> str:
        lines = [f"run: {self.run}"]
        lines += [f"  {step:8s} {status}" for step, status in self.steps.items()]
        lines += [f"  {k}: {v:.4g}" for k, v in self.numbers.items()]
        lines += [f"  {n}" for n in self.notes]
        lines += ["outputs:"] + [f"  {p}" for p in self.outputs]
        if self.verdict:
            lines += ["", "verdict (analysis/verdict.csv):", self.verdict]
        return "\n".join(lines)


def reproduce(
    config: Config,
    run_dir: Path | str,
    analysis: str = DEFAULT_ANALYSIS,
    force: bool = False,
    progress: bool = True,
) -> Summary:
    """Run every step for ``config`` in ``run_dir``, each skipped when its outputs are up to
    date (``provenance``); the analysis steps write the analysis ``analysis`` with
    ``config.analysis``. An analysis whose outputs were made with other settings is refused,
    unless ``force`` (replace it: every analysis step recomputes)."""
    run_dir = Path(run_dir)
    summary = Summary(run_dir)

    def step(name: str, fn):
        if progress:
            tqdm.write(f"[{name}] ...")
        start = time.perf_counter()
        result, written = fn()
        took = f"done in {time.perf_counter() - start:.0f}s"
        summary.steps[name] = took if written else "up to date"
        return result

    layout = RunLayout(run_dir)
    last = max(epoch_files(layout.checkpoints, ".pt"), default=None)
    finished = last is not None and last >= config.train.epochs
    if layout.config.exists() and last is not None:
        stored = read_config(layout.config)
        refuse_conflicts(stored, config, run_dir)
        refuse_unused_changes(stored, config, run_dir, last)
    if finished:
        summary.steps["train"] = "up to date"
    else:
        step("train", lambda: (train(config, run_dir, resume=True, progress=progress), True))
    with run_lock(run_dir):  # every analysis step writes into the run
        repair_metrics(run_dir)  # a trained run's rows lost to a kill (train repairs its own)
        run = Run(run_dir, analysis)
        run.configure(config.analysis, replace=force)  # the settings asked for take effect
        step("extract", lambda: _extracted(run, force, progress))
        step("embed", lambda: _written(embed(run, force=force, progress=progress)))
        table = step("metrics", lambda: write_clustering(run, force=force))
        comparison = step("wordnet", lambda: write_comparison(run, force=force))
        verdict = step("verdict", lambda: write_verdict(run, force=force))
        summary.verdict = markdown(verdict)
        step("export", lambda: export(run, force=force))
        step("plot", lambda: plot_all(run, comparison, force))
        run.save_settings()  # every step succeeded with them
    summary.numbers, summary.notes = _findings(run, table, comparison)
    summary.outputs = [
        p for p in plotting.figure_paths(run) if p.suffix in (".png", ".gif", ".html")
    ]
    summary.outputs += [
        run.files.table(n)
        for n in ("clustering.csv", "wordnet.csv", "verdict.csv", "category_stats.csv")
    ]
    return summary


def _extracted(run: Run, force: bool, progress: bool):
    done = extract(run, force=force, progress=progress)
    if done.failed:
        message = next(iter(done.failed.values()))
        raise UserError(f"{len(done.failed)} checkpoint(s) could not be extracted; {message}")
    return done, bool(done.written)


def _written(result: tuple[list[int], list[int]]):
    written, _ = result
    return result, bool(written)


def _findings(
    run: Run, table: pd.DataFrame, comparison: Comparison
) -> tuple[dict[str, float], list[str]]:
    """The headline numbers of a finished run: accuracy, clustering, ratio movement, WordNet."""
    first, last = run.ratio_epochs[0], run.ratio_epochs[-1]
    ratios = run.ratios(last).ratios
    dims = f"{ratios.shape[1] * ratios.shape[2]}-D"
    sil = table[(table.space == "ratios") & (table.dims == "high") & (table.metric == "silhouette")]
    moved = ratio_movement(ratios)
    numbers = {
        "test accuracy (last epoch)": final_metrics(run.path).get("val_acc", float("nan")),
        f"silhouette {dims}, epoch {first}": float(sil[sil.epoch == first].value.iloc[0]),
        f"silhouette {dims}, epoch {last}": float(sil[sil.epoch == last].value.iloc[0]),
        f"silhouette {dims} shuffled, epoch {last}": float(sil[sil.epoch == last].shuffled.iloc[0]),
        f"ratio std across samples (mean over layers), epoch {last}": moved["std_across_samples"],
        f"mean |ratio - 1/K| shift per layer, epoch {last}": moved["mean_shift"],
    }
    t = comparison.table
    for space in ("ratios", "pixels", "features"):
        sel = t[(t.space == space) & (t.epoch == last)]
        if not sel.empty:
            numbers[f"WordNet Mantel r, {space}, epoch {last}"] = float(sel.spearman.iloc[0])
            numbers[f"WordNet Mantel p, {space}, epoch {last}"] = float(sel.p_value.iloc[0])
    close, far = extreme_pairs(comparison.clusters, comparison.categories, 2)
    notes = [
        "closest clusters: " + ", ".join(f"{x}/{y}" for x, y, _ in close),
        "farthest clusters: " + ", ".join(f"{x}/{y}" for x, y, _ in far),
    ]
    return numbers, notes


def plot_all(run: Run, comparison: Comparison, force: bool = False) -> tuple[list[Path], bool]:
    """Every figure of the analysis (``plotting.figure_paths``), each set unless up to date;
    (the paths, whether any was written)."""
    results = [
        plotting.write_ratio_figures(run, force=force),
        plotting.write_clustering_figure(run, force=force),
        plotting.write_wordnet_figure(run, comparison, force=force),
    ]
    page, page_written = write_explorer(run, force=force)
    paths = [p for files, _ in results for p in files] + [page]
    return paths, page_written or any(written for _, written in results)
