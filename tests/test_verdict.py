"""The verdict on planted evidence: effects that are there hold, absent ones do not hold, a
control that passes the same test is named, claim 3 is not measured where the schedule leaves
nothing to compare; and end to end on a run through the CLI."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist, squareform

from en_analysis.analysis.inference import FAILS, HOLDS, INCONCLUSIVE, UNMEASURED
from en_analysis.analysis.verdict import DESCRIPTIVE, Evidence, markdown, verdict_table
from en_analysis.cli import main
from en_analysis.settings.config import AnalysisConfig

K, N, D = 10, 30, 20
SETTINGS = AnalysisConfig(
    verdict_bootstrap=299, permutations=299, random_heads=30, knn=5, margin_knn=0.05
)


def _labels():
    return np.repeat(np.arange(K), N)


def _space(rng, spread, positions=None, relation=0.0, shared=None):
    """Images of K categories: centres N(0, spread^2) (plus ``relation`` x the WordNet positions
    in the first two dimensions) and unit noise (half of it ``shared`` across spaces)."""
    c = rng.normal(0, spread, (K, D))
    if positions is not None:
        c[:, :2] += relation * positions
    noise = rng.normal(size=(K * N, D))
    if shared is not None:
        noise = np.sqrt(0.5) * (noise + shared)
    return c[_labels()] + noise


def _evidence(strong=True, seed=0, epochs=(1, 2, 3, 4, 5)):
    """Ratios with clusters that follow WordNet (``strong``) or none at all, beside weaker
    controls; from the epoch of the first drop (3) on the ratios stay put."""
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(K, 2))
    wordnet = squareform(np.round(pdist(positions), 1))
    shared = rng.normal(size=(K * N, D))
    settled = _space(rng, 1.0, positions, 3.0, shared) if strong else rng.normal(size=(K * N, D))
    moving = {e: settled + rng.normal(0, 1.5 if e < 3 else 0.05, settled.shape) for e in epochs}
    controls = {
        "pixels": _space(rng, 0.3, shared=shared),
        "statistics": _space(rng, 0.3, shared=shared),
        "features": _space(rng, 0.5, shared=shared),
        "random-head": _space(rng, 0.2, shared=shared),
    }
    heads = [_space(rng, 0.2, shared=shared) for _ in range(SETTINGS.random_heads)]

    def spaces(epoch):
        return {"ratios": moving[epoch], **controls}

    return Evidence(_labels(), wordnet, SETTINGS, list(epochs), spaces, lambda e: iter(heads))


def _verdict(table, comparison, space="ratios"):
    row = table[(table.comparison == comparison) & (table.space == space)]
    return row.verdict.iloc[0]


@pytest.fixture(scope="module")
def planted():
    return verdict_table([_evidence()], lr_drops=[3])


def test_planted_effects_hold(planted):
    ratios = planted[planted.space == "ratios"]
    tested = ratios[ratios.comparison != "beyond the pixels, partial"]
    assert set(tested.verdict) == {HOLDS}, ratios[["comparison", "verdict", "p_holm"]]
    partial = ratios[ratios.comparison == "beyond the pixels, partial"]
    assert (partial.verdict == DESCRIPTIVE).all() and partial.p_value.isna().all()
    assert (partial.ci_low > 0).all()  # the ratios follow WordNet beyond the pixels
    assert ratios.comparison.tolist() == [
        "vs chance",
        "beyond the pixels",
        "beyond the statistics",
        "beyond random heads",
        "vs no relation",
        "beyond the pixels",
        "beyond the pixels, partial",
        "beyond random heads",
        "formed early",
        "settles after the first drop",
    ]
    heads = ratios[ratios.comparison == "beyond random heads"]
    assert (heads["rank"] == f"1 of {SETTINGS.random_heads + 1}").all()


def test_controls_that_pass_the_same_test_are_named(planted):
    first = planted[(planted.space == "ratios") & (planted.comparison == "vs chance")]
    assert first.specific.iloc[0].startswith("no: holds for pixels")  # they cluster too
    wordnet = planted[(planted.space == "ratios") & (planted.comparison == "vs no relation")]
    assert wordnet.specific.iloc[0] == "yes: for no control"  # only the ratios follow WordNet
    assert "pixels" not in set(planted[planted.claim == "3 dynamic"].space)  # do not train


def test_every_row_has_its_numbers(planted):
    measured = planted[~planted.verdict.isin([UNMEASURED, DESCRIPTIVE])]
    for col in ("estimate", "ci_low", "ci_high", "p_value", "p_holm"):
        assert measured[col].notna().all(), col
    assert (measured.ci_low <= measured.ci_high).all()
    assert (measured.p_holm >= measured.p_value).all()
    assert set(planted.unit) == {
        "images",
        f"categories ({K}, {K * (K - 1) // 2} pairs)",
        "images (2 epochs)",
        "images (3 epochs)",
    }
    md = markdown(planted)
    assert md.count("\n") == 1 + (planted.space == "ratios").sum()


def test_no_effect_is_not_a_holds():
    table = verdict_table([_evidence(strong=False, seed=1)], lr_drops=[3])
    ratios = table[table.space == "ratios"]
    claimed = ratios[ratios.comparison.isin(["vs chance", "vs no relation"])]
    assert set(claimed.verdict) <= {INCONCLUSIVE, FAILS}
    beyond = ratios[ratios.comparison.str.startswith("beyond")]
    assert HOLDS not in set(beyond.verdict)


def test_claim_3_is_not_measured_where_the_schedule_leaves_nothing_to_compare():
    table = verdict_table([_evidence(epochs=(1, 2, 3))], lr_drops=[3])  # drop at the last epoch
    claim3 = table[table.claim == "3 dynamic"]
    assert set(claim3.verdict) == {UNMEASURED}
    formed = claim3[claim3.comparison == "formed early"]
    assert formed.criterion.str.contains("no LR drop before the last epoch").all()
    settles = claim3[claim3.comparison == "settles after the first drop"]
    assert settles.criterion.str.contains("no epoch after the first LR drop").all()
    # the drop after epoch 1: the epoch before it would be epoch 0 (untrained), never used
    table = verdict_table([_evidence()], lr_drops=[1])
    settles = table[table.comparison == "settles after the first drop"]
    assert set(settles.verdict) == {UNMEASURED}
    assert settles.criterion.str.contains("after epoch 0").all()
    formed = table[table.comparison == "formed early"]
    assert UNMEASURED not in set(formed.verdict)


def test_seed_replicates_are_one_test_of_their_mean():
    table = verdict_table([_evidence(seed=s) for s in (0, 2)], lr_drops=[3])
    assert (table.n_runs == 2).all()
    assert _verdict(table, "vs chance") == HOLDS


def test_verdict_of_a_run_through_the_cli(run_copy, capsys):
    assert main(["verdict", str(run_copy)]) == 0  # from the ratio files: no table needed
    table = pd.read_csv(run_copy / "analysis" / "verdict.csv")
    assert set(table.verdict) <= {HOLDS, FAILS, INCONCLUSIVE, UNMEASURED, DESCRIPTIVE}
    assert {"ratios", "pixels", "statistics", "features", "random-head"} <= set(table.space)
    first = capsys.readouterr().out
    assert "| claim | comparison |" in first
    assert main(["verdict", str(run_copy)]) == 0  # up to date: the table read back
    again = capsys.readouterr().out
    assert "up to date" in again and "nan" not in again.split("up to date")[0]
    assert again.split("\n")[:5] == first.split("\n")[:5]
