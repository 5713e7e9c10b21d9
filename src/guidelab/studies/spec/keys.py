r"""Dotted key paths of a spec (``sampler.options.eta``, ``sweep."sampler.name"[1]``): how a
pydantic location is written, and how a written path is split into its keys."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from typing import Any

__all__ = ["format_path", "split_path"]


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


def split_path(path: str) -> list[str]:
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
