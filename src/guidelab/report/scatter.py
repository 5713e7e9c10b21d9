r"""Scatter plots of stored samples of d <= 2 over the class-conditional density.

For d = 2 the samples of each (class, w) are drawn over contours of log p(x | c) on a grid; for
d = 1 as a histogram under the curve p(x | c). The density comes from the caller or from the
recorded spec's distribution (:func:`spec_densities`, per unit when a distribution key is
swept). Rows of panels are classes, columns are a few strengths; the axes are shared and cut at
the 0.5 % and 99.5 % quantiles of all the samples shown (plus a margin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from .plots import _pyplot, figure_png

__all__ = ["DensityFn", "spec_densities", "scatter_figure", "pick_strengths", "GRID_POINTS",
           "MAX_SCATTER_W"]

DensityFn = Callable[[np.ndarray, int], np.ndarray]
"""``density(x, c)``: log p(x | c) at points ``x`` ``[N, d]`` (float64) -> ``[N]``."""

MAX_SCATTER_W = 4
GRID_POINTS = 120
"""Grid points per axis of the density contours (d = 2) or the density curve (d = 1)."""


# ----------------------------------------------------------------------------- density

def spec_densities(spec_data: dict | None, sweep: dict
                   ) -> tuple[Callable[[str], DensityFn | None] | None, str | None]:
    """``unit_id -> density`` built from the recorded spec's distribution (``spec_data``, the
    parsed ``spec.toml``; ``sweep`` its sweep table), or (None, reason).

    Only the spec's structure is validated (no device check), so a report can be written on
    another machine than the run's."""
    if spec_data is None:
        return None, "no readable spec"
    try:
        import torch

        from ..studies.spec import Spec
        from ..studies.units import expand_units, unit_settings

        spec = Spec.model_validate(spec_data)
        swept_distribution = any(k.startswith("distribution") for k in sweep)
        base = None if swept_distribution else spec.distribution_object()
        units = {u.id: u for u in expand_units(spec)} if swept_distribution else {}
    except Exception as error:  # noqa: BLE001 - any failure only leaves the contours out
        return None, f"the spec's distribution could not be built ({type(error).__name__}: " \
                     f"{error})"

    cache: dict[str, DensityFn | None] = {}

    def wrap(distribution) -> DensityFn:
        def density(x: np.ndarray, c: int) -> np.ndarray:
            points = torch.as_tensor(np.asarray(x, dtype=np.float64))  # [N, d]
            return distribution.log_prob(points, 1.0, 0.0, int(c)).numpy()  # [N]
        return density

    def for_unit(unit_id: str) -> DensityFn | None:
        if base is not None:
            return wrap(base)
        if unit_id not in cache:
            unit = units.get(unit_id)
            try:
                cache[unit_id] = None if unit is None else wrap(
                    unit_settings(spec, unit).distribution_object())
            except Exception:  # noqa: BLE001
                cache[unit_id] = None
        return cache[unit_id]

    return for_unit, None


def scatter_figure(samples: dict[str, list], index: np.ndarray, classes: list[int],
                    strengths: list[float], dim: int,
                    density_of: Callable[[int], DensityFn | None]) -> tuple[bytes, list[str]]:
    """Panels (class rows x strength columns) of samples over log p(x|c) contours (d = 2) or
    a histogram under p(x|c) (d = 1). Returns the PNG and notes about panels."""
    plt = _pyplot()
    notes: list[str] = []
    w_all = np.asarray(samples["w"], dtype=np.float64)[index]  # [M]
    c_all = np.asarray(samples["class"])[index]  # [M]
    x_all = np.stack([np.asarray(samples[f"x{j}"], dtype=np.float64)[index]
                      for j in range(dim)], axis=1)  # [M, d]
    finite = np.isfinite(x_all).all(axis=1)  # [M]
    if not finite.any():
        raise ValueError("samples: no finite sample to draw")
    lo = np.quantile(x_all[finite], 0.005, axis=0)  # [d]
    hi = np.quantile(x_all[finite], 0.995, axis=0)  # [d]
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - 0.2 * span, hi + 0.2 * span
    rows, cols = len(classes), len(strengths)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.6, 2.7 * rows + 0.5),
                             squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    grid_x = np.linspace(lo[0], hi[0], GRID_POINTS)  # [G]
    if dim == 2:
        grid_y = np.linspace(lo[1], hi[1], GRID_POINTS)  # [G]
        gx, gy = np.meshgrid(grid_x, grid_y)  # [G, G]
        points = np.stack([gx.ravel(), gy.ravel()], axis=1)  # [G*G, 2]
    else:
        points = grid_x[:, None]  # [G, 1]
    failed = False
    for i, c in enumerate(classes):
        density = density_of(c)
        log_p = None
        if density is not None:
            try:
                log_p = np.asarray(density(points, c), dtype=np.float64).reshape(-1)  # [G*G]
                if log_p.shape[0] != points.shape[0] or not np.isfinite(log_p).any():
                    log_p = None
            except Exception:  # noqa: BLE001 - a failing density only leaves contours out
                log_p = None
            failed = failed or log_p is None
        for j, w in enumerate(strengths):
            ax = axes[i][j]
            pick = (c_all == c) & (w_all == w) & finite  # [M]
            x = x_all[pick]  # [m, d]
            color = colors[i % len(colors)]
            outside = int(((x < lo) | (x > hi)).any(axis=1).sum())
            if dim == 2:
                if log_p is not None:
                    top = np.max(log_p[np.isfinite(log_p)])
                    z = np.where(np.isfinite(log_p), np.maximum(log_p, top - 12.0),
                                 top - 12.0).reshape(gx.shape)  # [G, G]
                    ax.contourf(gx, gy, z, levels=12, cmap="Greys", alpha=0.4)
                    ax.contour(gx, gy, z, levels=12, colors="0.45", linewidths=0.4)
                ax.scatter(x[:, 0], x[:, 1], s=7, alpha=0.75, color=color, linewidths=0)
                ax.set_ylim(lo[1], hi[1])
            else:
                if len(x):
                    ax.hist(x[:, 0], bins=30, range=(lo[0], hi[0]), density=True, color=color,
                            alpha=0.55)
                if log_p is not None:
                    ax.plot(grid_x, np.exp(log_p), color="0.2", lw=1.2)
                ax.set_yticks([])
            ax.set_xlim(lo[0], hi[0])
            title = f"class {c}, w = {w:g}  (n = {len(x)}"
            title += f", {outside} outside)" if outside else ")"
            ax.set_title(title, fontsize=10)
            ax.tick_params(labelsize=9)
            if dim == 2:
                ax.set_aspect("equal", adjustable="box")
    if failed:
        notes.append("the density could not be evaluated for some classes; their panels "
                     "show the samples only.")
    fig.tight_layout()
    return figure_png(fig, dpi=100), notes


def pick_strengths(values: Iterable[float], k: int = MAX_SCATTER_W) -> list[float]:
    """Up to ``k`` strengths spread over the sorted distinct values (first and last kept)."""
    ordered = sorted(set(values))
    if len(ordered) <= k:
        return ordered
    picks = np.unique(np.round(np.linspace(0, len(ordered) - 1, k)).astype(int))
    return [ordered[i] for i in picks]


# ----------------------------------------------------------------------------- sections
