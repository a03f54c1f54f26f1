"""The settings reference, generated from the declarations: every setting's rule (type,
default, allowed values, help) and what a change to it redoes (its ``Effect`` and the steps whose
outputs record it). ``presets --show`` prints it as text, ``docs/settings.md`` holds it as
Markdown (``cli.reference``)."""

from __future__ import annotations

from ..settings.config import Config, declared, value_of
from ..settings.rules import EFFECTS, Effect, Rule
from . import registry


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


def cell(text: str) -> str:
    """Text for a Markdown table's cell."""
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
            out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"
