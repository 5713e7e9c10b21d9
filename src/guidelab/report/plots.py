"""Plots of experiment results (matplotlib, Agg backend: no display needed).

``plot_q_vs_w`` draws, per class, Q(w) = E[1/p(c|Y^w)] with its interval against the guidance
strength w on a symmetric-log axis (linear below w = 0.01, so that w = 0 has a place), the
reference 1/p(c) as a dashed line, and E[p(c|Y^w)] in a second panel. An interval whose upper
end is infinite (the tail diagnosis said the mean is unreliable) is drawn as an arrow upward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_q_vs_w"]


def plot_q_vs_w(rows: Sequence[dict], path: str | Path, *, title: str | None = None,
                reference_sampler: str = "exact_reverse") -> Path:
    """Write the Q(w) and E[p](w) figure to ``path`` (PNG) and return the path.

    Args:
        rows: result rows with keys ``class, w, sampler, q_mean, q_low, q_high, p_mean,
            inv_prior`` (as written by the experiments). Rows of ``reference_sampler`` are drawn
            as single markers at w = 0.
        path: output file; its folder is created; the file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..experiments.results import atomic_write_bytes

    classes = sorted({row["class"] for row in rows})
    fig, (ax_q, ax_p) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(classes):
        color = colors[i % len(colors)]
        main = sorted((r for r in rows if r["class"] == c and r["sampler"] != reference_sampler),
                      key=lambda r: r["w"])
        if not main:
            continue
        w = [r["w"] for r in main]
        q = [r["q_mean"] for r in main]
        low = [r["q_mean"] - r["q_low"] for r in main]
        finite_high = [r["q_high"] if math.isfinite(r["q_high"]) else r["q_mean"] for r in main]
        high = [h - r["q_mean"] for h, r in zip(finite_high, main, strict=True)]
        ax_q.errorbar(w, q, yerr=[low, high], color=color, marker="o", ms=4, capsize=3,
                      label=f"class {c}: Q(w)")
        unbounded = [r for r in main if not math.isfinite(r["q_high"])]
        if unbounded:
            ax_q.scatter([r["w"] for r in unbounded], [r["q_mean"] for r in unbounded],
                         marker="^", s=60, color=color, zorder=3,
                         label=f"class {c}: upper end unbounded (k-hat)")
        ax_q.axhline(main[0]["inv_prior"], color=color, ls="--", lw=1,
                     label=f"class {c}: 1/p(c) = {main[0]['inv_prior']:.3g}")
        for r in rows:
            if r["class"] == c and r["sampler"] == reference_sampler:
                ax_q.errorbar([0.0], [r["q_mean"]], yerr=[[r["q_mean"] - r["q_low"]],
                              [(r["q_high"] if math.isfinite(r["q_high"]) else r["q_mean"])
                               - r["q_mean"]]],
                              color=color, marker="s", mfc="none", ms=8, capsize=3, ls="none")
        ax_p.plot(w, [r["p_mean"] for r in main], color=color, marker="o", ms=4,
                  label=f"class {c}")
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
    ax_q.legend(fontsize=7, ncol=2)
    ax_p.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
