"""What every output was computed from, and the one rule for whether it is up to date.

Each step records, for each file it writes, the digests of its inputs (checkpoints, ratio
files, tables, a categories file), the settings that shape it and the file's own digest, in the
analysis's ``provenance.json``. An output is up to date exactly when it exists, is the file that
was recorded, and was made from the same inputs with the same settings; ``reproduce`` and every
step ask this one question. Modification times play no part: a file replaced by an older one, a
table written for fewer epochs, or a changed categories file all make an output stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .io import atomic_write_text

_DIGESTS: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> digest: each file hashed once


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes (cached for this process while the file is unchanged)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON would give them back (tuples as lists, keys sorted)."""
    return json.loads(json.dumps(settings, sort_keys=True))


class Provenance:
    """The provenance record of one analysis folder; paths are stored relative to the run."""

    def __init__(self, file: Path, run: Path) -> None:
        self.file = Path(file)
        self.run = Path(run)

    def _key(self, path: Path) -> str:
        path = Path(path)
        try:
            return path.resolve().relative_to(self.run.resolve()).as_posix()
        except ValueError:  # outside the run (a categories file): by absolute path
            return str(path.resolve())

    def _records(self) -> dict[str, Any]:
        try:
            records = json.loads(self.file.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: nothing is known to be current
            return {}
        return records if isinstance(records, dict) else {}

    def source(self, inputs: Iterable[Path], settings: dict[str, Any]) -> dict[str, Any]:
        """What an output made now from ``inputs`` with ``settings`` would be recorded with."""
        return {
            "inputs": {self._key(p): digest(p) for p in inputs},
            "settings": canonical(settings),
        }

    def current(self, output: Path, inputs: Iterable[Path], settings: dict[str, Any]) -> bool:
        """True when ``output`` is the file recorded as made from ``inputs`` with ``settings``."""
        return self.all_current([output], inputs, settings)

    def all_current(
        self, outputs: Iterable[Path], inputs: Iterable[Path], settings: dict[str, Any]
    ) -> bool:
        """``current`` for every one of ``outputs`` (the record is read once)."""
        records = self._records()
        try:
            source = self.source(inputs, settings)
        except FileNotFoundError:  # an input is gone: nothing made from it is current
            return False
        for output in map(Path, outputs):
            record = records.get(self._key(output))
            if record is None or not output.is_file() or record.get("digest") != digest(output):
                return False
            if {k: record.get(k) for k in source} != source:
                return False
        return True

    def changed(self, outputs: Iterable[Path]) -> list[Path]:
        """The ``outputs`` that exist but are not the files recorded (never recorded, or changed
        since: edited, replaced or written by a process killed before it recorded them)."""
        records = self._records()
        return [
            p
            for p in map(Path, outputs)
            if p.is_file() and records.get(self._key(p), {}).get("digest") != digest(p)
        ]

    def record(
        self, outputs: Iterable[Path], inputs: Iterable[Path], settings: dict[str, Any]
    ) -> None:
        """Note that ``outputs`` (just written) were made from ``inputs`` with ``settings``."""
        records = self._records()
        source = self.source(inputs, settings)
        for output in outputs:
            records[self._key(output)] = {"digest": digest(output), **source}
        atomic_write_text(self.file, json.dumps(records, indent=1, sort_keys=True) + "\n")
