"""A user's category -> WordNet synset mapping (``data.categories_file``)."""

from __future__ import annotations

import csv
import tomllib
from pathlib import Path

from ..core.errors import UserError
from ..core.io import read_text


def read_mapping_file(path: Path) -> dict[str, str]:
    """A user's category -> synset mapping: CSV (columns category,synset) or TOML (key = value)."""
    path = Path(path)
    text = read_text(path)
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path} is not valid TOML: {e}") from None
        data = data.get("synsets", data)
        if not all(isinstance(v, str) for v in data.values()):
            raise UserError(f"{path}: every value must be a synset name string")
        return dict(data)
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"category", "synset"} <= set(rows[0]):
        raise UserError(f"{path} must be a CSV with columns category,synset")
    return {row["category"]: row["synset"].strip() for row in rows}
