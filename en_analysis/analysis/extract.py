"""The ``extract`` step: each checkpoint's ratios over the evaluation subset.

``extract`` runs the evaluation subset (the same images for every epoch) through each checkpoint
in eval mode and writes the analysis's ``ratios/epoch-XXX.npz``: ratios (N, L, K), what every
layer's head read (``nn.recording.HeadInputs``: the controls are computed from them), labels, sample
indices, layer and normalizer names, category names and synsets, the penultimate features,
predictions - and ``ratios/pixels.npz``, the images' raw pixels, the input baseline. Under
torchrun each process takes every world-th image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..core.errors import UserError
from ..core.io import save_npz
from ..data import Datasets, build_datasets, evaluation_subset, heldout_fingerprint
from ..nn.recording import forward_subset
from ..run.folder import RunFolder
from ..settings.choices import check_device
from ..settings.config import Config
from ..steps.results import StepResult, timed
from ..training.checkpoints import model_from_checkpoint, run_identity
from ..training.distributed import gather_shards, setup_process

PIXEL_SIDE = 32  # raw-pixel baseline: images are average-pooled to at most 32 x 32


FORMAT = 3  # 3: ratio files hold the head inputs in float16 (the controls are computed from them)


def settings(run: RunFolder) -> dict:
    """What a ratio file depends on besides its checkpoint: the settings extract reads (the
    data and the evaluation subset), the held-out images ``data.root`` points at (not where it
    points) and what the file holds (``FORMAT``)."""
    images = heldout_fingerprint(run.config.data)
    return {**run.step_settings("extract"), "images": images, "format": FORMAT}


def _mapping(config: Config) -> list[Path]:
    """The categories file, when there is one: its content is an input of every ratio file."""
    return [Path(config.data.categories_file)] if config.data.categories_file else []


def select_epochs(available: list[int], wanted: list[int] | None, what: str) -> list[int]:
    """The wanted epochs (all if None/empty), each of which must be available."""
    if not wanted:
        return available
    missing = [e for e in wanted if e not in available]
    if missing:
        raise UserError(
            f"epoch(s) {', '.join(map(str, missing))} have no {what}; available: "
            f"{', '.join(map(str, available)) or 'none'}"
        )
    return list(wanted)


def evaluation_images(config: Config, data: Datasets | None = None) -> tuple[Datasets, np.ndarray]:
    """The run's datasets and the evaluation subset (held-out indices, category-grouped)."""
    data = data or build_datasets(config.data)
    a = config.analysis
    idx = evaluation_subset(
        data.heldout_labels, data.classes, a.categories, a.per_category, a.subset_seed
    )
    return data, idx


def save_pixels(path: Path, data: Datasets, idx: np.ndarray) -> Path:
    """The evaluation images' raw pixels (pooled to <= 32 x 32), the input baseline for metrics."""
    images = torch.stack([data.heldout[int(i)][0] for i in idx])
    if images.shape[-1] > PIXEL_SIDE:
        images = F.adaptive_avg_pool2d(images, PIXEL_SIDE)
    return save_npz(
        path,
        pixels=images.flatten(1).numpy().astype(np.float32),
        labels=data.heldout_labels[idx],
        sample_index=idx,
    )


@timed
def extract(
    run: RunFolder,
    epochs: list[int] | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> StepResult:
    """The ``extract`` step: write the ratio file of each chosen checkpoint of ``run`` that is
    not up to date (and the pixels' file).

    A checkpoint that cannot be read, does not fit, or belongs to another run is recorded in
    ``failed`` and the others are still extracted.
    """
    run_identity(run.path)  # a damaged run.json: one error, not one per checkpoint
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    check_device("--device", device)
    config = run.config
    checkpoints = run.checkpoints
    if not checkpoints:
        raise UserError(f"{run.path} has no checkpoints (run `en-analysis train` first)")
    chosen = select_epochs(list(checkpoints), epochs or config.analysis.epochs, "checkpoint")
    shared = settings(run)
    inputs = {epoch: [checkpoints[epoch], *_mapping(config)] for epoch in chosen}
    result = StepResult("extract")
    todo = []
    for epoch in chosen:
        output = run.files.ratio_file(epoch)
        if not force and run.provenance.current(output, inputs[epoch], shared):
            result.up_to_date.append(output)
        else:
            todo.append(epoch)
    pixels = run.files.pixels
    pixels_stale = force or not run.provenance.current(pixels, _mapping(config), shared)
    if not pixels_stale:
        result.up_to_date.append(pixels)
    if not todo and not pixels_stale:
        return result
    proc = setup_process(device)
    data, idx = evaluation_images(config)
    if proc.main and pixels_stale:
        save_pixels(pixels, data, idx)
        run.provenance.record([pixels], _mapping(config), shared)
        result.written.append(pixels)
    # under torchrun each process takes every world-th sample: no padding, no duplicates
    loader = DataLoader(
        Subset(data.heldout, idx[proc.rank :: proc.world].tolist()),
        batch_size or config.analysis.batch_size,
        shuffle=False,
    )
    bar = tqdm(todo, desc="extract", unit="epoch", disable=not (progress and proc.main))
    for epoch in bar:
        path = checkpoints[epoch]
        try:
            state = run.checkpoint(epoch)
            if state["in_channels"] != data.in_channels:
                raise UserError(
                    f"{path} expects {state['in_channels']}-channel images but the data has "
                    f"{data.in_channels} (grayscale vs RGB?)"
                )
            if list(state["classes"]) != data.classes:
                raise UserError(f"{path} was trained on other classes than {config.data.dataset}")
            model = model_from_checkpoint(state, path)
            out = forward_subset(model, loader, proc.device)
        except UserError as e:
            result.failed[str(path)] = str(e)
            continue
        if proc.world > 1:
            out = gather_shards(out, proc.world)
        if not proc.main:
            continue
        output = save_npz(
            run.files.ratio_file(epoch),
            **out,
            labels=data.heldout_labels[idx],
            sample_index=idx,
            categories=np.array(data.classes),
            synsets=np.array(data.synsets),
            epoch=epoch,
        )
        run.provenance.record([output], inputs[epoch], shared)
        result.written.append(output)
    return result
