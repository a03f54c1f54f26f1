"""The ratio ablations: each condition gives the layers exactly the ratios it names, the
computed condition is the normal evaluation, and the step's table and outcomes agree."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from en_analysis.ablation import CONDITIONS, correct, ratios_replaced, write_ablation
from en_analysis.nn import en_layers, en_resnet50
from en_analysis.ratios import RatioRecorder
from en_analysis.runs import Run


def _model():
    torch.manual_seed(0)
    model = en_resnet50(3, in_channels=1, width=4, stem="small", stem_stride=1)
    with torch.no_grad():
        for _, layer in en_layers(model):
            layer.ratio_fc2.weight.normal_(0, 0.5)
    model.train()
    for _ in range(3):
        model(torch.randn(16, 1, 12, 12))
    return model.eval()


def _data(n=12):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 3


def _recorded(model, x, rule=None):
    with RatioRecorder(model) as rec, torch.no_grad():
        if rule is None:
            logits = model(x)
        else:
            with ratios_replaced(model, rule):
                logits = model(x)
    return rec.ratios(), logits


def test_the_learned_ratios_given_back_are_the_normal_forward():
    model = _model()
    x, _ = _data()
    normal, logits = _recorded(model, x)
    same, replaced_logits = _recorded(model, x, lambda j, learned: learned)
    torch.testing.assert_close(replaced_logits, logits)  # two code paths: float32 tolerance
    torch.testing.assert_close(torch.from_numpy(same), torch.from_numpy(normal))
    assert all(layer.fixed_ratios is None for _, layer in en_layers(model))  # restored


def test_each_condition_gives_the_ratios_it_names():
    model = _model()
    x, y = _data()
    learned, _ = _recorded(model, x)
    mean = torch.from_numpy(learned.mean(0))
    used, _ = _recorded(model, x, lambda j, lam: mean[j])
    np.testing.assert_allclose(used, np.broadcast_to(learned.mean(0), used.shape), atol=1e-6)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))
    shuffled, _ = _recorded(model, x, lambda j, lam: lam[perm])
    # the first layer's input is the image's own: its ratios are the learned ones, permuted
    np.testing.assert_allclose(shuffled[:, 0], learned[perm.numpy(), 0], atol=1e-6)
    assert not np.allclose(shuffled[:, 0], learned[:, 0], atol=1e-4)


def test_the_outcomes_of_every_condition():
    model = _model()
    x, y = _data(24)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    learned, logits = _recorded(model, x)
    computed = correct(model, loader, "computed", learned, y.numpy(), 0)
    np.testing.assert_array_equal(computed, (logits.argmax(1) == y).numpy())  # exactly
    for condition in CONDITIONS[1:]:
        outcome = correct(model, loader, condition, learned, y.numpy(), 0)
        assert outcome.shape == (24,) and outcome.dtype == bool
    with pytest.raises(ValueError, match="not one of"):
        correct(model, loader, "mean", learned, y.numpy(), 0)


def test_the_ablate_step(run_copy):
    run = Run(run_copy)
    table, written = write_ablation(run)
    assert written and not write_ablation(run)[1]  # up to date
    assert set(table.condition) == set(CONDITIONS) and table.epoch.nunique() == 3
    computed = table[table.condition == "computed"]
    assert (computed.difference == 0).all()
    assert (
        (table.ci_low <= table.accuracy + 1e-12) & (table.accuracy <= table.ci_high + 1e-12)
    ).all()
    outcomes = np.load(run.files.table("ablation.npz"))["outcomes"]
    assert outcomes.shape == (3, len(CONDITIONS), len(run.ratios(2).labels))
    np.testing.assert_allclose(outcomes.mean(2).ravel(), table.accuracy.to_numpy())
