"""The ratio ablations: each condition gives every layer exactly the ratios it names, the
recorded ratios given back reproduce the normal forward pass, the computed condition is the
normal evaluation of each checkpoint, and the step's table and outcomes agree."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from en_analysis import Run
from en_analysis.analysis.ablation import (
    CONDITIONS,
    fixed_ratios,
    outcomes,
    replacement,
    write_ablation,
)
from en_analysis.analysis.extract import evaluation_images
from en_analysis.nn import en_layers
from en_analysis.nn.recording import RatioRecorder
from en_analysis.run.folder import Ratios

from conftest import ratio_model


def _data(n=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 3


def _recorded(model, x, used=None):
    with RatioRecorder(model) as rec, torch.no_grad():
        if used is None:
            logits = model(x)
        else:
            with fixed_ratios(model, used):
                logits = model(x)
    return rec.ratios(), logits


def test_the_recorded_ratios_given_back_reproduce_the_normal_forward():
    model = ratio_model(3)
    x, _ = _data()
    learned, logits = _recorded(model, x)
    given = [torch.from_numpy(learned[:, j]) for j in range(learned.shape[1])]
    same, replayed = _recorded(model, x, given)
    torch.testing.assert_close(replayed, logits)  # the kernel vs the Python path: float32
    np.testing.assert_array_equal(same, learned)
    assert all(layer.fixed_ratios is None for _, layer in en_layers(model))  # restored


@pytest.mark.parametrize("condition", CONDITIONS[1:])
def test_each_condition_gives_every_layer_the_ratios_it_names(condition):
    model = ratio_model(3)
    x, y = _data()
    learned, _ = _recorded(model, x)
    labels, rows, perm = y.numpy(), np.arange(12), np.random.default_rng(0).permutation(12)
    used, _ = _recorded(model, x, replacement(condition, learned, labels, rows, perm))
    expected = {
        "dataset-mean": np.broadcast_to(learned.mean(0), learned.shape),
        "shuffled": learned[perm],
        "category-mean": np.stack([learned[labels == c].mean(0) for c in labels]),
    }[condition]
    np.testing.assert_allclose(used, expected, atol=1e-6)
    assert replacement("computed", learned, labels, rows, perm) is None
    with pytest.raises(ValueError, match="not one of"):
        replacement("mean", learned, labels, rows, perm)


def _ratios(model, x, y) -> Ratios:
    """The ratio file extraction would write for ``x``: ratios and predictions."""
    learned, logits = _recorded(model, x)
    return Ratios(
        ratios=learned,
        labels=y.numpy(),
        sample_index=np.arange(len(y)),
        layer_names=[name for name, _ in en_layers(model)],
        normalizers=["in", "ln", "bn"],
        categories=["a", "b", "c"],
        synsets=["", "", ""],
        epoch=0,
        predictions=logits.argmax(1).numpy(),
    )


def test_each_replaced_condition_is_a_forward_pass_with_its_ratios():
    """The step's outcomes equal, batch by batch, a forward pass of the batch with the ratios
    ``replacement`` gives it (the permutation drawn per batch from the seed)."""
    model = ratio_model(3)
    x, y = _data(24)
    r = _ratios(model, x, y)
    got = outcomes(model, DataLoader(TensorDataset(x, y), batch_size=8), r, seed=5)
    rng = np.random.default_rng(5)
    for start in range(0, 24, 8):
        rows = np.arange(start, start + 8)
        perm = rng.permutation(8)
        for c, condition in enumerate(CONDITIONS[1:], 1):
            used = replacement(condition, r.ratios, r.labels, rows, perm)
            with fixed_ratios(model, used), torch.no_grad():
                expected = (model(x[rows]).argmax(1) == y[rows]).numpy()
            np.testing.assert_array_equal(got[c, rows], expected, err_msg=condition)
    np.testing.assert_array_equal(got[0], r.predictions == r.labels)


def test_the_ablate_step(run_copy):
    run = Run(run_copy)
    result = write_ablation(run)
    table = result.table
    assert result.written and not write_ablation(run).written  # up to date
    assert set(table.condition) == set(CONDITIONS) and table.epoch.nunique() == 3
    computed = table[table.condition == "computed"]
    assert (computed.difference == 0).all()
    inside = (table.ci_low <= table.accuracy + 1e-12) & (table.accuracy <= table.ci_high + 1e-12)
    assert inside.all()
    stored = np.load(run.files.table("ablation.npz"))
    assert stored["outcomes"].shape == (3, len(CONDITIONS), len(run.ratios(2).labels))
    np.testing.assert_allclose(stored["outcomes"].mean(2).ravel(), table.accuracy.to_numpy())
    # the computed condition is the normal evaluation of each checkpoint, image for image
    data, idx = evaluation_images(run.config)
    x = torch.stack([data.heldout[int(i)][0] for i in idx])
    y = torch.as_tensor(data.heldout_labels[idx])
    for e, per in zip(stored["epochs"], stored["outcomes"], strict=True):
        model = run.model(int(e))
        with torch.no_grad():
            normal = torch.cat(
                [model(part).argmax(1) for part in x.split(run.config.analysis.batch_size)]
            )
        np.testing.assert_array_equal(per[0], (normal == y).numpy())
