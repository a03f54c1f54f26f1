"""Files that are never half-written and never execute code when read.

Every write goes to a temporary name in the same folder and is renamed into place, so a killed
process leaves the old file or the new one. Reads use formats that cannot carry code
(``weights_only`` torch files, ``allow_pickle=False`` npz).
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import UserError
from .layout import RunLayout

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: the mode ordinary new files get


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror} (is the folder writable?)") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # as an ordinary file would be (mkstemp makes 0600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, a folder gone read-only: the old file stays
        Path(tmp).unlink(missing_ok=True)
        raise UserError(
            f"cannot write {path}: {e.strerror or e}; its previous version is kept"
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


MAX_TEXT_BYTES = 256 * 2**20  # a settings file, mapping or table is far smaller


def read_text(path: Path) -> str:
    """A text file's contents; unreadable, not a regular file (a FIFO, a device, a folder),
    larger than ``MAX_TEXT_BYTES`` or not UTF-8 is one clear error (never a hang)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UserError(f"{path} is not a regular file (a pipe, device or folder)")
            data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise UserError(
            f"{path} is larger than {MAX_TEXT_BYTES // 2**20} MiB: is it the right file?"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text: is it the right file?") from None


def read_csv(path: Path):
    """A CSV table as a pandas DataFrame; unreadable, binary or malformed is one clear error."""
    import pandas as pd

    text = read_text(path)
    try:
        return pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path} is not a readable CSV table ({str(e).strip()[:200]})") from None


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file renamed into place); returns
    ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` as UTF-8, atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode())


def save_npz(path: Path, **arrays: Any) -> Path:
    """Atomically write an uncompressed npz of plain arrays (strings as unicode arrays)."""
    return atomic_write(
        path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    )


def load_npz(path: Path, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Read an npz (every array, or only ``keys``), refusing object arrays (pickles); a damaged
    file is a clear error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in (data.files if keys is None else keys)}
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise UserError(f"{path} holds pickled objects; refusing to load it") from None
        raise UserError(
            f"{path} is not a readable npz file ({e}); delete it to recompute"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path} is corrupt or truncated ({e}); delete it to recompute") from None


def write_csv(path: Path, frame) -> Path:
    """Atomically write a pandas DataFrame as CSV."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return atomic_write_text(path, buffer.getvalue())


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s run lock so that two processes never write one run: an exclusive
    ``flock`` on ``folder/.lock``, which the kernel lets go when its process ends, so the lock
    of a killed process never blocks (and a PID reused since never looks like a holder). The
    file holds the holder's PID for the message only."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {folder}: {e.strerror}") from None
    lock = RunLayout(folder).lock
    fd = _take_lock(lock, folder)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: see _take_lock
        os.close(fd)


def _take_lock(lock: Path, folder: Path) -> int:
    """An open descriptor of ``lock`` holding its flock, with this process's PID written in.
    The holder unlinks the file before it lets go, so a lock taken on a file that is no longer
    ``lock`` (unlinked meanwhile) is let go and taken again on the new one."""
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666)
        except OSError as e:  # permissions, a read-only file system (EROFS), ...
            raise UserError(f"cannot lock {folder}: {e.strerror or e} (is it writable?)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(
                f"{folder} is in use by process {holder}; wait for it or pick another folder"
            ) from None
        except OSError as e:
            os.close(fd)
            raise UserError(f"cannot lock {folder}: {e.strerror or e}") from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)
