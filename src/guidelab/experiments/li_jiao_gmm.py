r"""The Li & Jiao Gaussian-mixture experiment: Q(w) = E[1/p(c|Y^w)] against guidance strength.

Li & Jiao (arXiv 2505.01382) prove that guidance of strength w > 0 lowers the average
reciprocal classifier probability Q(w) = E[1 / p(c | Y_0^w)] for general data distributions,
although it need not raise p(c|Y) for every sample. Their experiment draws 10^4 samples per w
from a Gaussian mixture for w from 0.01 to 10; this module repeats it on a built-in mixture that
is not a textbook case, with exact scores, for every class at once:

* data: :func:`default_mixture`, 3 classes in d = 2 with 3 components each, full anisotropic
  covariances, unequal class priors and partly overlapping classes;
* sampler: any registered sampler driven by ``ClassifierFreeGuidance`` of the exact mixture
  (w = 0 is unguided, DESIGN.md section 2), default the DDPM-type sampler with the Li–Jiao
  schedule, plus the exact reverse kernel at w = 0 as a reference with no discretisation error;
* coupling: every w reuses the same initial noise and per-step noise (same seed), so row i at
  strength w and row i at w = 0 differ only by guidance; ``frac_p_decreased`` is the fraction of
  rows whose p(c|Y) went *down* against w = 0 (the "not uniform" statement);
* measurement: :func:`guidelab.metrics.summarize_class_probability` with the exact clean class
  posterior, reference 1/p(c) (the identity E_{X ~ p(x|c)}[1/p(c|X)] = 1/p(c)).

All classes of one strength run as one batch (per-row class labels); each strength is one unit,
and ``results.csv`` is rewritten atomically after each unit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..distributions import GaussianMixture
from ..guidance import ClassifierFreeGuidance
from ..metrics import summarize_class_probability
from ..samplers import SAMPLERS, exact_reverse
from ..schedules import SCHEDULES, VPContinuous, make_schedule
from .results import write_csv

__all__ = ["LiJiaoConfig", "default_mixture", "default_strengths", "run_li_jiao_gmm",
           "RESULT_COLUMNS", "EXACT_SAMPLER"]

RESULT_COLUMNS = ["class", "w", "n", "q_mean", "q_low", "q_high", "q_top_share", "p_mean",
                  "accuracy", "frac_p_decreased", "inv_prior", "sampler", "steps", "q_se",
                  "pareto_khat", "q_reliable", "interval_method", "n_nonfinite"]
EXACT_SAMPLER = "exact_reverse"
"""Name of the reference rows: the exact reverse kernel of the mixture at w = 0."""


def default_mixture() -> GaussianMixture:
    """The built-in data distribution: 3 classes, d = 2, 3 components per class, K = 9.

    Each class's components lie on an arc around its own direction (90, 210 and 330 degrees,
    radii 0.45 to 0.63), so the classes overlap substantially but not completely (unguided
    E[p(c|Y)] is about 0.5 to 0.6). Covariances are full and anisotropic (eigenvalues 0.5 and
    0.2), oriented at 20, 80 and 140 degrees for components 1, 2, 3 of *every* class; weights
    within a class are 0.3, 0.45, 0.25 and class priors 0.45, 0.35, 0.20.

    Why the shared orientations: in the tails, the log-odds between two classes are governed
    by their widest components along that direction. If one class is wider there, the odds grow
    quadratically and 1/p(c|X) becomes heavy-tailed (its m-th moment is infinite once m exceeds
    rho / (rho - 1), rho the ratio of directional variances); with the same set of covariances
    in every class the odds grow only linearly and every moment of 1/p(c|X) exists. The
    unguided Q then has a Pareto k-hat near 0.3 at 10^4 samples and an honest normal interval,
    so the decrease of Q(w) is measured, not guessed.
    """
    means, covariances, weights, labels = [], [], [], []
    class_priors = [0.45, 0.35, 0.20]
    for c, centre in enumerate([90.0, 210.0, 330.0]):
        for j, offset in enumerate([-35.0, 0.0, 35.0]):
            angle = math.radians(centre + offset)
            radius = 0.45 * (1 + 0.2 * j)
            means.append([radius * math.cos(angle), radius * math.sin(angle)])
            rotation = math.radians(20.0 + 60.0 * j)
            u = torch.tensor([[math.cos(rotation), -math.sin(rotation)],
                              [math.sin(rotation), math.cos(rotation)]], dtype=torch.float64)
            covariances.append(u @ torch.diag(torch.tensor([0.5, 0.2],
                                                           dtype=torch.float64)) @ u.T)
            weights.append(class_priors[c] * [0.3, 0.45, 0.25][j])
            labels.append(c)
    return GaussianMixture(means, torch.stack(covariances), weights, labels)


def default_strengths(num: int = 10, w_min: float = 0.01, w_max: float = 10.0) -> list[float]:
    """w = 0 followed by ``num`` logarithmically spaced strengths from w_min to w_max."""
    if num < 1 or not 0 < w_min <= w_max:
        raise ValueError(f"strengths: expected num >= 1 and 0 < w_min <= w_max, got {num}, "
                         f"{w_min}, {w_max}")
    if num == 1:
        return [0.0, w_min]
    ratio = (w_max / w_min) ** (1 / (num - 1))
    return [0.0] + [float(f"{w_min * ratio**i:.6g}") for i in range(num)]


@dataclass
class LiJiaoConfig:
    """What to run. Every field is validated by :meth:`validate`.

    Attributes:
        trials: samples per (class, w); the paper uses 10^4.
        steps: sampler steps T (for the reference kernel, ``reference_steps``).
        sampler: a name in :data:`guidelab.samplers.SAMPLERS`.
        schedule: discrete schedule name (``li_jiao``, ``linear``, ``cosine``); continuous
            samplers (``euler_maruyama``) run on VPContinuous time with T uniform steps.
        strengths: guidance strengths w (Ho & Salimans' w; CFG scale = 1 + w); must contain 0,
            the baseline of ``frac_p_decreased``.
        classes: classes to run, default all.
        allow_negative: accept w < 0 (guidance away from the class).
        reference: also run the exact reverse kernel at w = 0.
        reference_steps: its number of steps (exact at any number).
        seed: seeds the initial noise, the per-step noise and the reference.
        device, dtype: where and in which precision to sample.
    """

    trials: int = 10_000
    steps: int = 1000
    sampler: str = "ddpm_type"
    schedule: str = "li_jiao"
    strengths: Sequence[float] = field(default_factory=default_strengths)
    classes: Sequence[int] | None = None
    allow_negative: bool = False
    reference: bool = True
    reference_steps: int = 50
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    def validate(self, mixture: GaussianMixture) -> None:
        """ValueError naming the field for anything a run cannot use."""
        for name in ("trials", "steps", "reference_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: unknown sampler {self.sampler!r}; expected one of "
                             f"{', '.join(sorted(SAMPLERS))}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown schedule {self.schedule!r}; expected one of "
                             f"{', '.join(sorted(SCHEDULES))}")
        strengths = list(self.strengths)
        if not strengths or any(not math.isfinite(w) for w in strengths):
            raise ValueError("strengths: expected a non-empty list of finite numbers")
        if 0.0 not in strengths:
            raise ValueError("strengths: must include w = 0, the unguided baseline")
        if len(set(strengths)) != len(strengths):
            raise ValueError("strengths: expected distinct values")
        negative = [w for w in strengths if w < 0]
        if negative and not self.allow_negative:
            raise ValueError(f"strengths: w = {negative[0]} < 0 guides away from the class; "
                             f"pass allow_negative (--allow-negative) to run it")
        for c in self.classes or []:
            if isinstance(c, bool) or not isinstance(c, int) or not (
                    0 <= c < mixture.num_classes):
                raise ValueError(f"classes: unknown class {c!r}; the mixture has classes "
                                 f"0..{mixture.num_classes - 1}")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"device: {error}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {self.device!r} requested but CUDA is not available")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device: {self.device!r} does not exist; "
                             f"{torch.cuda.device_count()} CUDA device(s) are visible")


def _sampler_call(config: LiJiaoConfig) -> Callable:
    """(score_fn, x_init, generator) -> SampleResult for the configured sampler."""
    sampler = SAMPLERS[config.sampler]
    if config.sampler == "euler_maruyama":
        schedule = VPContinuous(horizon=6.0)
        return lambda score_fn, x, g: sampler(score_fn, schedule, x, generator=g,
                                              num_steps=config.steps)
    schedule = make_schedule(config.schedule, config.steps)
    return lambda score_fn, x, g: sampler(score_fn, schedule, x, generator=g)


def _log_posterior(mixture: GaussianMixture, samples: torch.Tensor) -> torch.Tensor:
    """Exact clean log p(c'|Y) ``[N, C]`` in float64; NaN rows for non-finite samples."""
    out = torch.full((samples.shape[0], mixture.num_classes), math.nan, dtype=torch.float64)
    finite = torch.isfinite(samples).all(dim=1).cpu()
    if finite.any():
        out[finite] = mixture.log_class_posterior(samples[finite.to(samples.device)].double(),
                                                  1.0, 0.0).cpu()
    return out


def run_li_jiao_gmm(config: LiJiaoConfig | None = None, *, mixture: GaussianMixture | None = None,
                    out_dir: str | Path | None = None, progress: bool = True,
                    on_row: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the experiment; return one row (dict) per (sampler, class, w).

    Args:
        config: what to run (default :class:`LiJiaoConfig()`: the paper's 10^4 trials).
        mixture: the data distribution (default :func:`default_mixture`).
        out_dir: if given, ``out_dir/results.csv`` is rewritten atomically after every unit.
        progress: show a progress bar over units.
        on_row: called with each finished row (for printing as the run goes).

    Returns:
        Rows with the columns of :data:`RESULT_COLUMNS` (see
        :meth:`guidelab.metrics.ClassProbabilitySummary.as_row` for the rest).
    """
    config = config or LiJiaoConfig()
    mixture = mixture or default_mixture()
    config.validate(mixture)
    device = torch.device(config.device)
    classes = list(config.classes) if config.classes else list(range(mixture.num_classes))
    labels = torch.tensor(classes, device=device).repeat_interleave(config.trials)  # [N]
    n = labels.shape[0]
    inv_prior = (1.0 / mixture.class_prior).tolist()
    strengths = sorted(config.strengths, key=lambda w: (w != 0.0, w))  # w = 0 first
    run = _sampler_call(config)
    rows: list[dict] = []
    baseline: torch.Tensor | None = None
    csv_path = Path(out_dir) / "results.csv" if out_dir is not None else None

    def generator() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(config.seed)

    def record(log_post: torch.Tensor, w: float, sampler: str, steps: int,
               base: torch.Tensor | None) -> None:
        for i, c in enumerate(classes):
            block = slice(i * config.trials, (i + 1) * config.trials)
            summary = summarize_class_probability(
                log_post[block], c, inv_prior=inv_prior[c],
                baseline_log_posterior=None if base is None else base[block])
            row = {"class": c, "w": w, "sampler": sampler, "steps": steps}
            row.update(summary.as_row())
            rows.append(row)
            if on_row is not None:
                on_row(row)
        if csv_path is not None:
            write_csv(csv_path, rows, RESULT_COLUMNS)

    units = len(strengths) + (1 if config.reference else 0)
    bar = tqdm(total=units, desc="li-jiao-gmm", disable=not progress, unit="unit")
    if config.reference:
        x_init = torch.randn(n, mixture.dim, generator=generator(), device=device,
                             dtype=config.dtype)
        reference_schedule = make_schedule(config.schedule, config.reference_steps)
        result = exact_reverse(mixture, labels, reference_schedule, x_init,
                               generator=generator())
        record(_log_posterior(mixture, result.samples), 0.0, EXACT_SAMPLER,
               config.reference_steps, None)
        bar.update()
    for w in strengths:
        g = generator()
        x_init = torch.randn(n, mixture.dim, generator=g, device=device, dtype=config.dtype)
        guided = ClassifierFreeGuidance(mixture, labels, strength=w,
                                        allow_negative=config.allow_negative)
        result = run(guided, x_init, g)
        log_post = _log_posterior(mixture, result.samples)
        if w == 0.0:
            baseline = log_post
        # non-finite samples are NaN rows here: the summary counts them in n_nonfinite
        record(log_post, w, config.sampler, config.steps, None if w == 0.0 else baseline)
        bar.update()
    bar.close()
    return rows
