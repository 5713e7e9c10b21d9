r"""Small noise-conditional networks: denoisers (eps, x0 or v) and noisy classifiers.

Every network here sees a noised input x = alpha x0 + sigma eps and the noise level (alpha,
sigma). The level enters through the log noise-to-signal ratio

    u = log(sigma / alpha)            (u = -lambda / 2, lambda the log-SNR),

clamped to [-12, 12], embedded by fixed Fourier features [u / 8, sin(f_i u), cos(f_i u)] with
frequencies f_i geometric in [1/8, 8], followed by a two-layer MLP. The input is scaled by

    c_in = 1 / sqrt(alpha^2 data_std^2 + sigma^2),

the inverse standard deviation of x when the data have standard deviation ``data_std`` per
coordinate (Karras et al. 2022's preconditioning), so the network sees inputs of unit scale at
every level. A denoiser's output is its prediction of ``target`` (``eps``, ``x0`` or ``v``;
see :mod:`guidelab.models.conversions` for the exact map to the score); a classifier's output
is ``[N, C]`` logits of p_t(c | x).

Class conditioning (denoisers): labels 0..C-1 are the classes and label C (``null_class``) is
the unconditional "null" label used by class dropout, so one network gives both s(x|c) and s(x).

* :class:`MLPDenoiser` for points ``[N, d]``: residual MLP blocks, each adding a per-block
  projection of the (noise + class) embedding.
* :class:`ConvDenoiser` for small images ``[N, C, H, W]`` (8x8 digits): a two-resolution U-Net
  (residual conv blocks with GroupNorm at H x W and H/2 x W/2, one skip connection).
* :class:`NoisyClassifier` for either shape: the same bodies ending in class logits.

Construction is seeded (``seed``, default 0): the same arguments give the same initial weights
bit for bit, whatever the global RNG state. Each network keeps its constructor arguments in
``config`` (a JSON-able dict) so that a checkpoint can rebuild it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .conversions import TARGETS

__all__ = ["MLPDenoiser", "ConvDenoiser", "NoisyClassifier", "NoiseEmbedding", "ARCHITECTURES"]

LOG_RATIO_CLAMP = 12.0


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_data_std(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"data_std: expected a finite number > 0, got {value!r}")
    return float(value)


def _check_target(target) -> str:
    if target not in TARGETS:
        raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
    return target


def log_ratio(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """u = log(sigma / alpha) clamped to [-12, 12]; ``[N]`` (finite at sigma = 0 or alpha = 0)."""
    tiny = torch.finfo(sigma.dtype).tiny
    u = torch.log(sigma.clamp_min(tiny)) - torch.log(alpha.clamp_min(tiny))  # [N]
    return u.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def input_scale(alpha: torch.Tensor, sigma: torch.Tensor, data_std: float) -> torch.Tensor:
    """c_in = 1 / sqrt(alpha^2 data_std^2 + sigma^2); ``[N]``."""
    return torch.rsqrt(alpha**2 * data_std**2 + sigma**2)


class NoiseEmbedding(nn.Module):
    """Embedding of the noise level: Fourier features of u = log(sigma/alpha), then an MLP.

    ``forward(alpha [N], sigma [N]) -> [N, out_features]``.
    """

    def __init__(self, out_features: int, fourier_features: int = 32):
        super().__init__()
        half = fourier_features // 2
        self.register_buffer("frequencies", torch.logspace(-3, 3, half, base=2.0),
                             persistent=False)  # [F/2], 1/8 .. 8
        self.mlp = nn.Sequential(nn.Linear(2 * half + 1, out_features), nn.SiLU(),
                                 nn.Linear(out_features, out_features))

    def forward(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        u = log_ratio(alpha, sigma)  # [N]
        angles = u[:, None] * self.frequencies.to(u.dtype)  # [N, F/2]
        features = torch.cat([u[:, None] / 8, angles.sin(), angles.cos()], dim=1)  # [N, F+1]
        return self.mlp(features)  # [N, out]


class _Network(nn.Module):
    """Shared bookkeeping: ``config`` (constructor arguments), ``kind``, ``input_shape``."""

    kind: str = "denoiser"

    def _seeded(self, seed) -> Any:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: expected an integer, got {seed!r}")
        return _SeededInit(seed)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class _SeededInit:
    """Context: parameters created inside are drawn from ``torch.manual_seed(seed)``; the
    global CPU RNG state is restored on exit."""

    def __init__(self, seed: int):
        self.seed = seed
        self._fork = None

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._fork.__exit__(*exc)


class _ResidualMLPBlock(nn.Module):
    """h <- h + W2 silu(W1 silu(h) + b(cond)); ``[N, H] -> [N, H]``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.inner = nn.Linear(hidden, hidden)
        self.outer = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, cond_bias: torch.Tensor) -> torch.Tensor:
        inner = self.inner(nn.functional.silu(h)) + cond_bias  # [N, H]
        return h + self.outer(nn.functional.silu(inner))  # [N, H]


class _MLPBody(nn.Module):
    """x_in [N, d] and a conditioning vector [N, H] -> features [N, H] (residual blocks)."""

    def __init__(self, dim: int, hidden: int, depth: int):
        super().__init__()
        self.depth = depth
        self.input = nn.Linear(dim, hidden)
        self.cond_proj = nn.Linear(hidden, hidden * depth)
        self.blocks = nn.ModuleList([_ResidualMLPBlock(hidden) for _ in range(depth)])

    def forward(self, x_in: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.input(x_in) + cond  # [N, H]
        biases = self.cond_proj(nn.functional.silu(cond)).chunk(self.depth, dim=1)  # [N, H] each
        for block, bias in zip(self.blocks, biases, strict=True):
            h = block(h, bias)  # [N, H]
        return nn.functional.silu(h)  # [N, H]


class MLPDenoiser(_Network):
    """A noise- and class-conditional residual MLP denoiser for points ``[N, d]``.

    Args:
        dim: d, the data dimension.
        num_classes: C; labels 0..C-1 are classes, label C is the null (unconditional) label.
        hidden: width H of the hidden layers.
        depth: number of residual blocks.
        target: what the output predicts: ``eps`` (default), ``x0`` or ``v``.
        data_std: the data's standard deviation per coordinate, for the input scale c_in.
        seed: seed of the initial weights.

    ``forward(x [N, d], alpha [N], sigma [N], labels [N] int64) -> [N, d]`` prediction of
    ``target``. The output layer starts at zero (an eps network starts by predicting 0).
    """

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, depth: int = 3,
                 target: str = "eps", data_std: float = 1.0, seed: int = 0):
        super().__init__()
        self.config = {"dim": _check_positive_int(dim, "dim"),
                       "num_classes": _check_positive_int(num_classes, "num_classes"),
                       "hidden": _check_positive_int(hidden, "hidden"),
                       "depth": _check_positive_int(depth, "depth"),
                       "target": _check_target(target), "data_std": _check_data_std(data_std),
                       "seed": seed}
        self.num_classes, self.null_class = num_classes, num_classes
        self.target, self.data_std = target, float(data_std)
        self.input_shape = (dim,)
        with self._seeded(seed):
            self.noise_embedding = NoiseEmbedding(hidden)
            self.class_embedding = nn.Embedding(num_classes + 1, hidden)
            self.body = _MLPBody(dim, hidden, depth)
            self.output = nn.Linear(hidden, dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        x_in = x * input_scale(alpha, sigma, self.data_std)[:, None]  # [N, d]
        cond = self.noise_embedding(alpha, sigma) + self.class_embedding(labels)  # [N, H]
        return self.output(self.body(x_in, cond))  # [N, d]


def _groups(channels: int) -> int:
    for groups in (8, 4, 2):
        if channels % groups == 0:
            return groups
    return 1


class _ResidualConvBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a per-channel bias from the conditioning vector.

    ``forward(h [N, Cin, H, W], cond [N, E]) -> [N, Cout, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_features: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.cond = nn.Linear(cond_features, out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                     else nn.Identity())

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        inner = self.conv1(nn.functional.silu(self.norm1(h)))  # [N, Cout, H, W]
        inner = inner + self.cond(cond)[:, :, None, None]  # [N, Cout, H, W]
        inner = self.conv2(nn.functional.silu(self.norm2(inner)))  # [N, Cout, H, W]
        return self.skip(h) + inner


def _check_image(channels, size) -> None:
    _check_positive_int(channels, "channels")
    _check_positive_int(size, "size", minimum=2)
    if size % 2:
        raise ValueError(f"size: expected an even image size (one 2x downsampling), got {size}")


class ConvDenoiser(_Network):
    """A noise- and class-conditional small U-Net for images ``[N, C, size, size]``.

    Layout: conv in (C -> width), a residual block at size x size, a strided conv to
    size/2 x size/2 with 2 width channels and a residual block there, nearest upsampling back,
    concatenation with the full-resolution features, a residual block, GroupNorm-SiLU-conv out
    (zero-initialised). Every residual block adds a per-channel bias from the (noise + class)
    embedding of size 4 width.

    Args:
        num_classes: C classes; label C is the null (unconditional) label.
        channels: image channels (1 for digits).
        size: image height and width (even; 8 for digits).
        width: channels at full resolution.
        target: ``eps`` (default), ``x0`` or ``v``.
        data_std: the data's standard deviation per pixel, for c_in.
        seed: seed of the initial weights.

    ``forward(x [N, C, H, W], alpha [N], sigma [N], labels [N] int64) -> [N, C, H, W]``.
    """

    def __init__(self, num_classes: int, channels: int = 1, size: int = 8, width: int = 64,
                 target: str = "eps", data_std: float = 1.0, seed: int = 0):
        super().__init__()
        _check_image(channels, size)
        self.config = {"num_classes": _check_positive_int(num_classes, "num_classes"),
                       "channels": channels, "size": size,
                       "width": _check_positive_int(width, "width"),
                       "target": _check_target(target), "data_std": _check_data_std(data_std),
                       "seed": seed}
        self.num_classes, self.null_class = num_classes, num_classes
        self.target, self.data_std = target, float(data_std)
        self.input_shape = (channels, size, size)
        cond = 4 * width
        with self._seeded(seed):
            self.noise_embedding = NoiseEmbedding(cond)
            self.class_embedding = nn.Embedding(num_classes + 1, cond)
            self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
            self.block_high = _ResidualConvBlock(width, width, cond)
            self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
            self.block_low = _ResidualConvBlock(2 * width, 2 * width, cond)
            self.up = nn.Conv2d(2 * width, width, 3, padding=1)
            self.block_out = _ResidualConvBlock(2 * width, width, cond)
            self.norm_out = nn.GroupNorm(_groups(width), width)
            self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        x_in = x * input_scale(alpha, sigma, self.data_std)[:, None, None, None]  # [N, C, H, W]
        cond = nn.functional.silu(self.noise_embedding(alpha, sigma)
                                  + self.class_embedding(labels))  # [N, E]
        high = self.block_high(self.conv_in(x_in), cond)  # [N, W, H, W]
        low = self.block_low(self.down(high), cond)  # [N, 2W, H/2, W/2]
        up = self.up(nn.functional.interpolate(low, scale_factor=2.0, mode="nearest"))
        h = self.block_out(torch.cat([high, up], dim=1), cond)  # [N, W, H, W]
        return self.conv_out(nn.functional.silu(self.norm_out(h)))  # [N, C, H, W]


class NoisyClassifier(_Network):
    """A noise-conditional classifier of noised inputs: logits of p_t(c | x), ``[N, C]``.

    Trained by cross-entropy on noised data (:func:`guidelab.models.train_classifier`), it
    gives classifier guidance its grad_x log p_t(c | x) through
    :class:`guidelab.models.LearnedClassifier`.

    Args:
        input_shape: ``d`` or ``(d,)`` for points (residual MLP body), ``(C, H, W)`` for images
            (two residual conv blocks at H x W and H/2 x W/2, then global average pooling).
        num_classes: C.
        hidden: MLP width (points).
        depth: number of MLP residual blocks (points).
        width: conv channels at full resolution (images).
        data_std: the data's standard deviation per coordinate, for c_in.
        seed: seed of the initial weights.

    ``forward(x [N, ...], alpha [N], sigma [N]) -> [N, C]`` logits.
    """

    kind = "classifier"

    def __init__(self, input_shape, num_classes: int, hidden: int = 128, depth: int = 2,
                 width: int = 32, data_std: float = 1.0, seed: int = 0):
        super().__init__()
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        if len(shape) not in (1, 3) or any(isinstance(s, bool) or not isinstance(s, int)
                                           or s < 1 for s in shape):
            raise ValueError(f"input_shape: expected d, (d,) or (C, H, W) positive integers, "
                             f"got {input_shape!r}")
        if len(shape) == 3:
            if shape[1] != shape[2]:
                raise ValueError(f"input_shape: expected square images, got {shape}")
            _check_image(shape[0], shape[1])
        self.config = {"input_shape": list(shape),
                       "num_classes": _check_positive_int(num_classes, "num_classes"),
                       "hidden": _check_positive_int(hidden, "hidden"),
                       "depth": _check_positive_int(depth, "depth"),
                       "width": _check_positive_int(width, "width"),
                       "data_std": _check_data_std(data_std), "seed": seed}
        self.num_classes, self.data_std, self.input_shape = num_classes, float(data_std), shape
        self.image = len(shape) == 3
        with self._seeded(seed):
            if self.image:
                cond = 4 * width
                self.noise_embedding = NoiseEmbedding(cond)
                self.conv_in = nn.Conv2d(shape[0], width, 3, padding=1)
                self.block_high = _ResidualConvBlock(width, width, cond)
                self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
                self.block_low = _ResidualConvBlock(2 * width, 2 * width, cond)
                self.norm_out = nn.GroupNorm(_groups(2 * width), 2 * width)
                self.output = nn.Linear(2 * width, num_classes)
            else:
                self.noise_embedding = NoiseEmbedding(hidden)
                self.body = _MLPBody(shape[0], hidden, depth)
                self.output = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        scale = input_scale(alpha, sigma, self.data_std)  # [N]
        cond = self.noise_embedding(alpha, sigma)  # [N, E]
        if not self.image:
            return self.output(self.body(x * scale[:, None], cond))  # [N, C]
        cond = nn.functional.silu(cond)
        high = self.block_high(self.conv_in(x * scale[:, None, None, None]), cond)
        low = self.block_low(self.down(high), cond)  # [N, 2W, H/2, W/2]
        pooled = nn.functional.silu(self.norm_out(low)).mean(dim=(2, 3))  # [N, 2W]
        return self.output(pooled)  # [N, C]


ARCHITECTURES: dict[str, type[_Network]] = {
    "MLPDenoiser": MLPDenoiser,
    "ConvDenoiser": ConvDenoiser,
    "NoisyClassifier": NoisyClassifier,
}
