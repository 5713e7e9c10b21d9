r"""Units: the pieces a study's sweep splits into, each a pure function of (spec, key).

A *unit* is one point of the product of every swept key except ``w`` (``class`` included, and
``seed``, ``sampler.name``, ... when swept); ``w`` is the coupled axis *inside* a unit, so that
row r of every strength is driven by the same noise. A unit's *key* is its tuple of
(dotted path, value) pairs; its *id* is a readable prefix and a stable hash of the key,
``c0-1f3a9c2b7d``, which names its result file.

When the spec enables the reference (the exact reverse kernel at w = 0), every point of the sweep
over the keys a reference depends on (every swept key except ``sampler.*`` and ``guidance.*``)
adds a reference unit, keyed with ``("reference", True)``.

Units come in a fixed order (references first, then the product in the spec's key order with
the class innermost); results never depend on that order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

from .spec import CLASS_KEY, W_KEY, Spec, spec_to_dict, unit_spec_data

__all__ = ["Unit", "REFERENCE_KEY", "expand_units", "unit_settings", "unit_id", "make_unit"]

REFERENCE_KEY = "reference"
"""Key marking a reference unit (the exact reverse kernel at w = 0)."""

_NOT_IN_REFERENCE = ("sampler.", "guidance.")


@dataclass(frozen=True)
class Unit:
    """One unit of a study.

    Attributes:
        key: ((dotted path, value), ...) sorted by path; ``class`` always present,
            ``reference`` for a reference unit.
        id: readable prefix and a 10-hex-digit hash of the key (a file name).
    """

    key: tuple[tuple[str, Any], ...]
    id: str

    @property
    def reference(self) -> bool:
        return dict(self.key).get(REFERENCE_KEY, False) is True

    @property
    def c(self) -> int:
        return int(dict(self.key)[CLASS_KEY])

    @property
    def assignments(self) -> list[tuple[str, Any]]:
        """The swept (dotted path, value) pairs, the class included, without the marker."""
        return [(k, v) for k, v in self.key if k != REFERENCE_KEY]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.key)


_TABLE = "__table__"
"""First item of a frozen table (a swept value like ``model = [{kind = "exact"}, ...]``)."""


def _freeze(value: Any) -> Any:
    """A hashable form of a swept value: lists as tuples, tables as (_TABLE, sorted pairs)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return (_TABLE, *sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    """The inverse of :func:`_freeze`."""
    if isinstance(value, tuple):
        if value and value[0] == _TABLE:
            return {k: _thaw(v) for k, v in value[1:]}
        return [_thaw(v) for v in value]
    return value


def _label(path: str, value: Any) -> str:
    if path == CLASS_KEY:
        return f"c{value}"
    if path == REFERENCE_KEY:
        return "ref"
    last = path.replace('"', "").split(".")[-1]
    if isinstance(value, tuple) and value and value[0] == _TABLE:
        kind = dict(value[1:]).get("kind") or dict(value[1:]).get("source")
        return f"{last}-{kind}" if isinstance(kind, str) else last
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{last}{value:g}" if isinstance(value, float) else f"{last}{value}"
    return last


def unit_id(key: tuple[tuple[str, Any], ...]) -> str:
    """``<readable prefix>-<10 hex digits of sha256(key)>``; a pure function of the key."""
    canonical = json.dumps([[k, _thaw(v)] for k, v in sorted(key)], sort_keys=True,
                           separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    order = sorted(key, key=lambda kv: (kv[0] != REFERENCE_KEY, kv[0] != CLASS_KEY, kv[0]))
    prefix = "-".join(_label(k, v) for k, v in order)
    prefix = re.sub(r"[^A-Za-z0-9._=-]+", "_", prefix)[:48].strip("-_.")
    return f"{prefix}-{digest}" if prefix else digest


def make_unit(pairs) -> Unit:
    """A :class:`Unit` from (dotted path, value) pairs (a dict or an iterable)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    key = tuple(sorted((str(k), _freeze(v)) for k, v in items))
    if CLASS_KEY not in dict(key):
        raise ValueError(f"key: a unit key needs a {CLASS_KEY!r} entry, got {dict(key)}")
    return Unit(key, unit_id(key))


def expand_units(spec: Spec) -> list[Unit]:
    """Every unit of a resolved spec, in the fixed order of the module docstring."""
    swept = [key for key in spec.sweep if key not in (W_KEY, CLASS_KEY)]
    values = [spec.sweep[key] for key in swept]
    units: list[Unit] = []
    if spec.reference.enabled:
        ref_keys = [k for k in swept if not k.startswith(_NOT_IN_REFERENCE)]
        ref_values = [spec.sweep[k] for k in ref_keys]
        for combo in itertools.product(*ref_values):
            for c in spec.classes:
                units.append(make_unit([*zip(ref_keys, combo, strict=True), (CLASS_KEY, c),
                                        (REFERENCE_KEY, True)]))
    for combo in itertools.product(*values):
        for c in spec.classes:
            units.append(make_unit([*zip(swept, combo, strict=True), (CLASS_KEY, c)]))
    return units


def unit_settings(spec: Spec, unit: Unit) -> Spec:
    """The unit's own settings: the resolved spec with the unit's swept values set and the
    sweep reduced to ``w`` (``[0]`` for a reference unit) and the unit's class."""
    data = unit_spec_data(spec_to_dict(spec), [(k, _thaw(v)) for k, v in unit.assignments])
    if unit.reference:
        data["sweep"][W_KEY] = [0.0]
    return Spec.model_validate(data)
