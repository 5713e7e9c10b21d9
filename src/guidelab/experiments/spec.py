r"""Study specs: a study of guidance as data, validated before anything runs.

A *spec* is a TOML file (or a built-in one shipped in ``guidelab/experiments/specs``):

.. code-block:: toml

    name = "my-study"           # letters, digits, "_.-"
    description = "what it measures"
    trials = 4000               # samples per unit and strength w
    seed = 0                    # row r of class c draws its noise from (seed, c, r)
    dtype = "float32"           # or "float64": the sampler's precision
    device = "cpu"              # "cuda", "cuda:1", "auto" (CUDA when present)
    # chunk_rows = 65536        # rows a chunk (default: by device); the same size, the same bits
    keep_samples = 500          # first samples of every w stored for plots (d <= 2)
    metrics = ["class_probability"]   # names in guidelab.experiments.measures.METRICS
    metric_options = { class_probability = { level = 0.95 } }

    [distribution]              # any exact family with its parameters, or a built-in one
    family = "gaussian_mixture"
    means = [[-1.0, 0.0], [1.0, 0.0]]
    covariances = [0.5, 0.5]    # [K, d, d] full, [K, d] diagonal or [K] isotropic
    weights = [0.5, 0.5]
    labels = [0, 1]

    [guidance]
    rule = "cfg"                # or "classifier" (the family is its own exact classifier)
    strength = { kind = "constant" }   # or { kind = "interval", lo = 0.2, hi = 0.9 }

    [sampler]
    name = "ddpm_type"
    schedule = "li_jiao"
    steps = 200
    options = {}                # the sampler's own keyword options, e.g. { eta = 0.5 } for ddim

    [sweep]
    w = [0, 0.1, 1, 10]         # the coupled axis: every w of a unit shares its noise
    class = [0, 1]              # default: every class of the distribution
    "sampler.name" = ["ddpm_type", "ddim"]   # any other key, by dotted path (seed, ...)

    [reference]                 # the exact reverse kernel at w = 0 (Gaussian mixtures)
    enabled = true
    steps = 50

Validation has two stages, both before anything runs, and both report the first problem as
one line ``<file>: <dotted.key.path>: <what was expected>`` (:class:`SpecError`):

1. *structure*, by pydantic models with ``extra="forbid"`` and strict types: unknown keys, wrong
   types, out-of-range numbers;
2. *meaning*: the family's own constructor (shapes, positive definite covariances, ...), the
   sampler and its schedule from :mod:`guidelab.samplers.registry` (so ``steps = 5`` with the
   Li–Jiao schedule, whose c1 log T / T must stay below 1, is refused here), the sweep
   (w contains 0, the baseline of the coupled comparison; classes exist), the metrics from
   :mod:`guidelab.experiments.measures` and the device.

The *resolved* spec (:func:`load_spec`'s result) has every default filled in, the classes of the
sweep made explicit and the reference schedule fixed; it is what a results folder records
(:func:`spec_to_toml`) and compares on a rerun (:func:`spec_diff`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.resources
import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

__all__ = [
    "Spec",
    "SpecError",
    "DistributionSpec",
    "GuidanceSpec",
    "SamplerSpec",
    "ReferenceSpec",
    "BUILTIN_DISTRIBUTIONS",
    "FORBIDDEN_SWEEP_KEYS",
    "load_spec",
    "validate_spec",
    "parse_set",
    "apply_overrides",
    "builtin_specs",
    "builtin_spec_text",
    "build_distribution",
    "spec_to_toml",
    "spec_to_dict",
    "spec_diff",
    "get_path",
    "set_path",
    "format_path",
    "W_KEY",
    "CLASS_KEY",
]

W_KEY = "w"
"""The coupled sweep axis: every w of a unit runs on the same noise."""
CLASS_KEY = "class"
"""The class sweep key (default: every class of the distribution)."""
FORBIDDEN_SWEEP_KEYS = ("name", "description", "sweep", "device", "chunk_rows", "metrics",
                        "metric_options", "keep_samples", "reference")
"""Top-level keys that cannot be swept (they name the study or do not change its rows)."""


class SpecError(ValueError):
    """A spec problem: ``<source>: <dotted.key.path>: <what was expected>`` in one line.

    Attributes:
        source: the file (or ``--set KEY``) the value came from.
        path: the dotted key path, e.g. ``sampler.steps`` or ``sweep.w[2]``.
        message: what was expected.
        more: how many further problems were found (not shown).
    """

    def __init__(self, source: str, path: str, message: str, more: int = 0):
        self.source, self.path, self.message, self.more = str(source), path, message, more
        where = f"{self.source}: " if self.source else ""
        where += f"{path}: " if path else ""
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        super().__init__(f"{where}{message}{tail}")

    def with_source(self, source: str) -> SpecError:
        return SpecError(source, self.path, self.message, self.more)


# ----------------------------------------------------------------------------- field types

def _number_array(value: Any) -> Any:
    """Nested lists of numbers (not booleans), rectangular; returned as nested floats."""
    def walk(item, depth):
        if isinstance(item, bool) or isinstance(item, str) or item is None:
            raise ValueError(f"expected numbers in nested lists, got {item!r}")
        if isinstance(item, (int, float)):
            if not math.isfinite(item):
                raise ValueError(f"expected finite numbers, got {item!r}")
            return float(item), ()
        if isinstance(item, list):
            if not item:
                raise ValueError("expected a non-empty list")
            parts = [walk(x, depth + 1) for x in item]
            shapes = {shape for _, shape in parts}
            if len(shapes) != 1:
                raise ValueError("expected a rectangular array (rows of equal length)")
            return [v for v, _ in parts], (len(item), *shapes.pop())
        raise ValueError(f"expected numbers in nested lists, got {type(item).__name__}")

    return walk(value, 0)[0]


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (bool, int, float, str)) for v in value):
        return value
    raise ValueError(f"expected a number, a string, a boolean or a list of them, got "
                     f"{type(value).__name__}")


NumberArray = Annotated[Any, AfterValidator(_number_array)]
Scalar = Annotated[Any, AfterValidator(_scalar)]
PositiveInt = Annotated[int, Field(gt=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ----------------------------------------------------------------------------- distributions

class GaussianMixtureSpec(_Model):
    """``family = "gaussian_mixture"``: :class:`~guidelab.distributions.GaussianMixture`."""

    family: Literal["gaussian_mixture"]
    means: NumberArray
    covariances: NumberArray
    weights: NumberArray
    labels: list[Annotated[int, Field(ge=0)]]


class EmpiricalSpec(_Model):
    """``family = "empirical"``: :class:`~guidelab.distributions.EmpiricalMixture`."""

    family: Literal["empirical"]
    points: NumberArray
    labels: list[Annotated[int, Field(ge=0)]]
    bandwidth: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0


class UniformBoxSpec(_Model):
    """``family = "uniform_box"``: :class:`~guidelab.distributions.UniformBoxMixture`."""

    family: Literal["uniform_box"]
    lows: NumberArray
    highs: NumberArray
    weights: NumberArray
    labels: list[Annotated[int, Field(ge=0)]]


class BuiltinDistributionSpec(_Model):
    """``family = "builtin"``: a named distribution of :data:`BUILTIN_DISTRIBUTIONS`."""

    family: Literal["builtin"]
    name: str


DistributionSpec = Annotated[
    GaussianMixtureSpec | EmpiricalSpec | UniformBoxSpec | BuiltinDistributionSpec,
    Field(discriminator="family")]
_FAMILY_MODELS = {"gaussian_mixture": GaussianMixtureSpec, "empirical": EmpiricalSpec,
                  "uniform_box": UniformBoxSpec, "builtin": BuiltinDistributionSpec}


def _default_mixture():
    from .li_jiao_gmm import default_mixture

    return default_mixture()


BUILTIN_DISTRIBUTIONS: dict[str, Any] = {"default_mixture": _default_mixture}
"""name -> factory of a built-in distribution (``family = "builtin"``, ``name = ...``)."""


# ----------------------------------------------------------------------------- guidance

class ConstantStrengthSpec(_Model):
    """w(alpha, sigma) = w at every level."""

    kind: Literal["constant"] = "constant"


class IntervalStrengthSpec(_Model):
    """w inside (lo, hi] of the level (sigma, or tau = sigma / alpha), 0 elsewhere."""

    kind: Literal["interval"]
    lo: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    hi: Annotated[float, Field(gt=0)]
    variable: Literal["sigma", "tau"] = "sigma"


StrengthSpec = Annotated[ConstantStrengthSpec | IntervalStrengthSpec,
                         Field(discriminator="kind")]


class GuidanceSpec(_Model):
    """The guidance rule; its strength w comes from ``sweep.w``."""

    rule: Literal["cfg", "classifier"] = "cfg"
    strength: StrengthSpec = ConstantStrengthSpec()
    allow_negative: bool = False


# ----------------------------------------------------------------------------- sampler

class SamplerSpec(_Model):
    """A sampler of :mod:`guidelab.samplers.registry`, its schedule and its options."""

    name: str = "ddpm_type"
    schedule: str = "li_jiao"
    steps: PositiveInt = 1000
    options: dict[str, Scalar] = Field(default_factory=dict)


class ReferenceSpec(_Model):
    """The exact reverse kernel at w = 0 alongside the sampler (Gaussian mixtures only)."""

    enabled: bool = False
    steps: PositiveInt = 50
    schedule: str | None = None


# ----------------------------------------------------------------------------- the spec

class Spec(_Model):
    """A validated study spec (see the module docstring for every section)."""

    name: Name
    description: str = ""
    distribution: DistributionSpec
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
        """The distribution (built once per distinct parameter set and cached)."""
        return build_distribution(self.distribution)


# ----------------------------------------------------------------------------- dotted paths

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(loc: Iterable) -> str:
    """A pydantic ``loc`` (or any key sequence) as a dotted path: ``sweep."sampler.name"[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = str(part)
            key = part if _BARE_KEY.match(part) else json.dumps(part)
            out += f".{key}" if out else key
    return out


def _split_path(path: str) -> list[str]:
    """``sampler.options.eta`` -> [sampler, options, eta]; quoted parts keep their dots."""
    try:
        parsed = tomllib.loads(f"{path} = 0")
    except tomllib.TOMLDecodeError:
        raise ValueError(f"expected a dotted key path like sampler.steps, got {path!r}") from None
    parts = []
    node: Any = parsed
    while isinstance(node, dict):
        if len(node) != 1:
            raise ValueError(f"expected one dotted key path, got {path!r}")
        (key, node), = node.items()
        parts.append(key)
    return parts


def get_path(data: Mapping, path: str | Sequence[str], default: Any = None) -> Any:
    """The value at a dotted path of a nested dict, or ``default``."""
    parts = _split_path(path) if isinstance(path, str) else list(path)
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_path(data: dict, path: str | Sequence[str], value: Any) -> dict:
    """Set the value at a dotted path of a nested dict (tables created as needed); returns
    ``data``. A value that is not a table replaces whatever was there."""
    parts = _split_path(path) if isinstance(path, str) else list(path)
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return data


# ----------------------------------------------------------------------------- --set

def parse_set(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a dotted key path and a TOML literal -> (path, value).

    A bare word that is not a TOML literal (``--set sampler.name=ddim``) is taken as a string.

    Example:
        >>> parse_set("sweep.w=[0, 1, 10]")
        ('sweep.w', [0, 1, 10])
        >>> parse_set("sampler.name=ddim")
        ('sampler.name', 'ddim')
    """
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise SpecError(f"--set {text}", "", "expected KEY=VALUE with a dotted key path and a "
                        "TOML value, e.g. trials=400 or 'sweep.w=[0, 1, 10]'")
    try:
        parts = _split_path(key)
    except ValueError as error:
        raise SpecError(f"--set {text}", "", str(error)) from None
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as error:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:+/-]*", value):
            parsed = value
        else:
            raise SpecError(f"--set {text}", "", f"not a TOML value ({error}); strings need "
                            f"quotes inside lists and tables") from None
    return format_path(parts), parsed


def apply_overrides(data: dict, overrides: Sequence[tuple[str, Any]]) -> dict:
    """A deep copy of ``data`` with each (dotted path, value) set."""
    data = copy.deepcopy(data)
    for path, value in overrides:
        set_path(data, path, copy.deepcopy(value))
    return data


# ----------------------------------------------------------------------------- errors

def _model_at(loc: Sequence, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model class whose table sits at ``loc`` (tags of discriminated unions included)."""
    model: Any = root or Spec
    i = 0
    while i < len(loc):
        part = loc[i]
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if part == "distribution" and model is Spec:
            if i + 1 < len(loc) and loc[i + 1] in _FAMILY_MODELS:
                model, i = _FAMILY_MODELS[loc[i + 1]], i + 2
                continue
            return None
        if part == "strength" and model is GuidanceSpec:
            models = {"constant": ConstantStrengthSpec, "interval": IntervalStrengthSpec}
            if i + 1 < len(loc) and loc[i + 1] in models:
                model, i = models[loc[i + 1]], i + 2
                continue
            return None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, i = annotation, i + 1
            continue
        return None
    return model


def _strip_tags(loc: Sequence) -> tuple:
    """Drop discriminated-union tags and validator names from a pydantic ``loc``."""
    out: list = []
    for i, part in enumerate(loc):
        if i > 0 and loc[i - 1] == "distribution" and part in _FAMILY_MODELS:
            continue
        if i > 0 and loc[i - 1] == "strength" and part in ("constant", "interval"):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: Mapping, root: type[BaseModel] | None = None) -> str:
    """What was expected, from one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    loc = error["loc"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        if model is not None:
            allowed = sorted(model.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return f"unknown key ({hint}expected one of: {', '.join(allowed)})"
        return "unknown key"
    if kind == "missing":
        return "missing (a required key)"
    if kind == "union_tag_invalid":
        return (f"expected one of {ctx.get('expected_tags')}, got "
                f"{_short(ctx.get('tag'))}")
    if kind == "union_tag_not_found":
        return "missing (a required key)"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        if kind == "greater_than" and bound == 0 and isinstance(value, int) \
                and not isinstance(value, bool):
            return f"expected a positive integer, got {value}"
        return f"expected a number {bounds[kind]} {bound}, got {_short(value)}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {_short(value)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        return message[len("Value error, "):]
    if message.startswith("Input should be "):
        message = "expected " + message[len("Input should be "):]
        if value is not None and not isinstance(value, dict):
            message += f", got {_short(value)}"
        return message
    if message.startswith("String should match pattern"):
        return (f"expected letters, digits and '_.-' (starting with a letter or digit), got "
                f"{_short(value)}")
    return message


def _from_validation_error(error: ValidationError, source: str, prefix: Sequence = (),
                           root: type[BaseModel] | None = None) -> SpecError:
    errors = error.errors(include_url=False)
    # an unknown key usually explains a missing one (a typo): report it first
    rank = {"extra_forbidden": 0, "missing": 2}
    first = min(errors, key=lambda e: rank.get(e["type"], 1))
    loc = (*prefix, *_strip_tags(first["loc"]))
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, str((first.get("ctx") or {}).get("discriminator", "kind")).strip("'\""))
    return SpecError(source, format_path(loc), _describe(first, root), more=len(errors) - 1)


# ----------------------------------------------------------------------------- distributions

@functools.lru_cache(maxsize=32)
def _build_distribution_cached(spec_json: str):
    from ..distributions import EmpiricalMixture, GaussianMixture, UniformBoxMixture

    params = json.loads(spec_json)
    family = params.pop("family")
    if family == "builtin":
        name = params["name"]
        if name not in BUILTIN_DISTRIBUTIONS:
            raise SpecError("", "distribution.name", f"unknown built-in distribution {name!r}; "
                            f"expected one of {', '.join(sorted(BUILTIN_DISTRIBUTIONS))}")
        return BUILTIN_DISTRIBUTIONS[name]()
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


# ----------------------------------------------------------------------------- meaning

_RESERVED_SAMPLER_ARGS = {"score_fn", "schedule", "x_init", "generator", "return_trajectory",
                          "progress"}


def _check_sampler(sampler: SamplerSpec) -> None:
    from ..samplers.registry import SAMPLER_INFO, sampler_schedule

    if sampler.name not in SAMPLER_INFO:
        raise SpecError("", "sampler.name", f"unknown sampler {sampler.name!r}; expected one of "
                        f"{', '.join(sorted(SAMPLER_INFO))}")
    try:
        _, extra = sampler_schedule(sampler.name, sampler.schedule, sampler.steps)
    except ValueError as error:
        text = str(error)
        key, _, rest = text.partition(": ")
        if key == "schedule":
            raise SpecError("", "sampler.schedule", rest) from None
        raise SpecError("", "sampler.steps", f"{sampler.schedule} schedule with steps = "
                        f"{sampler.steps}: {text}") from None
    parameters = inspect.signature(SAMPLER_INFO[sampler.name].fn).parameters
    accepted = [name for name, p in parameters.items()
                if p.kind == p.KEYWORD_ONLY and name not in _RESERVED_SAMPLER_ARGS
                and name not in extra]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    for key in sampler.options:
        if key not in accepted and not takes_any:
            hint = f"; it takes {', '.join(accepted)}" if accepted else "; it takes none"
            raise SpecError("", format_path(("sampler", "options", key)),
                            f"unknown option of sampler {sampler.name!r}{hint}")


def _check_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise SpecError("", "device", f"expected 'cpu', 'cuda', 'cuda:N' or 'auto', got "
                        f"{device!r}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("", "device", f"{device!r} requested but CUDA is not available")
        if (parsed.index or 0) >= torch.cuda.device_count():
            raise SpecError("", "device", f"{device!r} does not exist; "
                            f"{torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type != "cpu":
        raise SpecError("", "device", f"expected 'cpu', 'cuda', 'cuda:N' or 'auto', got "
                        f"{device!r}")
    return device


def _check_metrics(spec: Spec, distribution) -> None:
    from .measures import METRICS

    for i, name in enumerate(spec.metrics):
        if name not in METRICS:
            raise SpecError("", f"metrics[{i}]", f"unknown metric {name!r}; expected one of "
                            f"{', '.join(sorted(METRICS))}")
    if len(set(spec.metrics)) != len(spec.metrics):
        raise SpecError("", "metrics", "expected distinct metric names")
    for name, options in spec.metric_options.items():
        if name not in METRICS:
            raise SpecError("", format_path(("metric_options", name)),
                            f"options of an unknown metric; expected one of "
                            f"{', '.join(sorted(METRICS))}")
        if name not in spec.metrics:
            continue  # kept for when the metric is listed again; dropped when resolving
        try:
            METRICS[name].parse_options(options)
        except ValidationError as error:
            raise _from_validation_error(error, "", ("metric_options", name),
                                         METRICS[name].options) from None
        except ValueError as error:
            raise SpecError("", format_path(("metric_options", name)), str(error)) from None
    for name in spec.metrics:
        problem = METRICS[name].check(spec, distribution)
        if problem:
            raise SpecError("", problem[0], problem[1])


def _check_unit_settings(spec: Spec) -> None:
    """Meaning of one unit's settings (no sweep-level checks)."""
    distribution = spec.distribution_object()
    _check_sampler(spec.sampler)
    strength = spec.guidance.strength
    if isinstance(strength, IntervalStrengthSpec) and not strength.lo < strength.hi:
        raise SpecError("", "guidance.strength.hi", f"expected hi > lo = {strength.lo}, got "
                        f"{strength.hi}")
    if spec.reference.enabled:
        from ..distributions import GaussianMixture
        from ..schedules import SCHEDULES, make_schedule

        if not isinstance(distribution, GaussianMixture):
            raise SpecError("", "reference.enabled", f"the exact reverse kernel needs a "
                            f"Gaussian mixture, the distribution is "
                            f"{type(distribution).__name__}")
        schedule = spec.reference.schedule
        if schedule is not None:
            if schedule not in SCHEDULES:
                raise SpecError("", "reference.schedule", f"unknown schedule {schedule!r}; "
                                f"expected one of {', '.join(sorted(SCHEDULES))}")
            try:
                make_schedule(schedule, spec.reference.steps)
            except ValueError as error:
                raise SpecError("", "reference.steps", f"{schedule} schedule with steps = "
                                f"{spec.reference.steps}: {error}") from None
    _check_metrics(spec, distribution)


def _check_sweep_axes(spec: Spec, num_classes: int) -> dict[str, list]:
    """The w and class axes; returns the sweep with class filled in."""
    sweep = dict(spec.sweep)
    if W_KEY not in sweep:
        raise SpecError("", "sweep.w", "missing (the guidance strengths to run, including 0)")
    values = []
    for i, w in enumerate(sweep[W_KEY]):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise SpecError("", f"sweep.w[{i}]", f"expected a finite number, got {_short(w)}")
        values.append(float(w))
    if 0.0 not in values:
        raise SpecError("", "sweep.w", "must include 0, the unguided baseline of the coupled "
                        "comparison (frac_p_decreased)")
    if len(set(values)) != len(values):
        raise SpecError("", "sweep.w", f"expected distinct strengths, got {values}")
    negative = [w for w in values if w < 0]
    if negative and not spec.guidance.allow_negative:
        raise SpecError("", "sweep.w", f"w = {negative[0]:g} < 0 guides away from the class; "
                        f"set guidance.allow_negative = true to run it")
    sweep[W_KEY] = values
    classes = sweep.get(CLASS_KEY, list(range(num_classes)))
    for i, c in enumerate(classes):
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes:
            raise SpecError("", f"sweep.class[{i}]", f"unknown class {_short(c)}; the "
                            f"distribution has classes 0..{num_classes - 1}")
    if len(set(classes)) != len(classes):
        raise SpecError("", "sweep.class", f"expected distinct classes, got {classes}")
    sweep[CLASS_KEY] = list(classes)
    return sweep


def _under(path: str, key: str) -> bool:
    """Whether dotted ``path`` is ``key`` or lies below it."""
    return path == key or path.startswith(key + ".") or path.startswith(key + "[")


def _sweep_key_error(key: str, i: int, error: SpecError) -> SpecError:
    at = format_path(("sweep", key)) + f"[{i}]"
    inner = error.path
    if inner == format_path(_split_path(key)) and error.message.startswith("unknown key"):
        message = error.message.replace("unknown key", f"unknown key {inner}", 1)
        return SpecError("", format_path(("sweep", key)), message, error.more)
    if inner and inner != format_path(_split_path(key)):
        return SpecError("", at, f"{inner}: {error.message}", error.more)
    return SpecError("", at, error.message, error.more)


def _validate_structure(data: dict, source: str) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(source, "", "expected a TOML table")
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        raise _from_validation_error(error, source) from None


def unit_spec_data(data: dict, assignments: Iterable[tuple[str, Any]]) -> dict:
    """The spec data of one point of the sweep: swept keys set, ``sweep`` reduced to w and
    the point's class."""
    out = copy.deepcopy(data)
    sweep = {W_KEY: out["sweep"][W_KEY]}
    for key, value in assignments:
        if key == CLASS_KEY:
            sweep[CLASS_KEY] = [value]
        else:
            set_path(out, key, copy.deepcopy(value))
    out["sweep"] = sweep
    return out


def validate_spec(data: dict, source: str = "<spec>", *,
                  set_keys: Sequence[str] | Mapping[str, str] = ()) -> Spec:
    """Validate spec data (a dict as parsed from TOML) and resolve it.

    Args:
        data: the parsed TOML, with any ``--set`` overrides already applied.
        source: the file name for messages.
        set_keys: dotted paths that came from ``--set`` (messages about them name
            ``--set KEY``), or a mapping of such paths to the label to name instead (an
            option of a command, e.g. ``{"trials": "--trials"}``).

    Returns:
        The resolved :class:`Spec`: defaults filled in, ``sweep.class`` explicit,
        ``reference.schedule`` fixed, ``device = "auto"`` resolved, w = 0 first.

    Raises:
        SpecError: the first problem, as ``<source>: <dotted.key.path>: <expected>``.
    """
    try:
        return _validate(data, source)
    except SpecError as error:
        labels = set_keys if isinstance(set_keys, Mapping) else {
            key: f"--set {key}" for key in set_keys}
        for key, label in labels.items():
            if _under(error.path, key):
                raise error.with_source(label) from None
        raise error.with_source(source) from None


def _validate(data: dict, source: str) -> Spec:
    spec = _validate_structure(data, source)
    swept_keys = [key for key in spec.sweep if key not in (W_KEY, CLASS_KEY)]
    for key in swept_keys:
        try:
            parts = _split_path(key)
        except ValueError as error:
            raise SpecError("", format_path(("sweep", key)), str(error)) from None
        if parts[0] in FORBIDDEN_SWEEP_KEYS:
            raise SpecError("", format_path(("sweep", key)), f"{parts[0]} cannot be swept")
        if key != format_path(parts):
            raise SpecError("", format_path(("sweep", key)), f"write the key as "
                            f"{format_path(parts)!r}")
    # the settings every unit shares first (problems under a swept key are left to the
    # check of each swept value, which names the value by its index)
    base_spec = _validate_structure(unit_spec_data(data, []), source) if swept_keys else spec
    try:
        _check_unit_settings(base_spec)
    except SpecError as error:
        if not any(_under(error.path, key) for key in swept_keys):
            raise
    for key in swept_keys:
        for i, value in enumerate(spec.sweep[key]):
            point = unit_spec_data(data, [(key, value)])
            try:
                unit = _validate_structure(point, source)
                _check_unit_settings(unit)
            except SpecError as error:
                raise _sweep_key_error(key, i, error) from None
        if len({json.dumps(v, sort_keys=True) for v in spec.sweep[key]}) != len(spec.sweep[key]):
            raise SpecError("", format_path(("sweep", key)), "expected distinct values")
    distribution = base_spec.distribution_object()
    # classes must exist in every swept distribution: check against the smallest
    num_classes = distribution.num_classes
    for key in swept_keys:
        if key.startswith("distribution"):
            for value in spec.sweep[key]:
                unit = _validate_structure(unit_spec_data(data, [(key, value)]), source)
                num_classes = min(num_classes, unit.distribution_object().num_classes)
    sweep = _check_sweep_axes(spec, num_classes)
    resolved = spec.model_dump()
    resolved["sweep"] = {W_KEY: spec.w, CLASS_KEY: sweep[CLASS_KEY],
                         **{key: spec.sweep[key] for key in swept_keys}}
    resolved["device"] = _check_device(spec.device)
    resolved["metric_options"] = {name: options for name, options in spec.metric_options.items()
                                  if name in spec.metrics}
    if spec.reference.enabled and spec.reference.schedule is None:
        from ..schedules import SCHEDULES, make_schedule

        resolved["reference"]["schedule"] = (spec.sampler.schedule
                                             if spec.sampler.schedule in SCHEDULES else "li_jiao")
        schedule, steps = resolved["reference"]["schedule"], spec.reference.steps
        try:
            make_schedule(schedule, steps)
        except ValueError as error:
            raise SpecError("", "reference.steps", f"{schedule} schedule (that of the sampler) "
                            f"with steps = {steps}: {error}") from None
    return Spec.model_validate(_drop_none(resolved))


def _drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_drop_none(v) for v in data]
    return data


# ----------------------------------------------------------------------------- loading

def builtin_specs() -> dict[str, str]:
    """name -> one-line description of each built-in spec."""
    out = {}
    for path in sorted(_specs_dir().iterdir(), key=lambda p: p.name):
        if path.name.endswith(".toml"):
            data = tomllib.loads(path.read_text())
            out[path.name[:-5]] = str(data.get("description", "")).strip().splitlines()[0] \
                if data.get("description") else ""
    return out


def _specs_dir():
    return importlib.resources.files("guidelab.experiments") / "specs"


def builtin_spec_text(name: str) -> str:
    """The TOML text of built-in spec ``name``; ValueError naming ``spec`` if unknown."""
    path = _specs_dir() / f"{name}.toml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not path.is_file():
        raise ValueError(f"spec: unknown built-in spec {name!r}; expected one of "
                         f"{', '.join(builtin_specs())}")
    return path.read_text()


def load_spec(source: str | Path, overrides: Sequence[str | tuple[str, Any]] = ()) -> Spec:
    """Read, override, validate and resolve a spec.

    Args:
        source: a TOML file, or the name of a built-in spec (``guidelab spec list``).
        overrides: ``"key.path=value"`` strings (TOML literals, as ``--set``) or
            (dotted path, value) pairs, applied in order.

    Returns:
        The resolved :class:`Spec`.

    Raises:
        SpecError: a problem with the file, an override or a value, naming the key path.
    """
    path = Path(source)
    if path.is_file():
        label = str(source)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise SpecError(label, "", f"cannot read the spec ({error})") from None
    elif path.exists():
        raise SpecError(str(source), "", "expected a spec file (TOML), got a folder")
    else:
        try:
            text = builtin_spec_text(str(source))
        except ValueError:
            raise SpecError(str(source), "", "no such file, and not the name of a built-in "
                            f"spec ({', '.join(builtin_specs())})") from None
        label = f"{source} (built-in)"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(label, "", f"not valid TOML: {error}") from None
    pairs = [parse_set(item) if isinstance(item, str) else (format_path(_split_path(item[0])),
                                                             item[1]) for item in overrides]
    data = apply_overrides(data, pairs)
    return validate_spec(data, label, set_keys=[key for key, _ in pairs])


# ----------------------------------------------------------------------------- TOML out

def spec_to_dict(spec: Spec) -> dict:
    """The spec as plain data (the resolved spec's identity), None values dropped."""
    return _drop_none(spec.model_dump())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(ch in text for ch in ".en") else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{format_path([k])} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"value: cannot write {type(value).__name__} as TOML")


def _toml_table(data: Mapping, prefix: tuple, lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) or not v}
    tables = {k: v for k, v in data.items() if isinstance(v, dict) and v}
    if prefix and (scalars or not tables):
        lines.append("")
        lines.append(f"[{format_path(prefix)}]")
    for key, value in scalars.items():
        lines.append(f"{format_path([key])} = {_toml_value(value)}")
    for key, value in tables.items():
        _toml_table(value, (*prefix, key), lines)


def spec_to_toml(spec: Spec | Mapping) -> str:
    """The spec as TOML text that :func:`load_spec` reads back to the same spec."""
    data = spec_to_dict(spec) if isinstance(spec, Spec) else _drop_none(dict(spec))
    order = ["name", "description", "trials", "seed", "dtype", "device", "chunk_rows",
             "keep_samples", "metrics", "distribution", "guidance", "sampler", "sweep",
             "reference", "metric_options"]
    data = {key: data[key] for key in order if key in data} | {
        key: value for key, value in data.items() if key not in order}
    lines: list[str] = []
    _toml_table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _flatten(data: Any, prefix: tuple = ()) -> dict[str, Any]:
    if isinstance(data, Mapping) and data:
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, (*prefix, key)))
        return out
    return {format_path(prefix): data}


def spec_diff(a: Spec | Mapping, b: Spec | Mapping) -> list[str]:
    """Dotted key paths whose values differ between two specs (sorted)."""
    flat_a = _flatten(spec_to_dict(a) if isinstance(a, Spec) else _drop_none(dict(a)))
    flat_b = _flatten(spec_to_dict(b) if isinstance(b, Spec) else _drop_none(dict(b)))
    return sorted(key for key in set(flat_a) | set(flat_b)
                  if json.dumps(flat_a.get(key)) != json.dumps(flat_b.get(key)))
