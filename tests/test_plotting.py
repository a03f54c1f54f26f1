"""Figures: labelled by the data a run used, saved whole, panels chosen like the paper's."""

import shutil
import tomllib

import numpy as np
import pytest
import tomli_w

from en_analysis import Run
from en_analysis.figures import plotting
from en_analysis.figures.plotting import choose_panels


def _relabel(run_path, **data):
    """Pretend the run used other data (only what the figures read changes)."""
    path = run_path / "config.toml"
    config = tomllib.loads(path.read_text())
    config["name"] = "fashion-mnist"  # the preset's name must not be what the figures say
    config["data"].update(data)
    path.write_text(tomli_w.dumps(config))


def _texts(fig) -> str:
    texts = [fig._suptitle.get_text() if fig._suptitle else ""]
    texts += [ax.get_title() for ax in fig.axes]
    return " | ".join(texts)


def test_figures_are_labelled_with_the_data_and_the_run_not_the_preset(run_copy):
    _relabel(run_copy, dataset="imagefolder", root="/data/cifar10-jpegs")
    run = Run(run_copy)
    assert run.label == "image folder cifar10-jpegs, run run"
    for fig in (
        plotting.tsne_grid(run),
        plotting.ratio_heatmaps(run),
        plotting.ratios_over_epochs(run),
    ):
        text = _texts(fig)
        assert "image folder cifar10-jpegs, run run" in text and "fashion-mnist" not in text


def test_save_writes_png_and_pdf_and_leaves_no_temporary_file(run_copy, tmp_path):
    out = tmp_path / "out"
    paths = plotting.save(plotting.tsne_grid(Run(run_copy)), out / "grid")
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"]
    assert sorted(p.name for p in out.iterdir()) == ["grid.pdf", "grid.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "epochs, drops, expected",
    [
        (list(range(0, 4)), [2], [1, 2, 3]),  # fewer than 10: every trained epoch
        (  # the paper's: 100 epochs, drops after 30/60/90: 6 spread over the epochs before the
            # first drop, the first after each drop, the last
            list(range(0, 101)),
            [30, 60, 90],
            [1, 7, 13, 18, 24, 30, 31, 61, 91, 100],
        ),
        ([0], [], [0]),  # only the initial weights: epoch 0 is all there is
    ],
)
def test_panel_choice(epochs, drops, expected):
    assert choose_panels(epochs, drops) == expected


# --- what every figure must show: labelled axes, one colour scale, legends outside the data ----

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker"]


@pytest.fixture(scope="module")
def tabled_run(tmp_path_factory, analysed_run):
    """The tiny run with every step's table written (the figures' inputs)."""
    from en_analysis.analysis.ablation import write_ablation
    from en_analysis.analysis.decoding import write_decoding
    from en_analysis.analysis.metrics import write_clustering
    from en_analysis.analysis.stability import write_stability
    from en_analysis.analysis.wordnet import write_comparison

    path = tmp_path_factory.mktemp("tabled") / "tiny"
    shutil.copytree(analysed_run, path)
    run = Run(path)
    for step in (write_clustering, write_comparison, write_decoding, write_stability):
        step(run)
    write_ablation(run)
    return Run(path)


def _replicates_table(run):
    """A replicates table (``pipeline.replicates``) made from one run's numbers."""
    from en_analysis.pipeline.replicates import _long

    values = _long(run)
    return values.assign(
        mean=values.value, sd=0.01, min=values.value - 0.02, max=values.value + 0.02, n=3
    )


def _every_figure(run):
    from en_analysis.analysis.wordnet import last_epoch_matrices

    return {
        "tsne_grid": plotting.tsne_grid(run),
        "ratio_heatmaps": plotting.ratio_heatmaps(run),
        "ratio_heatmaps_centred": plotting.ratio_heatmaps(run, centred=True),
        "ratios_over_epochs": plotting.ratios_over_epochs(run),
        "clustering_dynamics": plotting.clustering_figure(run, run.clustering()),
        "wordnet": plotting.wordnet_figure(run, last_epoch_matrices(run, run.wordnet())),
        "decoding": plotting.decoding_figure(run, run.decoding()),
        "stability": plotting.stability_figure(run, run.stability()),
        "ablation": plotting.ablation_figure(run, run.ablation()),
        "replicates": plotting.replicates_figure(_replicates_table(run), [run, run]),
        "animation": plotting.animation_figure(run)[0],
    }


def _panels(fig):
    """The figure's data axes: visible, and not colour bars."""
    return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]


def _colourbars(fig):
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


@pytest.fixture(scope="module")
def figures(tabled_run):
    drawn = _every_figure(tabled_run)
    for fig in drawn.values():
        fig.draw_without_rendering()  # the layout engines place everything on draw
    return drawn


def test_every_panel_of_every_figure_has_both_axis_labels(figures):
    for name, fig in figures.items():
        for ax in _panels(fig):
            what = f"{name}: panel {ax.get_title()!r}"
            assert ax.get_xlabel().strip(), f"{what} has no x-axis label"
            assert ax.get_ylabel().strip(), f"{what} has no y-axis label"


def test_legends_are_outside_every_panel(figures):
    checked = 0
    for name, fig in figures.items():
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            box = legend.get_window_extent()
            for ax in _panels(fig):
                assert not box.overlaps(ax.get_window_extent()), (
                    f"{name}: the legend covers panel {ax.get_title()!r}"
                )
            checked += 1
    assert checked >= len(figures) - 4  # both heatmaps, decoding, stability: colour bars only


def test_a_heatmap_figure_has_one_colour_scale_and_no_empty_rows(figures, tabled_run):
    names = [plotting.layer_label(n) for n in tabled_run.ratios(2).layer_names]
    assert names[0] == "stem.bn1" and names[1].startswith("layer1.0.")
    for name in ("ratio_heatmaps", "ratio_heatmaps_centred"):
        fig = figures[name]
        assert len(_colourbars(fig)) == 1, f"{name}: one colour bar for every panel"
        images = [im for ax in _panels(fig) for im in ax.images]
        assert len(images) == 3 * 2  # IN, LN, BN at the two trained epochs (not epoch 0)
        assert len({im.get_clim() for im in images}) == 1, f"{name}: panels' scales differ"
        assert _colourbars(fig)[0].get_ylabel()  # the scale says what it measures
        for ax in _panels(fig):
            values = np.asarray(ax.images[0].get_array(), float)
            assert not np.isnan(values).all(axis=1).any(), f"{name}: an all-NaN row"
            assert np.ptp(values) > 0, f"{name}: {ax.get_title()} is one colour (empty)"
            assert [t.get_text() for t in ax.get_xticklabels()] == names
    titles = [ax.get_title() for ax in _panels(figures["ratio_heatmaps"])]
    assert not any(t.startswith("Epoch 0") for t in titles)  # every image has the same ratios


def test_uniform_ratios_are_recognised(tabled_run):
    assert plotting.is_uniform(tabled_run.ratios(0).ratios)
    assert not plotting.is_uniform(tabled_run.ratios(2).ratios)
    assert plotting.heatmap_epochs(tabled_run) == [1, 2]


def test_the_animation_legend_fits_the_frame_even_with_long_names(run_copy):
    """Before: the GIF's legend, 5 columns of Fashion-MNIST's names, was cut at both sides of
    its 500-pixel frame."""
    for path in (run_copy / "ratios").glob("epoch-*.npz"):
        with np.load(path) as d:
            arrays = {k: d[k] for k in d.files}
        np.savez(path, **{**arrays, "categories": np.array(FASHION[: len(arrays["categories"])])})
    run = Run(run_copy)
    fig, draw, epochs = plotting.animation_figure(run)
    frame = fig.bbox
    assert (frame.width, frame.height) == (500, 560)  # pixels, as the GIF is written
    for k in range(len(epochs)):
        draw(k)
        fig.draw_without_rendering()
        (legend,) = fig.legends
        box = legend.get_window_extent()
        assert box.x0 >= 0 and box.x1 <= frame.width and box.y0 >= 0
        assert not box.overlaps(fig.axes[0].get_window_extent())
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts == FASHION[: len(texts)]
    path = plotting.tsne_animation(run, run_copy / "anim.gif")
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.size == (500, 560) and gif.n_frames == len(epochs)
