r"""A score model with a controlled error: s_eps(x | c) = s(x | c) + delta(x, c).

For rows of D coordinates (D = d for points, C H W for images) and noise level (alpha, sigma),
the error is measured in the units of the noise prediction eps_hat = -sigma s, whose target
eps ~ N(0, I) has root-mean-square 1 per coordinate. ``eps`` is the root-mean-square error per
coordinate of that implied noise prediction, i.e. relative to the size of the noise itself:

* ``kind="bias"``:  delta(x, c) = (eps sqrt(D) / sigma) e(x, c), with e a fixed, smooth,
  unit-norm-per-row direction field: for every row ||sigma delta|| / sqrt(D) = eps exactly, and
  the error is a deterministic function of (x, c), the same at every call (a systematic error).
  The field is

      f(x, l) = m_l + (1/sqrt(J)) sum_j a_j sin(w_j . x + b_{l,j}),    e = f / ||f||,

  with m_l a random unit vector per label l (each class and the null label ``None`` get their
  own), w_j ~ N(0, frequency^2 I / D), a_j ~ N(0, I / D) and phases b_{l,j} uniform on
  [0, 2 pi), J = 16, all drawn from ``seed``. Because the directions differ between labels,
  guidance amplifies them: the guided error is (1 + w) delta(x, c) - w delta(x, None).
* ``kind="noise"``: delta = (eps / sigma) Z with Z ~ N(0, I) fresh at every call (from a
  ``torch.Generator`` seeded with ``seed``): zero mean, variance eps^2 / sigma^2 per coordinate,
  so E ||sigma delta||^2 / D = eps^2, matching the bias kind in mean square.

In both cases E ||delta||^2 = eps^2 D / sigma^2; since E ||eps||^2 = D, ``eps`` is the relative
root-mean-square error of the noise prediction against the noise (not against the optimal
prediction E[eps | x], which is smaller). eps = 0 returns the model's scores unchanged.
"""

from __future__ import annotations

import hashlib
import math

import torch

from .conversions import expand_level

__all__ = ["Perturbed"]

KINDS = ("bias", "noise")
_NULL = -1  # key of the null label's field


class Perturbed:
    """Any score model plus a controlled error of relative size ``eps`` (module docstring).

    Args:
        model: a score model (``score(x, alpha, sigma, c=None)``); its one-pass
            ``combined_score`` and one-call ``branch_scores`` are kept when present.
        eps: the root-mean-square error per coordinate of the implied noise prediction
            -sigma s, >= 0.
        kind: ``bias`` (fixed smooth direction field, exact norm) or ``noise`` (fresh Gaussian).
        seed: seed of the field (bias) or of the noise generator (noise).
        frequency: spatial frequency of the bias field (w_j ~ N(0, frequency^2 I / D)).

    ``score(x [N, ...], alpha, sigma, c=None) -> [N, ...]``; sigma must be > 0 where eps > 0.
    ``direction(x, c) -> [N, ...]`` gives the unit field e (bias kind).

    Example:
        >>> from guidelab import GaussianMixture
        >>> gm = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
        >>> noisy = Perturbed(gm, eps=0.1, kind="bias", seed=0)
        >>> x = torch.zeros(3, 1)
        >>> error = noisy.score(x, 0.8, 0.6, c=1) - gm.score(x, 0.8, 0.6, c=1)
        >>> torch.allclose(error.abs() * 0.6, torch.full((3, 1), 0.1))
        True
    """

    num_fourier = 16

    def __init__(self, model, eps: float, kind: str = "bias", seed: int = 0,
                 frequency: float = 1.0):
        if not callable(getattr(model, "score", None)):
            raise ValueError(f"model: expected a score model with score(x, alpha, sigma, c), "
                             f"got {type(model).__name__}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (
                math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps: expected a finite number >= 0, got {eps!r}")
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        if isinstance(frequency, bool) or not isinstance(frequency, (int, float)) or not (
                math.isfinite(frequency) and frequency > 0):
            raise ValueError(f"frequency: expected a finite number > 0, got {frequency!r}")
        self.model, self.eps, self.kind = model, float(eps), kind
        self.seed, self.frequency = seed, float(frequency)
        self._shared: dict = {}  # D -> (w [D, J], a [J, D]) float64 CPU
        self._labels: dict = {}  # (D, label) -> (m [D], b [J]) float64 CPU
        self._cast: dict = {}  # (D, label, device, dtype) -> cast tensors
        self._generators: dict = {}  # device -> torch.Generator (noise kind)
        for name in ("num_classes", "null_class", "input_shape"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))
        if callable(getattr(model, "combined_score", None)):
            self.combined_score = self._combined_score
        if callable(getattr(model, "branch_scores", None)):
            self.branch_scores = self._branch_scores

    def __repr__(self) -> str:
        return f"Perturbed({self.model!r}, eps={self.eps}, kind={self.kind!r}, seed={self.seed})"

    # ----------------------------------------------------------------- the bias field

    def _field_params(self, dim: int, label: int, device, dtype):
        key = (dim, label, torch.device(device), dtype)
        if key in self._cast:
            return self._cast[key]
        if dim not in self._shared:
            g = torch.Generator().manual_seed(_derived_seed(self.seed, dim, "shared"))
            w = torch.randn(dim, self.num_fourier, generator=g, dtype=torch.float64) \
                * (self.frequency / math.sqrt(dim))  # [D, J]
            a = torch.randn(self.num_fourier, dim, generator=g, dtype=torch.float64) \
                / math.sqrt(dim * self.num_fourier)  # [J, D]
            self._shared[dim] = (w, a)
        if (dim, label) not in self._labels:
            g = torch.Generator().manual_seed(_derived_seed(self.seed, dim, label))
            m = torch.randn(dim, generator=g, dtype=torch.float64)
            m = m / m.norm()  # [D]
            b = 2 * math.pi * torch.rand(self.num_fourier, generator=g, dtype=torch.float64)
            self._labels[(dim, label)] = (m, b)
        w, a = self._shared[dim]
        m, b = self._labels[(dim, label)]
        cast = tuple(t.to(device=device, dtype=dtype) for t in (w, a, m, b))
        self._cast[key] = cast
        return cast

    def direction(self, x: torch.Tensor, c=None) -> torch.Tensor:
        """The unit field e(x, c): ``[N, ...]`` like x, each row of norm 1."""
        flat = x.flatten(1)  # [N, D]
        dim = flat.shape[1]
        out = torch.empty_like(flat)  # [N, D]
        for label, rows in _label_groups(c, x.shape[0], x.device):
            w, a, m, b = self._field_params(dim, label, x.device, x.dtype)
            part = flat if rows is None else flat[rows]  # [n, D]
            field = m + torch.sin(part @ w + b) @ a  # [n, D]
            field = field / field.norm(dim=1, keepdim=True)  # [n, D]
            if rows is None:
                out = field
            else:
                out[rows] = field
        return out.reshape(x.shape)

    # ----------------------------------------------------------------- the error

    def _generator(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def error(self, x: torch.Tensor, sigma, c=None) -> torch.Tensor:
        """delta(x, c) at noise level sigma (> 0): ``[N, ...]`` like x."""
        sigma = expand_level(sigma, x)
        if isinstance(sigma, torch.Tensor):
            if (sigma <= 0).any():
                raise ValueError("sigma: Perturbed needs sigma > 0 (its error is eps / sigma)")
        elif sigma <= 0:
            raise ValueError("sigma: Perturbed needs sigma > 0 (its error is eps / sigma)")
        if self.kind == "bias":
            dim = x[0].numel() if x.shape[0] else 1
            return self.direction(x, c) * (self.eps * math.sqrt(dim) / sigma)
        noise = torch.randn(x.shape, generator=self._generator(x.device), dtype=x.dtype,
                            device=x.device)  # [N, ...]
        return noise * (self.eps / sigma)

    def score(self, x: torch.Tensor, alpha, sigma, c=None) -> torch.Tensor:
        """s(x | c) + delta(x, c); ``[N, ...]``."""
        score = self.model.score(x, alpha, sigma, c)
        if self.eps == 0:
            return score
        return score + self.error(x, sigma, c).to(score.dtype)

    def _combined_score(self, x: torch.Tensor, alpha, sigma, c, cond_weight,
                        uncond_weight) -> torch.Tensor:
        """The model's one-pass a s(x|c) + b s(x), plus a delta(x, c) + b delta(x, None)."""
        combined = self.model.combined_score(x, alpha, sigma, c, cond_weight, uncond_weight)
        if self.eps == 0:
            return combined
        a = expand_level(cond_weight, x) if isinstance(cond_weight, torch.Tensor) \
            else float(cond_weight)
        b = expand_level(uncond_weight, x) if isinstance(uncond_weight, torch.Tensor) \
            else float(uncond_weight)
        error = a * self.error(x, sigma, c) + b * self.error(x, sigma, None)
        return combined + error.to(combined.dtype)

    def _branch_scores(self, x: torch.Tensor, alpha, sigma, c):
        """The model's one-call (s(x|c), s(x)), each plus its error delta."""
        conditional, unconditional = self.model.branch_scores(x, alpha, sigma, c)
        if self.eps == 0:
            return conditional, unconditional
        return (conditional + self.error(x, sigma, c).to(conditional.dtype),
                unconditional + self.error(x, sigma, None).to(unconditional.dtype))


def _derived_seed(*parts) -> int:
    """A 62-bit seed that is a fixed function of ``parts`` (the same in every process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def _label_groups(c, n: int, device):
    """(label, rows) pairs: rows None means every row; the null label is -1."""
    if c is None:
        return [(_NULL, None)]
    if isinstance(c, torch.Tensor) and c.ndim > 0:
        c = c.to(device)
        return [(int(label), (c == label).nonzero().flatten()) for label in c.unique().tolist()]
    return [(int(c), None)]
