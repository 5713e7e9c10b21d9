r"""Strict JSON: every non-finite float becomes ``null``, and the output is standard JSON.

Python's :func:`json.dumps` writes NaN and infinities as the bare words ``NaN``, ``Infinity``
and ``-Infinity``, which JSON does not have: strict parsers (browsers, ``jq``, most other
languages) reject the whole document. Here every float x, also inside numpy scalars and
arrays, lists, tuples and dict values, is written as

    x      if x is finite,
    null   if x is NaN, +inf or -inf,

and the encoder runs with ``allow_nan=False``, so nothing non-standard can slip through. numpy
integers and booleans become Python ints and bools, numpy arrays nested lists. A reader that
needs to tell NaN from an infinity must store that distinction itself (e.g. a count of
non-finite rows next to the value).
"""

from __future__ import annotations

import json
import math
from typing import IO, Any

import numpy as np

__all__ = ["finite_or_none", "dumps", "dump"]


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None, and numpy values made built-in.

    Recurses into dicts (values; keys are kept), lists and tuples (both become lists, as JSON
    writes them), numpy arrays (of any shape, as nested lists) and numpy scalars; other objects
    are returned unchanged, for the encoder (or its ``default``) to handle.

    Example:
        >>> finite_or_none({"a": float("nan"), "b": (1.0, np.float32("inf")), "c": np.arange(2)})
        {'a': None, 'b': [1.0, None], 'c': [0, 1]}
    """
    if isinstance(obj, float):  # also np.float64, a subclass of float
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(value) for value in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return finite_or_none(obj.tolist())  # built-in floats, ints, bools, nested lists
    return obj


def _finite_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.pop("allow_nan", False):
        raise ValueError("allow_nan: strict JSON never writes NaN or infinities; leave it out")
    default = kwargs.get("default")
    if default is not None:
        kwargs["default"] = lambda value: finite_or_none(default(value))
    return kwargs | {"allow_nan": False}


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)``: strict JSON text.

    Args:
        obj: any JSON-able structure; non-finite floats (built-in or numpy) become null.
        **kwargs: passed to :func:`json.dumps` (``sort_keys``, ``indent``, ``default``, ...);
            what ``default`` returns is cleaned the same way. ``allow_nan=True`` is refused.

    Example:
        >>> dumps({"q": float("inf"), "k": [0.5, float("nan")]}, sort_keys=True)
        '{"k": [0.5, null], "q": null}'
    """
    return json.dumps(finite_or_none(obj), **_finite_kwargs(kwargs))


def dump(obj: Any, fp: IO[str], **kwargs: Any) -> None:
    """Write :func:`dumps` (``obj``, ``**kwargs``) to the text file ``fp``."""
    json.dump(finite_or_none(obj), fp, **_finite_kwargs(kwargs))
