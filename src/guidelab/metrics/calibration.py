r"""Calibration of a judge p(c|y) on held-out labelled data.

Q = E[1/p(c|Y)] is read through a judge, a classifier giving p(c|y); if the judge is
miscalibrated, so is every Q. With N held-out pairs (y_i, c_i) and B equal-width bins on [0, 1],
bin k = (k/B, (k+1)/B] for k = 0..B-1, the first also holding 0 (the binning of
``sklearn.calibration.calibration_curve`` with ``strategy="uniform"``):

    top-label ECE  = sum_k (n_k / N) |acc_k - conf_k|,
                     conf_i = max_c p(c|y_i),  acc_i = 1{argmax_c p(c|y_i) = c_i},
                     conf_k, acc_k: their means over the n_k rows whose conf_i is in bin k;
    classwise ECE  = (1/C) sum_c sum_k (n_ck / N) |freq_ck - mean_ck|,

where, for class c, the N predictions p(c|y_i) are binned, n_ck of them fall in bin k, mean_ck
is their mean and freq_ck the fraction of them with c_i = c (Guo et al. 2017; Kull et al. 2019).
The classwise form scores every class probability, the small ones included, which is what
Q = E[1/p(c|Y)] depends on. Empty bins contribute nothing. The reliability tables are the
per-bin (mean prediction, observed frequency, count).

:func:`calibration_summary` adds the accuracy (1/N) sum_i 1{argmax_c p(c|y_i) = c_i} and the log
loss -(1/N) sum_i log p(c_i|y_i) (read from the log-probabilities, no clipping), as a strict
JSON-able dict (empty bins and an infinite log loss are null, never NaN or infinity).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "calibration_summary",
    "expected_calibration_error",
    "reliability_bins",
]

_NORMALISATION_TOLERANCE = 1e-4  # |logsumexp_c log p(c|y)| above this: not log-probabilities


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin k of B equal-width bins on [0, 1]: (k/B, (k+1)/B], the first also holding 0.

    ``values`` [M] -> [M] ints in 0..B-1 (values a rounding above 1 go to the last bin).
    """
    edges = np.linspace(0.0, 1.0, bins + 1)  # [B + 1]
    return np.clip(np.searchsorted(edges[1:-1], values, side="left"), 0, bins - 1)  # [M]


def _check_probabilities(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``[N, C]`` probabilities in [0, 1] and int ``[N]`` labels in 0..C-1."""
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().to("cpu", torch.float64).numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[0] < 1 or probabilities.shape[1] < 1:
        raise ValueError(f"probabilities: expected shape [N, C] with N, C >= 1, got "
                         f"{probabilities.shape}")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() \
            or (probabilities > 1 + 1e-9).any():
        raise ValueError("probabilities: expected finite values in [0, 1]")
    _check_labels(labels, probabilities.shape)
    return probabilities, labels


def _check_labels(labels: np.ndarray, shape: tuple[int, int]) -> None:
    n, num_classes = shape
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) \
            or (labels < 0).any() or (labels >= num_classes).any():
        raise ValueError(f"labels: expected [{n}] integer classes in 0..{num_classes - 1}, got "
                         f"{labels.dtype} of shape {labels.shape}")


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    return int(bins)


def _predictions(probabilities: np.ndarray, labels: np.ndarray, kind: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(predicted [M], outcome [M] in {0, 1}) for ``kind`` ``"top"`` (M = N) or
    ``"classwise"`` (M = N C, row-major: row i, class c at i C + c)."""
    if kind == "top":
        predicted = probabilities.max(axis=1)  # [N]
        outcome = (probabilities.argmax(axis=1) == labels).astype(np.float64)  # [N]
    elif kind == "classwise":
        predicted = probabilities.ravel()  # [N C]
        outcome = (np.arange(probabilities.shape[1])[None, :] == labels[:, None])  # [N, C]
        outcome = outcome.ravel().astype(np.float64)  # [N C]
    else:
        raise ValueError(f"kind: expected 'top' or 'classwise', got {kind!r}")
    return predicted, outcome


def reliability_bins(probabilities, labels, *, bins: int = 10, kind: str = "top"
                     ) -> dict[str, np.ndarray]:
    """Per-bin mean predicted probability, observed frequency and count (module docstring).

    Args:
        probabilities: ``[N, C]`` predicted class probabilities p(c|y_i) (numpy or torch).
        labels: ``[N]`` true classes c_i in 0..C-1.
        bins: B equal-width bins on [0, 1], bin k = (k/B, (k+1)/B], the first also holding 0.
        kind: ``"top"``: predictions are the confidences max_c p(c|y), outcomes whether the
            argmax is right; ``"classwise"``: every p(c|y) is a prediction of 1{label = c}
            (N C pairs, all classes together).

    Returns:
        ``{"confidence": [B], "frequency": [B], "count": [B]}`` as float64 arrays: the mean
        prediction, the fraction of outcomes 1, and the number of predictions per bin (NaN
        confidence and frequency in empty bins).
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    bins = _check_bins(bins)
    predicted, outcome = _predictions(probabilities, labels, kind)  # [M], [M]
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

    Args:
        probabilities: ``[N, C]`` predicted class probabilities (numpy or torch).
        labels: ``[N]`` true classes in 0..C-1.
        bins: B, the number of equal-width bins on [0, 1].
        kind: ``"top"`` or ``"classwise"``.

    Returns:
        The ECE, a float in [0, 1].
    """
    probabilities, labels = _check_probabilities(probabilities, labels)
    bins = _check_bins(bins)
    if kind == "top":
        predicted, outcome = _predictions(probabilities, labels, "top")  # [N], [N]
        index = _bin_index(predicted, bins)  # [N]
        gap = np.abs(np.bincount(index, outcome, minlength=bins)
                     - np.bincount(index, predicted, minlength=bins))  # [B]: n_k |acc - conf|
        return float(gap.sum()) / probabilities.shape[0]
    if kind != "classwise":
        raise ValueError(f"kind: expected 'top' or 'classwise', got {kind!r}")
    n, num_classes = probabilities.shape
    total = 0.0
    for c in range(num_classes):
        predicted = probabilities[:, c]  # [N]
        outcome = (labels == c).astype(np.float64)  # [N]
        index = _bin_index(predicted, bins)  # [N]
        gap = np.abs(np.bincount(index, outcome, minlength=bins)
                     - np.bincount(index, predicted, minlength=bins))  # [B]: n_ck |freq - mean|
        total += float(gap.sum()) / n
    return total / num_classes


def _null_nan(values: np.ndarray) -> list:
    """A float array as a list with None for NaN (strict JSON)."""
    return [None if math.isnan(value) else float(value) for value in values.tolist()]


def calibration_summary(log_probabilities, labels, *, bins: int = 10) -> dict:
    r"""Calibration of a judge on held-out data, as a strict JSON-able dict.

    Args:
        log_probabilities: ``[N, C]`` log p(c|y_i) (torch tensor or numpy array; rows must
            normalise: |logsumexp_c| <= 1e-4). Entries may be -inf (p = 0), not NaN or +inf.
        labels: ``[N]`` true classes in 0..C-1 (torch or numpy integers).
        bins: B equal-width bins on [0, 1] for the ECEs and reliability tables.

    Returns:
        ``{"n", "accuracy", "log_loss", "ece_top", "ece_classwise", "reliability_top",
        "reliability_classwise", "bins", "binning"}``: n = N; accuracy and log loss as in the
        module docstring (log_loss None when some p(c_i|y_i) = 0, an infinite loss); the ECEs of
        :func:`expected_calibration_error`; each reliability table a dict of three lists of B
        values (``"confidence"``, ``"frequency"``: None in empty bins; ``"count"``: ints);
        ``"binning"`` describes the bins in words. ``json.dumps(..., allow_nan=False)`` accepts
        it.
    """
    if isinstance(log_probabilities, torch.Tensor):
        log_probabilities = log_probabilities.detach().to("cpu", torch.float64).numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    log_p = np.asarray(log_probabilities, dtype=np.float64)  # [N, C]
    labels = np.asarray(labels)
    bins = _check_bins(bins)
    if log_p.ndim != 2 or log_p.shape[0] < 1 or log_p.shape[1] < 1:
        raise ValueError(f"log_probabilities: expected shape [N, C] with N, C >= 1, got "
                         f"{log_p.shape}")
    if np.isnan(log_p).any() or (log_p == np.inf).any():
        raise ValueError("log_probabilities: expected no NaN or +inf entries")
    with np.errstate(divide="ignore", invalid="ignore"):
        top = log_p.max(axis=1, keepdims=True)  # [N, 1]
        norm = top[:, 0] + np.log(np.exp(log_p - top).sum(axis=1))  # [N]: logsumexp
    worst = float(np.abs(norm).max())
    if not worst <= _NORMALISATION_TOLERANCE:
        raise ValueError(f"log_probabilities: rows do not normalise (|logsumexp| up to "
                         f"{worst:.3g} > {_NORMALISATION_TOLERANCE:g}); pass log-probabilities, "
                         "not logits")
    _check_labels(labels, log_p.shape)
    probabilities = np.exp(log_p)  # [N, C]
    n = log_p.shape[0]
    loss = -float(log_p[np.arange(n), labels].mean())  # -(1/N) sum_i log p(c_i|y_i)
    tables = {}
    for kind in ("top", "classwise"):
        table = reliability_bins(probabilities, labels, bins=bins, kind=kind)
        tables[kind] = {"confidence": _null_nan(table["confidence"]),
                        "frequency": _null_nan(table["frequency"]),
                        "count": [int(count) for count in table["count"].tolist()]}
    return {
        "n": int(n),
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "log_loss": loss if math.isfinite(loss) else None,
        "ece_top": expected_calibration_error(probabilities, labels, bins=bins, kind="top"),
        "ece_classwise": expected_calibration_error(probabilities, labels, bins=bins,
                                                    kind="classwise"),
        "reliability_top": tables["top"],
        "reliability_classwise": tables["classwise"],
        "bins": bins,
        "binning": f"{bins} equal-width bins on [0, 1], bin k = (k/{bins}, (k+1)/{bins}], "
                   "the first also holding 0",
    }
