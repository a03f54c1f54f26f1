"""Does the network use its per-sample ratios? The ``ablate`` step evaluates every checkpoint
on the evaluation images with each EN layer's ratios

- ``computed``: as the layer computes them (the normal evaluation, unchanged);
- ``dataset-mean``: the layer's mean ratios over the evaluation images, the same for every
  image (a static mixture, as Switchable Normalization learns);
- ``shuffled``: the layer's own ratios, computed from its input, given to another image of the
  same batch (a seeded permutation per batch);
- ``category-mean``: the layer's mean ratios over the images of the image's category.

The drop from ``computed`` to ``dataset-mean`` (or ``shuffled``) is what per-sample mixing is
worth (``difference``: a condition's accuracy minus the computed ratios'); ``category-mean``
against ``dataset-mean`` is what the category information in the ratios is worth. The means
come from the epoch's ratio file (the same images). Each accuracy and each difference has a 95%
interval from resampling the images within categories, the same resamples for every condition
(a mean of per-image outcomes of a fixed model: the plain bootstrap is calibrated for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from . import bootstrap
from .errors import UserError
from .io import save_npz
from .nn import en_layers
from .nn.exemplar_norm import _moments
from .runs import Run

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
Rule = Callable[[int, torch.Tensor], torch.Tensor]  # (layer, learned ratios (N, K)) -> used


@contextmanager
def ratios_replaced(model: torch.nn.Module, rule: Rule) -> Iterator[None]:
    """Inside the block every EN layer uses ``rule(layer index, its learned ratios)`` instead of
    its learned ratios (computed from the layer's own input, in eval mode); hooks removed on
    exit."""
    handles = []
    for j, (_, layer) in enumerate(en_layers(model)):

        def before(module, inputs, j=j) -> None:
            x = inputs[0]
            m, q = _moments(x)
            learned = module.coefficients(m, q, x.shape[2] * x.shape[3])[2]
            module.fix_ratios(rule(j, learned))

        def after(module, inputs, output) -> None:
            module.fix_ratios(None)

        handles += [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for _, layer in en_layers(model):
            layer.fix_ratios(None)


def correct(
    model: torch.nn.Module,
    loader: DataLoader,
    condition: str,
    ratios: np.ndarray,
    labels: np.ndarray,
    seed: int,
) -> np.ndarray:
    """(N,) whether each image of ``loader`` is classified right under ``condition``; ``ratios``
    (N, L, K) and ``labels`` are the epoch's recorded ratios of the same images."""
    model.eval()
    if condition not in CONDITIONS:
        raise UserError(f"condition {condition!r} is not one of {', '.join(CONDITIONS)}")
    mean = torch.from_numpy(ratios.mean(0))  # (L, K)
    by_category = torch.from_numpy(
        np.stack(
            [
                ratios[labels == c].mean(0) if (labels == c).any() else ratios.mean(0)
                for c in range(int(labels.max()) + 1)
            ]
        )
    )  # (C, L, K)
    generator = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}

    def rule(j: int, learned: torch.Tensor) -> torch.Tensor:
        if condition == "dataset-mean":
            return mean[j]
        if condition == "category-mean":
            return by_category[batch["y"], j]
        return learned[batch["perm"]]  # shuffled

    out = []
    with torch.no_grad():
        for x, y in loader:
            if condition == "computed":
                out.append(model(x).argmax(1) == y)
                continue
            batch["y"], batch["perm"] = y, torch.randperm(len(y), generator=generator)
            with ratios_replaced(model, rule):
                out.append(model(x).argmax(1) == y)
    return torch.cat(out).numpy()


def ablation_table(run: Run, epochs: list[int] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """(``ablation.csv``'s table, per-image outcomes (E, conditions, N) bool) of the run's
    checkpoints on the evaluation images."""
    from .extract import evaluation_images

    a = run.config.analysis
    epochs = epochs or run.extracted_epochs()
    data, idx = evaluation_images(run.config)
    loader = DataLoader(Subset(data.heldout, idx.tolist()), a.batch_size, shuffle=False)
    counts = bootstrap.bootstrap_counts(
        data.heldout_labels[idx], a.bootstrap, np.random.default_rng([a.bootstrap_seed, 4])
    )
    rows, outcomes = [], []
    for e in epochs:
        r = run.ratios(e)
        if not np.array_equal(r.sample_index, idx):
            raise UserError(f"{run.files.ratio_file(e)} covers other images: extract it again")
        model = run.model(e)
        per = np.stack(
            [
                correct(model, loader, c, r.ratios, r.labels, a.permutation_seed + e)
                for c in CONDITIONS
            ]
        )  # (conditions, N)
        outcomes.append(per)
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
    return pd.DataFrame(rows, columns=COLUMNS), np.stack(outcomes)


def write_ablation(
    run: Run, epochs: list[int] | None = None, force: bool = False
) -> tuple[pd.DataFrame, bool]:
    """The ``ablate`` step: ``analysis/ablation.csv`` and the per-image outcomes
    ``analysis/ablation.npz`` (for the verdict), unless up to date; (the table, whether
    written)."""
    from .io import write_csv

    epochs = epochs or run.extracted_epochs()
    csv, npz = run.files.table("ablation.csv"), run.files.table("ablation.npz")
    inputs = [
        *(run.checkpoints[e] for e in epochs),
        *(run.files.ratio_file(e) for e in epochs),
    ]
    table = None

    def write() -> None:
        nonlocal table
        table, outcomes = ablation_table(run, epochs)
        write_csv(csv, table)
        save_npz(npz, outcomes=outcomes, epochs=np.array(epochs), conditions=np.array(CONDITIONS))

    written = run.make([csv, npz], inputs, run.analysis_settings(), write, force)
    return (table if table is not None else run.ablation()), written
