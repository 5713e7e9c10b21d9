r"""Judges: calibrated classifiers of clean samples that score what a guided sampler produced.

A study draws samples Y of a guided sampler for a class c and reports

    Q = E[1 / p_J(c | Y)],

where p_J is a *judge*: a classifier of clean data, independent of the model that sampled Y.
Every judge satisfies the classifier seam at the clean level (alpha, sigma) = (1, 0):

    log_class_posterior(x [N, ...], alpha=1.0, sigma=0.0) -> [N, C],   logsumexp over C = 0,

in the wider of x's dtype and the judge's (at least float32), on x's device. A row of x holding
a NaN or an infinity gives a row of NaN (downstream metrics count such rows, never average them);
a non-finite output for a finite row raises FloatingPointError naming the judge; sigma > 0
raises ValueError (a judge is not a noise-aware classifier). Judges also have ``num_classes``,
``describe() -> str`` and ``fingerprint() -> str``, a SHA-256 digest of everything that
determines their output (for artifact keys). They are evaluated under ``torch.no_grad``.

**LogisticJudge.** Temperature-scaled multinomial logistic regression on the flattened sample
y in R^D:

    z(y) = W y + b  (W [C, D], b [C]),      log p_J(c | y) = log_softmax(z(y) / T)_c,  T > 0.

:func:`fit_logistic_judge` fits it as the digits study fits its evaluator: for each inverse
L2 strength C_reg in a grid, out-of-fold logits z_oof from a stratified K-fold split
(scikit-learn's ``LogisticRegression(C=C_reg, max_iter=5000)``, ``decision_function``), the
temperature

    T(C_reg) = argmin_T  -(1/n) sum_i log_softmax(z_oof,i / T)_{c_i}

(bounded search on log T in [-4, 4]), and that out-of-fold NLL; the pair with the smallest NLL
is kept and the regression refitted on all rows, its ``coef_`` and ``intercept_`` copied into
W and b. With two classes scikit-learn keeps one logit z = w.y + b0 for class 1; the judge
holds W = [0; w], b = [0, b0], since softmax([0, z] / T) = (1 - s, s) with s = sigmoid(z / T).
Prediction is torch only (CPU or CUDA); scikit-learn is needed only to fit. ``save`` / ``load``
use a safetensors file whose JSON header holds a SHA-256 digest of the tensors, checked on load.

**NetworkJudge.** Any ``torch.nn.Module`` f mapping a preprocessed batch to logits [N, C]:

    log p_J(c | x) = log_softmax(f(P(x)))_c,
    P(x) = normalise(channels(resize(clamp((x - lo) / (hi - lo)))))

with, each optional: the sample's pixel range (lo, hi) (default (-1, 1)) mapped onto [0, 1] and
clamped there; a bilinear resize (``torch.nn.functional.interpolate``, ``align_corners=False``,
``antialias=False``); 1 -> K channel repetition; per-channel (v - mean_k) / std_k.
:func:`from_torchvision` builds a torchvision classifier with ``weights=None`` and loads a local
state-dict file (nothing is downloaded), with ImageNet preprocessing by default.

**Factories.** :func:`load_python_object` resolves ``"package.module:attribute"``;
:func:`judge_from_factory` calls such a factory with keyword options and returns a judge.

A judge's calibration on held-out data is what makes Q meaningful: Q weighs 1 / p_J(c | Y), so a
judge that is overconfident against c inflates Q without bound and one that is overconfident
for c hides the effect of guidance.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import all_finite
from .checkpoint import METADATA_KEY, read_guidelab_file
from .learned import levels_as_rows

__all__ = [
    "LogisticJudge",
    "fit_logistic_judge",
    "NetworkJudge",
    "from_torchvision",
    "load_python_object",
    "judge_from_factory",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JUDGE_FORMAT",
    "JUDGE_FORMAT_VERSION",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JUDGE_FORMAT = "guidelab.judge"
JUDGE_FORMAT_VERSION = 1
_LOGISTIC_TENSORS = ("bias", "temperature", "weight")


# ----------------------------------------------------------------------------- shared helpers


def _missing_extra(what: str, module: str, extra: str, error: BaseException) -> ValueError:
    """One-line ValueError for an optional package that is missing or fails to import."""
    text = " ".join(str(error).split()) or type(error).__name__
    state = ("is not installed" if isinstance(error, ModuleNotFoundError)
             and (error.name or "").split(".")[0] == module else "could not be imported")
    return ValueError(f"{what} needs {module}, which {state} ({type(error).__name__}: "
                      f"{text[:300]}); run `bash scripts/setup.sh {extra}`")


def _as_samples(x) -> torch.Tensor:
    """x as a floating-point tensor ``[N, ...]`` (numpy arrays are converted)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a floating-point torch.Tensor [N, ...], got {got}")
    if x.ndim == 0:
        raise ValueError("x: expected a tensor [N, ...], got a 0-d tensor")
    return x


def _check_clean(alpha, sigma, n: int) -> None:
    """alpha, sigma valid levels, and sigma = 0: a judge scores clean samples."""
    levels_as_rows(alpha, n, "alpha", device="cpu", dtype=torch.float64)
    sigma_rows = levels_as_rows(sigma, n, "sigma", device="cpu", dtype=torch.float64)  # [N]
    if bool((sigma_rows > 0).any()):
        raise ValueError("sigma: a judge scores clean samples (sigma = 0); for classifier "
                         "guidance use a noise-aware classifier")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x ``[N, ...]`` as ``[N, D]`` (also for N = 0)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # [N, D]


def _output_dtype(x_dtype: torch.dtype, judge_dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(torch.promote_types(x_dtype, judge_dtype), torch.float32)


def _finite_rows(flat: torch.Tensor) -> torch.Tensor | None:
    """None when every entry of ``flat [N, D]`` is finite, else the mask ``[N]`` of finite rows."""
    if all_finite(flat):
        return None
    return torch.isfinite(flat).all(dim=1)  # [N]


def _check_output(log_posterior: torch.Tensor, name: str) -> torch.Tensor:
    """FloatingPointError naming the judge if ``log_posterior`` (of finite rows) is not finite."""
    if not all_finite(log_posterior):
        bad = int((~torch.isfinite(log_posterior).all(dim=1)).sum())
        raise FloatingPointError(f"{name}: returned non-finite log-probabilities for {bad} of "
                                 f"{log_posterior.shape[0]} finite input rows")
    return log_posterior


def _update_with_tensors(digest, tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed each tensor's name, dtype, shape and raw bytes (names sorted) into ``digest``."""
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{str(tensor.dtype).removeprefix('torch.')}:"
                      f"{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    _update_with_tensors(digest, tensors)
    return digest.hexdigest()


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------- LogisticJudge


class LogisticJudge:
    r"""Temperature-scaled multinomial logistic regression, p(c|y) = softmax((W y + b) / T)_c.

    Args:
        weight: W ``[C, D]`` (C >= 2 classes, D features of the flattened sample).
        bias: b ``[C]``.
        temperature: T > 0 (a float or a 0-d / ``[1]`` tensor).
        inverse_regularisation: the regression's C (inverse L2 strength), when fitted.
        cv_log_loss: out-of-fold negative log-likelihood per row at the chosen (C, T).
        grid: ``[(C, T, out-of-fold NLL), ...]`` for every C tried.
        metadata: a loaded file's header.

    W and b keep their dtype (float64 from :func:`fit_logistic_judge`) and device;
    :meth:`to` moves them. ``log_class_posterior(x [N, ...]) -> [N, C]``: rows of x are
    flattened to ``[N, D]``, moved to W's device and dtype; the result is in the wider of x's
    and W's dtype (float64 for a fitted judge), on x's device.

    Example:
        >>> judge = LogisticJudge(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
        ...                       torch.zeros(2, dtype=torch.float64), temperature=2.0)
        >>> judge.log_class_posterior(torch.tensor([[2.0, 0.0]])).exp()
        tensor([[0.7311, 0.2689]], dtype=torch.float64)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, temperature, *,
                 inverse_regularisation: float | None = None, cv_log_loss: float | None = None,
                 grid: Sequence[Sequence[float]] | None = None,
                 metadata: dict[str, Any] | None = None):
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or \
                weight.ndim != 2 or weight.shape[0] < 2 or weight.shape[1] < 1:
            raise ValueError(f"weight: expected a floating-point tensor [C, D] with C >= 2, got "
                             f"{_describe_value(weight)}")
        if not isinstance(bias, torch.Tensor) or not bias.is_floating_point() or \
                tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias: expected a floating-point tensor [{weight.shape[0]}], got "
                             f"{_describe_value(bias)}")
        if not (all_finite(weight) and all_finite(bias)):
            raise ValueError("weight, bias: expected finite values")
        if isinstance(temperature, torch.Tensor):
            if temperature.numel() != 1 or temperature.ndim > 1:
                raise ValueError(f"temperature: expected a 0-d or [1] tensor, got shape "
                                 f"{tuple(temperature.shape)}")
            temperature = temperature.item()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        self.weight = weight.detach()  # [C, D]
        self.bias = bias.detach().to(device=weight.device, dtype=weight.dtype)  # [C]
        self.temperature = float(temperature)
        self.inverse_regularisation = (None if inverse_regularisation is None
                                       else float(inverse_regularisation))
        self.cv_log_loss = None if cv_log_loss is None else float(cv_log_loss)
        self.grid = [tuple(float(v) for v in entry) for entry in (grid or [])]
        self.metadata = dict(metadata or {})

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    def __repr__(self) -> str:
        return (f"LogisticJudge(classes={self.num_classes}, dim={self.dim}, "
                f"temperature={self.temperature:.4g})")

    def describe(self) -> str:
        """One line: what the judge is and its fitted constants."""
        text = f"logistic regression judge ({self.num_classes} classes, {self.dim} inputs"
        if self.inverse_regularisation is not None:
            text += f", C = {self.inverse_regularisation:g}"
        text += f", temperature T = {self.temperature:.4g}"
        if self.cv_log_loss is not None:
            text += f", out-of-fold NLL {self.cv_log_loss:.4f}"
        return text + ")"

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.to("cpu").contiguous(),
                "bias": self.bias.to("cpu").contiguous(),
                "temperature": torch.tensor(self.temperature, dtype=torch.float64)}

    def fingerprint(self) -> str:
        """SHA-256 (hex) of W, b and T: names, dtypes, shapes and bytes, names sorted.

        Independent of the device; equal to the ``sha256`` in a saved file's header.
        """
        return _tensor_digest(self._tensors())

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> LogisticJudge:
        """A copy with W and b on ``device`` in ``dtype`` (None: unchanged)."""
        weight = self.weight.to(device=device or self.device, dtype=dtype or self.dtype)
        return LogisticJudge(weight, self.bias.to(device=weight.device, dtype=weight.dtype),
                             self.temperature, inverse_regularisation=self.inverse_regularisation,
                             cv_log_loss=self.cv_log_loss, grid=self.grid,
                             metadata=self.metadata)

    def logits(self, x) -> torch.Tensor:
        """z(y) / T = (W y + b) / T for flattened rows ``[N, D]`` -> ``[N, C]`` in W's dtype.

        No finiteness handling (see :meth:`log_class_posterior`).
        """
        flat = self._flatten(_as_samples(x))  # [N, D]
        with torch.no_grad():
            rows = flat.to(device=self.device, dtype=self.dtype)  # [N, D]
            return torch.addmm(self.bias, rows, self.weight.T) / self.temperature  # [N, C]

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        flat = _rows(x)  # [N, D]
        if flat.shape[1] != self.dim:
            raise ValueError(f"x: expected [N, ...] with {self.dim} values per row, got shape "
                             f"{tuple(x.shape)}")
        return flat

    def log_class_posterior(self, x, alpha: Any = 1.0, sigma: Any = 0.0) -> torch.Tensor:
        """log p(c | y) = log_softmax((W y + b) / T) for every class, ``[N, C]``.

        Args:
            x: clean samples ``[N, ...]`` with D values per row (a tensor or numpy array).
            alpha, sigma: the level; must be the clean level (sigma = 0).

        Returns:
            ``[N, C]`` in the wider of x's and W's dtype (at least float32), on x's device;
            NaN rows where x has a non-finite value.
        """
        x = _as_samples(x)
        n = x.shape[0]
        _check_clean(alpha, sigma, n)
        flat = self._flatten(x)  # [N, D]
        dtype = _output_dtype(x.dtype, self.dtype)
        finite = _finite_rows(flat)  # None or [N]
        rows = flat if finite is None else flat[finite]  # [n, D]
        with torch.no_grad():
            rows = rows.to(device=self.device, dtype=self.dtype)
            logits = torch.addmm(self.bias, rows, self.weight.T) / self.temperature  # [n, C]
            log_posterior = torch.log_softmax(logits.to(dtype), dim=1)  # [n, C]
        _check_output(log_posterior, "LogisticJudge")
        log_posterior = log_posterior.to(x.device)
        if finite is None:
            return log_posterior
        out = torch.full((n, self.num_classes), float("nan"), dtype=dtype,
                         device=x.device)  # [N, C]
        out[finite.to(x.device)] = log_posterior
        return out

    def class_posterior(self, x, alpha: Any = 1.0, sigma: Any = 0.0) -> torch.Tensor:
        """p(c | y), ``[N, C]``."""
        return self.log_class_posterior(x, alpha, sigma).exp()

    # ------------------------------------------------------------------ files

    def header(self) -> dict[str, Any]:
        """The JSON header :meth:`save` writes (without the library versions)."""
        return {"format": JUDGE_FORMAT, "format_version": JUDGE_FORMAT_VERSION,
                "kind": "logistic", "classes": self.num_classes, "dim": self.dim,
                "C": self.inverse_regularisation, "temperature": self.temperature,
                "cv_log_loss": self.cv_log_loss, "grid": [list(g) for g in self.grid],
                "dtype": str(self.dtype).removeprefix("torch."), "sha256": self.fingerprint()}

    def save(self, path) -> Path:
        """Write the judge to ``path``: a safetensors file with a JSON header.

        Tensors ``weight [C, D]``, ``bias [C]``, ``temperature`` (0-d float64); the header
        (metadata entry ``guidelab``) holds format, kind, classes, dim, C, temperature,
        cv_log_loss, grid, dtype, the SHA-256 digest of the tensors and the library versions.
        Written to a temporary file in the same folder, then renamed.
        """
        from safetensors.torch import save as save_safetensors

        from .. import __version__

        path = Path(path)
        header = self.header()
        header.update(guidelab_version=__version__, torch_version=torch.__version__)
        text = json.dumps(header, sort_keys=True, allow_nan=False)
        blob = save_safetensors(self._tensors(), metadata={METADATA_KEY: text})
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         delete=False) as handle:
            handle.write(blob)
            temporary = handle.name
        os.replace(temporary, path)
        return path

    @classmethod
    def load(cls, path, *, device: torch.device | str = "cpu") -> LogisticJudge:
        """Read a judge written by :meth:`save`; bit for bit the saved W, b and T.

        ValueError naming the path for a truncated file, trailing bytes, a header that is not
        JSON, a foreign safetensors file, another guidelab format or kind, missing or
        mismatched tensors, or tensors that do not match the header's SHA-256 digest;
        FileNotFoundError if there is no file.
        """
        from safetensors.torch import load as load_safetensors

        path = Path(path)
        blob, header = _read_judge_file(path)
        if header.get("kind") != "logistic":
            raise ValueError(f"path: {path} holds a judge of kind {header.get('kind')!r}, "
                             f"expected 'logistic'")
        try:
            tensors = load_safetensors(blob)
        except Exception as error:  # noqa: BLE001 - safetensors raises its own error type
            raise ValueError(f"path: {path} is not a readable safetensors file "
                             f"({' '.join(str(error).split())})") from None
        if sorted(tensors) != sorted(_LOGISTIC_TENSORS):
            raise ValueError(f"path: {path} holds tensors {sorted(tensors)}, expected "
                             f"{sorted(_LOGISTIC_TENSORS)}")
        temperature = tensors["temperature"]
        if temperature.ndim == 1:  # a [1] tensor is accepted and read as 0-d
            temperature = temperature.reshape(())
            tensors["temperature"] = temperature
        if temperature.dtype != torch.float64:
            tensors["temperature"] = temperature = temperature.to(torch.float64)
        if _tensor_digest(tensors) != header.get("sha256"):
            raise ValueError(f"path: {path} has tensors whose SHA-256 digest does not match its "
                             f"header (the file was edited or corrupted)")
        weight, bias = tensors["weight"], tensors["bias"]
        classes, dim = header.get("classes"), header.get("dim")
        if weight.ndim != 2 or tuple(weight.shape) != (classes, dim) or \
                tuple(bias.shape) != (classes,):
            raise ValueError(f"path: {path} has weight {list(weight.shape)} and bias "
                             f"{list(bias.shape)}, its header says {classes} classes and "
                             f"{dim} inputs")
        try:
            return cls(weight.to(device), bias.to(device), temperature,
                       inverse_regularisation=header.get("C"),
                       cv_log_loss=header.get("cv_log_loss"), grid=header.get("grid"),
                       metadata=header)
        except ValueError as error:
            raise ValueError(f"path: {path} holds an invalid judge ({error})") from None


def _describe_value(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"dtype {value.dtype}, shape {tuple(value.shape)}"
    return type(value).__name__


def _read_judge_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's bytes and its validated judge header (structure checks only)."""
    blob, header = read_guidelab_file(path, what="judge",
                                      reader="LogisticJudge.load reads files written by "
                                             "LogisticJudge.save")
    if header.get("format") != JUDGE_FORMAT:
        raise ValueError(f"path: {path} has format {header.get('format')!r}, expected "
                         f"{JUDGE_FORMAT!r} (a model checkpoint is read by "
                         f"guidelab.models.load)")
    if header.get("format_version") != JUDGE_FORMAT_VERSION:
        raise ValueError(f"path: {path} has judge format version "
                         f"{header.get('format_version')!r}; this guidelab reads version "
                         f"{JUDGE_FORMAT_VERSION}")
    return blob, header


def _fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(T, NLL): T minimising the mean -log softmax(z / T)_label over log T in [-4, 4]."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    rows = np.arange(labels.shape[0])

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=1)[rows, labels].mean())

    best = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-4})
    return math.exp(best.x), float(best.fun)


def _as_logit_matrix(decision: np.ndarray) -> np.ndarray:
    """scikit-learn's decision_function as ``[n, C]`` logits (binary ``[n]`` -> [0, z])."""
    if decision.ndim == 1:
        return np.stack([np.zeros_like(decision), decision], axis=1)  # [n, 2]
    return decision  # [n, C]


def fit_logistic_judge(x, labels, *, inverse_regularisation: Sequence[float] = (0.1, 1, 10, 100),
                       folds: int = 5, seed: int = 0) -> LogisticJudge:
    r"""Fit a :class:`LogisticJudge` with temperature scaling on out-of-fold logits.

    For each C in ``inverse_regularisation``: a stratified ``folds``-fold split (shuffled with
    ``seed``) gives out-of-fold logits z_oof ``[n, C]`` from ``LogisticRegression(C,
    max_iter=5000).decision_function``; T(C) minimises the out-of-fold NLL
    -(1/n) sum_i log_softmax(z_oof,i / T)_{c_i}. The (C, T) with the smallest NLL is kept, the
    regression is refitted on all rows and its ``coef_`` / ``intercept_`` become W, b (float64).

    Args:
        x: training samples ``[n, ...]`` (tensor or array), flattened to ``[n, D]``; finite.
        labels: ``[n]`` integer classes; every class 0..C-1 must occur at least ``folds`` times.
        inverse_regularisation: the grid of C (inverse L2 strengths), positive.
        folds: K >= 2.
        seed: the split's seed.

    Returns:
        The judge, with ``inverse_regularisation``, ``cv_log_loss`` (the out-of-fold NLL at the
        chosen pair) and ``grid`` ([(C, T, NLL), ...]) set. Needs scikit-learn (the
        ``digits`` extra) to fit; the judge itself is torch only.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds: expected an integer >= 2, got {folds!r}")
    try:
        grid_values = [float(c) for c in inverse_regularisation]
    except (TypeError, ValueError):
        grid_values = []
    if not grid_values or any(not (math.isfinite(c) and c > 0) for c in grid_values):
        raise ValueError(f"inverse_regularisation: expected a non-empty sequence of positive "
                         f"numbers, got {inverse_regularisation!r}")
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        data = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"x: expected a numeric array [n, ...], got {type(x).__name__}") \
            from None
    if data.ndim < 1 or data.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty array [n, ...], got shape {data.shape}")
    data = data.reshape(data.shape[0], -1)  # [n, D]
    if not np.isfinite(data).all():
        raise ValueError("x: expected finite values")
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    classes = np.asarray(labels)
    if classes.dtype.kind not in "iu" or classes.shape != (data.shape[0],):
        raise ValueError(f"labels: expected {data.shape[0]} integer labels [n], got dtype "
                         f"{classes.dtype}, shape {classes.shape}")
    num_classes = int(classes.max()) + 1 if classes.size else 0
    counts = np.bincount(classes, minlength=num_classes) if classes.min() >= 0 else None
    if counts is None or num_classes < 2:
        raise ValueError("labels: expected classes 0..C-1 with C >= 2")
    if counts.min() < folds:
        rare = int(np.argmin(counts))
        raise ValueError(f"labels: class {rare} has {int(counts[rare])} rows; every class "
                         f"0..{num_classes - 1} needs at least folds = {folds}")
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
    except Exception as error:  # noqa: BLE001 - a broken install fails differently
        raise _missing_extra("fit_logistic_judge", "sklearn", "digits", error) from None

    splitter = StratifiedKFold(int(folds), shuffle=True, random_state=seed)
    grid = []
    for c_value in grid_values:
        regression = LogisticRegression(C=c_value, max_iter=5000)
        decision = cross_val_predict(regression, data, classes, cv=splitter,
                                     method="decision_function")  # [n, C] or [n]
        temperature, nll = _fit_temperature(_as_logit_matrix(decision), classes)
        grid.append((c_value, temperature, nll))
    c_value, temperature, nll = min(grid, key=lambda entry: entry[2])
    regression = LogisticRegression(C=c_value, max_iter=5000).fit(data, classes)
    coef = np.asarray(regression.coef_, dtype=np.float64)  # [C, D] or [1, D]
    intercept = np.asarray(regression.intercept_, dtype=np.float64)  # [C] or [1]
    if num_classes == 2:
        coef = np.concatenate([np.zeros_like(coef), coef])  # [2, D]
        intercept = np.concatenate([np.zeros_like(intercept), intercept])  # [2]
    return LogisticJudge(torch.from_numpy(coef.copy()), torch.from_numpy(intercept.copy()),
                         temperature, inverse_regularisation=c_value, cv_log_loss=nll,
                         grid=grid)


# ----------------------------------------------------------------------------- NetworkJudge


def _unwrap_logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]  # e.g. Inception-v3's (logits, aux_logits)
    raise ValueError(f"network: expected logits (a tensor), got {type(output).__name__}")


def _size_pair(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool):
        resize = (resize, resize)
    if not isinstance(resize, (tuple, list)) or len(resize) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
            for v in resize):
        raise ValueError(f"resize: expected a positive int or (height, width), got {resize!r}")
    return int(resize[0]), int(resize[1])


def _per_channel(value, name: str, positive: bool = False) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in (value if isinstance(value, (tuple, list))
                                          else [value]))
    except (TypeError, ValueError):
        values = ()
    if not values or any(not math.isfinite(v) or (positive and v <= 0) for v in values):
        kind = "positive numbers" if positive else "finite numbers"
        raise ValueError(f"{name}: expected a number or a sequence of {kind} (one per "
                         f"channel), got {value!r}")
    return values


class NetworkJudge:
    r"""Any ``torch.nn.Module`` from (preprocessed) samples to logits ``[N, C]`` as a judge.

    ``log_class_posterior(x) = log_softmax(network(preprocess(x)))``, evaluated in eval mode,
    under ``torch.no_grad``, ``batch_size`` rows at a time, rows with a non-finite value left out
    (NaN rows). :meth:`preprocess` applies, in order, each step that is set:

    1. ``input_range = (lo, hi)``: v -> (v - lo) / (hi - lo), then clamped to [0, 1] when
       ``clamp`` (default (-1, 1): guidelab's pixel range onto [0, 1]; None: no mapping);
    2. ``resize = s`` or ``(h, w)``: bilinear ``interpolate`` to (h, w) (``align_corners=False``,
       ``antialias=False``) of images ``[N, K, H, W]``;
    3. ``channels = K'``: a 1-channel image repeated K' times (K' must then match, or be 1);
    4. ``mean``, ``std`` (one number, or one per channel): v -> (v - mean_k) / std_k.

    Preprocessing runs in the network's dtype (at least float32) on its device; the network is
    called in its own dtype.

    Args:
        network: the module; put in eval mode (and moved when ``device`` / ``dtype`` are given).
        num_classes: C; default ``network.num_classes``, else the ``out_features`` of the last
            ``nn.Linear`` in ``network.modules()``; every call checks the logits have C columns.
        resize, input_range, clamp, channels, mean, std: the preprocessing above.
        batch_size: rows per network call (None: all at once).
        device, dtype: move the network there (None: keep its placement).
        name: the name :meth:`describe` uses (default: the network's class name).
    """

    def __init__(self, network: nn.Module, *, num_classes: int | None = None,
                 resize: int | tuple[int, int] | None = None,
                 mean: float | Sequence[float] | None = None,
                 std: float | Sequence[float] | None = None,
                 input_range: tuple[float, float] | None = (-1.0, 1.0), clamp: bool = True,
                 channels: int | None = None, batch_size: int | None = 256,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 name: str | None = None):
        if not isinstance(network, nn.Module):
            raise ValueError(f"network: expected a torch.nn.Module, got "
                             f"{type(network).__name__}")
        if input_range is not None:
            try:
                low, high = (float(v) for v in input_range)
            except (TypeError, ValueError):
                low = high = float("nan")
            if not (math.isfinite(low) and math.isfinite(high) and high > low):
                raise ValueError(f"input_range: expected (low, high) with low < high, got "
                                 f"{input_range!r}")
            input_range = (low, high)
        if dtype is not None and (not isinstance(dtype, torch.dtype) or
                                  not dtype.is_floating_point):
            raise ValueError(f"dtype: expected a floating-point torch.dtype, got {dtype!r}")
        self.resize = _size_pair(resize)
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std", positive=True)
        self.input_range = input_range
        self.clamp = bool(clamp)
        self.channels = None if channels is None else _check_positive_int(channels, "channels")
        self.batch_size = (None if batch_size is None
                           else _check_positive_int(batch_size, "batch_size"))
        if device is not None or dtype is not None:
            network.to(device=device, dtype=dtype)
        self.network = network.eval()
        if num_classes is None:
            num_classes = getattr(network, "num_classes", None)
        if num_classes is None:
            linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
            num_classes = linears[-1].out_features if linears else None
        if num_classes is None:
            raise ValueError(f"num_classes: cannot tell the number of classes of "
                             f"{type(network).__name__} (no num_classes attribute, no "
                             f"nn.Linear); pass num_classes")
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        self.name = name or type(network).__name__

    @property
    def device(self) -> torch.device:
        parameter = next(self.network.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        parameter = next(self.network.parameters(), None)
        return parameter.dtype if parameter is not None else torch.float32

    def __repr__(self) -> str:
        return f"NetworkJudge({self.name}, num_classes={self.num_classes})"

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing settings, JSON-able."""
        return {"input_range": None if self.input_range is None else list(self.input_range),
                "clamp": self.clamp, "resize": None if self.resize is None else list(self.resize),
                "channels": self.channels,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std)}

    def describe(self) -> str:
        """One line: the network and its preprocessing."""
        steps = []
        if self.input_range is not None:
            steps.append(f"range ({self.input_range[0]:g}, {self.input_range[1]:g}) -> [0, 1]"
                         + (" clamped" if self.clamp else ""))
        if self.resize is not None:
            steps.append(f"resize {self.resize[0]}x{self.resize[1]} bilinear")
        if self.channels is not None:
            steps.append(f"{self.channels} channels")
        if self.mean is not None or self.std is not None:
            steps.append(f"normalise mean {list(self.mean or [0.0])} std "
                         f"{list(self.std or [1.0])}")
        return (f"network judge {self.name} ({self.num_classes} classes; "
                f"{', '.join(steps) or 'no preprocessing'})")

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the network's class, its state dict (names, dtypes, shapes, bytes)
        and the preprocessing; independent of the device and of ``batch_size``.

        Hashes every parameter and buffer: about a second for a 100 MB network.
        """
        digest = hashlib.sha256()
        kind = type(self.network)
        digest.update(json.dumps({"kind": "network",
                                  "network": f"{kind.__module__}.{kind.__qualname__}",
                                  "num_classes": self.num_classes,
                                  "preprocessing": self.preprocessing()},
                                 sort_keys=True).encode())
        _update_with_tensors(digest, self.network.state_dict())
        return digest.hexdigest()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """P(x): the network's input for samples ``[N, ...]`` (class docstring for the steps).

        Returns a tensor on the network's device in the network's dtype (at least float32).
        """
        x = _as_samples(x)
        work = torch.promote_types(self.dtype, torch.float32)
        y = x.to(device=self.device, dtype=work)  # [N, ...]
        if self.input_range is not None:
            low, high = self.input_range
            y = (y - low) / (high - low)
            if self.clamp:
                y = y.clamp(0.0, 1.0)
        if self.resize is not None:
            if y.ndim != 4:
                raise ValueError(f"x: resize needs images [N, K, H, W], got shape "
                                 f"{tuple(x.shape)}")
            if tuple(y.shape[2:]) != self.resize:
                y = torch.nn.functional.interpolate(y, size=self.resize, mode="bilinear",
                                                    align_corners=False, antialias=False)
        if self.channels is not None:
            if y.ndim < 2 or y.shape[1] not in (1, self.channels):
                raise ValueError(f"x: expected images [N, 1 or {self.channels}, ...], got shape "
                                 f"{tuple(x.shape)}")
            if y.shape[1] != self.channels:
                y = y.expand(-1, self.channels, *y.shape[2:])  # [N, K', ...]
        if self.mean is not None or self.std is not None:
            for values, name in ((self.mean, "mean"), (self.std, "std")):
                if values is not None and len(values) != 1 and (
                        y.ndim < 2 or y.shape[1] != len(values)):
                    raise ValueError(f"x: {name} has {len(values)} channels, the network input "
                                     f"has shape {tuple(y.shape)}")
            shape = (1, -1) + (1,) * (y.ndim - 2)
            if self.mean is not None:
                y = y - torch.tensor(self.mean, dtype=work, device=y.device).reshape(shape)
            if self.std is not None:
                y = y / torch.tensor(self.std, dtype=work, device=y.device).reshape(shape)
        return y.to(self.dtype)

    def log_class_posterior(self, x, alpha: Any = 1.0, sigma: Any = 0.0) -> torch.Tensor:
        """log p(c | x) = log_softmax(network(preprocess(x))), ``[N, C]``.

        Args:
            x: clean samples ``[N, ...]`` in ``input_range`` units (a tensor or numpy array).
            alpha, sigma: the level; must be the clean level (sigma = 0).

        Returns:
            ``[N, C]`` in the wider of x's and the network's dtype (at least float32), on x's
            device; NaN rows where x has a non-finite value.
        """
        x = _as_samples(x)
        n = x.shape[0]
        _check_clean(alpha, sigma, n)
        dtype = _output_dtype(x.dtype, self.dtype)
        finite = _finite_rows(_rows(x))  # None or [N]
        inputs = x if finite is None else x[finite]  # [n, ...]
        rows = inputs.shape[0]
        step = rows if self.batch_size is None else self.batch_size
        parts = []
        self.network.eval()
        with torch.no_grad():
            for start in range(0, rows, max(step, 1)):
                logits = _unwrap_logits(self.network(self.preprocess(
                    inputs[start:start + step])))  # [b, C]
                if logits.ndim != 2 or logits.shape != (min(step, rows - start),
                                                        self.num_classes):
                    raise ValueError(f"network: expected logits of shape "
                                     f"[{min(step, rows - start)}, {self.num_classes}], got "
                                     f"{tuple(logits.shape)}")
                parts.append(torch.log_softmax(logits.to(dtype), dim=1).to(x.device))
        log_posterior = (torch.cat(parts) if parts else
                         torch.empty((0, self.num_classes), dtype=dtype, device=x.device))
        _check_output(log_posterior, f"NetworkJudge {self.name}")
        if finite is None:
            return log_posterior
        out = torch.full((n, self.num_classes), float("nan"), dtype=dtype,
                         device=x.device)  # [N, C]
        out[finite] = log_posterior
        return out

    def class_posterior(self, x, alpha: Any = 1.0, sigma: Any = 0.0) -> torch.Tensor:
        """p(c | x), ``[N, C]``."""
        return self.log_class_posterior(x, alpha, sigma).exp()


def _import_torchvision():
    try:
        import torchvision
        import torchvision.models  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a mismatched build raises RuntimeError
        raise _missing_extra("from_torchvision", "torchvision", "torchvision", error) from None
    return torchvision


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or ``.pt`` / ``.pth`` file (no pickle code)."""
    if not path.is_file():
        raise FileNotFoundError(f"weights_path: no weights file at {path}")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pt", ".pth", ".bin"):
        raise ValueError(f"weights_path: expected a .safetensors, .pt or .pth file, got {path}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - readers raise many types
        text = " ".join(str(error).split())[:300]
        raise ValueError(f"weights_path: {path} could not be read as a state dict "
                         f"({type(error).__name__}: {text})") from None
    if isinstance(state, Mapping):
        for key in ("state_dict", "model"):  # common wrappers of training checkpoints
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise ValueError(f"weights_path: {path} does not hold a state dict (a mapping of names "
                         f"to tensors)")
    return dict(state)


def from_torchvision(architecture: str, weights_path, *, num_classes: int | None = None,
                     model_options: Mapping[str, Any] | None = None,
                     resize: int | tuple[int, int] | str | None = "imagenet",
                     mean: float | Sequence[float] | str | None = "imagenet",
                     std: float | Sequence[float] | str | None = "imagenet",
                     input_range: tuple[float, float] | None = (-1.0, 1.0), clamp: bool = True,
                     channels: int | None = 3, batch_size: int | None = 256,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> NetworkJudge:
    r"""A torchvision classifier with weights from a local file, as a :class:`NetworkJudge`.

    Builds ``torchvision.models.get_model(architecture, weights=None, num_classes=num_classes,
    **options)`` and loads the state dict in ``weights_path`` strictly. Nothing is downloaded.
    For ``inception_v3`` the options default to ``aux_logits=False, init_weights=False,
    transform_input=True`` (torchvision sets ``transform_input=True`` whenever it loads its own
    ImageNet weights, which expect it; the file's ``AuxLogits.*`` tensors are dropped).

    Args:
        architecture: a torchvision model name (``"inception_v3"``, ``"resnet50"``, ...).
        weights_path: a local ``.safetensors`` (safetensors) or ``.pt`` / ``.pth`` file
            (``torch.load(weights_only=True)``; a ``{"state_dict": ...}`` wrapper is unwrapped).
        num_classes: C (None: the builder's default, 1000).
        model_options: more keyword arguments for the builder (override the defaults above).
        resize: ``"imagenet"`` (default): 299 for inception_v3, else 224; None: no resize.
        mean, std: ``"imagenet"`` (default): ImageNet's (0.485, 0.456, 0.406) and
            (0.229, 0.224, 0.225); None: none.
        input_range, clamp, channels, batch_size, device, dtype: as :class:`NetworkJudge`
            (default: pixels in [-1, 1], clamped, 1 -> 3 channels).

    Returns:
        A :class:`NetworkJudge`. ValueError if torchvision is missing or fails to import (it
        names ``bash scripts/setup.sh torchvision``), the architecture is unknown, or the file
        does not fit it; FileNotFoundError if there is no file.
    """
    if not isinstance(architecture, str) or not architecture:
        raise ValueError(f"architecture: expected a torchvision model name, got "
                         f"{architecture!r}")
    if model_options is not None and not isinstance(model_options, Mapping):
        raise ValueError(f"model_options: expected a mapping, got {type(model_options).__name__}")
    if num_classes is not None:
        num_classes = _check_positive_int(num_classes, "num_classes")
    for value, name in ((resize, "resize"), (mean, "mean"), (std, "std")):
        if isinstance(value, str) and value != "imagenet":
            raise ValueError(f"{name}: expected 'imagenet', None or numbers, got {value!r}")
    path = Path(weights_path)
    state = _read_state_dict(path)
    torchvision = _import_torchvision()

    options: dict[str, Any] = {}
    if architecture == "inception_v3":
        options.update(aux_logits=False, init_weights=False, transform_input=True)
    options.update(model_options or {})
    if num_classes is not None:
        options["num_classes"] = num_classes
    try:
        network = torchvision.models.get_model(architecture, weights=None, **options)
    except ValueError as error:  # torchvision: "Unknown model ..."
        raise ValueError(f"architecture: torchvision cannot build {architecture!r} ({error})") \
            from None
    except TypeError as error:
        raise ValueError(f"model_options: torchvision's {architecture} rejects {options} "
                         f"({error})") from None
    expected = network.state_dict()
    for prefix in ("AuxLogits.", "aux1.", "aux2."):  # auxiliary heads the model was built without
        if not any(k.startswith(prefix) for k in expected):
            state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        text = " ".join(str(error).split())[:500]
        raise ValueError(f"weights_path: {path} does not fit torchvision {architecture} "
                         f"({options}): {text}") from None
    if resize == "imagenet":
        resize = 299 if architecture == "inception_v3" else 224
    mean = IMAGENET_MEAN if mean == "imagenet" else mean
    std = IMAGENET_STD if std == "imagenet" else std
    return NetworkJudge(network, num_classes=num_classes, resize=resize, mean=mean, std=std,
                        input_range=input_range, clamp=clamp, channels=channels,
                        batch_size=batch_size, device=device, dtype=dtype,
                        name=f"torchvision {architecture} ({path.name})")


# ----------------------------------------------------------------------------- factories


def load_python_object(reference: str) -> Any:
    """The object named by ``"package.module:attribute"`` (the attribute may be dotted).

    The module is imported. ValueError starting ``reference:`` and naming the reference for
    bad syntax, a module that does not exist, a module whose import raised (an ImportError of
    a dependency included, reported apart from a missing module), and a missing attribute.
    """
    syntax = ValueError(f"reference: expected 'package.module:attribute', got {reference!r}")
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise syntax
    module_name, _, attribute = reference.partition(":")
    parts = attribute.split(".")
    if not all(p.isidentifier() for p in module_name.split(".")) or \
            not all(p.isidentifier() for p in parts):
        raise syntax
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ValueError(f"reference: no module named {missing!r} (in {reference!r}); is it "
                             f"installed or on sys.path?") from None
        raise ValueError(f"reference: importing module {module_name!r} (in {reference!r}) "
                         f"failed: ModuleNotFoundError: {error}") from error
    except Exception as error:  # noqa: BLE001 - any error while executing the module
        raise ValueError(f"reference: importing module {module_name!r} (in {reference!r}) "
                         f"failed: {type(error).__name__}: {error}") from error
    value = module
    for index, part in enumerate(parts):
        try:
            value = getattr(value, part)
        except AttributeError:
            owner = module_name if index == 0 else f"{module_name}:{'.'.join(parts[:index])}"
            raise ValueError(f"reference: {owner} has no attribute {part!r} (in "
                             f"{reference!r})") from None
    return value


class _AdaptedJudge:
    """A classifier from a factory, given the judge contract (NaN rows, sigma = 0, no_grad,
    describe, fingerprint)."""

    def __init__(self, classifier, source: Any, *, reference: str, options: Mapping[str, Any],
                 num_classes: int | None):
        self.classifier = classifier
        self.source = source
        self.reference = reference
        self.options = dict(options)
        if num_classes is None:
            num_classes = getattr(source, "num_classes", None)
        self.num_classes = (None if num_classes is None
                            else _check_positive_int(num_classes, "num_classes"))

    def __repr__(self) -> str:
        return f"judge from {self.reference}"

    def describe(self) -> str:
        inner = getattr(self.source, "describe", None)
        text = inner() if callable(inner) else type(self.source).__name__
        return f"{text} (from {self.reference} with {json.dumps(self.options, default=repr)})"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({"kind": "factory", "reference": self.reference,
                                  "options": self.options}, sort_keys=True,
                                 default=repr).encode())
        inner = getattr(self.source, "fingerprint", None)
        if callable(inner):
            digest.update(str(inner()).encode())
        for candidate in (self.source, getattr(self.source, "network", None),
                          getattr(self.source, "fn", None)):
            if isinstance(candidate, nn.Module):
                _update_with_tensors(digest, candidate.state_dict())
                break
        return digest.hexdigest()

    def log_class_posterior(self, x, alpha: Any = 1.0, sigma: Any = 0.0) -> torch.Tensor:
        x = _as_samples(x)
        n = x.shape[0]
        _check_clean(alpha, sigma, n)
        finite = _finite_rows(_rows(x))  # None or [N]
        inputs = x if finite is None else x[finite]  # [n, ...]
        name = f"judge from {self.reference}"
        with torch.no_grad():
            try:
                log_posterior = self.classifier.log_class_posterior(inputs, 1.0, 0.0)  # [n, C]
            except FloatingPointError as error:
                raise FloatingPointError(f"{name}: {error}") from None
        if not isinstance(log_posterior, torch.Tensor) or log_posterior.ndim != 2 or \
                log_posterior.shape[0] != inputs.shape[0] or (
                    self.num_classes is not None and log_posterior.shape[1] != self.num_classes):
            got = (tuple(log_posterior.shape) if isinstance(log_posterior, torch.Tensor)
                   else type(log_posterior).__name__)
            raise ValueError(f"reference: {self.reference} gave log-probabilities {got}, "
                             f"expected [{inputs.shape[0]}, {self.num_classes or 'C'}]")
        if self.num_classes is None:
            self.num_classes = int(log_posterior.shape[1])
        log_posterior = log_posterior.to(_output_dtype(x.dtype, log_posterior.dtype))
        _check_output(log_posterior, name)
        log_posterior = log_posterior.to(x.device)
        if finite is None:
            return log_posterior
        out = torch.full((n, log_posterior.shape[1]), float("nan"),
                         dtype=log_posterior.dtype, device=x.device)  # [N, C]
        out[finite] = log_posterior
        return out

    def class_posterior(self, x, alpha: Any = 1.0, sigma: Any = 0.0) -> torch.Tensor:
        return self.log_class_posterior(x, alpha, sigma).exp()


def _is_judge(value) -> bool:
    return all(callable(getattr(value, name, None))
               for name in ("log_class_posterior", "describe", "fingerprint")) and \
        getattr(value, "num_classes", None) is not None


def judge_from_factory(reference: str | Callable, options: Mapping[str, Any] | None = None, *,
                       num_classes: int | None = None):
    """Call the factory named by ``reference`` with ``options`` and return a judge.

    Args:
        reference: ``"package.module:attribute"`` (:func:`load_python_object`) naming a callable,
            or the callable itself.
        options: keyword arguments for it (None: none).
        num_classes: C, to check the classifier's output (default: its ``num_classes``).

    Returns:
        The factory's result if it is already a judge (``log_class_posterior``, ``num_classes``,
        ``describe``, ``fingerprint``, e.g. a :class:`LogisticJudge`); otherwise an adapter with
        the judge contract around it: an object with ``log_class_posterior`` is called at the
        clean level; a callable returning logits ``[N, C]`` (a function or an ``nn.Module``, put
        in eval mode) is wrapped with :func:`~guidelab.models.classifier_from_callable`. Its
        ``fingerprint`` hashes the reference, the options (JSON) and, for a module, its state
        dict. ValueError naming the reference when it cannot be resolved, is not callable,
        rejects the options, raises, or returns something else.
    """
    if callable(reference):  # a factory already resolved (a registered name)
        factory = reference
        reference = getattr(factory, "__qualname__", type(factory).__name__)
    else:
        factory = load_python_object(reference)
    if not callable(factory):
        raise ValueError(f"reference: {reference!r} is a {type(factory).__name__}, not a "
                         f"callable factory")
    if options is None:
        options = {}
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ValueError(f"options: expected a mapping of keyword arguments, got {options!r}")
    if num_classes is not None:
        num_classes = _check_positive_int(num_classes, "num_classes")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none
        signature = None
    if signature is not None:
        try:
            signature.bind(**options)
        except TypeError as error:
            raise ValueError(f"options: {reference} does not accept {sorted(options)} "
                             f"({error})") from None
    try:
        result = factory(**options)
    except Exception as error:  # noqa: BLE001 - the factory's own failure, named
        raise ValueError(f"reference: the factory {reference} raised "
                         f"{type(error).__name__}: {error}") from error
    if _is_judge(result):
        if num_classes is not None and result.num_classes != num_classes:
            raise ValueError(f"num_classes: the judge from {reference} has "
                             f"{result.num_classes} classes, expected {num_classes}")
        return result
    if callable(getattr(result, "log_class_posterior", None)):
        classifier = result
    elif callable(result):
        from .external import classifier_from_callable

        if isinstance(result, nn.Module):
            result.eval()
        classifier = classifier_from_callable(result, num_classes=num_classes)
    else:
        raise ValueError(f"reference: the factory {reference} returned a "
                         f"{type(result).__name__}, not a judge (log_class_posterior) or a "
                         f"callable returning logits")
    return _AdaptedJudge(classifier, result, reference=reference, options=options,
                         num_classes=num_classes)
