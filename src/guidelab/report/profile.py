r"""Plot of where guidance acts: the decrease formula's integrand against the noise level.

For profiles from :func:`guidelab.exact.decrease_profile` (one per guidance strength w), the
figure shows, against the noise level sigma_t on a logarithmic axis, the decrease of
Q(w) = E[1/p(c|Y)] per unit log sigma,

    2w I(t) dt / dlog sigma = 2w I(t) sigma^2 / alpha^2,
    I(t) = E[ |grad log p_t(c|Y_t^w)|^2 / p_t(c|Y_t^w) ],

(dlog sigma / dt = alpha^2 / sigma^2 for alpha = e^-t, sigma^2 = 1 - e^-2t), so that the area
under each curve over the log-sigma axis is the total decrease 1/p(c) - Q(w) (up to the start
term E[1/p_T(c|Y_T)] - 1/p(c), negligible at T = 6). A band shows +- 2 standard errors for
Monte Carlo profiles. The legend gives each curve's total and the direct Q(w) of the same
sampler. ``per="time"`` plots 2w I(t) itself (area over t).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["profile_figure", "plot_profile"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def profile_figure(profiles: Sequence, *, per: str = "log_sigma", title: str | None = None):
    """A matplotlib figure of one or more :class:`~guidelab.exact.DecreaseProfile` curves.

    Args:
        profiles: profiles (typically one per w, same class).
        per: ``"log_sigma"`` (decrease per unit log sigma, default) or ``"time"``.
        title: optional title (default names the class).

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    if per not in ("log_sigma", "time"):
        raise ValueError(f"per: expected 'log_sigma' or 'time', got {per!r}")
    if not profiles:
        raise ValueError("profiles: expected at least one profile")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    several_classes = len({profile.c for profile in profiles}) > 1
    for profile in profiles:
        sigmas = profile.sigmas.numpy()
        alphas = profile.alphas.numpy()
        keep = sigmas > 0
        scale = 2 * profile.w * (sigmas**2 / alphas**2 if per == "log_sigma" else 1.0)
        curve = scale * profile.integrand.numpy()
        band = 2 * scale * profile.integrand_se.numpy()
        label = (f"{f'class {profile.c}, ' if several_classes else ''}"
                 f"w = {profile.w:g}: total {2 * profile.w * profile.total:.4g}, "
                 f"Q = {profile.direct_q:.4g}")
        line, = ax.plot(sigmas[keep], curve[keep], label=label)
        if band[keep].any():
            ax.fill_between(sigmas[keep], (curve - band)[keep], (curve + band)[keep],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("noise level sigma_t")
    ax.set_ylabel("decrease of Q per unit log sigma" if per == "log_sigma"
                  else "decrease of Q per unit time, 2w I(t)")
    who = "every class" if several_classes else f"class {profiles[0].c}"
    ax.set_title(title or f"Where guidance acts ({who}, "
                          f"{profiles[0].method}, {profiles[0].num_steps} steps)")
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
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
