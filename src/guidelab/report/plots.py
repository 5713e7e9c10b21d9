"""Plots of experiment results (matplotlib, Agg backend: no display needed).

``q_vs_w_figure`` draws, per class, Q(w) = E[1/p(c|Y^w)] with its interval against the guidance
strength w on a symmetric-log axis (linear below w = 0.01, so that w = 0 has a place), the
reference 1/p(c) as a dashed line, and E[p(c|Y^w)] in a second panel. An interval whose upper
end is infinite (the tail diagnosis said the mean is unreliable) is drawn as an arrow upward.
``plot_q_vs_w`` writes that figure to a PNG file; ``figure_png`` turns any figure into PNG
bytes (the HTML report embeds them).

Missing values (a row without ``q_low``, ``p_mean``, ``inv_prior``, ...: None or NaN) are left
out of the panel that needs them rather than failing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_q_vs_w", "q_vs_w_figure", "figure_png"]


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


def figure_png(fig, *, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (Agg); the figure is closed."""
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def q_vs_w_figure(rows: Sequence[dict], *, title: str | None = None,
                  reference_sampler: str = "exact_reverse"):
    """The Q(w) and E[p](w) figure (a matplotlib Figure with two panels).

    Args:
        rows: result rows with keys ``class, w, sampler, q_mean, q_low, q_high, p_mean,
            inv_prior`` (as written by the experiments). Rows of ``reference_sampler`` are drawn
            as single markers at w = 0. A missing or NaN value leaves that point (or the 1/p(c)
            line) out; a missing ``q_low``/``q_high`` draws the point without its interval.
        title: the figure's title.
    """
    plt = _pyplot()
    classes = sorted({row["class"] for row in rows})
    fig, (ax_q, ax_p) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def interval(r: dict) -> tuple[float, float]:
        """Lower and upper error-bar lengths; an unbounded or missing end has length 0."""
        q, low, high = _number(r.get("q_mean")), _number(r.get("q_low")), _number(r.get("q_high"))
        low = q - low if low is not None and math.isfinite(low) else 0.0
        high = high - q if high is not None and math.isfinite(high) else 0.0
        return max(low, 0.0), max(high, 0.0)

    for i, c in enumerate(classes):
        color = colors[i % len(colors)]
        main = sorted((r for r in rows if r["class"] == c and r.get("sampler") != reference_sampler
                       and _number(r.get("w")) is not None), key=lambda r: r["w"])
        if not main:
            continue
        with_q = [r for r in main if _number(r.get("q_mean")) is not None]
        if with_q:
            bars = [interval(r) for r in with_q]
            ax_q.errorbar([r["w"] for r in with_q], [r["q_mean"] for r in with_q],
                          yerr=[[b[0] for b in bars], [b[1] for b in bars]], color=color,
                          marker="o", ms=4, capsize=3, label=f"class {c}: Q(w)")
            unbounded = [r for r in with_q if _number(r.get("q_high")) == math.inf]
            if unbounded:
                ax_q.scatter([r["w"] for r in unbounded], [r["q_mean"] for r in unbounded],
                             marker="^", s=60, color=color, zorder=3,
                             label=f"class {c}: upper end unbounded (k-hat)")
        inv_prior = next((_number(r.get("inv_prior")) for r in main
                          if _number(r.get("inv_prior")) is not None), None)
        if inv_prior is not None:
            ax_q.axhline(inv_prior, color=color, ls="--", lw=1,
                         label=f"class {c}: 1/p(c) = {inv_prior:.3g}")
        for r in rows:
            if r["class"] == c and r.get("sampler") == reference_sampler \
                    and _number(r.get("q_mean")) is not None:
                low, high = interval(r)
                ax_q.errorbar([0.0], [r["q_mean"]], yerr=[[low], [high]], color=color,
                              marker="s", mfc="none", ms=8, capsize=3, ls="none")
        with_p = [r for r in main if _number(r.get("p_mean")) is not None]
        if with_p:
            ax_p.plot([r["w"] for r in with_p], [r["p_mean"] for r in with_p], color=color,
                      marker="o", ms=4, label=f"class {c}")
    if any(r.get("sampler") == reference_sampler for r in rows):
        ax_q.plot([], [], color="gray", marker="s", mfc="none", ls="none",
                  label="exact reverse kernel, w = 0")
    for ax in (ax_q, ax_p):
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("guidance strength w  (CFG scale = 1 + w)")
        ax.grid(True, alpha=0.3)
    ax_q.set_ylabel("Q(w) = E[1 / p(c | Y)]")
    ax_q.set_title("average reciprocal class probability")
    ax_p.set_ylabel("E[p(c | Y)]")
    ax_p.set_title("average class probability")
    if ax_q.get_legend_handles_labels()[0]:
        ax_q.legend(fontsize=7, ncol=2)
    if ax_p.get_legend_handles_labels()[0]:
        ax_p.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_q_vs_w(rows: Sequence[dict], path: str | Path, *, title: str | None = None,
                reference_sampler: str = "exact_reverse") -> Path:
    """Write the Q(w) and E[p](w) figure of :func:`q_vs_w_figure` to ``path`` (PNG) and return
    the path.

    Args:
        rows: result rows with keys ``class, w, sampler, q_mean, q_low, q_high, p_mean,
            inv_prior`` (as written by the experiments). Rows of ``reference_sampler`` are drawn
            as single markers at w = 0.
        path: output file; its folder is created; the file is written atomically.
    """
    from ..studies.results import atomic_write_bytes

    fig = q_vs_w_figure(rows, title=title, reference_sampler=reference_sampler)
    path = Path(path)
    atomic_write_bytes(path, figure_png(fig))
    return path
