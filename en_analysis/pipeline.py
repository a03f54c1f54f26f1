"""``reproduce``: train -> extract -> embed -> plot -> metrics -> wordnet -> export, each step
skipped when its outputs are up to date, so an interrupted run picks up where it stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import plotting
from .appearance import Comparison, extreme_pairs, write_comparison
from .checkpoints import list_checkpoints
from .config import Config, read_config, save_config
from .embedding import embed
from .errors import UserError
from .explorer import write_explorer
from .export import export
from .io import run_lock
from .metrics import ratio_movement, write_clustering
from .ratios import extract
from .runs import Run
from .train import final_metrics, refuse_conflicts, train
from .verdict import markdown, write_verdict


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


def _fresh(outputs: list[Path], inputs: list[Path]) -> bool:
    """Every output exists and is newer than every input."""
    if not all(p.exists() for p in outputs):
        return False
    return min(p.stat().st_mtime for p in outputs) >= max(p.stat().st_mtime for p in inputs)


def _trained(run_dir: Path, config: Config) -> bool:
    done = list_checkpoints(run_dir)
    return bool(done) and max(done) >= config.train.epochs


def reproduce(config: Config, run_dir: Path | str, progress: bool = True) -> Summary:
    """Run every step of the analysis for ``config`` in ``run_dir``; return a summary."""
    run_dir = Path(run_dir)
    summary = Summary(run_dir)

    def step(name: str, fn, skip: bool = False):
        if progress:
            tqdm.write(f"[{name}] ...")
        start = time.perf_counter()
        result = None if skip else fn()
        summary.steps[name] = (
            "up to date" if skip else f"done in {time.perf_counter() - start:.0f}s"
        )
        return result

    if (run_dir / "config.toml").exists() and list_checkpoints(run_dir):
        refuse_conflicts(read_config(run_dir / "config.toml"), config, run_dir)
    step(
        "train",
        lambda: train(config, run_dir, resume=True, progress=progress),
        skip=_trained(run_dir, config),
    )
    with run_lock(run_dir):  # every analysis step writes into the run
        run = Run(run_dir)
        if run.config.analysis != config.analysis:  # the analysis settings asked for take effect
            run.config.analysis = config.analysis
            save_config(run.config, run_dir / "config.toml")
        a = run.config.analysis
        done = step("extract", lambda: extract(run_dir, config=run.config, progress=progress))
        if done.failed:
            message = next(iter(done.failed.values()))
            raise UserError(f"{len(done.failed)} checkpoint(s) could not be extracted; {message}")
        if not done.written:
            summary.steps["extract"] = "up to date"
        written, _ = step("embed", lambda: embed(run, a, progress=progress))
        if not written:
            summary.steps["embed"] = "up to date"
        inputs = [
            run_dir / "config.toml",
            *(run_dir / "ratios").glob("*.npz"),
            *(run_dir / "embeddings").glob("*.npz"),
        ]
        analysis = run_dir / "analysis"
        _, table = step("metrics", lambda: write_clustering(run, a))
        comparison = step("wordnet", lambda: write_comparison(run, a))
        verdict = step("verdict", lambda: write_verdict(run, table, comparison.table))
        summary.verdict = markdown(verdict)
        step("export", lambda: export(run), skip=_fresh([analysis / "category_stats.csv"], inputs))
        figures = plotting.figure_paths(run)
        if not _fresh(figures, inputs):
            figures = step("plot", lambda: plot_all(run, table, comparison))
        else:
            summary.steps["plot"] = "up to date"
    summary.numbers, summary.notes = _findings(run, table, comparison)
    summary.outputs = [p for p in figures if p.suffix in (".png", ".gif", ".html")] + [
        run_dir / "analysis" / n
        for n in ("clustering.csv", "wordnet.csv", "verdict.csv", "category_stats.csv")
    ]
    return summary


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


def plot_all(run: Run, table: pd.DataFrame, comparison: Comparison) -> list[Path]:
    """Write every figure of the run (``plotting.figure_paths``)."""
    return (
        plotting.write_ratio_figures(run)
        + plotting.write(run, "clustering_dynamics", plotting.clustering_figure(run, table))
        + plotting.write(run, "wordnet", plotting.wordnet_figure(run, comparison))
        + [write_explorer(run)]
    )
