"""Running a registered step (``steps.registry``): the run folder opened at its analysis with
the step's ``--set`` settings, the step's functions resolved from their import paths and called
with the arguments each names, their results as one ``StepResult``, and what is said about it.
The CLI's steps and ``reproduce`` both go through here."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..figures.explorer import Run
from ..settings.config import load_config, parse_override
from ..steps.changes import settable_by_step
from ..steps.registry import Step
from ..steps.results import StepResult, epochs_of


def resolve(path: str) -> Callable[..., StepResult]:
    """The function ``module:name`` (imported now: a step's libraries load when it runs)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def run_step(step: Step, run: Run, **arguments: Any) -> StepResult:
    """Run the step's functions in order on ``run``, each with the ``arguments`` it names
    (``epochs``, ``force``, ``progress``, the step's options); their results as one."""
    start = time.perf_counter()
    result = StepResult(step.name)
    for path in step.functions:
        function = resolve(path)
        names = inspect.signature(function).parameters
        result = result + function(run, **{k: v for k, v in arguments.items() if k in names})
    result.seconds = time.perf_counter() - start
    return result


def refuse_failures(step: Step, result: StepResult, detail: str = " (see above)") -> None:
    """One error when the step could not make some of its outputs (the others are made)."""
    if result.failed:
        raise UserError(f"{len(result.failed)} {step.failure}{detail}")


def open_for_step(path: Path, analysis: str, overrides: list[str], replace: bool) -> Run:
    """The run folder of a step, opened at its analysis, with the step's ``--set`` settings:
    the analysis's own (refused when they would redo outputs made with others, unless
    ``replace``: ``steps.changes``) and where the step reads its data; the caller stores the
    analysis's settings once the step has succeeded (``Run.save_settings``)."""
    run = Run(path, analysis)
    for text in overrides:
        ((section, values),) = parse_override(text).items()
        if not settable_by_step(f"{section}.{next(iter(values))}"):
            raise UserError(
                f"--set {text}: a step changes analysis settings (analysis.*) and data.root or "
                "data.num_workers; model, data and training settings are the run's "
                "(`en-analysis train --resume --set ...` changes its schedule)"
            )
    asked = load_config(overrides=overrides, base=run.config)
    run.config.data = asked.data
    run.configure(asked.analysis, replace=replace)
    return run


def report(result: StepResult) -> list[str]:
    """What a step did, for a reader: its summary, then per folder of per-epoch files the
    epochs written and up to date, and every other file written or up to date."""
    lines = [result.summary] if result.summary else []
    folders: dict[Path, tuple[list[int], list[int]]] = {}
    for paths, index, word in ((result.written, 0, "wrote"), (result.up_to_date, 1, "up to date:")):
        for path in paths:
            epochs = epochs_of([path])
            if epochs:
                folders.setdefault(path.parent, ([], []))[index].extend(epochs)
            else:
                lines.append(f"{word} {path}")
    for folder, (written, current) in folders.items():
        lines.append(
            f"{folder.name}: {folder} (written: {written or 'none'}; "
            f"up to date: {current or 'none'})"
        )
    return lines
