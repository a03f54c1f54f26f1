"""Per-category statistics: equal to a direct group-by; documented columns; the Run API reads it."""

import numpy as np
import pandas as pd
import pytest

from en_analysis import Run
from en_analysis.analysis.export import STAT_COLUMNS, category_stats, export, wide
from en_analysis.core.errors import UserError


def test_statistics_equal_a_pandas_group_by(analysed_run):
    r = Run(analysed_run).ratios(2)
    ours = category_stats(r)
    frame = r.to_frame()
    g = frame.groupby(["category", "layer_index", "normalizer"], sort=False)["ratio"]
    theirs = pd.DataFrame(
        {
            "n": g.size(),
            "mean": g.mean(),
            "std": g.std(),
            "median": g.median(),
            "q25": g.quantile(0.25),
            "q75": g.quantile(0.75),
        }
    ).reset_index()
    merged = ours.merge(theirs, on=["category", "layer_index", "normalizer"], suffixes=("", "_pd"))
    assert len(merged) == len(ours) == 4 * 53 * 3
    for col in ("n", "mean", "std", "median", "q25", "q75"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_pd"], rtol=1e-5, atol=1e-7)
    assert list(ours.columns) == STAT_COLUMNS
    assert set(ours.synset) == {"dog.n.01", "cat.n.01", "car.n.01", "tree.n.01"}


def test_export_files_open_in_pandas(run_copy):
    run = Run(run_copy)
    done = export(run, samples=True, wide_table=True)
    paths, again = done.written, export(run, samples=True, wide_table=True)
    assert paths and (again.written, again.up_to_date) == ([], paths)
    assert [p.name for p in paths] == [
        "category_stats.csv",
        "category_stats_wide.csv",
        "sample_ratios.csv",
    ]
    stats = run.category_stats()
    assert list(stats.columns) == STAT_COLUMNS and sorted(stats.epoch.unique()) == [0, 1, 2]
    table = pd.read_csv(paths[1])
    assert table.shape == (3 * 4, 4 + 159) and table.columns[4] == "bn1/in"
    samples = pd.read_csv(paths[2])
    assert list(samples.columns) == [
        "epoch",
        "sample",
        "category",
        "layer_index",
        "layer",
        "normalizer",
        "ratio",
    ]
    assert len(samples) == 3 * 32 * 159
    np.testing.assert_allclose(
        samples.groupby(["epoch", "sample", "layer_index"]).ratio.sum(), 1, atol=1e-5
    )
    assert wide(stats).shape == table.shape


def test_run_api(analysed_run):
    run = Run(analysed_run)
    assert run.epochs == [0, 1, 2] and run.ratio_epochs == [0, 1, 2]
    assert run.metrics().epoch.tolist() == [0, 1, 2]
    model = run.model(2)
    assert not model.training
    frame = run.ratios(1).to_frame()
    assert len(frame) == 32 * 159 and set(frame.normalizer) == {"in", "ln", "bn"}
    with pytest.raises(UserError, match="no ratios for epoch 9"):
        run.ratios(9)
    with pytest.raises(UserError, match="not a run folder"):
        Run(analysed_run / "checkpoints")
