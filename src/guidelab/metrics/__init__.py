"""Measurements of samples: class probability and Q = E[1/p(c|Y)] with tail diagnostics.

- :mod:`guidelab.metrics.classifier`: :func:`summarize_class_probability` and its record
  :class:`ClassProbabilitySummary` (Q, its tail-aware interval, E[p(c|Y)], quantiles, accuracy,
  the fraction of coupled samples whose p(c|Y) went down).
- :mod:`guidelab.metrics.record`: :class:`ClassProbabilityRecord`, the same statistics as a
  bounded, mergeable record, so samples stream in chunks and chunks, units and workers combine
  (counts, moments in a common log scale, the largest terms, a logit-p histogram).
- :mod:`guidelab.metrics.dominance`: :class:`DominanceRecord`, a mergeable test that guided
  p(c|Y) stochastically dominates the coupled unguided one (DKW bands, a sign test), which needs
  no moment of 1/p.
- :mod:`guidelab.metrics.reward`: :class:`WeightRecord`, the mergeable record of E[g(Y)] for a
  positive weight g (what reward guidance lowers; Q is g = 1/p(c|Y)) with the same tail-aware
  interval, and of E[r] for the reward r = 1/g.
- :mod:`guidelab.metrics.calibration`: reliability tables and expected calibration errors of a
  judge p(c|y) on held-out labelled data (:func:`calibration_summary`).
- :mod:`guidelab.metrics.support`: :class:`SupportRecord`, the mergeable fraction of samples
  outside a class's support (a union of boxes, :func:`support_membership`) with its
  Clopper–Pearson interval.
- :mod:`guidelab.metrics.tails`: the PSIS Pareto k-hat of a right tail (also from the largest
  terms only), its sample-size threshold min(1 - 1/log10(n), 0.7), and the share of a sum held
  by its largest terms.
"""

from guidelab.metrics.calibration import (
    calibration_summary,
    expected_calibration_error,
    reliability_bins,
)
from guidelab.metrics.classifier import P_QUANTILE_LEVELS, ClassProbabilitySummary
from guidelab.metrics.dominance import DOMINANCE_VERDICTS, DominanceRecord, dkw_epsilon
from guidelab.metrics.record import ClassProbabilityRecord, summarize_class_probability
from guidelab.metrics.reward import WEIGHT_SUMMARY_COLUMNS, WeightRecord
from guidelab.metrics.support import SupportRecord, clopper_pearson, support_membership
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
    "DOMINANCE_VERDICTS",
    "DominanceRecord",
    "KHAT_METHOD",
    "KHAT_MIN_TERMS",
    "P_QUANTILE_LEVELS",
    "SupportRecord",
    "WEIGHT_SUMMARY_COLUMNS",
    "WeightRecord",
    "calibration_summary",
    "clopper_pearson",
    "dkw_epsilon",
    "expected_calibration_error",
    "khat_threshold",
    "pareto_khat",
    "pareto_khat_of_largest",
    "psis_tail_size",
    "reliability_bins",
    "summarize_class_probability",
    "support_membership",
    "top_share",
]
