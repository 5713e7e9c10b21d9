r"""The metrics a study can name in ``metrics = [...]``: a registry of mergeable measurements.

A study streams each unit's rows in chunks; for every chunk and every strength w a metric turns
the chunk's samples into a *record* that merges exactly with the records of other chunks
(``record.merge(other)``, associative), and at the end of the unit turns the merged record into
the summary columns of the unit's row for that w. Records are stored with the rows (as JSON,
``record.to_dict()``), so rows of several units can be pooled later by merging their records.

A metric is a :class:`Metric`; :func:`register_metric` adds one, after which a spec may name it.
The runner knows nothing about any particular metric.

Built in:

* ``class_probability``: with the judge's class posterior log p(c'|Y) of the clean samples
  (the exact posterior of ``[distribution]`` unless ``[judge]`` names another), the record of
  :class:`guidelab.metrics.ClassProbabilityRecord` (Q = E[1/p(c|Y)]
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

__all__ = ["Metric", "UnitContext", "ChunkContext", "METRICS", "register_metric"]


@dataclass
class UnitContext:
    """What a metric knows about the unit it measures.

    Attributes:
        spec: the unit's settings (the resolved spec with the unit's swept values set).
        distribution: the exact family of ``[distribution]``, or None.
        c: the unit's class.
        reference: True for the exact-reverse reference unit (w = 0 only).
        options: this metric's parsed options (or None).
        unit_id: the unit's id.
        parts: the unit's :class:`~guidelab.studies.parts.StudyParts` (model, judge, data).
        inv_prior: 1/p(c) of the exact family (the identity's value), or None.
        field: ``w -> guided field`` of the unit (its model, rule and strength schedule at
            strength w), for metrics that propagate the field itself (``exact_grid``).
        log: where a metric says what a long step is doing (the run's log), or None (say
            nothing).
    """

    spec: Any
    distribution: Any
    c: int
    reference: bool
    options: Any
    unit_id: str
    parts: Any = None
    inv_prior: float | None = None
    field: Callable[[float], Any] | None = None
    log: Callable[[str], None] | None = None


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
        pool: ``(records of several classes) -> record`` of all their rows together (the
            paper's pooled statistic, ``class = "all"``), or None when pooling over classes
            means nothing for this metric.
    """

    name: str
    measure: Callable[[ChunkContext], Any]
    summarize: Callable[[Any, UnitContext], dict]
    load: Callable[[dict], Any]
    options: type[BaseModel] | None = None
    check: Callable[[Any, Any], tuple[str, str] | None] = lambda spec, distribution: None
    pool: Callable[[list], Any] | None = None

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

    log_posterior = ctx.unit.parts.judge(ctx.samples)  # [n, C] log p(c'|Y) by the judge
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
    level = unit.options.level if unit.options is not None else 0.95
    return record.summary(inv_prior=unit.inv_prior, level=level).as_row()


def _class_probability_load(data: dict):
    from ..metrics.record import ClassProbabilityRecord

    return ClassProbabilityRecord.from_dict(data)


def _class_probability_check(spec, distribution) -> tuple[str, str] | None:
    from ..distributions import EmpiricalMixture

    judged_exactly = spec.judge is None or spec.judge.kind == "exact"
    if judged_exactly and isinstance(distribution, EmpiricalMixture) \
            and distribution.bandwidth == 0:
        return ("distribution.bandwidth", "the class_probability metric needs bandwidth > 0: "
                "the clean empirical distribution has no density, so p(c|Y) is undefined")
    return None


def _class_probability_pool(records: list):
    from ..metrics.record import ClassProbabilityRecord

    return ClassProbabilityRecord.pool(records)


register_metric(Metric("class_probability", _class_probability_measure,
                       _class_probability_summarize, _class_probability_load,
                       ClassProbabilityOptions, _class_probability_check,
                       _class_probability_pool))


# ----------------------------------------------------------------------------- exact_grid

@dataclass(frozen=True)
class OnceRecord:
    """Columns that depend on the unit (and w) but not on its rows, computed by the chunk that
    starts at row 0; every other chunk contributes an empty record and merging keeps the one
    that holds columns (exact, associative). Values are JSON-able; NaN is stored as null."""

    columns: dict | None = None

    def merge(self, other: OnceRecord) -> OnceRecord:
        return self if self.columns is not None else other

    def to_dict(self) -> dict:
        if self.columns is None:
            return {"columns": None}
        return {"columns": {key: (None if isinstance(value, float) and not math.isfinite(value)
                                  else value) for key, value in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> OnceRecord:
        return cls(data.get("columns"))


class ExactGridOptions(BaseModel):
    """``[metric_options.exact_grid]``.

    The columns are :data:`guidelab.exact.EXACT_COLUMNS`, for units whose model is exact
    (``model.kind = "exact"``; the units of other models get blank cells); with
    ``[guidance.reward]`` they include ``grid_g``, E[g(Y)] of the same output law, and its
    refinement error ``grid_g_err`` (None without a weight).

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


def _exact_grid_measure(ctx: ChunkContext) -> OnceRecord:
    from ..exact import exact_columns

    options = ctx.unit.options or ExactGridOptions()
    wanted = options.w is None or any(math.isclose(ctx.w, w, rel_tol=1e-12, abs_tol=1e-15)
                                      for w in options.w)
    if ctx.start != 0 or not wanted or not _exact_model(ctx.unit.spec):
        return OnceRecord(None)  # another model (the trained side of a sweep): blank cells
    sampler, schedule, sampler_options = _exact_grid_target(ctx.unit)
    field = None
    if not ctx.unit.reference and ctx.unit.field is not None:
        field = ctx.unit.field(ctx.w)  # the unit's own rule and strength schedule
        if field.rule.stateful or field.rule.renoises():
            return OnceRecord(None)  # not a function of (x, level): no grid law (see check)
    _say_grid(ctx, sampler, options)
    columns = exact_columns(ctx.unit.distribution, ctx.unit.c, ctx.w, sampler, schedule,
                            sampler_options=sampler_options or None, points=options.points,
                            refine=options.refine, field=field,
                            log_weight=_log_weight(ctx.unit.spec))
    return OnceRecord(columns)


def _exact_model(spec) -> bool:
    """Whether the unit samples the exact scores of [distribution] (``model.kind = "exact"``)."""
    return spec.model.kind == "exact"


def _log_weight(spec):
    """``x -> log g(x)`` of the spec's ``[guidance.reward]`` weight, or None without one."""
    from ..distributions import exponential_log_weight

    if spec.guidance.reward is None:
        return None
    tilt = spec.guidance.reward.model_dump(exclude_none=True)
    return lambda x: exponential_log_weight(x, **tilt)


def _say_grid(ctx: ChunkContext, sampler: str, options: ExactGridOptions) -> None:
    """One line in the run's log as a grid propagation starts (minutes at fine grids), e.g.
    ``exact grid: class 0, w = 1 (ddpm_type; 49 x 49 nodes, then 97 x 97)``."""
    from ..exact import GRID_SAMPLERS, default_grid

    distribution = ctx.unit.distribution
    if ctx.unit.log is None or sampler not in GRID_SAMPLERS or distribution.dim > 2 or (
            sampler == "exact_reverse" and ctx.w):
        return  # exact_columns returns at once
    points = default_grid(distribution, options.points).points
    nodes = " x ".join(str(n) for n in points)
    then = f", then {' x '.join(str(2 * n - 1) for n in points)}" if options.refine else ""
    ctx.unit.log(f"exact grid: class {ctx.unit.c}, w = {ctx.w:g} ({sampler}; {nodes} "
                 f"node{'s' if math.prod(points) > 1 else ''}{then})")


def _exact_grid_summarize(record: OnceRecord, unit: UnitContext) -> dict:
    from ..exact import EXACT_COLUMNS

    if record.columns is None:
        return {key: None for key in EXACT_COLUMNS}
    return {key: None for key in EXACT_COLUMNS} | dict(record.columns)


def _exact_grid_check(spec, distribution) -> tuple[str, str] | None:
    from ..distributions import GaussianMixture

    if distribution is None:
        return ("metrics", "exact_grid propagates the exact scores of [distribution], which "
                           "the spec does not have")
    # a unit with another model (e.g. the trained side of a sweep over models) gets blank
    # columns: the grid reference is of the exact scores, the Monte Carlo rows stand
    if distribution.dim > 2:
        return ("metrics", f"exact_grid needs data of dimension 1 or 2, the distribution has "
                           f"d = {distribution.dim}")
    # every rule whose field is a function of (x, level) gets grid columns, whatever its
    # strength schedule; a rule with per-run state (APG's momentum) or its own re-noising
    # direction (CFG++) gets blank ones: the Monte Carlo rows stand
    # a sampler with no grid propagation (not in guidelab.exact.GRID_SAMPLERS, e.g. one a user
    # registered) gets NaN columns rather than a refusal: the Monte Carlo rows still stand
    if spec.reference.enabled and not isinstance(distribution, GaussianMixture):
        return ("reference.enabled", "exact_grid's reference columns need a Gaussian mixture")
    return None


register_metric(Metric("exact_grid", _exact_grid_measure, _exact_grid_summarize,
                       OnceRecord.from_dict, ExactGridOptions, _exact_grid_check))


# ----------------------------------------------------------------------------- dominance

class DominanceOptions(BaseModel):
    """``[metric_options.dominance]``.

    Attributes:
        level: the joint confidence of the verdict's statements.
        bins: bins of the records' logit-p histograms (quantile resolution 80 / bins).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    level: float = Field(default=0.95, gt=0, lt=1)
    bins: int = Field(default=8000, ge=16, le=10**6)


def _dominance_measure(ctx: ChunkContext):
    from ..metrics.dominance import DominanceRecord

    key = "dominance"
    log_posterior = ctx.scratch.get(("judge", ctx.w))
    if log_posterior is None:
        log_posterior = ctx.unit.parts.judge(ctx.samples)  # [n, C]
    if ctx.is_baseline:
        ctx.scratch[key] = log_posterior
    options = ctx.unit.options or DominanceOptions()
    return DominanceRecord.from_log_posterior(log_posterior, ctx.scratch[key], ctx.unit.c,
                                              bins=options.bins)


def _dominance_summarize(record, unit: UnitContext) -> dict:
    options = unit.options or DominanceOptions()
    return record.summary(level=options.level)


def _dominance_load(data: dict):
    from ..metrics.dominance import DominanceRecord

    return DominanceRecord.from_dict(data)


def _dominance_pool(records: list):
    from ..metrics.dominance import DominanceRecord

    return DominanceRecord.combine(records)


register_metric(Metric("dominance", _dominance_measure, _dominance_summarize, _dominance_load,
                       DominanceOptions, pool=_dominance_pool))


# ----------------------------------------------------------------------------- calibration

class CalibrationOptions(BaseModel):
    """``[metric_options.calibration]``.

    Attributes:
        part: the held-out data part the judge is calibrated on (never seen by model or judge).
        bins: equal-width bins on [0, 1] of the ECEs and reliability tables.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    part: str = "heldout"
    bins: int = Field(default=10, ge=1, le=1000)


CALIBRATION_COLUMNS = ("judge_n", "judge_accuracy", "judge_log_loss", "ece_top",
                       "ece_classwise", "real_n", "real_q", "real_p_mean", "calibration")
"""Columns of the calibration metric (``calibration``: the reliability tables as JSON)."""


def _calibration_measure(ctx: ChunkContext) -> OnceRecord:
    from .. import _json
    from ..metrics.calibration import calibration_summary

    if ctx.start != 0 or not ctx.is_baseline:
        return OnceRecord(None)
    options = ctx.unit.options or CalibrationOptions()
    part = ctx.unit.parts.data[options.part]
    log_posterior = ctx.unit.parts.judge(part.x)  # [m, C]
    summary = calibration_summary(log_posterior, part.labels, bins=options.bins)
    mine = (part.labels == ctx.unit.c).cpu()  # [m]
    own = log_posterior[mine, ctx.unit.c]  # [m_c] log p(c|x) of real images of class c
    columns = {"judge_n": summary["n"], "judge_accuracy": summary["accuracy"],
               "judge_log_loss": summary["log_loss"], "ece_top": summary["ece_top"],
               "ece_classwise": summary["ece_classwise"], "real_n": int(mine.sum()),
               "real_q": float(torch.exp(-own).mean()) if own.numel() else None,
               "real_p_mean": float(torch.exp(own).mean()) if own.numel() else None,
               "calibration": _json.dumps(summary, sort_keys=True)}
    return OnceRecord(columns)


def _calibration_summarize(record: OnceRecord, unit: UnitContext) -> dict:
    if record.columns is None:
        return {key: None for key in CALIBRATION_COLUMNS}
    return dict(record.columns)


def _calibration_check(spec, distribution) -> tuple[str, str] | None:
    options = spec.metric_options.get("calibration") or {}
    part = options.get("part", "heldout")
    if spec.data is None or part not in spec.data.parts:
        return ("metric_options.calibration.part", f"the calibration metric needs a held-out "
                f"data part {part!r} in [data] parts")
    return None


register_metric(Metric("calibration", _calibration_measure, _calibration_summarize,
                       OnceRecord.from_dict, CalibrationOptions, _calibration_check))


class SupportOptions(BaseModel):
    """``[metric_options.support]``: ``level`` of the Clopper-Pearson interval of the mass
    outside the class's support, ``norm`` of the distance to it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    level: float = Field(default=0.95, gt=0, lt=1)
    norm: str = Field(default="max", pattern="^(max|euclidean)$")


def _support_measure(ctx: ChunkContext):
    from ..metrics.support import SupportRecord

    distribution = ctx.unit.distribution
    options = ctx.unit.options or SupportOptions()
    mask = distribution.labels == ctx.unit.c  # [K]
    samples = ctx.samples.flatten(1).to(torch.float64)  # [n, d]
    return SupportRecord.from_samples(samples, distribution.lows, distribution.highs, mask,
                                      norm=options.norm)


def _support_summarize(record, unit: UnitContext) -> dict:
    options = unit.options or SupportOptions()
    row = record.summary(level=options.level)
    return {("support_" + key if key in ("n", "n_nonfinite") else key): value
            for key, value in row.items()}


def _support_load(data: dict):
    from ..metrics.support import SupportRecord

    return SupportRecord.from_dict(data)


def _support_check(spec, distribution) -> tuple[str, str] | None:
    from ..distributions import UniformBoxMixture

    if not isinstance(distribution, UniformBoxMixture):
        return ("metrics", "the support metric needs [distribution] of family 'uniform_box' "
                           "(its classes' supports are known exactly)")
    return None


def _support_pool(records: list):
    from ..metrics.support import SupportRecord

    return SupportRecord.combine(records)


register_metric(Metric("support", _support_measure, _support_summarize, _support_load,
                       SupportOptions, _support_check, _support_pool))


# ----------------------------------------------------------------------------- score_error

class ScoreErrorOptions(BaseModel):
    """``[metric_options.score_error]``: ``points`` per noise level and ``levels`` of the
    log-uniform grid of sigma/alpha in [1e-2, 1e2] (:func:`guidelab.models.score_error`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    points: int = Field(default=2048, ge=16, le=10**6)
    levels: int = Field(default=13, ge=2, le=200)


SCORE_ERROR_COLUMNS = ("score_error", "score_error_uncond")
"""sigma^2-weighted relative score errors against [distribution] (conditional,
unconditional); the training metric gives the training loss beside them."""


def _score_error_measure(ctx: ChunkContext) -> OnceRecord:
    from ..models import score_error

    if ctx.start != 0 or not ctx.is_baseline or ctx.unit.reference:
        return OnceRecord(None)
    options = ctx.unit.options or ScoreErrorOptions()
    report = score_error(ctx.unit.parts.model, ctx.unit.distribution, n=options.points,
                         levels=options.levels, seed=ctx.unit.spec.seed)
    return OnceRecord({"score_error": float(report.total),
                       "score_error_uncond": None if report.total_unconditional is None
                       else float(report.total_unconditional)})


def _score_error_summarize(record: OnceRecord, unit: UnitContext) -> dict:
    if record.columns is None:
        return {key: None for key in SCORE_ERROR_COLUMNS}
    return dict(record.columns)


def _score_error_check(spec, distribution) -> tuple[str, str] | None:
    if distribution is None:
        return ("metrics", "score_error compares the model's scores with the exact scores of "
                           "[distribution], which the spec does not have")
    return None


register_metric(Metric("score_error", _score_error_measure, _score_error_summarize,
                       OnceRecord.from_dict, ScoreErrorOptions, _score_error_check))


# ----------------------------------------------------------------------------- profile

class ProfileOptions(BaseModel):
    """``[metric_options.profile]``: where in noise level guidance lowers Q.

    Attributes:
        w: the strengths that get a profile (each must be in ``sweep.w``); one profile per
            (class, w), computed with the unit. Default: the swept w > 0 closest to 1.
        steps: Euler-Maruyama steps of the continuous-time guided reverse SDE.
        paths: paths of the Monte Carlo estimate (d = 2; in d = 1 the expectations are
            propagated on a grid, with no Monte Carlo error).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    w: list[float] | None = Field(default=None, min_length=1)
    steps: int = Field(default=500, ge=10, le=100_000)
    paths: int = Field(default=4096, ge=16, le=10**7)


PROFILE_COLUMNS = ("profile_total", "profile_total_se", "profile_start", "profile_formula_q",
                   "profile_direct_q", "profile_difference", "profile_difference_se",
                   "profile")
"""Columns of the profile metric: 2w times the integral (the decrease the formula predicts)
with its standard error, E[1/p_T(c|Y_T)], the formula's Q, the direct Q of the same
continuous-time sampler, their difference (discretisation and Monte Carlo error), and the
whole profile as JSON (:meth:`guidelab.exact.DecreaseProfile.to_dict`)."""


def _profile_measure(ctx: ChunkContext) -> OnceRecord:
    from .. import _json
    from ..exact import decrease_profile

    options = ctx.unit.options or ProfileOptions()
    wanted = any(math.isclose(ctx.w, w, rel_tol=1e-12, abs_tol=1e-15)
                 for w in _profile_strengths(options, ctx.unit.spec.w))
    if ctx.start != 0 or not wanted or ctx.unit.reference:
        return OnceRecord(None)
    distribution = ctx.unit.distribution
    one_d = distribution.dim == 1
    if ctx.unit.log is not None:
        how = "on a grid" if one_d else f"{options.paths} paths"
        ctx.unit.log(f"profile: class {ctx.unit.c}, w = {ctx.w:g} ({options.steps} steps of the "
                     f"guided reverse SDE, {how})")
    profile = decrease_profile(distribution, ctx.unit.c, ctx.w,
                               method="grid" if one_d else "paths",
                               num_steps=options.steps, n=options.paths,
                               seed=ctx.unit.spec.seed)
    decrease = 2 * profile.w
    return OnceRecord({
        "profile_total": decrease * profile.total, "profile_total_se": decrease * profile.total_se,
        "profile_start": profile.start, "profile_formula_q": profile.formula_q,
        "profile_direct_q": profile.direct_q, "profile_difference": profile.difference,
        "profile_difference_se": profile.difference_se,
        "profile": _json.dumps(profile.to_dict())})


def _profile_strengths(options: ProfileOptions, sweep_w: list[float]) -> list[float]:
    """The strengths that get a profile: the options', else the swept w > 0 closest to 1."""
    if options.w is not None:
        return options.w
    positive = [w for w in sweep_w if w > 0]
    return [min(positive, key=lambda w: (abs(w - 1.0), w))] if positive else []


def _profile_summarize(record: OnceRecord, unit: UnitContext) -> dict:
    if record.columns is None:
        return {key: None for key in PROFILE_COLUMNS}
    return dict(record.columns)


def _profile_check(spec, distribution) -> tuple[str, str] | None:
    if distribution is None or spec.model.kind != "exact":
        return ("metrics", "the profile metric follows the exact scores of [distribution]: it "
                           "needs model.kind = 'exact'")
    if distribution.dim > 2:
        return ("metrics", f"the profile metric needs data of dimension 1 or 2, the "
                           f"distribution has d = {distribution.dim}")
    options = spec.metric_options.get("profile") or {}
    missing = [w for w in options.get("w") or []
               if not any(math.isclose(w, v, rel_tol=1e-12) for v in spec.w)]
    if missing:
        return ("metric_options.profile.w", f"w = {missing[0]:g} is not in sweep.w")
    return None


register_metric(Metric("profile", _profile_measure, _profile_summarize, OnceRecord.from_dict,
                       ProfileOptions, _profile_check))


# ----------------------------------------------------------------------------- reward

class RewardOptions(BaseModel):
    """``[metric_options.reward]``: ``level`` of the interval of E[g]; ``keep_top`` as for
    class_probability (default: what the Pareto k-hat of one unit needs)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    level: float = Field(default=0.95, gt=0, lt=1)
    keep_top: int | None = Field(default=None, ge=1)


def _reward_measure(ctx: ChunkContext):
    from ..distributions import exponential_log_weight
    from ..metrics.reward import WeightRecord

    tilt = ctx.unit.spec.guidance.reward.model_dump(exclude_none=True)
    y = ctx.samples.flatten(1).to(torch.float64)  # [n, d]
    finite = torch.isfinite(y).all(dim=1)  # [n]
    log_g = torch.full((y.shape[0],), math.nan, dtype=torch.float64)  # [n], NaN: lost rows
    if bool(finite.any()):
        log_g[finite.cpu()] = exponential_log_weight(y[finite], **tilt).cpu()
    options = ctx.unit.options or RewardOptions()
    return WeightRecord.from_log_weights(log_g, keep_top=_keep_top(options, ctx.unit.spec.trials))


def _reward_summarize(record, unit: UnitContext) -> dict:
    from ..distributions import log_normaliser

    options = unit.options or RewardOptions()
    row = {("g_" + key if key in ("n", "n_nonfinite") else key): value
           for key, value in record.summary(level=options.level).items()}
    tilt = unit.spec.guidance.reward.model_dump(exclude_none=True)
    # the reference: E_{p(x|c)}[g], what unguided exact sampling of the class gives (the
    # exact normaliser of a Gaussian or kernel mixture; None for other families or none)
    row["g_reference"] = (math.exp(log_normaliser(unit.distribution, c=unit.c, **tilt))
                          if unit.c >= 0 and _has_normaliser(unit.distribution) else None)
    return row


def _has_normaliser(distribution) -> bool:
    from ..distributions import EmpiricalMixture, GaussianMixture

    return isinstance(distribution, GaussianMixture | EmpiricalMixture)


def _reward_load(data: dict):
    from ..metrics.reward import WeightRecord

    return WeightRecord.from_dict(data)


def _reward_pool(records: list):
    from ..metrics.reward import WeightRecord

    return WeightRecord.combine(records)


def _reward_check(spec, distribution) -> tuple[str, str] | None:
    if spec.guidance.reward is None:
        return ("metrics", "the reward metric measures E[g] for the weight of "
                           "[guidance.reward], which the spec does not have")
    # E[g] is measured whatever the model; its reference g_reference = E_p(x|c)[g] needs a
    # Gaussian or kernel mixture [distribution] (None otherwise)
    return None


register_metric(Metric("reward", _reward_measure, _reward_summarize, _reward_load,
                       RewardOptions, _reward_check, _reward_pool))


# ----------------------------------------------------------------------------- training

TRAINING_COLUMNS = ("training_loss", "training_steps", "training_losses")
"""The trained model's final training loss (mean of the last 10% of steps), its number of
steps, and its thinned loss curve as JSON (None for a model that was not trained)."""


def _training_measure(ctx: ChunkContext) -> OnceRecord:
    import json

    if ctx.start != 0 or not ctx.is_baseline:
        return OnceRecord(None)
    info = ctx.unit.parts.artifacts.get("model") or {}
    losses = info.get("losses")
    return OnceRecord({"training_loss": info.get("final_loss"),
                       "training_steps": None if losses is None else
                       len(losses) * int(info.get("loss_stride") or 1),
                       "training_losses": None if losses is None else
                       json.dumps([float(v) for v in losses], allow_nan=False)})


def _training_summarize(record: OnceRecord, unit: UnitContext) -> dict:
    if record.columns is None:
        return {key: None for key in TRAINING_COLUMNS}
    return dict(record.columns)


register_metric(Metric("training", _training_measure, _training_summarize,
                       OnceRecord.from_dict))
