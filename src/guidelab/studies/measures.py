r"""The metrics a study can name in ``metrics = [...]``: a registry of mergeable measurements.

A study streams each unit's rows in chunks; for every chunk and every strength w a metric turns
the chunk's samples into a *record* that merges exactly with the records of other chunks
(``record.merge(other)``, associative), and at the end of the unit turns the merged record into
the summary columns of the unit's row for that w. Records are stored with the rows (as JSON,
``record.to_dict()``), so rows of several units can be pooled later by merging their records.

A metric is a :class:`Metric`; :func:`register_metric` adds one, after which a spec may name it.
The runner knows nothing about any particular metric.

Built in:

* ``class_probability``: with the exact clean class posterior log p(c'|Y) of the study's
  distribution, the record of :class:`guidelab.metrics.ClassProbabilityRecord` (Q = E[1/p(c|Y)]
  in log space, E[p], accuracy, the largest terms for the Pareto k-hat, and, against the rows of
  w = 0 of the same chunk, the count of rows whose p(c|Y) went down); its summary is
  :class:`guidelab.metrics.ClassProbabilitySummary` with the reference 1/p(c).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Metric", "UnitContext", "ChunkContext", "METRICS", "register_metric",
           "clean_log_posterior"]


@dataclass
class UnitContext:
    """What a metric knows about the unit it measures.

    Attributes:
        spec: the unit's settings (the resolved spec with the unit's swept values set).
        distribution: the exact family (its class posterior is the measuring classifier).
        c: the unit's class.
        reference: True for the exact-reverse reference unit (w = 0 only).
        options: this metric's parsed options (or None).
        unit_id: the unit's id.
    """

    spec: Any
    distribution: Any
    c: int
    reference: bool
    options: Any
    unit_id: str


@dataclass
class ChunkContext:
    """One chunk of rows at one strength w.

    Attributes:
        unit: the :class:`UnitContext`.
        w: the guidance strength of these samples (w = 0 is measured first in every chunk).
        start, stop: the chunk's rows [start, stop) of the unit.
        samples: ``[n, ...]`` samples (non-finite rows are NaN).
        n_nonfinite: rows the sampler lost to non-finite values.
        scratch: a dict shared by every w of this chunk (and every metric; key by metric
            name): the w = 0 pass stores what later strengths compare to.
    """

    unit: UnitContext
    w: float
    start: int
    stop: int
    samples: torch.Tensor
    n_nonfinite: int
    scratch: dict = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.w == 0.0


@dataclass(frozen=True)
class Metric:
    """A measurement a spec can name.

    Attributes:
        name: the name in ``metrics = [...]``.
        measure: ``(ChunkContext) -> record``; the record has ``merge(other) -> record`` (exact,
            associative) and ``to_dict() -> JSON-able dict``.
        summarize: ``(record, UnitContext) -> dict`` of scalar summary columns for one row.
        load: ``(dict) -> record``, the inverse of ``to_dict``.
        options: a pydantic model of the metric's options (``[metric_options.NAME]``), or None.
        check: ``(spec, distribution) -> None | (dotted path, message)``: a spec this metric
            cannot measure, reported before anything runs.
    """

    name: str
    measure: Callable[[ChunkContext], Any]
    summarize: Callable[[Any, UnitContext], dict]
    load: Callable[[dict], Any]
    options: type[BaseModel] | None = None
    check: Callable[[Any, Any], tuple[str, str] | None] = lambda spec, distribution: None

    def parse_options(self, data: dict | None):
        """The validated options (the model's defaults when ``data`` is None)."""
        if self.options is None:
            if data:
                raise ValueError(f"metric {self.name!r} takes no options")
            return None
        return self.options.model_validate(data or {})


METRICS: dict[str, Metric] = {}
"""name -> :class:`Metric`."""


def register_metric(metric: Metric, *, replace: bool = False) -> Metric:
    """Make ``metric`` available to specs; ValueError for a taken name unless ``replace``."""
    if metric.name in METRICS and not replace:
        raise ValueError(f"name: a metric {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    return metric


# ----------------------------------------------------------------------------- class_probability

def clean_log_posterior(distribution, samples: torch.Tensor) -> torch.Tensor:
    r"""log p(c'|Y) of the clean distribution for every class, ``[n, C]`` float64 (CPU).

    Rows with a non-finite sample, and rows where the clean density is zero for every class
    (a uniform box's outside), are NaN: the summaries count them in ``n_nonfinite``. A class
    whose density is zero at y (p(c'|y) = 0) gets the most negative float64 rather than -inf.

    A Gaussian mixture uses its ``log_class_posterior`` (positive everywhere). Other families
    go through log p(c'|y) = log p(c') + log p(y|c') - logsumexp_c'' (log p(c'') +
    log p(y|c'')), which allows a zero density for some classes.
    """
    from ..distributions import GaussianMixture

    x = samples.flatten(1).to(torch.float64)  # [n, d]
    n = x.shape[0]
    out = torch.full((n, distribution.num_classes), math.nan, dtype=torch.float64)
    finite = torch.isfinite(x).all(dim=1)  # [n]
    if not bool(finite.any()):
        return out
    y = x[finite]  # [m, d]
    if isinstance(distribution, GaussianMixture):
        out[finite.cpu()] = distribution.log_class_posterior(y, 1.0, 0.0).cpu()
        return out
    log_prior = torch.log(distribution.class_prior).to(y.device)  # [C]
    joint = torch.stack([distribution.log_prob(y, 1.0, 0.0, c) + log_prior[c]
                         for c in range(distribution.num_classes)], dim=1)  # [m, C]
    log_posterior = joint - torch.logsumexp(joint, dim=1, keepdim=True)  # [m, C], NaN: no class
    # p(c'|y) = 0 exactly (log = -inf) is a valid value, not a failed row: the most negative
    # float64 keeps the row in the statistics (1/p(c|y) then overflows, honestly, to +inf)
    out[finite.cpu()] = log_posterior.clamp_min(torch.finfo(torch.float64).min).cpu()
    return out


class ClassProbabilityOptions(BaseModel):
    """``[metric_options.class_probability]``.

    Attributes:
        level: the nominal coverage of the interval for Q.
        keep_top: the largest terms a record keeps; default the M + 1 = floor(3 sqrt(n)) + 1
            that the Pareto k-hat of one unit's n = trials rows needs (and at least the
            ceil(0.001 n) of the top share), so a unit's k-hat is exactly the whole-array one
            while its stored record stays small. Pooling several units' records then fits the
            tail to fewer terms than it could (the summary warns).
        quantile_bins: bins of the record's logit-p histogram (quantile resolution 80 / bins).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    level: float = Field(default=0.95, gt=0, lt=1)
    keep_top: int | None = Field(default=None, ge=1)
    quantile_bins: int = Field(default=8000, ge=1)


def _keep_top(options: ClassProbabilityOptions | None, trials: int) -> int:
    from ..metrics.tails import psis_tail_size

    if options is not None and options.keep_top is not None:
        return options.keep_top
    return max(psis_tail_size(trials) + 1, math.ceil(0.001 * trials), 1)


def _class_probability_measure(ctx: ChunkContext):
    from ..metrics.record import ClassProbabilityRecord

    log_posterior = clean_log_posterior(ctx.unit.distribution, ctx.samples)  # [n, C]
    if ctx.is_baseline:
        ctx.scratch["class_probability"] = log_posterior
        baseline = None
    else:
        baseline = ctx.scratch.get("class_probability")
    options = ctx.unit.options
    return ClassProbabilityRecord.from_log_posterior(
        log_posterior, ctx.unit.c, baseline_log_posterior=baseline,
        keep_top=_keep_top(options, ctx.unit.spec.trials),
        quantile_bins=options.quantile_bins if options is not None else 8000)


def _class_probability_summarize(record, unit: UnitContext) -> dict:
    inv_prior = float(1.0 / unit.distribution.class_prior[unit.c])
    level = unit.options.level if unit.options is not None else 0.95
    return record.summary(inv_prior=inv_prior, level=level).as_row()


def _class_probability_load(data: dict):
    from ..metrics.record import ClassProbabilityRecord

    return ClassProbabilityRecord.from_dict(data)


def _class_probability_check(spec, distribution) -> tuple[str, str] | None:
    from ..distributions import EmpiricalMixture

    if isinstance(distribution, EmpiricalMixture) and distribution.bandwidth == 0:
        return ("distribution.bandwidth", "the class_probability metric needs bandwidth > 0: "
                "the clean empirical distribution has no density, so p(c|Y) is undefined")
    return None


register_metric(Metric("class_probability", _class_probability_measure,
                       _class_probability_summarize, _class_probability_load,
                       ClassProbabilityOptions, _class_probability_check))


# ----------------------------------------------------------------------------- exact_grid

@dataclass(frozen=True)
class ExactGridRecord:
    """The exact grid columns of one (unit, w), or None for chunks that did not compute them.

    The grid reference depends on the unit and w only, not on the rows, so the chunk that
    starts at row 0 computes it and every other chunk contributes an empty record; merging keeps
    the one that holds columns (exact, associative).
    """

    columns: dict | None = None

    def merge(self, other: ExactGridRecord) -> ExactGridRecord:
        return self if self.columns is not None else other

    def to_dict(self) -> dict:
        if self.columns is None:
            return {"columns": None}
        return {"columns": {key: (None if isinstance(value, float) and math.isnan(value)
                                  else value) for key, value in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> ExactGridRecord:
        columns = data.get("columns")
        if columns is None:
            return cls(None)
        return cls({key: (math.nan if value is None else value)
                    for key, value in columns.items()})


class ExactGridOptions(BaseModel):
    """``[metric_options.exact_grid]``.

    Attributes:
        points: grid nodes per axis of the coarse grid (the refined grid has about twice as
            many); None lets :func:`guidelab.exact.grid_reference` choose.
        refine: also run at half the spacing and report the difference as ``grid_q_err``
            (otherwise the error columns are NaN).
        w: the strengths that get exact columns (default: every w of the sweep); the others
            get NaN. Each (class, w) costs one grid propagation.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    points: int | None = Field(default=None, ge=9)
    refine: bool = True
    w: list[float] | None = None


def _exact_grid_target(unit: UnitContext):
    """(sampler name, schedule, sampler options) of the unit, as the runner builds them."""
    from ..samplers.registry import sampler_schedule
    from ..schedules import make_schedule

    spec = unit.spec
    if unit.reference:
        return "exact_reverse", make_schedule(spec.reference.schedule, spec.reference.steps), {}
    schedule, extra = sampler_schedule(spec.sampler.name, spec.sampler.schedule,
                                       spec.sampler.steps)
    return spec.sampler.name, schedule, {**extra, **spec.sampler.options}


def _exact_grid_measure(ctx: ChunkContext) -> ExactGridRecord:
    from ..exact import exact_columns

    options = ctx.unit.options or ExactGridOptions()
    wanted = options.w is None or any(math.isclose(ctx.w, w, rel_tol=1e-12, abs_tol=1e-15)
                                      for w in options.w)
    if ctx.start != 0 or not wanted:
        return ExactGridRecord(None)
    sampler, schedule, sampler_options = _exact_grid_target(ctx.unit)
    columns = exact_columns(ctx.unit.distribution, ctx.unit.c, ctx.w, sampler, schedule,
                            sampler_options=sampler_options or None, points=options.points,
                            refine=options.refine)
    return ExactGridRecord(columns)


def _exact_grid_summarize(record: ExactGridRecord, unit: UnitContext) -> dict:
    from ..exact import EXACT_COLUMNS

    if record.columns is None:
        return {key: (math.nan if key != "grid_points" else "") for key in EXACT_COLUMNS}
    return dict(record.columns)


def _exact_grid_check(spec, distribution) -> tuple[str, str] | None:
    from ..distributions import GaussianMixture

    if distribution.dim > 2:
        return ("metrics", f"exact_grid needs data of dimension 1 or 2, the distribution has "
                           f"d = {distribution.dim}")
    if spec.guidance.strength.kind != "constant":
        return ("guidance.strength", "exact_grid needs a constant strength schedule")
    # a sampler with no grid propagation (not in guidelab.exact.GRID_SAMPLERS, e.g. one a user
    # registered) gets NaN columns rather than a refusal: the Monte Carlo rows still stand
    if spec.reference.enabled and not isinstance(distribution, GaussianMixture):
        return ("reference.enabled", "exact_grid's reference columns need a Gaussian mixture")
    return None


register_metric(Metric("exact_grid", _exact_grid_measure, _exact_grid_summarize,
                       ExactGridRecord.from_dict, ExactGridOptions, _exact_grid_check))
