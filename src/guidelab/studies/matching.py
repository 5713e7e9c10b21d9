r"""Comparing guidance rules at a matched effect instead of a matched strength.

Rules do not share a scale: w = 2 of APG is not w = 2 of CFG. A fair comparison fixes what the
rules achieve, e.g. the pooled Q(w) = E[1/p(c|Y)] or E[p(c|Y)], and compares everything else
(the fraction of samples whose p(c|Y) went down, the tail, the reward, the exact entropy) at the
strength each rule needs for it. :func:`matched_strengths` reads a coarse sweep (any study whose
sweep has the rules as a swept key and several w) and, for every setting of that key, finds the
w at which the target column reaches the target value by interpolating between the two swept
strengths that bracket it (linear in w and in log of the column, which is how Q behaves between
neighbouring strengths); :func:`run_matched` then confirms: it runs one study per setting with
``sweep.w = [0, w*]`` on the same noise, into ``DIR/<setting>``, and returns the confirmed
rows, so that the interpolation error is measured, not assumed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .run import run_spec
from .spec import Spec, spec_to_dict, validate_spec

__all__ = ["MatchedStrength", "matched_strengths", "run_matched"]


@dataclass(frozen=True)
class MatchedStrength:
    """The strength at which one setting reaches the target.

    Attributes:
        setting: the swept value (as stored: JSON text for a table).
        w: the interpolated strength, or None when the sweep does not bracket the target.
        bracket: the two swept strengths around it (None when not bracketed).
        reached: the column's values at those strengths.
    """

    setting: Any
    w: float | None
    bracket: tuple[float, float] | None
    reached: tuple[float, float] | None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def matched_strengths(rows: Sequence[dict], by: str, *, column: str = "q_mean",
                      target: float) -> list[MatchedStrength]:
    """For every value of the swept key ``by``, the w at which the pooled rows
    (``class = "all"``) reach ``target`` in ``column``.

    Args:
        rows: a study's pooled rows (:attr:`RunResult.pooled`), with ``w`` and ``by`` columns.
        by: the swept key that separates the settings, e.g. ``"guidance"`` or
            ``"guidance.rule"``.
        column: the column to match (``q_mean``, ``p_mean``, ``g_mean``, ...).
        target: the value to reach.

    The first pair of neighbouring swept strengths whose values bracket ``target`` is used;
    between them the column is interpolated linearly in w on the log scale (log Q is close to
    linear between neighbouring strengths; for a column that is not positive, linearly).
    """
    if not math.isfinite(target):
        raise ValueError(f"target: expected a finite number, got {target!r}")
    groups: dict[Any, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("class") != "all" or by not in row:
            continue
        value = row.get(column)
        if _finite(value) and _finite(row.get("w")):
            groups.setdefault(row[by], []).append((float(row["w"]), float(value)))
    if not groups:
        raise ValueError(f"by: no pooled rows with both {by!r} and {column!r}; the study must "
                         f"sweep {by!r} over several classes")
    out = []
    for setting, points in groups.items():
        points.sort()
        found = MatchedStrength(setting, None, None, None)
        for (w0, v0), (w1, v1) in zip(points[:-1], points[1:], strict=True):
            if (v0 - target) * (v1 - target) > 0:
                continue
            if v0 == v1:
                w = w0
            elif v0 > 0 and v1 > 0 and target > 0:
                fraction = (math.log(target) - math.log(v0)) / (math.log(v1) - math.log(v0))
                w = w0 + fraction * (w1 - w0)
            else:
                w = w0 + (target - v0) / (v1 - v0) * (w1 - w0)
            found = MatchedStrength(setting, w, (w0, w1), (v0, v1))
            break
        out.append(found)
    return out


def _folder_name(setting: Any, index: int) -> str:
    try:
        value = json.loads(setting) if isinstance(setting, str) else setting
    except json.JSONDecodeError:
        value = setting
    label = value.get("rule", "") if isinstance(value, dict) else str(value)
    return f"{index:02d}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40] or "setting")


def run_matched(spec: Spec, matches: Sequence[MatchedStrength], by: str, out: str | Path,
                **run_options) -> dict[Any, Any]:
    """Confirm matched strengths: for every bracketed setting, run ``spec`` with ``by`` fixed
    to it and ``sweep.w = [0, w*]`` (the same seed, so the same noise) into
    ``out/<index>-<label>``; returns setting -> :class:`~guidelab.studies.run.RunResult`."""
    results = {}
    data = spec_to_dict(spec)
    for index, match in enumerate(matches):
        if match.w is None:
            continue
        value = json.loads(match.setting) if isinstance(match.setting, str) and \
            match.setting[:1] in "[{" else match.setting
        one = json.loads(json.dumps(data))
        one["sweep"] = {key: values for key, values in one["sweep"].items() if key != by}
        one["sweep"]["w"] = [0.0, float(match.w)]
        node = one
        parts = by.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        confirmed = validate_spec(one, f"{spec.name} (matched {by})")
        results[match.setting] = run_spec(confirmed, Path(out) / _folder_name(match.setting,
                                                                             index),
                                          **run_options)
    return results
