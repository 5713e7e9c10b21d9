r"""Labelled mixtures: the common machinery of every exact family.

A labelled mixture has K components, component k with weight pi_k, class label c_k and a
density p_k. Noised by the kernel X_t = alpha X_0 + sigma Z, each component becomes p_{k,t}
and the mixture stays a mixture with the same weights:

    p_t(x)        = sum_k pi_k p_{k,t}(x),
    p_t(x | c)    = sum_{k: c_k = c} pi_k p_{k,t}(x) / p(c),     p(c) = sum_{k: c_k = c} pi_k,
    p_t(c | x)    = sum_{k: c_k = c} pi_k p_{k,t}(x) / p_t(x),
    grad log p_t(x | c) = sum_{k: c_k = c} r_k^c(x) grad log p_{k,t}(x),

with responsibilities r^c = softmax over the class's components of log pi_k + log p_{k,t}(x).
Any linear combination of the conditional and unconditional scores,

    a grad log p_t(x | c) + b grad log p_t(x) = sum_k [a r_k^c(x) + b r_k(x)] grad log p_{k,t}(x),

is therefore one weighted sum over the same per-component terms: ``combined_score`` computes it
in one pass. Guidance rules that are linear in the two branches (classifier-free guidance and
its strength schedules, :mod:`guidelab.guidance`) give their coefficients and get the guided
score at the cost of one score.

A family implements two hooks, both for a chunk of rows:

* ``_log_components(x, alpha, sigma, params) -> (log_joint [N, K], aux)``: log pi_k +
  log p_{k,t}(x), and whatever the second hook needs;
* ``_combine_scores(weights [N, K], aux, x, alpha, sigma, params) -> [N, d]``:
  sum_k weights_k grad log p_{k,t}(x).

Everything else (validation, chunking over N, log-space class sums, finiteness checks) lives
here. Nothing is exponentiated before it is normalised: responsibilities are softmaxes of
log-joints and class sums are logsumexps, so far-away points keep finite scores.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import noise as _noise
from .._validation import all_finite, as_float64, check_noise_level, check_points

__all__ = ["LabelledMixture", "NoiseLevel", "ClassArg"]

NoiseLevel = float | torch.Tensor
ClassArg = int | torch.Tensor | None

LOG_2PI = math.log(2 * math.pi)


def _row_softmax(log_joint: torch.Tensor) -> torch.Tensor:
    """Softmax over the K components of each row, ``[n, K] -> [n, K]``.

    PyTorch's CPU softmax takes a slow path when a float32 row is shorter than its vector
    width (at K = 9 it ran 3x slower than at K = 16); padding with -inf columns, which get
    probability 0, and dropping them afterwards is faster there.
    """
    K = log_joint.shape[1]
    if log_joint.dtype == torch.float32 and K < 16 and log_joint.device.type == "cpu":
        padded = torch.nn.functional.pad(log_joint, (0, 16 - K), value=-math.inf)  # [n, 16]
        return torch.softmax(padded, dim=1)[:, :K]
    return torch.softmax(log_joint, dim=1)


class LabelledMixture:
    """Base class of the exact families: a mixture over components with class labels.

    Subclasses call ``_init_mixture(weights, labels, dim)`` and implement the two hooks above
    plus ``_sample_components``. Parameters are kept in float64 on the CPU and cast, once per
    (device, dtype), to the dtype and device of the points they are evaluated at.

    Attributes:
        dim: d, the data dimension.
        num_components: K.
        num_classes: C; classes are the integers 0..C-1, each owning at least one component.
        labels: ``[K]`` int64 class of each component.
        weights: ``[K]`` float64 mixture weights pi_k, normalised to sum to 1.
        chunk_elements: about how many N*K*d entries one chunk of rows may hold on the CPU
            (at least ``min_chunk_rows`` rows a chunk). Large N is processed in chunks, which
            bounds memory and keeps the intermediates of one chunk in cache (a blocked kernel:
            on a 2-core CPU 2^16 entries ran 2.5x faster than 2^21 at K = 16, d = 2).
        gpu_chunk_elements: the same on an accelerator, where each chunk costs kernel
            launches rather than cache misses: 2^24 entries (64 MiB of float32 a tensor), so
            N = 10^7 at K = 16, d = 2 runs in 20 chunks within well under 2 GB.
    """

    chunk_elements: int = 1 << 16
    gpu_chunk_elements: int = 1 << 24
    min_chunk_rows: int = 512

    # ----------------------------------------------------------------- construction

    def _init_mixture(self, weights, labels, dim: int) -> None:
        weights = as_float64(weights, "weights")
        if weights.ndim != 1:
            raise ValueError(f"weights: expected shape [K], got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all():
            raise ValueError("weights: expected finite values")
        if (weights < 0).any():
            raise ValueError("weights: expected non-negative values, found a negative weight")
        if weights.sum() <= 0:
            raise ValueError("weights: expected a positive total, all weights are zero")
        labels_in = torch.as_tensor(labels)
        if labels_in.is_floating_point():
            if not torch.equal(labels_in, labels_in.round()):
                raise ValueError("labels: expected integer class labels")
        elif labels_in.dtype == torch.bool or labels_in.is_complex():
            raise ValueError(f"labels: expected integer class labels, got dtype {labels_in.dtype}")
        labels_in = labels_in.to(torch.int64).cpu()
        if labels_in.shape != weights.shape:
            raise ValueError(f"labels: expected shape {tuple(weights.shape)} (one per component, "
                             f"like weights), got {tuple(labels_in.shape)}")
        if (labels_in < 0).any():
            raise ValueError("labels: expected non-negative class labels")
        num_classes = int(labels_in.max()) + 1
        present = torch.bincount(labels_in, minlength=num_classes)
        missing = (present == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"labels: classes must be 0..C-1 with a component each; "
                             f"class(es) {missing} have no component")
        self.dim = int(dim)
        self.num_components = int(weights.numel())
        self.num_classes = num_classes
        self.labels = labels_in
        self.weights = weights / weights.sum()
        with torch.no_grad():
            log_w = torch.log(self.weights)
        self.log_weights = log_w
        class_prior = torch.zeros(num_classes, dtype=torch.float64)
        class_prior.index_add_(0, labels_in, self.weights)
        self._class_prior = class_prior
        self._class_mask = labels_in[None, :] == torch.arange(num_classes)[:, None]  # [C, K]
        self._class_index = [m.nonzero().flatten() for m in self._class_mask]
        self._param_cache: dict[tuple, dict[str, Any]] = {}

    @property
    def class_prior(self) -> torch.Tensor:
        """p(c) = sum of the weights of class c's components; ``[C]`` float64."""
        return self._class_prior.clone()

    def params(self, device: torch.device | str, dtype: torch.dtype) -> dict[str, Any]:
        """Family parameters cast to (device, dtype), computed once and cached."""
        key = (torch.device(device), dtype)
        if key not in self._param_cache:
            common = {
                "log_weights": self.log_weights.to(device=key[0], dtype=dtype),
                # 0 on a class's components, -inf elsewhere: restricting a log-joint to a class
                # is one broadcast add (a boolean masked_fill cost 4x more on [n, K])
                "class_log_mask": torch.zeros(self._class_mask.shape, dtype=dtype,
                                              device=key[0]).masked_fill_(
                    ~self._class_mask.to(key[0]), -math.inf),  # [C, K]
                "class_index": [idx.to(key[0]) for idx in self._class_index],
                "labels": self.labels.to(key[0]),
            }
            common.update(self._make_params(key[0], dtype))
            self._param_cache[key] = common
        return self._param_cache[key]

    # ----------------------------------------------------------------- hooks

    def _make_params(self, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        raise NotImplementedError

    def _log_components(self, x, alpha, sigma, params) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def _combine_scores(self, weights, aux, x, alpha, sigma, params) -> torch.Tensor:
        raise NotImplementedError

    def _sample_components(self, components: torch.Tensor, generator, device, dtype):
        raise NotImplementedError

    def _check_clean(self, alpha: torch.Tensor, sigma: torch.Tensor, what: str) -> None:
        """Hook: families without a clean density reject sigma = 0 here."""

    def _row_elements(self) -> int:
        """Entries one row costs in the largest intermediate (default K * d)."""
        return self.num_components * max(self.dim, 1)

    # ----------------------------------------------------------------- argument handling

    def _prepare(self, x, alpha, sigma, what: str):
        x = check_points(x, self.dim)
        n = x.shape[0]
        alpha = check_noise_level(alpha, n, x, "alpha")
        sigma = check_noise_level(sigma, n, x, "sigma")
        if (alpha <= 0).any():
            raise ValueError("alpha: expected positive values (alpha = 0 is pure noise, where "
                             "the data carries no information)")
        self._check_clean(alpha, sigma, what)
        return x, alpha, sigma

    def _class_tensor(self, c: ClassArg, n: int, device) -> torch.Tensor | int | None:
        if c is None:
            return None
        if isinstance(c, torch.Tensor) and c.ndim > 0:
            if c.is_floating_point() or c.dtype == torch.bool or c.shape != (n,):
                raise ValueError(f"c: expected an int or an integer tensor of shape [{n}], got "
                                 f"dtype {c.dtype}, shape {tuple(c.shape)}")
            if ((c < 0) | (c >= self.num_classes)).any():
                raise ValueError(f"c: unknown class in c; classes are 0..{self.num_classes - 1}")
            return c.to(device=device, dtype=torch.int64)
        if isinstance(c, bool) or not isinstance(c, (int, torch.Tensor)) or (
                isinstance(c, torch.Tensor) and (c.is_floating_point() or c.dtype == torch.bool)):
            raise ValueError(f"c: expected an integer class, got {c!r}")
        c = int(c)
        if not 0 <= c < self.num_classes:
            raise ValueError(f"c: unknown class {c}; classes are 0..{self.num_classes - 1}")
        return c

    def _chunks(self, n: int, device: torch.device | None = None):
        """Row slices covering 0..n-1, sized for ``device`` (CPU when None)."""
        budget = self.chunk_elements if device is None or device.type == "cpu" \
            else self.gpu_chunk_elements
        rows = max(self.min_chunk_rows, budget // max(1, self._row_elements()))
        for start in range(0, n, rows):
            yield slice(start, min(n, start + rows))

    @staticmethod
    def _take(value, rows: slice):
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            return value[rows]
        return value

    def _class_log_mask(self, c, params) -> torch.Tensor:
        """0 on class c's components, -inf elsewhere: ``[K]`` (one class) or ``[N, K]``."""
        return params["class_log_mask"][c]

    def _level_params(self, alpha, sigma, params) -> dict[str, Any]:
        """Hook: terms that depend only on a noise level shared by every row (0-d alpha and
        sigma), computed once per call instead of once per chunk; merged into ``params``."""
        return {}

    def _call_params(self, x, alpha, sigma) -> dict[str, Any]:
        params = self.params(x.device, x.dtype)
        if alpha.ndim == 0 and sigma.ndim == 0:
            level = self._level_params(alpha, sigma, params)
            if level:
                params = {**params, **level}
        return params

    # ----------------------------------------------------------------- public maths

    def log_prob(self, x: torch.Tensor, alpha: NoiseLevel = 1.0, sigma: NoiseLevel = 0.0,
                 c: ClassArg = None) -> torch.Tensor:
        """log p_t(x) (c = None) or log p_t(x | c) under the noised mixture.

        Args:
            x: points ``[N, d]``, float32 or float64, any device.
            alpha, sigma: the kernel X_t = alpha X_0 + sigma Z, floats or ``[N]`` tensors.
            c: None, a class index, or ``[N]`` integer classes.

        Returns:
            ``[N]`` log-densities in x's dtype; -inf only where the density is exactly zero.
        """
        x, alpha, sigma = self._prepare(x, alpha, sigma, "log_prob")
        c = self._class_tensor(c, x.shape[0], x.device)
        params = self._call_params(x, alpha, sigma)
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        log_prior = torch.log(self._class_prior).to(x.device, x.dtype)
        for rows in self._chunks(x.shape[0], x.device):
            log_joint, _ = self._log_components(x[rows], self._take(alpha, rows),
                                                self._take(sigma, rows), params)  # [n, K]
            if c is None:
                out[rows] = torch.logsumexp(log_joint, dim=1)
            else:
                cc = self._take(c, rows)
                masked = log_joint + self._class_log_mask(cc, params)  # [n, K]
                out[rows] = torch.logsumexp(masked, dim=1) - log_prior[cc]
        if torch.isnan(out).any() or (out == math.inf).any():
            raise FloatingPointError("log_prob: the computation produced NaN or +inf "
                                     "(overflow); the inputs are too extreme for this dtype")
        return out

    def log_class_posterior(self, x: torch.Tensor, alpha: NoiseLevel = 1.0,
                            sigma: NoiseLevel = 0.0) -> torch.Tensor:
        """log p_t(c | x) for every class c, as ``[N, C]`` (log-space class sums).

        Differentiable in x, so ``torch.autograd`` gives grad log p_t(c | x) (classifier
        guidance) from it.
        """
        x, alpha, sigma = self._prepare(x, alpha, sigma, "log_class_posterior")
        params = self._call_params(x, alpha, sigma)
        parts = []
        for rows in self._chunks(x.shape[0], x.device):
            log_joint, _ = self._log_components(x[rows], self._take(alpha, rows),
                                                self._take(sigma, rows), params)  # [n, K]
            log_total = torch.logsumexp(log_joint, dim=1, keepdim=True)  # [n, 1]
            per_class = torch.stack([torch.logsumexp(log_joint[:, idx], dim=1)
                                     for idx in params["class_index"]], dim=1)  # [n, C]
            parts.append(per_class - log_total)
        out = torch.cat(parts) if parts else x.new_empty((0, self.num_classes))
        if torch.isnan(out).any():
            raise FloatingPointError("log_class_posterior: the computation produced NaN "
                                     "(the point has zero density under every component)")
        return out

    def class_posterior(self, x: torch.Tensor, alpha: NoiseLevel = 1.0,
                        sigma: NoiseLevel = 0.0) -> torch.Tensor:
        """p_t(c | x) for every class c, ``[N, C]``; rows sum to one."""
        return self.log_class_posterior(x, alpha, sigma).exp()

    def score(self, x: torch.Tensor, alpha: NoiseLevel, sigma: NoiseLevel,
              c: ClassArg = None) -> torch.Tensor:
        """grad_x log p_t(x) (c = None) or grad_x log p_t(x | c); ``[N, d]``.

        Computed as sum_k r_k grad log p_{k,t}(x) with responsibilities r from a softmax of the
        component log-joints (restricted to class c's components when c is given).
        """
        x, alpha, sigma = self._prepare(x, alpha, sigma, "score")
        c = self._class_tensor(c, x.shape[0], x.device)
        return self._weighted_score(x, alpha, sigma, c, None)

    def combined_score(self, x: torch.Tensor, alpha: NoiseLevel, sigma: NoiseLevel, c: ClassArg,
                       cond_weight: float | torch.Tensor,
                       uncond_weight: float | torch.Tensor) -> torch.Tensor:
        """a grad log p_t(x|c) + b grad log p_t(x) in one pass; ``[N, d]``.

        Args:
            c: the class (an int or an ``[N]`` tensor).
            cond_weight, uncond_weight: a and b, floats or ``[N]`` tensors.
        """
        x, alpha, sigma = self._prepare(x, alpha, sigma, "combined_score")
        c = self._class_tensor(c, x.shape[0], x.device)
        if c is None:
            raise ValueError("c: combined_score needs a class")
        weights = []
        for name, value in (("cond_weight", cond_weight), ("uncond_weight", uncond_weight)):
            value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
            if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != x.shape[0]):
                raise ValueError(f"{name}: expected a float or shape [{x.shape[0]}], "
                                 f"got {tuple(value.shape)}")
            weights.append(value)
        return self._weighted_score(x, alpha, sigma, c, tuple(weights))

    def _weighted_score(self, x, alpha, sigma, c, weights) -> torch.Tensor:
        params = self._call_params(x, alpha, sigma)
        out = self._weighted_score_rows(x, alpha, sigma, c, weights, params)
        if not all_finite(out):
            raise FloatingPointError("score: the computation produced non-finite values "
                                     "(overflow); the inputs are too extreme for this dtype")
        return out

    def _weighted_score_rows(self, x, alpha, sigma, c, weights, params) -> torch.Tensor:
        """sum_k rho_k grad log p_{k,t}(x) chunk by chunk, unchecked; ``[N, d]``.

        rho is r (c None), r^c, or a r^c + b r (``weights`` = (a, b), 0-d or ``[N]`` each);
        families with a faster whole-batch evaluation override this.
        """
        out = torch.empty_like(x)
        for rows in self._chunks(x.shape[0], x.device):
            a, s = self._take(alpha, rows), self._take(sigma, rows)
            log_joint, aux = self._log_components(x[rows], a, s, params)  # [n, K]
            if c is None:
                rho = _row_softmax(log_joint)  # r, [n, K]
            else:
                mask = self._class_log_mask(self._take(c, rows), params)  # [(n,) K]
                rho = _row_softmax(log_joint + mask)  # r^c, [n, K]
                if weights is not None:
                    a_c, a_u = (self._take(value, rows) for value in weights)
                    a_c = a_c[:, None] if a_c.ndim == 1 else a_c  # [] or [n, 1]
                    a_u = a_u[:, None] if a_u.ndim == 1 else a_u
                    rho = torch.addcmul(rho * a_c, _row_softmax(log_joint), a_u)  # a r^c + b r
            out[rows] = self._combine_scores(rho, aux, x[rows], a, s, params)
        return out

    # ----------------------------------------------------------------- sampling

    def sample(self, n: int, c: ClassArg = None,
               generator: torch.Generator | _noise.RowNoise | None = None,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Exact draws from p(x) (c = None) or p(x | c) of the clean data; ``[n, d]``.

        A component is drawn from the (class-restricted) weights, then a point from it. Pass a
        ``generator`` (on ``device``) for reproducible draws, or a
        :class:`~guidelab.noise.RowNoise` with n rows (row i's draw is then a function of the
        noise's seed, stream and row index alone; its component is drawn by the Gumbel-max
        trick from one uniform draw, its point from the next draw).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        device = torch.device(device) if device is not None else (
            generator.device if generator is not None else torch.device("cpu"))
        c = self._class_tensor(c, n, device)
        components = self.sample_components(n, c, generator, device)
        return self._sample_components(components, generator, device, dtype)

    def sample_components(self, n: int, c: ClassArg, generator, device) -> torch.Tensor:
        """Component indices ``[n]`` drawn from the weights (within class c if given)."""
        weights = self.weights.to(device)
        if c is None:
            return _noise.categorical(weights, n, generator, device)
        if isinstance(c, int):
            return _noise.categorical(weights * self._class_mask[c].to(device), n, generator,
                                      device)
        w = weights[None, :] * self._class_mask.to(device)[c]  # [n, K]
        return _noise.categorical(w, n, generator, device)

    # ----------------------------------------------------------------- public interface for
    # exact references (the exact reverse kernel, grid propagation, exact log-densities)

    def resolve_class(self, c: ClassArg, n: int,
                      device: torch.device | str | None = None) -> torch.Tensor | int | None:
        """Check a class argument for ``n`` rows: None, a Python int, or an ``[n]`` int64 tensor
        on ``device``; ValueError naming ``c`` for anything else or an unknown class."""
        return self._class_tensor(c, n, torch.device(device) if device is not None else None)

    def class_components(self, c: int) -> torch.Tensor:
        """Indices ``[K_c]`` (int64, CPU) of the components of class ``c``."""
        c = self.resolve_class(c, 1)
        if not isinstance(c, int):
            raise ValueError("c: expected one class (an int)")
        return self._class_index[c].clone()

    def log_responsibilities(self, x: torch.Tensor, alpha: NoiseLevel, sigma: NoiseLevel,
                             c: ClassArg = None) -> torch.Tensor:
        r"""log r_k(x) at level (alpha, sigma): ``[N, K]``, each row a log-softmax.

        r_k(x) = pi_k p_{k,t}(x) / sum_j pi_j p_{j,t}(x) (c = None), or the class-restricted
        r_k^c(x), the same softmax over class c's components only (log r_k^c = -inf on the
        other components). Computed from the component log-joints, never exponentiated first.

        Args:
            x: points ``[N, d]``; alpha, sigma: floats or ``[N]`` tensors; c: None, a class
                or ``[N]`` classes.
        """
        x, alpha, sigma = self._prepare(x, alpha, sigma, "log_responsibilities")
        c = self._class_tensor(c, x.shape[0], x.device)
        params = self._call_params(x, alpha, sigma)
        out = x.new_empty((x.shape[0], self.num_components))
        for rows in self._chunks(x.shape[0], x.device):
            log_joint, _ = self._log_components(x[rows], self._take(alpha, rows),
                                                self._take(sigma, rows), params)  # [n, K]
            if c is not None:
                log_joint = log_joint + self._class_log_mask(self._take(c, rows), params)
            out[rows] = torch.log_softmax(log_joint, dim=1)  # [n, K]
        if torch.isnan(out).any():
            raise FloatingPointError("log_responsibilities: the computation produced NaN "
                                     "(the point has zero density under every component)")
        return out
