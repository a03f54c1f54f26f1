"""Does the network use its per-sample ratios? The ``ablate`` step evaluates every checkpoint
on the evaluation images with each EN layer's ratios

- ``computed``: as the layer computes them (the normal evaluation, unchanged: the predictions
  extraction recorded in its eval-mode forward pass of the same images);
- ``dataset-mean``: the layer's mean ratios over the evaluation images, the same for every
  image (a static mixture, as Switchable Normalization learns);
- ``shuffled``: another image's ratios (a seeded permutation within each batch), every layer's
  as the normal forward pass computed them for that image;
- ``category-mean``: the layer's mean ratios over the images of the image's category.

The drop from ``computed`` to ``dataset-mean`` (or ``shuffled``) is what per-sample mixing is
worth (``difference``: a condition's accuracy minus the computed ratios'); ``category-mean``
against ``dataset-mean`` is what the category information in the ratios is worth. Every
replacement comes from the epoch's ratio file (the same images, recorded in the normal forward
pass). Each accuracy and each difference has a 95% interval from resampling the images within
categories, the same resamples for every condition (a mean of per-image outcomes of a fixed
model: the plain bootstrap, calibrated on simulated data in ``simulate.accuracy_difference``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..core.errors import UserError
from ..core.io import save_npz, write_csv
from ..nn.resnet import en_layers
from ..run.folder import Ratios, RunFolder
from ..steps.results import StepResult, timed
from . import bootstrap
from .extract import evaluation_images

CONDITIONS = ("computed", "dataset-mean", "shuffled", "category-mean")
COLUMNS = [
    "epoch",
    "condition",
    "accuracy",
    "ci_low",
    "ci_high",
    "difference",
    "difference_ci_low",
    "difference_ci_high",
    "n",
]


@contextmanager
def fixed_ratios(model: torch.nn.Module, ratios: list[torch.Tensor]) -> Iterator[None]:
    """Inside the block every EN layer j uses ``ratios[j]``: (K,) for every image, or (N, K)
    per image of the batch; the learned ratios again on exit."""
    layers = [layer for _, layer in en_layers(model)]
    try:
        for layer, r in zip(layers, ratios, strict=True):
            layer.fix_ratios(r)
        yield
    finally:
        for layer in layers:
            layer.fix_ratios(None)


def replacement(
    condition: str, ratios: np.ndarray, labels: np.ndarray, rows: np.ndarray, perm: np.ndarray
) -> list[torch.Tensor] | None:
    """Per layer, the ratios ``condition`` gives the images ``rows`` of the evaluation set
    (``ratios`` (N, L, K) and ``labels`` as recorded; ``perm`` a permutation of the batch);
    None for the computed ratios."""
    if condition not in CONDITIONS:
        raise UserError(f"condition {condition!r} is not one of {', '.join(CONDITIONS)}")
    if condition == "computed":
        return None
    if condition == "dataset-mean":
        return [torch.from_numpy(r) for r in ratios.mean(0)]  # (K,) a layer: the kernel runs
    if condition == "shuffled":
        used = ratios[rows[perm]]  # (n, L, K)
    else:  # category-mean
        means = {c: ratios[labels == c].mean(0) for c in np.unique(labels[rows])}
        used = np.stack([means[c] for c in labels[rows]])
    return [torch.from_numpy(np.ascontiguousarray(used[:, j])) for j in range(used.shape[1])]


def outcomes(model: torch.nn.Module, loader: DataLoader, r: Ratios, seed: int) -> np.ndarray:
    """(conditions, N) whether each image of ``loader`` (the evaluation images in the order of
    ``r``, the epoch's ratio file) is classified right under each condition (``CONDITIONS``).
    ``computed`` is the prediction extraction recorded in the normal forward pass; the others
    run each batch of images through ``model`` once per condition, with the replaced ratios."""
    model.eval()
    rng = np.random.default_rng(seed)
    replaced, start = [], 0
    with torch.no_grad():
        for x, y in loader:
            rows = np.arange(start, start + len(y))
            start += len(y)
            perm = rng.permutation(len(y))
            per_batch = []
            for condition in CONDITIONS[1:]:
                with fixed_ratios(model, replacement(condition, r.ratios, r.labels, rows, perm)):
                    per_batch.append(model(x).argmax(1) == y)
            replaced.append(torch.stack(per_batch))
    return np.concatenate([(r.predictions == r.labels)[None], torch.cat(replaced, 1).numpy()])


def ablation_table(
    run: RunFolder, epochs: list[int] | None = None, progress: bool = False
) -> tuple[pd.DataFrame, np.ndarray]:
    """(``ablation.csv``'s table, per-image outcomes (E, conditions, N) bool) of the run's
    checkpoints on the evaluation images; ``progress``: a bar over the checkpoints."""
    a = run.config.analysis
    epochs = epochs or run.extracted_epochs()
    data, idx = evaluation_images(run.config)
    loader = DataLoader(Subset(data.heldout, idx.tolist()), a.batch_size, shuffle=False)
    counts = bootstrap.bootstrap_counts(
        data.heldout_labels[idx], a.bootstrap, np.random.default_rng([a.bootstrap_seed, 4])
    )
    rows, per_epoch = [], []
    for e in tqdm(epochs, desc="ablate", unit="epoch", disable=not progress):
        r = run.ratios(e)
        if not np.array_equal(r.sample_index, idx):
            raise UserError(f"{run.files.ratio_file(e)} covers other images: extract it again")
        model = run.model(e)
        per = outcomes(model, loader, r, a.permutation_seed + e)  # (conditions, N)
        per_epoch.append(per)
        resampled = per.astype(float) @ counts.T / counts.sum(1)  # (conditions, B)
        for c, condition in enumerate(CONDITIONS):
            accuracy = float(per[c].mean())
            difference = accuracy - float(per[0].mean())  # against the computed ratios
            rows.append(
                dict(
                    epoch=e,
                    condition=condition,
                    accuracy=accuracy,
                    ci_low=np.nan,
                    ci_high=np.nan,
                    difference=difference,
                    difference_ci_low=np.nan,
                    difference_ci_high=np.nan,
                    n=per.shape[1],
                )
            )
            if len(counts):
                rows[-1]["ci_low"], rows[-1]["ci_high"] = bootstrap.centred_interval(
                    accuracy, resampled[c]
                )
                if c:
                    rows[-1]["difference_ci_low"], rows[-1]["difference_ci_high"] = (
                        bootstrap.centred_interval(difference, resampled[c] - resampled[0])
                    )
    return pd.DataFrame(rows, columns=COLUMNS), np.stack(per_epoch)


@timed
def write_ablation(
    run: RunFolder, epochs: list[int] | None = None, force: bool = False, progress: bool = True
) -> StepResult:
    """The ``ablate`` step's tables: ``analysis/ablation.csv`` and the per-image outcomes
    ``analysis/ablation.npz`` (for the verdict), unless up to date (its figure:
    ``plotting.write_ablation_figure``); ``progress``: a bar per checkpoint."""
    epochs = epochs or run.extracted_epochs()
    csv, npz = run.files.table("ablation.csv"), run.files.table("ablation.npz")
    inputs = [
        *(run.checkpoints[e] for e in epochs),
        *(run.files.ratio_file(e) for e in epochs),
    ]
    table = None

    def write() -> None:
        nonlocal table
        table, outcomes = ablation_table(run, epochs, progress)
        write_csv(csv, table)
        save_npz(npz, outcomes=outcomes, epochs=np.array(epochs), conditions=np.array(CONDITIONS))

    written = run.make([csv, npz], inputs, run.step_settings("ablate"), write, force)
    table = table if table is not None else run.ablation()
    text = table.pivot(index="epoch", columns="condition", values="accuracy").round(3)
    return StepResult.of(
        "ablate", [csv, npz], written, table=table, summary="accuracy:\n" + text.to_string()
    )
