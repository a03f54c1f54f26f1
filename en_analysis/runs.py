"""The ``Run`` object: everything a run folder holds, readable from a notebook in one call each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from .checkpoints import list_checkpoints, load_checkpoint, model_from_checkpoint
from .config import Config, read_config
from .errors import UserError
from .io import load_npz

NPZ_EPOCH = "epoch-{:03d}.npz"


@dataclass
class Ratios:
    """One epoch's ratios over the evaluation subset."""

    ratios: np.ndarray  # (N, L, K) float32
    labels: np.ndarray  # (N,) class index into ``categories``
    sample_index: np.ndarray  # (N,) index into the held-out split
    layer_names: list[str]  # (L,) module paths in forward order
    normalizers: list[str]  # (K,)
    categories: list[str]  # every class name of the dataset
    synsets: list[str]  # WordNet synset per class ("" if unknown)
    epoch: int
    features: np.ndarray | None = None  # (N, D) penultimate features
    predictions: np.ndarray | None = None  # (N,) predicted class
    random_head: np.ndarray | None = None  # (N, L, K) with random ratio sub-networks (control)

    @classmethod
    def load(cls, path: Path) -> Ratios:
        d = load_npz(path)
        try:
            ratios = cls(
                ratios=d["ratios"],
                labels=d["labels"],
                sample_index=d["sample_index"],
                layer_names=d["layer_names"].tolist(),
                normalizers=d["normalizers"].tolist(),
                categories=d["categories"].tolist(),
                synsets=d["synsets"].tolist(),
                epoch=int(d["epoch"]),
                features=d.get("features"),
                predictions=d.get("predictions"),
                random_head=d.get("random_head"),
            )
        except KeyError as e:
            raise UserError(f"{path} is not an en-analysis ratio file (no {e})") from None
        ratios._check(path)
        return ratios

    def _check(self, path: Path) -> None:
        """Values no extraction writes: NaN or infinite ratios, labels outside the categories."""
        for name in ("ratios", "random_head"):
            values = getattr(self, name)
            if values is not None and not np.isfinite(values).all():
                raise UserError(f"{path} holds NaN or infinite {name}: extract it again (--force)")
        if len(self.labels) and (
            self.labels.min() < 0 or self.labels.max() >= len(self.categories)
        ):
            raise UserError(
                f"{path} has labels outside its {len(self.categories)} categories: extract it again"
            )

    @property
    def vectors(self) -> np.ndarray:
        """(N, L * K): each sample's ratio vector (159-D for EN-ResNet50), layer-major."""
        return self.ratios.reshape(len(self.ratios), -1)

    @property
    def present(self) -> list[int]:
        """The class indices present in the subset, in order of first appearance."""
        return list(dict.fromkeys(self.labels.tolist()))

    @property
    def sample_categories(self) -> list[str]:
        return [self.categories[i] for i in self.labels]

    def to_frame(self) -> pd.DataFrame:
        """Long format: one row per (sample, layer, normalizer)."""
        n, layers, k = self.ratios.shape
        return pd.DataFrame(
            {
                "epoch": self.epoch,
                "sample": np.repeat(self.sample_index, layers * k),
                "category": np.repeat(np.array(self.categories)[self.labels], layers * k),
                "layer_index": np.tile(np.repeat(np.arange(layers), k), n),
                "layer": np.tile(np.repeat(np.array(self.layer_names), k), n),
                "normalizer": np.tile(np.array(self.normalizers), n * layers),
                "ratio": self.ratios.reshape(-1),
            }
        )


class Run:
    """A run folder: config, metrics, checkpoints, ratios, embeddings and analysis tables."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "config.toml").is_file():
            raise UserError(f"{self.path} is not a run folder (no config.toml)")
        self.config: Config = read_config(self.path / "config.toml")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, epochs={self.epochs})"

    @property
    def checkpoints(self) -> dict[int, Path]:
        return list_checkpoints(self.path)

    @property
    def epochs(self) -> list[int]:
        """Epochs with a checkpoint."""
        return list(self.checkpoints)

    def _files(self, folder: str) -> dict[int, Path]:
        d = self.path / folder
        if not d.is_dir():
            return {}
        found = {}
        for p in d.glob("epoch-*.npz"):
            try:
                found[int(p.stem.split("-")[1])] = p
            except ValueError:
                continue
        return dict(sorted(found.items()))

    @property
    def ratio_epochs(self) -> list[int]:
        """Epochs whose ratios have been extracted."""
        return list(self._files("ratios"))

    @property
    def embedding_epochs(self) -> list[int]:
        """Epochs whose t-SNE embedding has been computed."""
        return list(self._files("embeddings"))

    @property
    def label(self) -> str:
        """What the run's figures say it is: the data it used and the run folder's name."""
        from .data import describe_data

        return f"{describe_data(self.config.data)}, run {self.path.name}"

    def extracted_epochs(self) -> list[int]:
        """``ratio_epochs``, or one clear error naming the step to run when there are none."""
        if not self.ratio_epochs:
            raise UserError(
                f"{self.path} has no extracted ratios (run `en-analysis extract {self.path}` first)"
            )
        return self.ratio_epochs

    def embedded_epochs(self) -> list[int]:
        """``embedding_epochs`` that also have ratios, or one clear error naming the steps to
        run when there are none."""
        epochs = [e for e in self.embedding_epochs if e in set(self.ratio_epochs)]
        if not epochs:
            raise UserError(
                f"{self.path} has no embedded epochs (run `en-analysis extract {self.path}` and "
                f"`en-analysis embed {self.path}` first)"
            )
        return epochs

    def ratios_path(self, epoch: int) -> Path:
        from .ratios import ratios_path

        return ratios_path(self.path, epoch)

    def ratios(self, epoch: int) -> Ratios:
        path = self.ratios_path(epoch)
        if not path.exists():
            raise UserError(
                f"no ratios for epoch {epoch} in {self.path} (run `en-analysis extract "
                f"{self.path}`); extracted: {self.ratio_epochs or 'none'}"
            )
        return Ratios.load(path)

    def embedding(self, epoch: int) -> dict[str, np.ndarray]:
        """The 2-D t-SNE embedding of an epoch and the settings it was made with."""
        path = self.path / "embeddings" / NPZ_EPOCH.format(epoch)
        if not path.exists():
            raise UserError(f"no embedding for epoch {epoch} (run `en-analysis embed {self.path}`)")
        return load_npz(path)

    def pixels(self) -> dict[str, np.ndarray]:
        """The evaluation images' raw pixels (the input baseline)."""
        return load_npz(self.path / "ratios" / "pixels.npz")

    def checkpoint(self, epoch: int) -> dict:
        if epoch not in self.checkpoints:
            raise UserError(f"no checkpoint for epoch {epoch}; available: {self.epochs}")
        return load_checkpoint(self.checkpoints[epoch])

    def model(self, epoch: int) -> nn.Module:
        """The model of an epoch, weights loaded, in eval mode."""
        path = self.checkpoints.get(epoch)
        return model_from_checkpoint(self.checkpoint(epoch), path).eval()

    def metrics(self) -> pd.DataFrame:
        """Training metrics, one row per epoch."""
        return self._table("metrics.csv")

    def _table(self, name: str) -> pd.DataFrame:
        path = self.path / name
        if not path.exists():
            raise UserError(f"{path} does not exist yet")
        return pd.read_csv(path)

    def category_stats(self) -> pd.DataFrame:
        """Per (epoch, category, layer, normalizer) ratio statistics (``en-analysis export``)."""
        return self._table("analysis/category_stats.csv")

    def explore(self, epochs: list[int] | None = None):
        """The interactive explorer of the run's embedded epochs (``explorer.Explorer``): shows
        inline in Jupyter; ``.write_html(path)`` writes the offline page."""
        from .explorer import explorer

        return explorer(self, epochs)

    def clustering(self) -> pd.DataFrame:
        return self._table("analysis/clustering.csv")

    def wordnet(self) -> pd.DataFrame:
        return self._table("analysis/wordnet.csv")
