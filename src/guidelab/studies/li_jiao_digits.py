r"""The Li & Jiao measurement on real data: guided digits judged by an independent classifier.

Li & Jiao (arXiv 2505.01382) check their theorem a second time on ImageNet: a class-conditional
diffusion model is guided, and an independent classifier (Inception-v3) scores the samples.
This module repeats that design on scikit-learn's bundled handwritten digits (1797 images of
8x8 pixels, 10 classes, pixel values 0..16), with nothing downloaded.

**Data.** Pixels are scaled by x = v / 8 - 1, so 0..16 maps onto [-1, 1] exactly; an image is a
64-vector (``[N, 64]``; ``[N, 1, 8, 8]`` for the convolutional network). One stratified split
with a fixed seed (default fractions 1/2, 1/4, 1/4) gives three disjoint parts:

* part A trains the diffusion model (one network for s(x|c) and s(x), class dropout to a null
  label) and the noise-conditional classifier of classifier guidance;
* part B trains the *evaluation classifier* p_eval(c|y), which plays Inception-v3's role;
* part C is held out from both: it measures the evaluator's calibration and gives the
  real-data reference (the statistics below computed on real digits).

**The evaluator** is a multinomial logistic regression on the 64 pixels (another model family
than the networks), calibrated by temperature scaling: for each regularisation strength in a
small grid, 5-fold out-of-fold logits z on part B give the temperature T minimising the
out-of-fold negative log-likelihood of softmax(z / T); the (strength, T) pair with the smallest
such likelihood is kept and the regression is refitted on all of part B. Then
log p_eval(c|y) = log_softmax(z(y) / T)_c.

**Calibration** on part C, with B equal-width bins on [0, 1] (default 10; bin k is
(k/B, (k+1)/B], the first also holds 0, as in ``sklearn.calibration.calibration_curve``):

    top-label ECE  = sum_k (n_k / n) | acc_k - conf_k |,   conf = max_c p_eval(c|y),
                     acc = 1{argmax_c p_eval(c|y) = label};
    classwise ECE  = (1/C) sum_c sum_k (n_ck / n) | freq_ck - mean_ck |

(Guo et al. 2017; Kull et al. 2019), the second over every class probability p_eval(c|y),
small ones included, which is what Q = E[1/p_eval(c|Y)] depends on. A miscalibrated judge makes
every Q meaningless.

**Models.** ``network``: the trained denoiser (a residual MLP on the 64 pixels by default) and
the trained noisy classifier. ``kernel``: the kernel density of the part-A digits,
p(x) = (1/K) sum_j N(x; m_j, h^2 I) with bandwidth h (default 0.3), an
:class:`~guidelab.distributions.EmpiricalMixture` whose scores and class posterior are exact, so
its classifier guidance uses the exact p_t(c|x) and equals its CFG up to rounding; it is the
exact counterpart of the network's curve.

**Sampling.** For each model, guidance rule (``cfg``: s(x|c) + w (s(x|c) - s(x)); ``classifier``:
s(x|c) + w grad log p_t(c|x)) and strength w, ``trials`` samples of every class are drawn with
the same row-keyed noise (:class:`~guidelab.noise.RowNoise` with stream = class and row = trial
index), so row i at strength w and row i at w = 0 differ only by guidance.

**Measurement**, per class c and pooled over classes (the paper's statistic: all samples of all
classes together, ``class = "all"``): Q(w) = E[1/p_eval(c|Y)] with the tail-aware interval of
:func:`guidelab.metrics.summarize_class_probability`, E[p_eval(c|Y)], the accuracy
P(argmax p_eval = c), and the fraction of coupled rows whose p_eval(c|Y) went down against
w = 0. The same statistics on part C's real digits (model ``real``) are what a perfect unguided
model would score. Note that the identity E[1/p(c|X)] = 1/p(c) for X ~ p(x|c) needs classes
with full, overlapping support: in general E[1/p(c|X)] = P(X in supp p(.|c)) / p(c), and for
nearly separable classes such as real digits the value under the true posterior is near 1, not
10; under a real judge it is 1 plus the judge's confusion, so the real-data row is the
reference to compare with, not 1/p(c).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..distributions import EmpiricalMixture
from ..guidance import ClassifierFreeGuidance, ClassifierGuidance
from ..metrics import ClassProbabilitySummary, summarize_class_probability
from ..noise import RowNoise, normal
from ..samplers.registry import SAMPLER_INFO, sampler_schedule
from ..schedules import SCHEDULES
from .results import atomic_write_bytes, write_csv

__all__ = [
    "RESULT_COLUMNS",
    "DigitsConfig",
    "DigitsSplit",
    "DigitsResult",
    "EvaluationClassifier",
    "load_digits_split",
    "fit_evaluator",
    "expected_calibration_error",
    "reliability_bins",
    "pooled_summary",
    "summary_rows",
    "default_cache_dir",
    "cache_key",
    "cached_network",
    "TrainedNetwork",
    "run_li_jiao_digits",
]

RESULT_COLUMNS = ["model", "guidance", "class", "w", "n", "q_mean", "q_low", "q_high",
                  "p_mean", "accuracy", "frac_p_decreased", "q_se", "q_top_share",
                  "pareto_khat", "q_reliable", "interval_method", "n_nonfinite", "sampler",
                  "steps"]
MODELS = ("network", "kernel")
GUIDANCE = ("cfg", "classifier")
NUM_CLASSES = 10
IMAGE_SIDE = 8


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DigitsSplit:
    """The scaled digits and a stratified split into three disjoint parts.

    Attributes:
        images: ``[1797, 64]`` float64 pixels scaled to [-1, 1] (x = v / 8 - 1).
        labels: ``[1797]`` int64 classes 0..9.
        index_a, index_b, index_c: ``[n_a]``, ``[n_b]``, ``[n_c]`` int64 row indices of parts
            A (diffusion model and noisy classifier), B (evaluator) and C (held out).
        seed: the split's seed.
    """

    images: np.ndarray
    labels: np.ndarray
    index_a: np.ndarray
    index_b: np.ndarray
    index_c: np.ndarray
    seed: int

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images ``[n, 64]``, labels ``[n]``) of part ``"a"``, ``"b"`` or ``"c"``."""
        index = {"a": self.index_a, "b": self.index_b, "c": self.index_c}.get(name)
        if index is None:
            raise ValueError(f"name: expected 'a', 'b' or 'c', got {name!r}")
        return self.images[index], self.labels[index]

    def fingerprint(self, name: str) -> str:
        """SHA-256 of a part's float32 pixels and int64 labels (the cache keys' data part)."""
        images, labels = self.part(name)
        digest = hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
        return digest.hexdigest()


def _import_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("li-jiao-digits needs scikit-learn: pip install 'guidelab[digits]'") \
            from error


def load_digits_split(seed: int = 0, fractions: Sequence[float] = (0.5, 0.25, 0.25),
                      ) -> DigitsSplit:
    """scikit-learn's bundled digits, scaled to [-1, 1], split stratified into parts A, B, C.

    Args:
        seed: seed of the split (``random_state`` of both stratified splits).
        fractions: the shares of parts A, B and C (positive, summing to 1).

    Two calls of ``sklearn.model_selection.train_test_split(..., stratify=labels)``: A against
    the rest, then B against C within the rest, so every part keeps the class proportions (to
    within one image per class) and the parts are disjoint and cover the data set.
    """
    _import_sklearn()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(not (0 < f < 1) for f in fractions) or not math.isclose(
            sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions: expected three shares in (0, 1) summing to 1, got "
                         f"{fractions!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    pixels, labels = load_digits(return_X_y=True)
    images = pixels.astype(np.float64) / 8.0 - 1.0  # [1797, 64] in [-1, 1]
    labels = labels.astype(np.int64)  # [1797]
    index = np.arange(labels.shape[0])
    index_a, rest = train_test_split(index, train_size=fractions[0], stratify=labels,
                                     random_state=seed)
    share_b = fractions[1] / (fractions[1] + fractions[2])
    index_b, index_c = train_test_split(rest, train_size=share_b, stratify=labels[rest],
                                        random_state=seed)
    return DigitsSplit(images, labels, np.sort(index_a), np.sort(index_b), np.sort(index_c),
                       seed)


# ----------------------------------------------------------------------------- the judge


@dataclass
class EvaluationClassifier:
    r"""A temperature-scaled multinomial logistic regression: p_eval(c|y) = softmax(z(y)/T)_c.

    Attributes:
        regression: the fitted ``sklearn.linear_model.LogisticRegression``.
        temperature: T > 0, fitted on out-of-fold logits of the training part.
        inverse_regularisation: the chosen C of the regression (its inverse L2 strength).
        cv_log_loss: out-of-fold negative log-likelihood per image at the chosen (C, T).
        grid: ``[(C, T, out-of-fold NLL), ...]`` for every C tried.
    """

    regression: Any
    temperature: float
    inverse_regularisation: float
    cv_log_loss: float
    grid: list[tuple[float, float, float]] = field(default_factory=list)

    def log_posterior(self, images) -> torch.Tensor:
        """log p_eval(c|y) for every class: ``[N, 10]`` float64 (CPU).

        ``images`` is ``[N, 64]`` or ``[N, 1, 8, 8]`` (tensor or array) in the scaled pixel
        units. Rows with a non-finite pixel get NaN rows (counted downstream, never averaged).
        """
        from scipy.special import log_softmax

        if isinstance(images, torch.Tensor):
            images = images.detach().to("cpu", torch.float64).numpy()
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)  # [N, 64]
        out = np.full((flat.shape[0], NUM_CLASSES), np.nan)  # [N, 10]
        finite = np.isfinite(flat).all(axis=1)  # [N]
        if finite.any():
            logits = self.regression.decision_function(flat[finite])  # [n, 10]
            out[finite] = log_softmax(logits / self.temperature, axis=1)
        return torch.from_numpy(out)

    def describe(self) -> str:
        return (f"logistic regression (C = {self.inverse_regularisation:g}) with temperature "
                f"T = {self.temperature:.3f}")


def _fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(T, NLL): the temperature minimising the mean -log softmax(z/T)_label, and that NLL."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    rows = np.arange(labels.shape[0])

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, labels].mean())

    best = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded",
                           options={"xatol": 1e-4})
    return math.exp(best.x), float(best.fun)


def fit_evaluator(images: np.ndarray, labels: np.ndarray, *,
                  inverse_regularisation: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
                  folds: int = 5, seed: int = 0) -> EvaluationClassifier:
    """Fit the evaluation classifier on ``images [n, 64]``, ``labels [n]`` (part B).

    For each C in ``inverse_regularisation``: out-of-fold logits from a stratified ``folds``-fold
    split (seeded), the temperature minimising their negative log-likelihood, and that
    likelihood; the best (C, T) is kept and the regression refitted on all the data.
    """
    _import_sklearn()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an integer >= 2, got {folds!r}")
    grid_values = [float(c) for c in inverse_regularisation]
    if not grid_values or any(not (math.isfinite(c) and c > 0) for c in grid_values):
        raise ValueError(f"inverse_regularisation: expected positive numbers, got "
                         f"{inverse_regularisation!r}")
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    grid = []
    for c_value in grid_values:
        regression = LogisticRegression(C=c_value, max_iter=5000)
        logits = cross_val_predict(regression, images, labels, cv=splitter,
                                   method="decision_function")  # [n, 10]
        temperature, nll = _fit_temperature(logits, labels)
        grid.append((c_value, temperature, nll))
    c_value, temperature, nll = min(grid, key=lambda entry: entry[2])
    regression = LogisticRegression(C=c_value, max_iter=5000).fit(images, labels)
    return EvaluationClassifier(regression, temperature, c_value, nll, grid)


# ----------------------------------------------------------------------------- calibration


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin k of B equal-width bins on [0, 1]: (k/B, (k+1)/B], the first also holding 0."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges[1:-1], values, side="left"), 0, bins - 1)


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[0] < 1:
        raise ValueError(f"probabilities: expected shape [N, C], got {probabilities.shape}")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() \
            or (probabilities > 1 + 1e-9).any():
        raise ValueError("probabilities: expected finite values in [0, 1]")
    if labels.shape != (probabilities.shape[0],) or not np.issubdtype(labels.dtype, np.integer) \
            or (labels < 0).any() or (labels >= probabilities.shape[1]).any():
        raise ValueError(f"labels: expected [{probabilities.shape[0]}] integer classes in "
                         f"0..{probabilities.shape[1] - 1}")
    return probabilities, labels


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    return bins


def reliability_bins(probabilities, labels, *, bins: int = 10, kind: str = "top"
                     ) -> dict[str, np.ndarray]:
    """Per-bin mean predicted probability, observed frequency and count.

    Args:
        probabilities: ``[N, C]`` predicted class probabilities.
        labels: ``[N]`` true classes.
        bins: B equal-width bins on [0, 1] (see :func:`_bin_index`).
        kind: ``"top"``: predictions are the confidences max_c p(c|y), outcomes whether the
            argmax is right; ``"classwise"``: every p(c|y) is a prediction of 1{label = c}
            (N C pairs).

    Returns:
        ``{"confidence": [B], "frequency": [B], "count": [B]}`` (NaN in empty bins).
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    bins = _check_bins(bins)
    if kind == "top":
        predicted = probabilities.max(axis=1)  # [N]
        outcome = (probabilities.argmax(axis=1) == labels).astype(np.float64)  # [N]
    elif kind == "classwise":
        predicted = probabilities.ravel()  # [N C]
        outcome = (np.arange(probabilities.shape[1])[None, :] == labels[:, None]).ravel()
        outcome = outcome.astype(np.float64)  # [N C]
    else:
        raise ValueError(f"kind: expected 'top' or 'classwise', got {kind!r}")
    index = _bin_index(predicted, bins)  # [M]
    count = np.bincount(index, minlength=bins).astype(np.float64)  # [B]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, predicted, minlength=bins) / count  # [B]
        frequency = np.bincount(index, outcome, minlength=bins) / count  # [B]
    return {"confidence": confidence, "frequency": frequency, "count": count}


def expected_calibration_error(probabilities, labels, *, bins: int = 10,
                               kind: str = "top") -> float:
    """Expected calibration error with B equal-width bins (module docstring).

    ``kind="top"``: sum_k (n_k/N) |acc_k - conf_k| over the top-label confidences.
    ``kind="classwise"``: the mean over classes c of the binary ECE of p(c|y) against
    1{label = c}, (1/C) sum_c sum_k (n_ck/N) |freq_ck - mean_ck|.
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    if kind == "top":
        table = reliability_bins(probabilities, labels, bins=bins, kind="top")
        used = table["count"] > 0
        weights = table["count"][used] / probabilities.shape[0]
        return float((weights * np.abs(table["frequency"][used]
                                       - table["confidence"][used])).sum())
    if kind != "classwise":
        raise ValueError(f"kind: expected 'top' or 'classwise', got {kind!r}")
    bins = _check_bins(bins)
    n, num_classes = probabilities.shape
    total = 0.0
    for c in range(num_classes):
        predicted = probabilities[:, c]  # [N]
        outcome = (labels == c).astype(np.float64)  # [N]
        index = _bin_index(predicted, bins)  # [N]
        count = np.bincount(index, minlength=bins)  # [B]
        gap = np.abs(np.bincount(index, outcome, minlength=bins)
                     - np.bincount(index, predicted, minlength=bins))  # [B]: n_k |freq - mean|
        total += float(gap[count > 0].sum()) / n
    return total / num_classes


# ----------------------------------------------------------------------------- summaries


def _selected_log_posterior(log_posterior: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[N, 2]``: [log p(c_i|Y_i), log(1 - p(c_i|Y_i))], the second as a logsumexp over the
    other classes (finite whenever the row is, even when p rounds to 1)."""
    index = labels.to(torch.int64)[:, None]  # [N, 1]
    selected = log_posterior.gather(1, index)  # [N, 1]
    others = log_posterior.scatter(1, index, -math.inf)  # [N, C]
    rest = torch.logsumexp(others, dim=1, keepdim=True)  # [N, 1]
    rest = torch.where(torch.isnan(selected), selected, rest)  # keep NaN rows NaN
    return torch.cat([selected, rest], dim=1)  # [N, 2]


def pooled_summary(log_posterior: torch.Tensor, labels: torch.Tensor, *,
                   baseline_log_posterior: torch.Tensor | None = None,
                   level: float = 0.95) -> ClassProbabilitySummary:
    r"""Q = E[1/p(c_i|Y_i)] over rows of *different* classes c_i (the paper's pooled statistic).

    Each row is reduced to the two-class posterior [p(c_i|Y_i), 1 - p(c_i|Y_i)] (``[N, 2]``,
    in log space) and summarised for "class 0" by
    :func:`~guidelab.metrics.summarize_class_probability`, which gives the same q_i = 1/p(c_i|Y_i),
    interval, tail diagnosis, E[p], quantiles and coupled ``frac_p_decreased``. Only the
    accuracy differs (two-class argmax is p > 1/2), so it is replaced by the C-class accuracy
    P(argmax_c' p(c'|Y_i) = c_i) over the finite rows.

    Args:
        log_posterior: ``[N, C]`` log p(c'|Y_i).
        labels: ``[N]`` the class c_i each row was sampled for.
        baseline_log_posterior: ``[N, C]`` of the coupled baseline rows (w = 0), optional.
    """
    if not isinstance(labels, torch.Tensor) or labels.shape != (log_posterior.shape[0],):
        raise ValueError(f"labels: expected an [{log_posterior.shape[0]}] integer tensor")
    log_posterior = log_posterior.detach().to("cpu", torch.float64)
    labels = labels.detach().cpu()
    pairs = _selected_log_posterior(log_posterior, labels)  # [N, 2]
    base = None
    if baseline_log_posterior is not None:
        base = _selected_log_posterior(baseline_log_posterior.detach().to("cpu", torch.float64),
                                       labels)  # [N, 2]
    summary = summarize_class_probability(pairs, 0, baseline_log_posterior=base, level=level)
    finite = torch.isfinite(log_posterior).all(dim=1)  # [N]
    correct = log_posterior[finite].argmax(dim=1) == labels[finite]  # [n]
    accuracy = float(correct.double().mean()) if finite.any() else math.nan
    return replace(summary, accuracy=accuracy)


def summary_rows(log_posterior: torch.Tensor, labels: torch.Tensor, *,
                 baseline_log_posterior: torch.Tensor | None = None,
                 info: dict[str, Any] | None = None) -> list[dict]:
    """One row per class present in ``labels`` and a pooled row (``class = "all"``).

    Args:
        log_posterior: ``[N, C]`` log p_eval(c'|Y_i); labels ``[N]``.
        baseline_log_posterior: ``[N, C]`` coupled w = 0 rows, or None.
        info: keys put first in every row (model, guidance, w, sampler, steps).
    """
    info = dict(info or {})
    rows = []
    for c in sorted(set(labels.tolist())):
        mask = labels == c  # [N]
        base = None if baseline_log_posterior is None else baseline_log_posterior[mask]
        summary = summarize_class_probability(log_posterior[mask], int(c),
                                              baseline_log_posterior=base)
        rows.append({**info, "class": int(c), **summary.as_row()})
    pooled = pooled_summary(log_posterior, labels, baseline_log_posterior=baseline_log_posterior)
    rows.append({**info, "class": "all", **pooled.as_row()})
    return rows


# ----------------------------------------------------------------------------- configuration


@dataclass
class DigitsConfig:
    """What :func:`run_li_jiao_digits` runs (every field validated by :meth:`validate`).

    Attributes:
        trials: samples per class and strength (all classes run as one batch).
        strengths: guidance strengths w (Ho & Salimans' w; CFG scale = 1 + w); must hold 0.
        guidance: rules to run on the network, from ``("cfg", "classifier")``.
        models: from ``("network", "kernel")``.
        kernel_guidance: rules to run on the kernel model. Its scores and class posterior are
            exact, so its classifier guidance is the same vector field as its CFG (they agreed
            to 3 decimals in Q in a check at 100 trials per class); autograd through the
            [N, K] kernel posterior makes it ~5x slower, hence CFG only by default.
        sampler, schedule, steps: the sampler (a registered name), its discrete schedule and
            number of steps.
        bandwidth: h of the kernel model.
        network: ``"mlp"`` (residual MLP on the 64 pixels) or ``"conv"`` (a small U-Net on
            ``[1, 8, 8]`` images).
        hidden, depth: MLP width and residual blocks (denoiser); ``width`` for ``"conv"``.
        denoiser_steps, classifier_steps, batch_size, lr, p_uncond: training of the two
            networks (Adam; class dropout probability p_uncond).
        classifier_hidden, classifier_depth: the noisy classifier's MLP.
        split_seed, fractions: the stratified split into parts A, B, C.
        seed: seeds training and the sampling noise.
        evaluator_grid, evaluator_folds: logistic-regression C values and CV folds.
        ece_bins: equal-width bins of the calibration errors.
        grid_columns: samples shown per (class, w) cell of the picture (rows 0..k-1).
        cache_dir: where trained networks are cached (None: :func:`default_cache_dir`).
        use_cache: read and write the cache.
        device, dtype: where and in which precision to train and sample.
    """

    trials: int = 100
    strengths: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0)
    guidance: Sequence[str] = GUIDANCE
    models: Sequence[str] = MODELS
    kernel_guidance: Sequence[str] = ("cfg",)
    sampler: str = "ddpm_type"
    schedule: str = "li_jiao"
    steps: int = 50
    bandwidth: float = 0.3
    network: str = "mlp"
    hidden: int = 128
    depth: int = 3
    width: int = 32
    denoiser_steps: int = 3000
    classifier_steps: int = 1000
    batch_size: int = 256
    lr: float = 2e-3
    p_uncond: float = 0.1
    classifier_hidden: int = 128
    classifier_depth: int = 2
    split_seed: int = 0
    fractions: Sequence[float] = (0.5, 0.25, 0.25)
    seed: int = 0
    evaluator_grid: Sequence[float] = (0.1, 1.0, 10.0, 100.0)
    evaluator_folds: int = 5
    ece_bins: int = 10
    grid_columns: int = 3
    cache_dir: str | Path | None = None
    use_cache: bool = True
    device: str = "cpu"
    dtype: torch.dtype = torch.float32

    def validate(self) -> None:
        """ValueError naming the field for anything a run cannot use."""
        for name in ("trials", "steps", "hidden", "depth", "width", "denoiser_steps",
                     "classifier_steps", "batch_size", "classifier_hidden",
                     "classifier_depth", "ece_bins", "grid_columns", "evaluator_folds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        strengths = [float(w) for w in self.strengths]
        if not strengths or any(not math.isfinite(w) or w < 0 for w in strengths):
            raise ValueError(f"strengths: expected finite w >= 0, got {list(self.strengths)}")
        if 0.0 not in strengths:
            raise ValueError("strengths: must include w = 0, the unguided baseline")
        if len(set(strengths)) != len(strengths):
            raise ValueError("strengths: expected distinct values")
        for name, allowed in (("guidance", GUIDANCE), ("models", MODELS),
                              ("kernel_guidance", GUIDANCE)):
            values = list(getattr(self, name))
            if not values or any(v not in allowed for v in values) or len(set(values)) != len(
                    values):
                raise ValueError(f"{name}: expected distinct values from {allowed}, got "
                                 f"{values!r}")
        if self.sampler not in SAMPLER_INFO or "discrete" not in \
                SAMPLER_INFO[self.sampler].schedule_kinds:
            names = sorted(n for n, i in SAMPLER_INFO.items() if "discrete" in i.schedule_kinds)
            raise ValueError(f"sampler: expected one of {', '.join(names)}, got "
                             f"{self.sampler!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: unknown schedule {self.schedule!r}; expected one of "
                             f"{', '.join(sorted(SCHEDULES))}")
        try:
            sampler_schedule(self.sampler, self.schedule, self.steps)
        except ValueError as error:
            raise ValueError(f"steps: the {self.schedule} schedule cannot have {self.steps} "
                             f"steps ({error})") from None
        if not (math.isfinite(self.bandwidth) and self.bandwidth > 0):
            raise ValueError(f"bandwidth: expected a finite h > 0, got {self.bandwidth!r}")
        if self.network not in ("mlp", "conv"):
            raise ValueError(f"network: expected 'mlp' or 'conv', got {self.network!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond: expected a probability in [0, 1), got {self.p_uncond!r}")
        if self.grid_columns > self.trials:
            raise ValueError(f"grid_columns: expected at most trials = {self.trials}, got "
                             f"{self.grid_columns}")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"device: {error}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {self.device!r} requested but CUDA is not available")


def default_cache_dir() -> Path:
    """``$GUIDELAB_CACHE/models`` if set, else ``$XDG_CACHE_HOME/guidelab/models``, else
    ``~/.cache/guidelab/models``."""
    if os.environ.get("GUIDELAB_CACHE"):
        return Path(os.environ["GUIDELAB_CACHE"]) / "models"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "guidelab" / "models"


# ----------------------------------------------------------------------------- the models


@dataclass
class TrainedNetwork:
    """A trained network's score model or classifier and where it came from."""

    model: Any
    path: Path | None
    cached: bool
    seconds: float
    final_loss: float | None


def cache_key(kind: str, architecture: str, arguments: dict, training: dict,
              data_fingerprint: str, experiment: str) -> str:
    """20 hex digits of SHA-256 over what produced a network: its kind, architecture and
    constructor arguments, training arguments, a fingerprint of the training data, the
    experiment and guidelab's version (a new version never reuses an old cache entry)."""
    from .._version import __version__

    payload = {"kind": kind, "architecture": architecture, "arguments": arguments,
               "training": training, "data": data_fingerprint, "guidelab": __version__,
               "experiment": experiment}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_network(name: str, build: Callable[[], torch.nn.Module], train: Callable,
                   wrap: Callable, *, cache_dir: str | Path | None, use_cache: bool,
                   description: str, device="cpu") -> TrainedNetwork:
    """Load ``<cache_dir>/<name>.safetensors`` if present, else build, train and save.

    Args:
        name: the file stem, which must carry the :func:`cache_key` of what produced it.
        build: () -> a fresh network; train: network -> TrainingReport (in place);
            wrap: network -> score model or classifier (``LearnedScoreModel``, ...).
        cache_dir: the folder (None: :func:`default_cache_dir`).
        use_cache: False trains every time and writes nothing.
        description: the training data's description, stored in the checkpoint header.
    """
    from .. import models

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{name}.safetensors"
    if use_cache and path.exists():
        start = time.perf_counter()
        loaded = models.load(path, device=device)
        return TrainedNetwork(loaded, path, True, time.perf_counter() - start, None)
    network = build()
    start = time.perf_counter()
    report = train(network)
    seconds = time.perf_counter() - start
    model = wrap(network)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        models.save(model, path, data=description)
    return TrainedNetwork(model, path if use_cache else None, False, seconds,
                          report.final_loss)


def train_networks(split: DigitsSplit, config: DigitsConfig, *, progress: bool = True
                   ) -> tuple[TrainedNetwork, TrainedNetwork]:
    """The denoiser (as a score model) and the noisy classifier, trained on part A or loaded
    from the cache (keyed by the part-A data, architecture, training arguments, seed and
    guidelab's version)."""
    from .. import models

    images, labels = split.part("a")
    image_shape = (1, IMAGE_SIDE, IMAGE_SIDE) if config.network == "conv" else (64,)
    data = torch.as_tensor(images, dtype=config.dtype).reshape(-1, *image_shape)  # [n_a, ...]
    targets = torch.as_tensor(labels)  # [n_a]
    data_std = float(images.std())
    fingerprint = split.fingerprint("a")
    description = (f"scikit-learn digits, pixels v/8 - 1, part A of a stratified split "
                   f"(seed {split.seed}, fractions {list(config.fractions)}), "
                   f"{len(labels)} images, sha256 {fingerprint[:16]}")
    device = torch.device(config.device)

    if config.network == "conv":
        denoiser_args = {"num_classes": NUM_CLASSES, "channels": 1, "size": IMAGE_SIDE,
                         "width": config.width, "data_std": data_std, "seed": config.seed}
        architecture = "ConvDenoiser"
    else:
        denoiser_args = {"dim": 64, "num_classes": NUM_CLASSES, "hidden": config.hidden,
                         "depth": config.depth, "data_std": data_std, "seed": config.seed}
        architecture = "MLPDenoiser"
    denoiser_training = {"steps": config.denoiser_steps, "batch_size": config.batch_size,
                         "lr": config.lr, "p_uncond": config.p_uncond, "seed": config.seed}
    classifier_args = {"input_shape": list(image_shape), "num_classes": NUM_CLASSES,
                       "hidden": config.classifier_hidden, "depth": config.classifier_depth,
                       "width": config.width, "data_std": data_std, "seed": config.seed}
    classifier_training = {"steps": config.classifier_steps, "batch_size": config.batch_size,
                           "lr": config.lr, "seed": config.seed}
    precision = {"dtype": str(config.dtype)}

    def build_denoiser() -> torch.nn.Module:
        network_class = models.ConvDenoiser if config.network == "conv" else models.MLPDenoiser
        return network_class(**denoiser_args).to(dtype=config.dtype)

    def build_classifier() -> torch.nn.Module:
        return models.NoisyClassifier(**classifier_args).to(dtype=config.dtype)

    where = {"cache_dir": config.cache_dir, "use_cache": config.use_cache,
             "description": description, "device": device}
    key = cache_key("denoiser", architecture, denoiser_args, {**denoiser_training, **precision},
                    fingerprint, "li-jiao-digits")
    denoiser = cached_network(
        f"digits-denoiser-{key}", build_denoiser,
        lambda net: models.train_denoiser(net, data, targets, device=device,
                                          progress=progress, data_description=description,
                                          **denoiser_training),
        models.LearnedScoreModel, **where)
    key = cache_key("classifier", "NoisyClassifier", classifier_args,
                    {**classifier_training, **precision}, fingerprint, "li-jiao-digits")
    classifier = cached_network(
        f"digits-classifier-{key}", build_classifier,
        lambda net: models.train_classifier(net, data, targets, device=device,
                                            progress=progress, data_description=description,
                                            **classifier_training),
        models.LearnedClassifier, **where)
    return denoiser, classifier


# ----------------------------------------------------------------------------- the run


@dataclass
class DigitsResult:
    """Everything a run measured (the report draws from it).

    Attributes:
        rows: result rows (columns :data:`RESULT_COLUMNS` first), also in ``results.csv``.
        samples: ``{(model, guidance, w): [trials * 10, 64]}`` float32 CPU samples, rows
            ordered by class then trial (row i of every key is driven by the same noise).
        labels: ``[trials * 10]`` the class of each sample row.
        real_images, real_labels: part C (``[n_c, 64]``, ``[n_c]``).
        calibration: ECEs, reliability tables and the evaluator's description.
        training: per network: cached or not, seconds, final loss, cache path.
        timings: seconds per phase.
        config: the configuration that ran.
    """

    rows: list[dict]
    samples: dict[tuple[str, str, float], torch.Tensor]
    labels: torch.Tensor
    real_images: np.ndarray
    real_labels: np.ndarray
    calibration: dict[str, Any]
    training: dict[str, dict[str, Any]]
    timings: dict[str, float]
    config: DigitsConfig


def _calibration(evaluator: EvaluationClassifier, images: np.ndarray, labels: np.ndarray,
                 bins: int) -> dict[str, Any]:
    probabilities = evaluator.log_posterior(images).exp().numpy()  # [n_c, 10]
    rows = np.arange(labels.shape[0])
    return {
        "evaluator": evaluator.describe(),
        "inverse_regularisation": evaluator.inverse_regularisation,
        "temperature": evaluator.temperature,
        "cv_log_loss_part_b": evaluator.cv_log_loss,
        "grid": [list(entry) for entry in evaluator.grid],
        "n": int(labels.shape[0]),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "log_loss": float(-np.log(probabilities[rows, labels]).mean()),
        "bins": bins,
        "binning": f"{bins} equal-width bins on [0, 1], bin k = (k/{bins}, (k+1)/{bins}]",
        "ece_top": expected_calibration_error(probabilities, labels, bins=bins, kind="top"),
        "ece_classwise": expected_calibration_error(probabilities, labels, bins=bins,
                                                    kind="classwise"),
        "reliability_top": {k: v.tolist() for k, v in reliability_bins(
            probabilities, labels, bins=bins, kind="top").items()},
        "reliability_classwise": {k: v.tolist() for k, v in reliability_bins(
            probabilities, labels, bins=bins, kind="classwise").items()},
    }


def run_li_jiao_digits(config: DigitsConfig | None = None, *, out_dir: str | Path | None = None,
                       progress: bool = True, on_row: Callable[[dict], None] | None = None,
                       log: Callable[[str], None] | None = None) -> DigitsResult:
    """Run the digits experiment (module docstring); return a :class:`DigitsResult`.

    Args:
        config: what to run (default :class:`DigitsConfig()`).
        out_dir: if given, ``results.csv`` (rewritten atomically after every sweep) and
            ``calibration.json`` are written there.
        progress: progress bars for training and sampling.
        on_row: called with every finished row.
        log: called with one-line messages about the phases (training, cache hits, timings).
    """
    config = config or DigitsConfig()
    config.validate()
    say = log or (lambda message: None)
    timings: dict[str, float] = {}
    device = torch.device(config.device)
    out = Path(out_dir) if out_dir is not None else None

    start = time.perf_counter()
    split = load_digits_split(config.split_seed, config.fractions)
    images_b, labels_b = split.part("b")
    evaluator = fit_evaluator(images_b, labels_b, inverse_regularisation=config.evaluator_grid,
                              folds=config.evaluator_folds, seed=config.split_seed)
    images_c, labels_c = split.part("c")
    calibration = _calibration(evaluator, images_c, labels_c, config.ece_bins)
    timings["evaluator"] = time.perf_counter() - start
    say(f"evaluator: {evaluator.describe()}; part C (n = {calibration['n']}): accuracy "
        f"{calibration['accuracy']:.3f}, top-label ECE {calibration['ece_top']:.4f}, classwise "
        f"ECE {calibration['ece_classwise']:.4f} ({config.ece_bins} bins)")
    if out is not None:
        atomic_write_bytes(out / "calibration.json",
                           json.dumps(calibration, indent=2).encode())

    rows: list[dict] = []
    csv_path = out / "results.csv" if out is not None else None

    def emit(new_rows: list[dict]) -> None:
        rows.extend(new_rows)
        if on_row is not None:
            for row in new_rows:
                on_row(row)
        if csv_path is not None:
            write_csv(csv_path, rows, RESULT_COLUMNS)

    real_log_posterior = evaluator.log_posterior(images_c)  # [n_c, 10]
    emit(summary_rows(real_log_posterior, torch.as_tensor(labels_c),
                      info={"model": "real", "guidance": "none", "w": None,
                            "sampler": "part C", "steps": None}))

    training: dict[str, dict[str, Any]] = {}
    score_models: dict[str, tuple[Any, Any]] = {}
    if "network" in config.models:
        start = time.perf_counter()
        denoiser, classifier = train_networks(split, config, progress=progress)
        timings["training"] = time.perf_counter() - start
        for name, trained in (("denoiser", denoiser), ("classifier", classifier)):
            training[name] = {"cached": trained.cached, "seconds": trained.seconds,
                              "final_loss": trained.final_loss,
                              "path": None if trained.path is None else str(trained.path)}
            state = "loaded from cache" if trained.cached else "trained"
            loss = "" if trained.final_loss is None else f", final loss {trained.final_loss:.4f}"
            say(f"{name}: {state} in {trained.seconds:.1f} s{loss}"
                + (f" ({trained.path})" if trained.path else ""))
        score_models["network"] = (denoiser.model, classifier.model)
    if "kernel" in config.models:
        images_a, labels_a = split.part("a")
        kernel = EmpiricalMixture(torch.as_tensor(images_a), torch.as_tensor(labels_a),
                                  bandwidth=config.bandwidth)
        score_models["kernel"] = (kernel, kernel)

    labels = torch.arange(NUM_CLASSES, device=device).repeat_interleave(config.trials)  # [N]
    trial_index = torch.arange(config.trials, device=device).repeat(NUM_CLASSES)  # [N]
    image_shape = (1, IMAGE_SIDE, IMAGE_SIDE) if config.network == "conv" else (64,)
    schedule, options = sampler_schedule(config.sampler, config.schedule, config.steps)
    sampler = SAMPLER_INFO[config.sampler].fn
    strengths = sorted(float(w) for w in config.strengths)  # w = 0 first
    samples: dict[tuple[str, str, float], torch.Tensor] = {}
    sweeps = [(m, g) for m in config.models
              for g in (config.kernel_guidance if m == "kernel" else config.guidance)]
    bar = tqdm(total=len(sweeps) * len(strengths), desc="li-jiao-digits", unit="sweep",
               disable=not progress)
    start = time.perf_counter()
    for model_name, guidance in sweeps:
        score_model, classifier = score_models[model_name]
        shape = image_shape if model_name == "network" else (64,)
        baseline = None
        for w in strengths:
            # row-keyed noise: row i's noise is a function of (seed, class, trial index) alone,
            # the same at every w (coupled runs)
            noise = RowNoise(config.seed, streams=labels, rows=trial_index, device=device)
            x_init = normal((labels.shape[0], *shape), noise, device, config.dtype)  # [N, ...]
            if guidance == "cfg":
                guided = ClassifierFreeGuidance(score_model, labels, strength=w)
            else:
                guided = ClassifierGuidance(score_model, classifier, labels, strength=w)
            result = sampler(guided, schedule, x_init, generator=noise, **options)
            flat = result.samples.detach().reshape(labels.shape[0], -1).to("cpu",
                                                                            torch.float32)
            samples[(model_name, guidance, w)] = flat  # [N, 64]
            log_posterior = evaluator.log_posterior(flat)  # [N, 10]
            if w == 0.0:
                baseline = log_posterior
            emit(summary_rows(log_posterior, labels.cpu(),
                              baseline_log_posterior=None if w == 0.0 else baseline,
                              info={"model": model_name, "guidance": guidance, "w": w,
                                    "sampler": config.sampler, "steps": config.steps}))
            bar.update()
        timings[f"sampling {model_name} {guidance}"] = time.perf_counter() - start
        start = time.perf_counter()
    bar.close()
    return DigitsResult(rows, samples, labels.cpu(), images_c, labels_c, calibration, training,
                        timings, config)
