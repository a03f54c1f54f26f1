"""The ratio ablations: each condition gives every layer exactly the ratios it names, the
recorded ratios given back reproduce the normal forward pass, the computed condition is the
normal evaluation, and the step's table and outcomes agree."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from en_analysis import Run
from en_analysis.analysis.ablation import (
    CONDITIONS,
    correct,
    fixed_ratios,
    replacement,
    write_ablation,
)
from en_analysis.nn import en_layers
from en_analysis.nn.recording import RatioRecorder

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


def test_the_computed_condition_is_the_normal_evaluation_exactly():
    model = ratio_model(3)
    x, y = _data(24)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    learned, logits = _recorded(model, x)
    computed = correct(model, loader, "computed", learned, y.numpy(), 0)
    np.testing.assert_array_equal(computed, (logits.argmax(1) == y).numpy())
    for condition in CONDITIONS[1:]:
        outcome = correct(model, loader, condition, learned, y.numpy(), 0)
        assert outcome.shape == (24,) and outcome.dtype == bool


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
    outcomes = np.load(run.files.table("ablation.npz"))["outcomes"]
    assert outcomes.shape == (3, len(CONDITIONS), len(run.ratios(2).labels))
    np.testing.assert_allclose(outcomes.mean(2).ravel(), table.accuracy.to_numpy())
