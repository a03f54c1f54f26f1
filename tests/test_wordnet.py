"""Offline WordNet from Debian's files, category synsets, and the Mantel test."""

import itertools

import nltk
import numpy as np
import pytest
from scipy.stats import rankdata

from en_analysis import Run
from en_analysis.analysis import statistics
from en_analysis.analysis.wordnet import extreme_pairs, wordnet_comparison
from en_analysis.core.errors import UserError
from en_analysis.data import mapping
from en_analysis.data import wordnet as W
from en_analysis.data.datasets import category_table
from en_analysis.run.tables import select


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


def _ranks(v):
    r = rankdata(v)
    return r - r.mean()


def _corr(a, b):
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _brute_force_mantel(model, data, control=None, average=False):
    """Exact two-sided p over all relabelings, written out: plain (the model relabelled) or
    Freedman-Lane (the data's residuals given the control relabelled)."""
    k = len(model)
    iu = np.triu_indices(k, 1)
    data = data if average else [data]

    def resid(v, c):
        return v if c is None else v - (v @ c) / (c @ c) * c

    c = None if control is None else _ranks(control[iu])
    w = resid(_ranks(model[iu]), c)
    residuals = [resid(_ranks(d[iu]), c) for d in data]

    def statistic(perm):
        p = list(perm)
        if c is None:
            wp = _ranks(model[p][:, p][iu])
            return np.mean([_corr(wp, e) for e in residuals])
        values = []
        for e in residuals:
            full = np.zeros((k, k))
            full[iu] = e
            full = full + full.T
            values.append(_corr(resid(full[p][:, p][iu], c), w))
        return np.mean(values)

    observed = statistic(range(k))
    perms = list(itertools.permutations(range(k)))
    hits = sum(abs(statistic(p)) >= abs(observed) - 1e-9 for p in perms)
    return observed, hits / len(perms)


def _distances(points):
    return np.linalg.norm(points[:, None] - points[None], axis=2)


def _related(k=6, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(k, 2))
    model = np.round(_distances(pts), 1)  # ties, as WordNet's distances have
    control = _distances(pts + rng.normal(0, 0.5, pts.shape))
    data = control + _distances(rng.normal(size=(k, 2)))
    return model, data, control


def test_mantel_enumerates_every_relabelling_exactly():
    model, data, control = _related()
    r, p, exact = statistics.mantel(model, data)
    assert exact
    assert (r[0], p[0]) == pytest.approx(_brute_force_mantel(model, data), abs=1e-6)


def test_partial_mantel_is_freedman_lane_exactly():
    model, data, control = _related(seed=1)
    r, p, _ = statistics.mantel(model, data, control=control)
    assert (r[0], p[0]) == pytest.approx(_brute_force_mantel(model, data, control), abs=1e-6)


def test_mantel_of_the_mean_over_seed_replicates():
    model, data, _ = _related(seed=2)
    other = _related(seed=3)[1]
    r, p, _ = statistics.mantel(model, np.stack([data, other]), average=True)
    expected = _brute_force_mantel(model, [data, other], average=True)
    assert (r[0], p[0]) == pytest.approx(expected, abs=1e-6)


def test_random_relabelings_approach_the_exact_p():
    model, data, _ = _related(k=7, seed=4)
    _, exact_p, _ = statistics.mantel(model, data)
    _, p, exact = statistics.mantel(model, data, 20000, np.random.default_rng(0), exact_max=6)
    assert not exact and p[0] == pytest.approx(exact_p[0], abs=0.01)


def test_every_permutation_once():
    perms = statistics.all_permutations(7)
    assert perms.shape == (5040, 7) and len({tuple(q) for q in perms}) == 5040


def test_crossvalidated_distances_are_unbiased_and_equal_the_pairs_formula():
    """The unbiased squared distance between category means equals its definition (the mean
    over pairs of distinct images of (x_i - y_j).(x_i' - y_j'), per dimension); over many
    samples it averages to the true squared distance, where plain centroid distances do not."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    x = rng.normal(size=(12, 5)) + labels[:, None]
    d = statistics.crossvalidated_distances(x, labels, [0, 1, 2])
    a, b = x[labels == 0], x[labels == 1]
    pairs = [
        (a[i] - b[j]) @ (a[i2] - b[j2])
        for i in range(4)
        for i2 in range(4)
        for j in range(4)
        for j2 in range(4)
        if i != i2 and j != j2
    ]
    assert d[0, 1] == pytest.approx(np.mean(pairs) / 5)
    means = np.array([[0.0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 2, 0, 0, 0]])
    truth = statistics.upper(((means[:, None] - means[None]) ** 2).sum(2)) / 5
    cv, plain = [], []
    for _ in range(3000):
        x = means[labels] + rng.normal(size=(12, 5))
        cv.append(statistics.upper(statistics.crossvalidated_distances(x, labels, [0, 1, 2])))
        plain.append(statistics.upper(statistics.cluster_distances(x, labels, [0, 1, 2])) ** 2 / 5)
    np.testing.assert_allclose(np.mean(cv, 0), truth, atol=0.02)
    assert (np.mean(plain, 0) > truth + 0.3).all()  # + (1/4 + 1/4) per dimension


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
    planted = _distances(pts + rng.normal(0, 0.2, pts.shape))
    r, p, exact = statistics.mantel(a, planted, 999, rng)
    assert not exact and r[0] > 0.8 and p[0] < 0.01
    independent = np.stack([_distances(rng.normal(size=(12, 3))) for _ in range(5)])
    assert np.median(statistics.mantel(a, independent, 999, rng)[1]) > 0.05


def test_run_comparison(analysed_run):
    run = Run(analysed_run)
    result = wordnet_comparison(run)
    t = result.table
    spaces = {"ratios", "random-head", "statistics", "features", "pixels"}
    assert set(zip(t.space, t.dims)) == {*((s, "high") for s in spaces), ("ratios", "2d")}
    assert "degenerate" in select(t, epoch=0, space="ratios", dims="high").note.iloc[0]
    last = select(t, epoch=2, space="ratios")  # the ratios and their t-SNE map
    assert np.isfinite(last.spearman).all() and 0 < last.p_value.iloc[0] <= 1
    assert last.permutations.iloc[0] == 24  # 4 categories: every relabelling
    assert (last.cluster_distance == "crossvalidated").all()
    assert result.categories == ["dog", "cat", "car", "tree"]
    close, far = extreme_pairs(result.wordnet, result.categories, 1)
    assert {close[0][0], close[0][1]} == {"dog", "cat"}  # the two mammals


def test_wnid_categories_are_shown_by_name():
    from en_analysis.figures.plotting import display_names

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


def test_tau_a_and_the_category_resamples_agree_with_rsatoolbox():
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.rdm import compare as compare_rdms
    from scipy.spatial.distance import squareform

    from en_analysis.analysis import bootstrap
    from en_analysis.analysis.statistics import upper
    from en_analysis.analysis.wordnet import tau_a

    rng = np.random.default_rng(0)
    wn = squareform(np.round(rng.random(45), 1))  # ties, as Wu-Palmer distances have
    data = np.stack([wn + squareform(rng.normal(0, 0.05, 45)).clip(0), squareform(rng.random(45))])
    taus = tau_a(wn, data)
    for tau, d in zip(taus, data):
        assert tau == pytest.approx(_tau_a(upper(wn), upper(d)))
    draws = bootstrap.category_draws(10, 30, rng)
    ours = bootstrap.category_correlations(upper(wn), np.stack([upper(d) for d in data]), draws)
    model, rdms = RDMs(upper(wn)[None]), RDMs(np.stack([upper(d) for d in data]))
    for b, idx in enumerate(draws):
        theirs = compare_rdms(
            model.subsample_pattern("index", idx), rdms.subsample_pattern("index", idx), "spearman"
        )[0]
        np.testing.assert_allclose(ours[:, b], theirs, atol=1e-12)


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
