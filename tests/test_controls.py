"""The controls: the stored head inputs are exactly what every layer's head read; random heads
are seeded, initialised as PyTorch does and matched to the learned spread; the statistics space
keeps the distances of the full statistics."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from en_analysis import Run
from en_analysis.analysis import controls
from en_analysis.analysis.spaces import standardize
from en_analysis.nn import en_layers
from en_analysis.nn.recording import RatioRecorder

from conftest import ratio_model


def _recorded(model, n=12):
    x = torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    with RatioRecorder(model, inputs=True) as rec, torch.no_grad():
        model(x[: n // 2])
        model(x[n // 2 :])
    return rec.ratios(), rec.head_inputs()


def test_the_learned_heads_on_the_stored_inputs_give_the_recorded_ratios():
    """The layers' own heads applied to ``HeadInputs.descriptors`` reproduce the ratios the
    forward pass used: the stored statistics are exactly what every head read."""
    model = ratio_model()
    ratios, inputs = _recorded(model)
    assert inputs.mean.shape == (12, int(inputs.channels.sum()))
    for j, (_, layer) in enumerate(en_layers(model)):
        d = torch.from_numpy(inputs.descriptors(j))
        with torch.no_grad():
            hidden = torch.relu(layer.ratio_fc1(d))
            logits = layer.ratio_fc2(hidden)[..., 0] + layer.ratio_bias
        torch.testing.assert_close(torch.softmax(logits, 1), torch.from_numpy(ratios[:, j]))


def test_head_weights_are_pytorch_default_linear_initialisation_and_stable_across_chunks():
    fc1, bias, fc2 = controls.head_weights(3, 7, range(10, 14), channels=16, hidden=8)
    again = controls.head_weights(3, 7, range(12, 13), channels=16, hidden=8)
    np.testing.assert_array_equal(again[0][0], fc1[2])  # head 12 whatever else is drawn
    np.testing.assert_array_equal(again[2][0], fc2[2])
    assert np.abs(fc1).max() <= 32**-0.5 and np.abs(fc2).max() <= 8**-0.5
    assert fc1.std() == pytest.approx(32**-0.5 / np.sqrt(3), rel=0.1)  # U(-b, b): sd b/sqrt(3)
    assert not np.allclose(controls.head_weights(4, 7, range(1), 16, 8)[0], fc1[0])  # the seed


def test_random_heads_match_the_learned_spread_and_are_uniform_where_it_is():
    model = ratio_model()
    ratios, inputs = _recorded(model)
    heads = controls.random_head_ratios(inputs, ratios, range(3), seed=0)
    assert heads.shape == (3, *ratios.shape)
    np.testing.assert_allclose(heads.sum(3), 1, atol=1e-6)
    for h in heads:
        np.testing.assert_allclose(
            controls.log_ratio_spread(h), controls.log_ratio_spread(ratios), rtol=1e-4, atol=1e-9
        )
        assert not np.allclose(h, ratios, atol=1e-4)  # other ratios than the learned ones
    uniform = controls.random_head_ratios(inputs, np.full_like(ratios, 1 / 3), range(2), 0)
    np.testing.assert_allclose(uniform, 1 / 3, atol=1e-6)


def test_the_statistics_space_keeps_the_distances_of_the_full_statistics():
    _, inputs = _recorded(ratio_model(), n=40)
    full = standardize(np.concatenate([inputs.mean, inputs.logstd], 1))
    space = controls.statistics_space(inputs)
    assert space.shape == (40, 39)  # 40 images span 39 dimensions
    np.testing.assert_allclose(pdist(space), pdist(full), rtol=1e-6, atol=1e-8)


def test_extracted_ratio_files_hold_the_head_inputs(analysed_run):
    r = Run(analysed_run).ratios(2)
    inputs = r.head_inputs
    assert inputs is not None and inputs.mean.shape[0] == len(r.labels)
    assert inputs.channels.sum() == inputs.mean.shape[1] == inputs.running_mean.shape[0]
    assert list(inputs.normalizers) == r.normalizers
    spaces = controls.space_vectors(r, Run(analysed_run).pixels()["pixels"], "zscore", 0)
    assert set(spaces) == set(controls.SPACES)
    assert all(len(v) == len(r.labels) for v in spaces.values())
