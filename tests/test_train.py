"""Training: checkpoints per epoch (0 = initial weights), exact resume, determinism, clear stops."""

import shutil

import pandas as pd
import pytest
import torch

from en_analysis import Run
from en_analysis.core.errors import UserError
from en_analysis.training.checkpoints import load_checkpoint
from en_analysis.training.train import lr_at, make_optimizer, train

from conftest import tiny_config


def _weights(run, epoch):
    return load_checkpoint(run / "checkpoints" / f"epoch-{epoch:03d}.pt")["model"]


def _equal(a, b):
    """Bit-equal weights: the property of a resume, which replays the same operations on the
    same machine (it holds on any one CPU, not across CPUs)."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_layout(trained_run):
    assert Run(trained_run).epochs == [0, 1, 2]
    metrics = pd.read_csv(trained_run / "metrics.csv")
    assert list(metrics.columns) == [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "seconds",
    ]
    assert metrics.epoch.tolist() == [0, 1, 2]
    assert metrics.lr.tolist() == pytest.approx([0.0, 0.2, 0.02])  # x0.1 after epoch 1
    state = torch.load(trained_run / "checkpoints" / "epoch-002.pt", weights_only=True)
    assert state["epoch"] == 2 and state["classes"] == ["dog", "cat", "car", "tree"]
    assert state["normalizers"] == ["in", "ln", "bn"] and len(state["layer_names"]) == 53
    assert state["config"]["model"]["width"] == 4 and state["seed"] == 0
    assert (trained_run / "config.toml").exists()


def test_training_learns_the_synthetic_task(trained_run):
    metrics = pd.read_csv(trained_run / "metrics.csv")
    assert metrics.val_acc.iloc[-1] > 0.5  # 4 classes: chance is 0.25


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tmp_path, trained_run):
    again = tmp_path / "again"
    train(tiny_config(), again, progress=False)
    assert _equal(_weights(again, 2), _weights(trained_run, 2))
    assert _equal(_weights(again, 0), _weights(trained_run, 0))

    partial = tmp_path / "partial"
    train(tiny_config("train.epochs=1"), partial, progress=False)
    assert Run(partial).epochs == [0, 1]
    train(tiny_config(), partial, resume=True, progress=False)
    assert _equal(_weights(partial, 2), _weights(trained_run, 2))
    assert pd.read_csv(partial / "metrics.csv").epoch.tolist() == [0, 1, 2]


def test_resume_after_a_lost_checkpoint_redoes_the_epoch(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / "epoch-002.pt").unlink()  # as if killed during epoch 2
    train(tiny_config(), run, resume=True, progress=False)
    assert _equal(_weights(run, 2), _weights(trained_run, 2))


def test_existing_run_is_not_overwritten(tmp_path, trained_run):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "checkpoints" / "epoch-001.pt").read_bytes()
    with pytest.raises(UserError, match="--resume"):
        train(tiny_config(), run, progress=False)
    assert (run / "checkpoints" / "epoch-001.pt").read_bytes() == before


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    with pytest.raises(UserError, match=r"epoch 1, step \d+"):
        train(tiny_config("train.lr=1e30", "train.lr_drops=[]"), tmp_path / "nan", progress=False)
    assert Run(tmp_path / "nan").epochs == [0]  # the initial weights are kept


def test_lr_schedule_and_ratio_parameter_group():
    cfg = tiny_config("train.lr=0.1", "train.lr_drops=[30, 60, 90]", "train.epochs=100").train
    assert [lr_at(cfg, e) for e in (1, 30, 31, 61, 91, 100)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001, 0.0001, 0.0001]
    )
    cfg.warmup_epochs = 2
    assert lr_at(cfg, 1, 0.5) == pytest.approx(0.1 * 0.25)
    from en_analysis.nn import en_resnet50

    opt = make_optimizer(en_resnet50(4, 1, 4, "small"), cfg)
    main, ratio = opt.param_groups
    assert ratio["lr_mult"] == cfg.ratio_lr_mult and ratio["weight_decay"] == 0.0
    assert main["weight_decay"] == cfg.weight_decay
    assert len(ratio["params"]) == 53 * 5  # fc1 weight/bias, fc2 weight/bias, ratio bias
