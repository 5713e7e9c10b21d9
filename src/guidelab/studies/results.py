"""Results on disk that an interruption cannot corrupt.

A run writes its table one *unit* (for example one guidance strength) at a time. Each write
replaces the whole file atomically: the new content goes to a temporary file in the same
folder, is flushed to disk, and is renamed over the old one (``os.replace`` is atomic on POSIX
and Windows). A reader, or a run killed at any moment, sees either the previous complete table
or the new complete table, never a half-written row: an interruption loses at most the unit in
flight. The file gets the permissions the user's umask gives to new files (``0o666 & ~umask``;
the temporary file is created 0600), and the folder is fsynced after the rename so that the
new name survives a crash.

An I/O error names the action and the path: :class:`StoreIOError` (an ``OSError`` with the
original ``errno`` and ``strerror``) reads ``cannot write <path>: No space left on device``
(:func:`io_action` turns any ``OSError`` of a block into one).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["atomic_write_bytes", "write_csv", "StoreIOError", "io_action"]


class StoreIOError(OSError):
    """An I/O error that says what failed on which path: ``cannot <action> <path>: <reason>``.

    ``errno``, ``strerror`` and ``filename`` are the original error's (and the path's)."""

    def __init__(self, action: str, path: str | os.PathLike, error: OSError):
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.action = action

    def __str__(self) -> str:
        return f"cannot {self.action} {self.filename}: {self.strerror}"


@contextlib.contextmanager
def io_action(action: str, path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` of the block into a :class:`StoreIOError` naming ``action`` and
    ``path`` (one already naming its path passes through)."""
    try:
        yield
    except StoreIOError:
        raise
    except OSError as error:
        raise StoreIOError(action, path, error) from error


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename),
    with mode ``0o666 & ~umask``; a failure is a :class:`StoreIOError` (``cannot write <path>:
    ...``) and leaves no temporary file."""
    path = Path(path)
    with io_action("create the folder", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with io_action("write", path):
        _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.chmod(tmp, 0o666 & ~_umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)


def write_csv(path: str | os.PathLike, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) as CSV with the given leading ``columns``, atomically.

    Keys not in ``columns`` follow in first-seen order; missing values are left empty.
    """
    fields = list(columns)
    for row in rows:
        fields.extend(key for key in row if key not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in fields})
    atomic_write_bytes(path, buffer.getvalue().encode())
