"""The run folder as one object: every output knows what it was made from (provenance), and
analyses with other settings live side by side without overwriting each other."""

import json
import os
import shutil

import pandas as pd
import pytest

from en_analysis import Run
from en_analysis.analysis.extract import extract
from en_analysis.cli import main
from en_analysis.core.errors import UserError
from en_analysis.core.layout import AnalysisLayout, RunLayout
from en_analysis.core.provenance import Provenance
from en_analysis.pipeline.reproduce import reproduce
from en_analysis.settings.config import read_config

from conftest import snapshot, tiny_config

FAST = ("analysis.bootstrap=20",)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """A tiny run through every step of reproduce (read-only: copy it before changing it)."""
    path = tmp_path_factory.mktemp("reproduced") / "run"
    reproduce(tiny_config(*FAST), path, progress=False)
    return path


@pytest.fixture
def run(tmp_path, reproduced):
    path = tmp_path / "run"
    shutil.copytree(reproduced, path)
    return path


# --- provenance: the one rule ---------------------------------------------------------------


def test_an_output_is_current_only_as_recorded(tmp_path):
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("a")
    output.write_text("made from a")
    p = Provenance(tmp_path / "provenance.json", tmp_path)
    assert not p.current(output, [source], {"k": 1})  # nothing recorded yet
    p.record([output], [source], {"k": 1})
    assert p.current(output, [source], {"k": 1})
    assert not p.current(output, [source], {"k": 2})  # other settings
    assert not p.current(output, [source, tmp_path / "gone.txt"], {"k": 1})  # missing input
    source.write_text("b")
    assert not p.current(output, [source], {"k": 1})  # changed input
    source.write_text("a")
    assert p.current(output, [source], {"k": 1})  # the same content again: current
    output.write_text("replaced")
    os.utime(output, (0, 0))  # older than everything: modification times decide nothing
    assert not p.current(output, [source], {"k": 1})
    output.unlink()
    assert not p.current(output, [source], {"k": 1})


def test_settings_are_compared_as_stored(tmp_path):
    """Tuples and lists, key order: the same settings once written to JSON."""
    (tmp_path / "o").write_text("x")
    p = Provenance(tmp_path / "provenance.json", tmp_path)
    p.record([tmp_path / "o"], [], {"b": (1, 2), "a": [3]})
    assert p.current(tmp_path / "o", [], {"a": [3], "b": [1, 2]})


def test_a_moved_run_stays_up_to_date(tmp_path, reproduced):
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(reproduced, moved)
    summary = reproduce(tiny_config(*FAST), moved, progress=False)
    assert set(summary.steps.values()) == {"up to date"}, summary.steps


def test_every_output_of_reproduce_has_a_record(reproduced):
    records = json.loads(RunLayout(reproduced).analysis().provenance.read_text())
    outputs = {
        p.relative_to(reproduced).as_posix()
        for folder in ("ratios", "embeddings", "analysis", "figures")
        for p in (reproduced / folder).iterdir()
    }
    assert outputs == set(records)
    assert records["ratios/epoch-001.npz"]["inputs"].keys() == {"checkpoints/epoch-001.pt"}


def test_export_of_fewer_epochs_is_redone_by_reproduce(run):
    """Before: `export --epochs 1` then `reproduce` left category_stats.csv with epoch 1 only
    and said "up to date"."""
    assert main(["export", str(run), "--epochs", "1"]) == 0
    assert Run(run).category_stats().epoch.unique().tolist() == [1]
    summary = reproduce(tiny_config(*FAST), run, progress=False)
    assert summary.steps["export"].startswith("done")
    assert sorted(Run(run).category_stats().epoch.unique()) == [0, 1, 2]


def test_a_replaced_checkpoint_is_extracted_again_whatever_its_mtime(run):
    """Before: a checkpoint replaced by one with an older modification time was skipped."""
    checkpoints = run / "checkpoints"
    shutil.copy(checkpoints / "epoch-001.pt", checkpoints / "epoch-002.pt")
    os.utime(checkpoints / "epoch-002.pt", (0, 0))
    done = extract(Run(run), progress=False)
    assert done.written_epochs == [2] and done.up_to_date_epochs == [0, 1]
    assert (Run(run).ratios(2).ratios == Run(run).ratios(1).ratios).all()


def test_a_changed_categories_file_is_noticed(tmp_path, analysed_run):
    """Before: editing data.categories_file changed nothing without --force."""
    mapping = tmp_path / "synsets.csv"
    mapping.write_text(
        "category,synset\ndog,dog.n.01\ncat,cat.n.01\ncar,car.n.01\ntree,tree.n.01\n"
    )
    path = tmp_path / "run"
    from en_analysis.training.train import train

    train(tiny_config(f"data.categories_file={mapping}", "train.epochs=1"), path, progress=False)
    assert extract(Run(path), progress=False).written_epochs == [0, 1]
    assert extract(Run(path), progress=False).up_to_date_epochs == [0, 1]
    mapping.write_text(mapping.read_text().replace("car.n.01", "car.n.02"))
    done = extract(Run(path), progress=False)
    assert done.written_epochs == [0, 1]
    assert Run(path).ratios(1).synsets[2] == "car.n.02"


# --- named analyses --------------------------------------------------------------------------


def test_other_settings_on_an_analysis_with_outputs_are_refused(run):
    before = snapshot(run)
    with pytest.raises(UserError, match=r"made with analysis.scaling = 'zscore' \(asked 'raw'\)"):
        reproduce(tiny_config(*FAST, "analysis.scaling=raw"), run, progress=False)
    assert snapshot(run) == before


def test_two_analyses_of_one_run_side_by_side(run):
    before = snapshot(run)
    reproduce(tiny_config(*FAST, "analysis.scaling=raw"), run, "raw", progress=False)
    assert snapshot(run).items() >= before.items()  # the default analysis is untouched
    default, raw = Run(run), Run(run, "raw")
    assert default.analyses() == ["default", "raw"] and raw.analysis == "raw"
    assert default.config.analysis.scaling == "zscore" and raw.config.analysis.scaling == "raw"
    assert raw.files.root == run / "analyses" / "raw"
    assert read_config(run / "analyses" / "raw" / "analysis.toml").analysis.scaling == "raw"
    assert not raw.clustering().equals(default.clustering())
    assert raw.ratio_epochs == default.ratio_epochs == [0, 1, 2]
    for name in ("tsne_grid.png", "explorer.html", "wordnet.png"):
        assert (raw.files.figures / name).exists()
    assert raw.label.endswith("analysis raw") and "analysis" not in default.label
    summary = reproduce(tiny_config(*FAST, "analysis.scaling=raw"), run, "raw", progress=False)
    assert set(summary.steps.values()) == {"up to date"}


def test_two_analyses_in_one_figure(run):
    from en_analysis.figures import plotting

    reproduce(tiny_config(*FAST, "analysis.scaling=raw"), run, "raw", progress=False)
    default, raw = Run(run), Run(run, "raw")
    fig = plotting.analyses_figure([default, raw])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("analysis default: scaling zscore")
    assert titles[1].startswith("analysis raw: scaling raw")
    silhouette = raw.clustering().query("epoch == 2 and space == 'ratios' and dims == 'high'")
    value = silhouette[silhouette.metric == "silhouette"].value.iloc[0]
    assert f"silhouette {value:.3f}" in titles[1]
    other = run.parent / "other"
    shutil.copytree(run, other)
    with pytest.raises(UserError, match="analyses of one run"):
        plotting.analyses_figure([default, Run(other)])
    with pytest.raises(UserError, match="not embedded in every analysis"):
        plotting.analyses_figure([default, raw], epoch=7)


def test_force_replaces_an_analysis_and_stores_its_settings(run):
    reproduce(tiny_config(*FAST, "analysis.scaling=raw"), run, force=True, progress=False)
    assert read_config(run / "config.toml").analysis.scaling == "raw"
    records = json.loads((run / "provenance.json").read_text())
    assert records["analysis/clustering.csv"]["settings"]["analysis.scaling"] == "raw"


def test_a_step_on_a_named_analysis_and_its_settings(run, capsys):
    """The first step of a named analysis sets its settings; later steps use them."""
    argv = ["extract", str(run), "--analysis", "clr", "--set", "analysis.scaling=clr", "--quiet"]
    assert main(argv) == 0
    assert Run(run, "clr").config.analysis.scaling == "clr"
    assert main(["embed", str(run), "--analysis", "clr", "--quiet"]) == 0
    assert Run(run, "clr").embedding_epochs == [0, 1, 2]
    records = json.loads((run / "analyses" / "clr" / "provenance.json").read_text())
    assert records["analyses/clr/embeddings/epoch-002.npz"]["settings"]["analysis.scaling"] == "clr"
    assert main(["metrics", str(run), "--analysis", "clr"]) == 0
    assert (run / "analyses" / "clr" / "analysis" / "clustering.csv").exists()
    capsys.readouterr()
    argv = ["metrics", str(run), "--analysis", "clr", "--set", "analysis.scaling=raw"]
    assert main(argv) == 2
    assert "made with analysis.scaling = 'clr' (asked 'raw')" in capsys.readouterr().err


def test_settings_are_stored_only_when_the_step_succeeds(run, capsys):
    before = (run / "config.toml").read_bytes()
    argv = ["extract", str(run), "--force", "--set", "analysis.categories=['dgo', 'cat']"]
    assert main(argv) == 2
    assert "Did you mean dog" in capsys.readouterr().err
    assert (run / "config.toml").read_bytes() == before


def test_a_step_cannot_change_model_or_training_settings(run, capsys):
    before = snapshot(run)
    assert main(["metrics", str(run), "--set", "train.lr=0.1"]) == 2
    assert "a step changes analysis settings" in capsys.readouterr().err
    assert snapshot(run) == before


def test_bad_analysis_names_are_refused(run):
    for name in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(UserError, match="must be a plain name"):
            Run(run, name)


def test_the_layout_is_defined_once(tmp_path):
    """Every path of the folder comes from the layout: default analysis at the top, named
    ones under analyses/."""
    layout = RunLayout(tmp_path)
    assert layout.checkpoint(3) == tmp_path / "checkpoints" / "epoch-003.pt"
    assert layout.analysis().ratio_file(2) == tmp_path / "ratios" / "epoch-002.npz"
    named = AnalysisLayout(tmp_path, "x")
    assert named.embedding_file(1) == tmp_path / "analyses" / "x" / "embeddings" / "epoch-001.npz"
    assert named.settings == tmp_path / "analyses" / "x" / "analysis.toml"
    assert layout.analysis().settings == layout.config


def test_run_embedding_is_typed(reproduced):
    e = Run(reproduced).embedding(0)
    assert e.degenerate is True and e.epoch == 0 and e.embedding.shape == (32, 2)
    assert pd.Series(e.labels).value_counts().tolist() == [8, 8, 8, 8]
