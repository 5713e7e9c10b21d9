r"""The report's glossary: every column and diagnostic the page shows, with its units.

Each entry is a :class:`Term`: its name on the page, its definition (with units: most of the
page's numbers are dimensionless probabilities or ratios; entropies and KL divergences are in
nats, natural logarithms), and the result columns whose presence in the study's rows makes it
relevant (an entry without columns is always shown). :func:`glossary_html` renders the entries
relevant to a set of columns as a definition list; its text is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Term", "TERMS", "glossary_terms", "glossary_html"]


@dataclass(frozen=True)
class Term:
    """A glossary entry: ``name``, ``definition`` and the ``columns`` that call for it."""

    name: str
    definition: str
    columns: tuple[str, ...] = ()


TERMS: tuple[Term, ...] = (
    Term("w", "Guidance strength (dimensionless). w = 0 is the unguided sampler; the CFG "
              "scale is 1 + w. Every w of a class shares its noise: row i at w and row i at "
              "w = 0 start from the same draw (coupled rows)."),
    Term("class \u201call\u201d (pooled)",
         "The rows of every class of a setting taken together (the merge of their stored "
         "records, never a recomputation): pooled Q is the mean of 1/p(c_i|Y_i) over all "
         "samples, each judged for its own class; its reference is the mean of 1/p(c) over "
         "the classes (equal trials per class).", ("q_mean", "outside")),
    Term("CFG", "Classifier-free guidance: the guided score s(x|c) + w (s(x|c) \u2212 s(x)), "
                "from one conditional network."),
    Term("classifier (guidance)",
         "Classifier guidance: s(x|c) + w \u2207 log p_t(c|x), with a noise-conditional "
         "(\u201cnoisy\u201d) classifier p_t(c|x) trained on noised data.", ("guidance.rule",)),
    Term("n", "Samples measured (finite ones; samples lost to non-finite values are counted "
              "in \u201cnon-finite\u201d and left out of every average).", ("n",)),
    Term("Q", "Q(w) = E[1/p(c|Y)], the mean over the samples Y of the sampler guided "
              "towards class c of the reciprocal of the judge's class probability "
              "(dimensionless, \u2265 1). Exact unguided draws give Q = 1/p(c) (the dashed "
              "line); Li & Jiao prove guidance of strength w > 0 lowers it.", ("q_mean",)),
    Term("interval", "The interval for Q at the stated level (95 % unless said): mean "
                     "\u00b1 z se when the tail diagnosis allows it, else [lower, \u221e): "
                     "\u201clower bound only\u201d, the mean is not reliable (heavy tail). "
                     "Drawn as a bar, or as a tick with an upward arrow for a lower bound.",
         ("q_low", "q_high")),
    Term("interval method", "Which rule gave the interval: \u201cnormal\u201d (k-hat < 0.5, "
                            "the central limit theorem applies), \u201cnormal, slow "
                            "convergence\u201d (0.5 \u2264 k-hat \u2264 threshold: the mean "
                            "exists, its variance may not), \u201clower bound only\u201d "
                            "(k-hat above the threshold or not computable, or the mean "
                            "overflows).", ("interval_method",)),
    Term("se(Q)", "Standard error of the Monte Carlo mean Q (same units as Q); unreliable "
                  "when the tail is heavy.", ("q_se",)),
    Term("k-hat", "Pareto k-hat (PSIS, Vehtari et al. 2024; Zhang-Stephens fit) of the largest "
                  "terms 1/p(c|Y): the tail index of their law (dimensionless). Below 0.5 a "
                  "finite variance is plausible; above the threshold the mean is not "
                  "reliable. Blank when it cannot be computed (n < 25).", ("pareto_khat",)),
    Term("k-hat threshold", "min(1 \u2212 1/log10(n), 0.7) (Vehtari et al.): k-hat above it "
                            "makes the interval a lower bound only.", ("khat_threshold",)),
    Term("top share", "Share of the sum of the terms 1/p(c|Y) held by its largest 0.1 % "
                      "(at least one term); a large share is a heavy tail (fraction in [0, 1]).",
         ("q_top_share",)),
    Term("reliable", "Whether the tail diagnosis found the interval for Q reliable (k-hat "
                     "\u2264 threshold, top share small, mean finite).", ("q_reliable",)),
    Term("E[p]", "Mean of the judge's probability p(c|Y) of the intended class (in [0, 1]); "
                 "se(E[p]) its standard error.", ("p_mean",)),
    Term("p quantiles", "Quantiles of p(c|Y) at 1, 10, 50, 90 and 99 % (columns p_q01 .. "
                        "p_q99; probabilities in [0, 1]).", ("p_q01", "p_q50")),
    Term("accuracy", "Fraction of samples the judge assigns to the intended class "
                     "(argmax p(\u00b7|Y) = c).", ("accuracy",)),
    Term("p down", "Fraction of coupled rows whose p(c|Y) went down against w = 0 (the same "
                   "noise without guidance): guidance is not uniformly good even when Q "
                   "falls. Blank at w = 0, where it compares a row with itself.",
         ("frac_p_decreased",)),
    Term("1/p(c)", "The reciprocal of the class's prior probability: the value of Q for exact "
                   "unguided draws (dashed lines).", ("inv_prior",)),
    Term("non-finite", "Samples the sampler lost to NaN or infinity (left out of every "
                       "average).", ("n_nonfinite",)),
    Term("grid Q (grid_q)", "Q of the sampler's exact output law, propagated on a grid with "
                            "exact scores: no Monte Carlo error (dimensionless). In the "
                            "figure: dotted diamonds labelled \u201cexact grid\u201d.",
         ("grid_q",)),
    Term("grid_q_err", "Quadrature error estimate of grid Q: its change when the grid spacing "
                       "is halved (same units as Q; the error bar of the exact grid points).",
         ("grid_q_err",)),
    Term("grid E[p]", "E[p(c|Y)] under the grid-propagated output law.", ("grid_p_mean",)),
    Term("entropy (nats)", "Differential entropy of the sampler's output density on the grid, "
                           "in nats; entropy_err its change on halving the spacing.",
         ("entropy",)),
    Term("KL (nats)", "KL(p_Y \u2016 p(\u00b7|c)): divergence of the sampler's output law from "
                      "the class-conditional target, in nats; kl_err its change on halving "
                      "the spacing.", ("kl",)),
    Term("grid mass lost", "Probability mass that left the grid (should be ~0).",
         ("grid_mass_lost",)),
    Term("dominance", "Verdict of the stochastic-dominance comparison of p(c|Y^w) with "
                      "p(c|Y^0) on coupled rows, jointly at the stated level (95 %): "
                      "\u201cholds\u201d (no violation and P_w certified larger than P_0 on "
                      "a range of p, from the baseline quantile q* up), \u201cfails\u201d "
                      "(P_w is certified smaller somewhere), \u201cundecided\u201d (neither). "
                      "It needs no moment, so it stands under heavy tails where Q does not. "
                      "Blank at w = 0.", ("dom_verdict",)),
    Term("q*", "dom_quantile: the baseline quantile level (in [0, 1]) from which dominance is "
               "certified; below q* the sample cannot resolve a difference smaller than "
               "eps (dom_eps, the half-width of the DKW bands, in probability).",
         ("dom_quantile",)),
    Term("violation bound", "dom_violation_high: an upper confidence bound on "
                            "sup_t (F_w(t) \u2212 F_0(t)), how far P_w could be below P_0 "
                            "anywhere (in probability).", ("dom_violation_high",)),
    Term("sign test", "Paired counts of rows whose p(c|Y) went up (sign_n_up), down "
                      "(sign_n_down) or tied against w = 0, and the one-sided exact sign-test "
                      "p-value (sign_p_value) of \u201cup more often than down\u201d.",
         ("sign_n_up", "sign_p_value")),
    Term("ECE (top-label, classwise)",
         "Expected calibration errors of the judge on held-out data (in probability, "
         "[0, 1]): top-label ECE = \u2211_k (n_k/N) |accuracy_k \u2212 confidence_k| over "
         "equal-width bins of max_c p(c|y); classwise ECE averages the same over every "
         "class probability p(c|y), the small ones included, which Q depends on.",
         ("ece_top", "ece_classwise")),
    Term("judge accuracy, log loss", "The judge's accuracy and mean log loss "
                                     "\u2212log p(c_i|y_i) (nats) on the held-out data.",
         ("judge_accuracy", "judge_log_loss")),
    Term("real_q", "E[1/p(c|x)] over held-out real data of class c, judged by the same judge "
                   "(dimensionless): the value Q would have if the sampler drew real data; "
                   "real_n such samples, real_p_mean their E[p].", ("real_q",)),
    Term("outside", "Fraction of samples outside the class's support (in [0, 1]), with its "
                    "exact Clopper-Pearson interval at the stated level (the bars); mean "
                    "distance outside in the data's units.", ("outside",)),
    Term("score error", "\u03c3\u00b2-weighted relative L2 error of the model's score against "
                        "the exact score of [distribution], pooled over noise levels "
                        "(dimensionless; 0 for exact scores); score_error_uncond the same for "
                        "the unconditional score.", ("score_error",)),
    Term("training loss", "Final denoising score-matching loss of a trained model: the mean "
                          "squared error of its noise prediction over the last 10 % of "
                          "training steps (dimensionless; blank for a model not trained).",
         ("training_loss",)),
    Term("profile total", "2w \u222b I(t) dt, the decrease of Q the formula "
                          "Q = E[1/p_T(c|Y_T)] \u2212 2w \u222b I(t) dt predicts along the "
                          "continuous-time guided sampler with exact scores (I(t) = "
                          "E[|\u2207 log p_t(c|Y)|\u00b2 / p_t(c|Y)]), shown \u00b1 2 standard "
                          "errors; start = E[1/p_T(c|Y_T)]; formula Q = start \u2212 total; "
                          "direct Q the mean of 1/p(c|Y) at the end of the same sampler; "
                          "difference = direct \u2212 formula (discretisation and Monte Carlo "
                          "error) \u00b1 its standard error.", ("profile_total",)),
)
"""Every entry, in the order the glossary lists them."""


def glossary_terms(columns: Iterable[str]) -> list[Term]:
    """The entries relevant to a study whose rows have ``columns`` (entries without columns
    always)."""
    present = set(columns)
    return [term for term in TERMS if not term.columns or present & set(term.columns)]


def glossary_html(columns: Iterable[str]) -> str:
    """A ``<dl class="glossary">`` of :func:`glossary_terms` (escaped)."""
    items = "".join(f"<dt>{html.escape(term.name)}</dt><dd>{html.escape(term.definition)}</dd>"
                    for term in glossary_terms(columns))
    return f'<dl class="glossary">{items}</dl>'
