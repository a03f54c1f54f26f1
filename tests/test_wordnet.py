"""Offline WordNet from Debian's files, category synsets, and the Mantel test."""

import itertools

import nltk
import numpy as np
import pytest
from scipy.stats import spearmanr

from en_analysis import statistics
from en_analysis.data import mapping
from en_analysis.data import wordnet as W
from en_analysis.data.datasets import category_table
from en_analysis.errors import UserError
from en_analysis.runs import Run
from en_analysis.wordnet import compare, extreme_pairs


@pytest.fixture(scope="module")
def debian_wn(tmp_path_factory):
    """A reader on a folder built from Debian's wordnet-base, whatever nltk data exists."""
    if not (W.DEBIAN_WORDNET / "data.noun").exists():
        pytest.skip("Debian's wordnet-base is not installed")
    return W.reader_for(
        W.build_wordnet_folder(W.DEBIAN_WORDNET, tmp_path_factory.mktemp("nltk_data"))
    )


def test_known_values_through_the_debian_loader(debian_wn):
    dog, cat = debian_wn.synset("dog.n.01"), debian_wn.synset("cat.n.01")
    assert dog.path_similarity(cat) == pytest.approx(0.2)
    assert dog.shortest_path_distance(cat) == 4
    assert dog.lexname() == "noun.animal"  # needs the lexnames file Debian does not ship


def test_wup_and_lch_distances_known_values():
    """nltk's documented values for dog.n.01 / cat.n.01: wup 0.857 (6/7), lch 2.028 (of at most
    log 38 = 3.638 for nouns, whose taxonomy is 19 deep); the distances are 1 - wup and
    1 - lch / lch(s, s)."""
    pair = [W.resolve_synset("dog.n.01"), W.resolve_synset("cat.n.01")]
    assert W.wordnet_distances(pair, "wup")[0, 1] == pytest.approx(1 - 6 / 7)
    lch = W.wordnet_distances(pair, "lch")
    assert lch[0, 1] == pytest.approx(1 - 2.0281482472922856 / np.log(38))
    assert lch[0, 0] == 0 and lch[1, 0] == lch[0, 1]


def test_library_loader_gives_the_same_values():
    d = W.wordnet_distances([W.resolve_synset("dog.n.01"), W.resolve_synset("cat.n.01")], "path")
    assert d[0, 1] == pytest.approx(0.8)
    hops = W.wordnet_distances([W.resolve_synset("dog.n.01"), W.resolve_synset("cat.n.01")], "hops")
    assert hops[0, 1] == 4


def test_missing_wordnet_names_both_fixes(monkeypatch, tmp_path):
    monkeypatch.setenv("EN_ANALYSIS_DEBIAN_WORDNET", str(tmp_path))
    monkeypatch.setattr(nltk.data, "find", lambda *a, **k: (_ for _ in ()).throw(LookupError()))
    W.wordnet.cache_clear()
    try:
        with pytest.raises(UserError, match=r"apt-get install wordnet-base.*nltk.download"):
            W.wordnet()
    finally:
        W.wordnet.cache_clear()


@pytest.mark.parametrize(
    "table", ["fashion-mnist", "cifar10", "cifar100", "paper-categories", "synthetic"]
)
def test_every_built_in_category_resolves(table):
    rows = category_table(table)
    assert len(rows) == {"cifar100": 100, "synthetic": 4, "paper-categories": 9}.get(table, 10)
    for category, synset in rows:
        s = W.resolve_synset(synset)
        assert s.pos() == "n"
        if W.WNID.match(category):  # the wnid and the table agree
            assert W.resolve_synset(category) == s


def test_unknown_names_list_close_matches():
    with pytest.raises(UserError, match="Close matches: .*dog.n.01"):
        W.resolve_synset("dog.n.99")
    with pytest.raises(UserError, match="not a WordNet 3.0 noun offset"):
        W.resolve_synset("n99999999")


def test_mapping_files(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("category,synset\nBag,bag.n.01\n")
    assert mapping.read_mapping_file(csv) == {"Bag": "bag.n.01"}
    toml = tmp_path / "m.toml"
    toml.write_text('[synsets]\n"Ankle boot" = "boot.n.01"\n')
    assert mapping.read_mapping_file(toml) == {"Ankle boot": "boot.n.01"}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,wn\nx,y\n")
    with pytest.raises(UserError, match="columns category,synset"):
        mapping.read_mapping_file(bad)


def _brute_force_mantel(a, b):
    """Exact p over all row/column permutations (tiny matrices only)."""
    iu = np.triu_indices(len(a), 1)
    observed = spearmanr(a[iu], b[iu]).statistic
    perms = list(itertools.permutations(range(len(a))))
    hits = sum(
        spearmanr(a[iu], b[list(p)][:, list(p)][iu]).statistic >= observed - 1e-12 for p in perms
    )
    return observed, hits / len(perms)


def _distances(points):
    return np.linalg.norm(points[:, None] - points[None], axis=2)


def test_mantel_agrees_with_brute_force():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(5, 2))
    a, b = _distances(pts), _distances(pts + rng.normal(0, 0.5, pts.shape))
    r, p = statistics.mantel(a, b, permutations=20000, seed=1)
    r_exact, p_exact = _brute_force_mantel(a, b)
    assert r == pytest.approx(r_exact)
    assert p == pytest.approx(p_exact, abs=0.01)


def test_cluster_distances_known_values():
    """Centroid: the distance between the category means; pairwise: the mean distance over
    every pair of one image from each category."""
    x = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
    labels = np.array([0, 0, 1, 1])
    centroid = statistics.cluster_distances(x, labels, [0, 1], "centroid")
    pairwise = statistics.cluster_distances(x, labels, [0, 1], "pairwise")
    assert centroid[0, 1] == centroid[1, 0] == pytest.approx(2.0)  # (1, 0) to (1, 2)
    expected = (2 * np.sqrt(2) + 2 * np.sqrt(10)) / 4  # (0,0)-(1,1), (2,0)-(1,1), ... to (1,3)
    assert pairwise[0, 1] == pairwise[1, 0] == pytest.approx(expected)
    assert centroid[0, 0] == pairwise[0, 0] == 0


def test_mantel_planted_and_independent():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(12, 3))
    a = _distances(pts)
    r, p = statistics.mantel(a, _distances(pts + rng.normal(0, 0.2, pts.shape)), 999, 0)
    assert r > 0.8 and p < 0.01
    ps = [statistics.mantel(a, _distances(rng.normal(size=(12, 3))), 999, s)[1] for s in range(5)]
    assert np.median(ps) > 0.05


def test_run_comparison(analysed_run):
    run = Run(analysed_run)
    result = compare(run)
    t = result.table
    assert set(t.space) == {"ratios", "ratios-2d", "random-head", "features", "pixels"}
    assert "degenerate" in t[(t.epoch == 0) & (t.space == "ratios")].note.iloc[0]
    last = t[(t.epoch == 2) & (t.space == "ratios")]
    assert np.isfinite(last.spearman).all() and 0 < last.p_value.iloc[0] <= 1
    assert result.categories == ["dog", "cat", "car", "tree"]
    close, far = extreme_pairs(result.wordnet, result.categories, 1)
    assert {close[0][0], close[0][1]} == {"dog", "cat"}  # the two mammals


def test_wnid_categories_are_shown_by_name():
    from en_analysis.plotting import display_names

    assert display_names(["n02111889", "n07873807", "Bag"], [0, 1, 2]) == [
        "Samoyed",
        "pizza",
        "Bag",
    ]


def _tau_a(x, y):
    """Kendall's tau-a by its definition: (concordant - discordant) / all pairs; ties count 0."""
    n, s = len(x), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    return s / (n * (n - 1) / 2)


def test_rsa_measures_tau_a_and_category_interval():
    from scipy.spatial.distance import squareform

    from en_analysis.statistics import upper
    from en_analysis.wordnet import rsa_measures

    rng = np.random.default_rng(0)
    wn = squareform(np.round(rng.random(45), 1))  # ties, as Wu-Palmer distances have
    close = wn + squareform(rng.normal(0, 0.05, 45)).clip(0)
    unrelated = squareform(rng.random(45))
    for d in (close, unrelated):
        tau, _ = rsa_measures(wn, d, 0.0, 0, np.random.default_rng(1))
        assert tau == pytest.approx(_tau_a(upper(wn), upper(d)))
    r_close = spearmanr(upper(wn), upper(close))[0]
    _, (lo, hi) = rsa_measures(wn, close, r_close, 200, np.random.default_rng(1))
    assert lo < r_close < hi and lo > 0.5
    r_none = spearmanr(upper(wn), upper(unrelated))[0]
    _, (lo, hi) = rsa_measures(wn, unrelated, r_none, 200, np.random.default_rng(1))
    assert lo < 0 < hi  # no relation: the interval covers 0


def test_two_processes_building_the_wordnet_cache_at_once(tmp_path, monkeypatch):
    """Before: `OSError: Directory not empty` when another process finished the cache between
    this one's clearing the folder and renaming its own into place (4 of 8 trials). Here the
    other process finishes just before this one's rename: the first rename wins, the other
    process's complete folder is used, and no build folder is left behind."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    source = tmp_path / "debian"
    source.mkdir()
    for name in ("data.noun", "index.noun", "data.verb"):
        (source / name).write_text(f"{name} of the test\n")
    target = tmp_path / "cache"
    other = (
        "from pathlib import Path\n"
        "from en_analysis.data.wordnet import build_wordnet_folder\n"
        f"build_wordnet_folder(Path({str(source)!r}), Path({str(target)!r}))\n"
    )
    rename = Path.rename

    def other_process_first(self, to):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, "-c", other], env=env, check=True)
        return rename(self, to)

    monkeypatch.setattr(Path, "rename", other_process_first)
    folder = W.build_wordnet_folder(source, target)
    assert folder == target / "corpora" / "wordnet"
    assert sorted(p.name for p in folder.iterdir()) == [
        "data.noun",
        "data.verb",
        "index.noun",
        "lexnames",
    ]
    assert [p.name for p in folder.parent.iterdir()] == ["wordnet"]
