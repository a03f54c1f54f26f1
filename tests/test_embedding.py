"""openTSNE per epoch: deterministic, aligned panels stay close, degenerate epochs handled."""

import dataclasses
import json

import numpy as np
import pytest
from scipy.spatial import procrustes

from en_analysis import Run
from en_analysis.analysis.embedding import embed, embed_sequence, tsne

from conftest import tiny_config


def planted(n_per=40, k=4, d=30, separation=3.0, seed=0, jitter=None):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, separation, (k, d))
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + rng.normal(0, 1, (len(labels), d))
    return x, labels


def test_same_inputs_and_seed_give_the_same_embedding():
    x, _ = planted()
    np.testing.assert_array_equal(tsne(x, 10, seed=3), tsne(x, 10, seed=3))


def test_aligned_mode_keeps_panels_closer_than_independent():
    # six clusters whose centres drift from epoch to epoch, as categories do during training
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (6, 30))
    labels = np.repeat(np.arange(6), 30)
    epochs = []
    for _ in range(5):
        centres = centres + rng.normal(0, 1.5, centres.shape)
        epochs.append(centres[labels] + rng.normal(0, 1, (len(labels), 30)))
    a = tiny_config("analysis.perplexity=15.0").analysis
    disparity = {}
    for mode in ("aligned", "independent"):
        a.tsne_mode = mode
        ys = embed_sequence(epochs, a)
        disparity[mode] = np.mean([procrustes(ys[i], ys[i + 1])[2] for i in range(4)])
    assert disparity["aligned"] < 0.5 * disparity["independent"]


def test_degenerate_epoch_is_marked_not_embedded():
    x, _ = planted()
    a = tiny_config().analysis
    ys = embed_sequence([np.ones((20, 5)), x], a)
    assert ys[0] is None and ys[1].shape == (len(x), 2) and np.isfinite(ys[1]).all()


def test_embed_run_records_settings_and_skips_when_current(run_copy):
    run = Run(run_copy)
    d = run.embedding(0)
    assert d.degenerate and (d.embedding == 0).all()  # uniform ratios at epoch 0
    d = run.embedding(2)
    assert d.embedding.shape == (32, 2) and not d.degenerate and d.epoch == 2
    done = embed(run, progress=False)
    assert (done.written_epochs, done.up_to_date_epochs) == ([], [0, 1, 2])
    run.configure(dataclasses.replace(run.config.analysis, scaling="raw"), replace=True)
    done = embed(run, progress=False)  # new settings: recomputed, and recorded
    again = embed(run, progress=False)
    assert done.written_epochs == [0, 1, 2]
    assert (again.written_epochs, again.up_to_date_epochs) == ([], [0, 1, 2])
    record = json.loads(run.files.provenance.read_text())["embeddings/epoch-002.npz"]
    assert record["settings"]["analysis.scaling"] == "raw"
    assert sorted(record["inputs"]) == ["embeddings/epoch-001.npz", "ratios/epoch-002.npz"]


def test_a_perplexity_too_large_for_the_samples_is_said_and_recorded(run_copy):
    """Before: perplexity 1e9 was lowered to what 32 samples allow without a word, and only
    1e9 was recorded."""
    from en_analysis.core.io import load_npz

    run = Run(run_copy)
    assert float(load_npz(run.files.embedding_file(2))["perplexity"]) == 5.0  # as asked
    run.configure(dataclasses.replace(run.config.analysis, perplexity=1e9), replace=True)
    with pytest.warns(UserWarning, match=r"analysis.perplexity = 1e\+09 is more than 32 samples"):
        embed(run, progress=False)
    used = load_npz(run.files.embedding_file(2))["perplexity"]
    assert float(used) == pytest.approx(31 / 3)
