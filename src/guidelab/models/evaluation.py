r"""How far a score model is from an exact one: relative L2 error over noise levels.

At each level l of a fixed grid (noise ratios r_l = sigma_l / alpha_l log-uniform on
``noise_range``, variance preserving: alpha_l = 1 / sqrt(1 + r_l^2), sigma_l = r_l alpha_l),
points are drawn from the noised data: classes c_i ~ p(c), x0_i ~ p(x | c_i) exactly,
x_i = alpha_l x0_i + sigma_l z_i (the same x0_i and z_i at every level). With the exact score s
and the model's s_hat,

    E_l  = (1/n) sum_i || s_hat(x_i) - s(x_i) ||^2,    S_l = (1/n) sum_i || s(x_i) ||^2,

and the per-level relative error is sqrt(E_l / S_l). Two totals:

* ``weighting="dsm"`` (default): sqrt( sum_l sigma_l^2 E_l / sum_l sigma_l^2 S_l ), the
  sigma^2-weighted error of denoising score matching, i.e. the relative error of the implied
  noise prediction -sigma s pooled over the grid (dominated by the noisier levels, where
  E||sigma s||^2 is largest);
* ``weighting="uniform"``: sqrt( (1/L) sum_l E_l / S_l ), every level counting the same
  (dominated by the least accurate levels, often the cleanest).

Both are reported for the conditional score (each point with its own class c_i) and the
unconditional one (c = None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ScoreErrorReport", "score_error", "noise_grid"]

WEIGHTINGS = ("dsm", "uniform")


@dataclass
class ScoreErrorReport:
    """Relative L2 error of a score model against an exact one (module docstring).

    Attributes:
        noise_ratios, alphas, sigmas: the grid, ``[L]`` float64 each.
        conditional: per-level relative error of s(x | c), ``[L]`` float64.
        unconditional: per-level relative error of s(x), ``[L]`` float64 (None if skipped).
        total: the weighted total of the conditional errors (``weighting``).
        total_unconditional: the same for the unconditional score (None if skipped).
        weighting: ``dsm`` or ``uniform``.
        n: points per level.
        squared_errors: ``{"conditional": [L], "unconditional": [L]}`` E_l.
        squared_norms: the same for S_l.

    ``float(report)`` is ``total``.
    """

    noise_ratios: torch.Tensor
    alphas: torch.Tensor
    sigmas: torch.Tensor
    conditional: torch.Tensor
    unconditional: torch.Tensor | None
    total: float
    total_unconditional: float | None
    weighting: str
    n: int
    squared_errors: dict
    squared_norms: dict

    def __float__(self) -> float:
        return self.total

    def table(self) -> str:
        """A plain-text table: sigma/alpha, sigma, conditional and unconditional error."""
        lines = [f"{'sigma/alpha':>12} {'sigma':>8} {'cond':>8} {'uncond':>8}"]
        for i in range(self.noise_ratios.numel()):
            uncond = (f"{self.unconditional[i]:8.4f}" if self.unconditional is not None
                      else f"{'-':>8}")
            lines.append(f"{self.noise_ratios[i]:12.4g} {self.sigmas[i]:8.4f} "
                         f"{self.conditional[i]:8.4f} {uncond}")
        uncond = (f"{self.total_unconditional:8.4f}" if self.total_unconditional is not None
                  else f"{'-':>8}")
        lines.append(f"{'total (' + self.weighting + ')':>21} {self.total:8.4f} {uncond}")
        return "\n".join(lines)


def noise_grid(levels: int, noise_range: tuple[float, float]):
    """(ratios, alphas, sigmas), each ``[levels]`` float64: sigma/alpha log-uniform, VP."""
    low, high = (math.log(v) for v in noise_range)
    u = torch.linspace(low, high, levels, dtype=torch.float64)  # [L]
    return u.exp(), torch.sigmoid(-2 * u).sqrt(), torch.sigmoid(2 * u).sqrt()


def _total(errors: torch.Tensor, norms: torch.Tensor, sigmas: torch.Tensor,
           weighting: str) -> float:
    if weighting == "dsm":
        return math.sqrt(float((sigmas**2 * errors).sum() / (sigmas**2 * norms).sum()))
    return math.sqrt(float((errors / norms).mean()))


def score_error(model, exact, *, n: int = 4096, levels: int = 13,
                noise_range: tuple[float, float] = (1e-2, 1e2), weighting: str = "dsm",
                unconditional: bool = True, seed: int = 0,
                dtype: torch.dtype = torch.float64) -> ScoreErrorReport:
    """Relative L2 error of ``model``'s score against ``exact``'s (module docstring).

    Args:
        model: a score model (``score(x, alpha, sigma, c=None)``). If it has an
            ``input_shape`` different from ``(d,)`` (an image network judged against a
            flattened exact family), points are reshaped to it for the model.
        exact: an exact family (``sample``, ``class_prior``, ``score``), e.g.
            :class:`~guidelab.GaussianMixture` or :class:`~guidelab.EmpiricalMixture`.
        n: points per level.
        levels: L, the number of grid levels.
        noise_range: (min, max) of sigma/alpha.
        weighting: ``dsm`` (sigma^2-weighted pooled error) or ``uniform`` (mean over levels).
        unconditional: also measure s(x) (c = None).
        seed: seed of the classes, clean points and noise.
        dtype: dtype of the points and of the comparison.

    Returns:
        A :class:`ScoreErrorReport`. FloatingPointError if the model returns non-finite
        scores.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels: expected a positive integer, got {levels!r}")
    try:
        low, high = (float(v) for v in noise_range)
    except (TypeError, ValueError):
        raise ValueError(f"noise_range: expected (min, max), got {noise_range!r}") from None
    if not 0 < low <= high < math.inf:
        raise ValueError(f"noise_range: expected 0 < min <= max < inf, got {noise_range!r}")
    for name in ("sample", "class_prior", "score"):
        if not hasattr(exact, name):
            raise ValueError(f"exact: expected an exact family with .{name}, got "
                             f"{type(exact).__name__}")
    ratios, alphas, sigmas = noise_grid(levels, (low, high))
    generator = torch.Generator().manual_seed(seed)
    classes = torch.multinomial(exact.class_prior, n, replacement=True, generator=generator)
    x0 = exact.sample(n, classes, generator=generator, dtype=dtype)  # [n, d]
    z = torch.randn(x0.shape, generator=generator, dtype=dtype)  # [n, d]
    shape = getattr(model, "input_shape", None)
    reshape = shape is not None and tuple(shape) != tuple(x0.shape[1:])

    def model_score(x, alpha, sigma, c):
        points = x.reshape(n, *shape) if reshape else x
        with torch.no_grad():
            out = model.score(points, alpha, sigma, c)
        out = out.reshape(n, -1).to(dtype)  # [n, d]
        if not torch.isfinite(out).all():
            raise FloatingPointError(f"score_error: the model returned non-finite scores at "
                                     f"sigma = {sigma:.4g}")
        return out

    kinds = ["conditional"] + (["unconditional"] if unconditional else [])
    errors = {k: torch.zeros(levels, dtype=torch.float64) for k in kinds}
    norms = {k: torch.zeros(levels, dtype=torch.float64) for k in kinds}
    for level in range(levels):
        alpha, sigma = float(alphas[level]), float(sigmas[level])
        x = alpha * x0 + sigma * z  # [n, d]
        for kind in kinds:
            c = classes if kind == "conditional" else None
            true = exact.score(x, alpha, sigma, c)  # [n, d]
            errors[kind][level] = (model_score(x, alpha, sigma, c) - true).square().sum(1).mean()
            norms[kind][level] = true.square().sum(1).mean()
    per_level = {k: (errors[k] / norms[k]).sqrt() for k in kinds}
    totals = {k: _total(errors[k], norms[k], sigmas, weighting) for k in kinds}
    return ScoreErrorReport(
        noise_ratios=ratios, alphas=alphas, sigmas=sigmas,
        conditional=per_level["conditional"],
        unconditional=per_level.get("unconditional"),
        total=totals["conditional"], total_unconditional=totals.get("unconditional"),
        weighting=weighting, n=n, squared_errors=errors, squared_norms=norms)
