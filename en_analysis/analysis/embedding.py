"""openTSNE per epoch: ``independent`` (each epoch alone, as the paper) or ``aligned``.

Aligned mode initialises each epoch's t-SNE from the previous epoch's embedding, rescaled to a
small standard deviation as openTSNE recommends for custom initialisations, so a cluster stays in
place from panel to panel and movement between panels is movement of the data. The first epoch
(and any epoch after a degenerate one) starts from PCA, as independent mode does.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from openTSNE import TSNE, initialization
from tqdm import tqdm

from ..core.io import save_npz
from ..run.folder import RunFolder
from ..settings.config import AnalysisConfig
from ..steps.results import StepResult, timed
from .spaces import is_degenerate, scale_ratios


def usable_perplexity(perplexity: float, samples: int) -> float:
    """The perplexity t-SNE uses: the asked one, lowered to (N - 1) / 3 where it is larger
    (openTSNE's limit for N samples)."""
    return min(perplexity, (samples - 1) / 3)


def tsne(
    x: np.ndarray, perplexity: float, seed: int, n_jobs: int = 1, init: np.ndarray | None = None
) -> np.ndarray:
    """2-D openTSNE embedding of x (N, D); PCA initialisation unless ``init`` is given."""
    x = np.asarray(x, np.float64)
    perplexity = usable_perplexity(perplexity, len(x))
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


def _inputs(run: RunFolder, epochs: list[int], i: int, mode: str) -> list[Path]:
    """An epoch's embedding is made from its ratios and, aligned, the previous epoch's embedding."""
    inputs = [run.files.ratio_file(epochs[i])]
    if mode == "aligned" and i > 0:
        inputs.append(run.files.embedding_file(epochs[i - 1]))
    return inputs


@timed
def embed(
    run: RunFolder,
    epochs: list[int] | None = None,
    force: bool = False,
    progress: bool = True,
) -> StepResult:
    """The ``embed`` step: write the embedding of each of the run's extracted epochs that is not
    up to date, with the analysis's settings.

    In aligned mode an epoch starts from the one before it (an input of its provenance), so once
    an epoch is recomputed every later one is too.
    """
    a = run.config.analysis
    epochs = epochs or run.extracted_epochs()
    settings = {**run.step_settings("embed"), "initialization": "pca"}
    run.check_inputs([run.files.ratio_file(e) for e in epochs])  # each the file extract wrote
    result = StepResult("embed")
    previous = None
    for i, e in enumerate(tqdm(epochs, desc="embed", unit="epoch", disable=not progress)):
        output = run.files.embedding_file(e)
        inputs = _inputs(run, epochs, i, a.tsne_mode)
        if not force and run.provenance.current(output, inputs, settings):
            result.up_to_date.append(output)
            previous = None  # read when the next epoch needs it
            continue
        if a.tsne_mode == "aligned" and previous is None and i > 0:
            before = run.embedding(epochs[i - 1])
            previous = None if before.degenerate else before.embedding
        r = run.ratios(e)
        x = scale_ratios(r.ratios, a.scaling)
        (y,) = embed_sequence([x], a, previous if a.tsne_mode == "aligned" else None)
        previous = y
        perplexity = usable_perplexity(a.perplexity, len(x))
        if perplexity < a.perplexity and not result.written:
            warnings.warn(
                f"analysis.perplexity = {a.perplexity:g} is more than {len(x)} samples allow: "
                f"t-SNE uses {perplexity:.4g} (recorded in each embedding file)",
                UserWarning,
                stacklevel=2,
            )
        save_npz(
            output,
            embedding=np.zeros((len(x), 2), np.float32) if y is None else y,
            degenerate=y is None,
            labels=r.labels,
            sample_index=r.sample_index,
            epoch=e,
            perplexity=perplexity,
        )
        run.provenance.record([output], inputs, settings)
        result.written.append(output)
    return result
