"""``reproduce``: train, then every registered analysis step in order (``steps.registry``:
extract -> embed -> metrics -> wordnet -> verdict -> export -> plot -> explore), each skipped
when its outputs are up to date (``provenance``), so an interrupted run picks up where it
stopped and a changed input or setting redoes exactly what depends on it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..analysis.metrics import ratio_movement
from ..analysis.verdict import markdown
from ..analysis.wordnet import extreme_pairs, last_epoch_matrices
from ..core.io import run_lock
from ..core.layout import DEFAULT_ANALYSIS, RunLayout, epoch_files
from ..figures import plotting
from ..figures.explorer import Run
from ..run.tables import Dims, Metric, Space, one, select
from ..settings.config import Config, read_config
from ..steps import registry
from ..steps.changes import Changes
from ..training.train import final_metrics, repair_metrics, train
from .runner import refuse_failures, run_step


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
        """The summary as ``reproduce`` prints it: each step's status, the numbers, the notes, the
        outputs and the verdict table."""
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
    replace: bool = False,
) -> Summary:
    """Train ``config`` into ``run_dir`` unless it is trained, then run every registered
    analysis step on the analysis ``analysis`` with ``config.analysis``, each skipped when its
    outputs are up to date (``provenance``). A trained run keeps its model, data and training
    settings (``steps.changes``); an analysis whose outputs were made with other settings is
    refused, unless ``replace`` (the steps those settings shape are redone) or ``force`` (every
    step recomputes)."""
    run_dir = Path(run_dir)
    summary = Summary(run_dir)
    layout = RunLayout(run_dir)
    last = max(epoch_files(layout.checkpoints, ".pt"), default=None)
    finished = last is not None and last >= config.train.epochs
    if layout.config.exists() and last is not None:
        stored = read_config(layout.config)
        Changes(stored, config).refuse_on_trained_run(stored, config, run_dir, last)
    if finished:
        summary.steps["train"] = "up to date"
    else:
        if progress:
            tqdm.write("[train] ...")
        start = time.perf_counter()
        train(config, run_dir, resume=True, progress=progress)
        summary.steps["train"] = f"done in {time.perf_counter() - start:.0f}s"
    with run_lock(run_dir):  # every analysis step writes into the run
        repair_metrics(run_dir)  # a trained run's rows lost to a kill (train repairs its own)
        run = Run(run_dir, analysis)
        run.configure(config.analysis, replace=replace or force)  # the asked settings apply
        for step in registry.STEPS:
            if progress:
                tqdm.write(f"[{step.name}] ...")
            result = run_step(step, run, force=force, progress=progress)
            refuse_failures(step, result, f"; {next(iter(result.failed.values()), '')}")
            done = f"done in {result.seconds:.0f}s" if result.written else "up to date"
            summary.steps[step.name] = done
            if step.name == "verdict":
                summary.verdict = markdown(result.table)
        run.save_settings()  # every step succeeded with them
    summary.numbers, summary.notes = _findings(run)
    summary.outputs = [
        p for p in plotting.figure_paths(run) if p.suffix in (".png", ".gif", ".html")
    ]
    summary.outputs += [
        run.files.table(n)
        for n in ("clustering.csv", "wordnet.csv", "verdict.csv", "category_stats.csv")
    ]
    return summary


def _findings(run: Run) -> tuple[dict[str, float], list[str]]:
    """The headline numbers of a finished run: accuracy, clustering, ratio movement, WordNet."""
    first, last = run.ratio_epochs[0], run.ratio_epochs[-1]
    ratios = run.ratios(last).ratios
    dims = f"{ratios.shape[1] * ratios.shape[2]}-D"
    sil = select(run.clustering(), space=Space.RATIOS, dims=Dims.HIGH, metric=Metric.SILHOUETTE)
    moved = ratio_movement(ratios)
    numbers = {
        "test accuracy (last epoch)": final_metrics(run.path).get("val_acc", float("nan")),
        f"silhouette {dims}, epoch {first}": float(one(sil, epoch=first).value),
        f"silhouette {dims}, epoch {last}": float(one(sil, epoch=last).value),
        f"silhouette {dims} shuffled, epoch {last}": float(one(sil, epoch=last).shuffled),
        f"ratio std across samples (mean over layers), epoch {last}": moved["std_across_samples"],
        f"mean |ratio - 1/K| shift per layer, epoch {last}": moved["mean_shift"],
    }
    comparison = last_epoch_matrices(run, run.wordnet())
    for space in (Space.RATIOS, Space.PIXELS, Space.FEATURES):
        sel = select(comparison.table, space=space, dims=Dims.HIGH, epoch=last)
        if not sel.empty:
            numbers[f"WordNet Mantel r, {space}, epoch {last}"] = float(sel.spearman.iloc[0])
            numbers[f"WordNet Mantel p, {space}, epoch {last}"] = float(sel.p_value.iloc[0])
    close, far = extreme_pairs(comparison.clusters, comparison.categories, 2)
    notes = [
        "closest clusters: " + ", ".join(f"{x}/{y}" for x, y, _ in close),
        "farthest clusters: " + ", ".join(f"{x}/{y}" for x, y, _ in far),
    ]
    return numbers, notes
