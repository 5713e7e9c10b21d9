r"""Command-line aliases of spec keys: ``guidelab reproduce NAME --trials 400`` is
``--set trials=400`` on the built-in spec NAME.

:data:`ALIASES` maps each keyword of :func:`reproduce_spec` to its spec key and the option
that names it in messages, so a bad value is reported as the option the user typed
(``--trials: trials: expected a positive integer, got -3``), in words that option can act on:
a message that says to set a spec key an option also sets says to pass the option
(``pass --allow-negative`` rather than ``set guidance.allow_negative = true``), and a problem
with a value an option gave is stated in what the option sets (``--steps``: the smallest valid
number of steps, not the schedule's constants, which no option sets).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence

from .spec import Spec, SpecError, apply_overrides, builtin_spec_text, parse_set, validate_spec

__all__ = ["default_strengths", "reproduce_spec", "li_jiao_spec", "ALIASES"]

ALIASES = {
    "trials": ("trials", "--trials"),
    "steps": ("sampler.steps", "--steps"),
    "sampler": ("sampler.name", "--sampler"),
    "schedule": ("sampler.schedule", "--schedule"),
    "device": ("device", "--device"),
    "seed": ("seed", "--seed"),
    "strengths": ("sweep.w", "--w"),
    "classes": ("sweep.class", "--classes"),
    "allow_negative": ("guidance.allow_negative", "--allow-negative"),
    "reference": ("reference.enabled", "--reference"),
    "reference_steps": ("reference.steps", "--reference-steps"),
    "dtype": ("dtype", "--float64"),
    "profile_w": ("metric_options.profile.w", "--profile-w"),
}
"""Keyword of :func:`reproduce_spec` -> (spec key, option of ``guidelab reproduce``)."""


def default_strengths(num: int = 10, w_min: float = 0.01, w_max: float = 10.0) -> list[float]:
    """w = 0 followed by ``num`` logarithmically spaced strengths from w_min to w_max."""
    if num < 1 or not 0 < w_min <= w_max:
        raise ValueError(f"strengths: expected num >= 1 and 0 < w_min <= w_max, got {num}, "
                         f"{w_min}, {w_max}")
    if num == 1:
        return [0.0, w_min]
    ratio = (w_max / w_min) ** (1 / (num - 1))
    return [0.0] + [float(f"{w_min * ratio**i:.6g}") for i in range(num)]


def reproduce_spec(builtin: str = "li-jiao-gmm", *, overrides: Sequence[str] = (),
                   **options) -> Spec:
    """A built-in spec (any of ``guidelab spec list``) with options set, validated and
    resolved.

    Args:
        builtin: the built-in spec's name.
        overrides: further ``"key.path=value"`` settings (TOML values, as ``--set``) applied
            after the options, e.g. ``['metrics=["class_probability"]']``.
        **options: keywords of :data:`ALIASES` (``trials``, ``steps``, ``sampler``,
            ``schedule``, ``device``, ``seed``, ``strengths`` (0 is added when missing),
            ``classes``, ``allow_negative``, ``reference``, ``reference_steps``, ``dtype``
            ("float32" or "float64")); None leaves the spec's value.

    Raises:
        SpecError: a bad value, named by its command-line option and spec key, e.g.
            ``--trials: trials: expected a positive integer, got -3``.
    """
    unknown = sorted(set(options) - set(ALIASES))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown option; expected one of "
                         f"{', '.join(ALIASES)}")
    data = tomllib.loads(builtin_spec_text(builtin))
    labels: dict[str, str] = {}
    pairs = []
    for name, value in options.items():
        if value is None:
            continue
        if name == "strengths":
            value = list(value)
            if not any(w == 0 for w in value if isinstance(w, (int, float))):
                value = [0.0, *value]
        elif name == "classes":
            value = list(value)
        elif name == "profile_w":
            value = [float(value)]
        path, option = ALIASES[name]
        pairs.append((path, value))
        labels[path] = option
    for text in overrides:
        path, value = parse_set(text)
        pairs.append((path, value))
        labels.setdefault(path, f"--set {path}")
    try:
        return validate_spec(apply_overrides(data, pairs), f"{builtin} (built-in)",
                             set_keys=labels)
    except SpecError as error:
        raise error.map(_in_options) from None


_FLAGS = {f"set {path} = true": f"pass {option}" for path, option in ALIASES.values()
          if option in ("--allow-negative",)}
"""Advice to set a boolean spec key -> the flag of ``guidelab reproduce`` that sets it."""


def _in_options(problem: SpecError) -> SpecError:
    """``problem`` in the words of ``guidelab reproduce``'s options (module docstring)."""
    message = problem.message
    option = problem.source.startswith("--") and not problem.source.startswith("--set ")
    if option and problem.option_message is not None:
        message = problem.option_message
    for advice, flag in _FLAGS.items():
        message = message.replace(advice, flag)
    return SpecError(problem.source, problem.path, message)


li_jiao_spec = reproduce_spec
"""The name this function had when it served li-jiao-gmm alone."""
