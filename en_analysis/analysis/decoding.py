"""Where in the network, and when, the ratios carry the category: the ``decode`` step.

At every epoch, the category is decoded linearly from each EN layer's 3 ratios, from each
stage's (the stem and the four ResNet stages), and from all of them, and the same from the
statistics the layer's head read (its input's per-channel mean and log-std: what any function
of them could reach) and from a random head's ratios on those statistics (the control of the
verdict). The decoder is a ridge classifier (scikit-learn's ``RidgeClassifier``: one-hot
targets, an unpenalised intercept) on z-scored features with a fixed penalty (``ALPHA``, so no
choice leaks into the score), scored by leave-one-out over the images, exactly and in closed
form (``loo_accuracy``). Each accuracy has a 95% Wilson interval over the images and the chance
level beside it. The interval is indicative: leave-one-out predictions share their training
sets, and on simulated categories (10 x 50 images, 3-159 features:
``simulate.decoding_interval``) it covered the expected accuracy in 83-92% of draws with a
signal (70-91% without one: there leave-one-out sits below chance), while its lower bound
exceeded chance under no signal in 1.2-2.0% of draws (a one-sided 2.5% test): "above chance"
is not overstated. No verdict uses it.
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
    than images, in the images (the same H, from the Gram matrix: ``gram_loo_accuracy``)."""
    return _standardized_loo_accuracy(standardize(x), np.asarray(labels), alpha)


def _standardized_loo_accuracy(x: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> float:
    """``loo_accuracy`` of features already z-scored."""
    if x.shape[1] >= len(x):
        return gram_loo_accuracy(x @ x.T, labels, alpha)
    if not x.shape[1] or not np.abs(x).sum():
        return _majority(labels)
    y, codes = _targets(labels)
    y_centred = y - y.mean(0)
    c = y.shape[1]  # H_c = X (X'X + aI)^-1 X'
    solved = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), np.c_[x.T @ y_centred, x.T])
    return _left_out_accuracy(x @ solved[:, :c], (x * solved[:, c:].T).sum(1), y, codes)


def gram_loo_accuracy(gram: np.ndarray, labels: np.ndarray, alpha: float = ALPHA) -> float:
    """``loo_accuracy`` from K = XX' (N x N) of the z-scored features: H_c = K (K + aI)^-1 =
    I - a (K + aI)^-1. The Gram matrix of several feature blocks is the sum of theirs."""
    labels = np.asarray(labels)
    if not np.abs(gram).sum():
        return _majority(labels)
    y, codes = _targets(labels)
    y_centred = y - y.mean(0)
    inverse = np.linalg.inv(gram + alpha * np.eye(len(gram)))
    fitted = y_centred - alpha * inverse @ y_centred
    return _left_out_accuracy(fitted, 1 - alpha * np.diag(inverse), y, codes)


def _majority(labels: np.ndarray) -> float:
    """The accuracy of predicting the commonest category: nothing varies."""
    return float(np.bincount(labels).max() / len(labels))


def _targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot targets (N, C), class codes (N,))."""
    classes, codes = np.unique(labels, return_inverse=True)
    return np.eye(len(classes))[codes], codes


def _left_out_accuracy(
    fitted: np.ndarray, leverage: np.ndarray, y: np.ndarray, codes: np.ndarray
) -> float:
    """From the centred fit and H_c's diagonal: add the intercept, leave each image out."""
    fitted = fitted + y.mean(0)
    leverage = leverage + 1 / len(y)
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


def set_accuracies(
    blocks: list[np.ndarray], sets: list[tuple[str, str, int, list[int]]], labels: np.ndarray
) -> list[float]:
    """``loo_accuracy`` of each feature set (``feature_sets``) from each layer's z-scored
    columns (``blocks``): a set with fewer features than images from its columns, a wider one
    from the sum of its layers' Gram matrices (each computed once)."""
    grams: dict[int, np.ndarray] = {}

    def gram(j: int) -> np.ndarray:
        if j not in grams:
            grams[j] = blocks[j] @ blocks[j].T
        return grams[j]

    out = []
    for _, _, _, layers in sets:
        if sum(blocks[j].shape[1] for j in layers) < len(labels):
            x = np.concatenate([blocks[j] for j in layers], 1)
            out.append(_standardized_loo_accuracy(x, labels))
        else:
            out.append(gram_loo_accuracy(sum(gram(j) for j in layers), labels))
    return out


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
        sets = feature_sets(r.layer_names)
        for space in spaces:
            blocks = [standardize(columns(r, space, [j], heads)) for j in range(len(r.layer_names))]
            accuracies = set_accuracies(blocks, sets, r.labels)
            for (level, name, index, layers), accuracy in zip(sets, accuracies, strict=True):
                low, high = wilson(round(accuracy * len(r.labels)), len(r.labels))
                rows.append(
                    dict(
                        epoch=e,
                        space=space,
                        level=level,
                        name=name,
                        index=index,
                        dims=sum(blocks[j].shape[1] for j in layers),
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
    )
    table = run.decoding()
    best = table[table.level != "layer"].pivot_table(
        index=["space", "name"], columns="epoch", values="accuracy"
    )
    text = "accuracy, first and last epoch:\n" + best.iloc[:, [0, -1]].round(3).to_string()
    path = run.files.table("decoding.csv")
    return StepResult.of("decode", [path], written, table=table, summary=text)
