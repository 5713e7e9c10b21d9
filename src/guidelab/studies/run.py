r"""Running a study: the units of a spec that have no valid file yet, on a backend, into the
store.

:func:`run_spec` locks the results folder for its whole lifetime (one writer per folder), opens
the results store (:mod:`guidelab.studies.store`: the spec check or write, leftover temporary
files removed), checks every unit file (one that fails is quarantined and its unit counts as
missing), skips the units whose file passed, runs the others on a backend
(:mod:`guidelab.studies.backends`; each unit is :func:`guidelab.studies.runner.run_unit`) and
writes each unit's sealed file as soon as it arrives. Only this process writes the folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backends import get_backend
from .parts import needs_artifacts, prepare, unit_fingerprints
from .pooling import pooled_rows
from .runner import RESULT_COLUMNS, UnitResult
from .spec import Spec, load_spec, spec_to_dict
from .store import Fingerprints, ResultStore
from .units import Unit, expand_units, unit_settings

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
        pooled: rows pooled over classes (``class = "all"``, :mod:`guidelab.studies.pooling`),
            also in ``results.csv``.
        timings: where the wall-clock time of the units computed now went, in seconds:
            ``"sampling"`` (the samplers) and ``"metrics"`` (metric name -> seconds in its
            measurements), each summed over units (which may run in parallel), and
            ``"artifacts"`` (training or loading models and judges before the units).
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
    pooled: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def _unit_samples(spec: Spec, unit: Unit) -> int:
    """Samples a unit draws: trials x its strengths (x the exact reference's 1)."""
    return spec.trials * (1 if unit.reference else len(spec.w))


def run_spec(spec: Spec | str | Path, out: str | Path, *, backend: Any = "local",
             overrides: Sequence[str] = (), chunk_rows: int | None = None,
             progress: bool = True, on_unit: Callable[[UnitResult], None] | None = None,
             log: Callable[[str], None] | None = None, units: Sequence[str] | None = None,
             fingerprints: Fingerprints | None = None, wait: bool = False) -> RunResult:
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
        fingerprints: data and model fingerprints the units' rows depend on (a dict for every
            unit, or a callable of the :class:`~guidelab.studies.units.Unit` returning one);
            part of each unit's identity, so a file made with other fingerprints is
            recomputed. Default: :func:`guidelab.studies.parts.unit_fingerprints` (the data's
            content, the weight files' fingerprints).
        wait: if another run holds the folder, wait for it (saying so) instead of refusing.

    Returns:
        A :class:`RunResult`.

    Raises:
        SpecError, SpecMismatchError, ValueError: bad spec, folder or backend, before any unit
            runs (a backend with a ``probe()`` method, e.g. a Ray cluster address, is probed
            before the folder is created or locked); FolderBusyError (a ValueError): another
            run holds the folder.
        StoreIOError: a file cannot be written or moved (an OSError naming it).
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if not isinstance(spec, Spec):
        spec = load_spec(spec, overrides)
    backend = get_backend(backend)
    probe = getattr(backend, "probe", None)
    if callable(probe):
        probe()  # an unreachable cluster stops here, before the folder is created
    try:
        if fingerprints is None:  # the content of the data and weight files each unit reads
            def fingerprints(unit: Unit) -> dict[str, str]:
                return unit_fingerprints(unit_settings(spec, unit))
        store = ResultStore(out, fingerprints=fingerprints)
        with store.lock(wait=wait, log=log or tqdm.write):
            store.open(spec, chunk_rows=chunk_rows)
            return _run_open(spec, out, store, backend, chunk_rows=chunk_rows,
                             progress=progress, on_unit=on_unit, log=log, units=units,
                             started=started)
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()  # a connection probe() made and no run used (a busy folder, ...)


def _run_open(spec: Spec, out: str | Path, store: ResultStore, backend: Any, *,
              chunk_rows: int | None, progress: bool, on_unit, log, units,
              started: float) -> RunResult:
    """The body of :func:`run_spec`, under the folder's lock with the store open."""
    from tqdm.auto import tqdm

    all_units = expand_units(spec)
    selected = all_units if units is None else [u for u in all_units if u.id in set(units)]
    finished = store.check(log=log or tqdm.write)  # files that fail are quarantined
    missing = [u for u in selected if u.id not in finished]
    skipped = [u.id for u in selected if u.id in finished]
    write = log or tqdm.write
    # trained models and fitted judges: built (or loaded) once here, before any unit runs, so
    # units on any backend only load them from the model store
    settings = {json.dumps(spec_to_dict(s), sort_keys=True): s
                for s in (unit_settings(spec, u) for u in missing)}
    timings: dict = {"sampling": 0.0, "metrics": {name: 0.0 for name in spec.metrics},
                     "artifacts": 0.0}
    if any(needs_artifacts(s) for s in settings.values()):
        write(f"{spec.name}: preparing trained models and judges (model store)")
        began = time.perf_counter()
        prepare(list(settings.values()), progress=progress, log=write)
        timings["artifacts"] = time.perf_counter() - began
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
        timings["sampling"] += getattr(result, "sampling_seconds", 0.0)
        for name, seconds in (getattr(result, "metric_seconds", None) or {}).items():
            timings["metrics"][name] = timings["metrics"].get(name, 0.0) + seconds
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
    pooled = pooled_rows(spec, rows)
    csv = store.write_csv(rows + pooled, RESULT_COLUMNS)
    store.write_run_info(seconds=time.perf_counter() - started, units_computed=len(computed))
    return RunResult(Path(out), spec, all_units, computed, skipped, rows, csv,
                     time.perf_counter() - started, pooled=pooled, timings=timings)
