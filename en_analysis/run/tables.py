"""The vocabulary of the long tables (``clustering.csv``, ``wordnet.csv``, ``replicates.csv``,
``verdict.csv``), named once: the feature spaces, their dimensions and the metrics, and one small
query instead of hand-written masks: ``select(table, space=Space.RATIOS, dims=Dims.HIGH,
metric=Metric.KNN, epoch=12)``.

A space is one name everywhere: the t-SNE map of the ratios is space ``ratios`` with dims ``2d``
in every table.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd


class Space(StrEnum):
    """The feature spaces the analyses compare (the values are the tables' strings)."""

    RATIOS = "ratios"  # the L x K ratio vectors, in the analysis's scaling
    RANDOM_HEAD = "random-head"  # a random ratio head on the same statistics (the control)
    STATISTICS = "statistics"  # what the ratio heads read, z-scored
    FEATURES = "features"  # the penultimate features, z-scored
    PIXELS = "pixels"  # the evaluation images' pixels, z-scored


class Dims(StrEnum):
    """A space as it is (``high``) or its t-SNE map (``2d``, the ratios only)."""

    HIGH = "high"
    MAP = "2d"


class Metric(StrEnum):
    """The clustering metrics of ``clustering.csv``."""

    SILHOUETTE = "silhouette"
    KNN = "knn"  # leave-one-out k-NN accuracy
    TRUSTWORTHINESS = "trustworthiness"  # of the 2-D map
    CENTROID_SHIFT = "centroid_shift"


def select(table: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """The rows of a long table whose columns have the given values (a list or tuple: any of
    them), in the table's order."""
    keep = np.ones(len(table), bool)
    for column, value in where.items():
        values = list(value) if isinstance(value, list | tuple | set) else [value]
        keep &= table[column].isin(values).to_numpy()
    return table[keep]


def one(table: pd.DataFrame, **where: Any) -> pd.Series:
    """The first row that ``select`` finds; a ``KeyError`` naming the query when none."""
    rows = select(table, **where)
    if rows.empty:
        raise KeyError(where)
    return rows.iloc[0]


def with_dims(wordnet: pd.DataFrame) -> pd.DataFrame:
    """A ``wordnet.csv`` table with its ``dims`` column: tables written before it named the
    t-SNE map space ``ratios-2d``; read, they say ``ratios`` / ``2d`` like the new ones."""
    if "dims" in wordnet.columns:
        return wordnet
    old = wordnet.space == "ratios-2d"
    out = wordnet.assign(space=wordnet.space.where(~old, str(Space.RATIOS)))
    out.insert(
        out.columns.get_loc("space") + 1, "dims", np.where(old, str(Dims.MAP), str(Dims.HIGH))
    )
    return out
