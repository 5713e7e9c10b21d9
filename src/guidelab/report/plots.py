r"""Plots of study results (matplotlib, Agg backend: no display needed), drawn from stored columns.

``q_vs_w_figure`` draws, per class (and for the rows pooled over classes, ``class = "all"``, in
black), Q(w) = E[1/p(c|Y^w)] against the guidance strength w on a symmetric-log axis (linear
up to the smallest positive w run, so that w = 0 has a place), in a left panel, and
E[p(c|Y^w)] in a right one:

* the Monte Carlo estimate ``q_mean`` (a solid line; filled markers where the tail diagnosis
  found the interval reliable, open markers where it did not) with its interval
  [``q_low``, ``q_high``] as an error bar when both ends are finite;
* a one-sided interval [``q_low``, inf) (``q_high`` infinite: the terms 1/p(c|Y) are so
  heavy-tailed that the mean has only a lower bound) as a horizontal tick at ``q_low`` with an
  arrow upward, never as an error bar, under the legend entry "lower bound only (heavy tail)";
* the exact grid Q (``grid_q``: the sampler's output law propagated on a grid, no Monte Carlo
  error) with its quadrature error ``grid_q_err`` as an error bar, dotted with diamonds,
  labelled "exact grid", wherever the rows have it;
* the reference 1/p(c) (``inv_prior``: exact unguided draws give Q = 1/p(c)) as a dashed line,
  and the exact reverse kernel's rows at w = 0 (``sampler = "exact_reverse"``) as open squares.

Two legends sit to the right of the panels, off the data: the colours (one per class) and the
line styles (what each mark means). When the rows hold several settings (the same class and w
more than once, e.g. two samplers), each setting gets its own row of panels.

``q_by_setting_figure`` draws Q(w) with one curve per setting (e.g. per model of a study swept
over ``model``), one panel per class; ``support_figure`` the fraction of samples outside the
class's support (``outside``) against w with its Clopper-Pearson interval
[``outside_low``, ``outside_high``], one curve per setting (e.g. per perturbation).
``plot_q_vs_w`` writes the Q(w) figure to a PNG file; ``figure_png`` turns any figure into PNG
bytes (the HTML report embeds them).

Artists that carry data have a ``gid`` (``q-mc:<label>``, ``q-bar:<label>``,
``q-lower:<label>``, ``q-grid:<label>``, ``p-mc:<label>``, ``inv-prior:<label>``,
``q-ref:<label>``, ``outside:<label>``) so that tests read the figure's data back.

Missing values (a row without ``q_low``, ``p_mean``, ``inv_prior``, ...: None or NaN) are left
out of the panel that needs them rather than failing.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_q_vs_w", "q_vs_w_figure", "q_by_setting_figure", "support_figure",
           "figure_png", "class_order", "class_label", "draw_estimates", "w_linthresh",
           "LOWER_BOUND_LABEL", "GRID_LABEL", "LEGEND_FONTSIZE"]

LOWER_BOUND_LABEL = "lower bound only (heavy tail)"
"""Legend entry of a one-sided interval [q_low, inf)."""
GRID_LABEL = "exact grid"
"""Legend entry of the exact grid Q (``grid_q`` +- ``grid_q_err``)."""
LEGEND_FONTSIZE = 10
"""Font size (points) of legends, tick labels and titles' smallest text, at the saved size."""
POOLED = "all"
"""The ``class`` of rows pooled over classes (:mod:`guidelab.studies.pooling`)."""
REFERENCE_SAMPLER = "exact_reverse"
MAX_FIGURE_SERIES = 6
"""Rows of panels :func:`q_vs_w_figure` draws at most (one per setting)."""
_SERIES_CANDIDATES = ("sampler", "steps", "schedule", "rule", "strength_schedule", "model",
                      "seed", "dtype", "trials")
_POOLED_COLOR = "black"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _number(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number or NaN (inf is kept)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def figure_png(fig, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (Agg); the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def class_order(c: Any) -> tuple:
    """Sort key of class values: integers first in order, then "all" (and other strings)."""
    if isinstance(c, str):
        return (1, 0, c)
    try:
        return (0, float(c), "")
    except (TypeError, ValueError):
        return (1, 0, str(c))


def class_label(c: Any) -> str:
    """``"class 3"``, or ``"all classes (pooled)"`` for the pooled rows."""
    return "all classes (pooled)" if c == POOLED else f"class {c}"


def _class_colors(classes: Sequence[Any]) -> dict:
    plt = _pyplot()
    real = [c for c in classes if c != POOLED]
    cmap = plt.get_cmap("tab10" if len(real) <= 10 else "tab20")
    out = {c: cmap(i % cmap.N) for i, c in enumerate(real)}
    out[POOLED] = _POOLED_COLOR
    return out


def _is_reference(row: dict, reference_sampler: str = REFERENCE_SAMPLER) -> bool:
    return row.get("reference") is True or row.get("sampler") == reference_sampler


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


# ----------------------------------------------------------------------------- drawing

def _finite(value: Any) -> float | None:
    x = _number(value)
    return x if x is not None and math.isfinite(x) else None


def draw_estimates(ax, rows: Sequence[dict], *, color, label: str, marker: str = "o",
                   lw: float = 1.6, ls: str = "-", column: str = "q_mean",
                   low: str = "q_low", high: str = "q_high", ms: float = 5.0) -> list[dict]:
    """Draw a Monte Carlo curve with its intervals on ``ax``; returns the rows drawn.

    ``rows`` are sorted by w here. The line joins the estimates ``column``; a row whose
    interval has two finite ends gets an error bar; a row whose upper end is +inf gets a tick at
    its lower end and an arrow upward (and an open marker at the estimate); a row with
    ``q_reliable`` False gets an open marker. Artists: ``q-mc:<label>`` (the line),
    ``q-bar:<label>`` (the error-bar points), ``q-lower:<label>`` (the lower-bound ticks).
    """
    drawn = sorted((r for r in rows if _finite(r.get("w")) is not None
                    and _finite(r.get(column)) is not None), key=lambda r: float(r["w"]))
    if not drawn:
        return []
    ws = [float(r["w"]) for r in drawn]
    ys = [float(r[column]) for r in drawn]
    ax.plot(ws, ys, color=color, lw=lw, ls=ls, zorder=2, gid=f"q-mc:{label}")
    bounded, unbounded, open_ = [], [], []
    for r in drawn:
        lo, hi = _number(r.get(low)), _number(r.get(high))
        if hi == math.inf:
            unbounded.append(r)
        elif lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            bounded.append(r)
        if hi == math.inf or r.get("q_reliable") is False:
            open_.append(r)
    if bounded:
        x = [float(r["w"]) for r in bounded]
        y = [float(r[column]) for r in bounded]
        below = [max(v - float(r[low]), 0.0) for v, r in zip(y, bounded, strict=True)]
        above = [max(float(r[high]) - v, 0.0) for v, r in zip(y, bounded, strict=True)]
        bars = ax.errorbar(x, y, yerr=[below, above], fmt="none", ecolor=color, elinewidth=1.2,
                           capsize=3, zorder=2)
        bars.lines[2][0].set_gid(f"q-bar:{label}")
    filled = [r for r in drawn if r not in open_]
    if filled:
        ax.plot([float(r["w"]) for r in filled], [float(r[column]) for r in filled], ls="none",
                marker=marker, ms=ms, color=color, zorder=3)
    if open_:
        ax.plot([float(r["w"]) for r in open_], [float(r[column]) for r in open_], ls="none",
                marker=marker, ms=ms, mfc="white", mec=color, mew=1.3, zorder=3)
    bounds = [r for r in unbounded if _finite(r.get(low)) is not None]
    if bounds:
        x = [float(r["w"]) for r in bounds]
        y = [float(r[low]) for r in bounds]
        ax.plot(x, y, ls="none", marker="_", ms=12, mew=2.0, color=color, zorder=3,
                gid=f"q-lower:{label}")
        for xi, yi in zip(x, y, strict=True):
            ax.annotate("", xy=(xi, yi), xytext=(0, 26), textcoords="offset points",
                        arrowprops={"arrowstyle": "<|-", "color": color, "lw": 1.4,
                                    "shrinkA": 0, "shrinkB": 0}, zorder=3,
                        gid=f"q-lower-arrow:{label}")
    return drawn


def _draw_grid(ax, rows: Sequence[dict], *, color, label: str) -> int:
    """The exact grid Q (``grid_q`` +- ``grid_q_err``) as dotted diamonds; the points drawn."""
    pts = sorted((r for r in rows if _finite(r.get("w")) is not None
                  and _finite(r.get("grid_q")) is not None), key=lambda r: float(r["w"]))
    if not pts:
        return 0
    x = [float(r["w"]) for r in pts]
    y = [float(r["grid_q"]) for r in pts]
    err = [abs(_finite(r.get("grid_q_err")) or 0.0) for r in pts]
    bars = ax.errorbar(x, y, yerr=err if any(err) else None, color=color, ls=":", lw=1.3,
                       marker="D", ms=6, mfc="white", mec=color, mew=1.4, capsize=4,
                       zorder=4)
    bars.lines[0].set_gid(f"q-grid:{label}")
    return len(pts)


def _style_handles(*, grid: bool, lower: bool, reference: bool, inv_prior: bool,
                   unreliable: bool) -> list:
    """Legend entries of the line styles (grey, colour-free)."""
    from matplotlib.lines import Line2D

    gray = "0.25"
    handles = [Line2D([], [], color=gray, marker="o", ms=5, lw=1.6,
                      label="Monte Carlo Q with its interval")]
    if unreliable:
        handles.append(Line2D([], [], color=gray, marker="o", ms=5, mfc="white", ls="none",
                              label="open marker: interval not reliable"))
    if lower:
        handles.append(Line2D([], [], color=gray, marker=r"$\uparrow$", ms=13, ls="none",
                              label=LOWER_BOUND_LABEL))
    if grid:
        handles.append(Line2D([], [], color=gray, marker="D", ms=6, mfc="white", ls=":",
                              label=f"{GRID_LABEL} (Q \u00b1 quadrature error)"))
    if inv_prior:
        handles.append(Line2D([], [], color=gray, ls="--", lw=1,
                              label="1/p(c): exact unguided draws"))
    if reference:
        handles.append(Line2D([], [], color=gray, marker="s", mfc="none", ms=8, ls="none",
                              label="exact reverse kernel, w = 0"))
    return handles


def _series_split(rows: Sequence[dict], reference_sampler: str) -> list[tuple[str, list[dict]]]:
    """The rows split into settings when a (class, w) pair repeats among the main rows: by the
    fewest of the swept keys (columns with a dot, ``model``) and provenance columns that make
    (class, w) unique. Reference rows join every setting."""
    main = [r for r in rows if not _is_reference(r, reference_sampler)]
    refs = [r for r in rows if _is_reference(r, reference_sampler)]
    pairs = [(r.get("class"), _number(r.get("w"))) for r in main]
    if len(set(pairs)) == len(pairs):
        return [("", list(rows))]
    keys = [k for r in main for k in r if "." in k and not k.startswith("record_")]
    candidates = list(dict.fromkeys(keys + list(_SERIES_CANDIDATES)))
    chosen: list[str] = []
    for key in candidates:
        if len({_freeze(r.get(key)) for r in main}) < 2:
            continue
        chosen.append(key)
        if len({(*p, *(_freeze(r.get(k)) for k in chosen))
                for p, r in zip(pairs, main, strict=True)}) == len(pairs):
            break
    groups: dict[tuple, list[dict]] = {}
    for r in main:
        groups.setdefault(tuple(_freeze(r.get(k)) for k in chosen), []).append(r)
    out = []
    for key, members in groups.items():
        label = ", ".join(f"{k} = {v}" for k, v in zip(chosen, key, strict=True))
        out.append((label, refs + members))
    return out


def _y_scale(ax, values: list[float]) -> None:
    """Log y when the positive values span more than a factor 50."""
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > 50:
        ax.set_yscale("log")


def _draw_q_panels(ax_q, ax_p, rows: Sequence[dict], colors: dict, reference_sampler: str
                   ) -> dict:
    """Q(w) and E[p](w) of every class of ``rows`` on the two axes; what was drawn."""
    classes = sorted({r.get("class") for r in rows if r.get("class") is not None},
                     key=class_order)
    seen = {"grid": False, "lower": False, "reference": False, "inv_prior": False,
            "unreliable": False, "classes": []}
    values: list[float] = []
    for c in classes:
        color = colors[c]
        label = class_label(c)
        lw = 2.4 if c == POOLED else 1.6
        main = [r for r in rows if r.get("class") == c and not _is_reference(r, reference_sampler)]
        drawn = draw_estimates(ax_q, main, color=color, label=label, lw=lw,
                               marker="o" if c != POOLED else "s")
        if drawn or any(_finite(r.get("p_mean")) is not None for r in main):
            seen["classes"].append(c)
        for r in drawn:
            values += [_finite(r.get("q_mean")), _finite(r.get("q_low"))]
            if _number(r.get("q_high")) == math.inf and _finite(r.get("q_low")) is not None:
                seen["lower"] = True
            if _number(r.get("q_high")) == math.inf or r.get("q_reliable") is False:
                seen["unreliable"] = True
        if _draw_grid(ax_q, main, color=color, label=label):
            seen["grid"] = True
            values += [_finite(r.get("grid_q")) for r in main]
        inv = next((_finite(r.get("inv_prior")) for r in main
                    if _finite(r.get("inv_prior")) is not None), None)
        if inv is not None:
            ax_q.axhline(inv, color=color, ls="--", lw=1, gid=f"inv-prior:{label}")
            seen["inv_prior"] = True
            values.append(inv)
        refs = [r for r in rows if r.get("class") == c and _is_reference(r, reference_sampler)
                and _finite(r.get("q_mean")) is not None]
        for r in refs:
            seen["reference"] = True
            ref = dict(r, w=0.0)
            lo, hi = _number(ref.get("q_low")), _number(ref.get("q_high"))
            yerr = None
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                yerr = [[max(ref["q_mean"] - lo, 0.0)], [max(hi - ref["q_mean"], 0.0)]]
            bars = ax_q.errorbar([0.0], [ref["q_mean"]], yerr=yerr, color=color, marker="s",
                                 mfc="none", ms=9, capsize=3, ls="none", zorder=3)
            bars.lines[0].set_gid(f"q-ref:{label}")
            if hi == math.inf and lo is not None and math.isfinite(lo):
                ax_q.plot([0.0], [lo], ls="none", marker="_", ms=12, mew=2.0, color=color,
                          gid=f"q-lower:{label} (reference)")
                ax_q.annotate("", xy=(0.0, lo), xytext=(0, 26), textcoords="offset points",
                              arrowprops={"arrowstyle": "<|-", "color": color, "lw": 1.4,
                                          "shrinkA": 0, "shrinkB": 0})
                seen["lower"] = True
            values.append(float(ref["q_mean"]))
        with_p = sorted((r for r in main if _finite(r.get("p_mean")) is not None
                         and _finite(r.get("w")) is not None), key=lambda r: float(r["w"]))
        if with_p:
            ax_p.plot([float(r["w"]) for r in with_p], [float(r["p_mean"]) for r in with_p],
                      color=color, lw=lw, marker="o" if c != POOLED else "s", ms=5,
                      gid=f"p-mc:{label}")
    _y_scale(ax_q, values)
    return seen


def _finish_axes(ax, ylabel: str, title: str | None) -> None:
    ax.set_xlabel("guidance strength w  (CFG scale = 1 + w)", fontsize=LEGEND_FONTSIZE + 1)
    ax.set_ylabel(ylabel, fontsize=LEGEND_FONTSIZE + 1)
    ax.tick_params(labelsize=LEGEND_FONTSIZE)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=LEGEND_FONTSIZE + 1)


def w_linthresh(ws: Sequence[float]) -> float:
    """The linear range of the symmetric-log w axis: the smallest positive w run (0.01 when
    there is none), so that w = 0 and the smallest strength each have a place."""
    positive = [w for w in ws if w > 0]
    return min(positive) if positive else 0.01


def _w_ticks(ax, rows: Sequence[dict]) -> None:
    """A symmetric-log w axis, linear up to the smallest positive w run
    (:func:`w_linthresh`), its limits padded around the strengths run, and ticks at those
    strengths when there are few of them."""
    import numpy as np

    ws = sorted({float(r["w"]) for r in rows if _finite(r.get("w")) is not None})
    ax.set_xscale("symlog", linthresh=w_linthresh(ws))
    if not ws:
        return
    scale = ax.xaxis.get_transform()
    lo, hi = scale.transform(np.array([ws[0], ws[-1]], dtype=float))
    pad = 0.06 * (hi - lo) if hi > lo else 0.5
    left, right = scale.inverted().transform(np.array([lo - pad, hi + pad]))
    ax.set_xlim(float(left), float(right))
    if 1 < len(ws) <= 6:
        ax.set_xticks(ws)
        ax.set_xticklabels([f"{w:g}" for w in ws])


def q_vs_w_figure(rows: Sequence[dict], *, title: str | None = None,
                  reference_sampler: str = REFERENCE_SAMPLER):
    """The Q(w) and E[p](w) figure (module docstring); a matplotlib Figure.

    Args:
        rows: result rows with keys ``class, w, sampler, q_mean, q_low, q_high, q_reliable,
            p_mean, inv_prior`` and, where measured, ``grid_q, grid_q_err``; pooled rows have
            ``class = "all"``. Rows of ``reference_sampler`` are drawn as open squares at w = 0.
            A missing or NaN value leaves that point (or line) out. Rows of several settings
            (a (class, w) pair repeated) are drawn in one row of panels per setting (at most
            :data:`MAX_FIGURE_SERIES`).
        title: the figure's title.
    """
    plt = _pyplot()
    series = _series_split(rows, reference_sampler)[:MAX_FIGURE_SERIES]
    classes = sorted({r.get("class") for r in rows if r.get("class") is not None},
                     key=class_order)
    colors = _class_colors(classes)
    fig, axes = plt.subplots(len(series), 2, figsize=(13.5, 4.6 * len(series) + 0.4),
                             squeeze=False, layout="constrained")
    seen_all = {"grid": False, "lower": False, "reference": False, "inv_prior": False,
                "unreliable": False}
    drawn_classes: list = []
    for (label, members), (ax_q, ax_p) in zip(series, axes, strict=True):
        seen = _draw_q_panels(ax_q, ax_p, members, colors, reference_sampler)
        for key in seen_all:
            seen_all[key] = seen_all[key] or seen[key]
        drawn_classes += [c for c in seen["classes"] if c not in drawn_classes]
        where = f" ({label})" if label else ""
        _finish_axes(ax_q, "Q(w) = E[1 / p(c | Y)]", f"average reciprocal class probability"
                                                     f"{where}")
        _finish_axes(ax_p, "E[p(c | Y)]", f"average class probability{where}")
        for ax in (ax_q, ax_p):
            _w_ticks(ax, members)
    from matplotlib.lines import Line2D

    class_handles = [Line2D([], [], color=colors[c], lw=2.4 if c == POOLED else 1.8,
                            marker="s" if c == POOLED else "o", ms=5, label=class_label(c))
                     for c in sorted(drawn_classes, key=class_order)]
    if class_handles:
        fig.legend(handles=class_handles, loc="outside right upper", fontsize=LEGEND_FONTSIZE,
                   title="colour", title_fontsize=LEGEND_FONTSIZE, frameon=False,
                   ncols=1 if len(class_handles) <= 12 else 2)
        fig.legend(handles=_style_handles(**seen_all), loc="outside right lower",
                   fontsize=LEGEND_FONTSIZE, title="marks", title_fontsize=LEGEND_FONTSIZE,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=LEGEND_FONTSIZE + 2)
    return fig


def plot_q_vs_w(rows: Sequence[dict], path: str | Path, *, title: str | None = None,
                reference_sampler: str = REFERENCE_SAMPLER) -> Path:
    """Write the Q(w) and E[p](w) figure of :func:`q_vs_w_figure` to ``path`` (PNG) and return
    the path.

    Args:
        rows: result rows (see :func:`q_vs_w_figure`), e.g. ``RunResult.rows`` (and its
            ``pooled`` rows); several settings get one row of panels each.
        path: output file; its folder is created; the file is written atomically.
    """
    from ..studies.results import atomic_write_bytes

    fig = q_vs_w_figure(rows, title=title, reference_sampler=reference_sampler)
    path = Path(path)
    atomic_write_bytes(path, figure_png(fig))
    return path


# ----------------------------------------------------------------------------- per-class panels

def _panel_grid(classes: Sequence[Any], *, width: float = 4.6, height: float = 3.6,
                columns: int = 2):
    plt = _pyplot()
    n = max(len(classes), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 3.6, height * rows + 0.6),
                             squeeze=False, layout="constrained")
    flat = [ax for line in axes for ax in line]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _wrap(label: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(label, width)) or label


def _setting_styles(count: int) -> list[tuple[Any, str, str]]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    markers = "osD^vP*Xh<>p"
    lines = ("-", "--", "-.", ":")
    return [(cmap(i % 10), markers[i % len(markers)], lines[(i // 10) % len(lines)])
            for i in range(count)]


def q_by_setting_figure(groups: Sequence[tuple[str, Sequence[dict]]], *,
                        title: str | None = None,
                        reference_sampler: str = REFERENCE_SAMPLER):
    """Q(w) with one curve per setting, one panel per class (pooled rows last).

    Args:
        groups: ``(label, rows)`` per setting (e.g. one per model of a study swept over
            ``model``); rows as in :func:`q_vs_w_figure` (reference rows are left out).
        title: the figure's title.

    Each curve is :func:`draw_estimates` (intervals as error bars, one-sided intervals as
    lower bounds with an arrow); 1/p(c) is a dashed grey line.
    """
    from matplotlib.lines import Line2D

    classes = sorted({r.get("class") for _, rows in groups for r in rows
                      if r.get("class") is not None}, key=class_order)
    fig, axes = _panel_grid(classes)
    styles = _setting_styles(len(groups))
    lower = unreliable = False
    for ax, c in zip(axes, classes, strict=True):
        values: list[float] = []
        inv = None
        for (label, rows), (color, marker, ls) in zip(groups, styles, strict=True):
            mine = [r for r in rows if r.get("class") == c
                    and not _is_reference(r, reference_sampler)]
            drawn = draw_estimates(ax, mine, color=color, label=f"{label} / {class_label(c)}",
                                   marker=marker, ls=ls)
            for r in drawn:
                values += [_finite(r.get("q_mean")), _finite(r.get("q_low"))]
                lower = lower or _number(r.get("q_high")) == math.inf
                unreliable = unreliable or r.get("q_reliable") is False
            inv = inv if inv is not None else next(
                (_finite(r.get("inv_prior")) for r in mine
                 if _finite(r.get("inv_prior")) is not None), None)
        if inv is not None:
            ax.axhline(inv, color="0.35", ls="--", lw=1, gid=f"inv-prior:{class_label(c)}")
            values.append(inv)
        _y_scale(ax, values)
        _finish_axes(ax, "Q(w) = E[1 / p(c | Y)]", class_label(c))
        _w_ticks(ax, [r for _, rows in groups for r in rows])
    handles = [Line2D([], [], color=color, marker=marker, ls=ls, ms=5, label=_wrap(label))
               for (label, _), (color, marker, ls) in zip(groups, styles, strict=True)]
    handles += [h for h in _style_handles(grid=False, lower=lower, reference=False,
                                          inv_prior=True, unreliable=unreliable)[1:]]
    fig.legend(handles=handles, loc="outside right upper", fontsize=LEGEND_FONTSIZE,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=LEGEND_FONTSIZE + 2)
    return fig


def support_figure(groups: Sequence[tuple[str, Sequence[dict]]], *, title: str | None = None):
    """The fraction of samples outside the class's support against w, one curve per setting
    (e.g. per perturbation (eps, kind)), one panel per class (pooled rows last).

    Args:
        groups: ``(label, rows)`` per setting; rows with ``class, w, outside, outside_low,
            outside_high`` (the Clopper-Pearson interval, drawn as an error bar).
        title: the figure's title.
    """
    from matplotlib.lines import Line2D

    classes = sorted({r.get("class") for _, rows in groups for r in rows
                      if r.get("class") is not None and _finite(r.get("outside")) is not None},
                     key=class_order)
    fig, axes = _panel_grid(classes)
    styles = _setting_styles(len(groups))
    for ax, c in zip(axes, classes, strict=True):
        for (label, rows), (color, marker, ls) in zip(groups, styles, strict=True):
            pts = sorted((r for r in rows if r.get("class") == c
                          and _finite(r.get("w")) is not None
                          and _finite(r.get("outside")) is not None), key=lambda r: r["w"])
            if not pts:
                continue
            x = [float(r["w"]) for r in pts]
            y = [float(r["outside"]) for r in pts]
            below = [max(v - (_finite(r.get("outside_low")) or v), 0.0)
                     for v, r in zip(y, pts, strict=True)]
            above = [max((_finite(r.get("outside_high")) or v) - v, 0.0)
                     for v, r in zip(y, pts, strict=True)]
            bars = ax.errorbar(x, y, yerr=[below, above], color=color, marker=marker, ls=ls,
                               ms=5, capsize=3, lw=1.5)
            bars.lines[0].set_gid(f"outside:{label} / {class_label(c)}")
        ax.set_ylim(bottom=0)
        _finish_axes(ax, "fraction outside the class's support", class_label(c))
        _w_ticks(ax, [r for _, rows in groups for r in rows])
    handles = [Line2D([], [], color=color, marker=marker, ls=ls, ms=5, label=_wrap(label))
               for (label, _), (color, marker, ls) in zip(groups, styles, strict=True)]
    handles.append(Line2D([], [], color="0.25", marker="|", ms=10, ls="none",
                          label="bars: Clopper-Pearson interval"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=LEGEND_FONTSIZE,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=LEGEND_FONTSIZE + 2)
    return fig
