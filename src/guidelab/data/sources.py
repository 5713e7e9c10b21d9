r"""Built-in data sources: real digits, exact draws of a family, a labelled Swiss roll.

Every source is a plain function returning a :class:`~guidelab.data.LabelledData`, and a
deterministic function of its arguments (seed included).

**digits.** scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``: 1797
images of 8x8 pixels, classes 0..9, pixel values v in 0..16; shipped with scikit-learn, nothing
is downloaded). ``scale`` maps the pixels:

    "symmetric":  x = v / 8 - 1   in [-1, 1]   (0 -> -1, 8 -> 0, 16 -> 1)
    "unit":       x = v / 16      in [0, 1]
    "raw":        x = v           in [0, 16]

all exact in float32. A sample is a 64-vector (shape ``(64,)``, row-major pixels) or, with
``image=True``, a one-channel image (shape ``(1, 8, 8)``).

**family_draws.** Exact draws of an exact family (``guidelab.distributions``: anything with
``sample(n, c, generator=..., dtype=...)``, ``num_classes``, ``class_prior`` and ``dim``).
Class c's n_c rows come from ``distribution.sample(n_c, c, generator=g_c)`` with its own
``torch.Generator`` g_c seeded by ``numpy.random.SeedSequence([seed, c])`` (the first 64-bit
word of its state), so a class's draws depend on (seed, c, n_c) only. Rows are grouped by class
in class order. The counts n_c are either given (``n_per_class``: one count for every class, or
a sequence of C counts) or derived from a total n by *deterministic* largest-remainder rounding
of n p(c) (:func:`~guidelab.data.core.largest_remainder`, the prior read as exact binary
fractions): n_c is floor or ceil of n p(c) and the n_c sum to n. No multinomial draw is made.

**swiss_roll.** A two-dimensional Swiss roll, written here (no scikit-learn):

    u ~ U[0, 1),   t = 3 pi/2 + 3 pi u  in [3 pi/2, 9 pi/2),
    x = (t cos t, t sin t) / scale + noise Z,   Z ~ N(0, I_2),

with scale = 9 pi/2 by default, so the noiseless roll lies in the unit disk (radius t / scale
from 1/3 to 1, one and a half turns). The label is the segment of t: t's range is cut into
``classes`` equal-length ranges and class k is t in [3 pi/2 + 3 pi k/K, 3 pi/2 + 3 pi (k+1)/K)
(computed as floor(K u)); with the default K = 2, class 0 is the inner arm and class 1 the
outer. u and Z are drawn from ``numpy.random.Generator(PCG64(seed))``: first the n values of u,
then the n x 2 values of Z (row-major).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .core import LabelledData, exact_weights, largest_remainder

__all__ = ["digits", "family_draws", "swiss_roll", "DIGITS_SCALES", "SETUP_DIGITS"]

DIGITS_SCALES = ("symmetric", "unit", "raw")
SETUP_DIGITS = "bash scripts/setup.sh digits"


def _check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _check_count(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(seed) -> int:
    return _check_count(seed, "seed")


def digits(scale: str = "symmetric", *, image: bool = False,
           dtype: torch.dtype = torch.float32) -> LabelledData:
    """scikit-learn's bundled 8x8 digits, pixels scaled by ``scale`` (module docstring).

    Args:
        scale: ``"symmetric"`` (x = v/8 - 1, the default), ``"unit"`` (v/16) or ``"raw"`` (v).
        image: if True, samples are ``[1, 8, 8]`` images instead of 64-vectors.
        dtype: torch.float32 (default) or torch.float64; the values are exact in both.

    Returns:
        ``LabelledData`` with x ``[1797, 64]`` (or ``[1797, 1, 8, 8]``), labels ``[1797]``,
        10 classes named "0".."9", named ``"digits"`` (``"digits-unit"``, ``"digits-raw"``).
    """
    if scale not in DIGITS_SCALES:
        raise ValueError(f"scale: expected one of {DIGITS_SCALES}, got {scale!r}")
    dtype = _check_dtype(dtype)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError(f"digits: needs scikit-learn, which is not installed; run "
                         f"`{SETUP_DIGITS}`") from None
    pixels, target = load_digits(return_X_y=True)  # [1797, 64] float64 in 0..16, [1797]
    pixels = np.asarray(pixels, dtype=np.float64)
    if scale == "symmetric":
        values = pixels / 8.0 - 1.0
    elif scale == "unit":
        values = pixels / 16.0
    else:
        values = pixels
    x = torch.from_numpy(values).to(dtype)  # [N, 64]
    if image:
        x = x.reshape(-1, 1, 8, 8)  # [N, 1, 8, 8], rows of pixels
    name = "digits" if scale == "symmetric" else f"digits-{scale}"
    return LabelledData(x, torch.from_numpy(np.asarray(target, dtype=np.int64)), 10, name,
                        class_names=tuple(str(k) for k in range(10)))


def _class_seed(seed: int, c: int) -> int:
    """The 64-bit seed of class c's generator: SeedSequence([seed, c]), first word."""
    return int(np.random.SeedSequence([seed, c]).generate_state(1, np.uint64)[0])


def family_draws(distribution, n_per_class: int | Sequence[int] | None = None, *,
                 n: int | None = None, seed: int = 0, dtype: torch.dtype = torch.float32,
                 name: str | None = None) -> LabelledData:
    """Exact draws of an exact family, class by class (module docstring).

    Args:
        distribution: an exact family (``GaussianMixture``, ``EmpiricalMixture``,
            ``UniformBoxMixture``, or anything with ``sample``, ``num_classes``,
            ``class_prior`` and ``dim``).
        n_per_class: rows per class: one integer for every class, or C integers.
        n: instead of ``n_per_class``, the total number of rows, divided by the class prior
            with largest-remainder rounding (deterministic).
        seed: non-negative integer; class c's draws use a generator seeded from (seed, c).
        dtype: torch.float32 (default) or torch.float64.
        name: the data set's name (default ``"<family class name>-draws"``).

    Returns:
        ``LabelledData`` with x ``[N, dim]``, labels ``[N]`` grouped by class (class 0 first),
        ``num_classes`` the family's.
    """
    required = ("sample", "num_classes", "class_prior", "dim")
    if any(not hasattr(distribution, attr) for attr in required):
        raise ValueError(f"distribution: expected an exact family with {', '.join(required)}, "
                         f"got {type(distribution).__name__}")
    num_classes = int(distribution.num_classes)
    seed = _check_seed(seed)
    dtype = _check_dtype(dtype)
    if (n_per_class is None) == (n is None):
        raise ValueError("n_per_class: give exactly one of n_per_class and n")
    if n is not None:
        total = _check_count(n, "n", 1)
        prior = distribution.class_prior.detach().cpu().to(torch.float64).tolist()
        counts = largest_remainder(total, exact_weights(prior))
    elif isinstance(n_per_class, (int, np.integer)) and not isinstance(n_per_class, bool):
        counts = [_check_count(n_per_class, "n_per_class", 1)] * num_classes
    else:
        try:
            counts = [_check_count(k, "n_per_class") for k in n_per_class]
        except TypeError:
            raise ValueError(f"n_per_class: expected an integer or {num_classes} integers, "
                             f"got {n_per_class!r}") from None
        if len(counts) != num_classes or sum(counts) < 1:
            raise ValueError(f"n_per_class: expected {num_classes} non-negative integers (one "
                             f"per class) with a positive sum, got {list(n_per_class)!r}")
    dim = int(distribution.dim)
    xs, labels = [], []
    for c, count in enumerate(counts):
        if count == 0:
            continue
        generator = torch.Generator().manual_seed(_class_seed(seed, c))
        draws = distribution.sample(count, c, generator=generator, dtype=dtype)  # [n_c, dim]
        xs.append(draws.reshape(count, dim))
        labels.append(torch.full((count,), c, dtype=torch.int64))
    if name is None:
        name = f"{type(distribution).__name__}-draws"
    return LabelledData(torch.cat(xs), torch.cat(labels), num_classes, name)


def swiss_roll(n: int, seed: int = 0, *, noise: float = 0.05, classes: int = 2,
               scale: float = 4.5 * math.pi, dtype: torch.dtype = torch.float32,
               name: str = "swiss_roll") -> LabelledData:
    """A 2-D Swiss roll labelled by segment of its parameter t (module docstring).

    Args:
        n: number of points (>= 1).
        seed: non-negative integer seed of ``numpy.random.Generator(PCG64(seed))``.
        noise: standard deviation of the isotropic Gaussian noise added (>= 0).
        classes: K >= 1 equal-length ranges of t, class k the k-th from the inside.
        scale: t is divided by it (> 0); the default 9 pi / 2 puts the roll in the unit disk.
        dtype: torch.float32 (default) or torch.float64 (computed in float64, then cast).
        name: the data set's name.

    Returns:
        ``LabelledData`` with x ``[n, 2]`` and labels ``[n]`` in 0..classes-1.
    """
    n = _check_count(n, "n", 1)
    seed = _check_seed(seed)
    classes = _check_count(classes, "classes", 1)
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise: expected a finite number >= 0, got {noise!r}")
    scale = float(scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale: expected a finite number > 0, got {scale!r}")
    dtype = _check_dtype(dtype)
    rng = np.random.Generator(np.random.PCG64(seed))
    u = rng.random(n)  # [n] in [0, 1)
    z = rng.standard_normal((n, 2))  # [n, 2]
    t = 1.5 * math.pi + 3.0 * math.pi * u  # [n]
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / scale + noise * z  # [n, 2]
    labels = np.minimum(np.floor(u * classes), classes - 1).astype(np.int64)  # [n]
    return LabelledData(torch.from_numpy(x).to(dtype), torch.from_numpy(labels), classes, name)
