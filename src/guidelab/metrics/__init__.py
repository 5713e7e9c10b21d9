"""Measurements of samples: class probability and Q = E[1/p(c|Y)] with tail diagnostics.

- :mod:`guidelab.metrics.classifier`: :func:`summarize_class_probability` and its record
  :class:`ClassProbabilitySummary` (Q, its tail-aware interval, E[p(c|Y)], quantiles, accuracy,
  the fraction of coupled samples whose p(c|Y) went down).
- :mod:`guidelab.metrics.record`: :class:`ClassProbabilityRecord`, the same statistics as a
  bounded, mergeable record, so samples stream in chunks and chunks, units and workers combine
  (counts, moments in a common log scale, the largest terms, a logit-p histogram).
- :mod:`guidelab.metrics.tails`: the PSIS Pareto k-hat of a right tail (also from the largest
  terms only), its sample-size threshold min(1 - 1/log10(n), 0.7), and the share of a sum held
  by its largest terms.
"""

from guidelab.metrics.classifier import (
    P_QUANTILE_LEVELS,
    ClassProbabilitySummary,
    summarize_class_probability,
)
from guidelab.metrics.record import ClassProbabilityRecord
from guidelab.metrics.tails import (
    KHAT_METHOD,
    KHAT_MIN_TERMS,
    khat_threshold,
    pareto_khat,
    pareto_khat_of_largest,
    psis_tail_size,
    top_share,
)

__all__ = [
    "ClassProbabilityRecord",
    "ClassProbabilitySummary",
    "KHAT_METHOD",
    "KHAT_MIN_TERMS",
    "P_QUANTILE_LEVELS",
    "khat_threshold",
    "pareto_khat",
    "pareto_khat_of_largest",
    "psis_tail_size",
    "summarize_class_probability",
    "top_share",
]
