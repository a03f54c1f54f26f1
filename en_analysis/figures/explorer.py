"""The interactive explorer: every extracted epoch's t-SNE map in one offline HTML page.

A plotly figure with one scatter trace per category (legend clicks hide and show categories),
one animation frame per epoch (slider and play button; the first epoch after each LR drop is
marked; the page opens on the last epoch, where the ratios have structure - at epoch 0 every image
has the same ratios), hover labels with category, prediction and sample index, and a second panel
that shows the clicked sample's ratios (stacked IN/LN/BN per layer) beside its category's mean.
Thumbnails and ratios travel inside the page as data (PNG data URIs; ratios as base64 uint16,
1/65535 resolution) and a short script shows a thumbnail on hover and fills the ratio panel on
click. The page makes no network request: plotly.js is inlined.

``explorer(run)`` returns an ``Explorer``; ``Run.explore()`` is the same, and in Jupyter the
result shows inline as the full page. ``Run`` (the package's ``en_analysis.Run``) is a
``RunFolder`` that can show its explorer: it is defined here, above the figures, so that nothing
below the figures depends on them.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from ..core.errors import UserError
from ..core.io import atomic_write_text
from ..data import thumbnail_images
from ..run.folder import RunFolder
from ..run.tables import Dims, Metric, Space, select
from ..steps.results import StepResult, timed
from .plotting import COLOURS, EXPLORER, display_names, first_after_drops

THUMBNAIL_SIDE = 48  # pixels, at most: small PNGs keep the page light
PLOTLY_SYMBOLS = ["circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x"]
PLOTLY_SYMBOLS += ["triangle-left", "triangle-right", "star"]  # the static figure's markers
RATIO_COLOURS = ["#4477AA", "#EE6677", "#228833", "#CCBB44"]  # IN, LN, BN, GN
PAGE_TITLE = "en-analysis explorer"


# what JSON inside a <script> element must not hold as such (as Jinja's ``tojson``): "<" could
# end the element ("</script>") or open a comment ("<!--") that swallows the rest of the page
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def script_json(value) -> str:
    """``value`` as JSON that can be placed inside a <script> element, whatever its strings."""
    return json.dumps(value, separators=(",", ":")).translate(_SCRIPT_SAFE)


def check_page_path(path: Path) -> Path:
    """A path the explorer page may be written to (``explore --out``): an .html file that does
    not exist yet or is an explorer page en-analysis wrote - never a run's table, checkpoint or
    any other file."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {path}: the explorer page is an HTML file (name it *.html)")
    if path.exists() or path.is_symlink():
        head = b""
        if path.is_file():
            with open(path, "rb") as f:
                head = f.read(4096)
        if f"<title>{html.escape(PAGE_TITLE)}</title>".encode() not in head:
            raise UserError(
                f"{path} exists and is not an explorer page en-analysis wrote: choose another --out"
            )
    return path


@dataclass
class Explorer:
    """The explorer of a run: ``figure`` is the plotly figure (frames, slider, traces),
    ``payload`` the data the page's script reads (thumbnails, ratios, names)."""

    figure: go.Figure
    payload: dict

    def to_html(self) -> str:
        """One self-contained HTML page: plotly.js inlined, no network request of any kind."""
        script = _SCRIPT.replace("__PAYLOAD__", script_json(self.payload))
        return self.figure.to_html(
            include_plotlyjs=True,
            full_html=True,
            div_id="explorer",
            post_script=script,
            config={"displaylogo": False, "responsive": True},
            auto_play=False,
        ).replace("<head>", f"<head><title>{html.escape(PAGE_TITLE)}</title>", 1)

    def write_html(self, path: Path | str) -> Path:
        """Write the page (atomically) and return its path."""
        return atomic_write_text(Path(path), self.to_html())

    def _repr_html_(self) -> str:
        """In Jupyter: the whole page in an isolated frame (plotly's FigureWidget drops
        animation frames, so the page itself is the widget)."""
        height = int(self.figure.layout.height or 700) + 40
        return (
            f'<iframe srcdoc="{html.escape(self.to_html(), quote=True)}" '
            f'style="width: 100%; height: {height}px; border: 0"></iframe>'
        )


def explorer(run: RunFolder, epochs: list[int] | None = None) -> Explorer:
    """The explorer of ``run`` over ``epochs`` (default: every embedded epoch); the page opens on
    the last of them (its map, title and slider position)."""
    available = run.embedded_epochs()
    epochs = sorted(set(epochs)) if epochs else available
    missing = [e for e in epochs if e not in available]
    if missing:
        raise UserError(f"epoch(s) {missing} have no embedding; embedded: {available}")
    ratios = [run.ratios(e) for e in epochs]
    maps = [run.embedding(e) for e in epochs]
    first = ratios[0]
    classes = first.present
    names = display_names(first.categories, classes)
    every_name = display_names(first.categories, list(range(len(first.categories))))
    row_of = {c: np.flatnonzero(first.labels == c) for c in classes}
    drops = set(first_after_drops(run))
    clustering = _clustering_text(run)
    shown = len(epochs) - 1  # the page opens on the last epoch

    coords = [np.round(np.asarray(m.embedding, float), 2) for m in maps]
    live = [c for c, m in zip(coords, maps) if not m.degenerate] or coords
    lo, hi = np.concatenate(live).min(0), np.concatenate(live).max(0)
    pad = 0.05 * (hi - lo) + 1e-6

    def points(k: int, c: int) -> dict:
        rows = row_of[c]
        r = ratios[k]
        predicted = (
            [every_name[int(p)] for p in r.predictions[rows]]
            if r.predictions is not None
            else ["n/a"] * len(rows)
        )
        return dict(
            x=coords[k][rows, 0].tolist(),
            y=coords[k][rows, 1].tolist(),
            text=predicted,
            customdata=[[int(i), k, int(r.sample_index[i])] for i in rows],
        )

    def title(k: int) -> str:
        e = epochs[k]
        text = f"Epoch {e}" + (" (first after an LR drop)" if e in drops else "")
        if maps[k].degenerate:
            text += ": every sample has the same ratios (uniform start)"
        return text + (f"<br><sup>{clustering[e]}</sup>" if e in clustering else "")

    fig = go.Figure()
    for i, (c, name) in enumerate(zip(classes, names)):
        fig.add_trace(
            go.Scatter(
                name=name,
                mode="markers",
                marker=dict(
                    color=COLOURS[i % len(COLOURS)],
                    symbol=PLOTLY_SYMBOLS[i % len(PLOTLY_SYMBOLS)],
                    size=6,
                    opacity=0.85,
                ),
                hovertemplate="<b>%{fullData.name}</b><br>predicted: %{text}<br>"
                "sample %{customdata[2]}<extra></extra>",
                **points(shown, c),
            )
        )
    layers, k_norm = first.ratios.shape[1:]
    for j, norm in enumerate(first.normalizers):
        fig.add_trace(
            go.Bar(
                name=norm.upper(),
                x=[],
                y=[],
                xaxis="x2",
                yaxis="y2",
                marker_color=RATIO_COLOURS[j % len(RATIO_COLOURS)],
                legend="legend2",
                hovertemplate=f"{norm.upper()} %{{y:.4f}}<br>%{{customdata}}<extra></extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            name="category mean",
            x=[],
            y=[],
            xaxis="x2",
            yaxis="y2",
            mode="markers",
            marker=dict(symbol="line-ew-open", size=9, color="black", line_width=2),
            legend="legend2",
            hovertemplate="category mean: %{customdata}<extra></extra>",
        )
    )
    decoding = _decoding(run, epochs)
    if decoding is not None:  # the category decoded from each layer's ratios, beside the map
        fig.add_trace(decoding_heatmap(decoding, first.layer_names))

    def marker(e: int) -> list[dict]:
        """The shown epoch's row of the decoding map, outlined."""
        if decoding is None or e not in decoding.index:
            return []
        return [
            dict(
                type="rect",
                xref="x3",
                yref="y3",
                x0=0.5,
                x1=layers + 0.5,
                y0=e - 0.5,
                y1=e + 0.5,
                line=dict(color="white", width=2),
            )
        ]

    fig.frames = [
        go.Frame(
            name=str(e),
            data=[go.Scatter(**points(k, c)) for c in classes],
            traces=list(range(len(classes))),
            layout=dict(title_text=title(k), shapes=marker(e)),
        )
        for k, e in enumerate(epochs)
    ]
    animate = dict(mode="immediate", frame=dict(duration=700, redraw=True), transition_duration=0)
    fig.update_layout(
        title=dict(text=title(shown), x=0.01, font_size=15, subtitle_text=run.label),
        width=1250,
        height=680,
        template="plotly_white",
        margin=dict(l=30, r=30, t=90, b=120),
        xaxis=dict(domain=[0, 0.46], range=[lo[0] - pad[0], hi[0] + pad[0]], visible=False),
        yaxis=dict(range=[lo[1] - pad[1], hi[1] + pad[1]], visible=False),
        # a fixed range: a click while a frame is animating restyles the bars without autorange
        xaxis2=dict(
            domain=[0.68, 1],
            anchor="y2",
            range=[0.5, layers + 0.5],
            title_text="EN layer (input → output)",
        ),
        yaxis2=dict(
            anchor="x2",
            range=[0, 1],
            title_text="ratio (stacked)",
            domain=[0.45, 1] if decoding is not None else [0, 1],
        ),
        shapes=marker(epochs[shown]),
        barmode="stack",
        bargap=0.1,
        legend=dict(x=0.47, y=1, title_text="category<br>(click: hide/show)", font_size=11),
        legend2=dict(x=1.0, y=-0.12, xanchor="right", orientation="h", font_size=11),
        **(_decoding_axes(layers) if decoding is not None else {}),
        annotations=[
            dict(
                text="Click a point to see its ratios",
                xref="x2 domain",
                yref="y2 domain",
                x=0.5,
                y=1.08,
                showarrow=False,
                font_size=13,
                name="ratio-title",
            ),
            *(
                [
                    dict(
                        text="the category decoded from each layer's ratios (leave-one-out)",
                        xref="x3 domain",
                        yref="y3 domain",
                        x=0.5,
                        y=1.12,
                        showarrow=False,
                        font_size=11,
                    )
                ]
                if decoding is not None
                else []
            ),
        ],
        updatemenus=[
            dict(
                type="buttons",
                direction="left",
                x=0,
                y=-0.06,
                xanchor="left",
                yanchor="top",
                showactive=False,
                buttons=[
                    dict(
                        label="▶ Play",
                        method="animate",
                        args=[None, dict(animate, fromcurrent=True)],
                    ),
                    dict(
                        label="❚❚ Pause",
                        method="animate",
                        args=[[None], dict(mode="immediate", frame_duration=0)],
                    ),
                ],
            )
        ],
        sliders=[
            dict(
                active=shown,
                x=0.16,
                len=0.3,
                y=-0.02,
                yanchor="top",
                currentvalue=dict(prefix="Epoch ", font_size=12),
                steps=[
                    dict(
                        label=f"{e}↓" if e in drops else str(e),
                        method="animate",
                        args=[[str(e)], animate],
                    )
                    for e in epochs
                ],
            )
        ],
    )
    payload = dict(
        categories=len(classes),
        normalizers=[n.upper() for n in first.normalizers],
        layers=layers,
        layer_names=first.layer_names,
        labels=[classes.index(int(c)) for c in first.labels],
        names=names,
        epochs=epochs,
        thumbnails=thumbnails(run, first.sample_index),
        ratios=[_encode(r.ratios) for r in ratios],
        shape=[len(first.labels), layers, k_norm],
    )
    return Explorer(fig, payload)


def _decoding(run: Run, epochs: list[int]) -> pd.DataFrame | None:
    """(epochs x layers) the category's leave-one-out accuracy from each layer's ratios, from
    ``analysis/decoding.csv`` if the decode step ran (None otherwise)."""
    if not run.files.table("decoding.csv").exists():
        return None
    t = run.decoding()
    t = t[(t.space == "ratios") & (t.level == "layer") & t.epoch.isin(epochs)]
    return t.pivot(index="epoch", columns="index", values="accuracy") if len(t) else None


def decoding_heatmap(decoding: pd.DataFrame, layer_names: list[str]) -> go.Heatmap:
    """The decoding map as a heatmap on the third axes: layers (1..L, as the ratio panel's)
    across, epochs down."""
    return go.Heatmap(
        z=decoding.to_numpy(),
        x=[int(j) + 1 for j in decoding.columns],
        y=list(decoding.index),
        customdata=[[layer_names[int(j)] for j in decoding.columns]] * len(decoding),
        xaxis="x3",
        yaxis="y3",
        colorscale="Viridis",
        colorbar=dict(len=0.3, y=0.15, x=1.02, thickness=10, title=dict(text="accuracy")),
        hovertemplate="epoch %{y}, %{customdata}: %{z:.3f}<extra>decoded from the ratios</extra>",
        name="decoding",
        showlegend=False,
    )


def _decoding_axes(layers: int) -> dict:
    return dict(
        xaxis3=dict(domain=[0.68, 1], anchor="y3", range=[0.5, layers + 0.5], visible=False),
        yaxis3=dict(
            domain=[0, 0.3],
            anchor="x3",
            autorange="reversed",
            title_text="epoch",
        ),
    )


def _encode(ratios: np.ndarray) -> str:
    """(N, L, K) ratios in [0, 1] as base64 little-endian uint16 (resolution 1/65535)."""
    q = np.round(np.clip(ratios, 0, 1) * 65535).astype("<u2")
    return base64.b64encode(q.tobytes()).decode()


def _clustering_text(run: RunFolder) -> dict[int, str]:
    """Per epoch, the ratio vectors' silhouette and k-NN accuracy (with their 95% interval where
    the table has one), from ``analysis/clustering.csv`` if the metrics step ran."""
    if not run.files.table("clustering.csv").exists():
        return {}
    sel = select(
        run.clustering(),
        space=Space.RATIOS,
        dims=Dims.HIGH,
        metric=[Metric.SILHOUETTE, Metric.KNN],
    )
    out: dict[int, list[str]] = {}
    for row in sel.itertuples():
        name = "silhouette" if row.metric == Metric.SILHOUETTE else "k-NN accuracy"
        text = f"{name} {row.value:.3f}"
        if {"ci_low", "ci_high"} <= set(sel.columns) and np.isfinite(row.ci_low):
            text += f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
        if np.isfinite(row.shuffled):
            text += f" (shuffled {row.shuffled:.3f})"
        out.setdefault(int(row.epoch), []).append(text)
    return {e: "ratios: " + "; ".join(parts) for e, parts in out.items()}


def thumbnails(run: RunFolder, sample_index: np.ndarray) -> list[str]:
    """The evaluation images as small PNG data URIs, in the subset's order."""
    uris = []
    for a in thumbnail_images(run.config.data, sample_index, THUMBNAIL_SIDE):
        buffer = io.BytesIO()
        Image.fromarray(a).save(buffer, format="PNG", optimize=True)
        uris.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    return uris


@timed
def write_explorer(
    run: RunFolder, epochs: list[int] | None = None, out: Path | None = None, force: bool = False
) -> StepResult:
    """The ``explore`` step: the analysis's ``figures/explorer.html``, unless up to date; or,
    with ``out``, the page at ``out`` (an explorer page or a new .html file), written always."""
    if out is not None:
        path = explorer(run, epochs).write_html(check_page_path(out))
        return _page_result(StepResult("explore", [path]))
    path = run.files.figures / EXPLORER
    inputs = run.analysis_inputs(epochs or run.embedded_epochs())
    tables = [run.files.table(n) for n in ("clustering.csv", "decoding.csv")]
    inputs += [t for t in tables if t.exists()]
    settings = {**run.step_settings("explore"), "epochs": epochs}
    written = run.make(
        [path], inputs, settings, lambda: explorer(run, epochs).write_html(path), force
    )
    return _page_result(StepResult.of("explore", [path], written))


def _page_result(result: StepResult) -> StepResult:
    """The page's size and how to open it, for the reader."""
    for path in result.written:
        result.summary = (
            f"{path.stat().st_size / 1e6:.1f} MB; open it in a browser, no server needed"
        )
    return result


class Run(RunFolder):
    """A run folder, seen through one of its analyses (``default`` unless named): everything
    ``RunFolder`` reads, and ``explore()``, its interactive explorer. This is
    ``en_analysis.Run``, what notebooks open."""

    def explore(self, epochs: list[int] | None = None) -> Explorer:
        """The interactive explorer of the run's embedded epochs: shows inline in Jupyter;
        ``.write_html(path)`` writes the offline page."""
        return explorer(self, epochs)


# Runs in the page after plotly has drawn the figure: hover thumbnails and the ratio panel.
_SCRIPT = """
(function () {
  const gd = document.getElementById('explorer');
  const EN = __PAYLOAD__;
  const [N, L, K] = EN.shape;
  const decoded = {};
  function ratiosOf(k) {  // epoch index -> Float32Array (N * L * K)
    if (!(k in decoded)) {
      const bin = atob(EN.ratios[k]);
      const out = new Float32Array(bin.length / 2);
      for (let i = 0; i < out.length; i++) {
        out[i] = (bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8)) / 65535;
      }
      decoded[k] = out;
    }
    return decoded[k];
  }
  const box = document.createElement('div');
  box.id = 'en-thumbnail';
  box.style.cssText = 'position:fixed;display:none;pointer-events:none;z-index:1000;' +
    'background:white;border:1px solid #999;padding:4px;font:12px sans-serif;text-align:center';
  const img = document.createElement('img');
  img.style.cssText = 'width:96px;height:96px;image-rendering:pixelated;display:block';
  const caption = document.createElement('div');
  box.appendChild(img);
  box.appendChild(caption);
  document.body.appendChild(box);

  gd.on('plotly_hover', function (ev) {
    const p = ev.points[0];
    if (p.curveNumber >= EN.categories) return;
    const row = p.customdata[0];
    img.src = EN.thumbnails[row];
    caption.textContent = EN.names[EN.labels[row]] + ', sample ' + p.customdata[2];
    const e = ev.event || {};
    box.style.left = Math.max(0, (e.clientX || 0) - 130) + 'px';  // left of plotly's label
    box.style.top = ((e.clientY || 0) + 18) + 'px';
    box.style.display = 'block';
  });
  gd.on('plotly_unhover', function () { box.style.display = 'none'; });

  gd.on('plotly_click', function (ev) {
    const p = ev.points[0];
    if (p.curveNumber >= EN.categories) return;
    showRatios(p.customdata[0], p.customdata[1], p.customdata[2]);
  });

  function showRatios(row, k, sample) {  // row of the page's arrays; sample: dataset index
    const r = ratiosOf(k);
    const label = EN.labels[row];
    const members = [];
    for (let i = 0; i < N; i++) if (EN.labels[i] === label) members.push(i);
    const x = [], layerNames = [];
    for (let l = 0; l < L; l++) { x.push(l + 1); layerNames.push(EN.layer_names[l]); }
    const ys = [], meanX = [], meanY = [], meanText = [];
    for (let j = 0; j < K; j++) {
      const y = [];
      for (let l = 0; l < L; l++) y.push(r[(row * L + l) * K + j]);
      ys.push(y);
    }
    for (let l = 0; l < L; l++) {
      let cumulative = 0;
      for (let j = 0; j < K - 1; j++) {
        let m = 0;
        for (const i of members) m += r[(i * L + l) * K + j];
        cumulative += m / members.length;
        meanX.push(l + 1); meanY.push(cumulative);
        meanText.push(EN.normalizers.slice(0, j + 1).join('+') + ' ' + cumulative.toFixed(4));
      }
    }
    const traces = [];
    for (let j = 0; j <= K; j++) traces.push(EN.categories + j);
    Plotly.restyle(gd, {
      x: ys.map(() => x).concat([meanX]),
      y: ys.concat([meanY]),
      customdata: ys.map(() => layerNames).concat([meanText]),
    }, traces);
    const annotations = gd.layout.annotations.map(function (a) {
      if (a.name !== 'ratio-title') return a;
      return Object.assign({}, a, {text: 'Sample ' + sample + ' (' + EN.names[label] +
        '), epoch ' + EN.epochs[k] + ': ratios per layer; ticks: category mean'});
    });
    Plotly.relayout(gd, {annotations: annotations});
    gd.dataset.selected = String(row);
  }
})();
"""
