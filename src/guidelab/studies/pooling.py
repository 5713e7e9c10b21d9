r"""Pooling over classes: the rows of a study's classes taken together, ``class = "all"``.

Li & Jiao report Q over all the samples of all classes together (20 trials x 1000 classes on
ImageNet). Because every metric's record merges exactly, a pooled row is a merge of the stored
per-class records, never a recomputation: for each group of rows that differ only in their
class (the same swept values, sampler and w), every metric that can pool
(:attr:`~guidelab.studies.measures.Metric.pool`) merges its records and summarises the result.
For ``class_probability`` each row keeps p(c_i|Y_i) of its own class, so the pooled Q is
E[1/p(c_i|Y_i)] over all rows, and the pooled reference is the mean of 1/p(c) over the classes
(the identity's value for equal trials per class).
"""

from __future__ import annotations

import json
from typing import Any

from .measures import METRICS, UnitContext
from .spec import CLASS_KEY, Spec

__all__ = ["POOLED", "pooled_rows"]

POOLED = "all"
"""The ``class`` value of a pooled row."""


def _group_key(row: dict, swept: list[str]) -> tuple:
    return tuple(json.dumps(row.get(key), sort_keys=True) for key in swept) + (
        row.get("sampler"), row.get("w"))


def pooled_rows(spec: Spec, rows: list[dict]) -> list[dict]:
    """One pooled row per group of rows that differ only in class (groups with at least two
    classes), in the order the groups first appear; no record columns.

    Args:
        spec: the resolved spec of the study.
        rows: the study's rows as stored (with their ``record_<metric>`` columns).
    """
    swept = [key for key in spec.swept_keys if key != CLASS_KEY]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_group_key(row, swept), []).append(row)
    out = []
    for members in groups.values():
        if len({row["class"] for row in members}) < 2:
            continue
        first = members[0]
        pooled: dict[str, Any] = {"class": POOLED, "w": first.get("w"),
                                  "sampler": first.get("sampler"), "steps": first.get("steps")}
        inv = [row.get("inv_prior") for row in members]
        inv_prior = sum(inv) / len(inv) if all(v is not None for v in inv) else None
        for name in spec.metrics:
            metric = METRICS[name]
            column = f"record_{name}"
            if metric.pool is None or any(column not in row for row in members):
                continue
            record = metric.pool([metric.load(json.loads(row[column])) for row in members])
            options = metric.parse_options(spec.metric_options.get(name))
            context = UnitContext(spec, None, -1, first.get("sampler") == "exact_reverse",
                                  options, "pooled", None, inv_prior)
            pooled.update({key: value for key, value in metric.summarize(record, context).items()
                           if key not in pooled})
        for key in swept + ["seed", "schedule", "rule", "strength_schedule", "trials", "dtype",
                            "device", "guidelab_version"]:
            if key in first:
                pooled.setdefault(key, first[key])
        pooled["pooled_classes"] = len(members)
        out.append(pooled)
    return out
