"""Seed replicates: one ordinary run per seed, their spread, and refusal of runs that analysed
other images."""

import shutil

import numpy as np
import pandas as pd
import pytest

from en_analysis import Run
from en_analysis.analysis.extract import extract
from en_analysis.cli import main
from en_analysis.core.errors import UserError
from en_analysis.pipeline.replicates import compare, replicate

from conftest import tiny_config


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicates")
    result, verdict = replicate(tiny_config(), [0, 1], out, progress=False)
    return out, result, verdict


def test_one_run_per_seed_and_their_spread(replicated):
    out, result, verdict = replicated
    assert sorted(p.name for p in out.iterdir()) == ["analysis", "figures", "seed-0", "seed-1"]
    assert [r.config.train.seed for r in result.runs] == [0, 1]
    # each seed's own table, read independently
    values = [
        pd.read_csv(out / f"seed-{s}" / "analysis" / "clustering.csv")
        .query("space == 'ratios' and dims == 'high' and metric == 'knn' and epoch == 2")
        .value.iloc[0]
        for s in (0, 1)
    ]
    row = result.number("clustering", "ratios", "knn", 2)
    assert row["n"] == 2 and row["mean"] == pytest.approx(np.mean(values))
    assert row["sd"] == pytest.approx(np.std(values, ddof=1))
    assert row["min"] == min(values) and row["max"] == max(values)
    table = pd.read_csv(out / "analysis" / "replicates.csv")
    assert len(table) == len(result.table)
    assert (table.n[table["mean"].notna()] == 2).all()  # NaN: a degenerate epoch
    assert (out / "figures" / "replicates.png").exists()
    assert set(verdict.verdict) <= {
        "holds",
        "does not hold",
        "inconclusive",
        "not measured",
        "descriptive",
    }
    assert (verdict.n_runs == 2).all()  # one test of the two runs' mean per row
    assert (out / "analysis" / "replicate_verdict.csv").exists()


def test_the_seeds_differ_but_the_evaluation_images_do_not(replicated):
    _, result, _ = replicated
    a, b = (r.ratios(2) for r in result.runs)
    np.testing.assert_array_equal(a.sample_index, b.sample_index)
    assert not np.allclose(a.ratios, b.ratios)


def test_compare_refuses_runs_that_analysed_other_images(replicated, tmp_path, capsys):
    out, _, _ = replicated
    other = tmp_path / "other"
    shutil.copytree(out / "seed-1", other)
    shutil.rmtree(other / "ratios")
    run = Run(other)
    run.configure(tiny_config("analysis.per_category=6").analysis, replace=True)
    extract(run, progress=False)
    with pytest.raises(UserError, match="other evaluation images"):
        compare([out / "seed-0", other])
    code = main(["compare", str(out / "seed-0"), str(other), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "other evaluation images" in err
    assert not (tmp_path / "c").exists()


def test_replicate_needs_two_seeds(tmp_path):
    with pytest.raises(UserError, match="at least two different seeds"):
        replicate(tiny_config(), [3, 3], tmp_path)


def test_compare_refuses_a_run_twice_and_runs_of_other_settings(replicated, tmp_path, capsys):
    """Before: `compare base base` combined a run with itself, and runs trained with other
    settings (here a learning rate) were taken as replicates of one another."""
    import tomli_w

    out, _, _ = replicated
    with pytest.raises(UserError, match="seed-0 is listed more than once"):
        compare([out / "seed-0", out / "seed-1", out / "seed-0/"])
    other = tmp_path / "other"
    shutil.copytree(out / "seed-1", other)
    config = Run(other).config
    config.train.lr = 0.05  # as a run trained with another learning rate would hold
    (other / "config.toml").write_text(tomli_w.dumps(config.to_dict()))
    code = main(["compare", str(out / "seed-0"), str(other), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        f"{other} has train.lr = 0.05, {out / 'seed-0'} 0.2: replicates differ in train.seed" in err
    )
    assert not (tmp_path / "c").exists()


def test_compare_refuses_a_table_changed_by_hand(replicated, tmp_path):
    out, _, _ = replicated
    edited = tmp_path / "edited"
    shutil.copytree(out / "seed-1", edited)
    table = edited / "analysis" / "wordnet.csv"
    table.write_text(table.read_text().replace("0.", "0.9", 2))
    with pytest.raises(UserError, match="wordnet.csv is not the file `en-analysis wordnet` wrote"):
        compare([out / "seed-0", edited])
