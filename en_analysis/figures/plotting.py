"""Every figure: the t-SNE grid (Fig. 1 of the supplement) and its animation, the clustering
dynamic, the WordNet comparison, ratio heatmaps and ratios over epochs (main paper Fig. 1a).

Each drawing function returns a ``matplotlib.figure.Figure`` built without pyplot: the library
never touches the importing process's backend or pyplot's figure list, a returned figure shows
inline in Jupyter (whether or not the notebook imported pyplot), and ``save`` writes it.
``write_ratio_figures`` and ``write`` put a run's figures (``FIGURES``) into its folder.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analysis.wordnet import Comparison, last_epoch_matrices
from ..core.errors import UserError
from ..core.io import atomic_write, atomic_write_bytes
from ..data import describe_data
from ..data.subset import resolve_categories
from ..run.folder import RunFolder
from ..run.tables import Dims, Metric, Space, one, select
from ..settings.config import AnalysisConfig
from ..settings.rules import Effect, rules
from ..steps.results import StepResult, timed

# Paul Tol's "muted" scheme (colour-blind safe) plus grey; markers add a second cue.
COLOURS = [
    "#332288",
    "#88CCEE",
    "#44AA99",
    "#117733",
    "#999933",
    "#DDCC77",
    "#CC6677",
    "#882255",
    "#AA4499",
    "#777777",
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
DROP_COLOUR = "#CC3311"


class _Figure(Figure):
    """A Figure that Jupyter shows as a PNG even where no pyplot backend registered a display
    hook for figures (a notebook that never imported pyplot)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def display_names(categories: list[str], classes: list[int]) -> list[str]:
    """Readable names: an ImageNet wnid becomes its WordNet lemma (n02111889 -> Samoyed)."""
    from ..data.wordnet import WNID, resolve_synset

    names = []
    for c in classes:
        name = categories[c]
        if WNID.match(name):
            with contextlib.suppress(UserError):  # no WordNet: keep the wnid
                name = resolve_synset(name).lemmas()[0].name().replace("_", " ")
        names.append(name)
    return names


def style(i: int) -> dict:
    """The ``i``-th category's colour and marker (matplotlib keyword arguments)."""
    return dict(color=COLOURS[i % len(COLOURS)], marker=MARKERS[i % len(MARKERS)])


def first_after_drops(run: RunFolder) -> list[int]:
    """The first epoch after each learning-rate drop of ``run``'s training."""
    return [d + 1 for d in run.config.train.lr_drops]


def layer_label(name: str) -> str:
    """An EN layer's name as stage.block.position: the ratio file's ``layer1.0.bn2`` stays, a
    layer outside the residual stages (``bn1``, the stem's) becomes ``stem.bn1``."""
    return name if "." in name else f"stem.{name}"


def is_uniform(ratios: np.ndarray) -> bool:
    """Whether every image has the same ratios (the untrained network's epoch 0): nothing in
    them tells the images or categories apart."""
    return bool(np.ptp(np.asarray(ratios, float), axis=0).max(initial=0.0) < 1e-6)


def choose_panels(epochs: list[int], drops: list[int], n: int = 10) -> list[int]:
    """Epochs for the grid, like the paper's: early ones densely, the first after each LR drop,
    the last; the rest spread over what is left. Epoch 0 only if nothing else is available."""
    trained = [e for e in epochs if e >= 1] or list(epochs)
    if len(trained) <= n:
        return trained
    must = {d + 1 for d in drops if d + 1 in trained} | {trained[-1]}
    early_end = drops[0] if drops else trained[-1]
    early = [e for e in trained if e <= early_end and e not in must]
    slots = n - len(must)
    picks = set()
    if early and slots > 0:
        idx = np.unique(np.round(np.linspace(0, len(early) - 1, min(slots, len(early)))))
        picks = {early[int(i)] for i in idx}
    chosen = must | picks
    rest = [e for e in trained if e not in chosen]
    while len(chosen) < n and rest:  # fill the widest gap
        gaps = [min(abs(e - c) for c in chosen) for e in rest]
        chosen.add(rest.pop(int(np.argmax(gaps))))
    return sorted(chosen)


def save(fig: Figure, path: Path | str, pdf: bool = True) -> list[Path]:
    """Write ``fig`` as ``path``.png (300 dpi) and, with ``pdf``, ``path``.pdf; each file is
    written under a temporary name and renamed, so a file under its final name is complete."""
    path = Path(path)
    out = []
    for suffix in (".png", ".pdf") if pdf else (".png",):
        options = dict(format=suffix[1:], dpi=300 if suffix == ".png" else None)
        out.append(
            atomic_write(
                path.with_suffix(suffix),
                lambda f, options=options: fig.savefig(f, bbox_inches="tight", **options),
            )
        )
    return out


def bottom_legend(
    fig: Figure, handles: list, labels: list[str], ncol: int, fontsize: float = 9, **kwargs
) -> float:
    """A legend for the whole figure along its bottom edge, outside every axes, with at most
    ``ncol`` columns and fewer where they would not fit the figure's width (a fixed-size frame,
    like the GIF's, would cut it). Returns its height as a fraction of the figure's, the bottom
    margin to leave (``tight_layout(rect=(0, that, 1, 1))``)."""
    ncol = max(1, min(ncol, len(labels)))
    while True:
        legend = fig.legend(
            handles,
            labels,
            loc="lower center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=ncol,
            frameon=False,
            fontsize=fontsize,
            **kwargs,
        )
        box = legend.get_window_extent()
        if box.width <= 0.98 * fig.bbox.width or ncol == 1:
            return min(0.5, box.height / fig.bbox.height + 0.01)
        legend.remove()
        ncol -= 1


def _legend(fig: Figure, names: list[str], ncol: int) -> float:
    """The categories' legend (marker and colour) along the figure's bottom edge; returns its
    height as a fraction of the figure's."""
    handles = [
        Line2D([], [], linestyle="", markersize=7, label=name, **style(i))
        for i, name in enumerate(names)
    ]
    return bottom_legend(fig, handles, names, ncol)


def scatter_panel(
    ax: Axes, y: np.ndarray, labels: np.ndarray, classes: list[int], degenerate: bool = False
) -> None:
    """One t-SNE panel: a colour and marker per category; no ticks (a t-SNE map's axes have no
    units: only the distances between nearby points mean something)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1 (no units)", fontsize=7, labelpad=2)
    ax.set_ylabel("t-SNE 2 (no units)", fontsize=7, labelpad=2)
    if degenerate:
        ax.text(
            0.5,
            0.5,
            "all samples have\nthe same ratios\n(uniform start)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=8,
            color="#555555",
        )
        return
    for i, c in enumerate(classes):
        sel = labels == c
        ax.scatter(y[sel, 0], y[sel, 1], s=6, linewidths=0, alpha=0.85, **style(i))


def tsne_grid(run: RunFolder, panels: list[int] | None = None) -> Figure:
    """The supplement's Fig. 1: one t-SNE panel per epoch, categories coloured, LR drops marked.

    ``panels`` are epochs (default: chosen like the paper's, see ``choose_panels``)."""
    available = run.embedded_epochs()
    drops = first_after_drops(run)
    missing = [e for e in panels or [] if e not in available]
    if missing:
        raise UserError(f"epoch(s) {missing} have no embedding; embedded: {available}")
    panels = panels or choose_panels(available, run.config.train.lr_drops)
    cols = min(5, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = _Figure(figsize=(2.3 * cols, 2.35 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    r0 = run.ratios(panels[0])
    classes = r0.present
    for ax, e in zip(axes.flat, panels):
        d = run.embedding(e)
        scatter_panel(ax, d.embedding, d.labels, classes, d.degenerate)
        after = e in drops
        ax.set_title(
            f"Epoch {e}" + (" (after LR drop)" if after else ""),
            fontsize=10,
            color=DROP_COLOUR if after else "black",
        )
        if after:
            for spine in ax.spines.values():
                spine.set_edgecolor(DROP_COLOUR)
                spine.set_linewidth(1.5)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    bottom = _legend(fig, display_names(r0.categories, classes), ncol=5)
    a = run.config.analysis
    fig.suptitle(
        f"t-SNE of each image's {r0.ratios.shape[1]}×{r0.ratios.shape[2]} EN importance "
        f"ratios ({run.label}; {a.scaling} scaling, {a.tsne_mode} t-SNE)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def analyses_figure(runs: list[RunFolder], epoch: int | None = None) -> Figure:
    """Analyses of one run side by side: each one's t-SNE map of ``epoch`` (default: the last
    one they all embedded), titled with its settings that differ and its silhouette and k-NN
    accuracy (with 95% intervals) from its ``clustering.csv``."""
    if not runs or len({r.path.resolve() for r in runs}) != 1:
        raise UserError("analyses_figure compares analyses of one run: RunFolder(path, name) each")
    shared = sorted(set.intersection(*(set(r.embedded_epochs()) for r in runs)))
    if not shared or (epoch is not None and epoch not in shared):
        raise UserError(f"epoch {epoch} is not embedded in every analysis; shared: {shared}")
    epoch = shared[-1] if epoch is None else epoch
    shaping = [k for k, rule in rules(AnalysisConfig).items() if rule.effect == Effect.ANALYSIS]
    settings = [{k: getattr(r.config.analysis, k) for k in shaping} for r in runs]
    differ = [k for k in shaping if any(s[k] != settings[0][k] for s in settings)]
    fig = _Figure(figsize=(4.2 * len(runs), 4.9))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    r0 = runs[0].ratios(epoch)
    for ax, run, s in zip(axes, runs, settings):
        e = run.embedding(epoch)
        scatter_panel(ax, e.embedding, e.labels, r0.present, e.degenerate)
        lines = [f"analysis {run.analysis}: " + ", ".join(f"{k} {s[k]}" for k in differ)]
        if run.files.table("clustering.csv").exists():
            t = select(run.clustering(), epoch=epoch, space=Space.RATIOS, dims=Dims.HIGH)
            for metric, name in ((Metric.SILHOUETTE, "silhouette"), (Metric.KNN, "k-NN")):
                row = one(t, metric=metric)
                lines.append(f"{name} {row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]")
        ax.set_title("\n".join([lines[0], "; ".join(lines[1:])]), fontsize=9)
    bottom = _legend(fig, display_names(r0.categories, r0.present), ncol=5)
    data = describe_data(runs[0].config.data)
    fig.suptitle(f"Epoch {epoch} of {data}, run {runs[0].path.name}", fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


ANIMATION_SIZE = (5.0, 5.6)  # inches; the GIF is drawn at 100 dpi: 500 x 560 pixels


def animation_figure(run: RunFolder) -> tuple[Figure, Callable[[int], None], list[int]]:
    """The t-SNE animation's figure: fixed axes over every epoch's (aligned) map, the
    categories' legend fully inside the frame; ``draw(k)`` draws the ``k``-th of ``epochs``."""
    epochs = run.embedding_epochs
    data = [run.embedding(e) for e in epochs]
    r0 = run.ratios(epochs[0])
    classes = r0.present
    live = [d.embedding for d in data if not d.degenerate]
    both = np.concatenate(live) if live else np.zeros((1, 2))
    lo, hi = both.min(0), both.max(0)
    pad = 0.05 * (hi - lo + 1e-9)
    fig = _Figure(figsize=ANIMATION_SIZE, dpi=100)
    ax = fig.subplots()
    drops = first_after_drops(run)

    def draw(k: int) -> None:
        ax.clear()
        d = data[k]
        scatter_panel(ax, d.embedding, d.labels, classes, d.degenerate)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        e = epochs[k]
        ax.set_title(
            f"{run.label}\nEpoch {e}" + (" (first after an LR drop)" if e in drops else ""),
            fontsize=10,
        )

    bottom = _legend(fig, display_names(r0.categories, classes), ncol=5)
    draw(len(epochs) - 1)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig, draw, epochs


def tsne_animation(run: RunFolder, out: Path | None = None, fps: float = 2.0) -> Path:
    """An animated GIF of the (aligned) embeddings across all epochs, with fixed axes
    (``animation_figure``), written to ``out`` (default: the analysis's figures folder)."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, draw, epochs = animation_figure(run)
    path = Path(out or run.files.figures / ANIMATION)
    with tempfile.TemporaryDirectory() as folder:  # the GIF writer needs a file name
        tmp = Path(folder) / ANIMATION
        FuncAnimation(fig, draw, frames=len(epochs)).save(
            tmp, writer=PillowWriter(fps=fps), dpi=100
        )
        return atomic_write_bytes(path, tmp.read_bytes())


def _band(ax: Axes, x, low, high, colour: str) -> None:
    """A 95% interval as a shaded band (nothing where there is none)."""
    if np.isfinite(np.asarray(low, float)).any():
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)


def _drops(ax: Axes, run: RunFolder) -> None:
    """The learning-rate drops as dotted vertical lines between the epochs."""
    for d in run.config.train.lr_drops:
        ax.axvline(d + 0.5, color=DROP_COLOUR, linestyle=":", linewidth=1)


SERIES = [  # (space, dims, label, colour)
    (Space.RATIOS, Dims.HIGH, "EN ratios (every layer's, one vector per image)", "#332288"),
    (Space.RATIOS, Dims.MAP, "EN ratios' 2-D t-SNE map", "#88CCEE"),
    (Space.RANDOM_HEAD, Dims.HIGH, "control: ratios of an untrained (random) head", "#CC6677"),
    (Space.STATISTICS, Dims.HIGH, "control: the statistics the ratio heads read", "#AA4499"),
    (Space.FEATURES, Dims.HIGH, "control: penultimate features", "#117733"),
    (Space.PIXELS, Dims.HIGH, "control: raw pixels", "#999933"),
]
SHUFFLED_LABEL = "dashed: the same, category labels shuffled (chance level)"
DROP_LABEL = "dotted red: learning-rate drop"


def clustering_figure(run: RunFolder, table: pd.DataFrame) -> Figure:
    """Clustering over epochs (``table`` from ``metrics.clustering_table``): silhouette, k-NN,
    trustworthiness, centroid shift; shuffled baselines dashed."""
    fig = _Figure(figsize=(17, 4.6))
    axes = fig.subplots(1, 4)
    titles = {
        Metric.SILHOUETTE: "Silhouette of categories",
        Metric.KNN: "Leave-one-out 5-NN accuracy",
        Metric.TRUSTWORTHINESS: "Trustworthiness of the 2-D map",
        Metric.CENTROID_SHIFT: "Centroid shift since the previous epoch",
    }
    ylabels = {
        Metric.SILHOUETTE: "silhouette score (-1 to 1; 0: no clusters)",
        Metric.KNN: "accuracy (fraction of images)",
        Metric.TRUSTWORTHINESS: "trustworthiness (0 to 1)",
        Metric.CENTROID_SHIFT: "shift (in mean centroid distances)",
    }
    for ax, metric in zip(axes, titles):
        for space, dims, label, colour in SERIES:
            sel = select(table, space=space, dims=dims, metric=metric)
            if sel.empty:
                continue
            ax.plot(sel.epoch, sel.value, "-o", color=colour, markersize=3, label=label)
            _band(ax, sel.epoch, sel.ci_low, sel.ci_high, colour)
            if sel.shuffled.notna().any():
                ax.plot(sel.epoch, sel.shuffled, "--", color=colour, linewidth=1, alpha=0.7)
        _drops(ax, run)
        ax.set_title(titles[metric], fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabels[metric])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [
        Line2D([], [], color="grey", linestyle="--"),
        Line2D([], [], color=DROP_COLOUR, linestyle=":"),
    ]
    labels += [SHUFFLED_LABEL, DROP_LABEL]
    if table.ci_low.notna().any():
        handles.append(Patch(color="grey", alpha=0.25))
        labels.append("band: 95% interval (images resampled within categories)")
    bottom = bottom_legend(fig, handles, labels, ncol=3)
    fig.suptitle(f"Clustering of the categories over epochs ({run.label})", fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def wordnet_figure(run: RunFolder, result: Comparison) -> Figure:
    """Mantel correlation over epochs (ratios vs baselines) and the last epoch's two matrices
    (``result`` from ``wordnet.wordnet_comparison``)."""
    table = result.table
    labels = display_names(result.categories, list(range(len(result.categories))))
    fig = _Figure(figsize=(15, 5.4))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.25, 1, 1])
    ax = fig.add_subplot(grid[0])
    for space, dims, label, colour in SERIES:
        sel = select(table, space=space, dims=dims)
        if sel.empty:
            continue
        ratios = (space, dims) == (Space.RATIOS, Dims.HIGH)
        ax.plot(sel.epoch, sel.spearman, "-", color=colour, label=label)
        if ratios:  # over 10 categories the intervals are wide: one band is readable
            _band(ax, sel.epoch, sel.ci_low, sel.ci_high, colour)
        sig = sel[sel.p_value < 0.05]
        ax.plot(sig.epoch, sig.spearman, "o", color=colour, markersize=4)
    _drops(ax, run)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("Spearman r, WordNet vs cluster distances")
    ax.set_title(
        f"WordNet ({table.wordnet_distance.iloc[0]}) vs cluster distances\n"
        "dots: Mantel p < 0.05; band: the ratios' 95% interval (categories resampled)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color=DROP_COLOUR, linestyle=":"))
    names.append(DROP_LABEL)
    ax.legend(
        handles,
        names,
        fontsize=8,
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=2,
    )
    wordnet_kind = table.wordnet_distance.iloc[0]
    cluster_kind = table.cluster_distance.iloc[0]
    for k, (matrix, title, unit) in enumerate(
        (
            (result.wordnet, "WordNet distance", f"{wordnet_kind} distance (WordNet)"),
            (
                result.clusters,
                f"Ratio cluster distance, epoch {result.epoch}",
                f"{cluster_kind} distance between category means (ratios)",
            ),
        )
    ):
        ax = fig.add_subplot(grid[k + 1])
        im = ax.imshow(matrix, cmap="viridis")
        ax.set_xticks(range(len(result.categories)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(result.categories)), labels, fontsize=7)
        ax.set_xlabel("category")
        ax.set_ylabel("category")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046).set_label(unit, fontsize=8)
    fig.suptitle(f"WordNet distances against cluster distances ({run.label})", fontsize=11)
    fig.tight_layout()
    return fig


def heatmap_epochs(run: RunFolder) -> list[int]:
    """The heatmaps' default epochs: the first, a middle and the last epoch in which the images'
    ratios differ (the untrained network gives every image the same ratios: an empty row)."""
    available = run.ratio_epochs
    trained = [e for e in available if not is_uniform(run.ratios(e).ratios)] or available[-1:]
    return sorted({trained[0], trained[len(trained) // 2], trained[-1]})


def ratio_heatmaps(
    run: RunFolder, epochs: list[int] | None = None, centred: bool = False
) -> Figure:
    """Mean ratio per category (rows) and EN layer (columns, named stage.block.position), one
    panel per normalizer and epoch, all on one colour scale (one colour bar).

    ``epochs``: default ``heatmap_epochs``. ``centred`` subtracts each layer's mean over
    categories and uses a diverging scale: the layers where categories differ stand out (the
    plain map is dominated by layer differences).
    """
    epochs = epochs or heatmap_epochs(run)
    loaded = [run.ratios(e) for e in epochs]
    k = loaded[0].ratios.shape[2]
    n_layers = loaded[0].ratios.shape[1]
    panels = []  # (ratios file, the category means (C, L, K))
    for r in loaded:
        means = np.stack([r.ratios[r.labels == c].mean(0) for c in r.present])  # (C, L, K)
        if centred:
            means = means - means.mean(0, keepdims=True)
        panels.append((r, means))
    values = np.concatenate([m.ravel() for _, m in panels])
    if centred:
        limit = max(float(np.nanmax(np.abs(values))), 1e-3)  # float noise stays white
        scale = dict(cmap="RdBu_r", vmin=-limit, vmax=limit)
        unit = "ratio minus the layer's mean over categories"
    else:
        scale = dict(cmap="magma", vmin=float(np.nanmin(values)), vmax=float(np.nanmax(values)))
        unit = "mean ratio (0 to 1; the K ratios of a layer sum to 1)"
    n_classes = len(loaded[0].present)
    fig = _Figure(
        figsize=(max(12.0, 0.09 * n_layers * k + 2.5), (0.16 * n_classes + 1.9) * len(epochs)),
        layout="constrained",
    )
    axes = fig.subplots(len(epochs), k, squeeze=False)
    layer_names = [layer_label(n) for n in loaded[0].layer_names]
    for row, (r, means) in zip(axes, panels):
        for j, ax in enumerate(row):
            im = ax.imshow(means[:, :, j], aspect="auto", interpolation="nearest", **scale)
            ax.set_yticks(range(len(r.present)), display_names(r.categories, r.present), fontsize=6)
            ax.set_xticks(range(n_layers), layer_names, rotation=90, fontsize=4)
            ax.tick_params(axis="x", length=2, pad=1)
            ax.set_title(f"Epoch {r.epoch}: {r.normalizers[j].upper()}", fontsize=9)
            ax.set_xlabel("EN layer (stage.block.position, input → output)", fontsize=7)
            ax.set_ylabel("category", fontsize=7)
    bar = fig.colorbar(im, ax=axes, fraction=0.025, pad=0.01, aspect=30, shrink=0.7)
    bar.set_label(unit, fontsize=8)
    what = "minus the layer's mean over categories " if centred else ""
    fig.suptitle(
        f"Mean ratio per category and EN layer {what}({run.label}); one colour scale",
        fontsize=11,
    )
    return fig


def ratios_over_epochs(
    run: RunFolder,
    categories: list[str] | None = None,
    layers: list[int] | None = None,
) -> Figure:
    """Main paper Fig. 1(a): mean ratio (± 1 std) of chosen categories over epochs at a bottom,
    a middle and a top layer; one row per normalizer."""
    epochs = run.ratio_epochs
    loaded = [run.ratios(e) for e in epochs]
    r0 = loaded[0]
    n_layers, k = r0.ratios.shape[1:]
    layers = layers or [0, n_layers // 2, n_layers - 1]
    chosen = resolve_categories(categories, r0.categories) if categories else r0.present[:4]
    fig = _Figure(figsize=(4 * len(layers), 2.6 * k + 0.7))
    axes = fig.subplots(k, len(layers), squeeze=False)
    for j in range(k):
        for col, layer in enumerate(layers):
            ax = axes[j, col]
            for i, c in enumerate(chosen):
                vals = np.array([r.ratios[r.labels == c, layer, j] for r in loaded])
                mean, std = vals.mean(1), vals.std(1)
                ax.plot(epochs, mean, color=COLOURS[i], label=display_names(r0.categories, [c])[0])
                ax.fill_between(epochs, mean - std, mean + std, color=COLOURS[i], alpha=0.2)
            _drops(ax, run)
            norm = r0.normalizers[j].upper()
            ax.set_title(f"{layer_label(r0.layer_names[layer])}: {norm}", fontsize=9)
            ax.set_ylabel(f"{norm} ratio (0 to 1)", fontsize=8)
            ax.set_xlabel("epoch", fontsize=8)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color=DROP_COLOUR, linestyle=":"))
    labels.append(DROP_LABEL)
    bottom = bottom_legend(fig, handles, labels, ncol=len(labels), fontsize=10)
    fig.suptitle(f"Ratios over epochs, mean ± 1 std per category ({run.label})", fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


# The figures the ``plot`` step writes to ``figures/`` (PNG + PDF), by file name. The t-SNE
# animation is written beside them as ``tsne_animation.gif``; the clustering and WordNet figures
# are written by the ``metrics`` and ``wordnet`` steps (they need those steps' tables).
RATIO_FIGURES = ("tsne_grid", "ratio_heatmaps", "ratio_heatmaps_centred", "ratios_over_epochs")
TABLE_FIGURES = ("clustering_dynamics", "wordnet", "decoding", "stability", "ablation")
FIGURES = RATIO_FIGURES + TABLE_FIGURES
ANIMATION = "tsne_animation.gif"
EXPLORER = "explorer.html"  # written by ``explorer.write_explorer``


@timed
def write_ratio_figures(
    run: RunFolder,
    epochs: list[int] | None = None,
    animation: bool = True,
    categories: list[str] | None = None,
    force: bool = False,
) -> StepResult:
    """The ``plot`` step: the figures made from the ratios and embeddings alone
    (``RATIO_FIGURES``, and the animation), unless up to date. ``epochs``: the t-SNE grid's
    panels (default: ``analysis.panels``, or chosen like the paper's)."""
    embedded = run.embedded_epochs()  # one clear error before drawing anything
    outputs = [p for name in RATIO_FIGURES for p in _files(run, name)]
    outputs += [run.files.figures / ANIMATION] if animation else []
    settings = {**run.step_settings("plot"), "panels": epochs, "categories": categories}

    def draw() -> None:
        drawn = {
            "tsne_grid": tsne_grid(run, epochs or run.config.analysis.panels or None),
            "ratio_heatmaps": ratio_heatmaps(run),
            "ratio_heatmaps_centred": ratio_heatmaps(run, centred=True),
            "ratios_over_epochs": ratios_over_epochs(run, categories),
        }
        for name in RATIO_FIGURES:
            save(drawn[name], run.files.figures / name)
        if animation:
            tsne_animation(run, run.files.figures / ANIMATION)

    written = run.make(outputs, run.analysis_inputs(embedded), settings, draw, force)
    return StepResult.of("plot", outputs, written)


def _files(run: RunFolder, name: str) -> list[Path]:
    return [run.files.figures / f"{name}{suffix}" for suffix in (".png", ".pdf")]


def _write_table_figure(
    run: RunFolder, step: str, name: str, draw, inputs: list[Path], force: bool
) -> StepResult:
    """A figure of a step's table, made with the settings the step reads, unless up to date."""
    outputs = _files(run, name)
    written = run.make(
        outputs,
        inputs,
        run.step_settings(step),
        lambda: save(draw(), run.files.figures / name),
        force,
    )
    return StepResult.of(step, outputs, written)


@timed
def write_clustering_figure(run: RunFolder, force: bool = False) -> StepResult:
    """The ``metrics`` step's figure: ``clustering_dynamics`` from the analysis's
    ``clustering.csv``, unless up to date."""
    return _write_table_figure(
        run,
        "metrics",
        "clustering_dynamics",
        lambda: clustering_figure(run, run.clustering()),
        [run.files.table("clustering.csv")],
        force,
    )


@timed
def write_wordnet_figure(run: RunFolder, force: bool = False) -> StepResult:
    """The ``wordnet`` step's figure: ``wordnet`` from the analysis's WordNet comparison (its
    table and last epoch's distances), unless up to date."""
    comparison = last_epoch_matrices(run, run.wordnet())
    return _write_table_figure(
        run,
        "wordnet",
        "wordnet",
        lambda: wordnet_figure(run, comparison),
        [run.files.table("wordnet.csv"), run.files.ratio_file(comparison.epoch)],
        force,
    )


def decoding_figure(run: RunFolder, table: pd.DataFrame) -> Figure:
    """The category decoded from each EN layer's ratios over epochs (``decoding.csv``): the
    ratios' leave-one-out accuracy (layers top to bottom in forward order, chance at the bottom
    of the colour scale) and the ratios' minus the statistics' the heads read."""
    layers = table[table.level == "layer"]
    ratios = layers[layers.space == "ratios"].pivot(
        index="index", columns="epoch", values="accuracy"
    )
    names = layers[layers.space == "ratios"].drop_duplicates("index").set_index("index").name
    names = names.map(layer_label)
    chance = float(table.chance.iloc[0])
    panels = [(ratios, "ratios: leave-one-out accuracy", "viridis", (chance, None))]
    statistics = layers[layers.space == "statistics"]
    if not statistics.empty:
        difference = ratios - statistics.pivot(index="index", columns="epoch", values="accuracy")
        bound = float(np.nanmax(np.abs(difference.to_numpy()))) or 1.0
        panels.append(
            (difference, "ratios minus the heads' input statistics", "RdBu_r", (-bound, bound))
        )
    fig = _Figure(figsize=(5.2 * len(panels) + 1.5, 9))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (matrix, title, cmap, (low, high)) in zip(axes, panels):
        high = high if high is not None else float(np.nanmax(matrix.to_numpy()))
        im = ax.imshow(
            matrix.to_numpy(),
            aspect="auto",
            cmap=cmap,
            vmin=low,
            vmax=high,
            interpolation="nearest",
        )
        ax.set_xticks(range(matrix.shape[1]), matrix.columns)
        ax.set_yticks(range(len(names)), names.loc[matrix.index], fontsize=5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("EN layer (stage.block.position, input → output)")
        ax.set_title(title, fontsize=10)
        bar = fig.colorbar(im, ax=ax, fraction=0.05)
        if cmap == "viridis":
            bar.set_label(f"accuracy, fraction of images (from chance, {chance:.2f})")
        else:
            bar.set_label("accuracy difference (fraction of images)")
    fig.suptitle(f"The category decoded from each EN layer's ratios ({run.label})", fontsize=11)
    fig.tight_layout()
    return fig


STABILITY_TITLES = {
    "ratios": "EN ratios",
    "statistics": "the statistics the ratio heads read",
    "features": "penultimate features",
}


def stability_figure(run: RunFolder, table: pd.DataFrame, measure: str = "cka") -> Figure:
    """Epoch x epoch similarity of each space's representation (``stability.csv``): linear CKA
    (``measure="cka"``) or the correlation of the category RDMs (``"rdm"``), one colour scale."""
    t = table[table.measure == measure]
    spaces = list(dict.fromkeys(t.space))
    low = float(t.value.min())
    fig = _Figure(figsize=(4.6 * len(spaces) + 1, 4.4))
    axes = fig.subplots(1, len(spaces), squeeze=False)[0]
    for ax, space in zip(axes, spaces):
        sel = t[t.space == space]
        epochs = sorted(set(sel.epoch_a) | set(sel.epoch_b))
        matrix = pd.DataFrame(np.eye(len(epochs)), index=epochs, columns=epochs)
        for row in sel.itertuples():
            matrix.loc[row.epoch_a, row.epoch_b] = matrix.loc[row.epoch_b, row.epoch_a] = row.value
        im = ax.imshow(matrix.to_numpy(), cmap="magma", vmin=low, vmax=1)
        ax.set_xticks(range(len(epochs)), epochs, fontsize=7)
        ax.set_yticks(range(len(epochs)), epochs, fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        ax.set_title(STABILITY_TITLES.get(space, space), fontsize=10)
    fig.colorbar(
        im,
        ax=list(axes),
        fraction=0.03,
        label={
            "cka": "linear CKA between the two epochs (0 to 1)",
            "rdm": "Pearson r of the two epochs' category RDMs",
        }[measure],
    )
    fig.suptitle(f"How much each representation changes between epochs ({run.label})", fontsize=11)
    return fig


def ablation_figure(run: RunFolder, table: pd.DataFrame) -> Figure:
    """Accuracy on the evaluation images over epochs with the EN ratios as computed, replaced by
    the layer's mean, shuffled across images, or the category's mean (``ablation.csv``), and
    each replacement's accuracy minus the computed ratios'."""
    fig = _Figure(figsize=(12, 4.8))
    axes = fig.subplots(1, 2)
    for i, (condition, sel) in enumerate(table.groupby("condition", sort=False)):
        colour = COLOURS[i * 2 % len(COLOURS)]
        style = dict(color=colour, marker=MARKERS[i], markersize=4, label=condition)
        axes[0].plot(sel.epoch, sel.accuracy, **style)
        _band(axes[0], sel.epoch, sel.ci_low, sel.ci_high, colour)
        if condition != "computed":
            axes[1].plot(sel.epoch, sel.difference, **style)
            _band(axes[1], sel.epoch, sel.difference_ci_low, sel.difference_ci_high, colour)
    axes[1].axhline(0, color="black", linewidth=0.8)
    labels = (
        "accuracy (fraction of images)",
        "accuracy minus the computed ratios'\n(fraction of images)",
    )
    for ax, label in zip(axes, labels):
        _drops(ax, run)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("accuracy on the evaluation images", fontsize=10)
    axes[1].set_title("what replacing the ratios costs (below 0) or gains", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color=DROP_COLOUR, linestyle=":"))
    labels.append("learning-rate drop")
    bottom = bottom_legend(fig, handles, labels, ncol=len(labels), title="EN ratios")
    fig.suptitle(
        f"Does the network use its per-sample ratios? ({run.label}); bands: 95% intervals "
        "(images resampled)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


@timed
def write_decoding_figure(run: RunFolder, force: bool = False) -> StepResult:
    """The ``decode`` step's figure: ``decoding`` from ``decoding.csv``, unless up to date."""
    return _write_table_figure(
        run,
        "decode",
        "decoding",
        lambda: decoding_figure(run, run.decoding()),
        [run.files.table("decoding.csv")],
        force,
    )


@timed
def write_stability_figure(run: RunFolder, force: bool = False) -> StepResult:
    """The ``stability`` step's figure: ``stability`` from ``stability.csv``, unless up to
    date."""
    return _write_table_figure(
        run,
        "stability",
        "stability",
        lambda: stability_figure(run, run.stability()),
        [run.files.table("stability.csv")],
        force,
    )


@timed
def write_ablation_figure(run: RunFolder, force: bool = False) -> StepResult:
    """The ``ablate`` step's figure: ``ablation`` from ``ablation.csv``, unless up to date."""
    return _write_table_figure(
        run,
        "ablate",
        "ablation",
        lambda: ablation_figure(run, run.ablation()),
        [run.files.table("ablation.csv")],
        force,
    )


def figure_paths(run: RunFolder) -> list[Path]:
    """Every file the figure-writing steps put in the analysis's ``figures`` folder."""
    files = [p for name in FIGURES for p in _files(run, name)]
    return files + [run.files.figures / ANIMATION, run.files.figures / EXPLORER]


def replicates_figure(table: pd.DataFrame, runs: list[RunFolder]) -> Figure:
    """Clustering and WordNet curves over epochs of seed replicates (``table``: the mean, sd,
    min and max of every number across ``runs``, ``pipeline.replicates``): the mean, +- 1 sd
    shaded, the range as thin lines."""
    panels = [
        (
            "clustering",
            Metric.SILHOUETTE,
            "Silhouette of categories",
            "silhouette score (-1 to 1; 0: no clusters)",
        ),
        ("clustering", Metric.KNN, "Leave-one-out k-NN accuracy", "accuracy (fraction of images)"),
        (
            "clustering",
            Metric.CENTROID_SHIFT,
            "Centroid shift since the previous epoch",
            "shift (in mean centroid distances)",
        ),
        (
            "wordnet",
            "spearman",
            "WordNet vs cluster distances",
            "Spearman r, WordNet vs cluster distances",
        ),
    ]
    fig = _Figure(figsize=(17, 4.4))
    axes = fig.subplots(1, len(panels))
    for ax, (source, metric, title, ylabel) in zip(axes, panels):
        for space, dims, label, colour in SERIES:
            sel = select(table, source=source, space=space, dims=dims, metric=metric)
            if sel.empty:
                continue
            ax.plot(sel.epoch, sel["mean"], "-o", color=colour, markersize=3, label=label)
            _band(ax, sel.epoch, sel["mean"] - sel.sd, sel["mean"] + sel.sd, colour)
            ax.plot(sel.epoch, sel["min"], color=colour, linewidth=0.5)
            ax.plot(sel.epoch, sel["max"], color=colour, linewidth=0.5)
        _drops(ax, runs[0])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color=DROP_COLOUR, linestyle=":"))
    labels.append(DROP_LABEL)
    bottom = bottom_legend(fig, handles, labels, ncol=4)
    fig.suptitle(
        f"{len(runs)} seeds ({describe_data(runs[0].config.data)}): mean, ± 1 sd "
        "shaded, min and max as thin lines",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig
