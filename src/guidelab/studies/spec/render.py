r"""Error rendering: a pydantic ``ValidationError`` as one :class:`SpecError` with a line per
problem, each naming the dotted key path and what was expected (an unknown key with the
closest allowed one)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import SpecError, short
from .paths import format_path
from .schema import FAMILY_MODELS, STRENGTH_MODELS, Spec
from .sections import SECTION_VARIANTS

__all__ = ["from_validation_error", "describe_error"]


_TAGGED = {"distribution": FAMILY_MODELS, "strength": STRENGTH_MODELS,
           "data": SECTION_VARIANTS["data"], "model": SECTION_VARIANTS["model"],
           "base": SECTION_VARIANTS["model"], "weak": SECTION_VARIANTS["model"],
           "judge": SECTION_VARIANTS["judge"],
           "classifier": SECTION_VARIANTS["classifier"]}
"""Fields holding a discriminated union: field name -> tag -> settings model."""


def _model_at(loc: Sequence, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The model class whose table sits at ``loc`` (tags of discriminated unions included)."""
    model: Any = root or Spec
    i = 0
    while i < len(loc):
        part = loc[i]
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        if part in _TAGGED and not (isinstance(annotation, type)
                                    and issubclass(annotation, BaseModel)):
            variants = _TAGGED[part]
            if i + 1 < len(loc) and loc[i + 1] in variants:
                model, i = variants[loc[i + 1]], i + 2
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
        if i > 0 and loc[i - 1] in _TAGGED and part in _TAGGED[loc[i - 1]]:
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _closest(loc: Sequence, root: type[BaseModel] | None = None) -> str | None:
    """The allowed key closest to the unknown key at ``loc`` (a typo's intent), or None."""
    model = _model_at(loc[:-1], root)
    if model is None:
        return None
    close = difflib.get_close_matches(str(loc[-1]), sorted(model.model_fields), n=1)
    return close[0] if close else None


def describe_error(error: Mapping, root: type[BaseModel] | None = None) -> str:
    """What was expected, from one pydantic error."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    loc = error["loc"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        if model is not None:
            allowed = sorted(model.model_fields)
            close = _closest(loc, root)
            hint = f"did you mean {close!r}? " if close else ""
            return f"unknown key ({hint}expected one of: {', '.join(allowed)})"
        return "unknown key"
    if kind == "missing":
        return "missing (a required key)"
    if kind == "union_tag_invalid":
        return (f"expected one of {ctx.get('expected_tags')}, got "
                f"{short(ctx.get('tag'))}")
    if kind == "union_tag_not_found":
        return "missing (a required key)"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        if kind == "greater_than" and bound == 0 and isinstance(value, int) \
                and not isinstance(value, bool):
            return f"expected a positive integer, got {value}"
        return f"expected a number {bounds[kind]} {bound}, got {short(value)}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {short(value)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        return message[len("Value error, "):]
    if message.startswith("Input should be "):
        message = "expected " + message[len("Input should be "):]
        if value is not None and not isinstance(value, dict):
            message += f", got {short(value)}"
        return message
    if message.startswith("String should match pattern"):
        return (f"expected letters, digits and '_.-' (starting with a letter or digit), got "
                f"{short(value)}")
    return message


def from_validation_error(error: ValidationError, source: str, prefix: Sequence = (),
                          root: type[BaseModel] | None = None) -> SpecError:
    """Every problem of ``error`` as one :class:`SpecError`, one line per problem: unknown
    keys first (a typo usually explains a missing key), then wrong values, then missing keys,
    each group in pydantic's order."""
    rank = {"extra_forbidden": 0, "missing": 2}
    errors = error.errors(include_url=False)
    # a missing key that an unknown key beside it was meant to be (a typo) is that key's
    # problem, already reported with "did you mean ...?"
    meant = {(*e["loc"][:-1], _closest(e["loc"], root)) for e in errors
             if e["type"] == "extra_forbidden"}
    errors = [e for e in errors if e["type"] != "missing" or tuple(e["loc"]) not in meant]
    problems = []
    for one in sorted(errors, key=lambda e: rank.get(e["type"], 1)):
        loc = (*prefix, *_strip_tags(one["loc"]))
        if one["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, str((one.get("ctx") or {}).get("discriminator", "kind")).strip("'\""))
        problems.append(SpecError(source, format_path(loc), describe_error(one, root)))
    return SpecError.combine(problems)
