r"""Labelled data sets and their content fingerprint.

A :class:`LabelledData` holds N samples x ``[N, *shape]`` (float32 or float64) with integer
classes ``labels [N]`` in 0..C-1, where C = ``num_classes``.

**Fingerprint.** The SHA-256 (hex) of, in this order,

1. a header: the UTF-8 JSON text ``{"format":"guidelab.data/1","n":N,"num_classes":C,
   "shape":[...]}`` (keys sorted, no spaces) followed by one newline byte;
2. x converted to float32, little-endian, C order (-0.0 is written as +0.0), N prod(shape)
   values;
3. the labels as int64, little-endian, N values.

So the fingerprint depends on the values (at float32 precision), the labels, the per-sample
shape and the number of classes, and on nothing else: not on the dtype x is stored in, its
device, its memory layout, the data set's name or its class names. :func:`fingerprint`
computes it for any (x, labels, num_classes), parts of a data set included.

**Largest-remainder rounding** (:func:`largest_remainder`), used by the split and by
:func:`~guidelab.data.family_draws`: to divide n items by shares s_1..s_K (summing to 1; taken
exactly, from the floats' binary fractions, by :func:`exact_weights`),
part k gets floor(n s_k), and the n - sum_k floor(n s_k) items left over (fewer than K) go one
each to the parts with the largest remainders n s_k - floor(n s_k). Every part gets floor or
ceil of its quota n s_k, so it is within one item of it, and the counts sum to n exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .._validation import check_finite

__all__ = ["LabelledData", "fingerprint", "largest_remainder", "exact_weights"]

FINGERPRINT_FORMAT = "guidelab.data/1"
_FLOAT_DTYPES = (torch.float32, torch.float64)


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.float16, torch.bfloat16):
            value = value.to(torch.float32)
        return value.numpy()
    return np.asarray(value)


def fingerprint(x, labels, num_classes: int) -> str:
    """SHA-256 hex digest of (x, labels, per-sample shape, num_classes); module docstring.

    Args:
        x: ``[N, *shape]`` numbers (tensor or array, any float or integer dtype).
        labels: ``[N]`` integer classes.
        num_classes: C.

    Returns:
        64 hexadecimal characters. Equal values at float32 precision give equal fingerprints
        whatever dtype x is stored in.
    """
    x_np = _as_numpy(x)
    labels_np = _as_numpy(labels)
    if x_np.ndim < 1 or x_np.dtype.kind not in "biuf":
        raise ValueError(f"x: expected numbers of shape [N, *shape], got dtype {x_np.dtype} "
                         f"and shape {x_np.shape}")
    if labels_np.shape != (x_np.shape[0],) or labels_np.dtype.kind not in "iu":
        raise ValueError(f"labels: expected [{x_np.shape[0]}] integers, got dtype "
                         f"{labels_np.dtype} and shape {labels_np.shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes: expected an integer, got {num_classes!r}")
    header = json.dumps({"format": FINGERPRINT_FORMAT, "n": int(x_np.shape[0]),
                         "num_classes": int(num_classes),
                         "shape": [int(s) for s in x_np.shape[1:]]},
                        sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(header.encode("utf-8") + b"\n")
    values = np.ascontiguousarray(x_np, dtype="<f4") + np.float32(0.0)  # -0.0 -> +0.0
    digest.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(labels_np, dtype="<i8").tobytes())
    return digest.hexdigest()


def exact_weights(values: Sequence[float]) -> list[int]:
    """Non-negative floats as integers exactly proportional to them.

    Every float is a binary fraction a / 2^e; over their common denominator the numerators
    are integers, so shares computed from them are exact (no rounding in the counts).
    """
    ratios = [float(v).as_integer_ratio() for v in values]
    denominator = math.lcm(*(d for _, d in ratios))
    return [a * (denominator // d) for a, d in ratios]


def largest_remainder(total: int, weights: Sequence[int],
                      priority: Sequence | None = None) -> list[int]:
    """Divide ``total`` items by the shares w_k / sum(w) of integer ``weights``.

    Largest-remainder rounding (module docstring), in exact integer arithmetic: part k's quota
    is total w_k / W (W = sum(w)), its count floor or ceil of it. Ties between equal remainders
    go to the larger ``priority`` (if given), then to the earlier part. Returns K counts summing
    to ``total``.
    """
    weights = [int(w) for w in weights]
    total_weight = sum(weights)
    if total_weight <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"weights: expected non-negative integers with a positive sum, got "
                         f"{weights!r}")
    counts = [total * w // total_weight for w in weights]
    remainders = [total * w % total_weight for w in weights]
    left = total - sum(counts)
    priority = list(priority) if priority is not None else [0] * len(weights)
    order = sorted(range(len(weights)), key=lambda k: (-remainders[k], -priority[k], k))
    for k in order[:left]:
        counts[k] += 1
    return counts


@dataclass(frozen=True, eq=False, repr=False)
class LabelledData:
    """A labelled data set: samples, their classes and a content fingerprint.

    Attributes:
        x: ``[N, *shape]`` float32 or float64 tensor of finite values.
        labels: ``[N]`` int64 tensor of classes in 0..num_classes-1 (other integer dtypes are
            converted to int64).
        num_classes: C >= 1 (classes need not all occur).
        name: a non-empty name (a split's parts are named ``<name>/<part>``).
        shape: the per-sample shape, ``tuple(x.shape[1:])`` (filled in when not given; checked
            when given), e.g. ``(64,)``, ``(1, 8, 8)`` or ``(2,)``.
        class_names: None, or C names of the classes (a folder of class folders keeps the
            folder names).

    ``fingerprint`` (computed on first use, then kept) is :func:`fingerprint` of (x, labels,
    num_classes); the name and class names do not enter it. Treat x and labels as read-only:
    changing them in place would leave a stale fingerprint (make a new ``LabelledData``).
    """

    x: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str
    shape: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        x = self.x
        if not isinstance(x, torch.Tensor) or x.dtype not in _FLOAT_DTYPES or x.ndim < 2:
            got = (f"dtype {x.dtype} and shape {tuple(x.shape)}" if isinstance(x, torch.Tensor)
                   else type(x).__name__)
            raise ValueError(f"x: expected a float32 or float64 tensor [N, *shape] with at "
                             f"least 2 dimensions, got {got}")
        check_finite(x, "x")
        labels = self.labels
        if not isinstance(labels, torch.Tensor) or labels.dtype == torch.bool \
                or labels.is_floating_point() or labels.is_complex():
            got = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels: expected an integer tensor [N], got {got}")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels: expected shape [{x.shape[0]}] (one per row of x), got "
                             f"{tuple(labels.shape)}")
        labels = labels.to(torch.int64)
        object.__setattr__(self, "labels", labels)
        num_classes = self.num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        object.__setattr__(self, "num_classes", int(num_classes))
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels: expected classes in 0..{num_classes - 1}, got values "
                             f"from {int(labels.min())} to {int(labels.max())}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected a non-empty string, got {self.name!r}")
        shape = tuple(int(s) for s in x.shape[1:])
        if self.shape is not None and tuple(self.shape) != shape:
            raise ValueError(f"shape: expected x's per-sample shape {shape}, got "
                             f"{tuple(self.shape)}")
        object.__setattr__(self, "shape", shape)
        if self.class_names is not None:
            names = tuple(self.class_names)
            if len(names) != num_classes or not all(isinstance(n, str) for n in names):
                raise ValueError(f"class_names: expected {num_classes} strings, got "
                                 f"{self.class_names!r}")
            object.__setattr__(self, "class_names", names)

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 hex of the content (:func:`fingerprint`); computed once."""
        return fingerprint(self.x, self.labels, self.num_classes)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (f"LabelledData(name={self.name!r}, n={len(self)}, shape={self.shape}, "
                f"num_classes={self.num_classes}, dtype={self.x.dtype})")

    def class_counts(self) -> torch.Tensor:
        """``[C]`` int64: the number of rows of each class."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)

    def subset(self, index, name: str | None = None) -> LabelledData:
        """The rows ``index`` (``[M]`` integer indices, in that order) as a new data set.

        Keeps num_classes and class_names; the name defaults to this one's.
        """
        index_t = torch.as_tensor(_as_numpy(index))
        if index_t.ndim != 1 or index_t.dtype == torch.bool or index_t.is_floating_point():
            raise ValueError(f"index: expected [M] integer row indices, got dtype "
                             f"{index_t.dtype} and shape {tuple(index_t.shape)}")
        index_t = index_t.to(torch.int64)
        if index_t.numel() and (int(index_t.min()) < 0 or int(index_t.max()) >= len(self)):
            raise ValueError(f"index: expected rows in 0..{len(self) - 1}")
        return LabelledData(self.x[index_t.to(self.x.device)],
                            self.labels[index_t.to(self.labels.device)], self.num_classes,
                            self.name if name is None else name, self.shape, self.class_names)
