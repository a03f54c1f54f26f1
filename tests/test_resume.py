"""A run's identity and its resumes: schedule changes take effect from the resumed epoch and are
recorded; model and data changes are refused; checkpoints of other runs are refused by name."""

import json
import shutil

import pandas as pd
import pytest
import torch

from en_analysis import Run
from en_analysis.analysis.extract import extract
from en_analysis.cli import main
from en_analysis.core.errors import UserError
from en_analysis.pipeline.reproduce import reproduce
from en_analysis.training.checkpoints import load_checkpoint
from en_analysis.training.train import train

from conftest import TINY, snapshot, tiny_config


def sets(*extra: str) -> list[str]:
    return [x for o in (*TINY, *extra) for x in ("--set", o)]


@pytest.fixture
def run(tmp_path, trained_run):
    path = tmp_path / "run"
    shutil.copytree(trained_run, path)
    return path


def test_a_new_run_has_an_identity_its_checkpoints_carry(trained_run):
    identity = json.loads((trained_run / "run.json").read_text())
    assert len(identity["id"]) == 32 and "changes" not in identity
    for path in Run(trained_run).checkpoints.values():
        assert load_checkpoint(path)["run_id"] == identity["id"]


def test_a_resume_with_a_new_schedule_uses_it_and_records_it(run, capsys):
    """Before: `train --resume --set train.lr=0.05` trained on with the stored lr, exit 0."""
    argv = ["train", "--resume", "--quiet", "--out", str(run)]
    assert main([*argv, "--set", "train.epochs=3", "--set", "train.lr=0.05"]) == 0
    lr = pd.read_csv(run / "metrics.csv").set_index("epoch").lr
    assert lr[2] == pytest.approx(0.02) and lr[3] == pytest.approx(0.005)  # 0.05 x 0.1 (drop)
    assert load_checkpoint(run / "checkpoints" / "epoch-003.pt")["config"]["train"]["lr"] == 0.05
    assert load_checkpoint(run / "checkpoints" / "epoch-002.pt")["config"]["train"]["lr"] == 0.2
    changes = json.loads((run / "run.json").read_text())["changes"]
    assert changes == [
        {"from_epoch": 3, "settings": {"train.epochs": [2, 3], "train.lr": [0.2, 0.05]}}
    ]
    # a later resume that names no lr keeps the run's own (not the preset's 0.02)
    assert main([*argv, "--set", "train.epochs=4"]) == 0
    assert pd.read_csv(run / "metrics.csv").lr.iloc[-1] == pytest.approx(0.005)
    assert Run(run).config.train.lr == 0.05


def test_a_resume_after_a_nan_loss_with_a_lower_lr_trains(tmp_path):
    """Before: lowering train.lr and resuming, as the error says, hit the same NaN (lr 1e9)."""
    path = tmp_path / "nan"
    with pytest.raises(UserError, match="Lower train.lr"):
        train(tiny_config("train.lr=1e30", "train.lr_drops=[]"), path, progress=False)
    argv = ["train", "--resume", "--quiet", "--out", str(path), "--set", "train.lr=0.1"]
    assert main(argv) == 0
    assert Run(path).epochs == [0, 1, 2]
    assert pd.read_csv(path / "metrics.csv").train_loss.iloc[1:].notna().all()


def test_device_and_loading_settings_are_no_schedule_change(run):
    """Where a run computes may change on any resume or rerun: nothing recorded, nothing
    refused (reproduce on the finished run, a resume with other workers)."""
    from en_analysis.steps.changes import Changes

    asked = tiny_config("data.num_workers=1", "train.threads=1", "data.root=/elsewhere")
    assert Changes(tiny_config(), asked).schedule == {}
    reproduce(tiny_config("data.num_workers=1", "analysis.bootstrap=20"), run, progress=False)
    train(tiny_config("train.epochs=3", "data.num_workers=1"), run, resume=True, progress=False)
    changes = json.loads((run / "run.json").read_text())["changes"]
    assert changes == [{"from_epoch": 3, "settings": {"train.epochs": [2, 3]}}]


def test_a_resume_applies_new_optimizer_settings(run):
    config = tiny_config("train.epochs=3", "train.momentum=0.5", "train.weight_decay=0.001")
    train(config, run, resume=True, progress=False)
    groups = load_checkpoint(run / "checkpoints" / "epoch-003.pt")["optimizer"]["param_groups"]
    assert [g["momentum"] for g in groups] == [0.5, 0.5]
    assert groups[0]["weight_decay"] == 0.001 and groups[1]["weight_decay"] == 0.0  # ratio group


@pytest.mark.parametrize(
    "setting", ["model.width=8", "data.train_samples=128", "train.seed=3", "train.batch_size=16"]
)
def test_a_resume_refuses_model_and_data_changes(run, setting, capsys):
    before = snapshot(run)
    argv = ["train", "--resume", "--quiet", "--out", str(run), *sets(setting)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    key = setting.split("=")[0]
    assert len(err.strip().splitlines()) == 1 and f"has {key} = " in err
    assert snapshot(run) == before


def test_reproduce_refuses_a_schedule_change_a_trained_run_would_ignore(run):
    before = snapshot(run)
    with pytest.raises(UserError, match=r"trained to its last epoch \(2\) with train.lr = 0.2"):
        reproduce(tiny_config("train.lr=0.05"), run, progress=False)
    assert snapshot(run) == before


def test_a_checkpoint_of_another_run_is_refused_by_name(run, tmp_path):
    """Before: another run's checkpoint copied into checkpoints/ was extracted as this run's
    (another width: 128-D features beside 256-D), and --resume on it ended in a traceback."""
    twin = tmp_path / "twin"
    train(tiny_config("train.epochs=1"), twin, progress=False)  # same settings, other run
    wide = tmp_path / "wide"
    train(tiny_config("train.epochs=1", "model.width=8"), wide, progress=False)
    shutil.copy(twin / "checkpoints" / "epoch-001.pt", run / "checkpoints" / "epoch-003.pt")
    state = torch.load(wide / "checkpoints" / "epoch-001.pt", weights_only=True)
    del state["run_id"]  # as from before run ids: told apart by its settings
    torch.save(state, run / "checkpoints" / "epoch-004.pt")
    done = extract(Run(run), progress=False)
    assert done.written_epochs == [0, 1, 2]
    assert "belongs to another run" in done.failed[str(run / "checkpoints" / "epoch-003.pt")]
    assert "model.width = 4, the file 8" in done.failed[str(run / "checkpoints" / "epoch-004.pt")]
    with pytest.raises(UserError, match="epoch-004.pt is not this run's"):
        train(tiny_config("train.epochs=5"), run, resume=True, progress=False)
    (run / "checkpoints" / "epoch-004.pt").unlink()
    with pytest.raises(UserError, match="epoch-003.pt belongs to another run"):
        train(tiny_config("train.epochs=5"), run, resume=True, progress=False)


def test_checkpoints_from_before_run_ids_still_load(run):
    """A run made before identities (no run.json, no run_id) is still extracted."""
    (run / "run.json").unlink()
    path = run / "checkpoints" / "epoch-001.pt"
    state = torch.load(path, weights_only=True)
    del state["run_id"]
    torch.save(state, path)
    assert Run(run).checkpoint(1)["epoch"] == 1


def test_a_resume_that_adds_no_epoch_refuses_a_schedule_change(run, capsys):
    """Before: `train --resume --set "train.lr_drops=[]"` on a finished run exited 0 and
    rewrote config.toml, whose lr_drops the verdict then took for the schedule the epochs had
    (reproduce refused the same change)."""
    before = snapshot(run)
    argv = ["train", "--resume", "--quiet", "--out", str(run)]
    assert main([*argv, "--set", "train.lr_drops=[]"]) == 2
    err = capsys.readouterr().err
    assert "is trained to its last epoch (2) with train.lr_drops = [1]; [] would apply" in err
    assert snapshot(run) == before


@pytest.mark.parametrize("drops", ["[]", "[2]", "[1, 2]"])
def test_a_resume_never_rewrites_the_schedule_of_trained_epochs(run, drops, capsys):
    """Dropping, moving or adding a drop among the trained epochs would make config.toml
    (which the analyses read) disagree with metrics.csv; drops from the last epoch on may
    change."""
    before = snapshot(run)
    argv = ["train", "--resume", "--quiet", "--out", str(run), "--set", "train.epochs=3"]
    code = main([*argv, "--set", f"train.lr_drops={drops}"])
    if drops == "[1, 2]":  # a new drop after epoch 2, the last trained: the future
        assert code == 0 and Run(run).config.train.lr_drops == [1, 2]
        assert pd.read_csv(run / "metrics.csv").lr.tolist()[1:] == pytest.approx([0.2, 0.02, 0.002])
        return
    assert code == 2
    err = capsys.readouterr().err
    assert f"epochs [1]; train.lr_drops = {drops} would change them" in err
    assert "may add, move or remove only drops after epoch 2 or later" in err
    assert snapshot(run) == before


def test_a_resume_without_run_json_keeps_the_runs_id(run):
    """A run.json lost (not damaged): the resume takes the id its checkpoints carry, so every
    checkpoint stays the run's (before: a new id, and extract refused the earlier ones)."""
    ours = json.loads((run / "run.json").read_text())["id"]
    (run / "run.json").unlink()
    train(tiny_config("train.epochs=3"), run, resume=True, progress=False)
    assert json.loads((run / "run.json").read_text())["id"] == ours
    assert load_checkpoint(run / "checkpoints" / "epoch-003.pt")["run_id"] == ours
    assert extract(Run(run), progress=False).failed == {}
