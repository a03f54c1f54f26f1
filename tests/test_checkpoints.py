"""Checkpoints never run code, and every unreadable one is a clear error naming the file."""

import os
import pickle

import numpy as np
import pytest
import torch

from en_analysis.core.errors import UserError
from en_analysis.training.checkpoints import load_checkpoint, model_from_checkpoint


class Payload:
    """Unpickling this creates a marker file: proof that a loader ran foreign code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "epoch-001.pt"
    torch.save({"format": "en-analysis-checkpoint", "x": Payload(marker)}, bad)
    with pytest.raises(UserError, match="refused") as refused:
        load_checkpoint(bad)
    assert not marker.exists()
    # in our words: why it was refused, and nothing that reads as advice to lower the guard
    assert "could run code" in str(refused.value) and "weights_only" not in str(refused.value)
    raw = tmp_path / "raw.pt"  # a plain pickle, not a torch zip
    raw.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_truncated_foreign_and_missing_files(tmp_path, trained_run):
    good = trained_run / "checkpoints" / "epoch-001.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match=r"cut\.pt is truncated or corrupt"):
        load_checkpoint(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not an en-analysis checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_the_model(trained_run):
    state = load_checkpoint(trained_run / "checkpoints" / "epoch-001.pt")
    state["config"]["model"]["width"] = 8
    with pytest.raises(UserError, match="does not match"):
        model_from_checkpoint(state, "x.pt")


def test_round_trip_restores_the_model(tmp_path):
    """A model saved and rebuilt from its checkpoint: the same weights and the same outputs as
    the model that was saved (not as the file it was loaded from)."""
    from en_analysis.training.checkpoints import build_model, save_checkpoint

    from conftest import tiny_config

    config = tiny_config()
    torch.manual_seed(3)
    original = build_model(config, 4, 1).eval()
    with torch.no_grad():  # away from the initialisation, so a fresh model would differ
        for p in original.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = save_checkpoint(tmp_path / "e.pt", original, config, 1, list("abcd"), [""] * 4, 1)
    rebuilt = model_from_checkpoint(load_checkpoint(path), path).eval()
    for k, v in original.state_dict().items():
        assert torch.equal(v, rebuilt.state_dict()[k]), k
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():  # bit-equality is the property: the same weights, code and machine
        torch.testing.assert_close(rebuilt(x), original(x), rtol=0, atol=0)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    from en_analysis.core.io import load_npz

    marker = tmp_path / "pwned"
    path = tmp_path / "epoch-001.npz"
    np.savez(path, ratios=np.array([Payload(marker)], dtype=object))
    with pytest.raises(UserError, match="pickled objects"):
        load_npz(path)
    assert not marker.exists()
    broken = tmp_path / "cut.npz"
    broken.write_bytes(path.read_bytes()[:20])
    with pytest.raises(UserError, match="corrupt or truncated|not a readable"):
        load_npz(broken)
