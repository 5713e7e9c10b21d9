r"""The report's HTML tables, sized to fit a 1280 px page without horizontal scrolling.

Every table has at most :data:`MAX_COLUMNS` columns: wider content is split into several tables
that repeat the key columns (w, the sampler), and the secondary diagnostics of a class go into
a collapsible ``<details>`` block under its main table. Headers wrap; a column whose value is
the same in every row is shown once above the table instead. A cell is blank where a value does
not apply or was not measured (None or NaN, or a comparison with w = 0 at w = 0), never "NaN".

* :func:`class_table`: one class's (or the pooled rows') measurements, one row per w: the main
  columns (Q, its interval, the tail diagnosis, E[p], accuracy, p down, the exact grid Q, the
  dominance verdict, the mass outside the support) and the rest in ``<details>``.
* :func:`class_grid_tables`: w x class cells of Q [interval] and E[p] (or the fraction outside
  the support), a few classes per table.
* :func:`fit_table`: score error and training loss per setting or class.
* :func:`profile_table`: the guidance-effect profile's reconciliation, start - total = formula
  Q against the direct Q.

Every string from the data is HTML-escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .plots import _number, class_label

__all__ = ["MAX_COLUMNS", "class_table", "class_grid_tables", "fit_table", "profile_table",
           "legend_line", "dominance_text", "fmt", "escape", "td", "table", "is_numeric",
           "is_reference", "REFERENCE_SAMPLER", "BASELINE_COLUMNS", "HIDDEN_COLUMNS",
           "DETAIL_COLUMNS"]

MAX_COLUMNS = 10
"""Most columns of one table (key columns included)."""
CLASSES_PER_TABLE = 5
"""Classes per table of :func:`class_grid_tables`."""
REFERENCE_SAMPLER = "exact_reverse"

BASELINE_COLUMNS = frozenset({
    "frac_p_decreased", "dom_verdict", "dom_quantile", "dom_eps", "dom_max_violation",
    "dom_violation_quantile", "dom_violation_high", "dom_p_low", "dom_p_high",
    "dom_quantile_high", "dom_improved_mass", "sign_n_up", "sign_n_down", "sign_n_tie",
    "sign_p_value", "frac_up", "frac_down", "dom_n", "dom_n_nonfinite"})
"""Comparisons with the coupled rows of w = 0: blank at w = 0, where a row meets itself."""

_MAIN = (
    ("w", "w", "guidance strength (CFG scale = 1 + w)"),
    ("sampler", "sampler", None),
    ("n", "n", "finite samples measured"),
    ("q_mean", "Q", "Q = E[1/p(c|Y)], Monte Carlo mean"),
    ("interval", "interval", "interval for Q; [lower, \u221e): lower bound only (heavy tail)"),
    ("q_reliable", "reliable", "tail diagnosis: is the interval for Q reliable?"),
    ("pareto_khat", "k-hat", "Pareto k-hat of the terms 1/p(c|Y)"),
    ("p_mean", "E[p]", "E[p(c|Y)]"),
    ("accuracy", "accuracy", "fraction with argmax p(.|Y) = c"),
    ("frac_p_decreased", "p down", "fraction of coupled rows whose p(c|Y) went down against "
                                   "w = 0"),
    ("grid", "grid Q \u00b1 err", "exact grid Q \u00b1 its quadrature error (no Monte Carlo "
                                  "error)"),
    ("dominance", "dominance", "stochastic dominance of p(c|Y^w) over p(c|Y^0): holds (from "
                               "the baseline quantile q*), fails or undecided"),
    ("outside", "outside", "fraction of samples outside the class's support"),
    ("outside_interval", "outside: interval", "Clopper-Pearson interval of the fraction "
                                              "outside"),
)

DETAIL_COLUMNS = (
    ("q_se", "se(Q)"), ("khat_threshold", "k-hat threshold"), ("q_top_share", "top share"),
    ("interval_method", "interval method"), ("p_se", "se(E[p])"),
    ("p_q01", "p(c|Y) 1 % quantile"), ("p_q10", "p(c|Y) 10 % quantile"),
    ("p_q50", "p(c|Y) median"), ("p_q90", "p(c|Y) 90 % quantile"),
    ("p_q99", "p(c|Y) 99 % quantile"), ("n_nonfinite", "non-finite"),
    ("grid_p_mean", "grid E[p]"), ("entropy", "entropy (nats)"),
    ("entropy_err", "entropy err (nats)"), ("kl", "KL (nats)"), ("kl_err", "KL err (nats)"),
    ("grid_mass_lost", "grid mass lost"), ("grid_points", "grid points"),
    ("dom_quantile_high", "dominance: quantile high"), ("dom_p_low", "dominance: p low"),
    ("dom_p_high", "dominance: p high"), ("dom_eps", "dominance: eps"),
    ("dom_max_violation", "dominance: max violation"),
    ("dom_violation_quantile", "dominance: violation quantile"),
    ("dom_violation_high", "dominance: violation bound"),
    ("dom_improved_mass", "dominance: improved mass"), ("dom_n", "dominance: pairs"),
    ("sign_n_up", "sign test: up"), ("sign_n_down", "sign test: down"),
    ("sign_n_tie", "sign test: ties"), ("sign_p_value", "sign test: p-value"),
    ("frac_up", "fraction up"), ("frac_down", "fraction down"),
    ("support_n", "n (support)"), ("n_outside", "n outside"),
    ("mean_distance_outside", "mean distance outside"),
)
"""Secondary columns (key, header), shown in a class's ``<details>`` block."""

HIDDEN_COLUMNS = frozenset({
    "class", "q_low", "q_high", "level", "khat_method", "warnings", "reference", "unit_id",
    "key", "chunk_rows", "pooled_classes", "dom_level", "dom_verdict", "dom_quantile",
    "grid_q", "grid_q_err", "outside_low", "outside_high", "support_n_nonfinite",
    "dom_n_nonfinite", "judge_n", "judge_accuracy", "judge_log_loss", "ece_top",
    "ece_classwise", "calibration", "real_n", "real_q", "real_p_mean", "score_error",
    "score_error_uncond", "training_loss", "training_steps", "training_losses", "profile",
    "profile_total", "profile_total_se",
    "profile_start", "profile_formula_q", "profile_direct_q", "profile_difference",
    "profile_difference_se", "seed", "schedule", "rule", "strength_schedule", "trials",
    "dtype", "device", "guidelab_version", "steps"})
"""Columns no class table shows: drawn elsewhere (intervals, the judge, the model fit, the
profile), provenance, or bookkeeping."""

_FOLDED = {"n": "n", "khat_threshold": "k-hat threshold", "inv_prior": "1/p(c)",
           "support_n": "n (support)", "sampler": "sampler", "pooled_classes": "classes pooled"}
"""Columns shown once above a table (not as a column) when constant in it."""


# ----------------------------------------------------------------------------- formatting

def escape(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A cell's text: None and NaN -> "" (blank), bools yes/no, floats to ``digits``
    significant digits, infinities as the symbol (unescaped: the caller escapes)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "\u221e" if value > 0 else "\u2212\u221e"
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v, digits) for v in value) + "]"
    return str(value)


def is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value,
                                                                                      bool)


def td(value: Any, css: str = "", title: str | None = None, digits: int = 4,
       text: str | None = None) -> str:
    """A ``<td>`` of ``value`` (or of ``text``, already formatted, unescaped)."""
    classes = " ".join(c for c in (("num" if is_numeric(value) else ""), css) if c)
    attrs = f' class="{classes}"' if classes else ""
    if title:
        attrs += f' title="{escape(title)}"'
    return f"<td{attrs}>{escape(fmt(value, digits) if text is None else text)}</td>"


def table(headers: Sequence[tuple[str, str | None]], body: Iterable[str], css: str = "") -> str:
    """A table (headers ``(text, tooltip)``) in a ``div.scroll`` (a fallback; the page is laid
    out so that it never scrolls)."""
    head = "".join(f'<th title="{escape(tip)}">{escape(h)}</th>' if tip
                   else f"<th>{escape(h)}</th>" for h, tip in headers)
    cls = f' class="{css}"' if css else ""
    return (f'<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def is_reference(row: dict) -> bool:
    return row.get("reference") is True or row.get("sampler") == REFERENCE_SAMPLER


def _w(row: dict) -> float | None:
    return _number(row.get("w"))


def _at_baseline(row: dict) -> bool:
    w = _w(row)
    return w is not None and w == 0.0


# ----------------------------------------------------------------------------- cells

def _interval_text(low: Any, high: Any) -> tuple[str, bool]:
    """("[low, high]" or "[low, ∞) lower bound only", one-sided?)."""
    lo, hi = _number(low), _number(high)
    if lo is None and hi is None:
        return "", False
    if hi == math.inf:
        return f"[{fmt(lo)}, \u221e) lower bound only", True
    return f"[{fmt(lo)}, {fmt(hi)}]", False


def dominance_text(row: dict) -> str:
    """"holds from q* = 0.12" / "fails" / "undecided"; "" at w = 0 or when not measured."""
    verdict = row.get("dom_verdict")
    if not isinstance(verdict, str) or _at_baseline(row):
        return ""
    if verdict == "holds":
        q = _number(row.get("dom_quantile"))
        return f"holds from q* = {fmt(q, 3)}" if q is not None else "holds"
    return verdict


def _cell(key: str, row: dict, limit: float | None) -> str:
    value = row.get(key)
    if key in BASELINE_COLUMNS and _at_baseline(row):
        return td(None, title="compared with w = 0: not applicable at w = 0")
    if key == "w":
        w = _w(row)
        return td(value, text="" if w is None else f"{w:g}")
    if key == "sampler":
        return td(f"{value or REFERENCE_SAMPLER} (reference)" if is_reference(row) else value)
    if key == "interval":
        text, open_ = _interval_text(row.get("q_low"), row.get("q_high"))
        return f'<td class="wrap{" bad" if open_ else ""}">{escape(text)}</td>'
    if key == "outside_interval":
        text, _ = _interval_text(row.get("outside_low"), row.get("outside_high"))
        return f'<td class="wrap">{escape(text)}</td>'
    if key == "grid":
        q, err = _number(row.get("grid_q")), _number(row.get("grid_q_err"))
        if q is None:
            return td(None)
        return td(q, text=fmt(q) + (f" \u00b1 {fmt(abs(err), 2)}" if err is not None else ""))
    if key == "dominance":
        text = dominance_text(row)
        css = {"holds": "good", "fails": "bad"}.get(text.split(" ")[0] if text else "", "")
        return td(None, css=css, text=text)
    if key == "q_reliable":
        return td(value, "bad" if value is False else "good" if value is True else "")
    if key == "pareto_khat":
        k_hat = _number(value)
        row_limit = _number(row.get("khat_threshold")) if limit is None else limit
        bad = k_hat is not None and row_limit is not None and k_hat > row_limit
        return td(value, "bad" if bad else "", digits=3)
    if key == "interval_method" and isinstance(value, str):
        return td(value.split(" (")[0], css="wrap", title=value)
    if isinstance(value, (dict, list, bytes)):
        return td(None)
    return td(value)


def _present(key: str, rows: Sequence[dict]) -> bool:
    if key == "interval":
        return any(_number(r.get("q_low")) is not None or _number(r.get("q_high")) is not None
                   for r in rows)
    if key == "outside_interval":
        return any(_number(r.get("outside_low")) is not None for r in rows)
    if key == "grid":
        return any(_number(r.get("grid_q")) is not None for r in rows)
    if key == "dominance":
        return any(isinstance(r.get("dom_verdict"), str) and not _at_baseline(r) for r in rows)
    if key in BASELINE_COLUMNS:
        return any(r.get(key) is not None and not _at_baseline(r) for r in rows)
    return any(r.get(key) is not None and not (isinstance(r.get(key), float)
                                               and math.isnan(r[key])) for r in rows)


def _chunks(columns: list, size: int) -> list[list]:
    return [columns[i:i + size] for i in range(0, len(columns), size)] or [[]]


def _row_attr(row: dict) -> str:
    css = []
    if row.get("q_reliable") is False:
        css.append("unreliable")
    if is_reference(row):
        css.append("reference")
    return f' class="{" ".join(css)}"' if css else ""


def _split_tables(keys: list[str], data: list[str], heads: dict[str, tuple[str, str | None]],
                  rows: Sequence[dict], limit: float | None) -> list[str]:
    """Tables of the key columns plus at most MAX_COLUMNS - len(keys) data columns each."""
    out = []
    for chunk in _chunks(data, MAX_COLUMNS - len(keys)):
        headers = [heads[k] for k in keys] + [heads[k] for k in chunk]
        body = []
        for row in rows:
            cells = [_cell(k, row, limit) for k in keys + chunk]
            body.append(f"<tr{_row_attr(row)}>{''.join(cells)}</tr>")
        out.append(table(headers, body))
    return out


def class_table(rows: list[dict], *, skip: Iterable[str] = ()) -> str:
    """One class's rows (or the pooled rows): the main columns in one table (split when wide),
    the secondary columns and any unknown ones in a ``<details>`` block; constant columns
    shown once above. ``skip``: further columns to leave out (e.g. the series' swept keys)."""
    skip = set(skip)
    ordered = sorted(rows, key=lambda r: (not is_reference(r), _w(r) or 0.0))
    folded: dict[str, tuple[str, Any]] = {}
    for key, label in _FOLDED.items():
        values = {fmt(r.get(key)) for r in rows if r.get(key) is not None}
        if key == "sampler":
            if any(is_reference(r) for r in rows) or len(values) != 1:
                continue
        if len(values) == 1 and all(r.get(key) is not None for r in rows):
            folded[key] = (label, rows[0].get(key))
    limit = _number(folded.get("khat_threshold", (None, None))[1])
    main = [(k, h, t) for k, h, t in _MAIN if k not in folded and k not in skip
            and _present(k, rows)]
    levels = {_number(r.get("level")) for r in rows} - {None}
    if len(levels) == 1:
        level = levels.pop()
        main = [(k, f"interval ({100 * level:g} %)" if k == "interval" else h, t)
                for k, h, t in main]
    keys = [k for k, _, _ in main if k in ("w", "sampler")]
    data = [k for k, _, _ in main if k not in ("w", "sampler")]
    parts = []
    legend = [f"{label} = {fmt(value)}" for label, value in folded.values()]
    real = next((r for r in rows if _number(r.get("real_q")) is not None), None)
    if real is not None:
        legend.append(f"real held-out data of this class: real_q = {fmt(real.get('real_q'))} "
                      f"(n = {fmt(real.get('real_n'))}, E[p] = {fmt(real.get('real_p_mean'))})")
    if legend:
        parts.append('<p class="legend">' + escape("; ".join(legend)) + "</p>")
    heads = {k: (h, t) for k, h, t in main}
    parts += _split_tables(keys, data, heads, ordered, limit)
    detail_keys = [k for k, _ in DETAIL_COLUMNS if k not in folded and k not in skip
                   and _present(k, rows)]
    known = {k for k, _, _ in _MAIN} | {k for k, _ in DETAIL_COLUMNS} | HIDDEN_COLUMNS \
        | set(_FOLDED)
    unknown = [k for k in dict.fromkeys(k for r in rows for k in r)
               if k not in known and k not in skip and not k.startswith("record_")
               and "." not in k and k != "model" and _present(k, rows)
               and not any(isinstance(r.get(k), (dict, list, bytes)) for r in rows)
               and not any(isinstance(r.get(k), str) and len(r[k]) > 60 for r in rows)]
    if detail_keys or unknown:
        names = dict(DETAIL_COLUMNS)
        heads.update({k: (names.get(k, k), None) for k in detail_keys + unknown})
        tables = _split_tables(keys, detail_keys + unknown, heads, ordered, limit)
        summary = ", ".join(names.get(k, k) for k in (detail_keys + unknown)[:6])
        more = len(detail_keys + unknown) - 6
        summary += f" and {more} more" if more > 0 else ""
        parts.append(f'<details class="more"><summary>More columns: {escape(summary)}'
                     f"</summary>{''.join(tables)}</details>")
    return "".join(parts)


def _grid_cell(row: dict | None, mode: str) -> str:
    if row is None:
        return td(None)
    if mode == "q":
        q = _number(row.get("q_mean"))
        text, open_ = _interval_text(row.get("q_low"), row.get("q_high"))
        if q is None:
            return td(None)
        p = _number(row.get("p_mean"))
        bad = open_ or row.get("q_reliable") is False
        second = f'<br><span class="sub">E[p] {escape(fmt(p))}</span>' if p is not None else ""
        return (f'<td class="num wrap{" bad" if bad else ""}">{escape(fmt(q))} '
                f"{escape(text.replace(' lower bound only', ''))}{second}</td>")
    x = _number(row.get("outside"))
    if x is None:
        return td(None)
    text, _ = _interval_text(row.get("outside_low"), row.get("outside_high"))
    return f'<td class="num wrap">{escape(fmt(x))} {escape(text)}</td>'


def class_grid_tables(rows: list[dict]) -> str:
    """w x class tables (at most :data:`CLASSES_PER_TABLE` classes each) of Q [interval] over
    E[p] per cell, or of the fraction outside the support [interval] when Q is not measured;
    the pooled class last. Rows shaded amber hold an unreliable interval."""
    from .plots import class_order

    main = [r for r in rows if not is_reference(r) and _w(r) is not None]
    if not main:
        return ""
    mode = "q" if any(_number(r.get("q_mean")) is not None for r in main) else "outside"
    if mode == "outside" and not any(_number(r.get("outside")) is not None for r in main):
        return ""
    classes = sorted({r.get("class") for r in main}, key=class_order)
    strengths = sorted({_w(r) for r in main})
    by = {(r.get("class"), _w(r)): r for r in main}
    what = ("each cell: Q [interval], and E[p] below it" if mode == "q"
            else "each cell: fraction outside the support [Clopper-Pearson interval]")
    out = [f'<p class="legend">{escape(what)}.</p>']
    for chunk in _chunks(classes, CLASSES_PER_TABLE):
        headers = [("w", None)] + [(class_label(c), what) for c in chunk]
        body = []
        for w in strengths:
            cells = [td(w, text=f"{w:g}")] + [_grid_cell(by.get((c, w)), mode) for c in chunk]
            bad = any((by.get((c, w)) or {}).get("q_reliable") is False for c in chunk)
            attr = ' class="unreliable"' if bad else ""
            body.append(f"<tr{attr}>{''.join(cells)}</tr>")
        out.append(table(headers, body))
    return "".join(out)


def fit_table(entries: Sequence[tuple[str, dict]]) -> str:
    """Score error and training loss, one row per ``(label, row)`` (a setting or a class);
    columns present in no entry are left out."""
    columns = [("score_error", "score error", "sigma^2-weighted relative L2 error of the "
                                              "conditional score against the exact one"),
               ("score_error_uncond", "score error (unconditional)", None),
               ("training_loss", "final training loss", "denoising score-matching loss over "
                                                        "the last 10 % of training steps")]
    columns = [c for c in columns if any(_number(row.get(c[0])) is not None
                                         for _, row in entries)]
    if not columns:
        return ""
    body = ["<tr>" + td(label) + "".join(td(_number(row.get(k))) for k, _, _ in columns)
            + "</tr>" for label, row in entries]
    return table([("model / class", None)] + [(h, t) for _, h, t in columns], body,
                 css="compact")


def profile_table(entries: Sequence[tuple[Any, dict]]) -> str:
    """The profile's reconciliation per ``(profile, row)``: class, w, start, total +- 2 se,
    formula Q = start - total, direct Q +- 2 se, difference +- se, and the study's own Q at
    that w (``q_mean``, ``grid_q``) for comparison."""
    headers = [("class", None), ("w", None), ("start", "E[1/p_T(c|Y_T)]"),
               ("total \u00b1 2 se", "2w \u222b I dt, the decrease the formula predicts"),
               ("formula Q", "start \u2212 total"),
               ("direct Q \u00b1 2 se", "mean of 1/p(c|Y) at the end of the same "
                                        "continuous-time sampler"),
               ("difference \u00b1 se", "direct \u2212 formula: discretisation and Monte Carlo "
                                        "error"),
               ("sampler's Q", "the study's Monte Carlo Q at this w (its own sampler)"),
               ("grid Q", "the study's exact grid Q at this w")]
    body = []
    for profile, row in entries:
        decrease = 2 * profile.w
        grid = profile.method == "grid"

        def pm(value: float, spread: float, *, grid: bool = grid) -> str:
            return fmt(value) if grid else f"{fmt(value)} \u00b1 {fmt(spread, 2)}"

        cells = [td(profile.c), td(profile.w, text=f"{profile.w:g}"), td(profile.start),
                 td(0.0, text=pm(decrease * profile.total, 2 * decrease * profile.total_se)),
                 td(profile.formula_q),
                 td(0.0, text=pm(profile.direct_q, 2 * profile.direct_q_se)),
                 td(0.0, text=pm(profile.difference, profile.difference_se)),
                 td(_number(row.get("q_mean"))), td(_number(row.get("grid_q")))]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return table(headers, body)


def legend_line(items: Sequence[tuple[str, Any]], transform: Callable[[Any], str] = fmt) -> str:
    """``<p class="legend">label = value; ...</p>`` (escaped)."""
    text = "; ".join(f"{label} = {transform(value)}" for label, value in items)
    return f'<p class="legend">{escape(text)}</p>' if text else ""

