"""openTSNE per epoch: ``independent`` (each epoch alone, as the paper) or ``aligned``.

Aligned mode initialises each epoch's t-SNE from the previous epoch's embedding, rescaled to a
small standard deviation as openTSNE recommends for custom initialisations, so a cluster stays in
place from panel to panel and movement between panels is movement of the data. The first epoch
(and any epoch after a degenerate one) starts from PCA, as independent mode does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from openTSNE import TSNE, initialization
from tqdm import tqdm

from .config import AnalysisConfig
from .io import load_npz, npz_up_to_date, save_npz
from .runs import Run
from .spaces import is_degenerate, scale_ratios


def tsne_settings(a: AnalysisConfig) -> dict:
    return dict(
        scaling=a.scaling,
        perplexity=a.perplexity,
        mode=a.tsne_mode,
        seed=a.tsne_seed,
        initialization="pca",
    )


def tsne(
    x: np.ndarray, perplexity: float, seed: int, n_jobs: int = 1, init: np.ndarray | None = None
) -> np.ndarray:
    """2-D openTSNE embedding of x (N, D); PCA initialisation unless ``init`` is given."""
    x = np.asarray(x, np.float64)
    perplexity = min(perplexity, (len(x) - 1) / 3)
    start = "pca" if init is None else initialization.rescale(np.asarray(init, np.float64))
    model = TSNE(perplexity=perplexity, initialization=start, random_state=seed, n_jobs=n_jobs)
    return np.asarray(model.fit(x), np.float32)


def embed_sequence(
    vectors: list[np.ndarray], a: AnalysisConfig, init: np.ndarray | None = None
) -> list[np.ndarray | None]:
    """Embed each epoch's (N, D) vectors; ``None`` for a degenerate epoch (all samples equal)."""
    out: list[np.ndarray | None] = []
    previous = init
    for x in vectors:
        if is_degenerate(x):
            out.append(None)
            previous = None
            continue
        start = previous if a.tsne_mode == "aligned" else None
        y = tsne(x, a.perplexity, a.tsne_seed, a.n_jobs, start)
        out.append(y)
        previous = y
    return out


def embedding_path(run: Run, epoch: int) -> Path:
    return run.path / "embeddings" / f"epoch-{epoch:03d}.npz"


def embed(
    run: Run,
    a: AnalysisConfig,
    epochs: list[int] | None = None,
    force: bool = False,
    progress: bool = True,
) -> tuple[list[int], list[int]]:
    """Write ``embeddings/epoch-XXX.npz`` for the run's extracted epochs; (written, skipped).

    In aligned mode an epoch depends on the one before it, so once an epoch is recomputed every
    later one is too.
    """
    epochs = epochs or run.extracted_epochs()
    settings = json.dumps(tsne_settings(a), sort_keys=True)
    stale = [
        force or not npz_up_to_date(embedding_path(run, e), run.ratios_path(e), settings)
        for e in epochs
    ]
    if not any(stale):
        return [], list(epochs)
    first = stale.index(True)
    previous = None
    if a.tsne_mode == "independent":
        todo = [e for e, s in zip(epochs, stale) if s]
    else:  # every epoch from the first stale one: each starts from the one before
        todo = epochs[first:]
        if first > 0:
            prev = load_npz(embedding_path(run, epochs[first - 1]))
            previous = None if bool(prev["degenerate"]) else prev["embedding"]
    for e in tqdm(todo, desc="embed", unit="epoch", disable=not progress):
        r = run.ratios(e)
        x = scale_ratios(r.ratios, a.scaling)
        degenerate = is_degenerate(x)
        (y,) = embed_sequence([x], a, previous if a.tsne_mode == "aligned" else None)
        previous = y
        save_npz(
            embedding_path(run, e),
            embedding=np.zeros((len(x), 2), np.float32) if y is None else y,
            degenerate=degenerate,
            labels=r.labels,
            sample_index=r.sample_index,
            epoch=e,
            settings=settings,
        )
    return list(todo), [e for e in epochs if e not in todo]
