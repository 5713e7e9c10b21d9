r"""The results store of a study: a folder of self-checking Parquet files, one writer at a time.

Layout of a results folder ``DIR``:

* ``DIR/spec.toml``: the resolved spec, written first. A rerun with the same resolved spec
  computes only the units that have no valid file yet; a rerun with a *different* one is
  refused (:class:`SpecMismatchError` names both and the keys that differ).
* ``DIR/units/<unit_id>.parquet``: one file per finished unit, one row per strength w with the
  summary columns (``class, w, n, q_mean, q_low, q_high, ...``), the provenance (``seed,
  sampler, schedule, steps, dtype, device, guidelab_version, unit_id``), the swept keys and,
  per metric, the merged record as JSON (``record_<metric>``) so rows can be pooled later.
* ``DIR/samples/<unit_id>.parquet``: the first ``keep_samples`` samples of every w of the unit
  (columns ``unit_id, class, w, sampler, row, x0[, x1]``), for scatter plots; only for d <= 2.
  Written before the unit's file, which records its checksum.
* ``DIR/results.csv``: every row (without the records), rewritten after the run.
* ``DIR/run.json``: when, where and how long each finished run ran (:meth:`ResultStore.
  write_run_info`, :meth:`ResultStore.read_run_info`), for the report; informative only,
  never part of a check.
* ``DIR/quarantine/{units,samples}/``: files that failed a check, moved aside with a
  timestamp suffix (never overwritten, never read again).
* ``DIR/.lock``: the lock of the run writing the folder (its pid, host and start time).

**Every file proves what it is.** A unit's *identity* (:func:`unit_identity`) is the SHA-256
of the canonical JSON of everything that determines its rows: the unit's resolved settings
(``spec_to_dict(unit_settings(spec, unit))`` without :data:`IDENTITY_IGNORES`, which change no
row; ``device`` and ``dtype`` stay, they change bits; a ``chunk_rows`` given to the run
replaces the spec's), the unit key, the data and model fingerprints the caller supplies (a
dict, or a callable of the unit; none by default), the row-noise scheme version
(:data:`guidelab.noise.NOISE_SCHEME_VERSION`) and the store format (:data:`STORE_FORMAT`). A
file keeps its unit id as its name (so resuming is still "run the units without a file") and
carries in its Parquet key-value metadata the identity, the unit id and key, the settings
(JSON), the fingerprints, the noise scheme, its kind (``unit`` or ``samples``), for a unit
file the checksum of its samples file, and ``guidelab.checksum``: the SHA-256 of the *whole
file's bytes* with the 64 hex digits of that checksum itself read as ASCII zeros. So any
change of any bit anywhere in the file (data pages, page headers, statistics, schema, footer,
the checksum itself) is detected before a byte of it is decoded, and a file that is intact
but belongs elsewhere (another unit's file copied over this name, a file of a run with other
settings or fingerprints) is detected by its identity. The checksum's 64 bytes are found in
the footer by their key (the Thrift compact encoding of the key-value pair: ``\x11``, the key,
``\x18\x40``); the writer checks every file it seals as a reader would.

**Reading.** A run (:meth:`ResultStore.check`) verifies every file in ``units/`` (and the
samples file a unit records); a file that cannot be parsed, whose checksum does not match, or
whose identity or settings are not those the run expects, is moved into ``DIR/quarantine/``,
reported in one line through the run's log, and its unit counts as missing, so it is
recomputed. ``guidelab verify DIR`` (:meth:`ResultStore.verify`) runs the same checks
read-only against the recorded ``spec.toml`` (and the fingerprints the files record). The
report reads through :meth:`ResultStore.read_all`, which can also accept files that carry no
guidelab metadata at all (hand-made, or from before checksums), marked unverified.

**One writer per folder.** A run holds an exclusive ``flock`` on ``DIR/.lock`` for its whole
lifetime (:meth:`ResultStore.lock`; re-entrant within a process): the spec check and the spec
write (:meth:`ResultStore.open`) happen under it, so two runs of different specs started
together into one new folder cannot both write. A second run refuses at once
(:class:`FolderBusyError`, naming the holder) or, with ``wait``, says whom it waits for and
waits. The kernel releases the lock when its process dies, so the lock of a killed run is
taken over by the next one. The lock file stays (deleting it would let two runs lock two
different files). Ray workers never write the folder: the driver writes every file.

**Writing.** Every file is written atomically (:func:`~guidelab.studies.results.
atomic_write_bytes`: a temporary file in the same folder, fsynced, renamed over the target,
the folder fsynced), with the permissions the user's umask gives, so a run killed at any
moment leaves complete files and at most temporary ``.*.tmp`` files, which the next run removes
under the lock. Every I/O error names the action and the path (``cannot write <path>: No space
left on device``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import socket
import threading
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import _json
from .results import atomic_write_bytes, io_action, write_csv
from .spec import (
    Spec,
    SpecError,
    spec_diff,
    spec_to_dict,
    spec_to_toml,
    validate_spec,
)

__all__ = ["ResultStore", "SpecMismatchError", "FolderBusyError", "UnitIdentity",
           "unit_identity", "Problem", "Verification", "rows_to_table", "read_unit_rows",
           "FLOAT_COLUMNS", "STORE_FORMAT", "IDENTITY_IGNORES", "Fingerprints",
           "RUN_INFO_KEEP"]

FLOAT_COLUMNS = ("w", "q_mean", "q_se", "q_low", "q_high", "q_top_share", "pareto_khat",
                 "khat_threshold", "level", "p_mean", "p_se", "accuracy", "frac_p_decreased",
                 "inv_prior")
"""Columns stored as float64 even when every value of a unit is missing (null)."""

STORE_FORMAT = 1
"""Version of the file format (metadata keys, checksum rule); part of every identity."""

RUN_INFO_KEEP = 50
"""Runs ``run.json`` keeps (the latest)."""

IDENTITY_IGNORES = ("name", "description", "keep_samples")
"""Resolved settings that change no row, left out of a unit's identity (``keep_samples`` only
sizes the samples file; the spec check still refuses a folder of another ``keep_samples``)."""

Fingerprints = Mapping[str, str] | Callable[[Any], Mapping[str, str]]
"""Data and model fingerprints of a run: one dict for every unit, or a callable of the unit."""

_PREFIX = "guidelab."
_CHECKSUM_KEY = b"guidelab.checksum"
_CHECKSUM_ANCHOR = bytes([len(_CHECKSUM_KEY)]) + _CHECKSUM_KEY + b"\x18\x40"
_PLACEHOLDER = b"0" * 64
_RECORDED = object()  # "as the file records it": fingerprints/chunk_rows a reader cannot know


class SpecMismatchError(ValueError):
    """A results folder holds results of another spec."""


class FolderBusyError(ValueError):
    """Another run holds the results folder's lock."""


# ----------------------------------------------------------------------------- tables

def rows_to_table(rows: Sequence[dict]) -> pa.Table:
    """Rows (dicts with the same keys) as an Arrow table; float columns typed float64."""
    columns = list(rows[0]) if rows else []
    for row in rows[1:]:
        columns.extend(key for key in row if key not in columns)
    arrays = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        if name in FLOAT_COLUMNS or any(isinstance(v, float) for v in values) and all(
                v is None or isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in values):
            arrays[name] = pa.array([None if v is None else float(v) for v in values],
                                    type=pa.float64())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def read_unit_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of one unit file, as dicts, without any check (see :class:`ResultStore`)."""
    return pq.read_table(path).to_pylist()


def record_json(record: Any) -> str:
    """A metric record as the strict JSON string stored in ``record_<metric>`` (a non-finite
    float, which records never hold on purpose, is written as null rather than NaN)."""
    return _json.dumps(record.to_dict(), sort_keys=True)


# ----------------------------------------------------------------------------- identity

def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _check_fingerprints(values: Any) -> dict[str, str]:
    if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
        raise ValueError(f"fingerprints: expected a dict of strings (name -> fingerprint), got "
                         f"{values!r}")
    return dict(sorted(values.items()))


@dataclass(frozen=True)
class UnitIdentity:
    """What determines a unit's rows (module docstring), and its SHA-256 :attr:`digest`.

    Attributes:
        unit_id: the unit's id (its file name).
        key: the unit key as ``[[dotted path, value], ...]`` sorted by path.
        fields: the unit's resolved settings that change rows.
        fingerprints: data and model fingerprints (name -> fingerprint).
        noise_scheme: the row-noise scheme version.
        format: the store format.
    """

    unit_id: str
    key: list
    fields: dict
    fingerprints: dict
    noise_scheme: int
    format: int = STORE_FORMAT

    @property
    def digest(self) -> str:
        payload = {"format": self.format, "noise_scheme": self.noise_scheme,
                   "unit_key": self.key, "spec": self.fields,
                   "fingerprints": self.fingerprints}
        return hashlib.sha256(_canonical(payload).encode()).hexdigest()

    def metadata(self, kind: str, samples: str = "") -> dict[str, str]:
        """The key-value metadata of a ``kind`` file ("unit" or "samples") of this unit."""
        return {f"{_PREFIX}format": str(self.format), f"{_PREFIX}kind": kind,
                f"{_PREFIX}unit_id": self.unit_id, f"{_PREFIX}unit_key": _canonical(self.key),
                f"{_PREFIX}spec": _canonical(self.fields),
                f"{_PREFIX}fingerprints": _canonical(self.fingerprints),
                f"{_PREFIX}noise_scheme": str(self.noise_scheme),
                f"{_PREFIX}identity": self.digest, f"{_PREFIX}samples": samples}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> UnitIdentity:
        """The identity a file records (KeyError, ValueError: incomplete or malformed)."""
        return cls(meta[f"{_PREFIX}unit_id"], json.loads(meta[f"{_PREFIX}unit_key"]),
                   json.loads(meta[f"{_PREFIX}spec"]),
                   json.loads(meta[f"{_PREFIX}fingerprints"]),
                   int(meta[f"{_PREFIX}noise_scheme"]), int(meta[f"{_PREFIX}format"]))


def unit_identity(spec: Spec, unit, *, fingerprints: Fingerprints | None = None,
                  chunk_rows: int | None = None) -> UnitIdentity:
    """The identity of ``unit`` of the resolved ``spec`` (module docstring).

    Args:
        spec: the resolved spec.
        unit: a :class:`~guidelab.studies.units.Unit`.
        fingerprints: data and model fingerprints: a dict (every unit) or a callable of the
            unit returning one; None: none.
        chunk_rows: rows per chunk given to the run (replaces the spec's).
    """
    from ..noise import NOISE_SCHEME_VERSION
    from .units import _thaw, unit_settings

    fields = spec_to_dict(unit_settings(spec, unit))
    for name in IDENTITY_IGNORES:
        fields.pop(name, None)
    if chunk_rows is not _RECORDED and chunk_rows is not None:
        fields["chunk_rows"] = int(chunk_rows)
    if fingerprints is _RECORDED:
        prints: Any = _RECORDED
    elif fingerprints is None:
        prints = {}
    else:
        prints = _check_fingerprints(fingerprints(unit) if callable(fingerprints)
                                     else fingerprints)
    return UnitIdentity(unit.id, json.loads(_canonical([[k, _thaw(v)] for k, v in unit.key])),
                        json.loads(_canonical(fields)), prints, NOISE_SCHEME_VERSION)


# ----------------------------------------------------------------------------- checksum

class _Bad(Exception):
    """A file that fails a check; the message is the reason."""


def _checksum_slot(data: bytes) -> int:
    """Offset of the 64 checksum bytes in a sealed file's footer (raises _Bad)."""
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise _Bad("is not a complete Parquet file (truncated or overwritten?)")
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    if start < 4:
        raise _Bad("is not a complete Parquet file (its footer length is wrong)")
    at = data.find(_CHECKSUM_ANCHOR, start)
    if at < 0 or data.find(_CHECKSUM_ANCHOR, at + 1) >= 0:
        raise _Bad("has no single guidelab checksum in its footer")
    slot = at + len(_CHECKSUM_ANCHOR)
    if slot + 64 > len(data) - 8:
        raise _Bad("has no single guidelab checksum in its footer")
    return slot


def _content_digest(data: bytes, slot: int) -> str:
    view = memoryview(data)
    digest = hashlib.sha256(view[:slot])
    digest.update(_PLACEHOLDER)
    digest.update(view[slot + 64:])
    return digest.hexdigest()


def _sealed_bytes(table: pa.Table, meta: dict[str, str]) -> tuple[bytes, str]:
    """``table`` as Parquet bytes carrying ``meta`` and the checksum; (bytes, checksum)."""
    table = table.replace_schema_metadata({**meta, _CHECKSUM_KEY.decode(): _PLACEHOLDER.decode()})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = bytearray(sink.getvalue())
    slot = _checksum_slot(bytes(data))
    if data[slot:slot + 64] != _PLACEHOLDER:  # pragma: no cover - a pyarrow encoding change
        raise RuntimeError("the guidelab checksum slot was not found where it was written")
    digest = _content_digest(bytes(data), slot)
    data[slot:slot + 64] = digest.encode()
    sealed = bytes(data)
    if _verified_bytes(sealed) != (digest, meta):  # pragma: no cover - as above
        raise RuntimeError("a sealed file does not pass its own check")
    return sealed, digest


def _file_meta(data: bytes) -> dict[str, str]:
    try:
        raw = pq.ParquetFile(pa.BufferReader(data)).metadata.metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items()}
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as error:
        raise _Bad(f"cannot be parsed as Parquet ({_first_line(error)})") from None


def _verified_bytes(data: bytes) -> tuple[str, dict[str, str]]:
    """(checksum, guidelab metadata without the checksum) of a sealed file (raises _Bad)."""
    slot = _checksum_slot(data)
    recorded = data[slot:slot + 64]
    if _content_digest(data, slot).encode() != recorded:
        raise _Bad("checksum mismatch: its bytes changed after it was written")
    meta = _file_meta(data)
    if meta.get(_CHECKSUM_KEY.decode()) != recorded.decode("ascii", "replace"):
        raise _Bad("its checksum is not the one its metadata records")
    return recorded.decode(), {k: v for k, v in meta.items()
                               if k.startswith(_PREFIX) and k != _CHECKSUM_KEY.decode()}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _differences(recorded: UnitIdentity, expected: UnitIdentity) -> str:
    """Why a recorded identity is not the expected one, in words."""
    reasons = []
    if recorded.format != expected.format:
        reasons.append(f"store format {recorded.format} (expected {expected.format})")
    if recorded.noise_scheme != expected.noise_scheme:
        reasons.append(f"row-noise scheme {recorded.noise_scheme} (this guidelab uses "
                       f"{expected.noise_scheme})")
    if _canonical(recorded.key) != _canonical(expected.key):
        reasons.append("another unit key")
    differing = spec_diff(recorded.fields, expected.fields)
    if differing:
        shown = ", ".join(differing[:6]) + (", ..." if len(differing) > 6 else "")
        reasons.append(f"other settings ({shown})")
    if recorded.fingerprints != expected.fingerprints:
        names = sorted(k for k in set(recorded.fingerprints) | set(expected.fingerprints)
                       if recorded.fingerprints.get(k) != expected.fingerprints.get(k))
        reasons.append(f"other fingerprints ({', '.join(names)})")
    return "was computed with " + "; ".join(reasons or ["another identity"])


# ----------------------------------------------------------------------------- reports

@dataclass
class Problem:
    """A file that failed a check.

    Attributes:
        path: the file.
        reason: why, in words.
        unit_id: the unit it is named for.
        kind: "unit" or "samples".
        moved_to: where it was moved (quarantine), or None.
    """

    path: Path
    reason: str
    unit_id: str
    kind: str = "unit"
    moved_to: Path | None = None

    def line(self, root: Path) -> str:
        """One line naming the file (relative to ``root``) and why."""
        text = f"{_relative(self.path, root)}: {self.reason}"
        if self.moved_to is not None:
            text += f"; moved to {_relative(self.moved_to, root)}"
        return text


@dataclass
class Verification:
    """What a check of a results folder found.

    Attributes:
        ok: ids of the units whose files (and samples files) passed, by file name.
        problems: the files that did not.
        unverified: ids of unit files accepted without metadata (``read_all`` with
            ``accept_unverified``).
        missing: ids of the spec's units with no good file (empty when there is no spec).
        tables: unit id -> its rows as a table (when loaded); :attr:`rows` as dicts.
        samples: unit id -> samples table (when loaded).
    """

    ok: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    tables: dict[str, pa.Table] = field(default_factory=dict)
    samples: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def rows(self) -> dict[str, list[dict]]:
        """unit id -> rows (when loaded)."""
        return {unit_id: table.to_pylist() for unit_id, table in self.tables.items()}

    def summary(self) -> str:
        """``N unit files ok, M problems`` (and the units not computed yet)."""
        text = f"{len(self.ok)} unit files ok, {len(self.problems)} problems"
        if self.missing:
            text += f"; {len(self.missing)} units not computed yet"
        return text


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- lock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_LOCKS: dict[str, list] = {}  # realpath -> [fd, depth]
_LOCKS_GUARD = threading.Lock()


def _try_lock(fd: int, block: bool) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            return True
        except BlockingIOError:
            return False
    import msvcrt  # pragma: no cover - Windows
    import time  # pragma: no cover

    while True:  # pragma: no cover
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            if not block:
                return False
            time.sleep(0.5)


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 512).decode("utf-8", "replace").strip()
    except OSError:  # e.g. Windows: the holder's locked byte cannot be read
        text = ""
    return text or "a run that is starting"


# ----------------------------------------------------------------------------- the store

class ResultStore:
    """A results folder (module docstring).

    Args:
        root: the folder (created when a run locks it).
        fingerprints: data and model fingerprints the unit files must record (a dict, or a
            callable of the unit); None: whatever each file records (read-only checks).
        label: the parameter name that starts error messages (``out``, ``run_dir``).
    """

    def __init__(self, root: str | os.PathLike, *, fingerprints: Fingerprints | None = None,
                 label: str = "out"):
        self.root = Path(root)
        self.label = label
        self.fingerprints = fingerprints
        self.spec_path = self.root / "spec.toml"
        self.units_dir = self.root / "units"
        self.samples_dir = self.root / "samples"
        self.quarantine_dir = self.root / "quarantine"
        self.lock_path = self.root / ".lock"
        self._spec: Spec | None = None
        self._chunk_rows: Any = _RECORDED
        self._expected: dict[str, UnitIdentity] | None = None

    # --------------------------------------------------------------- the lock

    def _check_root(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise ValueError(f"{self.label}: {root} is a file; expected a folder for the "
                             f"results")
        probe = root
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise ValueError(f"{self.label}: {probe} is a file, so {root} cannot be created")
        if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"{self.label}: {probe} is not writable, so results cannot be "
                             f"written to {root}")

    def _key(self) -> str:
        return os.path.realpath(self.root)

    def holds_lock(self) -> bool:
        """Whether this process holds the folder's lock."""
        with _LOCKS_GUARD:
            return self._key() in _LOCKS

    @contextlib.contextmanager
    def lock(self, *, wait: bool = False,
             log: Callable[[str], None] | None = None) -> Iterator[ResultStore]:
        """Hold the folder's exclusive lock (created with the folder) for the ``with`` block.

        Re-entrant within the process. Another process's lock makes it raise
        :class:`FolderBusyError` at once, or, with ``wait``, log whom it waits for and wait.
        The lock file records this process's pid, host and start time while it holds it.
        """
        key = self._key()
        with _LOCKS_GUARD:
            held = _LOCKS.get(key)
            if held is not None:
                held[1] += 1
        if held is None:
            self._acquire(key, wait, log)
        try:
            yield self
        finally:
            with _LOCKS_GUARD:
                entry = _LOCKS[key]
                entry[1] -= 1
                if entry[1] == 0:
                    del _LOCKS[key]
                    with contextlib.suppress(OSError):
                        os.ftruncate(entry[0], 0)
                    _unlock(entry[0])
                    os.close(entry[0])

    def _acquire(self, key: str, wait: bool, log) -> None:
        self._check_root()
        with io_action("create the folder", self.root):
            self.root.mkdir(parents=True, exist_ok=True)
        with io_action("open the lock file", self.lock_path):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            with io_action("lock", self.lock_path):
                free = _try_lock(fd, block=False)
            if not free:
                holder = _holder(fd)
                if not wait:
                    raise FolderBusyError(
                        f"{self.label}: {self.root} is in use by another run ({holder}); wait "
                        f"for it to finish, or pass --wait to wait for it")
                (log or print)(f"waiting for {self.root}: another run holds it ({holder})")
                with io_action("lock", self.lock_path):
                    _try_lock(fd, block=True)
            started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            info = f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n"
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, info.encode())
        except BaseException:
            os.close(fd)
            raise
        with _LOCKS_GUARD:
            _LOCKS[key] = [fd, 1]

    def _require_lock(self, action: str) -> None:
        if not self.holds_lock():
            raise RuntimeError(f"ResultStore.{action} needs the folder's lock: use "
                               f"`with store.lock(): ...`")

    # --------------------------------------------------------------- the spec

    def read_spec_text(self) -> str | None:
        """The text of ``spec.toml``, or None if there is none (ValueError names the file
        when it cannot be read or is not UTF-8)."""
        try:
            data = self.spec_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ValueError(f"{self.label}: cannot read {self.spec_path}: "
                             f"{error.strerror or error}") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{self.label}: cannot read {self.spec_path}: not UTF-8 text "
                             f"({error.reason} at byte {error.start})") from None

    def _spec_data(self) -> dict | None:
        text = self.read_spec_text()
        if text is None:
            return None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{self.label}: {self.spec_path} is not valid TOML ({error}); "
                             f"use another folder") from None

    def read_spec(self) -> Spec | None:
        """The resolved spec recorded in the folder, or None if there is none."""
        data = self._spec_data()
        if data is None:
            return None
        try:
            return validate_spec(data, str(self.spec_path))
        except SpecError as error:
            raise ValueError(f"{self.label}: {self.spec_path} is not a readable spec "
                             f"({error}); use another folder") from None

    def open(self, spec: Spec, *, chunk_rows: int | None = None) -> None:
        """Create the folder and record ``spec``, or check that it already holds ``spec``;
        remove temporary files of interrupted writes. Needs :meth:`lock`.

        Args:
            spec: the resolved spec of the run.
            chunk_rows: rows per chunk given to the run (part of the units' identities).

        Raises:
            SpecMismatchError: the folder holds results of a different resolved spec.
            ValueError: the folder cannot be created or written, or holds unit files but no
                spec.
        """
        self._require_lock("open")
        self._check_root()
        recorded = self._spec_data()
        if recorded is not None:
            differing = spec_diff(recorded, spec_to_dict(spec))
            if differing:
                shown = ", ".join(differing[:8]) + (", ..." if len(differing) > 8 else "")
                raise SpecMismatchError(
                    f"{self.label}: {self.root} holds results of another spec "
                    f"({self.spec_path}, name {recorded.get('name')!r}) than the one given "
                    f"(name {spec.name!r}); they differ in {shown}. Use another --out folder, "
                    f"or delete {self.root} to start over")
        else:
            if self.units_dir.exists() and any(self.units_dir.glob("*.parquet")):
                raise ValueError(f"{self.label}: {self.units_dir} holds unit files but "
                                 f"{self.spec_path} is missing; use another --out folder")
            atomic_write_bytes(self.spec_path, spec_to_toml(spec).encode())
        self.remove_temporary_files()
        with io_action("create the folder", self.units_dir):
            self.units_dir.mkdir(exist_ok=True)
        self._spec = spec
        self._chunk_rows = chunk_rows
        self._expected = None

    def remove_temporary_files(self) -> int:
        """Remove the ``.*.tmp`` files interrupted writes left (needs :meth:`lock`); their
        number."""
        self._require_lock("remove_temporary_files")
        removed = 0
        for folder in (self.root, self.units_dir, self.samples_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith(".") and path.name.endswith(".tmp") \
                        and path.is_file():
                    with io_action("remove", path):
                        path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # --------------------------------------------------------------- identities

    def _identities(self, lenient: bool = False) -> dict[str, UnitIdentity] | None:
        """unit id -> expected identity: of the opened spec, else of the recorded one (None
        without a spec, and with ``lenient`` without a valid one: the files are then checked
        for integrity only, e.g. a spec naming a metric plugin this process has not
        registered)."""
        if self._expected is None:
            from .units import expand_units

            try:
                spec = self._spec if self._spec is not None else self.read_spec()
            except ValueError:
                if not lenient:
                    raise
                return None
            if spec is None:
                return None
            prints = self.fingerprints
            if prints is None:  # a run knows it has none; a reader takes what files record
                prints = {} if self._spec is not None else _RECORDED
            self._expected = {unit.id: unit_identity(spec, unit, fingerprints=prints,
                                                     chunk_rows=self._chunk_rows)
                              for unit in expand_units(spec)}
        return self._expected

    def unit_path(self, unit_id: str) -> Path:
        return self.units_dir / f"{unit_id}.parquet"

    def samples_path(self, unit_id: str) -> Path:
        return self.samples_dir / f"{unit_id}.parquet"

    def finished(self) -> set[str]:
        """Ids of the units that have a file (unchecked: see :meth:`check`, :meth:`verify`)."""
        if not self.units_dir.exists():
            return set()
        return {p.name[:-len(".parquet")] for p in self.units_dir.iterdir()
                if p.name.endswith(".parquet") and not p.name.startswith(".")}

    # --------------------------------------------------------------- checking

    def _inspect(self, path: Path, kind: str, unit_id: str,
                 expected: UnitIdentity | None, *, load: bool,
                 accept_unverified: bool = False) -> tuple[pa.Table | None, str, dict | None]:
        """Check one file; (table if ``load``, checksum, metadata) or raise _Bad.

        Without metadata the file is accepted only with ``accept_unverified`` (metadata None).
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _Bad("is missing") from None
        except OSError as error:
            raise _Bad(f"cannot be read ({error.strerror or error})") from None
        if not data:
            raise _Bad("is empty")
        if accept_unverified and _PREFIX.encode() not in data:
            _file_meta(data)  # it must still parse
            return (self._table(data) if load else None), "", None
        if _PREFIX.encode() not in data:
            raise _Bad("carries no identity or checksum (written by hand or by an older "
                       "guidelab)")
        checksum, meta = _verified_bytes(data)
        if meta.get(f"{_PREFIX}kind") != kind:
            raise _Bad(f"is a {meta.get(f'{_PREFIX}kind')!r} file, not a {kind} file")
        if meta.get(f"{_PREFIX}unit_id") != unit_id:
            raise _Bad(f"holds unit {meta.get(f'{_PREFIX}unit_id')!r}, not {unit_id!r} (a "
                       f"file copied over another unit's name?)")
        try:
            recorded = UnitIdentity.from_metadata(meta)
        except (KeyError, ValueError) as error:
            raise _Bad(f"has incomplete guidelab metadata ({_first_line(error)})") from None
        if recorded.digest != meta.get(f"{_PREFIX}identity"):
            raise _Bad("its identity does not match the settings it records")
        if expected is not None:
            if expected.fingerprints is _RECORDED:
                expected = UnitIdentity(expected.unit_id, expected.key, expected.fields,
                                        recorded.fingerprints, expected.noise_scheme,
                                        expected.format)
            if self._chunk_rows is _RECORDED:  # a reader cannot know a run's chunk_rows
                fields = {k: v for k, v in expected.fields.items() if k != "chunk_rows"}
                if "chunk_rows" in recorded.fields:
                    fields["chunk_rows"] = recorded.fields["chunk_rows"]
                expected = UnitIdentity(expected.unit_id, expected.key, fields,
                                        expected.fingerprints, expected.noise_scheme,
                                        expected.format)
            if recorded.digest != expected.digest:
                raise _Bad(_differences(recorded, expected))
        return (self._table(data) if load else None), checksum, meta

    @staticmethod
    def _table(data: bytes) -> pa.Table:
        try:
            return pq.read_table(pa.BufferReader(data)).replace_schema_metadata(None)
        except (pa.ArrowException, OSError, ValueError) as error:
            raise _Bad(f"cannot be read ({_first_line(error)})") from None

    def _quarantine(self, path: Path, kind: str) -> Path:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.quarantine_dir / ("samples" if kind == "samples" else "units")
        with io_action("create the folder", folder):
            folder.mkdir(parents=True, exist_ok=True)
        stem = path.name[:-len(".parquet")] if path.name.endswith(".parquet") else path.name
        target = folder / f"{stem}.{stamp}.parquet"
        counter = 1
        while target.exists():
            target = folder / f"{stem}.{stamp}-{counter}.parquet"
            counter += 1
        with io_action("move", f"{path} to {target}"):
            os.rename(path, target)
        return target

    def _scan(self, *, quarantine: bool, load: bool, accept_unverified: bool = False,
              lenient: bool = False,
              log: Callable[[str], None] | None = None) -> Verification:
        """Check every unit file (and the samples file it records)."""
        if quarantine:
            self._require_lock("check")
        expected = self._identities(lenient)
        result = Verification()
        names = sorted(self.finished())

        def problem(path: Path, reason: str, unit_id: str, kind: str) -> None:
            item = Problem(path, reason, unit_id, kind)
            if quarantine and path.exists():
                item.moved_to = self._quarantine(path, kind)
            result.problems.append(item)
            if log is not None:
                redo = quarantine and expected is not None and unit_id in expected
                log(f"{'quarantined ' if quarantine else ''}{item.line(self.root)}"
                    f"{'; the unit will be recomputed' if redo else ''}")

        for unit_id in names:
            path = self.unit_path(unit_id)
            want = expected.get(unit_id) if expected else None
            if expected and want is None and not accept_unverified:
                problem(path, "is not a unit of the spec in spec.toml", unit_id, "unit")
                continue
            try:
                table, _, meta = self._inspect(path, "unit", unit_id, want, load=load,
                                               accept_unverified=accept_unverified)
            except _Bad as bad:
                problem(path, str(bad), unit_id, "unit")
                continue
            samples = self.samples_path(unit_id)
            if meta is None:  # accepted without metadata
                result.unverified.append(unit_id)
                if load:
                    result.tables[unit_id] = table
                    if samples.is_file():
                        try:
                            result.samples[unit_id] = self._inspect(
                                samples, "samples", unit_id, None, load=True,
                                accept_unverified=True)[0]
                        except _Bad as bad:
                            problem(samples, str(bad), unit_id, "samples")
                continue
            if expected and want is None:
                problem(path, "is not a unit of the spec in spec.toml", unit_id, "unit")
                continue
            sample_sum = meta.get(f"{_PREFIX}samples", "")
            if sample_sum:
                try:
                    sample_table, checksum, _ = self._inspect(samples, "samples", unit_id, want,
                                                              load=load)
                    if checksum != sample_sum:
                        raise _Bad(f"is not the samples file units/{unit_id}.parquet records "
                                   f"(another checksum)")
                except _Bad as bad:
                    problem(samples, str(bad), unit_id, "samples")
                    if load and not quarantine:  # a reader may still use the unit's rows
                        result.tables[unit_id] = table
                    continue
                if load:
                    result.samples[unit_id] = sample_table
            result.ok.append(unit_id)
            if load:
                result.tables[unit_id] = table
        if expected:
            good = set(result.ok)
            result.missing = [unit_id for unit_id in expected if unit_id not in good]
        return result

    def check(self, *, log: Callable[[str], None] | None = None) -> set[str]:
        """Verify every unit file of an opened folder; move the files that fail into
        ``quarantine/`` (one ``log`` line each). Returns the ids of the good units."""
        self._require_lock("check")
        if self._spec is None:
            raise RuntimeError("ResultStore.check needs an opened store (ResultStore.open)")
        return set(self._scan(quarantine=True, load=False, log=log).ok)

    def verify(self, *, quarantine: bool = False,
               log: Callable[[str], None] | None = None) -> Verification:
        """Check the whole folder against its recorded ``spec.toml``: read-only unless
        ``quarantine`` (which takes the folder's lock, refusing if a run holds it).

        Raises:
            ValueError: the folder does not exist, or has no readable spec.toml.
        """
        if not self.root.is_dir():
            raise ValueError(f"{self.label}: {self.root} is not a folder")
        if self.read_spec() is None:
            raise ValueError(f"{self.label}: {self.root} is not a results folder (no "
                             f"spec.toml)")
        if not quarantine:
            return self._scan(quarantine=False, load=False, log=log)
        with self.lock(wait=False):
            return self._scan(quarantine=True, load=False, log=log)

    def read_all(self, *, accept_unverified: bool = False) -> Verification:
        """Every good unit's rows and samples (``rows``, ``samples``), and the problems, read
        only; with ``accept_unverified`` files without guidelab metadata are read too
        (``unverified``). Without a valid spec the files are checked for integrity only."""
        return self._scan(quarantine=False, load=True, accept_unverified=accept_unverified,
                          lenient=True)

    # --------------------------------------------------------------- reading

    def read_table(self, unit_ids: Sequence[str] | None = None) -> pa.Table:
        """The rows of ``unit_ids`` (each must pass its check, else ValueError), or of every
        good unit ordered by unit id, as one Arrow table."""
        if unit_ids is None:
            found = self._scan(quarantine=False, load=True, lenient=True)
            tables = [found.tables[i] for i in sorted(found.ok)]
        else:
            expected = self._identities(lenient=True)
            tables = []
            for unit_id in unit_ids:
                path = self.unit_path(unit_id)
                want = expected.get(unit_id) if expected is not None else None
                try:
                    tables.append(self._inspect(path, "unit", unit_id, want, load=True)[0])
                except _Bad as bad:
                    raise ValueError(f"{self.label}: {path}: {bad}; run the study again "
                                     f"to recompute it") from None
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")

    def read_rows(self, unit_ids: Sequence[str] | None = None) -> list[dict]:
        """:meth:`read_table` as a list of dicts."""
        return self.read_table(unit_ids).to_pylist()

    def read_samples(self) -> pa.Table:
        """Every stored sample of the good units, ordered by unit id, as one Arrow table."""
        found = self._scan(quarantine=False, load=True, lenient=True)
        tables = [found.samples[i] for i in sorted(found.samples)]
        return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})

    # --------------------------------------------------------------- run information

    @property
    def run_info_path(self) -> Path:
        return self.root / "run.json"

    def read_run_info(self) -> list[dict]:
        """The runs recorded in ``run.json``, oldest first (each ``{"started", "seconds",
        "host", "guidelab_version", "units_computed"}``); [] when there is none or it cannot
        be read (it is informative only)."""
        try:
            data = json.loads(self.run_info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        runs = data.get("runs") if isinstance(data, dict) else None
        return [run for run in runs if isinstance(run, dict)] if isinstance(runs, list) else []

    def write_run_info(self, *, seconds: float, units_computed: int) -> Path:
        """Append this run to ``run.json`` (atomically; needs :meth:`lock`): its start time
        (UTC, ISO 8601, now minus ``seconds``), ``seconds``, the host name, guidelab's version
        and ``units_computed``. The last :data:`RUN_INFO_KEEP` runs are kept."""
        from .._version import __version__

        self._require_lock("write_run_info")
        now = datetime.datetime.now(datetime.UTC)
        started = now - datetime.timedelta(seconds=max(float(seconds), 0.0))
        run = {"started": started.isoformat(timespec="seconds"), "seconds": float(seconds),
               "host": socket.gethostname(), "guidelab_version": __version__,
               "units_computed": int(units_computed)}
        runs = (self.read_run_info() + [run])[-RUN_INFO_KEEP:]
        text = json.dumps({"format": 1, "runs": runs}, indent=1, allow_nan=False)
        atomic_write_bytes(self.run_info_path, (text + "\n").encode())
        return self.run_info_path

    # --------------------------------------------------------------- writing

    def write_unit(self, unit_id: str, rows: Sequence[dict],
                   samples: dict[str, list] | None = None) -> Path:
        """Write a finished unit of the opened spec: its samples (if any) first, then its rows,
        each sealed with its identity and checksum (atomically)."""
        self._require_lock("write_unit")
        expected = self._identities() or {}
        if unit_id not in expected:
            raise ValueError(f"unit_id: {unit_id!r} is not a unit of the spec of {self.root}")
        identity = expected[unit_id]
        samples_sum = ""
        samples_path = self.samples_path(unit_id)
        if samples:
            data, samples_sum = _sealed_bytes(pa.table(samples), identity.metadata("samples"))
            atomic_write_bytes(samples_path, data)
        elif samples_path.exists():
            with io_action("remove", samples_path):
                samples_path.unlink()
        path = self.unit_path(unit_id)
        data, _ = _sealed_bytes(rows_to_table(rows), identity.metadata("unit", samples_sum))
        atomic_write_bytes(path, data)
        return path

    def write_csv(self, rows: Sequence[dict], leading: Sequence[str],
                  name: str = "results.csv") -> Path:
        """``DIR/name`` with every row (record columns left out), atomically."""
        table = [{k: v for k, v in row.items() if not k.startswith("record_")} for row in rows]
        path = self.root / name
        write_csv(path, table, leading)
        return path

