"""reproduce: every step in one call; a rerun skips training and extraction; an interrupted run
finishes with the results of an uninterrupted one. On real Fashion-MNIST (the quick preset,
shrunk further so the test takes seconds)."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from en_analysis import Run
from en_analysis.data.wordnet import DEBIAN_WORDNET
from en_analysis.pipeline.reproduce import reproduce
from en_analysis.settings.config import load_config

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist") or not DEBIAN_WORDNET.exists(),
    reason="needs Debian's dataset-fashion-mnist and wordnet-base",
)
SMALL = [
    "data.train_samples=512",
    "data.val_samples=200",
    "model.width=4",
    "train.epochs=2",
    "train.lr_drops=[1]",
    "analysis.per_category=10",
    "analysis.perplexity=10.0",
    "analysis.permutations=99",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def cmd(out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "en_analysis",
        "reproduce",
        "--preset",
        "fashion-mnist-quick",
        "--quiet",
        "--out",
        str(out),
        *[x for o in SMALL for x in ("--set", o)],
    ]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    path = tmp_path_factory.mktemp("quick") / "run"
    out = subprocess.run(cmd(path), env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return path, out.stdout


def test_reproduce_leaves_every_figure_and_table(reproduced):
    path, stdout = reproduced
    for name in (
        "tsne_grid.png",
        "tsne_grid.pdf",
        "tsne_animation.gif",
        "clustering_dynamics.png",
        "wordnet.png",
        "ratio_heatmaps.png",
        "ratios_over_epochs.png",
    ):
        assert (path / "figures" / name).stat().st_size > 1000, name
    for name in ("clustering.csv", "wordnet.csv", "category_stats.csv"):
        assert not pd.read_csv(path / "analysis" / name).empty
    assert "silhouette 159-D" in stdout and "WordNet Mantel r" in stdout
    assert "tsne_grid.png" in stdout


STEPS = (
    "train",
    "extract",
    "embed",
    "metrics",
    "wordnet",
    "decode",
    "stability",
    "ablate",
    "verdict",
    "export",
    "plot",
    "explore",
)


def test_second_reproduce_does_nothing(reproduced):
    path, _ = reproduced
    before = {
        p: p.stat().st_mtime
        for p in [*(path / "checkpoints").iterdir(), *(path / "ratios").iterdir()]
    }
    summary = reproduce(load_config("fashion-mnist-quick", None, SMALL), path, progress=False)
    assert set(summary.steps) == {*STEPS} and set(summary.steps.values()) == {"up to date"}
    assert {p: p.stat().st_mtime for p in before} == before


@pytest.mark.parametrize("stage", ["training", "extraction"])
def test_interrupted_reproduce_finishes_like_an_uninterrupted_one(stage, reproduced, tmp_path):
    path, _ = reproduced
    run = tmp_path / "run"
    marker = {
        "training": run / "checkpoints" / "epoch-001.pt",
        "extraction": run / "ratios" / "epoch-001.npz",
    }[stage]
    proc = subprocess.Popen(cmd(run), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not marker.exists():
        assert proc.poll() is None, "finished before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    subprocess.run(cmd(run), env=ENV, check=True, capture_output=True)
    ours, theirs = Run(run), Run(path)
    assert ours.ratio_epochs == theirs.ratio_epochs == [0, 1, 2]
    for e in theirs.ratio_epochs:  # bit-equal: the same code, inputs and machine
        np.testing.assert_array_equal(ours.ratios(e).ratios, theirs.ratios(e).ratios)
    pd.testing.assert_frame_equal(ours.clustering(), theirs.clustering())
    shutil.rmtree(run)


def test_reproduce_refuses_new_model_data_and_training_settings(tmp_path):
    """On a finished run, a model or data setting that differs is refused in one line, and so
    is a schedule setting that no further epoch would use; nothing is changed. (Analysis
    settings: tests/test_analyses.py.)"""
    from en_analysis.core.errors import UserError

    from conftest import snapshot, tiny_config

    run = tmp_path / "run"
    reproduce(tiny_config("analysis.bootstrap=20"), run, progress=False)
    before = snapshot(run)
    with pytest.raises(UserError, match=r"the trained run .* has model.width = 4 \(asked 8\)"):
        reproduce(tiny_config("model.width=8"), run, progress=False)
    with pytest.raises(UserError, match=r"with train.lr = 0.2; 0.05 would apply only to more"):
        reproduce(tiny_config("train.lr=0.05"), run, progress=False)
    assert snapshot(run) == before
