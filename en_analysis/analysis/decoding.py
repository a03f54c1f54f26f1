"""Where in the network, and when, the ratios carry the category: the ``decode`` step.

At every epoch, the category is decoded linearly from each EN layer's 3 ratios, from each
stage's (the stem and the four ResNet stages), and from all of them, and the same from the
statistics the layer's head read (its input's per-channel mean and log-std: what any function
of them could reach) and from a random head's ratios on those statistics (the control of the
verdict). The decoder is a ridge classifier (scikit-learn's ``RidgeClassifier``: one-hot
targets, an unpenalised intercept) on z-scored features with a fixed penalty (``ALPHA``, so no
choice leaks into the score), scored by leave-one-out over the images, exactly and in closed
form (``loo_accuracy``). Each accuracy has a 95% Wilson interval over the images (leave-one-out
predictions share their training sets, so it is indicative) and the chance level beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..run.folder import Ratios, RunFolder
from ..steps.results import StepResult, timed
from .controls import random_head_ratios
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


def loo_accuracy(x: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> float:
    """Leave-one-out accuracy of a ridge classifier (one-hot targets, an unpenalised intercept,
    penalty ``alpha``) on z-scored ``x``: scikit-learn's ``RidgeClassifier`` refitted without each
    image in turn (tested equal), in closed form - the fit is a linear smoother with hat matrix
    H = 11'/n + Xc (Xc'Xc + alpha I)^-1 Xc', so the prediction without image i is
    (yhat_i - H_ii y_i) / (1 - H_ii). Solved in the features or, when there are more features
    than images, in the images (the same H)."""
    labels = np.asarray(labels)
    x = standardize(x)
    n = len(labels)
    if not x.shape[1] or not np.abs(x).sum():
        return float(np.bincount(labels).max() / n)  # nothing varies: the majority
    classes, codes = np.unique(labels, return_inverse=True)
    y = np.eye(len(classes))[codes]
    y_centred = y - y.mean(0)
    if x.shape[1] < n:  # H_c = X (X'X + aI)^-1 X'
        solved = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), np.c_[x.T @ y_centred, x.T])
        fitted = x @ solved[:, : len(classes)]
        leverage = (x * solved[:, len(classes) :].T).sum(1)
    else:  # H_c = K (K + aI)^-1 = I - a (K + aI)^-1, K = XX'
        inverse = np.linalg.inv(x @ x.T + alpha * np.eye(n))
        fitted = y_centred - alpha * inverse @ y_centred
        leverage = 1 - alpha * np.diag(inverse)
    fitted += y.mean(0)
    leverage += 1 / n
    left_out = (fitted - leverage[:, None] * y) / (1 - leverage[:, None])
    return float((left_out.argmax(1) == codes).mean())


def wilson(hits: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion hits / n (z: the normal's 97.5% point)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


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


def decoding_table(
    run: RunFolder, epochs: list[int] | None = None, progress: bool = False
) -> pd.DataFrame:
    """``decoding.csv``: one row per (epoch, space, feature set) (``COLUMNS``); ``progress``:
    a bar over the epochs."""
    seed = run.config.analysis.control_seed
    rows = []
    epochs = epochs or run.extracted_epochs()
    for e in tqdm(epochs, desc="decode", unit="epoch", disable=not progress):
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
                low, high = wilson(round(accuracy * len(r.labels)), len(r.labels))
                rows.append(
                    dict(
                        epoch=e,
                        space=space,
                        level=level,
                        name=name,
                        index=index,
                        dims=x.shape[1],
                        accuracy=accuracy,
                        ci_low=low,
                        ci_high=high,
                        chance=1 / n_classes,
                    )
                )
    return pd.DataFrame(rows, columns=COLUMNS)


@timed
def write_decoding(
    run: RunFolder, epochs: list[int] | None = None, force: bool = False, progress: bool = True
) -> StepResult:
    """The ``decode`` step's table: ``analysis/decoding.csv``, unless up to date (its figure:
    ``plotting.write_decoding_figure``); ``progress``: a bar per epoch."""
    written = run.write_table(
        "decode",
        "decoding.csv",
        lambda e: decoding_table(run, e, progress),
        epochs,
        force,
        embeddings=False,
    )
    table = run.decoding()
    best = table[table.level != "layer"].pivot_table(
        index=["space", "name"], columns="epoch", values="accuracy"
    )
    text = "accuracy, first and last epoch:\n" + best.iloc[:, [0, -1]].round(3).to_string()
    path = run.files.table("decoding.csv")
    return StepResult.of("decode", [path], written, table=table, summary=text)
