"""The verdict logic on planted tables: an effect -> holds, none -> does not hold, overlapping
intervals -> inconclusive; and end to end on a run."""

import numpy as np
import pandas as pd
import pytest

from en_analysis.cli import main
from en_analysis.verdict import FAILS, HOLDS, INCONCLUSIVE, UNMEASURED, Estimate, above, verdicts

NAN = float("nan")


def clustering(
    knn=(0.8, 0.75, 0.85),
    shuffled=(0.1, 0.05, 0.15),
    pixels=(0.6, 0.55, 0.65),
    head=(0.5, 0.45, 0.55),
    shifts=(3.0, 2.0, 2.0, 0.5, 0.3),
    sil_drop=(0.05, 0.04, 0.06),
    sil_last=0.05,
):
    """A clustering table of epochs 1-5 with the LR dropped after epoch 3."""
    rows = []

    def row(epoch, space, dims, metric, est, sh=(NAN, NAN, NAN)):
        rows.append(
            dict(
                epoch=epoch,
                space=space,
                dims=dims,
                metric=metric,
                value=est[0],
                ci_low=est[1],
                ci_high=est[2],
                shuffled=sh[0],
                shuffled_ci_low=sh[1],
                shuffled_ci_high=sh[2],
                note="",
            )
        )

    for e, shift in zip(range(1, 6), shifts):
        if e > 1:
            row(e, "ratios", "high", "centroid_shift", (shift, NAN, NAN))
    row(5, "ratios", "high", "knn", knn, shuffled)
    row(5, "pixels", "high", "knn", pixels)
    row(5, "random-head", "high", "knn", head)
    row(4, "ratios", "high", "silhouette", sil_drop)
    row(5, "ratios", "high", "silhouette", (sil_last, NAN, NAN))
    return pd.DataFrame(rows)


def wordnet(r=(0.6, 0.4, 0.8), p=0.01, pixels=(0.2, 0.0, 0.35)):
    return pd.DataFrame(
        [
            dict(epoch=5, space="ratios", spearman=r[0], ci_low=r[1], ci_high=r[2], p_value=p),
            dict(
                epoch=5,
                space="pixels",
                spearman=pixels[0],
                ci_low=pixels[1],
                ci_high=pixels[2],
                p_value=0.2,
            ),
        ]
    )


def _verdicts(c=None, w=None):
    table = verdicts(clustering() if c is None else c, wordnet() if w is None else w, [3])
    return dict(zip(table.comparison, table.verdict))


def test_planted_effects_hold():
    assert set(_verdicts().values()) == {HOLDS}


def test_no_effect_does_not_hold():
    v = _verdicts(
        clustering(
            knn=(0.1, 0.05, 0.14),
            pixels=(0.6, 0.55, 0.65),
            head=(0.5, 0.45, 0.55),
            shuffled=(0.1, 0.15, 0.2),
            shifts=(3.0, 2.0, 2.0, 1.9, 1.0),
            sil_drop=(0.05, 0.04, 0.06),
            sil_last=0.2,
        ),
        wordnet(r=(-0.5, -0.7, -0.2), p=0.9, pixels=(0.2, 0.0, 0.35)),
    )
    assert set(v.values()) == {FAILS}


def test_overlapping_intervals_are_inconclusive():
    v = _verdicts(
        clustering(knn=(0.6, 0.5, 0.7), pixels=(0.62, 0.55, 0.68), head=(0.55, 0.45, 0.65)),
        wordnet(r=(0.2, -0.1, 0.5), p=0.2, pixels=(0.3, 0.1, 0.45)),
    )
    assert v["ratios vs raw pixels"] == INCONCLUSIVE  # the WordNet one
    assert v["ratios vs random ratio heads"] == INCONCLUSIVE
    assert v["ratios vs no relation"] == INCONCLUSIVE  # p >= 0.05 but r may still be > 0


def test_missing_control_is_not_measured():
    c = clustering()
    v = _verdicts(c[c.space != "random-head"])
    assert v["ratios vs random ratio heads"] == UNMEASURED


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0.5, 0.6), (0.1, 0.4), HOLDS),
        ((0.1, 0.4), (0.4, 0.6), FAILS),
        ((0.3, 0.5), (0.4, 0.6), INCONCLUSIVE),
    ],
)
def test_above(a, b, expected):
    assert above(Estimate(np.mean(a), *a), Estimate(np.mean(b), *b)) == expected


def test_verdict_of_a_run_through_the_cli(run_copy, capsys):
    assert main(["verdict", str(run_copy)]) == 2  # needs the metrics and wordnet tables first
    assert "en-analysis metrics" in capsys.readouterr().err
    assert main(["metrics", str(run_copy)]) == 0 and main(["wordnet", str(run_copy)]) == 0
    assert main(["verdict", str(run_copy)]) == 0
    table = pd.read_csv(run_copy / "analysis" / "verdict.csv")
    assert len(table) == 7 and set(table.verdict) <= {HOLDS, FAILS, INCONCLUSIVE, UNMEASURED}
    assert "| claim | comparison |" in capsys.readouterr().out
