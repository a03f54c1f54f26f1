"""The explorer page (in a real, offline Chromium), ``Run.explore`` and the projector export."""

from __future__ import annotations

import base64
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from en_analysis import Run
from en_analysis.analysis.projector import SPRITE_SIDE, write_projector
from en_analysis.cli import main
from en_analysis.core.errors import UserError
from en_analysis.data import thumbnail_images
from en_analysis.figures.explorer import explorer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page_path(tmp_path_factory, analysed_run) -> Path:
    run = Run(analysed_run)
    return explorer(run).write_html(tmp_path_factory.mktemp("explorer") / "explorer.html")


def test_page_holds_every_epoch_and_its_data(analysed_run):
    run = Run(analysed_run)
    ex = run.explore()
    frames = [f.name for f in ex.figure.frames]
    assert frames == [str(e) for e in run.embedding_epochs]
    n, layers, k = run.ratios(run.embedding_epochs[0]).ratios.shape
    assert ex.payload["shape"] == [n, layers, k]
    assert len(ex.payload["thumbnails"]) == n
    for e, encoded in zip(run.embedding_epochs, ex.payload["ratios"]):  # 1/65535 resolution
        decoded = np.frombuffer(base64.b64decode(encoded), "<u2").reshape(n, layers, k) / 65535
        np.testing.assert_allclose(decoded, run.ratios(e).ratios, atol=1 / 65535)
    for frame, e in zip(ex.figure.frames, run.embedding_epochs):  # each frame is its epoch's map
        emb = run.embedding(e).embedding
        rows = [row for trace in frame.data for row, _, _ in trace.customdata]
        xs = [x for trace in frame.data for x in trace.x]
        np.testing.assert_allclose(xs, np.round(emb[rows, 0], 2))
        assert sorted(rows) == list(range(n))


def test_the_page_is_titled_with_the_data_and_the_run(analysed_run):
    ex = Run(analysed_run).explore()
    assert ex.figure.layout.title.subtitle.text == "synthetic stripes, run tiny"


def test_drop_epochs_are_marked_on_the_slider(analysed_run):
    run = Run(analysed_run)  # the tiny run drops the LR after epoch 1
    labels = [s.label for s in run.explore().figure.layout.sliders[0].steps]
    assert labels == ["0", "1", "2↓"]


def test_the_page_opens_on_the_last_epoch(analysed_run):
    """Before: it opened on epoch 0, where every image has the same ratios - one dot."""
    run = Run(analysed_run)
    epochs = run.embedding_epochs
    fig = run.explore().figure
    slider = fig.layout.sliders[0]
    assert slider.active == len(epochs) - 1
    assert list(slider.steps[slider.active].args[0]) == [str(epochs[-1])]
    assert fig.layout.title.text.startswith(f"Epoch {epochs[-1]}")
    last = fig.frames[-1]
    assert last.name == str(epochs[-1])
    for shown, framed in zip(fig.data, last.data):  # the map drawn is the last epoch's
        assert list(shown.x) == list(framed.x) and list(shown.y) == list(framed.y)
        assert [list(c) for c in shown.customdata] == [list(c) for c in framed.customdata]
    emb = run.embedding(epochs[-1]).embedding
    row = fig.data[0].customdata[0][0]
    assert fig.data[0].x[0] == round(float(emb[row, 0]), 2)
    first = run.embedding(epochs[0]).embedding  # and not the first epoch's
    assert not np.allclose(np.round(first[:, 0], 2), np.round(emb[:, 0], 2))


def test_page_makes_no_network_reference(page_path):
    text = page_path.read_text()
    assert "<script src=" not in text  # plotly.js is inlined, not loaded
    assert "cdn.plot.ly" not in text.split("</script>")[-1]


def test_explore_in_jupyter_is_the_page_in_a_frame(analysed_run):
    out = Run(analysed_run).explore(epochs=[2])._repr_html_()
    assert out.startswith("<iframe srcdoc=") and "plotly" in out


def test_explore_refuses_missing_epochs_and_unembedded_runs(analysed_run, trained_run):
    with pytest.raises(UserError, match=r"epoch\(s\) \[7\] have no embedding"):
        explorer(Run(analysed_run), [7])
    with pytest.raises(UserError, match="extract.*embed"):
        explorer(Run(trained_run))


def test_cli_writes_the_page_and_reports_its_size(run_copy, capsys):
    assert main(["explore", str(run_copy)]) == 0
    page = run_copy / "figures" / "explorer.html"
    assert page.stat().st_size > 1e6  # plotly.js itself is inlined
    assert f"wrote {page}" in capsys.readouterr().out


# --- the page in a real browser, network blocked ----------------------------------------------


def _point_on_screen(page, trace: int, index: int) -> tuple[float, float]:
    return page.evaluate(
        """([t, i]) => {
        const gd = document.getElementById('explorer');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.getBoundingClientRect();
        return [box.left + xa._offset + xa.l2p(gd.data[t].x[i]),
                box.top + ya._offset + ya.l2p(gd.data[t].y[i])];
    }""",
        [trace, index],
    )


@contextmanager
def offline_page(path: Path):
    """The page at ``path`` in headless Chromium with the network blocked, once plotly has
    drawn it; afterwards, no request may have left the file and no error been logged."""
    from playwright.sync_api import sync_playwright

    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1300, "height": 760}, offline=True)
        page = context.new_page()

        def block(route):
            if not route.request.url.startswith("file://"):
                requests.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", block)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.as_uri())
        page.wait_for_function(
            "document.getElementById('explorer')?._fullLayout !== undefined", timeout=30_000
        )
        yield page
        browser.close()
    assert not requests, f"the page tried the network: {requests}"
    assert not errors, f"console errors: {errors}"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_page_in_offline_chromium(page_path, analysed_run, tmp_path):
    run = Run(analysed_run)
    epochs = run.embedding_epochs
    layers = run.ratios(epochs[0]).ratios.shape[1]
    with offline_page(page_path) as page:
        title = "document.getElementById('explorer')._fullLayout.title.text"
        # the page opens on the last epoch, the slider there too
        assert page.evaluate(title).startswith(f"Epoch {epochs[-1]}")
        slider = "document.getElementById('explorer')._fullLayout.sliders[0]"
        assert page.evaluate(f"{slider}.active") == len(epochs) - 1
        before = page.evaluate("document.getElementById('explorer').data[0].x.slice()")

        # the slider: a click at the left end of its rail moves to the first epoch, one at its
        # right end back to the last
        rail = page.locator(".slider-rail-rect").bounding_box()
        page.mouse.click(rail["x"] + 2, rail["y"] + rail["height"] / 2)
        page.wait_for_function(f"{title}.startsWith('Epoch {epochs[0]}')")
        first = page.evaluate("document.getElementById('explorer').data[0].x.slice()")
        assert first != before
        page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)
        page.wait_for_function(f"{title}.startsWith('Epoch {epochs[-1]}')")
        after = page.evaluate("document.getElementById('explorer').data[0].x")
        assert after != first

        # hover: the thumbnail of the point under the mouse appears
        x, y = _point_on_screen(page, 0, 0)
        page.mouse.move(x, y)
        page.wait_for_selector("#en-thumbnail", state="visible")
        src = page.get_attribute("#en-thumbnail img", "src")
        assert src.startswith("data:image/png;base64,")

        # click: the ratio panel is filled with that sample's L ratios per normalizer
        page.mouse.click(x, y)
        page.wait_for_function("document.getElementById('explorer').dataset.selected")
        row = int(page.evaluate("document.getElementById('explorer').dataset.selected"))
        bars = page.evaluate("document.getElementById('explorer').data.slice(-4)")
        k_ratios = np.array([b["y"] for b in bars[:3]]).T  # (L, K)
        assert k_ratios.shape == (layers, 3)
        # every layer's bar is inside the panel (the click came while the epoch frame animated)
        lo, hi = page.evaluate("document.getElementById('explorer')._fullLayout.xaxis2.range")
        assert lo < 1 and hi > layers
        expected = run.ratios(epochs[-1]).ratios[row]
        np.testing.assert_allclose(k_ratios, expected, atol=2 / 65535)
        assert page.evaluate(
            "document.getElementById('explorer').layout.annotations[0].text"
        ).startswith(f"Sample {run.ratios(epochs[-1]).sample_index[row]} (")  # as the hover
        page.screenshot(path=str(tmp_path / "explorer.png"))
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
@pytest.mark.parametrize(
    "names",
    [
        ["<!--<script>", "a & b > c", "line\u2028break\u2029", "<b>bold</b>"],
        ["</script><p>", "b", "c", "d"],
    ],
    ids=["comment-then-script", "end-of-script"],
)
def test_category_names_that_look_like_html_render(run_copy, tmp_path, names):
    """Before: a class folder named `<!--<script>` made the page render nothing: the page's
    data sat in its <script> element with "<" unescaped, and opened a comment there."""
    for path in (run_copy / "ratios").glob("epoch-*.npz"):
        with np.load(path) as d:
            arrays = {k: d[k] for k in d.files}
        np.savez(path, **{**arrays, "categories": np.array(names)})
    page_file = explorer(Run(run_copy), [2]).write_html(tmp_path / "page.html")
    with offline_page(page_file) as page:
        shown = page.evaluate("document.getElementById('explorer').data.map(t => t.name)")
        assert shown[:4] == names
        x, y = _point_on_screen(page, 0, 0)  # the thumbnail caption comes from the page's data
        page.mouse.move(x, y)
        page.wait_for_selector("#en-thumbnail", state="visible")
        assert page.text_content("#en-thumbnail div").startswith(f"{names[0]}, sample ")


# --- TensorBoard projector files ---------------------------------------------------------------


def test_projector_files_read_back(run_copy):
    run = Run(run_copy)
    folder = write_projector(run)
    epochs = run.ratio_epochs
    r = run.ratios(epochs[-1])
    n = len(r.labels)
    tensor = np.loadtxt(folder / f"epoch-{epochs[-1]:03d}" / "tensor.tsv", delimiter="\t")
    np.testing.assert_allclose(tensor, r.vectors, rtol=1e-5, atol=1e-7)
    meta = (folder / f"epoch-{epochs[-1]:03d}" / "metadata.tsv").read_text().splitlines()
    assert meta[0].split("\t") == ["category", "synset", "prediction", "sample_index"]
    assert len(meta) == n + 1
    first = meta[1].split("\t")
    assert first[0] == r.categories[r.labels[0]] and int(first[3]) == r.sample_index[0]
    assert first[2] == r.categories[r.predictions[0]]
    sprite = np.asarray(Image.open(folder / "sprite.png"))
    thumbs = thumbnail_images(run.config.data, r.sample_index, SPRITE_SIDE)
    side = thumbs.shape[1]
    cols = math.ceil(math.sqrt(n))
    assert sprite.shape[:2] == (cols * side, cols * side)
    i = n - 1  # the last thumbnail sits at row i // cols, column i % cols
    block = sprite[(i // cols) * side : (i // cols + 1) * side, (i % cols) * side :][:, :side]
    np.testing.assert_array_equal(block, thumbs[i])
    config = (folder / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == len(epochs)
    for e in epochs:
        assert f'tensor_path: "epoch-{e:03d}/tensor.tsv"' in config


def test_projector_config_parses_with_the_plugins_protobuf(run_copy):
    pytest.importorskip("tensorboard")
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    folder = write_projector(Run(run_copy))
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == [
        f"EN ratios, epoch {e}" for e in Run(run_copy).ratio_epochs
    ]
    for e in config.embeddings:
        assert (folder / e.tensor_path).exists() and (folder / e.metadata_path).exists()
        assert (folder / e.sprite.image_path).exists()
        assert (
            list(e.sprite.single_image_dim)
            == [
                np.asarray(Image.open(folder / "sprite.png")).shape[0]
                // math.ceil(math.sqrt(len(Run(run_copy).ratios(0).labels)))
            ]
            * 2
        )


def test_export_projector_through_the_cli(run_copy, capsys):
    assert main(["export", str(run_copy), "--projector"]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out
    for name in ("projector_config.pbtxt", "sprite.png", "epoch-002/tensor.tsv"):
        assert (run_copy / "projector" / name).exists()
