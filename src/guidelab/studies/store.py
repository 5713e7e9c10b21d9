r"""The results store of a study: an append-only folder of atomically written Parquet files.

Layout of a results folder ``DIR``:

* ``DIR/spec.toml``: the resolved spec, written first. A rerun with the same resolved spec
  computes only the units that have no file yet; a rerun with a *different* one is refused
  (:class:`SpecMismatchError` names both and the keys that differ).
* ``DIR/units/<unit_id>.parquet``: one file per finished unit, one row per strength w with the
  summary columns (``class, w, n, q_mean, q_low, q_high, ...``), the provenance (``seed,
  sampler, schedule, steps, dtype, device, guidelab_version, unit_id``), the swept keys and,
  per metric, the merged record as JSON (``record_<metric>``) so rows can be pooled later. A
  unit's file exists if and only if the unit finished: resuming is "run the units without a
  file".
* ``DIR/samples/<unit_id>.parquet``: the first ``keep_samples`` samples of every w of the unit
  (columns ``unit_id, class, w, sampler, row, x0[, x1]``), for scatter plots; only for d <= 2.
  Written before the unit's file.
* ``DIR/results.csv``: every row (without the records), rewritten after the run.

Every file is written atomically (temporary file in the same folder, flushed and fsynced,
renamed over the target with ``os.replace``, the folder fsynced), with the permissions the
user's umask gives (``0o666 & ~umask``), so a run killed at any moment leaves complete files
only and loses at most the units in flight.
"""

from __future__ import annotations

import io
import json
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .results import atomic_write_bytes, write_csv
from .spec import (
    Spec,
    SpecError,
    spec_diff,
    spec_to_dict,
    spec_to_toml,
    validate_spec,
)

__all__ = ["ResultStore", "SpecMismatchError", "rows_to_table", "read_unit_rows",
           "FLOAT_COLUMNS"]

FLOAT_COLUMNS = ("w", "q_mean", "q_se", "q_low", "q_high", "q_top_share", "pareto_khat",
                 "khat_threshold", "level", "p_mean", "p_se", "accuracy", "frac_p_decreased",
                 "inv_prior")
"""Columns stored as float64 even when every value of a unit is missing (null)."""


class SpecMismatchError(ValueError):
    """A results folder holds results of another spec."""


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


def _table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def read_unit_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of one unit file, as dicts."""
    return pq.read_table(path).to_pylist()


class ResultStore:
    """A results folder (module docstring).

    Args:
        root: the folder (created when the store is opened).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.spec_path = self.root / "spec.toml"
        self.units_dir = self.root / "units"
        self.samples_dir = self.root / "samples"

    # --------------------------------------------------------------- opening

    def _check_root(self) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise ValueError(f"out: {root} is a file; expected a folder for the results")
        probe = root
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise ValueError(f"out: {probe} is a file, so {root} cannot be created")
        if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"out: {probe} is not writable, so results cannot be written "
                             f"to {root}")

    def read_spec(self) -> Spec | None:
        """The resolved spec recorded in the folder, or None if there is none."""
        if not self.spec_path.exists():
            return None
        try:
            data = tomllib.loads(self.spec_path.read_text())
            return validate_spec(data, str(self.spec_path))
        except (tomllib.TOMLDecodeError, SpecError) as error:
            raise ValueError(f"out: {self.spec_path} is not a readable spec ({error}); use "
                             f"another --out folder") from None

    def open(self, spec: Spec) -> None:
        """Create the folder and record ``spec``, or check that it already holds ``spec``.

        Raises:
            SpecMismatchError: the folder holds results of a different resolved spec.
            ValueError: the folder cannot be created or written, or holds unit files but no
                spec.
        """
        self._check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"out: cannot create {self.root}: {error.strerror}") from None
        if self.spec_path.exists():
            try:
                recorded = tomllib.loads(self.spec_path.read_text())
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"out: {self.spec_path} is not valid TOML ({error}); use "
                                 f"another --out folder") from None
            differing = spec_diff(recorded, spec_to_dict(spec))
            if differing:
                shown = ", ".join(differing[:8]) + (", ..." if len(differing) > 8 else "")
                raise SpecMismatchError(
                    f"out: {self.root} holds results of another spec ({self.spec_path}, "
                    f"name {recorded.get('name')!r}) than the one given (name {spec.name!r}); "
                    f"they differ in {shown}. Use another --out folder, or delete "
                    f"{self.root} to start over")
        else:
            if self.units_dir.exists() and any(self.units_dir.glob("*.parquet")):
                raise ValueError(f"out: {self.units_dir} holds unit files but {self.spec_path} "
                                 f"is missing; use another --out folder")
            atomic_write_bytes(self.spec_path, spec_to_toml(spec).encode())
        self.units_dir.mkdir(exist_ok=True)

    # --------------------------------------------------------------- units

    def unit_path(self, unit_id: str) -> Path:
        return self.units_dir / f"{unit_id}.parquet"

    def samples_path(self, unit_id: str) -> Path:
        return self.samples_dir / f"{unit_id}.parquet"

    def finished(self) -> set[str]:
        """Ids of the units that have a result file."""
        if not self.units_dir.exists():
            return set()
        return {p.name[:-len(".parquet")] for p in self.units_dir.iterdir()
                if p.name.endswith(".parquet") and not p.name.startswith(".")}

    def write_unit(self, unit_id: str, rows: Sequence[dict],
                   samples: dict[str, list] | None = None) -> Path:
        """Write a finished unit: its samples (if any) first, then its rows (atomically)."""
        if samples:
            atomic_write_bytes(self.samples_path(unit_id), _table_bytes(pa.table(samples)))
        path = self.unit_path(unit_id)
        atomic_write_bytes(path, _table_bytes(rows_to_table(rows)))
        return path

    def read_table(self, unit_ids: Sequence[str] | None = None) -> pa.Table:
        """Every finished unit's rows (or those of ``unit_ids``) as one Arrow table, ordered by
        unit id and then as written."""
        ids = sorted(self.finished()) if unit_ids is None else list(unit_ids)
        tables = [pq.read_table(self.unit_path(i)) for i in ids]
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="default")

    def read_rows(self, unit_ids: Sequence[str] | None = None) -> list[dict]:
        """:meth:`read_table` as a list of dicts."""
        return self.read_table(unit_ids).to_pylist()

    def read_samples(self) -> pa.Table:
        """Every stored sample (all units) as one Arrow table."""
        if not self.samples_dir.exists():
            return pa.table({})
        tables = [pq.read_table(p) for p in sorted(self.samples_dir.glob("*.parquet"))]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})

    def write_csv(self, rows: Sequence[dict], leading: Sequence[str],
                  name: str = "results.csv") -> Path:
        """``DIR/name`` with every row (record columns left out), atomically."""
        table = [{k: v for k, v in row.items() if not k.startswith("record_")} for row in rows]
        path = self.root / name
        write_csv(path, table, leading)
        return path


def record_json(record: Any) -> str:
    """A metric record as the JSON string stored in ``record_<metric>``."""
    return json.dumps(record.to_dict(), sort_keys=True)
