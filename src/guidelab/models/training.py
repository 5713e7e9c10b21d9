r"""Training by denoising score matching, and noise-conditional classifiers by cross-entropy.

**Denoisers.** For clean data (x0, c), a noise ratio r = sigma/alpha drawn log-uniformly on
``noise_range`` = [r_min, r_max] (default [1e-3, 1e3]: u = log r uniform on [-6.9, 6.9]), the
variance-preserving level

    alpha = 1 / sqrt(1 + r^2),    sigma = r / sqrt(1 + r^2),

noise eps ~ N(0, I) and x = alpha x0 + sigma eps, the network of target T in {eps, x0, v}
minimises the plain mean squared error

    L = E || F_theta(x, alpha, sigma, c') - T(x0, eps) ||^2,   T = eps, x0 or alpha eps - sigma x0,

with c' = c, replaced by the null label C with probability ``p_uncond`` (class dropout, so one
network learns s(x|c) and s(x)). For T = eps this is denoising score matching with the weight
sigma^2: || eps_hat - eps ||^2 = sigma^2 || s_theta - grad log p(x | x0) ||^2, minimised by
eps_hat = -sigma grad log p_t(x | c') (Vincent 2011).

**Reweighted data** (``weights``, a tensor data set only). Given non-negative weights
g_i = g(x0_i) of the training rows, minibatch rows are drawn with replacement with probability
g_i / sum_j g_j (importance *resampling*) instead of uniformly; everything else is unchanged.
A row so drawn is a draw of the reweighted empirical law p_g = sum_i g_i delta_{x0_i} / sum_j g_j,
so the minibatch loss is an unbiased estimate of the DSM loss of p_g, whose minimiser is the
score of the noised p_g: for g(x) = exp(b^T x - (x - m)^T A (x - m) / 2) and class-conditional
training, the network's s(x | c) learns the score of p(x | c) g(x) / E[g | c], the reweighted
law of reward guidance, and its s(x) (the null label) that of p(x) g(x) / E[g]. The
alternative, uniform rows with the loss multiplied by g_i / mean(g), has the same expectation,
but its per-step gradient variance grows with E[g^2] / E[g]^2 (a peaked g lets one row dominate
a batch, and an unbounded ratio makes the variance unbounded); resampled batches have the
variance of plain DSM on p_g's data whatever the spread of g, so the learning rate, clipping and
step count that suit plain DSM suit the reweighted one. The price is the usual one of
resampling: rows of small weight are seldom seen (the number of distinct rows behind the
reweighted law is about the effective sample size (sum g)^2 / sum g^2, reported in the
training record).

**Classifiers.** Same noised inputs; the loss is the cross-entropy -log softmax(logits)[c],
minimised by the noised class posterior p_t(c | x).

**Optimiser.** Adam (betas 0.9, 0.99), learning rate ``lr`` with a linear warm-up over the
first 5% of steps and cosine decay to 0, gradient norm clipped at ``grad_clip``.

**Data.** Either an exact family with ``sample(n, c, generator, device, dtype)`` and
``class_prior`` (classes drawn from the prior, then exact draws: a fresh batch every step;
draws ``[B, d]`` are reshaped to an image network's ``[B, C, H, W]`` when C H W = d), or a
tensor data set ``[M, ...]`` with integer labels ``[M]`` (rows drawn uniformly with
replacement).

**Reproducibility.** Every random number (classes, rows, levels, noise, dropout) comes from one
``torch.Generator`` seeded with ``seed`` on the training device; networks initialise from their
own ``seed``. The same arguments give the same weights bit for bit on the CPU (same PyTorch
build and thread count). The report of a run is also stored on the network as
``network.training_info`` so that :func:`guidelab.models.save` writes it into the checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .conversions import training_target

__all__ = ["TrainingReport", "train_denoiser", "train_classifier", "sample_levels",
           "DEFAULT_NOISE_RANGE", "describe_data", "check_weights"]

DEFAULT_NOISE_RANGE = (1e-3, 1e3)


@dataclass
class TrainingReport:
    """What a training run did.

    Attributes:
        steps: optimiser steps taken.
        losses: the loss of every step (Python floats).
        final_loss: mean loss over the last 10% of steps (at least one step).
        seconds: wall time of the loop.
        steps_per_second: steps / seconds.
        device: where it ran.
        config: everything that produced the weights (objective, target, noise range, batch
            size, learning rate, class dropout, seed, data description): JSON-able.
    """

    steps: int
    losses: list[float] = field(repr=False)
    final_loss: float
    seconds: float
    steps_per_second: float
    device: str
    config: dict[str, Any]

    def header(self) -> dict[str, Any]:
        """The JSON-able summary stored in checkpoints (losses thinned to 100 values)."""
        out = asdict(self)
        stride = max(1, len(self.losses) // 100)
        out["losses"] = self.losses[::stride]
        out["loss_stride"] = stride
        return out


def sample_levels(n: int, noise_range: tuple[float, float], generator: torch.Generator,
                  device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, sigma), each ``[n]``: sigma/alpha log-uniform on ``noise_range``, VP.

    With u = log(sigma/alpha): alpha^2 = sigmoid(-2u), sigma^2 = sigmoid(2u) (stable at
    both ends).
    """
    low, high = math.log(noise_range[0]), math.log(noise_range[1])
    u = low + (high - low) * torch.rand(n, generator=generator, device=device,
                                        dtype=torch.float64)  # [n]
    alpha = torch.sigmoid(-2 * u).sqrt()  # [n]
    sigma = torch.sigmoid(2 * u).sqrt()  # [n]
    return alpha.to(dtype), sigma.to(dtype)


def _check_noise_range(noise_range) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in noise_range)
    except (TypeError, ValueError):
        raise ValueError(f"noise_range: expected (min, max) of sigma/alpha, got "
                         f"{noise_range!r}") from None
    if not (0 < low < high < math.inf):
        raise ValueError(f"noise_range: expected 0 < min < max < inf (sigma/alpha), got "
                         f"{noise_range!r}")
    return low, high


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_rate(value, name: str, low: float, high: float, closed_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) \
            or not (low <= value < high or (closed_high and value == high)):
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name}: expected a number in [{low}, {high}{bracket}, "
                         f"got {value!r}")
    return float(value)


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe_data(data, labels=None) -> str:
    """A short description of a training data source (for checkpoints and cache keys)."""
    if hasattr(data, "sample") and hasattr(data, "class_prior"):
        return f"exact draws from {data!r}"
    shape = "x".join(str(s) for s in data.shape[1:])
    classes = int(labels.max()) + 1 if labels is not None and labels.numel() else 0
    return f"tensor data set: {data.shape[0]} rows of shape [{shape}], {classes} classes"


def check_weights(weights, rows: int) -> torch.Tensor:
    """Per-row sampling weights as a float64 ``[rows]`` tensor: finite, >= 0, not all 0;
    ValueError naming ``weights`` otherwise."""
    if not isinstance(weights, torch.Tensor):
        try:
            weights = torch.as_tensor(weights, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"weights: expected a tensor of shape [{rows}], got "
                             f"{type(weights).__name__}") from None
    if weights.is_complex() or weights.dtype == torch.bool:
        raise ValueError(f"weights: expected real numbers, got dtype {weights.dtype}")
    if weights.shape != (rows,):
        raise ValueError(f"weights: expected shape [{rows}] (one per training row), got "
                         f"{list(weights.shape)}")
    weights = weights.detach().to(torch.float64)  # [M]
    if not bool(torch.isfinite(weights).all()):
        raise ValueError("weights: expected finite values")
    if bool((weights < 0).any()):
        raise ValueError(f"weights: expected non-negative values, found "
                         f"{float(weights.min()):.3g}")
    if not bool((weights > 0).any()):
        raise ValueError("weights: expected a positive weight somewhere, all are 0")
    return weights


def _effective_size(weights: torch.Tensor) -> float:
    """(sum g)^2 / sum g^2, scaled so that it does not overflow."""
    scaled = weights / weights.max()  # [M]
    return float(scaled.sum() ** 2 / (scaled**2).sum())


class _Batches:
    """Draws (x0 [B, ...], labels [B]) from an exact family or a tensor data set, its rows
    uniformly or with probability proportional to ``weights``."""

    def __init__(self, data, labels, num_classes: int, generator, device, dtype, shape,
                 weights=None):
        self.generator, self.device, self.dtype = generator, device, dtype
        self.cumulative = None
        if hasattr(data, "sample") and hasattr(data, "class_prior"):
            if labels is not None:
                raise ValueError("labels: pass labels only with a tensor data set (an exact "
                                 "family draws its own classes)")
            if getattr(data, "num_classes", num_classes) != num_classes:
                raise ValueError(f"data: the family has {data.num_classes} classes, the network "
                                 f"{num_classes}")
            self.family = data
            self.prior = data.class_prior.to(device=device, dtype=torch.float64)  # [C]
        else:
            self.family = None
            if not isinstance(data, torch.Tensor) or not data.is_floating_point():
                raise ValueError("data: expected an exact family (with sample and class_prior) "
                                 "or a floating-point tensor [M, ...]")
            if labels is None or not isinstance(labels, torch.Tensor) or labels.shape != (
                    data.shape[0],) or labels.is_floating_point():
                raise ValueError(f"labels: expected an integer tensor of shape "
                                 f"[{data.shape[0]}] with the data set")
            if ((labels < 0) | (labels >= num_classes)).any():
                raise ValueError(f"labels: expected classes in 0..{num_classes - 1}")
            if data.shape[0] == 0:
                raise ValueError("data: the data set is empty")
            if not torch.isfinite(data).all():
                raise ValueError("data: expected finite values")
            self.data = data.to(device=device, dtype=dtype)
            self.labels = labels.to(device=device, dtype=torch.int64)
            if weights is not None:
                weights = check_weights(weights, data.shape[0])  # [M]
                total = torch.cumsum(weights / weights.max(), 0)  # [M], float64
                self.cumulative = (total / total[-1]).to(device)  # CDF of the rows, [M]
        if weights is not None and self.family is not None:
            raise ValueError("weights: per-row weights need a tensor data set (an exact family "
                             "has no rows to weight)")
        self.shape = None  # reshape family draws [B, d] to the network's [B, *shape]
        if shape is not None:
            trailing = tuple(self.data.shape[1:]) if self.family is None else (self.family.dim,)
            if self.family is not None and trailing != tuple(shape) \
                    and math.prod(shape) == self.family.dim:
                self.shape = tuple(shape)
            elif trailing != tuple(shape):
                raise ValueError(f"data: rows of shape {list(trailing)} do not fit the network's "
                                 f"input shape {list(shape)}")

    def draw(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.family is not None:
            labels = torch.multinomial(self.prior, batch_size, replacement=True,
                                       generator=self.generator)  # [B]
            x0 = self.family.sample(batch_size, labels, generator=self.generator,
                                    device=self.device, dtype=self.dtype)  # [B, d]
            if self.shape is not None:
                x0 = x0.reshape(batch_size, *self.shape)  # [B, *shape]
            return x0, labels
        if self.cumulative is None:
            index = torch.randint(self.data.shape[0], (batch_size,), generator=self.generator,
                                  device=self.device)  # [B]
        else:  # row i with probability g_i / sum g: inverse CDF of uniforms (any M)
            u = torch.rand(batch_size, generator=self.generator, device=self.device,
                           dtype=torch.float64)  # [B]
            index = torch.searchsorted(self.cumulative, u, right=True).clamp_max_(
                self.data.shape[0] - 1)  # [B]
        return self.data[index], self.labels[index]


def _prepare(network: nn.Module, data, labels, seed, device, weights=None):
    """What both trainings set up: the seed checked, the network moved to the device, and
    (device, the network's dtype, the run's generator seeded with ``seed``, its batches)."""
    _check_int(seed, "seed", minimum=0)
    device = _resolve_device(device)
    network.to(device)
    dtype = next(network.parameters()).dtype
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = _Batches(data, labels, network.num_classes, generator, device, dtype,
                       getattr(network, "input_shape", None), weights)
    return device, dtype, generator, batches


def _noised(x0: torch.Tensor, noise_range, generator, device, dtype):
    """x = alpha x0 + sigma eps at levels drawn by :func:`sample_levels`: returns
    (x ``[B, ...]``, alpha ``[B]``, sigma ``[B]``, eps ``[B, ...]``)."""
    n = x0.shape[0]
    alpha, sigma = sample_levels(n, noise_range, generator, device, dtype)  # [B], [B]
    eps = torch.randn(x0.shape, generator=generator, device=device, dtype=dtype)  # [B, ...]
    shape = (n,) + (1,) * (x0.ndim - 1)
    return alpha.view(shape) * x0 + sigma.view(shape) * eps, alpha, sigma, eps


def _learning_rate(step: int, steps: int, lr: float) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train(network: nn.Module, loss_fn, batches: _Batches, *, steps, batch_size, lr,
           grad_clip, weight_decay, progress, desc, device, config) -> TrainingReport:
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, betas=(0.9, 0.99),
                                 weight_decay=weight_decay)
    network.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    running = None
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, steps, lr)
        x0, labels = batches.draw(batch_size)
        loss = loss_fn(x0, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"training: the loss became non-finite ({value}) at step "
                                     f"{step}; lower lr or check the data")
        losses.append(value)
        running = value if running is None else 0.95 * running + 0.05 * value
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{running:.4g}")
    seconds = time.perf_counter() - start
    network.eval()
    tail = losses[-max(1, steps // 10):]
    report = TrainingReport(steps=steps, losses=losses, final_loss=sum(tail) / len(tail),
                            seconds=seconds, steps_per_second=steps / max(seconds, 1e-12),
                            device=str(device), config=config)
    network.training_info = report.header()
    return report


def train_denoiser(network: nn.Module, data, labels: torch.Tensor | None = None, *,
                   steps: int, batch_size: int = 256, lr: float = 1e-3, p_uncond: float = 0.1,
                   seed: int = 0, device=None, progress: bool = True,
                   noise_range: tuple[float, float] = DEFAULT_NOISE_RANGE,
                   grad_clip: float = 1.0, weight_decay: float = 0.0,
                   data_description: str | None = None, weights=None) -> TrainingReport:
    """Train a class-conditional denoiser by denoising score matching (module docstring).

    Args:
        network: e.g. :class:`~guidelab.models.MLPDenoiser`; must have ``target``,
            ``num_classes`` and ``null_class``; trained in place (moved to ``device``).
        data: an exact family (``sample`` + ``class_prior``) or a float tensor ``[M, ...]``.
        labels: ``[M]`` integer classes in 0..C-1 with a tensor data set; None with a family.
        steps: optimiser steps.
        batch_size: rows per step.
        lr: peak learning rate.
        p_uncond: probability of replacing a label by the null label (class dropout), [0, 1).
        seed: seed of every random draw of the run.
        device: where to train; default CUDA when available, else the CPU.
        progress: show a tqdm bar with the running loss.
        noise_range: (min, max) of sigma/alpha, drawn log-uniformly.
        grad_clip: maximum gradient norm (0: no clipping).
        weight_decay: Adam's L2 penalty.
        data_description: what the data are, for the checkpoint (default: a description of
            ``data``).
        weights: optional ``[M]`` non-negative weights g(x0_i) of the rows of a tensor data
            set (finite, not all 0; the scale does not matter): rows are drawn with
            probability proportional to them, so the network learns the scores of the
            reweighted law p g / E[g] (module docstring, *Reweighted data*).

    Returns:
        A :class:`TrainingReport`; the network is left in eval mode on ``device``.

    Raises:
        ValueError: naming the argument (``weights``: a wrong shape, a negative, non-finite
            or all-zero weight, or weights with an exact family).
    """
    for name in ("target", "num_classes", "null_class"):
        if not hasattr(network, name):
            raise ValueError(f"network: expected a denoiser with .{name} (e.g. MLPDenoiser)")
    steps = _check_int(steps, "steps")
    batch_size = _check_int(batch_size, "batch_size")
    lr = _check_rate(lr, "lr", 1e-12, math.inf)
    p_uncond = _check_rate(p_uncond, "p_uncond", 0.0, 1.0)
    noise_range = _check_noise_range(noise_range)
    device, dtype, generator, batches = _prepare(network, data, labels, seed, device, weights)
    null = network.null_class
    target = network.target

    def loss_fn(x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, alpha, sigma, eps = _noised(x0, noise_range, generator, device, dtype)
        drop = torch.rand(x0.shape[0], generator=generator, device=device) < p_uncond  # [B]
        labels = torch.where(drop, torch.full_like(labels, null), labels)  # [B]
        prediction = network(x, alpha, sigma, labels)  # [B, ...]
        return (prediction - training_target(target, x0, eps, alpha, sigma)).square().mean()

    config = {"objective": "denoising score matching (plain MSE on the target)",
              "target": target, "noise_range": list(noise_range),
              "noise_distribution": "sigma/alpha log-uniform on noise_range, VP",
              "steps": steps, "batch_size": batch_size, "lr": lr, "p_uncond": p_uncond,
              "null_class": null, "grad_clip": grad_clip, "weight_decay": weight_decay,
              "seed": seed, "optimizer": "Adam(0.9, 0.99), 5% warm-up, cosine decay",
              "data": data_description or describe_data(data, labels)}
    if weights is not None:
        config["rows"] = "drawn with probability proportional to the given weights"
        config["weights_effective_size"] = _effective_size(check_weights(weights,
                                                                         data.shape[0]))
    return _train(network, loss_fn, batches, steps=steps, batch_size=batch_size, lr=lr,
                  grad_clip=grad_clip, weight_decay=weight_decay, progress=progress,
                  desc="train denoiser", device=device, config=config)


def train_classifier(network: nn.Module, data, labels: torch.Tensor | None = None, *,
                     steps: int, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                     device=None, progress: bool = True,
                     noise_range: tuple[float, float] = DEFAULT_NOISE_RANGE,
                     grad_clip: float = 1.0, weight_decay: float = 0.0,
                     data_description: str | None = None) -> TrainingReport:
    """Train a noise-conditional classifier by cross-entropy on noised data.

    Same arguments as :func:`train_denoiser` (no class dropout); the network maps
    ``(x, alpha [N], sigma [N]) -> [N, C]`` logits (e.g.
    :class:`~guidelab.models.NoisyClassifier`).
    """
    if not hasattr(network, "num_classes"):
        raise ValueError("network: expected a classifier with .num_classes (NoisyClassifier)")
    steps = _check_int(steps, "steps")
    batch_size = _check_int(batch_size, "batch_size")
    lr = _check_rate(lr, "lr", 1e-12, math.inf)
    noise_range = _check_noise_range(noise_range)
    device, dtype, generator, batches = _prepare(network, data, labels, seed, device)

    def loss_fn(x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, alpha, sigma, _ = _noised(x0, noise_range, generator, device, dtype)
        return nn.functional.cross_entropy(network(x, alpha, sigma), labels)

    config = {"objective": "cross-entropy on noised data", "noise_range": list(noise_range),
              "noise_distribution": "sigma/alpha log-uniform on noise_range, VP",
              "steps": steps, "batch_size": batch_size, "lr": lr, "grad_clip": grad_clip,
              "weight_decay": weight_decay, "seed": seed,
              "optimizer": "Adam(0.9, 0.99), 5% warm-up, cosine decay",
              "data": data_description or describe_data(data, labels)}
    return _train(network, loss_fn, batches, steps=steps, batch_size=batch_size, lr=lr,
                  grad_clip=grad_clip, weight_decay=weight_decay, progress=progress,
                  desc="train classifier", device=device, config=config)
