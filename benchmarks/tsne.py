"""openTSNE vs sklearn.manifold.TSNE on ratio-like matrices (N = 500 and N = 10,000), and the
whole embed step of the default run's shape (13 epochs x 500 x 159) with the default settings."""

from __future__ import annotations

import time

import numpy as np
from sklearn.manifold import TSNE as SkTSNE

from en_analysis.analysis.embedding import embed_sequence, tsne
from en_analysis.settings.config import load_config


def ratio_like(n: int, seed: int = 0) -> np.ndarray:
    """Ten planted categories in 159-D, z-scored like the default scaling."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (10, 159))
    x = centres[np.arange(n) % 10] + rng.normal(0, 1.5, (n, 159))
    return (x - x.mean(0)) / x.std(0)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    for n in (500, 10_000):
        x = ratio_like(n)
        ours = timed(lambda x=x: tsne(x, 30, seed=0, n_jobs=1))
        theirs = timed(
            lambda x=x: SkTSNE(perplexity=30, init="pca", random_state=0).fit_transform(x)
        )
        print(
            f"N = {n}: openTSNE {ours:.1f} s, sklearn {theirs:.1f} s, "
            f"sklearn/openTSNE = {theirs / ours:.2f}"
        )
    a = load_config("fashion-mnist").analysis
    epochs = [ratio_like(500, seed) for seed in range(13)]
    total = timed(lambda: embed_sequence(epochs, a))
    print(
        f"default embed step ({a.tsne_mode}, 13 epochs x 500 x 159): {total:.1f} s "
        "(target < 60 s on 2 cores)"
    )


if __name__ == "__main__":
    main()
