r"""The schema of a study spec: pydantic models with ``extra="forbid"`` and strict types, one per
section, and the build function of the exact families a spec names."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from ...distributions import CATALOG, EmpiricalMixture, GaussianMixture, UniformBoxMixture
from .errors import SpecError
from .fields import Name, NumberArray, PositiveInt, Scalar, SpecModel
from .sections import ClassifierSpec, DataSpec, ExactModelSpec, JudgeSpec, ModelSpec

__all__ = ["Spec", "DistributionSpec", "GaussianMixtureSpec", "EmpiricalSpec", "UniformBoxSpec",
           "BuiltinDistributionSpec", "GuidanceSpec", "ConstantStrengthSpec",
           "IntervalStrengthSpec", "RampStrengthSpec", "ExponentialStrengthSpec",
           "PythonStrengthSpec", "RewardSpec", "StrengthSpec", "SamplerSpec", "ReferenceSpec",
           "FAMILY_MODELS", "STRENGTH_MODELS", "MODEL_SCHEDULE", "W_KEY", "CLASS_KEY",
           "FORBIDDEN_SWEEP_KEYS",
           "build_distribution"]

W_KEY = "w"
"""The coupled sweep axis: every w of a unit runs on the same noise."""


CLASS_KEY = "class"
"""The class sweep key (default: every class of the distribution)."""


FORBIDDEN_SWEEP_KEYS = ("name", "description", "sweep", "device", "chunk_rows", "metrics",
                        "metric_options", "keep_samples", "reference")
"""Top-level keys that cannot be swept (they name the study or do not change its rows)."""


class GaussianMixtureSpec(SpecModel):
    """``family = "gaussian_mixture"``: :class:`~guidelab.distributions.GaussianMixture`."""

    family: Literal["gaussian_mixture"]
    means: NumberArray
    covariances: NumberArray
    weights: NumberArray
    labels: list[Annotated[int, Field(ge=0)]]


class EmpiricalSpec(SpecModel):
    """``family = "empirical"``: :class:`~guidelab.distributions.EmpiricalMixture`."""

    family: Literal["empirical"]
    points: NumberArray
    labels: list[Annotated[int, Field(ge=0)]]
    bandwidth: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class UniformBoxSpec(SpecModel):
    """``family = "uniform_box"``: :class:`~guidelab.distributions.UniformBoxMixture`."""

    family: Literal["uniform_box"]
    lows: NumberArray
    highs: NumberArray
    weights: NumberArray
    labels: list[Annotated[int, Field(ge=0)]]


class BuiltinDistributionSpec(SpecModel):
    """``family = "builtin"``: a named distribution of :data:`guidelab.distributions.CATALOG`."""

    family: Literal["builtin"]
    name: str


DistributionSpec = Annotated[
    GaussianMixtureSpec | EmpiricalSpec | UniformBoxSpec | BuiltinDistributionSpec,
    Field(discriminator="family")]


FAMILY_MODELS = {"gaussian_mixture": GaussianMixtureSpec, "empirical": EmpiricalSpec,
                  "uniform_box": UniformBoxSpec, "builtin": BuiltinDistributionSpec}


class ConstantStrengthSpec(SpecModel):
    """w(alpha, sigma) = w at every level."""

    kind: Literal["constant"] = "constant"


class IntervalStrengthSpec(SpecModel):
    """w inside (lo, hi] of the level (sigma, or tau = sigma / alpha), 0 elsewhere."""

    kind: Literal["interval"]
    lo: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    hi: Annotated[float, Field(gt=0)]
    variable: Literal["sigma", "tau"] = "sigma"


class RampStrengthSpec(SpecModel):
    """A ramp between the levels lo < hi (:func:`guidelab.guidance.linear_ramp`,
    :func:`~guidelab.guidance.cosine_ramp`): full strength below lo when ``increasing`` (towards
    the data), none above hi."""

    kind: Literal["linear_ramp", "cosine_ramp"]
    lo: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    hi: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    increasing: bool = True
    variable: Literal["sigma", "tau"] = "sigma"


class ExponentialStrengthSpec(SpecModel):
    """C^2FG's exponential decay w exp(-rate level)
    (:func:`guidelab.guidance.exponential_decay`)."""

    kind: Literal["exponential_decay"]
    rate: Annotated[float, Field(ge=0, le=1e3, allow_inf_nan=False)]
    variable: Literal["sigma", "tau", "time"] = "sigma"


class PythonStrengthSpec(SpecModel):
    """Any schedule: ``factory(**options)`` returns f(alpha, sigma), and the strength at a level
    is w f(alpha, sigma)."""

    kind: Literal["python"]
    factory: Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
                                  max_length=200)]
    options: dict[str, Any] = Field(default_factory=dict)


StrengthSpec = Annotated[ConstantStrengthSpec | IntervalStrengthSpec | RampStrengthSpec
                         | ExponentialStrengthSpec | PythonStrengthSpec,
                         Field(discriminator="kind")]
STRENGTH_MODELS = {"constant": ConstantStrengthSpec, "interval": IntervalStrengthSpec,
                   "linear_ramp": RampStrengthSpec, "cosine_ramp": RampStrengthSpec,
                   "exponential_decay": ExponentialStrengthSpec, "python": PythonStrengthSpec}


class RewardSpec(SpecModel):
    """The weight g(x) = exp(b^T x - (1/2)(x - m)^T A (x - m)) of reward guidance
    (:func:`guidelab.distributions.exponential_tilt`): b ``[d]``, A a number, ``[d]`` (diagonal)
    or ``[d, d]``, m ``[d]``; the reward is r = 1 / g."""

    b: NumberArray | None = None
    A: NumberArray | float | None = None
    m: NumberArray | None = None


class GuidanceSpec(SpecModel):
    """The guidance rule (a name of :data:`guidelab.guidance.registry.RULES`) and its options;
    its strength w comes from ``sweep.w``, shaped over the noise level by ``strength``."""

    rule: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)] = "cfg"
    options: dict[str, Any] = Field(default_factory=dict)
    strength: StrengthSpec = ConstantStrengthSpec()
    allow_negative: bool = False
    classifier: ClassifierSpec | None = None   # rule = "classifier": exact, else trained
    weak: ModelSpec | None = None              # rule = "autoguidance": the weaker model
    reward: RewardSpec | None = None           # rule = "reward": the weight g = 1 / reward


MODEL_SCHEDULE = "model"
"""``sampler.schedule = "model"``: the model's own training schedule (a diffusers model's),
respaced to ``sampler.steps`` for DDIM, all of its steps for the other discrete samplers."""


class SamplerSpec(SpecModel):
    """A sampler of :mod:`guidelab.samplers.registry`, its schedule and its options."""

    name: str = "ddpm_type"
    schedule: str = "li_jiao"
    steps: PositiveInt = 1000
    options: dict[str, Scalar] = Field(default_factory=dict)


class ReferenceSpec(SpecModel):
    """The exact reverse kernel at w = 0 alongside the sampler (Gaussian mixtures only)."""

    enabled: bool = False
    steps: PositiveInt = 50
    schedule: str | None = None


class Spec(SpecModel):
    """A validated study spec (see the module docstring for every section)."""

    name: Name
    description: str = ""
    distribution: DistributionSpec | None = None
    data: DataSpec | None = None
    model: ModelSpec = ExactModelSpec()
    judge: JudgeSpec | None = None
    guidance: GuidanceSpec = GuidanceSpec()
    sampler: SamplerSpec = SamplerSpec()
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]]
    trials: PositiveInt
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    chunk_rows: PositiveInt | None = None
    metrics: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["class_probability"])
    metric_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    reference: ReferenceSpec = ReferenceSpec()
    keep_samples: Annotated[int, Field(ge=0)] = 500
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"

    # --------------------------------------------------------------- derived views

    @property
    def w(self) -> list[float]:
        """The strengths of ``sweep.w`` as floats, w = 0 first, then in the spec's order."""
        values = [float(w) for w in self.sweep[W_KEY]]
        return [0.0] + [w for w in values if w != 0.0] if 0.0 in values else values

    @property
    def classes(self) -> list[int]:
        """The classes of ``sweep.class`` (resolved specs always have it)."""
        return [int(c) for c in self.sweep[CLASS_KEY]]

    @property
    def swept_keys(self) -> list[str]:
        """Swept keys other than w, in the spec's order (``class`` included)."""
        return [key for key in self.sweep if key != W_KEY]

    @property
    def torch_dtype(self):
        import torch

        return {"float32": torch.float32, "float64": torch.float64}[self.dtype]

    def distribution_object(self):
        """The exact family of ``[distribution]`` (built once per distinct parameter set and
        cached), or None when the spec has none."""
        return None if self.distribution is None else build_distribution(self.distribution)


@functools.lru_cache(maxsize=32)
def _build_distribution_cached(spec_json: str):
    params = json.loads(spec_json)
    family = params.pop("family")
    if family == "builtin":
        name = params["name"]
        if name not in CATALOG:
            raise SpecError("", "distribution.name", f"unknown built-in distribution {name!r}; "
                            f"expected one of {', '.join(sorted(CATALOG))}")
        return CATALOG[name]()
    factory = {"gaussian_mixture": GaussianMixture, "empirical": EmpiricalMixture,
               "uniform_box": UniformBoxMixture}[family]
    try:
        return factory(**params)
    except ValueError as error:
        text = str(error)
        key, _, rest = text.partition(": ")
        if key in params:
            raise SpecError("", f"distribution.{key}", rest) from None
        raise SpecError("", "distribution", text) from None


def build_distribution(spec: BaseModel):
    """The exact family a distribution section describes (cached per parameter set).

    Raises :class:`SpecError` (without a source) naming the parameter the family rejected.
    """
    return _build_distribution_cached(json.dumps(spec.model_dump(), sort_keys=True))
