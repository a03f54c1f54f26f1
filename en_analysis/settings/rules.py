"""How one setting is declared: its help, its type, its bounds or choices, and what a change to
it redoes (``Effect``). ``setting(...)`` makes the dataclass field of ``config``; validation, the
CLI's ``--set`` help, ``presets --show`` and the settings reference all read this one rule.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..core.errors import UserError
from . import choices as choice


class Effect(StrEnum):
    """What changing a setting redoes."""

    RUN = "run"  # the trained run's own: another value is another run (train a new one)
    SCHEDULE = "schedule"  # shapes the epochs still to train: a resume changes it from its next
    RUNTIME = "runtime"  # where and how fast something computes: no result changes
    ANALYSIS = "analysis"  # shapes an analysis: redoes the analysis steps that read it


EFFECTS = {  # what a change redoes, in words
    Effect.RUN: "re-train (a new run)",
    Effect.SCHEDULE: "the epochs still to train (a resume changes it from its next epoch)",
    Effect.RUNTIME: "nothing (where and how fast it runs)",
    Effect.ANALYSIS: "re-analyse the steps that read it",
}


@dataclass(frozen=True)
class Rule:
    """Everything declared about one setting besides its default."""

    help: str
    effect: Effect
    kind: type  # bool, int, float, str or list
    choices: tuple | None = None
    minimum: float | None = None  # inclusive
    positive: bool = False  # above 0
    maximum: float | None = None  # inclusive
    why: str = ""  # said after the lower bound's message
    check: Callable[[str, Any], None] | None = None  # what the bounds cannot say, one line
    check_text: str = ""  # what ``check`` requires, for the reference

    def coerce(self, value: Any, what: str) -> Any:
        """``value`` as this setting's type (an int for a float setting), or one clear error."""
        kind = self.kind
        fits = (
            isinstance(value, bool)
            if kind is bool
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind is float
            else isinstance(value, kind) and not isinstance(value, bool)
        )
        if not fits:
            raise UserError(f"{what} must be {kind.__name__}, got {value!r}")
        return float(value) if kind is float else value

    def validate(self, what: str, value: Any) -> None:
        """One line naming the setting when ``value`` breaks the rule."""
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{what} must be a finite number, got {value}")
        if self.choices is not None:
            choice.check(what, value, self.choices)
        if self.positive and self.maximum is not None:
            if not 0 < value <= self.maximum:
                raise UserError(f"{what} must be in (0, {self.maximum:g}]")
        elif self.positive and not value > 0:
            raise UserError(f"{what} must be positive")
        if self.minimum is not None and value < self.minimum:
            bound = "not be negative" if self.minimum == 0 else f"be at least {self.minimum}"
            raise UserError(f"{what} must {bound}" + (f" ({self.why})" if self.why else ""))
        if self.maximum is not None and not self.positive and value > self.maximum:
            raise UserError(f"{what} must be at most {self.maximum:,}")
        if self.check is not None:
            self.check(what, value)

    def allowed(self) -> str:
        """The allowed values in words (the settings reference)."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.positive and self.maximum is not None:
            return f"(0, {self.maximum:g}]"
        parts = []
        if self.positive:
            parts.append("> 0")
        if self.minimum is not None:
            parts.append(f">= {self.minimum:,}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:,}")
        return ", ".join(parts + ([self.check_text] if self.check_text else []))


def setting(
    default: Any,
    help: str,
    *,
    effect: Effect,
    choices: Iterable | None = None,
    minimum: float | None = None,
    positive: bool = False,
    maximum: float | None = None,
    why: str = "",
    check: Callable[[str, Any], None] | None = None,
    check_text: str = "",
) -> Any:
    """The dataclass field of a setting: its default and its ``Rule``."""
    rule = Rule(
        help,
        effect,
        type(default),
        None if choices is None else tuple(choices),
        minimum,
        positive,
        maximum,
        why,
        check,
        check_text,
    )
    metadata = {"rule": rule}
    if isinstance(default, list):
        return dataclasses.field(default_factory=default.copy, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def rules(section: Any) -> dict[str, Rule]:
    """Every setting of a section dataclass (or instance) and its rule, in declaration order."""
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(section) if "rule" in f.metadata}


# --- checks a bound cannot express ---------------------------------------------------------------

SEED_LIMIT = 2**32 - 1  # numpy's and openTSNE's generators take 32-bit seeds


def check_normalizers(what: str, names: list) -> None:
    """Check that ``names`` are distinct normalizers of ``in``, ``ln``, ``bn``, ``gn`` (at least
    one); ``what`` names the setting in the error."""
    if (
        not names
        or any(n not in choice.NORMALIZERS for n in names)
        or len(set(names)) != len(names)
    ):
        raise UserError(f"{what} must be distinct names from {choice.NORMALIZERS}")


def check_drops(what: str, drops: list) -> None:
    """Check that learning-rate drops are strictly increasing epoch numbers of at least 1."""
    if any(not isinstance(d, int) or d < 1 for d in drops) or any(
        a >= b for a, b in zip(drops, drops[1:])
    ):
        raise UserError(f"{what} must be strictly increasing epoch numbers (e.g. [30, 60, 90])")


def check_epochs(what: str, epochs: list) -> None:
    """Check that ``epochs`` are epoch numbers (integers >= 0)."""
    if any(not isinstance(e, int) or e < 0 for e in epochs):
        raise UserError(f"{what} must be a list of epoch numbers")


def check_categories(what: str, categories: list) -> None:
    """Check that categories are distinct names (a category listed twice would count as two
    classes of the same images)."""
    if any(not isinstance(c, str) for c in categories):  # [1, 2] in TOML: numbers, not names
        quoted = ", ".join(repr(str(c)) for c in categories)
        raise UserError(f"{what} must be names in quotes, e.g. [{quoted}]")
    duplicates = sorted({c for c in categories if categories.count(c) > 1})
    if duplicates:  # a category listed twice would be counted as two classes of the same images
        raise UserError(f"{what} lists {', '.join(duplicates)} more than once")


def check_name(what: str, name: str) -> None:
    """Check that a run's name is a plain name, not a path (it names the run folder)."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise UserError(
            f"{what} {name!r} must be a plain name (it names the run folder), not a path"
        )
