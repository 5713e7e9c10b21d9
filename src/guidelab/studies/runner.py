r"""Running a study: units of rows streamed in chunks, coupled across w, stored as they finish.

**A unit** (:mod:`guidelab.studies.units`) is a pure function of (resolved spec, unit key).
Its ``trials`` rows are processed in chunks of ``chunk_rows`` rows (the spec's, or a device
default); rows [start, stop) of class c draw every random number from

    RowNoise(seed, streams=c, rows=arange(start, stop))

(:mod:`guidelab.noise`): the initial state x_init = noise.normal((n, d)) and then the sampler's
per-step noise through ``generator=noise``. Each strength w of the unit gets a fresh RowNoise with
the same (seed, class, rows), so row r at strength w and row r at w = 0 are driven by the same
noise (*coupled*): w = 0 runs first in every chunk and is the baseline of the count of rows whose
p(c|Y) went down. (The draws of the first strength are recorded, up to
:data:`NOISE_TAPE_BYTES`, and replayed to the others: the same bits, generated once.) A row's
noise depends on (seed, class, row index) only: any subset of rows, in any chunking, on any
backend and in any order, draws the same noise.

Each chunk and strength yields one record per metric (:mod:`guidelab.studies.measures`);
records of a unit's chunks are merged in row order. With a given chunk size a unit's rows are
the same bits whatever the backend, the order of units, the number of workers or which other
rows are computed (rows [0, m) of a unit are rows [0, m) of a larger one). Another chunk size
draws the same noise for every row, but batched products (BLAS kernels chosen by the number of
rows, vectorised loops with scalar tails) may round the last float32 bit of a sample
differently, and merged moments round differently: results then agree to rounding, not to the
bit. The same holds for PyTorch's CPU thread count, which a unit therefore fixes
(:data:`UNIT_CPU_THREADS`; several cores run several units at once instead). Chunk
sizes are part of the spec (``chunk_rows``, or the device default); an
out-of-memory error (CUDA's, or the CPU allocator's) halves the chunk, to a multiple of 8 rows,
with a message, and retries it: the rows, and so their noise, stay the same.

**The sampler** and its schedule come from :mod:`guidelab.samplers.registry`
(``sampler_schedule(name, schedule, steps)``); the guided field is the unit's model, its
guidance rule (any rule of :mod:`guidelab.guidance.registry`, built from ``guidance.options``)
and its strength schedule, with whatever the rule needs (:func:`guidelab.studies.parts.
guided_field`). A reference unit runs the exact
reverse kernel of the Gaussian mixture (:func:`~guidelab.samplers.exact_reverse`) at w = 0.

A whole study (units on a backend, into the results store) is
:func:`guidelab.studies.run.run_spec`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _json
from ..noise import RowNoise
from .measures import METRICS, ChunkContext, UnitContext
from .parts import guided_field, study_parts
from .spec import CLASS_KEY, IntervalStrengthSpec, Spec
from .spec.schema import MODEL_SCHEDULE
from .store import record_json
from .units import REFERENCE_KEY, Unit, _thaw, make_unit, unit_settings

__all__ = ["UnitResult", "run_unit", "default_chunk_rows",
           "RESULT_COLUMNS", "EXACT_SAMPLER", "PROVENANCE_COLUMNS", "NOISE_TAPE_BYTES",
           "UNIT_CPU_THREADS", "IMAGE_KEEP_SAMPLES"]

RESULT_COLUMNS = ["class", "w", "n", "q_mean", "q_low", "q_high", "q_top_share", "p_mean",
                  "accuracy", "frac_p_decreased", "inv_prior", "sampler", "steps", "q_se",
                  "pareto_khat", "q_reliable", "interval_method", "n_nonfinite"]
"""The leading columns of every result row (and of ``results.csv``)."""
PROVENANCE_COLUMNS = ["seed", "schedule", "rule", "strength_schedule", "trials", "dtype",
                      "device", "guidelab_version", "unit_id"]
"""What produced a row, recorded with it."""
EXACT_SAMPLER = "exact_reverse"
"""Sampler name of the reference rows: the exact reverse kernel of the mixture at w = 0."""


@dataclass
class UnitResult:
    """A finished unit.

    Attributes:
        unit_id: the unit's id (its file name).
        key: the unit key as a dict (dotted path -> value).
        rows: one dict per w (w = 0 first): summary columns, provenance, swept keys and
            ``record_<metric>`` JSON strings.
        samples: columns of the first ``keep_samples`` samples of each w (d <= 2), or None.
        seconds: wall-clock time of the unit.
        metric_seconds: wall-clock seconds spent in each metric's ``measure``, summed over the
            unit's chunks and strengths (metric name -> seconds); not part of the rows, which
            stay the same bits from run to run.
        sampling_seconds: wall-clock seconds spent in the sampler, summed the same way.
    """

    unit_id: str
    key: dict
    rows: list[dict]
    samples: dict[str, list] | None
    seconds: float
    metric_seconds: dict[str, float] = field(default_factory=dict)
    sampling_seconds: float = 0.0


def default_chunk_rows(device: torch.device, row_size: int) -> int:
    """Rows per chunk when the spec gives none: about 2^17 numbers a chunk-wide tensor on the
    CPU (the exact families chunk again inside, to cache size) and 2^23 on an accelerator."""
    row_size = max(1, int(row_size))
    if device.type == "cpu":
        return max(1024, (1 << 17) // row_size)
    return max(4096, (1 << 23) // row_size)


def _strength_label(settings: Spec) -> str:
    strength = settings.guidance.strength
    if isinstance(strength, IntervalStrengthSpec):
        return f"interval({strength.variable} in ({strength.lo:g}, {strength.hi:g}])"
    fields = {k: v for k, v in strength.model_dump().items() if k != "kind"}
    if not fields:
        return strength.kind
    return f"{strength.kind}({', '.join(f'{k}={v}' for k, v in fields.items())})"


def _schedule_label(schedule) -> str:
    name = getattr(schedule, "name", None)
    if isinstance(name, str):
        return name
    horizon = getattr(schedule, "horizon", None)
    return f"vp_continuous(horizon={horizon:g})" if horizon is not None else type(
        schedule).__name__


def _sampler_call(settings: Spec, unit: Unit, parts):
    """(run(noise, x_init, w) -> SampleResult, sampler label, steps, schedule label)."""
    from ..samplers import exact_reverse
    from ..samplers.registry import sampler_info, sampler_schedule
    from ..schedules import make_schedule

    c = unit.c
    if unit.reference:
        schedule = make_schedule(settings.reference.schedule, settings.reference.steps)

        def run_reference(noise, x_init, w):
            return exact_reverse(parts.distribution, c, schedule, x_init, generator=noise)

        return run_reference, EXACT_SAMPLER, settings.reference.steps, _schedule_label(schedule)
    info = sampler_info(settings.sampler.name)
    if settings.sampler.schedule == MODEL_SCHEDULE:
        schedule, extra = _model_schedule(settings, parts.model, info)
    else:
        schedule, extra = sampler_schedule(settings.sampler.name, settings.sampler.schedule,
                                           settings.sampler.steps)
    options = {**extra, **settings.sampler.options}

    def run(noise, x_init, w):
        guided = guided_field(settings, parts, c, w)
        return info.fn(guided, schedule, x_init, generator=noise, **options)

    return run, info.name, settings.sampler.steps, _schedule_label(schedule)


def _model_schedule(settings: Spec, model, info) -> tuple[Any, dict]:
    """The model's own training schedule, and DDIM's timesteps respaced to ``steps``."""
    import inspect

    schedule = getattr(model, "schedule", None)
    if schedule is None:
        raise ValueError(f"sampler.schedule: 'model' needs a model with its own training "
                         f"schedule (a diffusers model); {type(model).__name__} has none")
    if "timesteps" not in inspect.signature(info.fn).parameters:
        return schedule, {}
    total = len(schedule.alphas) - 1  # T training steps
    steps = min(settings.sampler.steps, total)
    timesteps = torch.linspace(total, 0, steps + 1, dtype=torch.float64).round().long()
    return schedule, {"timesteps": timesteps.unique_consecutive().tolist()}


def _halve(size: int) -> int:
    """Half a chunk, kept a multiple of 8 rows while it is at least 16 (see module docstring)."""
    half = size // 2
    return max(1, half - half % 8 if half >= 8 else half)


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(error, oom)) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


UNIT_CPU_THREADS = 1
"""PyTorch CPU threads a unit runs with: results must not depend on the machine's thread count
(parallel kernels split sums and pick BLAS paths by thread, which changes the last bits), and
one thread per unit is also what a Ray worker gets. Several cores run several units at once
(the local backend's threads, or Ray's workers)."""


@contextlib.contextmanager
def _cpu_threads(device: torch.device, threads: int):
    """Run with ``threads`` PyTorch CPU threads (CPU devices only), then restore the count."""
    old = torch.get_num_threads()
    change = device.type == "cpu" and old != threads
    if change:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(old)


def run_unit(spec: Spec, unit: Unit | dict, *, chunk_rows: int | None = None,
             on_rows: Callable[[int], None] | None = None,
             log: Callable[[str], None] | None = None) -> UnitResult:
    r"""Run one unit of a resolved spec: every w of the unit over all its rows, in chunks.

    Args:
        spec: the resolved spec (:func:`~guidelab.studies.spec.load_spec`).
        unit: a :class:`~guidelab.studies.units.Unit` or its key as a dict
            (``{"class": 0, "sampler.name": "ddim"}``; ``"reference": True`` for the exact
            reference).
        chunk_rows: rows per chunk (default: the spec's ``chunk_rows``, else
            :func:`default_chunk_rows`).
        on_rows: called with the number of samples finished after every strength of every
            chunk, for progress bars (a chunk retried after running out of memory counts
            again).
        log: called with messages (a halved chunk after CUDA out-of-memory).

    Returns:
        A :class:`UnitResult`: one row per w of the unit (w = 0 first).

    On the CPU the unit runs with :data:`UNIT_CPU_THREADS` PyTorch thread(s), whatever the
    process had set, so that its bits do not depend on the machine or the backend.
    """
    if not isinstance(unit, Unit):
        unit = make_unit(unit)
    settings = unit_settings(spec, unit)
    with _cpu_threads(torch.device(settings.device), UNIT_CPU_THREADS):
        return _run_unit(spec, unit, settings, chunk_rows, on_rows, log)


def _run_unit(spec: Spec, unit: Unit, settings: Spec, chunk_rows, on_rows, log) -> UnitResult:
    from .._version import __version__

    start_time = time.perf_counter()
    parts = study_parts(settings, log=log)
    device = torch.device(settings.device)
    dtype = settings.torch_dtype
    c = unit.c
    shape = parts.shape
    ws = settings.w
    trials = settings.trials
    run, sampler_label, steps, schedule_label = _sampler_call(settings, unit, parts)
    metrics = [METRICS[name] for name in settings.metrics]
    inv_prior = parts.inv_prior[c] if parts.inv_prior is not None else None
    contexts = {m.name: UnitContext(settings, parts.distribution, c, unit.reference,
                                    m.parse_options(settings.metric_options.get(m.name)),
                                    unit.id, parts, inv_prior, log=log,
                                    field=lambda w: guided_field(settings, parts, c, w))
                for m in metrics}
    seconds = {None: 0.0, **{m.name: 0.0 for m in metrics}}  # None: the sampler; wall time
    records: dict[tuple[str, float], Any] = {}
    keep = settings.keep_samples if math.prod(shape) <= 2 else min(settings.keep_samples,
                                                                   IMAGE_KEEP_SAMPLES)
    kept: dict[float, list[torch.Tensor]] = {w: [] for w in ws}
    size = chunk_rows or settings.chunk_rows or default_chunk_rows(device, math.prod(shape))
    start = 0
    while start < trials:
        stop = min(trials, start + size)
        try:
            chunk_records, chunk_samples = _run_chunk(run, settings, unit, contexts, metrics,
                                                      ws, start, stop, shape, device, dtype,
                                                      keep, on_rows, seconds)
        except Exception as error:
            if not _is_oom(error) or size == 1:
                raise
            size = _halve(stop - start)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            message = (f"unit {unit.id}: out of memory with {stop - start} rows a chunk "
                       f"({device}); retrying rows {start}.. with {size} rows a chunk")
            (log or print)(message)
            continue
        for key, record in chunk_records.items():
            records[key] = record if key not in records else records[key].merge(record)
        for w, samples in chunk_samples.items():
            kept[w].append(samples)
        start = stop

    provenance = {"seed": settings.seed, "schedule": schedule_label, "rule":
                  "none" if unit.reference else settings.guidance.rule,
                  "strength_schedule": "none" if unit.reference else _strength_label(settings),
                  "trials": trials, "dtype": settings.dtype, "device": settings.device,
                  "guidelab_version": __version__, "unit_id": unit.id}
    swept = {path: _plain(value) for path, value in unit.key
             if path not in (CLASS_KEY, REFERENCE_KEY)}
    rows = []
    for w in ws:
        row: dict[str, Any] = {"class": c, "w": w, "sampler": sampler_label, "steps": steps}
        for m in metrics:
            summary = m.summarize(records[(m.name, w)], contexts[m.name])
            clash = set(summary) & set(row)
            if clash:
                raise ValueError(f"metrics: metric {m.name!r} writes columns {sorted(clash)} "
                                 f"that are already taken")
            row.update(summary)
        row.update(provenance)
        for path, value in swept.items():
            row.setdefault(path, value)
        for m in metrics:
            row[f"record_{m.name}"] = record_json(records[(m.name, w)])
        leading = {k: row[k] for k in RESULT_COLUMNS if k in row}
        rows.append(leading | {k: v for k, v in row.items() if k not in leading})
    samples = _samples_columns(kept, unit, sampler_label, keep) if keep else None
    sampling_seconds = seconds.pop(None)
    return UnitResult(unit.id, dict(unit.as_dict()), rows, samples,
                      time.perf_counter() - start_time, metric_seconds=seconds,
                      sampling_seconds=sampling_seconds)


def _plain(value: Any) -> Any:
    """A swept value as a column value: scalars as they are, anything else as JSON."""
    if isinstance(value, tuple):
        return _json.dumps(_thaw(value))
    return value


IMAGE_KEEP_SAMPLES = 64
"""Most samples of each w a unit keeps when a sample has more than two numbers (an image, a
latent): enough for the report's sample grid, small in the store; ``keep_samples`` lowers it."""

NOISE_TAPE_BYTES = 1 << 28
"""Most bytes of draws a chunk records at its first strength to replay at the others."""


class _TapedNoise(RowNoise):
    """A RowNoise whose draws are recorded on a tape by the first strength of a chunk and
    replayed (as copies, the same bits) by the others, instead of being generated again.

    Every strength of a chunk uses RowNoise(seed, class, rows) and makes the same sequence of
    draws (the sampler's draws never depend on x or w), so replaying is generating: a draw
    whose kind, shape or dtype differs from the tape's, or one beyond the tape, is generated
    afresh at the right draw count. The tape stops recording at ``NOISE_TAPE_BYTES``.
    """

    def __init__(self, seed: int, stream: int, rows: torch.Tensor, device, tape: list,
                 replay: bool):
        super().__init__(seed, streams=stream, rows=rows, device=device)
        self._tape, self._replay, self._next = tape, replay, 0

    def _draw(self, kind: str, shape, dtype, fresh) -> torch.Tensor:
        index, self._next = self._next, self._next + 1
        key = (kind, tuple(int(s) for s in shape), dtype)
        if self._replay:
            if index < len(self._tape) and self._tape[index][0] == key:
                self.draws += 1
                return self._tape[index][1].clone()
            return fresh(shape, dtype)
        out = fresh(shape, dtype)
        used = sum(t.numel() * t.element_size() for _, t in self._tape)
        if index == len(self._tape) and used + out.numel() * out.element_size() \
                <= NOISE_TAPE_BYTES:
            self._tape.append((key, out.clone()))
        return out

    def normal(self, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._draw("normal", shape, dtype, super().normal)

    def uniform(self, shape, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self._draw("uniform", shape, dtype, super().uniform)


def _run_chunk(run, settings: Spec, unit: Unit, contexts, metrics, ws, start, stop, shape,
               device, dtype, keep, on_rows=None, seconds=None):
    """Records and kept samples of rows [start, stop) at every w (w = 0 first); the time spent
    in the sampler (key None) and in each metric (its name) is added to ``seconds``."""
    seconds = {} if seconds is None else seconds
    n = stop - start
    rows = torch.arange(start, stop, dtype=torch.int64, device=device)  # [n]
    scratch: dict = {}
    records, kept = {}, {}
    tape: list = []
    for i, w in enumerate(ws):
        noise = _TapedNoise(settings.seed, unit.c, rows, device, tape, replay=i > 0)
        began = time.perf_counter()
        x_init = noise.normal((n, *shape), dtype)  # [n, d]
        result = run(noise, x_init, w)
        samples = result.samples  # [n, d]
        seconds[None] = seconds.get(None, 0.0) + time.perf_counter() - began
        for m in metrics:
            ctx = ChunkContext(contexts[m.name], w, start, stop, samples, result.n_nonfinite,
                               scratch)
            began = time.perf_counter()
            records[(m.name, w)] = m.measure(ctx)
            seconds[m.name] = seconds.get(m.name, 0.0) + time.perf_counter() - began
        if keep and start < keep:
            kept[w] = samples[:keep - start].detach().to("cpu", torch.float64)
        if on_rows is not None:
            on_rows(n)
    return records, kept


def _samples_columns(kept: dict, unit: Unit, sampler: str, keep: int) -> dict[str, list]:
    columns: dict[str, list] = {"unit_id": [], "class": [], "w": [], "sampler": [], "row": []}
    dim = None
    for w, parts in kept.items():
        if not parts:
            continue
        block = torch.cat(parts)[:keep].flatten(1)  # [m, d]: an image's pixels in row-major order
        dim = block.shape[1]
        for j in range(dim):
            columns.setdefault(f"x{j}", []).extend(block[:, j].tolist())
        m = block.shape[0]
        columns["unit_id"].extend([unit.id] * m)
        columns["class"].extend([unit.c] * m)
        columns["w"].extend([float(w)] * m)
        columns["sampler"].extend([sampler] * m)
        columns["row"].extend(range(m))
    return columns if dim is not None else None
