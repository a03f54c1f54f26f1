"""Every path of a run folder, defined once.

::

    RUN/
      config.toml          the resolved settings; [analysis] is the default analysis's
      run.json             the run's identity (every checkpoint carries it) and its resumes
      metrics.csv          one row per epoch
      checkpoints/         epoch-000.pt (the initial weights), epoch-001.pt, ...
      ratios/ embeddings/ analysis/ figures/ projector/ provenance.json
                           the default analysis: what each step wrote, and what from
      analyses/NAME/       a named analysis: analysis.toml (its settings) and the same folders

A run's training files sit at its top; each analysis (``--analysis NAME``) has its own folder
of outputs, so analyses with other settings live side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

DEFAULT_ANALYSIS = "default"
ANALYSIS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # whole names: fullmatch
EPOCH_FILE = re.compile(r"epoch-(\d{3,})(\.\w+)")


def epoch_file(folder: Path, epoch: int, suffix: str) -> Path:
    """The file of ``epoch`` in ``folder``: ``epoch-XXX<suffix>`` (at least three digits)."""
    return folder / f"epoch-{epoch:03d}{suffix}"


def epoch_files(folder: Path, suffix: str) -> dict[int, Path]:
    """Epoch -> file for every ``epoch-XXX<suffix>`` in ``folder``, in epoch order."""
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = EPOCH_FILE.fullmatch(p.name)
            if m and m.group(2) == suffix:
                found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def check_analysis_name(name: str) -> str:
    """Return ``name`` if it is a valid analysis name (1 to 64 letters, digits, ``.``, ``_``
    or ``-``, starting with a letter or digit), else raise ``UserError``."""
    if not ANALYSIS_NAME.fullmatch(name):
        raise UserError(
            f"analysis name {name!r} must be a plain name of 1 to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class AnalysisLayout:
    """The folders and files of one analysis of a run."""

    run: Path
    name: str = DEFAULT_ANALYSIS

    @property
    def root(self) -> Path:
        """The analysis's folder: the run folder for the default analysis, else
        ``analyses/NAME/``."""
        if self.name == DEFAULT_ANALYSIS:
            return self.run
        return self.run / "analyses" / self.name

    @property
    def settings(self) -> Path:
        """Where the analysis's settings live (the run's config.toml for the default one)."""
        if self.name == DEFAULT_ANALYSIS:
            return self.run / "config.toml"
        return self.root / "analysis.toml"

    @property
    def ratios(self) -> Path:
        """The folder of the ratio files, ``ratios/``."""
        return self.root / "ratios"

    def ratio_file(self, epoch: int) -> Path:
        """The ratio file of ``epoch``, ``ratios/epoch-XXX.npz``."""
        return epoch_file(self.ratios, epoch, ".npz")

    @property
    def pixels(self) -> Path:
        """The evaluation images' pixels, ``ratios/pixels.npz``."""
        return self.ratios / "pixels.npz"

    @property
    def embeddings(self) -> Path:
        """The folder of the t-SNE maps, ``embeddings/``."""
        return self.root / "embeddings"

    def embedding_file(self, epoch: int) -> Path:
        """The t-SNE map of ``epoch``, ``embeddings/epoch-XXX.npz``."""
        return epoch_file(self.embeddings, epoch, ".npz")

    @property
    def tables(self) -> Path:
        """The folder of the tables, ``analysis/``."""
        return self.root / "analysis"

    def table(self, name: str) -> Path:
        """The table called ``name`` (``"clustering.csv"``, ...) in ``analysis/``."""
        return self.tables / name

    @property
    def figures(self) -> Path:
        """The folder of the figures and the explorer page, ``figures/``."""
        return self.root / "figures"

    @property
    def projector(self) -> Path:
        """The folder of the TensorBoard projector files, ``projector/``."""
        return self.root / "projector"

    @property
    def provenance(self) -> Path:
        """The analysis's ``provenance.json``: each output's digest, inputs and settings."""
        return self.root / "provenance.json"

    def outputs(self) -> list[Path]:
        """Every output file the analysis holds now."""
        folders = (self.ratios, self.embeddings, self.tables, self.figures, self.projector)
        return [p for f in folders if f.is_dir() for p in f.rglob("*") if p.is_file()]


@dataclass(frozen=True)
class RunLayout:
    """The training files of a run folder, and its analyses."""

    root: Path

    @property
    def config(self) -> Path:
        """The run's resolved settings, ``config.toml``."""
        return self.root / "config.toml"

    @property
    def identity(self) -> Path:
        """The run's identity, ``run.json`` (its id, creation, resumes)."""
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        """The training log, ``metrics.csv`` (one row per epoch)."""
        return self.root / "metrics.csv"

    @property
    def lock(self) -> Path:
        """Held by the process writing the run (``io.run_lock``)."""
        return self.root / ".lock"

    @property
    def checkpoints(self) -> Path:
        """The folder of the per-epoch checkpoints, ``checkpoints/``."""
        return self.root / "checkpoints"

    def checkpoint(self, epoch: int) -> Path:
        """The checkpoint of ``epoch``, ``checkpoints/epoch-XXX.pt`` (epoch 0: the initial
        weights)."""
        return epoch_file(self.checkpoints, epoch, ".pt")

    def analysis(self, name: str = DEFAULT_ANALYSIS) -> AnalysisLayout:
        """The layout of the analysis called ``name`` (checked with ``check_analysis_name``)."""
        return AnalysisLayout(self.root, check_analysis_name(name))

    def analysis_names(self) -> list[str]:
        """The default analysis and every named one that has its settings stored."""
        folder = self.root / "analyses"
        named = sorted(
            p.name
            for p in (folder.iterdir() if folder.is_dir() else ())
            if ANALYSIS_NAME.fullmatch(p.name) and (p / "analysis.toml").is_file()
        )
        return [DEFAULT_ANALYSIS, *named]

    TRAINING = ("config.toml", "run.json", "metrics.csv", "checkpoints", ".lock")
