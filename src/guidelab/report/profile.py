r"""Plot of where guidance acts: the decrease formula's integrand against the noise level.

For profiles from :func:`guidelab.exact.decrease_profile` (one per class and guidance strength
w; a study stores them in its ``profile`` column as JSON, read back with
:func:`profiles_from_rows`), the figure shows, against the noise level sigma_t on a logarithmic
axis, the decrease of Q(w) = E[1/p(c|Y)] per unit log sigma,

    2w I(t) dt / dlog sigma = 2w I(t) sigma^2 / alpha^2,
    I(t) = E[ |grad log p_t(c|Y_t^w)|^2 / p_t(c|Y_t^w) ],

(dlog sigma / dt = alpha^2 / sigma^2 for alpha = e^-t, sigma^2 = 1 - e^-2t), so that the area
under each curve over the log-sigma axis is the total decrease 2w int I dt ("total"). A band
shows +- 2 standard errors of the Monte Carlo integrand (profiles of d = 2 data, estimated on
paths); grid profiles (d = 1) have no Monte Carlo error and no band. ``per="time"`` plots
2w I(t) itself (area over t).

The legend reconciles each profile with the sampler it describes: its entry gives the total
with 2 standard errors, start - total = the formula's Q (start = E[1/p_T(c|Y_T)], about 1/p(c)),
the direct Q of the same continuous-time sampler (the mean of 1/p(c|Y) over its end points)
and their difference (direct - formula, discretisation and Monte Carlo error) with its standard
error. The legend sits below the axes, off the curves.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["profile_figure", "plot_profile", "profiles_from_rows", "profile_label",
           "PROFILE_CAPTION"]

PROFILE_CAPTION = (
    "Where guidance lowers Q: the decrease of Q = E[1/p(c|Y)] per unit log sigma along the "
    "continuous-time guided reverse SDE with exact scores, against the noise level sigma "
    "(the area under a curve is the total decrease 2w \u222b I dt). The shaded band is 2 "
    "standard errors of the Monte Carlo integrand (no band: the profile was propagated on a "
    "grid, with no Monte Carlo error). A spike near sigma ~ 1 is where the class posterior "
    "p_t(c|y) changes fastest: the noise level at which the classes separate. Each legend entry "
    "reconciles start \u2212 total = the formula's Q with the direct Q of the same sampler; "
    "their difference is discretisation and Monte Carlo error.")
"""The figure's caption in the HTML report."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def profiles_from_rows(rows: Sequence[dict]) -> list:
    """The :class:`~guidelab.exact.DecreaseProfile` of every row with a ``profile`` JSON cell
    (rows without one, or with an empty one, are skipped), in row order."""
    from ..exact import DecreaseProfile

    out = []
    for row in rows:
        text = row.get("profile")
        if isinstance(text, str) and text.strip():
            out.append(DecreaseProfile.from_dict(json.loads(text)))
    return out


def profile_label(profile, *, with_class: bool = True) -> str:
    """The legend entry of ``profile``: total +- 2 se, start - total = formula Q, direct Q +-
    2 se and the difference +- se (module docstring)."""
    decrease = 2 * profile.w
    total, total_se = decrease * profile.total, decrease * profile.total_se
    head = f"class {profile.c}, w = {profile.w:g}" if with_class else f"w = {profile.w:g}"
    grid = profile.method == "grid"
    spread = " (grid: no Monte Carlo error)" if grid else f" \u00b1 {2 * total_se:.2g} (2 se)"
    direct = "" if grid else f" \u00b1 {2 * profile.direct_q_se:.2g}"
    difference = f"difference {profile.difference:+.3g}"
    if not grid:
        difference += f" \u00b1 {profile.difference_se:.2g} (se)"
    return (f"{head}: total {total:.4g}{spread}\n"
            f"start {profile.start:.4g} \u2212 total = formula Q {profile.formula_q:.4g}; "
            f"direct Q {profile.direct_q:.4g}{direct}; {difference}")


def profile_figure(profiles: Sequence, *, per: str = "log_sigma", title: str | None = None):
    """A matplotlib figure of one or more :class:`~guidelab.exact.DecreaseProfile` curves.

    Args:
        profiles: profiles (typically one per w and class).
        per: ``"log_sigma"`` (decrease per unit log sigma, default) or ``"time"``.
        title: optional title (default names the class, method and steps).

    Returns:
        The ``matplotlib.figure.Figure``: one line per profile in ``axes[0].lines``, its band
        a filled region, the legend (:func:`profile_label`) below the axes.
    """
    if per not in ("log_sigma", "time"):
        raise ValueError(f"per: expected 'log_sigma' or 'time', got {per!r}")
    if not profiles:
        raise ValueError("profiles: expected at least one profile")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 4.2 + 0.42 * len(profiles)), layout="constrained")
    several_classes = len({profile.c for profile in profiles}) > 1
    for profile in profiles:
        sigmas = profile.sigmas.numpy()
        alphas = profile.alphas.numpy()
        keep = sigmas > 0
        scale = 2 * profile.w * (sigmas**2 / alphas**2 if per == "log_sigma" else 1.0)
        curve = scale * profile.integrand.numpy()
        band = 2 * scale * profile.integrand_se.numpy()
        label = profile_label(profile)
        line, = ax.plot(sigmas[keep], curve[keep], label=label, lw=1.6)
        if band[keep].any():
            ax.fill_between(sigmas[keep], (curve - band)[keep], (curve + band)[keep],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("noise level sigma_t", fontsize=11)
    ax.set_ylabel("decrease of Q per unit log sigma" if per == "log_sigma"
                  else "decrease of Q per unit time, 2w I(t)", fontsize=11)
    ax.tick_params(labelsize=10)
    who = "every class" if several_classes else f"class {profiles[0].c}"
    ax.set_title(title or f"Where guidance acts ({who}, {profiles[0].method}, "
                          f"{profiles[0].num_steps} steps)", fontsize=11)
    fig.legend(loc="outside lower center", fontsize=9.5, frameon=False, ncols=1)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_profile(profiles: Sequence, path: str | Path, **options) -> Path:
    """Write :func:`profile_figure` of ``profiles`` to a PNG at ``path``; returns the path."""
    plt = _pyplot()
    fig = profile_figure(profiles, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
