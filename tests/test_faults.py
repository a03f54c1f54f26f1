"""Kill at any moment: no half-written file under a final name, and a rerun finishes with the
results of an uninterrupted run. Two writers of one run folder: the second is refused."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from en_analysis import Run
from en_analysis.core.errors import UserError
from en_analysis.core.io import atomic_write, run_lock

from conftest import TINY

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "en_analysis", *args]


def train_args(out: Path, *extra: str) -> list[str]:
    return cli(
        "train", "--quiet", "--out", str(out), *[x for o in TINY for x in ("--set", o)], *extra
    )


def kill_when(cmd: list[str], ready, timeout: float = 120) -> None:
    """Start cmd and SIGKILL it as soon as ready() is true (or fail if it ends first)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.time()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished before it could be killed: {proc.stderr.read()[-500:]}")
        if time.time() - start > timeout:
            proc.kill()
            pytest.fail("never reached the point to kill at")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def no_partial_files(folder: Path) -> None:
    """Every file under its final name is complete: temporary files are hidden dot-files."""
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            if p.suffix == ".pt":
                torch.load(p, weights_only=True)
            elif p.suffix == ".npz":
                np.load(p, allow_pickle=False)


def _weights(run: Path, epoch: int) -> dict:
    return torch.load(run / "checkpoints" / f"epoch-{epoch:03d}.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run made the same way as the killed ones (a subprocess, one thread)."""
    path = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(train_args(path), env=ENV, check=True, capture_output=True)
    subprocess.run(cli("extract", str(path), "--quiet"), env=ENV, check=True, capture_output=True)
    subprocess.run(cli("embed", str(path), "--quiet"), env=ENV, check=True, capture_output=True)
    return path


def test_kill_mid_epoch_then_resume_is_bit_identical(tmp_path, reference):
    run = tmp_path / "run"
    kill_when(train_args(run), lambda: (run / "checkpoints" / "epoch-001.pt").exists())
    no_partial_files(run)
    subprocess.run(train_args(run, "--resume"), env=ENV, check=True, capture_output=True)
    for epoch in (0, 1, 2):  # bit-equal: the same operations on one machine, one thread
        a, b = _weights(run, epoch), _weights(reference, epoch)
        assert all(torch.equal(a[k], b[k]) for k in a), epoch


def test_kill_during_extraction_and_embedding_then_rerun(tmp_path, reference):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(reference), str(run)], check=True)
    for folder in ("ratios", "embeddings"):
        subprocess.run(["rm", "-rf", str(run / folder)], check=True)
    kill_when(
        cli("extract", str(run), "--quiet"), lambda: (run / "ratios" / "epoch-000.npz").exists()
    )
    no_partial_files(run)
    subprocess.run(cli("extract", str(run), "--quiet"), env=ENV, check=True, capture_output=True)
    kill_when(
        cli("embed", str(run), "--quiet"), lambda: (run / "embeddings" / "epoch-001.npz").exists()
    )
    no_partial_files(run)
    subprocess.run(cli("embed", str(run), "--quiet"), env=ENV, check=True, capture_output=True)
    ours, theirs = Run(run), Run(reference)
    for epoch in theirs.ratio_epochs:  # bit-equal: the same extraction on one machine
        np.testing.assert_array_equal(ours.ratios(epoch).ratios, theirs.ratios(epoch).ratios)
        np.testing.assert_allclose(
            ours.embedding(epoch).embedding, theirs.embedding(epoch).embedding, atol=1e-5
        )


def test_killed_atomic_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from en_analysis.core.io import atomic_write\n"
        "def write(f):\n"
        "    f.write(b'new' * 1000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        f"atomic_write(Path({str(target)!r}), write)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=ENV)
    assert proc.stdout.readline().strip() == b"writing"
    proc.kill()
    proc.wait()
    assert target.read_bytes() == b"old"
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.bin", broken)
    assert list(tmp_path.iterdir()) == []


@contextmanager
def locked_by_another_process(folder):
    """A second process holding ``folder``'s run lock while the block runs; yields its pid."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom en_analysis.core.io import run_lock\n"
            f"with run_lock({str(folder)!r}):\n    print('locked', flush=True); time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        env=ENV,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    with (
        locked_by_another_process(tmp_path) as pid,
        pytest.raises(UserError, match=f"in use by process {pid}"),
        run_lock(tmp_path),
    ):
        pass
    with run_lock(tmp_path):  # the dead holder's lock is stale: taken over
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("step", ["extract", "embed", "metrics", "wordnet", "export", "plot"])
def test_analysis_steps_take_the_run_lock(step, run_copy, capsys):
    """Before, only train took the lock: an analysis step could write while training ran."""
    from en_analysis.cli import main

    with locked_by_another_process(run_copy) as pid:
        assert main([step, str(run_copy), "--force"]) == 2
        assert f"in use by process {pid}" in capsys.readouterr().err


def test_atomic_writes_get_an_ordinary_files_mode(tmp_path):
    """mkstemp makes 0600 files: the tables and figures a run writes must stay readable by the
    others who may read an ordinary file (the umask decides, as for open())."""
    ordinary = tmp_path / "ordinary"
    ordinary.write_bytes(b"x")
    written = atomic_write(tmp_path / "written", lambda f: f.write(b"x"))
    assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(ordinary.stat().st_mode)


def test_a_live_process_named_in_a_lock_file_does_not_hold_the_lock(tmp_path):
    """Before: a lock file naming any live process (PID 1, a `sleep`, a reused PID) blocked
    the run for good ("in use by process N; wait for it"). The lock is the holder's flock, which
    ends with its process; the PID in the file is only for the message."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (1, sleeper.pid):
            (tmp_path / ".lock").write_text(str(pid))
            with run_lock(tmp_path):
                assert (tmp_path / ".lock").read_text() == str(os.getpid())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_kill_between_a_checkpoint_and_its_metrics_row(tmp_path, trained_run):
    """Writing an epoch's checkpoint and then its metrics.csv row, a kill between the two left
    the row lost for good (before: never rewritten on --resume, and for the last epoch
    reproduce reported the previous epoch's accuracy as the test accuracy). The checkpoint
    holds the row: it is taken from there."""
    import pandas as pd

    from en_analysis.cli import main
    from en_analysis.training.checkpoints import load_checkpoint
    from en_analysis.training.train import final_metrics

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    whole = pd.read_csv(run / "metrics.csv")
    for lost in (1, 2):  # a middle epoch's row (lost by a resume of the old code), the last's
        whole.drop(index=lost).to_csv(run / "metrics.csv", index=False)
        last = load_checkpoint(run / "checkpoints" / "epoch-002.pt")["metrics"]
        assert final_metrics(run)["val_acc"] == last["val_acc"]
        assert main(["train", "--resume", "--quiet", "--out", str(run)]) == 0  # nothing to add
        pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv"), whole)
    whole.drop(index=2).to_csv(run / "metrics.csv", index=False)
    argv = ["train", "--resume", "--quiet", "--out", str(run), "--set", "train.epochs=3"]
    assert main(argv) == 0
    assert pd.read_csv(run / "metrics.csv").epoch.tolist() == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv").iloc[:3], whole)
