"""Where in the network, and when, the ratios carry the category: the ``decode`` step.

At every epoch, the category is decoded linearly from each EN layer's 3 ratios, from each
stage's (the stem and the four ResNet stages), and from all of them, and the same from the
statistics the layer's head read (its input's per-channel mean and log-std: what any function
of them could reach) and from a random head's ratios on those statistics (the control of the
verdict). The decoder is scikit-learn's ridge classifier on z-scored features with a fixed
penalty (``ALPHA``), scored by leave-one-out over the images - exact and in closed form
(``RidgeClassifierCV``'s efficient leave-one-out, one penalty, so no choice leaks into the
score). Each accuracy has a 95% Wilson interval over the images (leave-one-out predictions
share their training sets, so it is indicative) and the chance level 1 / categories beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.linear_model import RidgeClassifierCV

from .controls import random_head_ratios
from .runs import Ratios, Run
from .spaces import standardize

ALPHA = 1.0  # the ridge penalty on z-scored features
SPACES = ("ratios", "random-head", "statistics")
COLUMNS = [
    "epoch",
    "space",
    "level",
    "name",
    "index",
    "dims",
    "accuracy",
    "ci_low",
    "ci_high",
    "chance",
]


def stage(layer_name: str) -> str:
    """The ResNet stage of an EN layer (``layer3.2.bn1`` -> ``layer3``; the stem's -> ``stem``)."""
    first = layer_name.split(".")[0]
    return first if first.startswith("layer") else "stem"


def loo_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of a ridge classifier (``ALPHA``) on z-scored ``x``."""
    x = standardize(x)
    if not x.shape[1] or not np.abs(x).sum():
        return float(np.bincount(labels).max() / len(labels))  # nothing varies: the majority
    # with a scoring set, cv_results_ holds the leave-one-out decision values (without one,
    # their squared errors)
    model = RidgeClassifierCV(alphas=[ALPHA], store_cv_results=True, scoring="accuracy")
    model.fit(x, labels)
    values = model.cv_results_[:, :, 0]  # (N, classes), or (N, 1) for two: positive = second
    chosen = values.argmax(1) if values.shape[1] > 1 else (values[:, 0] > 0).astype(int)
    predicted = model.classes_[chosen]
    return float((predicted == labels).mean())


def feature_sets(names: list[str]) -> list[tuple[str, str, int, list[int]]]:
    """(level, name, index, layers) for each layer, each stage and all layers."""
    sets = [("layer", name, j, [j]) for j, name in enumerate(names)]
    stages = list(dict.fromkeys(stage(n) for n in names))
    for i, s in enumerate(stages):
        sets.append(("stage", s, i, [j for j, n in enumerate(names) if stage(n) == s]))
    sets.append(("all", "all", 0, list(range(len(names)))))
    return sets


def columns(r: Ratios, space: str, layers: list[int], heads: np.ndarray | None) -> np.ndarray:
    """(N, D) the features of ``layers`` in a space: their ratios, a random head's (``heads``,
    (N, L, K)), or their channels' statistics (mean and log-std)."""
    if space in ("ratios", "random-head"):
        ratios = r.ratios if space == "ratios" else heads
        return ratios[:, layers].reshape(len(ratios), -1)
    inputs = r.head_inputs
    channels = np.concatenate([np.r_[inputs.layer(j)] for j in layers])
    return np.concatenate([inputs.mean[:, channels], inputs.logstd[:, channels]], 1)


def decoding_table(run: Run, epochs: list[int] | None = None) -> pd.DataFrame:
    """``decoding.csv``: one row per (epoch, space, feature set) (``COLUMNS``)."""
    seed = run.config.analysis.control_seed
    rows = []
    for e in epochs or run.extracted_epochs():
        r = run.ratios(e)
        n_classes = len(r.present)
        spaces = SPACES if r.head_inputs is not None else ("ratios",)
        heads = None
        if "random-head" in spaces:
            heads = random_head_ratios(r.head_inputs, r.ratios, range(1), seed)[0]
        for space in spaces:
            for level, name, index, layers in feature_sets(r.layer_names):
                x = columns(r, space, layers, heads)
                accuracy = loo_accuracy(x, r.labels)
                hits = round(accuracy * len(r.labels))
                ci = binomtest(hits, len(r.labels)).proportion_ci(method="wilson")
                rows.append(
                    dict(
                        epoch=e,
                        space=space,
                        level=level,
                        name=name,
                        index=index,
                        dims=x.shape[1],
                        accuracy=accuracy,
                        ci_low=ci.low,
                        ci_high=ci.high,
                        chance=1 / n_classes,
                    )
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def write_decoding(
    run: Run, epochs: list[int] | None = None, force: bool = False
) -> tuple[pd.DataFrame, bool]:
    """The ``decode`` step: ``analysis/decoding.csv``, unless up to date; (table, written)."""
    written = run.write_table("decoding.csv", lambda e: decoding_table(run, e), epochs, force)
    return run.decoding(), written
