r"""Validation of a spec's meaning, after its structure (:mod:`.schema`): the family's own
constructor, the sampler and its schedule, the sweep, the metrics and the device. Every problem
is a :class:`~.errors.SpecError` naming the dotted key path.

Validation is linear in the size of the spec. The limits of :mod:`.limits` come first, on the
raw data, so that nothing sized by a user's number is built before that number is checked.
A swept value is not validated as a whole spec: only the top-level section it lies in is
validated again (by that section's own pydantic field, with the value set), the unit's settings
are the shared ones with that section replaced, and the expensive checks (the distribution,
the sampler's schedule, the reference schedule) are memoised per section object, so a sweep of
n seeds over a large distribution builds the distribution once and checks n integers.
Distinctness of swept values is a set of their canonical JSON, O(n). A value that fails the
fast check is validated again the slow way (the whole unit), which words the message exactly
as for a file.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError, create_model

from ...distributions import EmpiricalMixture, GaussianMixture, log_normaliser
from ...guidance import make_rule
from ...samplers.registry import SAMPLER_INFO, sampler_schedule
from ...schedules import SCHEDULES, make_schedule
from ..measures import METRICS
from ..plugins import load_plugins, resolve_factory
from .errors import SpecError, short
from .fields import SpecModel
from .limits import MAX_STEPS, check_limits, check_totals
from .paths import format_path, set_path, split_path
from .render import from_validation_error
from .schema import (
    CLASS_KEY,
    FORBIDDEN_SWEEP_KEYS,
    MODEL_SCHEDULE,
    W_KEY,
    IntervalStrengthSpec,
    RampStrengthSpec,
    SamplerSpec,
    Spec,
)
from .sections import (
    CheckpointClassifierSpec,
    CheckpointJudgeSpec,
    CheckpointModelSpec,
    DiffusersModelSpec,
    DigitsDataSpec,
    ExactClassifierSpec,
    ExactJudgeSpec,
    ExactModelSpec,
    FamilyDataSpec,
    FileDataSpec,
    InflatedModelSpec,
    PerturbedModelSpec,
    PythonClassifierSpec,
    PythonDataSpec,
    PythonJudgeSpec,
    PythonModelSpec,
    SwissRollDataSpec,
    TorchvisionJudgeSpec,
    TrainedClassifierSpec,
    TrainedJudgeSpec,
    TrainedModelSpec,
)
from .toml import drop_none

__all__ = ["validate_spec", "unit_spec_data"]


_RESERVED_SAMPLER_ARGS = {"score_fn", "schedule", "x_init", "generator", "return_trajectory",
                          "progress"}


def _check_sampler(sampler: SamplerSpec) -> None:

    if sampler.name not in SAMPLER_INFO:
        raise SpecError("", "sampler.name", f"unknown sampler {short(sampler.name)}; expected "
                        f"one of {', '.join(sorted(SAMPLER_INFO))}")
    if sampler.schedule == MODEL_SCHEDULE:
        if "discrete" not in SAMPLER_INFO[sampler.name].schedule_kinds:
            raise SpecError("", "sampler.schedule", f"schedule 'model' (the model's training "
                            f"schedule) needs a sampler of discrete schedules, not "
                            f"{sampler.name!r}")
        return
    try:
        _, extra = sampler_schedule(sampler.name, sampler.schedule, sampler.steps)
    except ValueError as error:
        text = str(error)
        key, _, rest = text.partition(": ")
        if key == "schedule":
            raise SpecError("", "sampler.schedule", rest) from None
        raise _steps_problem("sampler.steps", sampler.schedule, sampler.steps, error) from None
    parameters = inspect.signature(SAMPLER_INFO[sampler.name].fn).parameters
    accepted = [name for name, p in parameters.items()
                if p.kind == p.KEYWORD_ONLY and name not in _RESERVED_SAMPLER_ARGS
                and name not in extra]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    for key in sampler.options:
        if key not in accepted and not takes_any:
            hint = f"; it takes {', '.join(accepted)}" if accepted else "; it takes none"
            raise SpecError("", format_path(("sampler", "options", key)),
                            f"unknown option of sampler {short(sampler.name)}{hint}")


def _smallest_steps(schedule: str, steps: int) -> int | None:
    """The smallest number of steps above ``steps`` (which fails) with which the schedule
    ``schedule`` can be made, searched (doubling, then bisection, assuming that every larger
    number works too), or None when none up to :data:`~.limits.MAX_STEPS` does."""
    def valid(n: int) -> bool:
        try:
            make_schedule(schedule, n)
        except ValueError:
            return False
        return True

    low, high = max(int(steps), 1), max(int(steps), 1) * 2
    while high < MAX_STEPS and not valid(high):
        low, high = high, high * 2
    high = min(high, MAX_STEPS)
    if not valid(high):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if valid(middle) else (middle, high)
    return high


def _steps_problem(key: str, schedule: str, steps: int, error: ValueError,
                   which: str = "") -> SpecError:
    """A schedule that cannot be made with ``steps`` steps: its own reason (without the name
    of the parameter it blames, e.g. li_jiao's ``c1``, which a spec cannot set) and, when more
    steps would do, the smallest number that does; the message for a command-line option
    (``--steps``) states that number alone."""
    text = " ".join(str(error).split())
    name, colon, rest = text.partition(": ")
    if colon and all(part.strip().isidentifier() for part in name.split(",")):
        text = rest  # "c1: c1 log T / T = 1.29 must be below 1 (...)" -> "c1 log T / T ..."
    text = re.sub(r"\s*\([^()]*\)$", "", text)  # its advice, e.g. "(more steps or smaller c1)"
    head = f"{schedule} schedule{which} with steps = {steps}"
    smallest = _smallest_steps(schedule, steps)
    if smallest is None:
        return SpecError("", key, f"{head}: {text}")
    return SpecError("", key, f"{head}: {text}; the smallest valid steps is {smallest}",
                     option_message=f"{head}: too few steps; the smallest valid value for the "
                                    f"{schedule} schedule is {smallest}")


def _check_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise SpecError("", "device", f"expected 'cpu', 'cuda', 'cuda:N' or 'auto', got "
                        f"{short(device)}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("", "device", f"{device!r} requested but CUDA is not available")
        if (parsed.index or 0) >= torch.cuda.device_count():
            raise SpecError("", "device", f"{device!r} does not exist; "
                            f"{torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type != "cpu":
        raise SpecError("", "device", f"expected 'cpu', 'cuda', 'cuda:N' or 'auto', got "
                        f"{short(device)}")
    return device


def _check_metrics(spec: Spec, distribution) -> None:
    for i, name in enumerate(spec.metrics):
        if name not in METRICS:
            raise SpecError("", f"metrics[{i}]", f"unknown metric {short(name)}; expected one of "
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
            raise from_validation_error(error, "", ("metric_options", name),
                                         METRICS[name].options) from None
        except ValueError as error:
            raise SpecError("", format_path(("metric_options", name)), str(error)) from None
    for name in spec.metrics:
        problem = METRICS[name].check(spec, distribution)
        if problem:
            raise SpecError("", problem[0], problem[1])


class _Memo:
    """Results of the expensive checks of a unit's settings, per section *object*: the units of
    a sweep share every section but the swept one (``model_copy`` keeps the others), so each
    distribution is built and each sampler's schedule made once per distinct section."""

    def __init__(self):
        self._done: dict[tuple, tuple[Any, Any]] = {}

    def once(self, kind: str, section: Any, compute):
        """``compute(section)``, once per (kind, section object); exceptions are not kept."""
        key = (kind, id(section))
        if key not in self._done:
            self._done[key] = (section, compute(section))  # the section kept: ids stay unique
        return self._done[key][1]


def _check_unit_settings(spec: Spec, memo: _Memo | None = None) -> Any:
    """Meaning of one unit's settings (no sweep-level checks); returns the distribution."""
    memo = memo or _Memo()
    distribution = memo.once("distribution", spec.distribution,
                             lambda _: spec.distribution_object())
    memo.once("sampler", spec.sampler, _check_sampler)
    _check_guidance(spec, distribution)
    strength = spec.guidance.strength
    if isinstance(strength, IntervalStrengthSpec | RampStrengthSpec) \
            and not strength.lo < strength.hi:
        raise SpecError("", "guidance.strength.hi", f"expected hi > lo = {strength.lo}, got "
                        f"{strength.hi}")
    if spec.reference.enabled:
        if not isinstance(distribution, GaussianMixture):
            raise SpecError("", "reference.enabled", f"the exact reverse kernel needs a "
                            f"Gaussian mixture, the distribution is "
                            f"{type(distribution).__name__}")
        schedule = spec.reference.schedule
        if schedule is not None:
            if schedule not in SCHEDULES:
                raise SpecError("", "reference.schedule", f"unknown schedule {short(schedule)}; "
                                f"expected one of {', '.join(sorted(SCHEDULES))}")
            try:
                memo.once("reference", spec.reference,
                          lambda reference: make_schedule(schedule, reference.steps))
            except ValueError as error:
                raise _steps_problem("reference.steps", schedule, spec.reference.steps,
                                     error) from None
    _check_sections(spec, distribution)
    _check_metrics(spec, distribution)
    return distribution


def _exists(path: str, key: str, what: str = "file") -> None:
    if not Path(path).exists():
        raise SpecError("", key, f"no such {what}: {path}")


def _check_factory(reference: str, key: str, kind: str = "models") -> None:
    """``package.module:factory`` imports and names something callable, or a plugin
    registered the name."""
    try:
        factory = resolve_factory(reference, kind)
    except ValueError as error:
        raise SpecError("", key, str(error).removeprefix("reference: ")) from None
    if not callable(factory):
        raise SpecError("", key, f"{reference} is not callable")


def _check_part(spec: Spec, part: str, key: str) -> None:
    if spec.data is None:
        raise SpecError("", key, "needs a [data] section to learn from")
    if part not in spec.data.parts:
        raise SpecError("", key, f"unknown data part {part!r}; [data] has parts "
                        f"{', '.join(spec.data.parts)}")


def _check_sections(spec: Spec, distribution) -> None:
    """What can be checked of [data], [model], [judge] and [guidance.classifier] without
    building anything: the exact family they need exists, the data parts they name exist,
    the files they read are there."""
    if spec.data is not None:
        total = sum(spec.data.parts.values())
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise SpecError("", "data.parts", f"expected fractions summing to 1, got {total:g}")
        if isinstance(spec.data, FamilyDataSpec) and distribution is None:
            raise SpecError("", "data.source", "source 'family' draws from [distribution], "
                            "which the spec does not have")
        if isinstance(spec.data, FileDataSpec):
            _exists(spec.data.path, "data.path", "file or folder")
        if isinstance(spec.data, PythonDataSpec):
            _check_factory(spec.data.factory, "data.factory", "data")
    model, path = spec.model, "model"
    while isinstance(model, PerturbedModelSpec):
        model, path = model.base, f"{path}.base"
    if isinstance(model, ExactModelSpec) and distribution is None:
        raise SpecError("", f"{path}.kind", "kind 'exact' (the default) samples "
                        "[distribution], which the spec does not have")
    if isinstance(model, TrainedModelSpec):
        _check_part(spec, model.part, f"{path}.part")
    if isinstance(model, CheckpointModelSpec | DiffusersModelSpec):
        _exists(model.path, f"{path}.path", "file or folder")
    if isinstance(model, PythonModelSpec):
        _check_factory(model.factory, f"{path}.factory")
    judge = spec.judge
    if (judge is None or isinstance(judge, ExactJudgeSpec)) and distribution is None:
        raise SpecError("", "judge.kind", "kind 'exact' (the default) judges by the exact "
                        "posterior of [distribution], which the spec does not have; name a "
                        "judge in [judge]")
    if isinstance(judge, TrainedJudgeSpec):
        _check_part(spec, judge.part, "judge.part")
    if isinstance(judge, CheckpointJudgeSpec):
        _exists(judge.path, "judge.path")
    if isinstance(judge, TorchvisionJudgeSpec):
        _exists(judge.weights, "judge.weights")
    if isinstance(judge, PythonJudgeSpec):
        _check_factory(judge.factory, "judge.factory", "judges")
    classifier = spec.guidance.classifier
    if "class_gradient" not in _rule(spec).branches:
        return  # a [guidance.classifier] serves the units of a swept rule that needs one
    if classifier is None:
        classifier = ExactClassifierSpec() if isinstance(spec.model, ExactModelSpec) \
            else TrainedClassifierSpec(kind="trained")
    if isinstance(classifier, ExactClassifierSpec) and distribution is None:
        raise SpecError("", "guidance.classifier.kind", "kind 'exact' needs [distribution]")
    if isinstance(classifier, TrainedClassifierSpec):
        _check_part(spec, classifier.part, "guidance.classifier.part")
    if isinstance(classifier, CheckpointClassifierSpec):
        _exists(classifier.path, "guidance.classifier.path")
    if isinstance(classifier, PythonClassifierSpec):
        _check_factory(classifier.factory, "guidance.classifier.factory")


def _rule(spec: Spec):
    """The spec's guidance rule, built from its options (SpecError naming the key)."""
    try:
        return make_rule(spec.guidance.rule, spec.guidance.options)
    except ValueError as error:
        text = str(error)
        if text.startswith("rule:"):
            raise SpecError("", "guidance.rule", text.removeprefix("rule: ")) from None
        option, _, rest = text.partition(": ")
        key = format_path(("guidance", "options", option)) if option.isidentifier() \
            else "guidance.options"
        raise SpecError("", key, rest or text) from None


def _check_guidance(spec: Spec, distribution) -> None:
    """The rule exists and its options are valid, and what it needs is there: a weaker model
    for autoguidance, the weight for reward guidance, a sampler that splits its step for a
    rule with its own re-noising direction."""
    rule = _rule(spec)
    guidance = spec.guidance
    weak_needed = any(branch.startswith("model:") for branch in rule.branches)
    if weak_needed and guidance.weak is None:
        raise SpecError("", "guidance.weak", f"rule {rule.name!r} needs a weaker model: "
                        f"[guidance.weak] (e.g. kind = 'inflated', factor = 1.5 for an exact "
                        f"family, or a smaller trained network)")
    if isinstance(guidance.weak, ExactModelSpec | InflatedModelSpec) and distribution is None:
        raise SpecError("", "guidance.weak.kind", "an exact or inflated weak model needs "
                        "[distribution]")
    if any(branch.startswith("uncond:") for branch in rule.branches):
        if guidance.reward is None or (guidance.reward.b is None and guidance.reward.A is None):
            raise SpecError("", "guidance.reward", f"rule {rule.name!r} needs the weight g: "
                            f"[guidance.reward] with b (exponential-linear) and/or A, m "
                            f"(exponential-quadratic)")
        _check_reweighted_law(spec, distribution)
    if rule.renoises() and SAMPLER_INFO[spec.sampler.name].split is None:
        splitting = sorted(n for n, i in SAMPLER_INFO.items() if i.split is not None)
        raise SpecError("", "guidance.rule", f"rule {rule.name!r} re-noises with its own "
                        f"direction, which sampler {spec.sampler.name!r} cannot use; use "
                        f"one of {', '.join(splitting)}")


def _check_reweighted_law(spec: Spec, distribution) -> None:
    """Reward guidance's reweighted law can be built: the exact tilt of a Gaussian or kernel
    mixture (its weight checked against it: shapes, integrability), or a second network
    trained on g-weighted data for a trained model."""
    kind = spec.model.kind
    if kind == "trained":
        return  # the weight is checked against the data when the parts are built
    if kind != "exact":
        raise SpecError("", "guidance.reward", f"reward guidance needs the reweighted law "
                        f"p(x|c) g(x) / E[g]: model.kind = 'exact' (the exact tilt of "
                        f"[distribution]) or 'trained' (a second network trained on g-weighted "
                        f"data), got {kind!r}")
    if not (isinstance(distribution, GaussianMixture) or (
            isinstance(distribution, EmpiricalMixture) and distribution.bandwidth > 0)):
        raise SpecError("", "guidance.reward", "reward guidance's exact reweighted law needs "
                        "a Gaussian-mixture [distribution] or an empirical one with "
                        "bandwidth > 0")
    try:
        log_normaliser(distribution, **spec.guidance.reward.model_dump(exclude_none=True))
    except ValueError as error:
        key, _, rest = str(error).partition(": ")
        if key in ("b", "A", "m"):
            raise SpecError("", f"guidance.reward.{key}", rest) from None
        raise SpecError("", "guidance.reward", str(error)) from None


def _num_classes(spec: Spec, distribution) -> int | None:
    """The number of classes the spec's parts know of, or None (then sweep.class is needed)."""
    if distribution is not None:
        return distribution.num_classes
    data = spec.data
    if isinstance(data, DigitsDataSpec):
        return 10
    if isinstance(data, SwissRollDataSpec):
        return data.classes
    if isinstance(data, FileDataSpec):
        from ...data import load_file

        try:
            return load_file(data.path, x_key=data.x_key, label_key=data.label_key).num_classes
        except (ValueError, OSError) as error:
            raise SpecError("", "data.path", str(error)) from None
    model = spec.model
    while isinstance(model, PerturbedModelSpec):
        model = model.base
    known = getattr(model, "num_classes", None) or getattr(spec.judge, "num_classes", None)
    return int(known) if known else None


def _check_sweep_axes(spec: Spec, num_classes: int | None) -> dict[str, list]:
    """The w and class axes; returns the sweep with class filled in."""
    sweep = dict(spec.sweep)
    if W_KEY not in sweep:
        raise SpecError("", "sweep.w", "missing (the guidance strengths to run, including 0)")
    values = []
    for i, w in enumerate(sweep[W_KEY]):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise SpecError("", f"sweep.w[{i}]", f"expected a finite number, got {short(w)}")
        values.append(float(w))
    if 0.0 not in values:
        raise SpecError("", "sweep.w", "must include 0, the unguided baseline of the coupled "
                        "comparison (frac_p_decreased)")
    if len(set(values)) != len(values):
        raise SpecError("", "sweep.w", f"expected distinct strengths, got {short(values)}")
    negative = [w for w in values if w < 0]
    if negative and not spec.guidance.allow_negative:
        raise SpecError("", "sweep.w", f"w = {negative[0]:g} < 0 guides away from the class; "
                        f"set guidance.allow_negative = true to run it")
    sweep[W_KEY] = values
    if num_classes is None and CLASS_KEY not in sweep:
        raise SpecError("", "sweep.class", "missing: list the classes to sample (neither "
                        "[distribution], [data] nor the model says how many there are)")
    classes = sweep.get(CLASS_KEY, list(range(num_classes or 0)))
    for i, c in enumerate(classes):
        if isinstance(c, bool) or not isinstance(c, int) or c < 0 or (
                num_classes is not None and c >= num_classes):
            known = f"classes 0..{num_classes - 1}" if num_classes else "classes from 0"
            raise SpecError("", f"sweep.class[{i}]", f"unknown class {short(c)}; the "
                            f"study has {known}")
    if len(set(classes)) != len(classes):
        raise SpecError("", "sweep.class", f"expected distinct classes, got {short(classes)}")
    sweep[CLASS_KEY] = list(classes)
    return sweep


def _under(path: str, key: str) -> bool:
    """Whether dotted ``path`` is ``key`` or lies below it."""
    return path == key or path.startswith(key + ".") or path.startswith(key + "[")


def _sweep_key_error(key: str, i: int, error: SpecError) -> SpecError:
    """Each problem of swept value ``i`` of ``key`` named by ``sweep.<key>[i]``."""
    at = format_path(("sweep", key)) + f"[{i}]"

    def rename(problem: SpecError) -> SpecError:
        inner = problem.path
        if inner == format_path(split_path(key)) and problem.message.startswith("unknown key"):
            message = problem.message.replace("unknown key", f"unknown key {inner}", 1)
            return SpecError("", format_path(("sweep", key)), message)
        if inner and inner != format_path(split_path(key)):
            return SpecError("", at, f"{inner}: {problem.message}")
        return SpecError("", at, problem.message, option_message=problem.option_message)

    return error.map(rename)


def _validate_structure(data: dict, source: str) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(source, "", "expected a TOML table")
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error, source) from None


def unit_spec_data(data: dict, assignments: Iterable[tuple[str, Any]]) -> dict:
    """The spec data of one point of the sweep: swept keys set, ``sweep`` reduced to w and
    the point's class (the other swept lists are not copied)."""
    out = copy.deepcopy({key: value for key, value in data.items() if key != "sweep"})
    sweep = {W_KEY: copy.deepcopy(data["sweep"][W_KEY])}
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
            option of a command, e.g. ``{"trials": "--trials"}``; :func:`~.loading.load_spec`
            also maps the first table a ``--set`` created, so that every problem inside it
            names the option). An unknown key that is a table above a set key (``foo`` of
            ``--set foo.bar=1``) names the option too.

    Returns:
        The resolved :class:`Spec`: defaults filled in, ``sweep.class`` explicit,
        ``reference.schedule`` fixed, ``device = "auto"`` resolved, w = 0 first.

    Raises:
        SpecError: ``<source>: <dotted.key.path>: <expected>``, one line per problem: every
            problem of the spec's structure (unknown keys, wrong types, values out of range,
            missing keys), else the first problem of its meaning. Each problem is named by its
            own source.
    """
    try:
        return _validate(data, source)
    except SpecError as error:
        labels = set_keys if isinstance(set_keys, Mapping) else {
            key: f"--set {key}" for key in set_keys}
        raise error.map(lambda problem: problem.with_source(
            _source_of(problem, labels, source))) from None


def _source_of(problem: SpecError, labels: Mapping[str, str], source: str) -> str:
    """The label of the override the problem lies under, else ``source``."""
    for key, label in labels.items():
        if _under(problem.path, key):
            return label
    if problem.path and problem.message.startswith("unknown key"):
        for key, label in labels.items():
            if _under(key, problem.path):  # a table the override made up
                return label
    return source


def _section_model(section: str):
    """A one-field model validating a value as ``Spec.<section>`` (the field's own type,
    constraints and discriminators, the spec's strict config), or None when the section
    cannot be validated alone (an unknown key, or validators of Spec that see several
    fields)."""
    decorators = Spec.__pydantic_decorators__
    if section not in Spec.model_fields or decorators.model_validators or \
            decorators.field_validators:
        return None
    return _section_models(section)


@functools.cache
def _section_models(section: str):
    field = Spec.model_fields[section]
    return create_model(f"_Point_{section}", __base__=SpecModel, value=(field.annotation, field))


def _with_value(node: Any, parts: Sequence[str], value: Any) -> Any:
    """``node`` with ``value`` set at ``parts``, copying only the tables on the way (as
    :func:`~.paths.set_path` sets it: a missing or non-table step becomes a table)."""
    if not parts:
        return value
    table = node if isinstance(node, dict) else {}
    return {**table, parts[0]: _with_value(table.get(parts[0]), parts[1:], value)}


def _point_spec(base_data: dict, base_spec: Spec, parts: Sequence[str], key: str, value: Any,
                source: str) -> Spec:
    """The settings of the sweep point ``key = value`` (every other key at its shared value).

    The section the key lies in is validated with the value set and put in place of the
    shared one; only when that fails (or the section cannot be validated alone) is the whole
    point validated, which words the problem as for a file."""
    model = _section_model(parts[0])
    if model is not None:
        try:
            section = model.model_validate(
                {"value": _with_value(base_data.get(parts[0]), parts[1:], value)}).value
        except ValidationError:
            pass
        else:
            return base_spec.model_copy(update={parts[0]: section})
    return _validate_structure(unit_spec_data(base_data, [(key, value)]), source)


def _validate(data: dict, source: str) -> Spec:
    load_plugins()  # families, samplers and metrics that packages add
    if isinstance(data, dict):
        check_limits(data)  # before anything is built from a number the data holds
    spec = _validate_structure(data, source)
    swept_keys = [key for key in spec.sweep if key not in (W_KEY, CLASS_KEY)]
    for key in swept_keys:
        try:
            parts = split_path(key)
        except ValueError as error:
            raise SpecError("", format_path(("sweep", key)), str(error)) from None
        if parts[0] in FORBIDDEN_SWEEP_KEYS:
            raise SpecError("", format_path(("sweep", key)), f"{parts[0]} cannot be swept")
        if key != format_path(parts):
            raise SpecError("", format_path(("sweep", key)), f"write the key as "
                            f"{format_path(parts)!r}")
    # the settings every unit shares first (problems under a swept key are left to the
    # check of each swept value, which names the value by its index)
    base_data = unit_spec_data(data, []) if swept_keys else data
    base_spec = _validate_structure(base_data, source) if swept_keys else spec
    memo = _Memo()
    try:
        _check_unit_settings(base_spec, memo)
    except SpecError as error:
        if not any(_under(error.path, key) for key in swept_keys):
            raise
    # classes must exist in every swept distribution: check against the smallest (counted
    # with each swept value's check, raised after every value has been checked)
    counted: list[Spec] = []
    for key in swept_keys:
        parts = split_path(key)
        counts_classes = key.startswith(("distribution", "data", "model", "judge"))
        for i, value in enumerate(spec.sweep[key]):
            try:
                unit = _point_spec(base_data, base_spec, parts, key, value, source)
                _check_unit_settings(unit, memo)
            except SpecError as error:
                raise _sweep_key_error(key, i, error) from None
            if counts_classes:
                counted.append(unit)
        if len({json.dumps(v, sort_keys=True) for v in spec.sweep[key]}) != len(spec.sweep[key]):
            raise SpecError("", format_path(("sweep", key)), "expected distinct values")
    num_classes = _num_classes(base_spec, memo.once("distribution", base_spec.distribution,
                                                    lambda _: base_spec.distribution_object()))
    for unit in counted:
        distribution = memo.once("distribution", unit.distribution,
                                 lambda _, unit=unit: unit.distribution_object())
        known = _num_classes(unit, distribution)
        if known is not None:
            num_classes = known if num_classes is None else min(num_classes, known)
    sweep = _check_sweep_axes(spec, num_classes)
    points = math.prod(len(spec.sweep[key]) for key in swept_keys) * len(sweep[CLASS_KEY])
    check_totals(spec.trials, len(sweep[W_KEY]), points * (2 if spec.reference.enabled else 1))
    resolved = spec.model_dump()
    resolved["sweep"] = {W_KEY: spec.w, CLASS_KEY: sweep[CLASS_KEY],
                         **{key: spec.sweep[key] for key in swept_keys}}
    resolved["device"] = _check_device(spec.device)
    resolved["metric_options"] = {name: options for name, options in spec.metric_options.items()
                                  if name in spec.metrics}
    if spec.reference.enabled and spec.reference.schedule is None:

        resolved["reference"]["schedule"] = (spec.sampler.schedule
                                             if spec.sampler.schedule in SCHEDULES else "li_jiao")
        schedule, steps = resolved["reference"]["schedule"], spec.reference.steps
        try:
            make_schedule(schedule, steps)
        except ValueError as error:
            raise _steps_problem("reference.steps", schedule, steps, error,
                                 " (that of the sampler)") from None
    return Spec.model_validate(drop_none(resolved))
