r"""The documented maximums of a spec, and the checks that apply them before any work.

Validation is linear in the size of the spec: nothing is built from a number a user wrote (a
schedule of ``sampler.steps`` steps, a grid, a histogram, the units of a sweep) before that
number has been checked against the limit below, and the checks themselves walk the parsed
data once, without recursion. Every limit is a module-level constant; a spec over one is refused
with one line ``<source>: <dotted.key.path>: <value> is over the limit of <limit> (<reason>)``.

The order of the checks is the order of the work they guard: the size of the text before it
is read (:data:`MAX_SPEC_BYTES`, in :func:`~.loading.load_spec`), the nesting depth before
anything recursive touches the data (:func:`check_depth`, also before ``--set`` values are
merged in), then :func:`check_limits` on the merged data before pydantic sees it: the length of
``description``, the numbers that size a computation (``trials``, ``sampler.steps``, ...) in the
file *and* in every swept value, the length of each sweep and the number of units of the
product. The limits that need the distribution (the classes) are checked by
:func:`check_totals` once it is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import SpecError
from .keys import format_path, split_path

__all__ = ["MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_DESCRIPTION_CHARS", "MAX_TRIALS", "MAX_STEPS",
           "MAX_SWEEP_VALUES", "MAX_UNITS", "MAX_SAMPLES", "MAX_QUANTILE_BINS",
           "MAX_GRID_POINTS", "NUMBER_LIMITS", "check_depth", "check_limits", "check_totals",
           "show_number"]


MAX_SPEC_BYTES = 1_000_000
"""Bytes of a spec file (and of one ``--set`` value). Real specs are a few kilobytes; even a
family given by a few thousand points fits. Checked on the file's size before it is read, so a
huge or endless file (a device, a pipe that never ends) is refused without reading it."""

MAX_DEPTH = 32
"""Nesting depth of arrays and tables, counted from the top-level table (``sampler.options`` is
depth 2, ``distribution.covariances`` of full [K, d, d] matrices depth 4). Deeper data has no
meaning in any section, and the TOML parser, ``copy.deepcopy`` and pydantic all recurse: a
500-deep array would end in a ``RecursionError`` somewhere else."""

MAX_DESCRIPTION_CHARS = 10_000
"""Characters of ``description``: it is echoed at the top of every run, stored in
``spec.toml`` and shown in the report; a page of prose is plenty."""

MAX_TRIALS = 10**9
"""``trials``, samples per unit and strength. Row indices of the counter-based noise are int64
tensors and a unit's rows are streamed in chunks, so any count up to 2^63 would be correct;
10^9 is far beyond what a study can compute (10^9 samples of 1000 steps is days of a GPU) and
keeps every per-unit count an exact int64 and an exact float64 with room to spare."""

MAX_STEPS = 100_000
"""``sampler.steps``, ``reference.steps`` and ``sampler.options.num_steps``: a schedule of that
many steps is built while validating (the Li-Jiao condition, the sampler's coefficients), and
every step of every sample is computed at run time. 100,000 is 100 times the Li-Jiao
experiments' 1000."""

MAX_SWEEP_VALUES = 10_000
"""Values of one swept key (``w`` included). Each value is validated, and every value of ``w``
is a row of every unit; 10,000 strengths or seeds is more than any plot can show."""

MAX_UNITS = 100_000
"""Units of a study: the product of the lengths of every swept key except ``w`` (``class``
included, the classes of the distribution when it is not swept), doubled when the reference is
enabled (at most one reference unit per unit). Each unit is one Parquet file in one folder and
one task of a backend."""

MAX_SAMPLES = 2**53
"""Samples of a study, ``trials`` x strengths x units: the counts of rows pooled over units are
merged as float64 moments and totals, exact only up to 2^53."""

MAX_QUANTILE_BINS = 1_000_000
"""``metric_options.class_probability.quantile_bins``: every record of every (unit, w) holds a
histogram of that many int64 counts, stored in the unit's file (default 8000)."""

MAX_GRID_POINTS = 4097
"""``metric_options.exact_grid.points``, grid nodes per axis: a 2-D grid and its refinement
hold about (2 points)^2 float64 nodes per propagated density (4097: 6.7e7 nodes, 0.5 GB)."""

NUMBER_LIMITS: dict[str, tuple[int, str]] = {
    "trials": (MAX_TRIALS, "MAX_TRIALS, samples per unit and strength"),
    "sampler.steps": (MAX_STEPS, "MAX_STEPS, sampler steps"),
    "sampler.options.num_steps": (MAX_STEPS, "MAX_STEPS, sampler steps"),
    "reference.steps": (MAX_STEPS, "MAX_STEPS, steps of the exact reverse kernel"),
    "metric_options.class_probability.quantile_bins": (
        MAX_QUANTILE_BINS, "MAX_QUANTILE_BINS, histogram bins of every record"),
    "metric_options.exact_grid.points": (MAX_GRID_POINTS, "MAX_GRID_POINTS, grid nodes per axis"),
}
"""Dotted key path -> (largest value, the constant and what it counts) of the integers that
size a computation; checked in the file and in every swept value that sets them."""

_NUMBER_PARTS = {path: tuple(split_path(path)) for path in NUMBER_LIMITS}


def show_number(value: int) -> str:
    """An integer for a one-line message: its digits, or its size when it has too many."""
    if abs(value).bit_length() <= 64:
        return str(value)
    return f"a {abs(value).bit_length()}-bit number"


def _over(path: str, shown: str, limit: int, reason: str) -> SpecError:
    """``<shown> is over the limit of <limit> <what> (<CONSTANT> in ...limits)``; ``reason`` is
    ``"<CONSTANT>, <what>"``."""
    constant, _, what = reason.partition(", ")
    return SpecError("", path, f"{shown} is over the limit of {limit:,} {what} ({constant} in "
                               f"guidelab.studies.spec.limits)")


def check_depth(data: Any, prefix: tuple = (), limit: int = MAX_DEPTH) -> None:
    """Refuse arrays and tables nested deeper than ``limit`` levels (``prefix`` is where
    ``data`` sits: a ``--set`` value is checked at its key's depth). Iterative, so that any
    depth is refused without recursion.

    Raises:
        SpecError: naming the path of the first container below the limit (no source).
    """
    stack: list[tuple[Any, tuple]] = [(data, tuple(prefix))]
    while stack:
        node, path = stack.pop()
        if isinstance(node, Mapping):
            children = ((key, value) for key, value in node.items())
        elif isinstance(node, list):
            children = enumerate(node)
        else:
            continue
        if len(path) > limit:
            raise SpecError("", format_path(path[:limit + 1]), f"arrays and tables nested "
                            f"deeper than the limit of {limit} levels (MAX_DEPTH in "
                            f"guidelab.studies.spec.limits)")
        for key, value in children:
            if isinstance(value, (Mapping, list)):
                stack.append((value, (*path, key)))


def _check_number(value: Any, path: str, where: str) -> None:
    limit, reason = NUMBER_LIMITS[path]
    if isinstance(value, int) and not isinstance(value, bool) and value > limit:
        raise _over(where, show_number(value), limit, reason)


def _check_value_at(parts: tuple, value: Any, where: str) -> None:
    """The number limits that apply to ``value`` set at key ``parts`` (a swept value)."""
    for path, limited in _NUMBER_PARTS.items():
        if limited[:len(parts)] != parts:
            continue
        node = value
        for part in limited[len(parts):]:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            _check_number(node, path, where)


def check_limits(data: Mapping) -> None:
    """Every limit that the parsed (and overridden) spec data shows before validation.

    Linear in the size of ``data`` (one pass over each sweep); no value is converted, built or
    copied. Wrong types are left to the schema.

    Raises:
        SpecError: the first limit exceeded, naming its dotted key path (no source).
    """
    check_depth(data)
    description = data.get("description")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION_CHARS:
        raise _over("description", f"{len(description):,} characters", MAX_DESCRIPTION_CHARS,
                    "MAX_DESCRIPTION_CHARS, characters")
    for path, parts in _NUMBER_PARTS.items():
        node: Any = data
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            _check_number(node, path, path)
    sweep = data.get("sweep")
    if not isinstance(sweep, Mapping):
        return
    units = 1
    for key, values in sweep.items():
        if not isinstance(values, list):
            continue
        where = format_path(("sweep", key))
        if len(values) > MAX_SWEEP_VALUES:
            raise _over(where, f"{len(values):,} values", MAX_SWEEP_VALUES,
                        "MAX_SWEEP_VALUES, values of one swept key")
        if key != "w":
            units *= max(1, len(values))
            if units > MAX_UNITS:
                raise _over("sweep", f"the product of the sweep's lengths ({units:,} so far)",
                            MAX_UNITS, "MAX_UNITS, units of a study")
    for key, values in sweep.items():
        if key == "w" or not isinstance(values, list):
            continue
        try:
            parts = tuple(split_path(key))
        except ValueError:
            continue  # reported by the validation of the sweep's keys
        if not any(limited[:len(parts)] == parts for limited in _NUMBER_PARTS.values()):
            continue
        for i, value in enumerate(values):
            _check_value_at(parts, value, f"{format_path(('sweep', key))}[{i}]")


def check_totals(trials: int, strengths: int, units: int) -> None:
    """The limits that need the resolved sweep: the units (classes and references included)
    and the samples of the study.

    Raises:
        SpecError: naming ``sweep`` or ``trials`` (no source).
    """
    if units > MAX_UNITS:
        raise _over("sweep", f"{units:,} units (classes and reference units included)",
                    MAX_UNITS, "MAX_UNITS, units of a study")
    samples = trials * strengths * units
    if samples > MAX_SAMPLES:
        raise _over("trials", f"{trials:,} trials x {strengths:,} strengths x {units:,} units "
                    f"= {float(samples):.3g} samples", MAX_SAMPLES,
                    "MAX_SAMPLES, samples of a study")
