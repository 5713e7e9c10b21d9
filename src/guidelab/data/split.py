r"""A stratified split of labelled data into named, disjoint parts with given fractions.

Given fractions f_p > 0 (summing to 1 within 1e-9; they are then normalised exactly, as
binary fractions, to s_p = f_p / sum f, :func:`~guidelab.data.core.exact_weights`) and a seed:

1. The parts are taken in order of name (so the split depends on the mapping ``parts``, not
   on the order of its keys).
2. For each class c (in order 0..C-1) with n_c rows: its row indices, ascending, are permuted
   by ``numpy.random.Generator(PCG64(SeedSequence([seed, c])))`` (``.permutation``), so class
   c's permutation depends only on (seed, c, n_c).
3. Part p gets n_pc rows of class c by largest-remainder rounding of n_c s_p
   (:func:`~guidelab.data.core.largest_remainder`): n_pc is floor or ceil of n_c s_p, so
   |n_pc - n_c s_p| < 1, and sum_p n_pc = n_c. Equal remainders go first to the part whose
   running total over the classes before c is furthest below its share of those rows, then to
   the earlier name, which keeps the parts' sizes close to N s_p as well.
4. The permuted rows are cut into consecutive blocks of n_pc rows, in the parts' order.
5. A part's rows keep their order in the data (its indices are sorted).

The parts are disjoint and cover every row exactly once. A part that would get no row is an
error. Part p is named ``<data name>/<p>`` and has its own fingerprint (of its content).

**The split's fingerprint** is the SHA-256 hex of the UTF-8 JSON text (keys sorted, no spaces)
``{"data": <data fingerprint>, "format": "guidelab.data.split/1", "parts": [[name,
repr(f)], ...] (in order of name), "seed": seed}``: a function of (data content, part names,
fractions as given, seed), and so of exactly what determines the split.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from numbers import Real

import numpy as np

from .core import LabelledData, exact_weights, largest_remainder

__all__ = ["Split", "split", "split_fingerprint"]

SPLIT_FORMAT = "guidelab.data.split/1"


class Split(dict):
    """The parts of a split: a ``dict`` part name -> :class:`LabelledData` (in the order given).

    Attributes:
        fingerprint: the split's fingerprint (module docstring).
        data_fingerprint: the fingerprint of the data that was split.
        fractions: ``{part: fraction}`` as given.
        seed: the seed.
        indices: ``{part: [n_p] int64 array}``, the sorted rows of the data in each part.
    """

    def __init__(self, parts: dict[str, LabelledData], *, fingerprint: str,
                 data_fingerprint: str, fractions: dict[str, float], seed: int,
                 indices: dict[str, np.ndarray]):
        super().__init__(parts)
        self.fingerprint = fingerprint
        self.data_fingerprint = data_fingerprint
        self.fractions = dict(fractions)
        self.seed = seed
        self.indices = indices

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name!r}: {len(part)}" for name, part in self.items())
        return f"Split({{{sizes}}}, seed={self.seed}, fingerprint={self.fingerprint[:12]}...)"


def _check_parts(parts) -> dict[str, float]:
    if not isinstance(parts, Mapping) or not parts:
        raise ValueError(f"parts: expected a non-empty dict of part name -> fraction, got "
                         f"{parts!r}")
    checked = {}
    for key, value in parts.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"parts: expected non-empty string names, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, Real) \
                or not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"parts: expected a positive fraction for part {key!r}, got "
                             f"{value!r}")
        checked[key] = float(value)
    total = math.fsum(checked.values())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"parts: expected fractions summing to 1 (within 1e-9), got "
                         f"{total!r} from {checked}")
    return checked


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def _check_data(data) -> LabelledData:
    if not isinstance(data, LabelledData):
        raise ValueError(f"data: expected a LabelledData, got {type(data).__name__}")
    return data


def split_fingerprint(data: LabelledData, parts: Mapping[str, float], seed: int) -> str:
    """The fingerprint of ``split(data, parts, seed)`` (module docstring), without splitting."""
    data = _check_data(data)
    fractions = _check_parts(parts)
    seed = _check_seed(seed)
    text = json.dumps({"data": data.fingerprint, "format": SPLIT_FORMAT,
                       "parts": [[name, repr(fractions[name])] for name in sorted(fractions)],
                       "seed": seed}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split(data: LabelledData, parts: Mapping[str, float], seed: int = 0) -> Split:
    """Stratified split of ``data`` into disjoint named parts (module docstring).

    Args:
        data: the data set, N rows.
        parts: ``{name: fraction}``, fractions > 0 summing to 1 (within 1e-9), e.g.
            ``{"train": 0.5, "judge": 0.25, "test": 0.25}``.
        seed: non-negative integer.

    Returns:
        A :class:`Split`: ``{name: LabelledData}`` (``[n_p, *shape]`` each, sum n_p = N) with
        the split's fingerprint and each part's row indices.
    """
    data = _check_data(data)
    fractions = _check_parts(parts)
    seed = _check_seed(seed)
    names = sorted(fractions)
    weights = exact_weights([fractions[name] for name in names])  # s_p = w_p / W exactly
    total_weight = sum(weights)
    labels = data.labels.cpu().numpy()  # [N]
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    taken = [0] * len(names)
    seen = 0
    for c in range(data.num_classes):
        rows = np.flatnonzero(labels == c)  # [n_c] ascending
        if rows.size == 0:
            continue
        generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, c])))
        rows = rows[generator.permutation(rows.size)]
        # W (s_p seen - taken_p): how far part p's running total is below its share
        deficit = [w * seen - taken[k] * total_weight for k, w in enumerate(weights)]
        counts = largest_remainder(int(rows.size), weights, deficit)
        start = 0
        for k, name in enumerate(names):
            blocks[name].append(rows[start:start + counts[k]])
            start += counts[k]
            taken[k] += counts[k]
        seen += int(rows.size)
    indices = {}
    for name in names:
        index = np.sort(np.concatenate(blocks[name])) if blocks[name] else np.zeros(0, np.int64)
        if index.size == 0:
            raise ValueError(f"parts: part {name!r} would get no rows of the {len(data)} rows of "
                             f"{data.name!r}; use fewer parts or larger fractions")
        indices[name] = index.astype(np.int64)
    result = {name: data.subset(indices[name], name=f"{data.name}/{name}") for name in fractions}
    return Split(result, fingerprint=split_fingerprint(data, fractions, seed),
                 data_fingerprint=data.fingerprint, fractions=fractions, seed=seed,
                 indices={name: indices[name] for name in fractions})
