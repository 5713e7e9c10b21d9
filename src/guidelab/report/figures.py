r"""Figures of image-like samples and of the judge, drawn from stored columns only.

* :func:`sample_grid_figure`: the stored samples of a study whose samples have more than two
  numbers (an 8 x 8 digit is 64 numbers, ``x0 .. x63`` in the samples file, row-major). A
  sample of D numbers is drawn as a square grey image of side sqrt(D) when D is a square, as a
  colour image of side sqrt(D / 3) when D / 3 is (channels first, ``[3, H, W]``), else as a
  1 x D strip. One row of images per class, one group of columns per strength w, and within a
  group the samples of rows 0, 1, ..., k - 1 of the unit: the same position in every group is
  the same row, so the same initial and per-step noise (rows are coupled across w), and a
  group to the right shows what guidance did to the same noise. Grey values are drawn dark for
  large values (ink on paper), on one scale for the whole figure.
* :func:`reliability_figure`: the judge's reliability diagrams from the ``calibration`` JSON
  column (:func:`guidelab.metrics.calibration.calibration_summary`): for equal-width bins of
  the predicted probability, the observed frequency against the mean prediction (top-label:
  confidence max_c p(c|y) against accuracy; classwise: every p(c|y) against the frequency of
  class c), with the diagonal of perfect calibration and the count of each bin below; the
  panel titles give the ECEs.

Artists that carry data have a ``gid`` (``samples``, ``reliability:top``,
``reliability:classwise``) so that tests read the figure's data back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .plots import LEGEND_FONTSIZE, _pyplot

__all__ = ["image_layout", "sample_cells", "sample_mosaic", "sample_grid_figure",
           "reliability_figure", "RULE_NAMES"]

RULE_NAMES = {"cfg": "CFG (classifier-free guidance)",
              "classifier": "classifier guidance (noisy classifier)"}
"""Readable names of the guidance rules a study may sweep."""

GAP = 1
"""Blank pixels between two images of a group."""
GROUP_GAP = 4
"""Blank pixels between two groups (strengths)."""


def image_layout(size: int) -> tuple[int, int, int]:
    """(height, width, channels) of a sample of ``size`` numbers (module docstring)."""
    side = math.isqrt(size)
    if side * side == size:
        return side, side, 1
    if size % 3 == 0:
        side = math.isqrt(size // 3)
        if 3 * side * side == size:
            return side, side, 3
    return 1, size, 1


def sample_cells(samples: Mapping[str, Sequence], *, per_cell: int = 4,
                 keep: np.ndarray | None = None
                 ) -> tuple[list, list[float], dict[tuple, np.ndarray], dict]:
    """The samples of each (class, w), on rows shared by every w of the class.

    Args:
        samples: columns of the samples files (``class, w, row, x0 .. x{D-1}``; without
            ``row`` the order of the file is the row).
        per_cell: the most samples per (class, w).
        keep: ``[M]`` booleans: the samples to use (default all).

    Returns:
        ``(classes, strengths, cells, rows)``: ``cells[(c, w)]`` is ``[k, D]`` (float64) and
        ``rows[c]`` the k row indices it holds, in order: the same for every w of class c.
    """
    size = sum(1 for key in samples if key.startswith("x") and key[1:].isdigit())
    if size == 0:
        raise ValueError("samples: no x0 column")
    total = len(samples["w"])
    pick = np.ones(total, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    c_all = np.asarray(samples["class"], dtype=object)
    w_all = np.asarray(samples["w"], dtype=np.float64)
    r_all = np.asarray(samples["row"], dtype=np.int64) if "row" in samples else None
    x_all = np.stack([np.asarray(samples[f"x{j}"], dtype=np.float64)
                      for j in range(size)], axis=1)  # [M, D]
    classes = sorted({c for c in c_all[pick].tolist()}, key=lambda c: (isinstance(c, str), c))
    strengths = sorted({float(w) for w in w_all[pick]})
    cells: dict[tuple, np.ndarray] = {}
    rows: dict = {}
    for c in classes:
        mine = pick & (c_all == c)
        per_w = {}
        for w in strengths:
            index = np.flatnonzero(mine & (w_all == w))  # [m]
            order = r_all[index] if r_all is not None else np.arange(index.size)
            per_w[w] = dict(zip(order.tolist(), index.tolist(), strict=True))
        present = [set(v) for v in per_w.values() if v]
        common = sorted(set.intersection(*present)) if present else []
        rows[c] = common[:per_cell]
        for w in strengths:
            if per_w[w]:
                cells[(c, w)] = x_all[[per_w[w][r] for r in rows[c]]]  # [k, D]
    return classes, strengths, cells, rows


def _value_range(cells: Mapping[tuple, np.ndarray]) -> tuple[float, float]:
    """One grey scale for the figure: [-1, 1] when the values lie in it (scaled pixels),
    else their 0.5 % and 99.5 % quantiles."""
    values = np.concatenate([v.ravel() for v in cells.values()]) if cells else np.zeros(1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return -1.0, 1.0
    lo, hi = np.quantile(values, [0.005, 0.995])
    if lo >= -1.5 and hi <= 1.5:
        return -1.0, 1.0
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def sample_mosaic(cells: Mapping[tuple, np.ndarray], classes: Sequence, strengths: Sequence[float],
                  *, per_cell: int | None = None) -> tuple[np.ndarray, dict]:
    """Tile the cells into one array (module docstring): ``[H, W]`` (grey) or ``[H, W, 3]``
    (colour, raw values), NaN in the gaps and where a cell has fewer samples.

    Returns the mosaic and its geometry: ``image`` (h, w, channels), ``per_cell`` k,
    ``row_centres`` (one per class), ``group_centres`` (one per strength) and ``origin``:
    ``(c, w, i) -> (top, left)`` of the i-th sample of a cell.
    """
    size = next(iter(cells.values())).shape[1] if cells else 1
    h, w, ch = image_layout(size)
    k = per_cell or max((v.shape[0] for v in cells.values()), default=1)
    k = max(k, 1)
    group_width = k * (w + GAP) - GAP
    height = len(classes) * (h + GAP) - GAP
    width = len(strengths) * (group_width + GROUP_GAP) - GROUP_GAP
    mosaic = np.full((height, width, ch), np.nan)
    origin = {}
    for r, c in enumerate(classes):
        for j, s in enumerate(strengths):
            block = cells.get((c, s))
            if block is None:
                continue
            for i in range(min(k, block.shape[0])):
                top, left = r * (h + GAP), j * (group_width + GROUP_GAP) + i * (w + GAP)
                image = block[i].reshape(ch, h, w).transpose(1, 2, 0) if ch == 3 \
                    else block[i].reshape(h, w, 1)
                mosaic[top:top + h, left:left + w] = image
                origin[(c, s, i)] = (top, left)
    geometry = {"image": (h, w, ch), "per_cell": k,
                "row_centres": [r * (h + GAP) + (h - 1) / 2 for r in range(len(classes))],
                "group_centres": [j * (group_width + GROUP_GAP) + (group_width - 1) / 2
                                  for j in range(len(strengths))],
                "origin": origin}
    return (mosaic[:, :, 0] if ch == 1 else mosaic), geometry


def sample_grid_figure(cells: Mapping[tuple, np.ndarray], classes: Sequence,
                       strengths: Sequence[float], *, title: str | None = None,
                       per_cell: int | None = None):
    """The sample grid (module docstring) of :func:`sample_cells`' cells; a Figure whose image
    (``gid = "samples"``) holds :func:`sample_mosaic`'s array (grey: raw values on the
    figure's scale; colour: scaled to [0, 1])."""
    plt = _pyplot()
    mosaic, geometry = sample_mosaic(cells, classes, strengths, per_cell=per_cell)
    lo, hi = _value_range(cells)
    height, width = mosaic.shape[:2]
    fig_width = float(np.clip(0.075 * width + 1.8, 6.0, 13.5))
    image_width = fig_width - 1.8
    fig_height = image_width * height / max(width, 1) + 0.9 + (0.4 if title else 0.0)
    fig, ax = plt.subplots(figsize=(fig_width, max(fig_height, 2.0)), layout="constrained")
    if mosaic.ndim == 2:
        cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=lo, vmax=hi,
                  interpolation="nearest", gid="samples")
    else:
        scaled = np.clip((mosaic - lo) / (hi - lo), 0.0, 1.0)
        ax.imshow(np.where(np.isnan(scaled), 1.0, scaled), interpolation="nearest",
                  gid="samples")
    ax.set_yticks(geometry["row_centres"])
    ax.set_yticklabels([f"class {c}" for c in classes], fontsize=LEGEND_FONTSIZE)
    ax.xaxis.tick_top()
    ax.set_xticks(geometry["group_centres"])
    ax.set_xticklabels([f"w = {s:g}" for s in strengths], fontsize=LEGEND_FONTSIZE + 1)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel(f"each group: rows 0 to {geometry['per_cell'] - 1} of the unit; the same "
                  f"position in every group is the same noise", fontsize=LEGEND_FONTSIZE)
    if title:
        ax.set_title(title, fontsize=LEGEND_FONTSIZE + 2, pad=12)
    return fig


def reliability_figure(calibration: Mapping[str, Any], *, title: str | None = None):
    """Reliability diagrams (top-label, classwise) with bin counts from a ``calibration``
    dict (module docstring); the reliability curves have gids ``reliability:top`` and
    ``reliability:classwise`` and hold the non-empty bins' (confidence, frequency)."""
    plt = _pyplot()
    bins = int(calibration.get("bins") or len(calibration["reliability_top"]["count"]))
    edges = np.linspace(0.0, 1.0, bins + 1)
    fig, axes = plt.subplots(2, 2, figsize=(10.0, 5.8), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [3, 1.2]})
    for j, (kind, name, xlabel, ylabel) in enumerate((
            ("top", "top-label", "confidence max_c p(c|y) (bins of equal width)",
             "accuracy in the bin"),
            ("classwise", "classwise", "predicted p(c|y) (bins of equal width)",
             "frequency of class c in the bin"))):
        table = calibration[f"reliability_{kind}"]
        conf = np.array([np.nan if v is None else v for v in table["confidence"]], float)
        freq = np.array([np.nan if v is None else v for v in table["frequency"]], float)
        count = np.asarray(table["count"], dtype=float)
        used = (count > 0) & np.isfinite(conf) & np.isfinite(freq)
        ax, ax_n = axes[0][j], axes[1][j]
        ax.plot([0, 1], [0, 1], color="0.55", ls="--", lw=1, label="perfect calibration")
        ax.plot(conf[used], freq[used], color="tab:blue", marker="o", ms=5, lw=1.5,
                gid=f"reliability:{kind}", label="observed (bin mean)")
        ece = calibration.get(f"ece_{kind}")
        ece_text = f"ECE = {ece:.3g}" if isinstance(ece, (int, float)) else "ECE not recorded"
        ax.set_title(f"{name}: {ece_text}", fontsize=LEGEND_FONTSIZE + 1)
        ax.set_ylabel(ylabel, fontsize=LEGEND_FONTSIZE)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=LEGEND_FONTSIZE)
        ax.legend(loc="best", fontsize=LEGEND_FONTSIZE - 1)
        ax_n.bar(edges[:-1], np.maximum(count, 0), width=1.0 / bins, align="edge",
                 color="0.6", edgecolor="white")
        if (count > 0).any():
            ax_n.set_yscale("log")
        ax_n.set_xlabel(xlabel, fontsize=LEGEND_FONTSIZE)
        ax_n.set_ylabel("count", fontsize=LEGEND_FONTSIZE)
        ax_n.tick_params(labelsize=LEGEND_FONTSIZE - 1)
    n = calibration.get("n")
    head = title or "Judge calibration on held-out data"
    fig.suptitle(head + (f" (n = {n})" if n is not None else ""), fontsize=LEGEND_FONTSIZE + 2)
    return fig
