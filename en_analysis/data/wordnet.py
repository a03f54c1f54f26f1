"""Offline WordNet: the corpus, category synsets and WordNet distance matrices.

WordNet is read with nltk from, in order: an nltk data folder that already has it; a cache
folder built from Debian's ``wordnet-base`` (plus the ``lexnames`` file Debian does not ship);
else a clear error naming both fixes. Nothing is ever downloaded.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import UserError
from ..settings.choices import WORDNET_DISTANCES, check

if TYPE_CHECKING:  # nltk is imported lazily: WordNet is needed by the wordnet step only
    from nltk.corpus.reader.wordnet import Synset, WordNetCorpusReader

DEBIAN_WORDNET = Path("/usr/share/wordnet")
CACHE = Path.home() / ".cache" / "en-analysis" / "nltk_data"
WNID = re.compile(r"^n\d{8}$")
# The 45 lexicographer files of WordNet 3.0, documented in lexnames(5WN); Debian omits the file.
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def _debian_folder() -> Path:
    return Path(os.environ.get("EN_ANALYSIS_DEBIAN_WORDNET", DEBIAN_WORDNET))


def build_wordnet_folder(source: Path, target: Path) -> Path:
    """An nltk ``corpora/wordnet`` folder from Debian's WordNet 3.0 files plus ``lexnames``.

    Built in a folder of its own and renamed into place whole, so a killed build leaves no
    partial corpus, and of processes building it at once the first rename wins and the others
    use its folder."""
    folder = target / "corpora" / "wordnet"
    if _complete(folder):
        return folder
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=folder.parent))
        _write_corpus(source, tmp)
        if folder.exists() and not _complete(folder):  # a partial folder of an old version
            shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if not _complete(folder):  # not another process's complete build: a real error
                raise
    except OSError as e:
        raise UserError(f"cannot build the WordNet cache in {target}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when its rename won
    return folder


def _complete(folder: Path) -> bool:
    return (folder / "lexnames").exists() and (folder / "data.noun").exists()


def _write_corpus(source: Path, folder: Path) -> None:
    """Debian's WordNet files and the ``lexnames`` file nltk needs, in ``folder``."""
    for f in source.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    (folder / "lexnames").write_text(
        "".join(
            f"{i:02d}\t{name}\t{SYNTACTIC_CATEGORY[name.split('.')[0]]}\n"
            for i, name in enumerate(LEXNAMES)
        )
    )


def reader_for(folder: Path) -> WordNetCorpusReader:
    """An nltk WordNet reader on a ``corpora/wordnet`` folder of WordNet 3.0 files."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root = str(Path(folder).parent.parent)
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)  # nltk >= 3.9 reads only folders on its path

    class Debian30Reader(WordNetCorpusReader):
        """nltk maps other WordNet versions to 3.0 through index.sense; these files are 3.0."""

        def map_wn(self, version="wordnet"):
            return None

    with warnings.catch_warnings():  # "multilingual functions not available": OMW is not used
        warnings.simplefilter("ignore", UserWarning)
        return Debian30Reader(str(folder), None)


def _nltk_own():
    """nltk's WordNet if its data folders hold a complete copy, else None."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet as wn

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            wn.ensure_loaded()
        return wn
    except (LookupError, OSError):
        return None


@cache
def wordnet() -> WordNetCorpusReader:
    """The WordNet 3.0 corpus reader (nltk), from local files only."""
    own = _nltk_own()
    if own is not None:
        return own
    source = _debian_folder()
    if not (source / "data.noun").is_file():
        raise UserError(
            "WordNet is not installed. Install Debian's copy with `apt-get install wordnet-base`, "
            "or nltk's with `python -c 'import nltk; nltk.download(\"wordnet\")'`"
        )
    return reader_for(build_wordnet_folder(source, CACHE))


def resolve_synset(name: str) -> Synset:
    """A synset from a name (``dog.n.01``) or an ImageNet wnid (``n02111889``)."""
    wn = wordnet()
    from nltk.corpus.reader.wordnet import WordNetError

    if WNID.match(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                synset = wn.synset_from_pos_and_offset("n", int(name[1:]))
            except WordNetError:
                synset = None
        if synset is None:
            raise UserError(f"wnid {name} is not a WordNet 3.0 noun offset")
        return synset
    try:
        return wn.synset(name)
    except (WordNetError, ValueError):
        lemma = name.split(".")[0]
        options = [s.name() for s in wn.synsets(lemma)] or difflib.get_close_matches(
            lemma, list(wn.all_lemma_names("n")), n=5, cutoff=0.8
        )
        hint = f" Close matches: {', '.join(options[:8])}" if options else ""
        raise UserError(f"unknown WordNet synset {name!r}.{hint}") from None


def category_synsets(categories: list[str], synsets: list[str]) -> list:
    """Synset objects for categories: the given synset names, else the category as a wnid."""
    out = []
    for category, synset in zip(categories, synsets):
        if synset:
            out.append(resolve_synset(synset))
        elif WNID.match(category):
            out.append(resolve_synset(category))
        else:
            raise UserError(
                f"category {category!r} has no WordNet synset: give one in a mapping file "
                f"(data.categories_file, columns category,synset)"
            )
    return out


def wordnet_distances(synsets: list, kind: str = "wup") -> np.ndarray:
    """Symmetric distance matrix between synsets.

    wup / path: 1 - similarity; lch: 1 - lch / lch(s, s) (so 0 on the diagonal, in [0, 1]);
    hops: shortest-path length in the hypernym graph.
    """
    check("WordNet distance", kind, WORDNET_DISTANCES)
    n = len(synsets)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a, b = synsets[i], synsets[j]
            if kind == "wup":
                v = 1 - a.wup_similarity(b)
            elif kind == "path":
                v = 1 - a.path_similarity(b)
            elif kind == "lch":
                v = 1 - a.lch_similarity(b) / a.lch_similarity(a)
            else:
                v = a.shortest_path_distance(b, simulate_root=True)
            d[i, j] = d[j, i] = v
    return d
