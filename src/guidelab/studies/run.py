r"""Running a study: the units of a spec that have no file yet, on a backend, into the store.

:func:`run_spec` opens the results store (:mod:`guidelab.studies.store`), skips the units that
already have a file, runs the others on a backend (:mod:`guidelab.studies.backends`; each unit
is :func:`guidelab.studies.runner.run_unit`) and writes each unit's file as soon as it arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import get_backend
from .runner import RESULT_COLUMNS, UnitResult
from .spec import Spec, load_spec
from .store import ResultStore
from .units import Unit, expand_units

__all__ = ["RunResult", "run_spec"]


@dataclass
class RunResult:
    """What :func:`run_spec` did.

    Attributes:
        out: the results folder.
        spec: the resolved spec.
        units: every unit of the study, in order.
        computed: ids of the units computed by this call.
        skipped: ids of the units that already had a file.
        rows: every row of the study, from the store, in unit order.
        csv: the path of ``results.csv``.
        seconds: wall-clock time of the call.
    """

    out: Path
    spec: Spec
    units: list[Unit]
    computed: list[str]
    skipped: list[str]
    rows: list[dict]
    csv: Path
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _unit_samples(spec: Spec, unit: Unit) -> int:
    """Samples a unit draws: trials x its strengths (x the exact reference's 1)."""
    return spec.trials * (1 if unit.reference else len(spec.w))


def run_spec(spec: Spec | str | Path, out: str | Path, *, backend: Any = "local",
             overrides: Sequence[str] = (), chunk_rows: int | None = None,
             progress: bool = True, on_unit: Callable[[UnitResult], None] | None = None,
             log: Callable[[str], None] | None = None, units: Sequence[str] | None = None,
             ) -> RunResult:
    r"""Run a study into a results folder, computing only the units that have no file yet.

    Args:
        spec: a resolved :class:`~guidelab.studies.spec.Spec`, or a spec file / built-in
            name (loaded with ``overrides``, ``"key.path=value"`` strings).
        out: the results folder (:mod:`guidelab.studies.store`).
        backend: ``"local"`` (default), ``"ray"`` or a backend object
            (:mod:`guidelab.studies.backends`).
        chunk_rows: rows per chunk (overrides the spec's; results are the same up to the
            rounding of merged moments).
        progress: show a progress bar over units (and rows, locally).
        on_unit: called with each :class:`UnitResult` after its file is written.
        log: where messages go (default: ``tqdm.write``).
        units: ids of the units to run (default: all); the others are neither run nor counted
            as missing.

    Returns:
        A :class:`RunResult`.

    Raises:
        SpecError, SpecMismatchError, ValueError: bad spec, folder or backend, before any unit
            runs.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    backend = get_backend(backend)
    store = ResultStore(out)
    store.open(spec)
    all_units = expand_units(spec)
    selected = all_units if units is None else [u for u in all_units if u.id in set(units)]
    finished = store.finished()
    missing = [u for u in selected if u.id not in finished]
    skipped = [u.id for u in selected if u.id in finished]
    write = log or tqdm.write
    unit_bar = tqdm(total=len(selected), initial=len(skipped), desc=spec.name, unit="unit",
                    disable=not progress, dynamic_ncols=True)
    # samples of the whole run: its time left is the run's (units differ in size)
    row_bar = tqdm(total=sum(_unit_samples(spec, unit) for unit in missing), desc="samples",
                   unit="sample", unit_scale=True, leave=False, disable=not progress,
                   dynamic_ncols=True)
    computed: list[str] = []
    reports_rows = getattr(backend, "reports_rows", False)

    def on_result(result: UnitResult) -> None:
        store.write_unit(result.unit_id, result.rows, result.samples)
        computed.append(result.unit_id)
        unit_bar.update()
        if not reports_rows:
            row_bar.update(sum(row.get("n", 0) + row.get("n_nonfinite", 0)
                               for row in result.rows))
        if on_unit is not None:
            on_unit(result)

    try:
        backend.run(spec, missing, on_result, chunk_rows=chunk_rows,
                    on_rows=row_bar.update if reports_rows else None, log=write)
    finally:
        row_bar.close()
        unit_bar.close()
    order = [u.id for u in all_units if u.id in store.finished()]
    rows = store.read_rows(order)
    csv = store.write_csv(rows, RESULT_COLUMNS)
    return RunResult(Path(out), spec, all_units, computed, skipped, rows, csv,
                     time.perf_counter() - started)
