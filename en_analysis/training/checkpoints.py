"""Checkpoints: self-describing, written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python values (the id of the run it belongs to, the
resolved config it was trained with, class names, synsets, normalizer pool, EN layer names,
epoch, seed and that epoch's metrics), so someone
else's file can be read without running any of its code.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.io import atomic_write, read_text
from ..core.layout import RunLayout, epoch_files
from ..nn import ResNet, en_layers, en_resnet50
from ..settings.config import Config
from ..steps.changes import Changes

FORMAT = "en-analysis-checkpoint"
VERSION = 1


def build_model(config: Config, num_classes: int, in_channels: int) -> ResNet:
    """The model ``config.model`` describes, for ``num_classes`` classes of images with
    ``in_channels`` channels (freshly initialised)."""
    m = config.model
    return en_resnet50(
        num_classes,
        in_channels=in_channels,
        width=m.width,
        stem=m.stem,
        norm=m.norm,
        stem_stride=m.stem_stride,
        normalizers=m.normalizers,
        reduction=m.reduction,
        zero_init_residual=m.zero_init_residual,
        sync_bn_stats=m.sync_bn_stats,
    )


def save_checkpoint(
    path: Path,
    model: nn.Module,
    config: Config,
    epoch: int,
    classes: list[str],
    synsets: list[str],
    in_channels: int,
    optimizer: torch.optim.Optimizer | None = None,
    metrics: dict[str, float] | None = None,
    run_id: str = "",
) -> Path:
    """Write a checkpoint atomically: the model's weights, its settings, epoch, classes and
    synsets, the run's id, and optionally the optimizer's state and the epoch's
    ``metrics.csv`` row. Returns ``path``."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "run_id": run_id,
        "epoch": epoch,
        "seed": config.train.seed,
        "config": config.to_dict(),
        "classes": list(classes),
        "synsets": list(synsets),
        "in_channels": in_channels,
        "normalizers": list(config.model.normalizers) if config.model.norm == "en" else [],
        "layer_names": [name for name, _ in en_layers(model)],
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "metrics": dict(metrics or {}),
    }
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely; anything but a readable en-analysis checkpoint is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path} was refused: it holds Python objects other than tensors and plain values, "
            "and loading those could run code from the file. en-analysis never loads such a "
            "file; if it is yours, re-create it with en-analysis train"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"{path} is truncated or corrupt and cannot be read ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an en-analysis checkpoint")
    if state.get("version", 0) > VERSION:
        raise UserError(f"{path} was written by a newer en-analysis (format {state['version']})")
    return state


def model_from_checkpoint(state: dict[str, Any], path: Path | str = "checkpoint") -> ResNet:
    """Rebuild the model a checkpoint describes and load its weights; a mismatch is a UserError."""
    # only the architecture matters here: other sections may come from another version
    config = Config.from_dict({"model": state["config"].get("model", {})}, f"{path} (config)")
    model = build_model(config, len(state["classes"]), state["in_channels"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{path} does not match the model it describes: {str(e)[:300]}") from None
    return model


def run_identity(run_dir: Path) -> dict[str, Any]:
    """The run's ``run.json`` (its id, when it was made, the settings its resumes changed);
    empty for a run made before runs had identities. A damaged one is an error that says how
    to repair it: the id is also in each checkpoint."""
    layout = RunLayout(Path(run_dir))
    if not layout.identity.exists():
        return {}
    try:
        identity = json.loads(read_text(layout.identity))
    except json.JSONDecodeError:
        identity = None
    if isinstance(identity, dict) and isinstance(identity.get("id"), str) and identity["id"]:
        return identity
    carried = _carried_id(layout)
    repair = (
        f"its checkpoints carry the run's id: write {json.dumps({'id': carried})} into it "
        "(the record of its resumes is lost)"
        if carried
        else "restore it from a copy of the run"
    )
    raise UserError(f"{layout.identity} is damaged (not the run's identity): {repair}")


def _carried_id(layout: RunLayout) -> str:
    """The run id carried by the newest readable checkpoint ("" if none carries one)."""
    for path in reversed(epoch_files(layout.checkpoints, ".pt").values()):
        with contextlib.suppress(UserError):  # unreadable: the one before it
            return load_checkpoint(path).get("run_id", "")
    return ""


def check_owner(state: dict[str, Any], path: Path, run_id: str, config: Config) -> None:
    """Refuse, by name, a checkpoint that is not the run's: one carrying another run's id, or
    (for checkpoints from before run ids) one trained with another model or other data."""
    theirs = state.get("run_id", "")
    if run_id and theirs and theirs != run_id:
        raise UserError(
            f"{path} belongs to another run (run id {theirs}; this run's is {run_id}): remove it "
            "from this run's checkpoints/"
        )
    stored = Config.from_dict(state["config"], f"{path} (config)")
    change = Changes(config, stored, ("model", "data")).retraining
    if change:
        raise UserError(
            f"{path} is not this run's: the run has {change.key} = {change.old!r}, the file "
            f"{change.new!r}; remove it from this run's checkpoints/"
        )


def load_model(checkpoint: Path | str, device: str = "cpu") -> ResNet:
    """The model of a checkpoint file (``epoch-N.pt`` of a run), its weights loaded, in eval
    mode, on ``device``: ``en_analysis.load_model``. The file is read safely
    (``load_checkpoint``); ``RunFolder.model(epoch)`` also checks that it is the run's."""
    path = Path(checkpoint)
    return model_from_checkpoint(load_checkpoint(path), path).eval().to(device)
