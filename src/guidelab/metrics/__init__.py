"""Measurements of samples: class probability and Q = E[1/p(c|Y)] with tail diagnostics.

- :mod:`guidelab.metrics.classifier`: :func:`summarize_class_probability` and its record
  :class:`ClassProbabilitySummary` (Q, its tail-aware interval, E[p(c|Y)], quantiles, accuracy,
  the fraction of coupled samples whose p(c|Y) went down).
- :mod:`guidelab.metrics.tails`: the PSIS Pareto k-hat of a right tail, its sample-size
  threshold min(1 - 1/log10(n), 0.7), and the share of a sum held by its largest terms.
"""

from guidelab.metrics.classifier import (
    P_QUANTILE_LEVELS,
    ClassProbabilitySummary,
    summarize_class_probability,
)
from guidelab.metrics.tails import (
    KHAT_METHOD,
    KHAT_MIN_TERMS,
    khat_threshold,
    pareto_khat,
    top_share,
)

__all__ = [
    "ClassProbabilitySummary",
    "KHAT_METHOD",
    "KHAT_MIN_TERMS",
    "P_QUANTILE_LEVELS",
    "khat_threshold",
    "pareto_khat",
    "summarize_class_probability",
    "top_share",
]
