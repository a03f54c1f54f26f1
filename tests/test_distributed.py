"""torchrun (gloo, CPU, 2 processes): training writes each checkpoint once and resumes; extraction
with 2 processes gives the ratios of 1 process, every sample exactly once, in order."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from en_analysis import Run, cli
from en_analysis.analysis.extract import extract
from en_analysis.core.errors import UserError
from en_analysis.training.checkpoints import load_checkpoint

from conftest import TINY

TORCHRUN = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--nproc_per_node=2",
    "--standalone",
    "-m",
    "en_analysis",
]


def torchrun(step: str, *args: str) -> subprocess.CompletedProcess:
    """``step`` of the CLI under torchrun, on the tiny config (later ``--set`` in args win)."""
    sets = [x for o in TINY for x in ("--set", o)] if step == "train" else []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [*TORCHRUN, step, *sets, *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "run"
    out = torchrun("train", "--quiet", "--out", str(path), "--set", "train.epochs=1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("run: ") == 1  # only rank 0 reports
    return path


def test_torchrun_trains_writes_once_and_resumes(ddp_run, tmp_path):
    assert Run(ddp_run).epochs == [0, 1]
    assert not list((ddp_run / "checkpoints").glob(".*tmp"))
    first = load_checkpoint(ddp_run / "checkpoints" / "epoch-001.pt")
    out = torchrun("train", "--quiet", "--out", str(ddp_run), "--resume")
    assert out.returncode == 0, out.stderr[-2000:]
    assert Run(ddp_run).epochs == [0, 1, 2]
    again = load_checkpoint(ddp_run / "checkpoints" / "epoch-001.pt")
    # bit-equal: a resume leaves earlier checkpoints as they were
    assert all(torch.equal(first["model"][k], again["model"][k]) for k in first["model"])
    # the checkpoints load in a single-process extract
    done = extract(Run(ddp_run), progress=False)
    assert done.written_epochs == [0, 1, 2] and not done.failed


def test_two_process_extraction_equals_one(ddp_run, tmp_path):
    two = tmp_path / "two"
    shutil.copytree(ddp_run, two)
    shutil.rmtree(two / "ratios", ignore_errors=True)
    out = torchrun("extract", str(two), "--quiet", "--set", "analysis.per_category=7")
    assert out.returncode == 0, out.stderr[-2000:]
    one = tmp_path / "one"
    shutil.copytree(ddp_run, one)
    shutil.rmtree(one / "ratios", ignore_errors=True)
    run = Run(one)
    run.config.analysis.per_category = 7  # 28 samples: an odd share per process
    extract(run, progress=False)
    for epoch in Run(one).ratio_epochs:
        a, b = Run(two).ratios(epoch), Run(one).ratios(epoch)
        np.testing.assert_array_equal(a.sample_index, b.sample_index)
        assert len(np.unique(a.sample_index)) == len(a.sample_index) == 28
        # other batches in each process: float32 convolutions round differently (see
        # test_ratios' batch-size test), so float32's default tolerances
        torch.testing.assert_close(torch.from_numpy(a.ratios), torch.from_numpy(b.ratios))
        np.testing.assert_array_equal(a.predictions, b.predictions)


@pytest.mark.parametrize("fails", [False, True])
def test_the_cli_leaves_the_process_group_it_joined(fails, monkeypatch, tmp_path):
    # a step joins a group (as train and extract do under torchrun), then ends or fails: left
    # to the interpreter's exit, Gloo's threads could abort the process (SIGABRT)
    def step(args):
        store = f"file://{tmp_path / 'store'}"
        dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
        if fails:
            raise UserError("failed after joining")

    monkeypatch.setattr(cli, "cmd_presets", step)
    assert cli.main(["presets"]) == (2 if fails else 0)
    assert not dist.is_initialized()
