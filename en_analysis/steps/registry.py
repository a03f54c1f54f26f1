"""Every analysis step, declared once: its name and help line, the settings it reads, the files
it reads and writes, its own command-line options, and its functions.

The declarations are plain data, cheap to import: a step's functions are named by import path
(``module:function``) and resolved only when the step runs (``pipeline.runner``), so the CLI
builds its parser, and the documentation its references, without importing torch, pandas or
scikit-learn. From ``STEPS`` come the CLI's subcommands, ``reproduce``'s order, the settings each
output's provenance records (and so what a changed setting redoes: ``steps.changes``), which
step wrote a file, and the CLI reference.

Adding a step: write its module (a function ``(run, ...) -> StepResult`` that makes its files
with ``run.make``, recording ``run.step_settings(NAME)``) and add one ``Step(...)`` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

from ..settings.config import declared
from ..settings.rules import Effect


@dataclass(frozen=True)
class Option:
    """A command-line option of one step: its flags, help, and ``argparse`` details. The value
    reaches the step's functions as the keyword ``dest``."""

    flags: tuple[str, ...]
    help: str
    dest: str
    kind: str = (
        "str"  # str, int, path, list (comma-separated), flag (store_true), off (store_false)
    )
    default: Any = None
    metavar: str | None = None


@dataclass(frozen=True)
class Step:
    """One analysis step. ``reads``: the settings (``section.key``) that shape its outputs,
    recorded in their provenance; ``inputs`` and ``outputs``: its files, as patterns relative to
    the analysis folder (``checkpoints/`` is the run's); ``functions``: what it runs, in order,
    each called with the arguments it names among ``run``, ``epochs``, ``force``, ``progress``
    and the step's options; ``epochs``: what ``--epochs`` selects ("" when it takes none);
    ``failure``: what a failed output is, for the message; ``method``: the version of its
    method, raised when a change of code changes its numbers, so that outputs an earlier method
    made are redone (recorded from 2 on: a step never revised keeps the outputs it made)."""

    name: str
    help: str
    functions: tuple[str, ...]
    reads: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    options: tuple[Option, ...] = ()
    epochs: str = "the epochs to analyse (default: every extracted one)"
    failure: str = "output(s) could not be made"
    method: int = 1

    def writes(self, relative: str) -> bool:
        """Whether a file (a path relative to the analysis folder) is one of this step's."""
        return any(fnmatch(relative, pattern) for pattern in self.outputs)


# a ratio file depends on the data and the evaluation subset; where the data is and how fast it
# is read do not matter (the held-out images' fingerprint is recorded instead)
DATA = tuple(
    key for key, rule in declared().items() if key.startswith("data.") and rule.effect == Effect.RUN
)
FIGURES = ("figures/{}.png", "figures/{}.pdf")


def _figures(*names: str) -> tuple[str, ...]:
    return tuple(pattern.format(name) for name in names for pattern in FIGURES)


STEPS = (
    Step(
        "extract",
        "collect the L x K ratios of every checkpoint",
        ("en_analysis.analysis.extract:extract",),
        reads=(*DATA, "analysis.categories", "analysis.per_category", "analysis.subset_seed"),
        inputs=("checkpoints/epoch-*.pt",),
        outputs=("ratios/epoch-*.npz", "ratios/pixels.npz"),
        options=(
            Option(("--device",), "cpu or cuda (default: cpu)", "device", default="cpu"),
            Option(("--batch-size",), "images per forward pass", "batch_size", "int"),
        ),
        epochs="the checkpoints to extract (default: every checkpoint, or analysis.epochs)",
        failure="checkpoint(s) could not be extracted",
    ),
    Step(
        "embed",
        "openTSNE of the ratio vectors, per epoch",
        ("en_analysis.analysis.embedding:embed",),
        reads=(
            "analysis.scaling",
            "analysis.perplexity",
            "analysis.tsne_mode",
            "analysis.tsne_seed",
        ),
        inputs=("ratios/epoch-*.npz", "embeddings/epoch-*.npz"),
        outputs=("embeddings/epoch-*.npz",),
    ),
    Step(
        "metrics",
        "clustering per epoch (silhouette, k-NN, trustworthiness)",
        (
            "en_analysis.analysis.metrics:write_clustering",
            "en_analysis.figures.plotting:write_clustering_figure",
        ),
        reads=(
            "analysis.scaling",
            "analysis.knn",
            "analysis.bootstrap",
            "analysis.bootstrap_seed",
            "analysis.permutation_seed",
            "analysis.control_seed",
            "train.lr_drops",
        ),
        inputs=("ratios/epoch-*.npz", "ratios/pixels.npz", "embeddings/epoch-*.npz"),
        outputs=("analysis/clustering.csv", *_figures("clustering_dynamics")),
    ),
    Step(
        "wordnet",
        "WordNet distances vs cluster distances (Mantel test)",
        (
            "en_analysis.analysis.wordnet:write_comparison",
            "en_analysis.figures.plotting:write_wordnet_figure",
        ),
        reads=(
            "analysis.scaling",
            "analysis.wordnet_distance",
            "analysis.cluster_distance",
            "analysis.permutations",
            "analysis.permutation_seed",
            "analysis.bootstrap",
            "analysis.bootstrap_seed",
            "analysis.control_seed",
            "train.lr_drops",
        ),
        inputs=("ratios/epoch-*.npz", "ratios/pixels.npz", "embeddings/epoch-*.npz"),
        outputs=("analysis/wordnet.csv", *_figures("wordnet")),
    ),
    Step(
        "decode",
        "the category decoded from each EN layer's ratios, per epoch",
        (
            "en_analysis.analysis.decoding:write_decoding",
            "en_analysis.figures.plotting:write_decoding_figure",
        ),
        reads=("analysis.control_seed", "train.lr_drops"),
        inputs=("ratios/epoch-*.npz",),
        outputs=("analysis/decoding.csv", *_figures("decoding")),
    ),
    Step(
        "stability",
        "CKA and RDM similarity between epochs, per space",
        (
            "en_analysis.analysis.stability:write_stability",
            "en_analysis.figures.plotting:write_stability_figure",
        ),
        reads=(
            "analysis.scaling",
            "analysis.bootstrap",
            "analysis.bootstrap_seed",
            "analysis.control_seed",
            "train.lr_drops",
        ),
        inputs=("ratios/epoch-*.npz",),
        outputs=("analysis/stability.csv", *_figures("stability")),
        method=2,  # 2: debiased CKA
    ),
    Step(
        "ablate",
        "accuracy with the EN ratios replaced, per checkpoint",
        (
            "en_analysis.analysis.ablation:write_ablation",
            "en_analysis.figures.plotting:write_ablation_figure",
        ),
        reads=("analysis.bootstrap", "analysis.bootstrap_seed", "analysis.permutation_seed"),
        inputs=("checkpoints/epoch-*.pt", "ratios/epoch-*.npz"),
        outputs=("analysis/ablation.csv", "analysis/ablation.npz", *_figures("ablation")),
        epochs="the checkpoints to ablate (default: every extracted one)",
    ),
    Step(
        "verdict",
        "holds / does not hold / inconclusive, per claim",
        ("en_analysis.analysis.verdict:write_verdict",),
        reads=(
            "analysis.scaling",
            "analysis.knn",
            "analysis.wordnet_distance",
            "analysis.permutations",
            "analysis.permutation_seed",
            "analysis.verdict_bootstrap",
            "analysis.bootstrap_seed",
            "analysis.random_heads",
            "analysis.control_seed",
            "analysis.margin_knn",
            "analysis.margin_r",
            "analysis.formed_share",
            "train.lr_drops",
        ),
        inputs=("ratios/epoch-*.npz", "ratios/pixels.npz", "analysis/ablation.npz"),
        outputs=("analysis/verdict.csv", "analysis/verdict.md"),
        epochs="",  # every extracted epoch: the claims name their own
    ),
    Step(
        "export",
        "per-category ratio statistics as CSV",
        ("en_analysis.analysis.export:export",),
        reads=(),
        inputs=("ratios/epoch-*.npz",),
        outputs=(
            "analysis/category_stats.csv",
            "analysis/category_stats_wide.csv",
            "analysis/sample_ratios.csv",
            "projector/*",
        ),
        options=(
            Option(("--samples",), "also one row per sample/layer/normalizer", "samples", "flag"),
            Option(("--wide",), "also one column per layer/normalizer", "wide_table", "flag"),
            Option(
                ("--projector",),
                "also TensorBoard projector files in RUN/projector (ratios, metadata, sprite)",
                "projector",
                "flag",
            ),
        ),
    ),
    Step(
        "plot",
        "the t-SNE grid, its animation, ratio heatmaps and curves",
        ("en_analysis.figures.plotting:write_ratio_figures",),
        reads=("analysis.scaling", "analysis.tsne_mode", "analysis.panels", "train.lr_drops"),
        inputs=("ratios/epoch-*.npz", "ratios/pixels.npz", "embeddings/epoch-*.npz"),
        outputs=(
            *_figures(
                "tsne_grid", "ratio_heatmaps", "ratio_heatmaps_centred", "ratios_over_epochs"
            ),
            "figures/tsne_animation.gif",
        ),
        options=(
            Option(
                ("--categories",),
                "comma-separated categories for the ratio curves",
                "categories",
                "list",
            ),
            Option(("--no-animation",), "skip the GIF", "animation", "off", True),
        ),
        epochs="the t-SNE grid's panels (default: analysis.panels, or chosen like the paper's)",
    ),
    Step(
        "explore",
        "an offline HTML page to explore the t-SNE maps of every epoch",
        ("en_analysis.figures.explorer:write_explorer",),
        reads=("train.lr_drops",),
        inputs=(
            "ratios/epoch-*.npz",
            "ratios/pixels.npz",
            "embeddings/epoch-*.npz",
            "analysis/clustering.csv",
            "analysis/decoding.csv",
        ),
        outputs=("figures/explorer.html",),
        options=(
            Option(("--out",), "the page (default: RUN/figures/explorer.html)", "out", "path"),
        ),
        epochs="the epochs the page shows (default: every embedded one)",
    ),
)
NAMES = tuple(step.name for step in STEPS)


def step(name: str) -> Step:
    """The declaration of the step ``name``."""
    return STEPS[NAMES.index(name)]


def reading(key: str) -> tuple[str, ...]:
    """The steps whose outputs a setting (``section.key``) shapes."""
    return tuple(s.name for s in STEPS if key in s.reads)


def writing(relative: str) -> Step | None:
    """The step that writes a file of an analysis (a path relative to its folder), if any."""
    return next((s for s in STEPS if s.writes(relative)), None)
