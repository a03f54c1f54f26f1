"""Figures: labelled by the data a run used, saved whole, panels chosen like the paper's."""

import tomllib

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
