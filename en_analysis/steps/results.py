"""``StepResult``: what one step did, the one shape every step returns."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.layout import EPOCH_FILE


def epochs_of(paths: list[Path]) -> list[int]:
    """The epochs of the per-epoch files (``epoch-XXX.*``) among ``paths``."""
    return [int(m.group(1)) for p in paths if (m := EPOCH_FILE.fullmatch(Path(p).name))]


@dataclass
class StepResult:
    """What a step did: the files it wrote, those that were up to date, those it could not make
    (with why), how long it took, its table where it has one, and a few lines for a reader
    (``summary``: what the CLI prints before the files)."""

    step: str
    written: list[Path] = field(default_factory=list)
    up_to_date: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # what could not be made: why
    seconds: float = 0.0
    table: Any = None  # a pandas DataFrame: the table the step wrote (or found up to date)
    summary: str = ""

    @classmethod
    def of(cls, step: str, paths: list[Path], written: bool, **fields: Any) -> StepResult:
        """A step that makes ``paths`` together: all written, or all up to date."""
        paths = list(paths)
        return cls(step, paths if written else [], [] if written else paths, **fields)

    @property
    def outputs(self) -> list[Path]:
        """Every file the step is responsible for: written or up to date."""
        return [*self.written, *self.up_to_date]

    @property
    def written_epochs(self) -> list[int]:
        """The epochs of the per-epoch files written (``epoch-XXX.*``)."""
        return epochs_of(self.written)

    @property
    def up_to_date_epochs(self) -> list[int]:
        """The epochs of the per-epoch files that were up to date."""
        return epochs_of(self.up_to_date)

    def __add__(self, other: StepResult) -> StepResult:
        """Two parts of one step (a table and its figure) as one result."""
        return StepResult(
            self.step,
            [*self.written, *other.written],
            [*self.up_to_date, *other.up_to_date],
            {**self.failed, **other.failed},
            self.seconds + other.seconds,
            self.table if self.table is not None else other.table,
            "\n".join(s for s in (self.summary, other.summary) if s),
        )


def timed(function: Callable[..., StepResult]) -> Callable[..., StepResult]:
    """A step function whose ``StepResult`` says how long the call took."""

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> StepResult:
        start = time.perf_counter()
        result = function(*args, **kwargs)
        result.seconds = time.perf_counter() - start
        return result

    return call
