"""Shared tiny runs: synthetic 16x16 images, width-4 EN-ResNet50, a few epochs (seconds on CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from en_analysis.settings.config import load_config

torch.set_num_threads(1)

TINY = [
    "data.dataset=synthetic",
    "data.train_samples=256",
    "data.image_size=16",
    "model.width=4",
    "model.stem_stride=1",
    "train.epochs=2",
    "train.batch_size=32",
    "train.lr=0.2",
    "train.lr_drops=[1]",
    "analysis.per_category=8",
    "analysis.perplexity=5.0",
    "analysis.permutations=99",
    "analysis.batch_size=16",
]


def ratio_model(num_classes: int = 5):
    """A width-4 EN-ResNet50 in eval mode whose ratio networks are off their uniform start and
    whose BN statistics have run on random 12 x 12 images: per-image ratios that differ."""
    from en_analysis.nn import en_layers, en_resnet50

    torch.manual_seed(0)
    model = en_resnet50(num_classes, in_channels=1, width=4, stem="small", stem_stride=1)
    with torch.no_grad():
        for _, layer in en_layers(model):
            layer.ratio_fc2.weight.normal_(0, 0.5)
    model.train()
    for _ in range(3):  # running statistics
        model(torch.randn(16, 1, 12, 12))
    return model.eval()


def snapshot(folder: Path) -> dict[Path, bytes]:
    """Every file under ``folder`` and its bytes: compare two to see that nothing changed."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def tiny_config(*overrides: str):
    return load_config(None, None, [*TINY, *overrides])


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished tiny training run (read-only: copy it before changing it)."""
    from en_analysis.training.train import train

    path = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), path, progress=False)
    return path


@pytest.fixture(scope="session")
def analysed_run(tmp_path_factory, trained_run) -> Path:
    """The tiny run with ratios extracted and embedded (read-only)."""
    from en_analysis import Run
    from en_analysis.analysis.embedding import embed
    from en_analysis.analysis.extract import extract

    path = tmp_path_factory.mktemp("analysed") / "tiny"
    shutil.copytree(trained_run, path)
    run = Run(path)
    extract(run, progress=False)
    embed(run, progress=False)
    return path


@pytest.fixture
def run_copy(tmp_path, analysed_run) -> Path:
    """A private, writable copy of the analysed tiny run."""
    path = tmp_path / "run"
    shutil.copytree(analysed_run, path)
    return path
