r"""Learned against exact scores, in the open: what a score error does to guided sampling.

Two experiments on distributions whose scores are known exactly.

**(a) The Li–Jiao measurement with a trained network beside the exact mixture.** On the
built-in 2-D mixture of ``li-jiao-gmm`` (:func:`~guidelab.studies.li_jiao_gmm.default_mixture`:
3 classes, 9 anisotropic components), an :class:`~guidelab.models.MLPDenoiser` is trained by
denoising score matching on exact draws (class dropout to the null label, so one network gives
s(x|c) and s(x)). Its relative score error against the exact score,

    err = sqrt( sum_l sigma_l^2 E||s_hat - s||^2 / sum_l sigma_l^2 E||s||^2 )

over a log-uniform grid of noise levels (:func:`guidelab.models.score_error`, conditional and
unconditional), is reported, then both score models are sampled with classifier-free guidance
over the same strengths, with the *same* row-keyed noise (row i of the learned run and row i
of the exact run see the same noise), and judged by the *exact* clean posterior p(c|Y) of the
mixture: Q(w) = E[1/p(c|Y)] with its tail-aware interval, E[p], accuracy and the fraction of
coupled rows whose p(c|Y) went down against w = 0. Unguided exact sampling has Q(0) = 1/p(c)
up to discretisation, the reference of both columns.

**(b) Mass outside the support (Chidambaram et al., arXiv 2409.13074).** For a mixture of
uniform distributions on boxes, class c's support S_c is the union of its boxes. With exact
scores, guided samples stay in S_c at every w (guidance pushes them towards the part of S_c
far from the other classes, not out of it); with a score error they leave it, and guidance
amplifies the error: under :class:`guidelab.models.Perturbed` the guided error is
(1 + w) delta(x, c) - w delta(x, None). For each (kind, eps, w) the fraction of samples outside
S_c is estimated with a Clopper–Pearson interval (exact binomial, ``level``), by
:func:`mass_outside_support`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..distributions import GaussianMixture, UniformBoxMixture, default_mixture
from ..guidance import ClassifierFreeGuidance
from ..noise import RowNoise, normal
from ..samplers.registry import SAMPLER_INFO, sampler_schedule
from .li_jiao_digits import cache_key, cached_network, summary_rows
from .results import write_csv

__all__ = [
    "LEARNED_COLUMNS",
    "SUPPORT_COLUMNS",
    "LearnedVsExactConfig",
    "LearnedVsExactResult",
    "run_learned_vs_exact",
    "adjacent_boxes",
    "mass_outside_support",
    "run_support_leak",
]

LEARNED_COLUMNS = ["model", "class", "w", "n", "q_mean", "q_low", "q_high", "p_mean",
                   "accuracy", "frac_p_decreased", "inv_prior", "q_se", "pareto_khat",
                   "q_reliable", "interval_method", "n_nonfinite", "sampler", "steps"]
SUPPORT_COLUMNS = ["kind", "eps", "w", "n", "outside", "outside_low", "outside_high",
                   "n_outside", "mean_distance_outside", "n_nonfinite"]


def _coupled_noise(seed: int, labels: torch.Tensor, trials: int, device) -> RowNoise:
    """Row-keyed noise: stream = class, row = trial index within the class."""
    rows = torch.arange(trials, device=device).repeat(labels.shape[0] // trials)  # [N]
    return RowNoise(seed, streams=labels, rows=rows, device=device)


def _sample(score_model, labels: torch.Tensor, w: float, trials: int, shape: tuple[int, ...],
            sampler: str, schedule, options: dict, seed: int, dtype, device) -> torch.Tensor:
    """CFG samples ``[N, *shape]`` of ``score_model`` for classes ``labels``, coupled noise."""
    noise = _coupled_noise(seed, labels, trials, device)
    x_init = normal((labels.shape[0], *shape), noise, device, dtype)  # [N, ...]
    guided = ClassifierFreeGuidance(score_model, labels, strength=w)
    return SAMPLER_INFO[sampler].fn(guided, schedule, x_init, generator=noise,
                                    **options).samples


def _check_common(trials, steps, strengths, sampler) -> list[float]:
    for name, value in (("trials", trials), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    values = [float(w) for w in strengths]
    if not values or any(not math.isfinite(w) or w < 0 for w in values):
        raise ValueError(f"strengths: expected finite w >= 0, got {list(strengths)}")
    if 0.0 not in values or len(set(values)) != len(values):
        raise ValueError("strengths: expected distinct values including w = 0 (the baseline)")
    if sampler not in SAMPLER_INFO or "discrete" not in SAMPLER_INFO[sampler].schedule_kinds:
        raise ValueError(f"sampler: expected a sampler of discrete schedules, got {sampler!r}")
    return sorted(values)


# ----------------------------------------------------------------------------- (a)


@dataclass
class LearnedVsExactConfig:
    """What :func:`run_learned_vs_exact` runs.

    Attributes:
        trials: samples per class and strength (the default mixture has 3 classes).
        strengths: CFG strengths w (must include 0).
        sampler, schedule, steps: sampler, discrete schedule and number of steps.
        hidden, depth: the MLPDenoiser's width and residual blocks.
        train_steps, batch_size, lr, p_uncond: training (exact draws from the mixture).
        error_points, error_levels: points per level and levels of the score-error grid.
        seed: seeds the network, training, the score-error points and the sampling noise.
        cache_dir, use_cache: the trained-network cache (as for li-jiao-digits).
        device, dtype: where and in which precision to train and sample.
    """

    trials: int = 2000
    strengths: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0)
    sampler: str = "ddpm_type"
    schedule: str = "li_jiao"
    steps: int = 200
    hidden: int = 128
    depth: int = 3
    train_steps: int = 3000
    batch_size: int = 512
    lr: float = 2e-3
    p_uncond: float = 0.1
    error_points: int = 4096
    error_levels: int = 13
    seed: int = 0
    cache_dir: str | Path | None = None
    use_cache: bool = True
    device: str = "cpu"
    dtype: torch.dtype = torch.float32


@dataclass
class LearnedVsExactResult:
    """rows (columns :data:`LEARNED_COLUMNS` first; model ``exact`` or ``learned``), the
    :class:`~guidelab.models.ScoreErrorReport`, training information and timings."""

    rows: list[dict]
    score_error: Any
    training: dict[str, Any]
    timings: dict[str, float]
    samples: dict[tuple[str, float], torch.Tensor]
    labels: torch.Tensor


def _exact_log_posterior(mixture, samples: torch.Tensor) -> torch.Tensor:
    """Exact clean log p(c|Y) ``[N, C]`` (float64, CPU); NaN rows for non-finite samples."""
    out = torch.full((samples.shape[0], mixture.num_classes), math.nan, dtype=torch.float64)
    finite = torch.isfinite(samples).flatten(1).all(dim=1).cpu()  # [N]
    if finite.any():
        out[finite] = mixture.log_class_posterior(
            samples[finite.to(samples.device)].double(), 1.0, 0.0).cpu()
    return out


def train_mixture_denoiser(mixture: GaussianMixture, config: LearnedVsExactConfig, *,
                           progress: bool = True):
    """An MLPDenoiser trained on exact draws of ``mixture`` (or loaded from the cache):
    a :class:`~guidelab.studies.li_jiao_digits.TrainedNetwork`."""
    from .. import models

    arguments = {"dim": mixture.dim, "num_classes": mixture.num_classes,
                 "hidden": config.hidden, "depth": config.depth, "seed": config.seed}
    training = {"steps": config.train_steps, "batch_size": config.batch_size,
                "lr": config.lr, "p_uncond": config.p_uncond, "seed": config.seed,
                "dtype": str(config.dtype)}  # the key's record; training takes no dtype
    description = f"exact draws from {mixture!r} (li-jiao-gmm's default mixture)"
    fingerprint = repr([mixture.means.tolist(), mixture.covariances.tolist(),
                        mixture.class_prior.tolist()])
    key = cache_key("denoiser", "MLPDenoiser", arguments, training, fingerprint,
                    "learned-vs-exact")
    device = torch.device(config.device)
    return cached_network(
        f"gmm-denoiser-{key}",
        lambda: models.MLPDenoiser(**arguments).to(dtype=config.dtype),
        lambda net: models.train_denoiser(net, mixture, steps=config.train_steps,
                                          batch_size=config.batch_size, lr=config.lr,
                                          p_uncond=config.p_uncond, seed=config.seed,
                                          device=device, progress=progress,
                                          data_description=description),
        models.LearnedScoreModel, cache_dir=config.cache_dir, use_cache=config.use_cache,
        description=description, device=device)


def run_learned_vs_exact(config: LearnedVsExactConfig | None = None, *,
                         mixture: GaussianMixture | None = None,
                         out_dir: str | Path | None = None, progress: bool = True,
                         on_row: Callable[[dict], None] | None = None
                         ) -> LearnedVsExactResult:
    """Experiment (a) of the module docstring; ``out_dir/results.csv`` if ``out_dir`` is given.

    Returns rows ``model in {exact, learned}`` x class (0..C-1 and ``"all"``, pooled) x w, each
    judged by the exact clean posterior of the mixture, with ``inv_prior`` = 1/p(c).
    """
    from .. import models

    config = config or LearnedVsExactConfig()
    mixture = mixture or default_mixture()
    strengths = _check_common(config.trials, config.steps, config.strengths, config.sampler)
    device = torch.device(config.device)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    trained = train_mixture_denoiser(mixture, config, progress=progress)
    timings["training"] = time.perf_counter() - start
    start = time.perf_counter()
    error = models.score_error(trained.model, mixture, n=config.error_points,
                               levels=config.error_levels, seed=config.seed)
    timings["score error"] = time.perf_counter() - start

    labels = torch.arange(mixture.num_classes, device=device).repeat_interleave(
        config.trials)  # [N]
    inv_prior = (1.0 / mixture.class_prior).tolist()
    schedule, options = sampler_schedule(config.sampler, config.schedule, config.steps)
    rows: list[dict] = []
    samples: dict[tuple[str, float], torch.Tensor] = {}
    csv_path = Path(out_dir) / "results.csv" if out_dir is not None else None
    bar = tqdm(total=2 * len(strengths), desc="learned-vs-exact", disable=not progress)
    for name, score_model in (("exact", mixture), ("learned", trained.model)):
        start = time.perf_counter()
        baseline = None
        for w in strengths:
            out = _sample(score_model, labels, w, config.trials, (mixture.dim,), config.sampler,
                          schedule, options, config.seed, config.dtype, device)  # [N, d]
            samples[(name, w)] = out.cpu()
            log_posterior = _exact_log_posterior(mixture, out)  # [N, C]
            if w == 0.0:
                baseline = log_posterior
            new = summary_rows(log_posterior, labels.cpu(),
                               baseline_log_posterior=None if w == 0.0 else baseline,
                               info={"model": name, "w": w, "sampler": config.sampler,
                                     "steps": config.steps})
            for row in new:
                # pooled: E[1/p(c)] under the mix of classes run (equal trials per class)
                row["inv_prior"] = (inv_prior[row["class"]] if row["class"] != "all"
                                    else sum(inv_prior) / len(inv_prior))
                if on_row is not None:
                    on_row(row)
            rows.extend(new)
            if csv_path is not None:
                write_csv(csv_path, rows, LEARNED_COLUMNS)
            bar.update()
        timings[f"sampling {name}"] = time.perf_counter() - start
    bar.close()
    training = {"cached": trained.cached, "seconds": trained.seconds,
                "final_loss": trained.final_loss,
                "path": None if trained.path is None else str(trained.path)}
    return LearnedVsExactResult(rows, error, training, timings, samples, labels.cpu())


# ----------------------------------------------------------------------------- (b)


def adjacent_boxes(dim: int = 1) -> UniformBoxMixture:
    """Two classes on adjacent boxes sharing a face: class 0 uniform on [-1, 0] x [0, 1]^(d-1),
    class 1 on [0, 1] x [0, 1]^(d-1), p(c) = 1/2 each."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive integer, got {dim!r}")
    lows = [[-1.0] + [0.0] * (dim - 1), [0.0] * dim]
    highs = [[0.0] + [1.0] * (dim - 1), [1.0] * dim]
    return UniformBoxMixture(lows=lows, highs=highs, weights=[0.5, 0.5], labels=[0, 1])


def mass_outside_support(samples: torch.Tensor, mixture: UniformBoxMixture, c, *,
                         level: float = 0.95, tolerance: float = 0.0) -> dict[str, float]:
    r"""Fraction of samples outside class c's support, with a Clopper–Pearson interval.

    A row Y_i (of class c_i) is *outside* when it lies in none of c_i's boxes enlarged by
    ``tolerance`` on every side: for all k with label c_i, some coordinate j has
    Y_ij < a_kj - tol or Y_ij > b_kj + tol. With m of the n finite rows outside, the estimate is
    m / n and the interval the exact binomial one,
    [Beta^{-1}((1 - level)/2; m, n - m + 1), Beta^{-1}((1 + level)/2; m + 1, n - m)].

    Args:
        samples: ``[N, d]`` (or ``[N]`` for d = 1) samples.
        mixture: the uniform-box mixture.
        c: the class, an int or an ``[N]`` integer tensor.
        level: coverage of the interval.
        tolerance: how far beyond a box face still counts as inside (>= 0).

    Returns:
        ``{"n", "n_outside", "outside", "outside_low", "outside_high",
        "mean_distance_outside", "n_nonfinite"}``; the distance is the mean over outside rows
        of the L-infinity distance to the nearest of the class's boxes. Non-finite rows are
        counted, not classified.
    """
    from scipy.stats import beta

    if not isinstance(mixture, UniformBoxMixture):
        raise ValueError(f"mixture: expected a UniformBoxMixture, got {type(mixture).__name__}")
    if not (0 < level < 1):
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance: expected a finite number >= 0, got {tolerance!r}")
    x = samples.detach().to("cpu", torch.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != mixture.dim:
        raise ValueError(f"samples: expected shape [N, {mixture.dim}], got "
                         f"{tuple(samples.shape)}")
    n_rows = x.shape[0]
    classes = torch.as_tensor(c).to("cpu", torch.int64).expand(n_rows)  # [N]
    finite = torch.isfinite(x).all(dim=1)  # [N]
    lows, highs = mixture.lows, mixture.highs  # [K, d]
    # L-infinity distance of every row to every box: max_j max(a_kj - x_j, x_j - b_kj, 0)
    gap = torch.maximum(lows[None] - x[:, None], x[:, None] - highs[None]).clamp_min(0)
    distance = gap.amax(dim=2)  # [N, K]
    own = mixture.labels[None, :] == classes[:, None]  # [N, K]
    nearest = distance.masked_fill(~own, math.inf).amin(dim=1)  # [N]
    outside = (nearest > tolerance) & finite  # [N]
    n = int(finite.sum())
    m = int(outside.sum())
    tail = (1 - level) / 2
    low = 0.0 if m == 0 else float(beta.ppf(tail, m, n - m + 1))
    high = 1.0 if m == n else float(beta.ppf(1 - tail, m + 1, n - m))
    return {"n": n, "n_outside": m, "outside": m / n if n else math.nan,
            "outside_low": low, "outside_high": high,
            "mean_distance_outside": float(nearest[outside].mean()) if m else 0.0,
            "n_nonfinite": n_rows - n}


def run_support_leak(*, eps: Sequence[float] = (0.0, 0.05, 0.1),
                     kinds: Sequence[str] = ("bias",),
                     strengths: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
                     trials: int = 4000, dim: int = 1, sampler: str = "ddpm_type",
                     schedule: str = "li_jiao", steps: int = 200, seed: int = 0,
                     level: float = 0.95, dtype: torch.dtype = torch.float64,
                     device: str = "cpu", mixture: UniformBoxMixture | None = None,
                     out_dir: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Experiment (b): mass outside the class support against w, exact and perturbed scores.

    Both classes of ``mixture`` (default :func:`adjacent_boxes`) are sampled with CFG on
    ``Perturbed(mixture, eps, kind, seed)`` (eps = 0: the exact scores), ``trials`` rows per
    class with the same row-keyed noise at every (kind, eps, w); one row per (kind, eps, w)
    with :func:`mass_outside_support` pooled over the classes. ``out_dir/support.csv`` if
    ``out_dir`` is given.
    """
    from ..models import Perturbed

    strengths = _check_common(trials, steps, strengths, sampler)
    mixture = mixture or adjacent_boxes(dim)
    eps_values = [float(e) for e in eps]
    if any(not (math.isfinite(e) and e >= 0) for e in eps_values):
        raise ValueError(f"eps: expected finite values >= 0, got {list(eps)}")
    device = torch.device(device)
    labels = torch.arange(mixture.num_classes, device=device).repeat_interleave(trials)  # [N]
    schedule_obj, options = sampler_schedule(sampler, schedule, steps)
    rows: list[dict] = []
    settings = [(k, e) for k in kinds for e in eps_values if e > 0 or k == kinds[0]]
    bar = tqdm(total=len(settings) * len(strengths), desc="support leak", disable=not progress)
    for kind, e in settings:
        for w in strengths:
            model = Perturbed(mixture, eps=e, kind=kind, seed=seed)
            out = _sample(model, labels, w, trials, (mixture.dim,), sampler, schedule_obj,
                          options, seed, dtype, device)  # [N, d]
            row = {"kind": kind if e > 0 else "exact", "eps": e, "w": w}
            row.update(mass_outside_support(out, mixture, labels, level=level))
            rows.append(row)
            bar.update()
        if out_dir is not None:
            write_csv(Path(out_dir) / "support.csv", rows, SUPPORT_COLUMNS)
    bar.close()
    return rows
