"""The documentation's references, generated from the code: the settings
(``steps.reference.settings_markdown``) and the command line (``cli_markdown``: every command's
parser, and each step's declaration).

``python -m en_analysis.cli.reference`` writes ``docs/settings.md`` and ``docs/cli.md``
(``make docs-reference``); a test checks that the committed files are what the code generates.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from ..steps import registry
from ..steps.reference import cell, settings_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


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
        "",
        "## `en-analysis`",
        "",
        "The global options go before the command or after it (`en-analysis --quiet extract RUN`"
        " is `en-analysis extract RUN --quiet`); `--quiet` where the command has progress bars.",
        "",
        "| argument | what it does |",
        "|---|---|",
    ]
    for action in _actions(parser):
        if action.option_strings:  # the commands are the sections below
            out.append(f"| `{', '.join(action.option_strings)}` | {cell(action.help or '')} |")
    for name, command in parser.commands.items():
        command.formatter_class = fixed
        out += ["", f"## `en-analysis {name}`", "", command.description or "", ""]
        out += ["```text", command.format_usage().strip(), "```", ""]
        out += ["| argument | what it does |", "|---|---|"]
        for action in _actions(command):
            flags = ", ".join(action.option_strings) or action.dest
            out.append(f"| `{flags}` | {cell(action.help or '')} |")
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
