r"""Writing a resolved spec as TOML that reads back to the same spec, and the dotted key paths
in which two specs differ."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .paths import format_path
from .schema import Spec

__all__ = ["spec_to_toml", "spec_to_dict", "spec_diff", "drop_none"]


def drop_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: drop_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [drop_none(v) for v in data]
    return data


def spec_to_dict(spec: Spec) -> dict:
    """The spec as plain data (the resolved spec's identity), None values dropped."""
    return drop_none(spec.model_dump())


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
    data = spec_to_dict(spec) if isinstance(spec, Spec) else drop_none(dict(spec))
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
    flat_a = _flatten(spec_to_dict(a) if isinstance(a, Spec) else drop_none(dict(a)))
    flat_b = _flatten(spec_to_dict(b) if isinstance(b, Spec) else drop_none(dict(b)))
    return sorted(key for key in set(flat_a) | set(flat_b)
                  if json.dumps(flat_a.get(key)) != json.dumps(flat_b.get(key)))
