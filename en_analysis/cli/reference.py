"""The settings and CLI references, generated from the declarations: every setting's rule
(``settings``) with the steps it shapes (``steps.registry``), and every command's parser.

``python -m en_analysis.cli.reference`` writes ``docs/settings.md`` and ``docs/cli.md``
(``make docs-reference``); a test checks that the committed files are what the code generates.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from ..settings.config import Config, declared, value_of
from ..settings.rules import EFFECTS, Effect, Rule
from ..steps import registry

DOCS = Path(__file__).resolve().parents[2] / "docs"


def redoes(key: str, rule: Rule) -> str:
    """What changing a setting redoes, in words."""
    steps = ", ".join(registry.reading(key))
    if rule.effect == Effect.ANALYSIS:
        return f"re-analyse: {steps}" if steps else "nothing already made"
    if rule.effect == Effect.SCHEDULE and steps:
        return f"{EFFECTS[rule.effect]}; re-analyse: {steps}"
    return EFFECTS[rule.effect]


def _value(value) -> str:
    """A value as TOML writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def settings_text(config: Config) -> str:
    """Every setting with its value in ``config`` (``presets --show``)."""
    lines = []
    for key, rule in declared().items():
        allowed = rule.allowed()
        kind = rule.kind.__name__ + (f", {allowed}" if allowed else "")
        lines.append(f"{key} = {_value(value_of(config, key))}  ({kind})")
        lines.append(f"    {rule.help}. Changing it: {redoes(key, rule)}.")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_markdown() -> str:
    """``docs/settings.md``: one table per section."""
    defaults = Config()
    out = [
        "# Settings",
        "",
        "Generated from the declarations in `en_analysis/settings/config.py` by "
        "`python -m en_analysis.cli.reference` (do not edit). A run's settings are resolved as "
        "defaults <- preset <- `--config` file <- `--set section.key=value`. *A change redoes*: "
        + "; ".join(f"**{e.value}**: {EFFECTS[e]}" for e in Effect)
        + "; for the analysis steps, the steps whose outputs record the setting (only those "
        "are redone).",
    ]
    sections = {}
    for key, rule in declared().items():
        sections.setdefault(key.partition(".")[0] if "." in key else "name", []).append((key, rule))
    for section, items in sections.items():
        out += ["", f"## `{section}`" if section != "name" else "## `name`", ""]
        out += [
            "| setting | type | default | allowed | a change redoes | what it is |",
            "|---|---|---|---|---|---|",
        ]
        for key, rule in items:
            cells = [
                f"`{key}`",
                rule.kind.__name__,
                f"`{_value(value_of(defaults, key))}`",
                rule.allowed(),
                redoes(key, rule),
                rule.help,
            ]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def cli_markdown() -> str:
    """``docs/cli.md``: every command's usage and options, and each step's declaration."""
    from . import build_parser

    parser = build_parser()
    fixed = functools.partial(argparse.HelpFormatter, width=100)
    out = [
        "# Command line",
        "",
        "Generated from the parser (`en_analysis/cli/__init__.py`) and the step registry "
        "(`en_analysis/steps/registry.py`) by `python -m en_analysis.cli.reference` (do not "
        "edit). `reproduce` runs the steps in this order: " + " -> ".join(registry.NAMES) + ".",
    ]
    for name, command in parser.commands.items():
        command.formatter_class = fixed
        out += ["", f"## `en-analysis {name}`", "", command.description or "", ""]
        out += ["```text", command.format_usage().strip(), "```", ""]
        out += ["| argument | what it does |", "|---|---|"]
        for action in _actions(command):
            flags = ", ".join(action.option_strings) or action.dest
            out.append(f"| `{flags}` | {_cell(action.help or '')} |")
        if name in registry.NAMES:
            step = registry.step(name)
            out += [
                "",
                f"Reads the settings: {', '.join(f'`{k}`' for k in step.reads) or 'none'}.",
                f"Reads the files: {', '.join(f'`{p}`' for p in step.inputs)}.",
                f"Writes: {', '.join(f'`{p}`' for p in step.outputs)}.",
            ]
    return "\n".join(out) + "\n"


REFERENCES = {"settings.md": settings_markdown, "cli.md": cli_markdown}


def main(argv: list[str] | None = None) -> int:
    """Write every reference into ``docs/`` (``--check``: say which differ, exit 1)."""
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for name, make in REFERENCES.items():
        path, text = DOCS / name, make()
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for name in stale:
        print(f"docs/{name} is not what the code generates: run make docs-reference")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
