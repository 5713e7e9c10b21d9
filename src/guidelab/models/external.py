r"""External models behind guidelab's protocols: diffusers networks and any image classifier.

**diffusers.** A discrete-time diffusion model is trained at timesteps t = 0..T-1 (diffusers'
indexing) with abar_t = ``scheduler.alphas_cumprod[t]`` and x_t = sqrt(abar_t) x0 +
sqrt(1 - abar_t) eps: guidelab's kernel at alpha = sqrt(abar_t), sigma = sqrt(1 - abar_t), which
is guidelab's discrete step t + 1 of ``DiscreteSchedule(scheduler.betas)``. The adapter maps a
level (alpha, sigma) to a timestep through the log-SNR

    lambda = 2 log(alpha / sigma),        lambda_t = log(abar_t / (1 - abar_t)),

with abar_t recomputed in float64 as prod_{s <= t} (1 - beta_s) from ``scheduler.betas`` (or
taken from ``alphas_cumprod`` when there are no betas). lambda_t decreases with t; a
``searchsorted`` finds the neighbours of lambda, and

* if lambda is within ``tolerance`` (default 1e-3) of the spacing between adjacent training
  levels of some lambda_t, the network is called at exactly that integer timestep t (an
  ``int64`` tensor): at the scheduler's own levels, e.g. every step of
  ``DiscreteSchedule(scheduler.betas)`` or a respaced subset of it, it sees exactly its
  training timesteps;
* between levels, ``between="interpolate"`` (default) calls it at the fractional timestep
  t = i + (lambda_i - lambda) / (lambda_i - lambda_{i+1}), linear in lambda between the
  neighbours i, i + 1 (diffusers' sinusoidal timestep embeddings accept real t), and
  ``between="nearest"`` at the integer timestep with the nearest lambda_t; outside
  [lambda_{T-1}, lambda_0] the timestep is clamped to T-1 or 0.

The network's output is converted exactly to the score at the *given* (alpha, sigma) (see
:mod:`guidelab.models.conversions`): ``epsilon`` -> s = -eps / sigma, ``v_prediction`` ->
from v = alpha eps - sigma x0, ``sample`` -> from x0. Networks with a learned variance (2C
output channels for C input channels, as ADM/DiT checkpoints) contribute their first C channels.
Levels are variance preserving (alpha^2 + sigma^2 = 1), as everywhere in guidelab.

**Classifiers.** :func:`classifier_from_callable` wraps any callable from images (and, if it
says so, the noise level) to logits as ``log_class_posterior(x, alpha, sigma) =
log_softmax(fn(x))``: an ImageNet judge such as torchvision's Inception-v3 becomes a guidelab
classifier in one line.

The network is called as ``unet(sample, timestep=t, class_labels=labels)`` (keywords, which
``UNet2DModel`` and ``DiTTransformer2DModel`` both accept) and may return a tensor or an object
with ``.sample``. diffusers is an optional extra (``bash scripts/setup.sh diffusers``):
:func:`from_diffusers` never imports it (it wraps any such callable and any object with
``betas`` / ``alphas_cumprod``); :func:`load_diffusers`, which reads local weights with
diffusers' own loaders, imports it lazily; if it is missing, that is a one-line ValueError
naming the setup command.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._optional import require
from ..schedules import DiscreteSchedule
from .conversions import score_from_prediction
from .learned import check_finite_output, class_labels, levels_as_rows

__all__ = ["DiffusersScoreModel", "CallableClassifier", "from_diffusers", "load_diffusers",
           "classifier_from_callable", "PREDICTION_TYPES", "require_diffusers"]

# diffusers' prediction_type -> guidelab's target
PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETWEEN = ("interpolate", "nearest")


def require_diffusers():
    """The diffusers module; a ValueError naming ``bash scripts/setup.sh diffusers`` if it is
    missing or fails to import (:func:`guidelab._optional.require`)."""
    return require("diffusers", "diffusers", "load_diffusers")


def _placement(module, dtype, device) -> tuple[torch.device | None, torch.dtype | None]:
    """(device, dtype) to call ``module`` with: explicit arguments, else its parameters'."""
    parameter = None
    if isinstance(module, nn.Module):
        parameter = next(module.parameters(), None)
    if device is None and parameter is not None:
        device = parameter.device
    if dtype is None and parameter is not None:
        dtype = parameter.dtype
    return (torch.device(device) if device is not None else None), dtype


def _unwrap_output(output) -> torch.Tensor:
    if hasattr(output, "sample"):
        output = output.sample
    elif isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"unet: expected a tensor or an object with .sample as output, got "
                         f"{type(output).__name__}")
    return output


def _check_int(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


class DiffusersScoreModel:
    """A class-conditional discrete-time noise-prediction network as a score model.

    Build it with :func:`from_diffusers` (module docstring for the level-to-timestep map).

    Attributes:
        unet: the wrapped network or callable.
        abar: ``[T]`` float64 abar_t of the training timesteps t = 0..T-1.
        target: ``eps``, ``v`` or ``x0``.
        null_class: the class label of the unconditional score (None: no unconditional score).
        num_classes: C, the valid conditional labels 0..C-1 (None: any label except null).
        schedule: ``DiscreteSchedule`` with the scheduler's betas, for guidelab's samplers.
    """

    def __init__(self, unet: Callable, abar: torch.Tensor, *, target: str,
                 null_class: int | None, num_classes: int | None = None,
                 between: str = "interpolate", tolerance: float = 1e-3,
                 betas: torch.Tensor | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, max_batch: int | None = None):
        if not callable(unet):
            raise ValueError(f"unet: expected a callable network, got {type(unet).__name__}")
        abar = torch.as_tensor(abar, dtype=torch.float64).reshape(-1).cpu()
        if abar.numel() < 2 or not torch.isfinite(abar).all() or (abar <= 0).any() \
                or (abar >= 1).any() or (abar[1:] >= abar[:-1]).any():
            raise ValueError("scheduler: expected alphas_cumprod strictly decreasing in (0, 1) "
                             "over at least two timesteps")
        if target not in PREDICTION_TYPES.values():
            raise ValueError(f"prediction_type: expected one of {list(PREDICTION_TYPES)}, got "
                             f"target {target!r}")
        if between not in BETWEEN:
            raise ValueError(f"between: expected one of {BETWEEN}, got {between!r}")
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
                0 <= tolerance < 0.5):
            raise ValueError(f"tolerance: expected a number in [0, 0.5), got {tolerance!r}")
        if null_class is not None:
            _check_int(null_class, "null_class")
        if num_classes is not None:
            _check_int(num_classes, "num_classes", minimum=1)
        if max_batch is not None:
            _check_int(max_batch, "max_batch", minimum=1)
        self.unet, self.abar, self.target = unet, abar, target
        self.null_class, self.num_classes = null_class, num_classes
        self.between, self.tolerance, self.max_batch = between, float(tolerance), max_batch
        self.device, self.dtype = _placement(unet, dtype, device)
        self._betas = None if betas is None else torch.as_tensor(betas, dtype=torch.float64)
        # lambda_t = log abar - log(1 - abar), decreasing in t; stored negated (increasing)
        self._neg_log_snr = torch.log1p(-abar) - torch.log(abar)  # [T]
        gaps = self._neg_log_snr.diff()  # [T-1]
        self._spacing = torch.minimum(torch.cat([gaps[:1], gaps]),
                                      torch.cat([gaps, gaps[-1:]]))  # [T]

    def __repr__(self) -> str:
        return (f"DiffusersScoreModel({type(self.unet).__name__}, T={self.abar.numel()}, "
                f"target={self.target!r}, null_class={self.null_class})")

    @property
    def num_train_timesteps(self) -> int:
        return self.abar.numel()

    @property
    def schedule(self) -> DiscreteSchedule:
        """guidelab's ``DiscreteSchedule`` of the scheduler (its step t + 1 = timestep t)."""
        if self._betas is not None:
            return DiscreteSchedule(self._betas, "diffusers")
        a = torch.cat([self.abar[:1], self.abar[1:] / self.abar[:-1]])  # [T]
        return DiscreteSchedule(1.0 - a, "diffusers")

    def timesteps(self, alpha, sigma, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The timesteps for levels (alpha, sigma): ``([n] timesteps, [n] bool exact)``.

        Timesteps are ``int64`` when every row is exact or ``between="nearest"``, else float64.
        """
        alpha = levels_as_rows(alpha, n, "alpha", device="cpu", dtype=torch.float64)  # [n]
        sigma = levels_as_rows(sigma, n, "sigma", device="cpu", dtype=torch.float64)  # [n]
        if (sigma <= 0).any() or (alpha <= 0).any():
            raise ValueError("sigma: expected alpha > 0 and sigma > 0 (the score of a noise "
                             "prediction is -eps / sigma)")
        query = 2 * (torch.log(sigma) - torch.log(alpha))  # -lambda, [n]
        reference = self._neg_log_snr  # [T], increasing
        T = reference.numel()
        upper = torch.searchsorted(reference, query).clamp(1, T - 1)  # [n]
        lower = upper - 1  # [n]
        d_low = (query - reference[lower]).abs()  # [n]
        d_up = (query - reference[upper]).abs()  # [n]
        nearest = torch.where(d_low <= d_up, lower, upper)  # [n]
        distance = torch.minimum(d_low, d_up)  # [n]
        exact = distance <= self.tolerance * self._spacing[nearest]  # [n]
        if self.between == "nearest" or bool(exact.all()):
            return nearest, exact
        fraction = ((query - reference[lower]) / (reference[upper] - reference[lower]))
        continuous = (lower.to(torch.float64) + fraction.clamp(0.0, 1.0))  # [n]
        continuous = torch.where(exact, nearest.to(torch.float64), continuous)
        return continuous, exact

    def _predict(self, x: torch.Tensor, timesteps: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
        """The network's prediction ``[M, ...]`` in x's dtype and device (chunked)."""
        device = self.device if self.device is not None else x.device
        dtype = self.dtype if self.dtype is not None else x.dtype
        rows = x.shape[0] if self.max_batch is None else self.max_batch
        parts = []
        for start in range(0, x.shape[0], max(rows, 1)):
            chunk = slice(start, start + rows)
            output = _unwrap_output(self.unet(x[chunk].to(device=device, dtype=dtype),
                                              timestep=timesteps[chunk].to(device),
                                              class_labels=labels[chunk].to(device)))
            channels = x.shape[1] if x.ndim > 1 else None
            if (channels is not None and x.ndim >= 3 and output.ndim == x.ndim
                    and output.shape[1] == 2 * channels):
                output = output[:, :channels]  # learned variance: keep the prediction
            if output.shape != x[chunk].shape:
                raise ValueError(f"unet: expected an output of shape {tuple(x[chunk].shape)}, "
                                 f"got {tuple(output.shape)}")
            parts.append(output.to(device=x.device, dtype=x.dtype))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _labels(self, c, n: int, device) -> torch.Tensor:
        if c is None:
            return class_labels(None, n, 1, self.null_class, device)
        limit = self.num_classes if self.num_classes is not None else 1 << 62  # unchecked
        labels = class_labels(c, n, limit, None, device)
        if self.null_class is not None and (labels == self.null_class).any():
            raise ValueError(f"c: class {self.null_class} is the null label; use c=None for "
                             f"the unconditional score")
        return labels

    def score(self, x: torch.Tensor, alpha, sigma, c=None) -> torch.Tensor:
        """s(x | c) (c = None: the null class) from one network call; ``[N, ...]``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point torch.Tensor, got {type(x).__name__}")
        n = x.shape[0]
        timesteps, _ = self.timesteps(alpha, sigma, n)
        labels = self._labels(c, n, x.device)
        prediction = self._predict(x, timesteps, labels)
        alpha_rows = levels_as_rows(alpha, n, "alpha", device=x.device, dtype=x.dtype)
        sigma_rows = levels_as_rows(sigma, n, "sigma", device=x.device, dtype=x.dtype)
        score = score_from_prediction(prediction, self.target, x, alpha_rows, sigma_rows)
        return check_finite_output(score, x, "score")

    def branch_scores(self, x: torch.Tensor, alpha, sigma,
                      c) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(x|c), s(x)) from ONE network call on [x; x]; ``[N, ...]`` each."""
        if c is None:
            raise ValueError("c: branch_scores needs a class")
        n = x.shape[0]
        timesteps, _ = self.timesteps(alpha, sigma, n)
        labels = torch.cat([self._labels(c, n, x.device), self._labels(None, n, x.device)])
        prediction = self._predict(torch.cat([x, x]), torch.cat([timesteps, timesteps]),
                                   labels)  # [2N, ...]
        alpha_rows = levels_as_rows(alpha, n, "alpha", device=x.device, dtype=x.dtype)
        sigma_rows = levels_as_rows(sigma, n, "sigma", device=x.device, dtype=x.dtype)
        s_cond = score_from_prediction(prediction[:n], self.target, x, alpha_rows, sigma_rows)
        s_uncond = score_from_prediction(prediction[n:], self.target, x, alpha_rows,
                                         sigma_rows)
        return (check_finite_output(s_cond, x, "branch_scores"),
                check_finite_output(s_uncond, x, "branch_scores"))  # [N, ...] each


def from_diffusers(unet, scheduler, *, null_class: int | None,
                   prediction_type: str | None = None, num_classes: int | None = None,
                   between: str = "interpolate", tolerance: float = 1e-3,
                   dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                   max_batch: int | None = None) -> DiffusersScoreModel:
    """Wrap a diffusers class-conditional noise-prediction network and its scheduler.

    Args:
        unet: ``UNet2DModel`` with class embeddings (``num_class_embeds``), a DiT transformer,
            or any callable ``unet(sample [N, C, H, W], timestep=[N], class_labels=[N]) ->
            tensor or object with .sample``.
        scheduler: DDPMScheduler-like: ``alphas_cumprod`` ``[T]`` (and ``betas``), and
            ``config.prediction_type`` / ``config.num_train_timesteps`` when present.
        null_class: the class label that means "no class" (the unconditional score, e.g. 1000
            for a 1000-class ImageNet model trained with class dropout); None if the model has
            none (then only conditional scores and classifier guidance are available).
        prediction_type: ``epsilon``, ``v_prediction`` or ``sample``; default the scheduler's.
        num_classes: the number of conditional classes (labels 0..C-1 are checked); default
            unchecked.
        between: ``interpolate`` (default) or ``nearest`` for levels between training levels.
        tolerance: a level within this fraction of the local level spacing (in log-SNR) of a
            training level is that level exactly.
        dtype, device: what the network is called with (default: its parameters').
        max_batch: split calls into chunks of at most this many rows (memory).

    Returns:
        A :class:`DiffusersScoreModel`: ``score``, one-call ``branch_scores``, ``schedule``
        (``DiscreteSchedule`` of the scheduler's betas) and ``timesteps``.

    Example (a tiny random network, offline)::

        from diffusers import DDPMScheduler, UNet2DModel
        unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1,
                           block_out_channels=(8, 16), num_class_embeds=11, norm_num_groups=4,
                           down_block_types=("DownBlock2D",) * 2,
                           up_block_types=("UpBlock2D",) * 2)
        model = from_diffusers(unet, DDPMScheduler(num_train_timesteps=100), null_class=10)
        guided = ClassifierFreeGuidance(model, c=3, strength=2.0)
        samples = ddpm_type(guided, model.schedule, torch.randn(4, 1, 8, 8)).samples
    """
    if not callable(unet):
        raise ValueError(f"unet: expected a callable network, got {type(unet).__name__}")
    config = getattr(scheduler, "config", None)
    if prediction_type is None:
        prediction_type = getattr(config, "prediction_type", None) if config is not None \
            else None
        if prediction_type is None and isinstance(config, dict):
            prediction_type = config.get("prediction_type")
        prediction_type = prediction_type or "epsilon"
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type: expected one of {list(PREDICTION_TYPES)}, got "
                         f"{prediction_type!r}")
    betas = getattr(scheduler, "betas", None)
    if betas is not None:
        betas = torch.as_tensor(betas).detach().to(device="cpu", dtype=torch.float64)
        abar = torch.cumprod(1.0 - betas, 0)  # [T] float64
    else:
        cumprod = getattr(scheduler, "alphas_cumprod", None)
        if cumprod is None:
            raise ValueError("scheduler: expected betas or alphas_cumprod")
        abar = torch.as_tensor(cumprod).detach().to(device="cpu", dtype=torch.float64)
    expected = getattr(config, "num_train_timesteps", None) if config is not None else None
    if expected is not None and int(expected) != abar.numel():
        raise ValueError(f"scheduler: config.num_train_timesteps = {expected} but it has "
                         f"{abar.numel()} levels")
    return DiffusersScoreModel(unet, abar, target=PREDICTION_TYPES[prediction_type],
                               null_class=null_class, num_classes=num_classes,
                               between=between, tolerance=tolerance, betas=betas, dtype=dtype,
                               device=device, max_batch=max_batch)


def load_diffusers(directory, *, null_class: int | None, subfolder: str | None = None,
                   scheduler_subfolder: str | None = "scheduler",
                   prediction_type: str | None = None, num_classes: int | None = None,
                   between: str = "interpolate", tolerance: float = 1e-3,
                   dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                   max_batch: int | None = None) -> DiffusersScoreModel:
    """Load a class-conditional diffusers model from files on disk (nothing downloaded).

    The network is read with ``diffusers.AutoModel.from_pretrained(directory,
    subfolder=subfolder, local_files_only=True)`` (default subfolder: ``transformer`` or
    ``unet``, whichever exists, else the directory itself) and the noise levels with
    ``diffusers.DDPMScheduler.from_pretrained(directory, subfolder=scheduler_subfolder,
    local_files_only=True)`` (any scheduler config with the training betas will do), then wrapped
    by :func:`from_diffusers` (see there for the other arguments). The network is put in eval
    mode, on ``device`` and in ``dtype`` when given.
    """
    diffusers = require_diffusers()
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"directory: no model directory at {root}")
    if subfolder is None:
        subfolder = next((name for name in ("transformer", "unet") if (root / name).is_dir()),
                         None)
    kwargs = {"local_files_only": True}
    if subfolder:
        kwargs["subfolder"] = subfolder
    network = diffusers.AutoModel.from_pretrained(str(root), **kwargs)
    kwargs = {"local_files_only": True}
    if scheduler_subfolder and (root / scheduler_subfolder).is_dir():
        kwargs["subfolder"] = scheduler_subfolder
    scheduler = diffusers.DDPMScheduler.from_pretrained(str(root), **kwargs)
    network.eval()
    if device is not None or dtype is not None:
        network.to(device=device, dtype=dtype)
    return from_diffusers(network, scheduler, null_class=null_class,
                          prediction_type=prediction_type, num_classes=num_classes,
                          between=between, tolerance=tolerance, dtype=dtype, device=device,
                          max_batch=max_batch)


class CallableClassifier:
    """Any callable from images to logits as the classifier protocol.

    ``log_class_posterior(x [N, ...], alpha=1, sigma=0) -> [N, C]`` = log_softmax of
    ``fn(x)`` (or ``fn(x, alpha [N], sigma [N])`` when ``noise_level=True``), cast back to x's
    dtype and device; differentiable in x when ``fn`` is.
    """

    def __init__(self, fn: Callable, *, noise_level: bool = False, output: str = "logits",
                 num_classes: int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, max_batch: int | None = None):
        if not callable(fn):
            raise ValueError(f"fn: expected a callable, got {type(fn).__name__}")
        if output not in ("logits", "probabilities"):
            raise ValueError(f"output: expected 'logits' or 'probabilities', got {output!r}")
        if num_classes is not None:
            _check_int(num_classes, "num_classes", minimum=1)
        if max_batch is not None:
            _check_int(max_batch, "max_batch", minimum=1)
        self.fn, self.noise_level, self.output = fn, bool(noise_level), output
        self.num_classes, self.max_batch = num_classes, max_batch
        self.device, self.dtype = _placement(fn, dtype, device)

    def __repr__(self) -> str:
        return f"CallableClassifier({type(self.fn).__name__}, noise_level={self.noise_level})"

    def log_class_posterior(self, x: torch.Tensor, alpha: Any = 1.0,
                            sigma: Any = 0.0) -> torch.Tensor:
        """log p(c | x) for every class, ``[N, C]``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point torch.Tensor, got {type(x).__name__}")
        n = x.shape[0]
        device = self.device if self.device is not None else x.device
        dtype = self.dtype if self.dtype is not None else x.dtype
        alpha_rows = levels_as_rows(alpha, n, "alpha", device=device, dtype=dtype)  # [N]
        sigma_rows = levels_as_rows(sigma, n, "sigma", device=device, dtype=dtype)  # [N]
        rows = n if self.max_batch is None else self.max_batch
        parts = []
        for start in range(0, n, max(rows, 1)):
            chunk = slice(start, start + rows)
            inputs = x[chunk].to(device=device, dtype=dtype)
            out = (self.fn(inputs, alpha_rows[chunk], sigma_rows[chunk]) if self.noise_level
                   else self.fn(inputs))
            out = _unwrap_logits(out)
            if out.ndim != 2 or out.shape[0] != inputs.shape[0] or (
                    self.num_classes is not None and out.shape[1] != self.num_classes):
                raise ValueError(f"fn: expected logits of shape [{inputs.shape[0]}, "
                                 f"{self.num_classes or 'C'}], got {tuple(out.shape)}")
            if self.output == "probabilities":
                out = torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
            parts.append(torch.log_softmax(out.to(x.dtype), dim=1).to(x.device))
        log_posterior = torch.cat(parts) if len(parts) > 1 else parts[0]
        return check_finite_output(log_posterior, x, "log_class_posterior")

    def class_posterior(self, x: torch.Tensor, alpha: Any = 1.0, sigma: Any = 0.0):
        """p(c | x), ``[N, C]``."""
        return self.log_class_posterior(x, alpha, sigma).exp()


def _unwrap_logits(output) -> torch.Tensor:
    for name in ("logits", "sample"):
        if hasattr(output, name):
            return getattr(output, name)
    if isinstance(output, (tuple, list)):  # e.g. Inception-v3's InceptionOutputs in training
        return output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"fn: expected logits (a tensor), got {type(output).__name__}")
    return output


def classifier_from_callable(fn: Callable, *, noise_level: bool = False,
                             output: str = "logits", num_classes: int | None = None,
                             dtype: torch.dtype | None = None,
                             device: torch.device | str | None = None,
                             max_batch: int | None = None) -> CallableClassifier:
    """Any callable from images to logits as a guidelab classifier.

    Args:
        fn: ``fn(x [N, ...]) -> [N, C]`` logits (``noise_level=False``: a classifier of clean
            images, e.g. an evaluation judge; alpha and sigma are ignored) or
            ``fn(x, alpha [N], sigma [N]) -> [N, C]`` (``noise_level=True``: a noise-aware
            classifier, usable for classifier guidance). Preprocessing (resizing, ImageNet
            normalisation, decoding latents) belongs inside fn.
        output: ``logits`` (default; log-probabilities also work) or ``probabilities``.
        num_classes: check the output has C columns.
        dtype, device: what fn is called with (default: its parameters' if it is a module,
            else x's).
        max_batch: evaluate in chunks of at most this many rows.

    Returns:
        A :class:`CallableClassifier` with ``log_class_posterior(x, alpha, sigma) -> [N, C]``.

    Example:
        >>> logits = lambda x: torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], 1)
        >>> judge = classifier_from_callable(logits, num_classes=2)
        >>> judge.log_class_posterior(torch.zeros(3, 1, 2, 2)).exp()
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    return CallableClassifier(fn, noise_level=noise_level, output=output,
                              num_classes=num_classes, dtype=dtype, device=device,
                              max_batch=max_batch)

