"""``RunFolder``: everything a run folder holds, seen through one analysis, readable in one call
each; and the ratio files and embeddings it reads (``Ratios``, ``Embedding``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from ..core.errors import UserError
from ..core.io import load_npz, read_csv, write_csv
from ..core.layout import DEFAULT_ANALYSIS, RunLayout, epoch_files
from ..core.provenance import Provenance
from ..nn.recording import HeadInputs
from ..settings.config import (
    AnalysisConfig,
    Config,
    check_knn,
    read_analysis_settings,
    read_config,
    save_analysis_settings,
    save_config,
    value_of,
)
from ..steps import registry
from ..steps.changes import Changes
from ..training.checkpoints import check_owner, load_checkpoint, model_from_checkpoint, run_identity
from .tables import with_dims

# the columns of ``RunFolder.ratios_frame``: ``Ratios.to_frame``'s with the sample's position in
# its ratio file and its label
RATIO_COLUMNS = (
    "epoch",
    "sample",
    "position",
    "label",
    "category",
    "layer_index",
    "layer",
    "normalizer",
    "ratio",
)


@dataclass
class Embedding:
    """One epoch's 2-D t-SNE embedding of the ratio vectors."""

    embedding: np.ndarray  # (N, 2); zeros when ``degenerate``
    degenerate: bool  # every sample had the same ratio vector: no embedding exists
    labels: np.ndarray  # (N,)
    sample_index: np.ndarray  # (N,)
    epoch: int

    @classmethod
    def load(cls, path: Path) -> Embedding:
        """Read an embedding file (``embeddings/epoch-N.npz``); anything else is a ``UserError``."""
        d = load_npz(path)
        try:
            return cls(
                embedding=d["embedding"],
                degenerate=bool(d["degenerate"]),
                labels=d["labels"],
                sample_index=d["sample_index"],
                epoch=int(d["epoch"]),
            )
        except KeyError as e:
            raise UserError(f"{path} is not an en-analysis embedding (no {e})") from None


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
    head_inputs: HeadInputs | None = None  # what each layer's head read (for the controls)

    @classmethod
    def load(cls, path: Path) -> Ratios:
        """Read a ratio file (``ratios/epoch-N.npz``), refusing one that is not an en-analysis
        ratio file or holds values no extraction writes (``UserError``)."""
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
                head_inputs=HeadInputs.from_arrays(d),
            )
        except KeyError as e:
            raise UserError(f"{path} is not an en-analysis ratio file (no {e})") from None
        ratios._check(path)
        return ratios

    def _check(self, path: Path) -> None:
        """Values no extraction writes: NaN or infinite ratios, labels outside the categories."""
        inputs = self.head_inputs
        arrays = {"ratios": self.ratios}
        if inputs is not None:
            arrays.update(head_inputs=np.concatenate([inputs.mean, inputs.logstd], 1))
        for name, values in arrays.items():
            if not np.isfinite(values).all():
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
        """(N,) each sample's category name."""
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


class RunFolder:
    """A run folder, seen through one of its analyses (``default`` unless named).

    The training side (config, metrics, checkpoints) is the run's; ratios, embeddings, tables
    and figures are the analysis's (``files``), and ``config.analysis`` holds its settings.
    Every path comes from ``layout`` (``en_analysis.layout``); every output's freshness from
    ``provenance``.
    """

    def __init__(self, path: str | Path, analysis: str = DEFAULT_ANALYSIS) -> None:
        self.path = Path(path)
        self.layout = RunLayout(self.path)
        if not self.layout.config.is_file():
            raise UserError(f"{self.path} is not a run folder (no config.toml)")
        self.config: Config = read_config(self.layout.config)
        self.files = self.layout.analysis(analysis)
        if self.files.name != DEFAULT_ANALYSIS and self.files.settings.is_file():
            self.config.analysis = read_analysis_settings(self.files.settings)
        self.provenance = Provenance(self.files.provenance, self.path)

    def __repr__(self) -> str:
        named = "" if self.analysis == DEFAULT_ANALYSIS else f", analysis={self.analysis!r}"
        return f"{type(self).__name__}({str(self.path)!r}{named}, epochs={self.epochs})"

    @property
    def analysis(self) -> str:
        """The name of the analysis this run folder is seen through."""
        return self.files.name

    def analyses(self) -> list[str]:
        """The run's analyses: ``default`` and every named one."""
        return self.layout.analysis_names()

    def open(self, analysis: str) -> RunFolder:
        """The same run seen through another analysis (its settings, its outputs)."""
        return type(self)(self.path, analysis)

    def configure(self, settings: AnalysisConfig, replace: bool = False) -> None:
        """Use ``settings`` as this analysis's settings (``save_settings`` stores them).

        An analysis whose outputs were made with other settings is never changed silently: a
        change that would redo a step that has outputs here (``steps.changes``) is refused in
        one line naming the setting, unless ``replace`` (the steps that read it then redo their
        outputs, and only those).
        """
        if not replace:
            changes = Changes.of_analysis(self.config.analysis, settings)
            changes.refuse_on_analysis(self.analysis, self.path, self.steps_with_outputs())
        self.config.analysis = settings

    def steps_with_outputs(self) -> list[str]:
        """The steps (``steps.registry``) that have written a file of this analysis."""
        written = {registry.writing(self._relative(p)) for p in self.files.outputs()}
        return [s.name for s in registry.STEPS if s in written]

    def _relative(self, path: Path) -> str:
        return Path(path).relative_to(self.files.root).as_posix()

    def save_settings(self) -> None:
        """Store the analysis's settings where they live (the run's config.toml for the default
        analysis, ``analysis.toml`` for a named one) when they differ from the stored ones."""
        path = self.files.settings
        if self.analysis == DEFAULT_ANALYSIS:
            stored = read_config(path)
            if stored.analysis != self.config.analysis:
                stored.analysis = self.config.analysis
                save_config(stored, path)
        elif not path.is_file() or read_analysis_settings(path) != self.config.analysis:
            save_analysis_settings(self.config.analysis, path)

    @property
    def identity(self) -> dict:
        """``run.json``: the run's id (carried by each of its checkpoints), when it was made and
        the settings its resumes changed (from which epoch); empty for runs made before."""
        return run_identity(self.path)

    @property
    def checkpoints(self) -> dict[int, Path]:
        """The run's checkpoint files by epoch, in order."""
        return epoch_files(self.layout.checkpoints, ".pt")

    @property
    def epochs(self) -> list[int]:
        """Epochs with a checkpoint."""
        return list(self.checkpoints)

    @property
    def ratio_epochs(self) -> list[int]:
        """Epochs whose ratios have been extracted."""
        return list(epoch_files(self.files.ratios, ".npz"))

    @property
    def embedding_epochs(self) -> list[int]:
        """Epochs whose t-SNE embedding has been computed."""
        return list(epoch_files(self.files.embeddings, ".npz"))

    @property
    def label(self) -> str:
        """What the run's figures say it is: the data it used, the run folder's name and the
        analysis when it is not the default one."""
        from ..data import describe_data

        named = "" if self.analysis == DEFAULT_ANALYSIS else f", analysis {self.analysis}"
        return f"{describe_data(self.config.data)}, run {self.path.name}{named}"

    def _hint(self, step: str) -> str:
        named = "" if self.analysis == DEFAULT_ANALYSIS else f" --analysis {self.analysis}"
        return f"`en-analysis {step} {self.path}{named}`"

    def extracted_epochs(self) -> list[int]:
        """``ratio_epochs``, or one clear error naming the step to run when there are none."""
        if not self.ratio_epochs:
            raise UserError(
                f"{self.path} has no extracted ratios (run {self._hint('extract')} first)"
            )
        return self.ratio_epochs

    def embedded_epochs(self) -> list[int]:
        """``embedding_epochs`` that also have ratios, or one clear error naming the steps to
        run when there are none."""
        epochs = [e for e in self.embedding_epochs if e in set(self.ratio_epochs)]
        if not epochs:
            raise UserError(
                f"{self.path} has no embedded epochs (run {self._hint('extract')} and "
                f"{self._hint('embed')} first)"
            )
        return epochs

    def ratios(self, epoch: int) -> Ratios:
        """An epoch's ratio file; a missing one is a ``UserError`` naming the step to run."""
        path = self.files.ratio_file(epoch)
        if not path.exists():
            raise UserError(
                f"no ratios for epoch {epoch} in {self.path} (run {self._hint('extract')}); "
                f"extracted: {self.ratio_epochs or 'none'}"
            )
        return Ratios.load(path)

    def ratios_frame(self, epochs: list[int] | None = None) -> pd.DataFrame:
        """Every extracted epoch's ratios (or those of ``epochs``) as one long table, one row
        per (epoch, sample, layer, normalizer): ``RATIO_COLUMNS``.

        The columns are ``Ratios.to_frame``'s (``sample``: the image's index in the held-out
        split; ``layer_index`` and ``layer``: the EN layer's position and module path) with
        ``position`` (the sample's row in the epoch's ratio file, 0..N-1) and ``label`` (its
        class index into the categories) added. An epoch without ratios is a ``UserError``
        naming the step to run."""
        frames = []
        for epoch in epochs or self.extracted_epochs():
            r = self.ratios(epoch)
            frame = r.to_frame()
            n, layers, k = r.ratios.shape
            frame.insert(2, "position", np.repeat(np.arange(n), layers * k))
            frame.insert(3, "label", np.repeat(r.labels, layers * k))
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)[list(RATIO_COLUMNS)]

    def embedding(self, epoch: int) -> Embedding:
        """The 2-D t-SNE embedding of an epoch; one made from other images than the epoch's
        ratio file (re-extracted since) is refused."""
        path = self.files.embedding_file(epoch)
        if not path.exists():
            raise UserError(f"no embedding for epoch {epoch} (run {self._hint('embed')})")
        embedding = Embedding.load(path)
        ratios = self.files.ratio_file(epoch)
        if ratios.exists() and not np.array_equal(
            load_npz(ratios, ("sample_index",))["sample_index"], embedding.sample_index
        ):
            raise UserError(
                f"the embedding of epoch {epoch} was made from other images than its ratios "
                f"(extracted again since): run {self._hint('embed')}"
            )
        return embedding

    def pixels(self) -> dict[str, np.ndarray]:
        """The evaluation images' raw pixels (the input baseline)."""
        return load_npz(self.files.pixels)

    def checkpoint(self, epoch: int) -> dict:
        """An epoch's checkpoint, read safely; one of another run is refused by name."""
        if epoch not in self.checkpoints:
            raise UserError(f"no checkpoint for epoch {epoch}; available: {self.epochs}")
        path = self.checkpoints[epoch]
        state = load_checkpoint(path)
        check_owner(state, path, self.identity.get("id", ""), self.config)
        return state

    def model(self, epoch: int) -> nn.Module:
        """The model of an epoch, weights loaded, in eval mode."""
        return model_from_checkpoint(self.checkpoint(epoch), self.checkpoints[epoch]).eval()

    def step_settings(self, step: str) -> dict:
        """The settings (``section.key``) the step ``step`` reads, with this analysis's values:
        what its outputs' provenance records, so a setting redoes only the steps that read it;
        and the step's ``method`` once it has been revised."""
        declared = registry.step(step)
        settings = {key: value_of(self.config, key) for key in declared.reads}
        return settings | ({"method": declared.method} if declared.method > 1 else {})

    def analysis_inputs(self, epochs: list[int] | None = None) -> list[Path]:
        """What the tables and figures of ``epochs`` (default: every extracted one) are made
        from: their ratio files, the embeddings that exist and the pixel baseline."""
        epochs = epochs or self.extracted_epochs()
        embeddings = [self.files.embedding_file(e) for e in epochs]
        return [
            *(self.files.ratio_file(e) for e in epochs),
            *(p for p in embeddings if p.exists()),
            self.files.pixels,
        ]

    def _step_writing(self, path: Path) -> str | None:
        """The step that writes ``path`` when it is one of this analysis's files, else None."""
        if not Path(path).is_relative_to(self.files.root):
            return None
        step = registry.writing(self._relative(path))
        return step.name if step else None

    def check_inputs(self, inputs: list[Path]) -> None:
        """Refuse, in one line naming the step to rerun, an input written by a step of this
        analysis that is not the file the step recorded (edited or replaced since): its numbers
        would pass for the step's."""
        changed = self.provenance.changed(p for p in map(Path, inputs) if self._step_writing(p))
        if changed:
            step = self._step_writing(changed[0])
            raise UserError(
                f"{changed[0]} is not the file `en-analysis {step}` wrote (changed since): run "
                f"{self._hint(step)} to make it again"
            )

    def make(
        self,
        outputs: list[Path],
        inputs: list[Path],
        settings: dict,
        write: Callable[[], object],
        force: bool = False,
    ) -> bool:
        """Call ``write`` (which writes ``outputs``) unless they are up to date with ``inputs``
        and ``settings`` (``provenance``), then record what they were made from; True if written.
        Inputs that another step wrote must be the files it recorded (``check_inputs``)."""
        self.check_inputs(inputs)
        if not force and self.provenance.all_current(outputs, inputs, settings):
            return False
        write()
        self.provenance.record(outputs, inputs, settings)
        return True

    def write_table(
        self,
        step: str,
        name: str,
        compute: Callable[[list[int]], pd.DataFrame],
        epochs: list[int] | None = None,
        force: bool = False,
    ) -> bool:
        """Write the analysis table ``name`` = ``compute(epochs)`` (default: every extracted
        epoch), made from those epochs' files the step ``step`` declares reading (ratios,
        embeddings, pixels: ``analysis_inputs``) with the settings it reads, unless it is up to
        date; True if written."""
        epochs = epochs or self.extracted_epochs()
        path = self.files.table(name)
        patterns = registry.step(step).inputs
        inputs = [
            p
            for p in self.analysis_inputs(epochs)
            if any(fnmatch(self._relative(p), pattern) for pattern in patterns)
        ]
        settings = self.step_settings(step)

        def write() -> None:
            # the number of samples is known once they are extracted
            check_knn(self.config.analysis, len(self.ratios(epochs[0]).labels))
            write_csv(path, compute(epochs))

        return self.make([path], inputs, settings, write, force)

    def metrics(self) -> pd.DataFrame:
        """Training metrics, one row per epoch."""
        return self._table(self.layout.metrics)

    def _table(self, path: Path) -> pd.DataFrame:
        if not path.exists():
            raise UserError(f"{path} does not exist yet")
        return read_csv(path)

    def category_stats(self) -> pd.DataFrame:
        """Per (epoch, category, layer, normalizer) ratio statistics (``en-analysis export``)."""
        return self._table(self.files.table("category_stats.csv"))

    def decoding(self) -> pd.DataFrame:
        """``analysis/decoding.csv``: the category decoded from each layer's ratios (``decode``)."""
        return self._table(self.files.table("decoding.csv"))

    def stability(self) -> pd.DataFrame:
        """``analysis/stability.csv``: CKA and RDM correlations between epochs (``stability``)."""
        return self._table(self.files.table("stability.csv"))

    def ablation(self) -> pd.DataFrame:
        """``analysis/ablation.csv``: test accuracy with the ratios replaced (``ablate``)."""
        return self._table(self.files.table("ablation.csv"))

    def clustering(self) -> pd.DataFrame:
        """``analysis/clustering.csv``: the clustering metrics per epoch and space (``metrics``)."""
        return self._table(self.files.table("clustering.csv"))

    def wordnet(self) -> pd.DataFrame:
        """``wordnet.csv``; one written before it had a ``dims`` column reads as a new one."""
        return with_dims(self._table(self.files.table("wordnet.csv")))
