"""Figures of the li-jiao-digits experiment (matplotlib, Agg backend: no display needed).

* :func:`plot_digit_samples`: a picture of samples, one row per class and one column group per
  (guidance rule, w), the first group real held-out digits; the same trial rows in every group,
  so a column group to the right shows what guidance did to the *same* noise.
* :func:`plot_reliability`: reliability diagrams of the evaluation classifier on held-out
  digits (top-label and classwise), with the expected calibration errors.
* :func:`plot_digits_q_vs_w`: pooled Q(w) = E[1/p_eval(c|Y)] per model with its interval
  (an infinite upper end, when the tail diagnosis says the mean is unreliable, is an arrow),
  the real-digit reference, and E[p_eval(c|Y)] with the 1% quantile of p_eval(c|Y).

:func:`write_digits_report` writes all three next to ``results.csv``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..studies.results import atomic_write_bytes

__all__ = ["digit_mosaic", "plot_digit_samples", "plot_reliability", "plot_digits_q_vs_w",
           "write_digits_report"]

_GUIDANCE_LABEL = {"cfg": "CFG", "classifier": "classifier guidance"}
_MODEL_STYLE = {"network": ("tab:blue", "o"), "kernel": ("tab:orange", "s")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def digit_mosaic(groups: Sequence[np.ndarray], *, side: int = 8, gap: int = 1,
                 group_gap: int = 4) -> np.ndarray:
    """Tile images into one array: ``groups[g]`` is ``[rows, k, side * side]``.

    Returns ``[rows * (side + gap) - gap, width]`` with NaN in the gaps (drawn blank): row r of
    the mosaic holds, for every group, its k images of row r side by side.
    """
    rows = groups[0].shape[0]
    widths = [g.shape[1] * (side + gap) - gap for g in groups]
    height = rows * (side + gap) - gap
    mosaic = np.full((height, sum(widths) + group_gap * (len(groups) - 1)), np.nan)
    left = 0
    for group, width in zip(groups, widths, strict=True):
        for r in range(rows):
            for j in range(group.shape[1]):
                top, x0 = r * (side + gap), left + j * (side + gap)
                mosaic[top:top + side, x0:x0 + side] = group[r, j].reshape(side, side)
        left += width + group_gap
    return mosaic


def plot_digit_samples(samples: dict, labels, real_images: np.ndarray, real_labels: np.ndarray,
                       path: str | Path, *, models: Sequence[str] | None = None,
                       columns: int = 3, title: str | None = None) -> Path:
    """Write the sample picture (PNG) and return its path.

    Args:
        samples: ``{(model, guidance, w): [N, 64]}`` samples in the scaled pixel units,
            rows ordered by class then trial.
        labels: ``[N]`` the class of each row.
        real_images, real_labels: held-out digits ``[n, 64]`` and their classes (first group).
        models: models to draw, one panel each (default: all in ``samples``).
        columns: samples per cell (trials 0..columns-1 of each class).

    Pixels are clipped to [-1, 1] (the data range) and drawn dark for ink (+1).
    """
    plt = _pyplot()
    labels = np.asarray(labels)
    real_labels = np.asarray(real_labels)
    classes = sorted(set(labels.tolist()))
    models = list(models or dict.fromkeys(key[0] for key in samples))
    panels = []
    for model in models:
        keys = sorted((k for k in samples if k[0] == model), key=lambda k: (k[1] != "cfg", k[2]))
        # w = 0 is unguided under every rule (the same samples): show it once
        keys = [k for k in keys if k[2] != 0.0 or k == keys[0] or k[1] == keys[0][1]]
        real = np.stack([real_images[real_labels == c][:columns] for c in classes])  # [C, k, 64]
        groups, names = [real], ["real"]
        for key in keys:
            values = np.asarray(samples[key], dtype=np.float64)  # [N, 64]
            groups.append(np.stack([values[labels == c][:columns] for c in classes]))
            rule = "unguided" if key[2] == 0.0 else ("CFG" if key[1] == "cfg" else "CG")
            names.append(f"{rule} w={key[2]:g}")
        panels.append((model, digit_mosaic(groups), names, groups))
    height = max(p[1].shape[0] for p in panels)
    width = max(p[1].shape[1] for p in panels)
    fig_width = min(24.0, max(8.0, width / 16))
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(fig_width, len(panels) * (fig_width * height / width + 1.1)
                                      + 0.5))
    for ax, (model, mosaic, names, groups) in zip(axes[:, 0], panels, strict=True):
        image = np.clip(mosaic, -1.0, 1.0)
        cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(image), cmap=cmap, vmin=-1, vmax=1,
                  interpolation="nearest")
        centres, left = [], 0
        for group in groups:
            group_width = group.shape[1] * 9 - 1
            centres.append(left + group_width / 2)
            left += group_width + 4
        ax.set_xticks(centres)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_yticks([r * 9 + 3.5 for r in range(len(classes))])
        ax.set_yticklabels([str(c) for c in classes], fontsize=8)
        ax.set_ylabel("class")
        ax.set_title(f"{model}: samples (the same trial rows in every column group)",
                     fontsize=9)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(calibration: dict, path: str | Path) -> Path:
    """Reliability diagrams (top-label, classwise) from the ``calibration`` dict of a run."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    bins = calibration["bins"]
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, kind, name in ((axes[0], "top", "top-label (confidence = max p)"),
                           (axes[1], "classwise", "classwise (every p(c|y))")):
        table = calibration[f"reliability_{kind}"]
        confidence = np.asarray(table["confidence"], dtype=float)
        frequency = np.asarray(table["frequency"], dtype=float)
        count = np.asarray(table["count"], dtype=float)
        used = count > 0
        ax.bar(edges[:-1][used], frequency[used], width=1.0 / bins, align="edge",
               edgecolor="black", color="tab:blue", alpha=0.7, label="observed frequency")
        ax.plot(confidence[used], frequency[used], "o", color="black", ms=4,
                label="(mean p, frequency) per bin")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfect calibration")
        for left, f, n in zip(edges[:-1][used], frequency[used], count[used], strict=True):
            ax.text(left + 0.5 / bins, min(f + 0.02, 0.97), f"{int(n)}", ha="center",
                    fontsize=6)
        ece = calibration[f"ece_{kind}"]
        ax.set_title(f"{name}\nECE = {ece:.4f} ({bins} equal-width bins)", fontsize=9)
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed frequency")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"evaluation classifier on held-out digits (n = {calibration['n']}): "
                 f"{calibration['evaluator']}, accuracy {calibration['accuracy']:.3f}",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_digits_q_vs_w(rows: Sequence[dict], path: str | Path, *,
                       title: str | None = None) -> Path:
    """Pooled Q(w) with intervals per model and guidance rule, the real-digit reference, and
    E[p_eval(c|Y)] with its 1% quantile (``p_q01``)."""
    plt = _pyplot()
    pooled = [r for r in rows if r["class"] == "all"]
    real = next((r for r in pooled if r["model"] == "real"), None)
    rules = [g for g in ("cfg", "classifier") if any(r["guidance"] == g for r in pooled)]
    fig, axes = plt.subplots(2, len(rules), squeeze=False, figsize=(5.6 * len(rules), 8.0),
                             sharex=True)
    for j, rule in enumerate(rules):
        ax_q, ax_p = axes[0, j], axes[1, j]
        if real is not None:
            high = real["q_high"] if math.isfinite(real["q_high"]) else real["q_mean"]
            ax_q.axhline(real["q_mean"], color="gray", ls="--", lw=1,
                         label=f"real held-out digits: {real['q_mean']:.3g}")
            ax_q.axhspan(real["q_low"], high, color="gray", alpha=0.15)
            ax_p.axhline(real["p_mean"], color="gray", ls="--", lw=1, label="real: E[p]")
            ax_p.axhline(real["p_q01"], color="gray", ls=":", lw=1, label="real: 1% quantile")
        for model, (color, marker) in _MODEL_STYLE.items():
            line = sorted((r for r in pooled if r["model"] == model and r["guidance"] == rule
                           and math.isfinite(r["q_mean"])), key=lambda r: r["w"])
            if not line:
                continue
            w = np.array([r["w"] for r in line])
            q = np.array([r["q_mean"] for r in line])
            low = q - np.array([r["q_low"] for r in line])
            top = np.array([r["q_high"] if math.isfinite(r["q_high"]) else r["q_mean"]
                            for r in line])
            ax_q.errorbar(w, q, yerr=[low, top - q], color=color, marker=marker, ms=5,
                          capsize=3, label=f"{model}: Q(w) pooled")
            unbounded = [r for r in line if not math.isfinite(r["q_high"])]
            if unbounded:
                ax_q.scatter([r["w"] for r in unbounded], [r["q_mean"] for r in unbounded],
                             marker="^", s=70, color=color, zorder=3,
                             label=f"{model}: upper end unbounded (k-hat)")
            ax_p.plot(w, [r["p_mean"] for r in line], color=color, marker=marker, ms=5,
                      label=f"{model}: E[p]")
            ax_p.plot(w, [r["p_q01"] for r in line], color=color, marker=marker, ms=4,
                      ls=":", mfc="none", label=f"{model}: 1% quantile of p")
        ax_q.set_yscale("log")
        ax_q.set_title(f"{_GUIDANCE_LABEL[rule]}: Q(w) = E[1 / p_eval(c | Y)], all classes",
                       fontsize=9)
        ax_q.set_ylabel("Q(w) (log scale)")
        ax_p.set_title(f"{_GUIDANCE_LABEL[rule]}: p_eval(c | Y)", fontsize=9)
        ax_p.set_ylabel("E[p]  /  1% quantile of p")
        ax_p.set_xlabel("guidance strength w  (CFG scale = 1 + w)")
        strengths = sorted({r["w"] for r in pooled if r["guidance"] == rule})
        for ax in (ax_q, ax_p):
            ax.set_xscale("symlog", linthresh=0.5)
            ax.set_xticks(strengths)
            ax.set_xticklabels([f"{w:g}" for w in strengths])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def write_digits_report(result, out_dir: str | Path) -> dict[str, Path]:
    """Write ``q_vs_w.png``, ``samples.png`` and ``reliability.png`` for a
    :class:`~guidelab.studies.li_jiao_digits.DigitsResult`; return their paths."""
    out = Path(out_dir)
    config = result.config
    title = (f"li-jiao-digits: {config.sampler} ({config.schedule}, T = {config.steps}), "
             f"{config.trials} trials per class, evaluator {result.calibration['evaluator']}")
    return {
        "q_vs_w": plot_digits_q_vs_w(result.rows, out / "q_vs_w.png", title=title),
        "samples": plot_digit_samples(result.samples, result.labels.numpy(), result.real_images,
                                      result.real_labels, out / "samples.png",
                                      columns=config.grid_columns,
                                      title=f"rows: classes; columns: w; {config.sampler}, "
                                            f"T = {config.steps}"),
        "reliability": plot_reliability(result.calibration, out / "reliability.png"),
    }
