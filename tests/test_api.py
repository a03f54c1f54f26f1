"""The package's top-level API: ``find_run`` (what the notebooks open), ``Run.ratios_frame``,
``load_model`` and ``__version__``."""

import os
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import en_analysis
from en_analysis import Run, find_run, load_model
from en_analysis.core.errors import UserError
from en_analysis.run.folder import RATIO_COLUMNS

ROOT = Path(__file__).parent.parent


# find_run


@pytest.fixture
def project(tmp_path, analysed_run):
    """A repository-like folder: pyproject.toml, notebooks/, and runs/fashion-mnist (the tiny
    run, linked: find_run only reads it)."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "somewhere"\n')
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "fashion-mnist").symlink_to(analysed_run, target_is_directory=True)
    return tmp_path


@pytest.mark.parametrize("where", [".", "notebooks"])
def test_find_run_opens_the_default_run_from_the_root_and_from_notebooks(
    project, where, monkeypatch
):
    monkeypatch.delenv("EN_ANALYSIS_RUN", raising=False)
    monkeypatch.chdir(project / where)
    run = find_run()
    assert isinstance(run, Run)
    assert run.path.resolve() == (project / "runs" / "fashion-mnist").resolve()
    assert run.analysis == "default"


@pytest.mark.parametrize("where", [".", "notebooks"])
def test_find_run_takes_en_analysis_run_relative_or_absolute(
    project, where, tmp_path_factory, analysed_run, monkeypatch
):
    (project / "runs" / "other").symlink_to(analysed_run, target_is_directory=True)
    monkeypatch.chdir(project / where)
    monkeypatch.setenv("EN_ANALYSIS_RUN", "runs/other")
    assert find_run().path.resolve() == (project / "runs" / "other").resolve()
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "run"
    elsewhere.symlink_to(analysed_run, target_is_directory=True)
    monkeypatch.setenv("EN_ANALYSIS_RUN", str(elsewhere))
    assert find_run().path == elsewhere
    assert find_run("runs/ignored").path == elsewhere  # the variable wins over the default


def test_find_run_takes_another_default(project, monkeypatch):
    monkeypatch.delenv("EN_ANALYSIS_RUN", raising=False)
    (project / "runs" / "mine").symlink_to(project / "runs" / "fashion-mnist")
    monkeypatch.chdir(project / "notebooks")
    assert find_run("runs/mine").path.name == "mine"


def test_without_a_run_find_run_says_in_one_line_what_to_run(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv("EN_ANALYSIS_RUN", raising=False)
    with pytest.raises(UserError) as e:
        find_run()
    assert str(e.value) == (
        "no run at runs/fashion-mnist: run `make reproduce` (or set EN_ANALYSIS_RUN to a run "
        "folder)"
    )
    monkeypatch.setenv("EN_ANALYSIS_RUN", str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"^no run at .*missing \(EN_ANALYSIS_RUN\): run `make"):
        find_run()


def test_a_folder_that_is_no_run_is_named(tmp_path, monkeypatch):
    (tmp_path / "runs" / "fashion-mnist").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EN_ANALYSIS_RUN", raising=False)
    with pytest.raises(UserError, match="is not a run folder"):
        find_run()


# ratios_frame


def _naive_frame(run: Run, epochs: list[int]) -> pd.DataFrame:
    rows = []
    for e in epochs:
        r = run.ratios(e)
        n, layers, k = r.ratios.shape
        for i in range(n):
            for j in range(layers):
                for m in range(k):
                    rows.append(
                        dict(
                            epoch=e,
                            sample=int(r.sample_index[i]),
                            position=i,
                            label=int(r.labels[i]),
                            category=r.categories[r.labels[i]],
                            layer_index=j,
                            layer=r.layer_names[j],
                            normalizer=r.normalizers[m],
                            ratio=float(r.ratios[i, j, m]),
                        )
                    )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("epochs", [None, [2, 0]])
def test_ratios_frame_is_every_ratio_once_with_its_names(analysed_run, epochs):
    run = Run(analysed_run)
    frame = run.ratios_frame(epochs)
    expected = _naive_frame(run, epochs or run.ratio_epochs)
    assert list(frame.columns) == list(RATIO_COLUMNS)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False, check_exact=False, rtol=1e-6)
    assert sorted(frame.epoch.unique()) == sorted(epochs or run.ratio_epochs)
    # the ratios of one layer of one image sum to 1
    sums = frame.groupby(["epoch", "position", "layer_index"]).ratio.sum()
    np.testing.assert_allclose(sums, 1, atol=1e-5)


def test_ratios_frame_extends_each_epochs_to_frame(analysed_run):
    run = Run(analysed_run)
    e = run.ratio_epochs[-1]
    theirs = run.ratios(e).to_frame()
    ours = run.ratios_frame([e])
    pd.testing.assert_frame_equal(ours.drop(columns=["position", "label"]), theirs)


def test_ratios_frame_names_the_missing_epoch(analysed_run):
    with pytest.raises(UserError, match="no ratios for epoch 99"):
        Run(analysed_run).ratios_frame([99])


# load_model


def test_load_model_round_trips_a_checkpoint(trained_run):
    path = Run(trained_run).checkpoints[1]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["model"]
    model = load_model(path)
    assert not model.training
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert all(p.device.type == "cpu" for p in model.parameters())
    # the same weights as the run's own reader, and a forward pass runs
    theirs = Run(trained_run).model(1).state_dict()
    assert all(torch.equal(loaded[k], theirs[k]) for k in theirs)
    with torch.no_grad():
        x = torch.zeros(2, checkpoint["in_channels"], 16, 16)
        assert model(x).shape == (2, len(checkpoint["classes"]))


def test_load_model_refuses_what_is_no_checkpoint(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_model(tmp_path / "x.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


# __version__


def test_version_is_the_projects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert en_analysis.__version__ == project["version"]
    assert tuple(int(x) for x in project["version"].split(".")[:2]) >= (0, 2)


def test_public_names_are_listed_and_resolve():
    for name in en_analysis.__all__:
        assert getattr(en_analysis, name) is not None
        assert name in dir(en_analysis)
    with pytest.raises(AttributeError):
        en_analysis.no_such_name  # noqa: B018


def test_run_path_does_not_need_the_working_directory_to_be_the_root(project, monkeypatch):
    monkeypatch.delenv("EN_ANALYSIS_RUN", raising=False)
    monkeypatch.chdir(project / "notebooks")
    assert en_analysis.run_path() == project / "runs" / "fashion-mnist"
    assert os.getcwd() == str(project / "notebooks")
