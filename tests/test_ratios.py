"""Ratio collection: exactly the ratios the layers used, batch-independent, hooks cleaned up."""

import shutil

import numpy as np
import pytest
import torch

from en_analysis import Run
from en_analysis.analysis.extract import extract
from en_analysis.core.errors import UserError
from en_analysis.nn import en_layers, en_resnet50
from en_analysis.nn.recording import RatioRecorder

from conftest import ratio_model


def test_159_ratios_per_sample_summing_to_one():
    model = ratio_model()
    x = torch.randn(10, 1, 12, 12)
    with RatioRecorder(model) as rec, torch.no_grad():
        model(x[:4])
        model(x[4:])
    r = rec.ratios()
    assert r.shape == (10, 53, 3) and r.reshape(10, -1).shape[1] == 159
    np.testing.assert_allclose(r.sum(2), 1, atol=1e-6)
    assert rec.layer_names[0] == "bn1" and rec.normalizers == ["in", "ln", "bn"]


def test_recorded_ratios_equal_recomputation():
    model = ratio_model()
    x = torch.randn(6, 1, 12, 12)
    inputs = {}

    def keep_input(name):
        def hook(module, args, output):
            inputs[name] = args[0]  # returns None: the output is left as it is

        return hook

    handles = [layer.register_forward_hook(keep_input(name)) for name, layer in en_layers(model)]
    with RatioRecorder(model) as rec, torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    from en_analysis.nn.exemplar_norm import _moments

    for j, (name, layer) in enumerate(en_layers(model)):
        xin = inputs[name]
        m, e2 = _moments(xin)
        with torch.no_grad():
            _, _, lam = layer.coefficients(m, e2, xin.shape[2] * xin.shape[3])
        # the hook's ratios come from the C++ kernel, the recomputation from the Python path:
        # two summation orders, so float32's tolerances (not bit-equality, which one CPU's
        # vector width happens to give)
        torch.testing.assert_close(torch.from_numpy(rec.ratios()[:, j]), lam)


def test_batch_of_one_equals_batch_of_64():
    # float64: a random 53-layer network amplifies float32 convolution rounding, which differs
    # with batch size (the convolution picks another algorithm); float64's default tolerances
    # (1e-7) are still 10^4 below a batch-dependent ratio (the BN row of a layer in training
    # mode would differ by ~1e-2)
    model = ratio_model().double()
    x = torch.randn(64, 1, 12, 12, dtype=torch.float64)
    with RatioRecorder(model) as big, torch.no_grad():
        model(x)
    with RatioRecorder(model) as single, torch.no_grad():
        for i in range(64):
            model(x[i : i + 1])
    torch.testing.assert_close(torch.from_numpy(single.ratios()), torch.from_numpy(big.ratios()))


def test_extract_with_batch_size_1_equals_batch_size_64(run_copy):
    extract(Run(run_copy), [2], batch_size=64, force=True, progress=False)
    big = Run(run_copy).ratios(2).ratios
    extract(Run(run_copy), [2], batch_size=1, force=True, progress=False)
    # float32 through 53 layers whose convolutions round differently per batch size (1.2e-6
    # seen with ATen's generic kernels): float32's default tolerance, 1e-5, still two orders
    # below the ratios' spread across samples (~1e-3)
    torch.testing.assert_close(
        torch.from_numpy(Run(run_copy).ratios(2).ratios), torch.from_numpy(big)
    )


def test_hooks_are_removed_even_on_error():
    model = ratio_model()
    with pytest.raises(RuntimeError), RatioRecorder(model):
        model(torch.randn(2, 3, 12, 12))  # wrong channel count
    assert all(not layer._forward_hooks for _, layer in en_layers(model))


def test_each_with_block_is_a_new_recording():
    model = ratio_model()
    x = torch.randn(6, 1, 12, 12)
    recorder = RatioRecorder(model)
    with recorder, torch.no_grad():
        model(x[:4])
    with recorder, torch.no_grad():
        model(x[4:])
    assert recorder.ratios().shape[0] == 2  # not 6: the first block's data is gone
    with recorder, pytest.raises(RuntimeError, match="already recording"), recorder:
        pass


def test_a_failed_enter_leaves_no_hook():
    model = ratio_model()
    layers = en_layers(model)

    def refuse(*args, **kwargs):
        raise RuntimeError("no more hooks")

    last = layers[-1][1]  # registering fails at the last layer, after 52 hooks went in
    last.register_forward_hook = refuse
    with pytest.raises(RuntimeError, match="no more hooks"), RatioRecorder(model):
        pass
    assert all(not layer._forward_hooks for _, layer in layers)


def test_a_bn_model_has_no_ratios():
    with pytest.raises(UserError, match="no ExemplarNorm2d"):
        RatioRecorder(en_resnet50(3, 1, 4, "small", norm="bn"))


def test_extracted_run_files(analysed_run):
    run = Run(analysed_run)
    assert run.ratio_epochs == [0, 1, 2]
    r = run.ratios(2)
    assert r.ratios.shape == (32, 53, 3) and r.vectors.shape == (32, 159)
    assert np.bincount(r.labels).tolist() == [8, 8, 8, 8]
    assert r.categories == ["dog", "cat", "car", "tree"] and r.synsets[0] == "dog.n.01"
    assert r.features.shape == (32, 4 * 32) and r.predictions.shape == (32,)
    np.testing.assert_array_equal(r.sample_index, run.ratios(0).sample_index)  # same images
    np.testing.assert_allclose(run.ratios(0).ratios, 1 / 3, atol=1e-6)  # uniform start
    assert r.vectors.std(0).max() > 1e-4  # trained ratios differ between samples


def test_extract_skips_up_to_date_and_reports_bad_checkpoints(run_copy):
    assert extract(Run(run_copy), progress=False).up_to_date_epochs == [0, 1, 2]
    bad = run_copy / "checkpoints" / "epoch-001.pt"
    bad.write_bytes(b"not a checkpoint")
    before = (run_copy / "ratios" / "epoch-001.npz").read_bytes()
    done = extract(Run(run_copy), force=True, progress=False)
    assert done.written_epochs == [0, 2] and list(done.failed) == [str(bad)]
    assert (run_copy / "ratios" / "epoch-001.npz").read_bytes() == before  # nothing lost


def test_extract_with_categories_and_missing_epochs(run_copy):
    run = Run(run_copy)
    run.config.analysis.categories = ["car", "dog"]
    shutil.rmtree(run_copy / "ratios")
    extract(run, [2], progress=False)
    r = Run(run_copy).ratios(2)
    assert sorted(set(r.labels.tolist())) == [0, 2] and r.labels[0] == 2  # car first
    with pytest.raises(UserError, match="epoch.*7"):
        extract(run, [7], progress=False)
    run.config.analysis.categories = ["cta"]
    with pytest.raises(UserError, match="Did you mean cat"):
        extract(run, [2], force=True, progress=False)
