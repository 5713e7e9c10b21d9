r"""Dotted key paths into a spec (``sampler.options.eta``, ``sweep."sampler.name"[1]``) and
``--set KEY=VALUE`` overrides (TOML literals)."""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SpecError
from .keys import format_path, split_path
from .limits import MAX_SPEC_BYTES, check_depth

__all__ = ["format_path", "split_path", "get_path", "set_path", "parse_set", "apply_overrides"]


def get_path(data: Mapping, path: str | Sequence[str], default: Any = None) -> Any:
    """The value at a dotted path of a nested dict, or ``default``."""
    parts = split_path(path) if isinstance(path, str) else list(path)
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_path(data: dict, path: str | Sequence[str], value: Any) -> dict:
    """Set the value at a dotted path of a nested dict (tables created as needed); returns
    ``data``. A value that is not a table replaces whatever was there."""
    parts = split_path(path) if isinstance(path, str) else list(path)
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return data


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
        parts = split_path(key)
    except ValueError as error:
        raise SpecError(f"--set {text}", "", str(error)) from None
    label = f"--set {format_path(parts)}"
    if len(value) > MAX_SPEC_BYTES:
        raise SpecError(label, "", f"a value of {len(value):,} characters is over the limit "
                        f"of {MAX_SPEC_BYTES:,} (MAX_SPEC_BYTES in guidelab.studies.spec.limits)")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError as error:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:+/-]*", value):
            parsed = value
        else:
            message = " ".join(str(error).split())
            raise SpecError(f"--set {text}" if len(text) <= 100 else label, "",
                            f"not a TOML value ({message}); strings need quotes "
                            f"inside lists and tables") from None
    except (RecursionError, MemoryError, ValueError) as error:
        raise SpecError(label, "", f"not a TOML value ({_parse_failure(error)})") from None
    try:
        check_depth(parsed, tuple(parts))
    except SpecError as error:
        raise error.with_source(label) from None
    return format_path(parts), parsed


def _parse_failure(error: BaseException) -> str:
    """What a pathological input did to the TOML parser, in a few words."""
    if isinstance(error, RecursionError):
        return "nested too deeply to parse"
    if isinstance(error, MemoryError):
        return "too large to parse"
    return " ".join(str(error).split())[:200] or type(error).__name__


def apply_overrides(data: dict, overrides: Sequence[tuple[str, Any]]) -> dict:
    """A deep copy of ``data`` with each (dotted path, value) set."""
    data = copy.deepcopy(data)
    for path, value in overrides:
        set_path(data, path, copy.deepcopy(value))
    return data
