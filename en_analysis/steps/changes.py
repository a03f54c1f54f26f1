"""What a changed setting redoes, decided in one place from the declarations: each setting's
``Effect`` (``settings``) and the settings each step reads (``registry``).

- ``run``: the trained run's own (model, data, seed, batch size): refused on a trained run;
- ``schedule``: what only the epochs still to train use: a resume changes it from its next epoch
  and ``run.json`` records it; on a run trained to its last epoch, a change no epoch would use is
  refused;
- ``runtime``: where and how fast something computes: free, recorded nowhere;
- ``analysis``: redoes the steps that read it (``registry.reading``), and only those; an analysis
  whose outputs of those steps exist changes only when asked to (``--replace``, ``--force``).

``train --resume``, ``reproduce`` on a trained run, a step's ``--set``, a named analysis
(``RunFolder.configure``), checkpoint ownership and ``compare`` all ask ``Changes``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..settings.config import SECTIONS, AnalysisConfig, Config, declared, value_of
from ..settings.rules import Effect
from . import registry


@dataclass(frozen=True)
class Change:
    """One setting that differs: its key (``section.key``), the stored and the asked value."""

    key: str
    old: Any
    new: Any
    effect: Effect

    @property
    def steps(self) -> tuple[str, ...]:
        """The analysis steps whose outputs it shapes (redone when it changes)."""
        return registry.reading(self.key)

    def __str__(self) -> str:
        return f"{self.key} = {self.old!r} (asked {self.new!r})"


class Changes:
    """The settings that differ between a stored and an asked configuration (of ``sections``),
    in declaration order, and what each of them redoes."""

    def __init__(self, stored: Config, asked: Config, sections: Iterable[str] = SECTIONS) -> None:
        sections = tuple(sections)
        self.all = [
            Change(key, old, new, rule.effect)
            for key, rule in declared().items()
            if key.partition(".")[0] in sections
            and (old := value_of(stored, key)) != (new := value_of(asked, key))
        ]

    @classmethod
    def of_analysis(cls, stored: AnalysisConfig, asked: AnalysisConfig) -> Changes:
        """The changes between two analyses' settings."""
        return cls(Config(analysis=stored), Config(analysis=asked), ("analysis",))

    def __bool__(self) -> bool:
        return bool(self.all)

    def with_effect(self, *effects: Effect) -> list[Change]:
        """The changes whose effect is one of ``effects`` (``Effect.RUN``, ``SCHEDULE``, ...)."""
        return [c for c in self.all if c.effect in effects]

    @property
    def retraining(self) -> Change | None:
        """The first change that a trained run cannot take (its model, data, seed, batch)."""
        return next(iter(self.with_effect(Effect.RUN)), None)

    @property
    def schedule(self) -> dict[str, list]:
        """The schedule changes a resume records: ``{"train.lr": [old, new], ...}``."""
        return {c.key: [c.old, c.new] for c in self.with_effect(Effect.SCHEDULE)}

    @property
    def redone(self) -> tuple[str, ...]:
        """The analysis steps these changes redo, in the pipeline's order."""
        steps = {s for c in self.all for s in c.steps}
        return tuple(name for name in registry.NAMES if name in steps)

    def redoing(self, steps: Iterable[str]) -> Change | None:
        """The first change that redoes one of ``steps`` (e.g. those that have outputs)."""
        steps = set(steps)
        return next((c for c in self.all if steps & set(c.steps)), None)

    def refuse_retraining(self, run_dir: Path) -> None:
        """One line naming the first setting that a trained run cannot change."""
        change = self.retraining
        if change:
            raise UserError(
                f"the trained run {run_dir} has {change}: a trained run keeps its model, data "
                "and training settings (a resume may change its epochs, learning-rate schedule, "
                "optimizer settings and device); train a new run with another --out"
            )

    def refuse_on_trained_run(
        self, stored: Config, asked: Config, run_dir: Path, last: int
    ) -> None:
        """What ``train --resume`` and ``reproduce`` refuse on a run trained to epoch ``last``:
        a setting of the trained run (``refuse_retraining``), a schedule change that no epoch
        would use (the run is trained to its last epoch and none is added), and one that moves a
        learning-rate drop of the epochs already trained (the analyses read ``lr_drops`` as the
        schedule those epochs had)."""
        self.refuse_retraining(run_dir)
        changes = {k: v for k, v in self.schedule.items() if k != "train.epochs"}
        if changes and last >= max(stored.train.epochs, asked.train.epochs):
            key, (old, new) = next(iter(changes.items()))
            raise UserError(
                f"{run_dir} is trained to its last epoch ({last}) with {key} = {old!r}; {new!r} "
                f"would apply only to more epochs: add them with `en-analysis train --out "
                f"{run_dir} --resume --set train.epochs=N --set {key}={new!r}`"
            )
        old, new = ([d for d in c.train.lr_drops if d < last] for c in (stored, asked))
        if old != new:
            raise UserError(
                f"{run_dir} is trained to epoch {last} with learning-rate drops after epochs "
                f"{old or 'none'}; train.lr_drops = {asked.train.lr_drops} would change them: a "
                f"resume may add, move or remove only drops after epoch {last} or later"
            )

    def refuse_on_analysis(self, analysis: str, where: Path, written: Iterable[str]) -> None:
        """Refuse a change that would redo one of the steps that have ``written`` outputs in
        the analysis ``analysis`` of ``where``: its files would no longer match its settings."""
        change = self.redoing(written)
        if change:
            redone = ", ".join(s for s in self.redone if s in set(written))
            raise UserError(
                f"the analysis {analysis!r} of {where} was made with {change.key} = "
                f"{change.old!r} (asked {change.new!r}): add --analysis NAME to write the new "
                f"analysis beside it, or --replace to replace it (redoes {redone}; --force "
                "recomputes every step)"
            )


def settable_by_step(key: str) -> bool:
    """Whether a step's ``--set`` may change a setting: the analysis's own, and where the
    step reads its data (``data.root``, ``data.num_workers``); the model, data and training
    settings are the run's."""
    section = key.partition(".")[0]
    return section == "analysis" or (section == "data" and declared()[key].effect == Effect.RUNTIME)
