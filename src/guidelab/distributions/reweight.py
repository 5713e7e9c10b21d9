r"""Exact reweighted Gaussian and kernel mixtures: p_g = p g / E_p[g] for exponential weights g.

Reward guidance (Jiao, Chen & Li 2025, arXiv 2512.04985; docs/maths.md, sections 6 and 13)
adds w (s_original - s_reweighted) to a score, the reweighted density being the original one
times a positive weight g, normalised. For the weights

    g(x) = exp(b^T x - 1/2 (x - m)^T A (x - m))

(b in R^d: "exponential-linear"; A symmetric d x d, m in R^d: "exponential-quadratic"; either
or both) the reweighted mixture of Gaussians is again a mixture of Gaussians, exactly.

**One component.** Write P = S^{-1}, P' = P + A and, for x = mu + u,

    g(mu + u) = g(mu) exp(beta^T u - 1/2 u^T A u),      beta = grad log g(mu) = b - A (mu - m).

Completing the square in u,

    N(mu + u; mu, S) g(mu + u) = g(mu) |S' P|^{1/2} exp(1/2 beta^T S' beta) N(u; S' beta, S'),

with S' = P'^{-1}. So N(x; mu, S) g(x) = Z N(x; mu', S') with

    S'    = (S^{-1} + A)^{-1},
    mu'   = mu + S' beta  = S' (S^{-1} mu + b + A m),
    log Z = log g(mu) + 1/2 beta^T S' beta - 1/2 log det(I + S A),

Z = int N(x; mu, S) g(x) dx. It exists iff P' is positive definite. With S = W W^T
(W = U diag(lambda)^{1/2} from the mixture's eigendecomposition) and M = I + W^T A W,
P' = W^{-T} M W^{-1}, so P' is positive definite iff M is, and

    S' = W M^{-1} W^T,    log det(I + S A) = log det M,    beta^T S' beta = |M^{-1/2} W^T beta|^2:

no covariance is inverted, and the eigenvalues of M decide positivity.

**The mixture.** p = sum_k pi_k N(mu_k, S_k) gives p g = sum_k pi_k Z_k N(mu_k', S_k'), so

    p_g = sum_k pi_k' N(mu_k', S_k'),    pi_k' = pi_k Z_k / sum_j pi_j Z_j,
    log E_p[g] = logsumexp_k (log pi_k + log Z_k),

computed in log space. Labels are kept; since the tilt acts per component, the class-c part
of p_g is the tilt of p(x | c): p_g(x | c) = p(x | c) g(x) / E_{p(.|c)}[g] for every class.
The result is a :class:`GaussianMixture`, so its noised scores, posteriors and densities at
every level are the family's own.

**Kernel mixtures.** An :class:`EmpiricalMixture` with bandwidth h > 0 is the Gaussian mixture
(1/K) sum_j N(m_j, h^2 I), so its tilt is the one above with S_j = h^2 I for every point: point j
becomes N(m_j', S') with S' = (h^{-2} I + A)^{-1} (the same for every point), mu_j' =
m_j + S' beta_j and weight proportional to Z_j; the result is a :class:`GaussianMixture` with one
component per point, computed by the same code (the points are passed to it as a Gaussian
mixture). It exists iff h^{-2} I + A is positive definite, i.e. lambda_min(A) > -1/h^2. With
h = 0 the law is a sum of point masses: its tilt only reweights the points (not a Gaussian
mixture, so :func:`exponential_tilt` refuses it), and E_p[g] = (1/K) sum_j g(m_j) exactly
(:func:`log_normaliser` accepts it).

**Classifier-free guidance** is the weight g = 1/p(c | x) on the original p(x | c): by Bayes
p(x | c) / p(c | x) = p(x) / p(c), so the reweighted density is p(x) itself and
E_{p(.|c)}[g] = 1/p(c) (:func:`class_reweighting`, :func:`reward_from_class`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._validation import as_float64, check_points
from .empirical import EmpiricalMixture
from .gaussian_mixture import GaussianMixture

__all__ = [
    "exponential_tilt",
    "exponential_log_weight",
    "log_normaliser",
    "class_reweighting",
    "reward_from_class",
]

_ASYMMETRY_TOLERANCE = 1e-8  # relative max |A - A^T| accepted as rounding
_CONDITION_LIMIT = 10 * torch.finfo(torch.float64).eps  # smallest/largest eigenvalue of M, per d


def _check_mixture(mixture, *, point_masses: bool = False):
    """A GaussianMixture, or an EmpiricalMixture with h > 0 (or h >= 0 with ``point_masses``)
    as the Gaussian mixture it is (one component N(m_j, h^2 I) per point); ValueError naming
    ``mixture`` otherwise. An EmpiricalMixture with h = 0 is returned as it is."""
    if isinstance(mixture, GaussianMixture):
        return mixture
    if isinstance(mixture, EmpiricalMixture):
        if mixture.bandwidth > 0:
            return _kernel_components(mixture)
        if point_masses:
            return mixture
        raise ValueError("mixture: an EmpiricalMixture with bandwidth 0 is a sum of point "
                         "masses; its reweighting only changes the points' weights and is not "
                         "a Gaussian mixture (give bandwidth > 0)")
    raise ValueError(f"mixture: expected a GaussianMixture or an EmpiricalMixture, got "
                     f"{type(mixture).__name__}")


def _check_gaussian(mixture) -> GaussianMixture:
    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture: expected a GaussianMixture, got {type(mixture).__name__}")
    return mixture


def _kernel_components(mixture: EmpiricalMixture) -> GaussianMixture:
    """The kernel mixture (1/K) sum_j N(m_j, h^2 I) as a GaussianMixture (isotropic)."""
    variances = torch.full((mixture.num_components,), mixture.bandwidth**2,
                           dtype=torch.float64)  # [K]
    return GaussianMixture(means=mixture.points, covariances=variances,
                           weights=mixture.weights, labels=mixture.labels)


def _check_class(mixture: GaussianMixture, c) -> int:
    """One class of ``mixture`` as an int; ValueError naming c otherwise."""
    resolved = mixture.resolve_class(c, 1) if c is not None else None
    if not isinstance(resolved, int):
        raise ValueError(f"c: expected one class (an int in 0..{mixture.num_classes - 1}), "
                         f"got {c!r}")
    return resolved


def _parse_weight(dim: int, b, A, m) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                             torch.Tensor]:
    """(b [d] or None, A [d, d] or None, m [d]) as float64, checked; m defaults to 0."""
    if b is not None:
        b = as_float64(b, "b")
        if b.shape != (dim,):
            raise ValueError(f"b: expected shape [{dim}], got {tuple(b.shape)}")
        if not torch.isfinite(b).all():
            raise ValueError("b: expected finite values")
    if m is not None:
        if A is None:
            raise ValueError("m: the centre of the quadratic term was given without A; "
                             "pass A too (or drop m)")
        m = as_float64(m, "m")
        if m.shape != (dim,):
            raise ValueError(f"m: expected shape [{dim}], got {tuple(m.shape)}")
        if not torch.isfinite(m).all():
            raise ValueError("m: expected finite values")
    else:
        m = torch.zeros(dim, dtype=torch.float64)  # [d]
    if A is not None:
        A = as_float64(A, "A")
        if not torch.isfinite(A).all():
            raise ValueError("A: expected finite values")
        if A.ndim == 0:
            A = A * torch.eye(dim, dtype=torch.float64)  # [d, d]
        elif A.shape == (dim,):
            A = torch.diag(A)  # [d, d]
        elif A.shape == (dim, dim):
            asym = float((A - A.T).abs().max())
            scale = max(float(A.abs().max()), 1e-300)
            if asym > _ASYMMETRY_TOLERANCE * scale:
                raise ValueError(f"A: expected a symmetric matrix (max |A - A^T| = {asym:.3g})")
            A = 0.5 * (A + A.T)  # [d, d]
        else:
            raise ValueError(f"A: expected a scalar, shape [{dim}] (diagonal) or [{dim}, {dim}], "
                             f"got {tuple(A.shape)}")
    return b, A, m


def _tilted_components(mixture: GaussianMixture, b, A, m):
    """Per-component (log Z_k [K], mu_k' [K, d], S_k' [K, d, d]) of the tilt (module docstring)."""
    K, d = mixture.num_components, mixture.dim
    mu = mixture.means  # [K, d]
    root = mixture.eigvecs * mixture.eigvals.sqrt()[:, None, :]  # W = U diag(l)^1/2, [K, d, d]
    beta = torch.zeros(K, d, dtype=torch.float64) if b is None else b.expand(K, d).clone()
    log_g_mu = torch.zeros(K, dtype=torch.float64) if b is None else mu @ b  # [K]
    if A is None:  # S' = S, mu' = mu + S b, log Z = b^T mu + 1/2 b^T S b
        projected = torch.einsum("kji,kj->ki", root, beta)  # W^T beta, [K, d]
        log_z = log_g_mu + 0.5 * (projected**2).sum(1)  # [K]
        shifts = torch.einsum("kij,kj->ki", root, projected)  # S beta, [K, d]
        return log_z, mu + shifts, mixture.covariances.clone()
    offset = mu - m  # mu - m, [K, d]
    beta = beta - offset @ A  # b - A (mu - m) (A symmetric), [K, d]
    log_g_mu = log_g_mu - 0.5 * ((offset @ A) * offset).sum(1)  # [K]
    inner = torch.eye(d, dtype=torch.float64) + root.transpose(1, 2) @ A @ root  # M, [K, d, d]
    inner = 0.5 * (inner + inner.transpose(1, 2))
    values, vectors = torch.linalg.eigh(inner)  # [K, d], [K, d, d]
    smallest, largest = values.amin(1), values.abs().amax(1)  # [K], [K]
    bad = (smallest <= largest * d * _CONDITION_LIMIT).nonzero().flatten()
    if bad.numel():
        k = int(bad[0])
        raise ValueError(
            f"A: covariances[{k}]^-1 + A must be positive definite for every component (else "
            f"the weight g is not integrable against it); for component {k} the smallest "
            f"eigenvalue of I + S^1/2 A S^1/2 is {float(smallest[k]):.3g} (largest "
            f"{float(values[k].max()):.3g})")
    # S' = W V diag(1/values) V^T W^T; beta^T S' beta = |diag(values)^-1/2 V^T W^T beta|^2
    factor = root @ vectors / values.sqrt()[:, None, :]  # W V diag(values)^-1/2, [K, d, d]
    projected = torch.einsum("kji,kj->ki", factor, beta)  # [K, d]
    log_z = log_g_mu + 0.5 * (projected**2).sum(1) - 0.5 * torch.log(values).sum(1)  # [K]
    means = mu + torch.einsum("kij,kj->ki", factor, projected)  # mu + S' beta, [K, d]
    covariances = factor @ factor.transpose(1, 2)  # S', [K, d, d]
    return log_z, means, 0.5 * (covariances + covariances.transpose(1, 2))


def exponential_tilt(mixture: GaussianMixture | EmpiricalMixture, *, b=None, A=None, m=None
                     ) -> GaussianMixture:
    r"""The exact reweighted mixture p_g(x) = p(x) g(x) / E_p[g].

    g(x) = exp(b^T x - 1/2 (x - m)^T A (x - m)); each component N(mu_k, S_k) becomes
    N(mu_k', S_k') with S_k' = (S_k^{-1} + A)^{-1}, mu_k' = S_k'(S_k^{-1} mu_k + b + A m), and
    its weight is multiplied by Z_k = int N(x; mu_k, S_k) g(x) dx and renormalised (module
    docstring). Labels are kept, so the class-c part of the result is the tilt of p(x | c).
    A kernel mixture (:class:`EmpiricalMixture`, bandwidth h > 0) is the Gaussian mixture of its
    points with S_k = h^2 I: its tilt has one component per point, covariance
    (h^{-2} I + A)^{-1}.

    Args:
        mixture: the original :class:`GaussianMixture` p, or an :class:`EmpiricalMixture` with
            bandwidth h > 0.
        b: ``[d]`` linear coefficient (None: 0).
        A: the quadratic coefficient, symmetric: a scalar (A I), ``[d]`` (diagonal) or
            ``[d, d]`` (None: 0). It may be indefinite, but every S_k^{-1} + A must be positive
            definite.
        m: ``[d]`` centre of the quadratic term (None: 0); only with A.

    Returns:
        A :class:`GaussianMixture` with full covariances ``[K, d, d]``, the same labels, and
        weights pi_k Z_k / sum_j pi_j Z_j (formed as exp(log pi_k + log Z_k - max), so a
        component more than ~745 below the largest in log-weight gets weight 0). With neither
        b nor A (g = 1) it is p again.

    Raises:
        ValueError: naming the parameter: a wrong shape or non-finite value, an asymmetric A,
            m without A, or an A for which some S_k^{-1} + A is not positive definite
            (the message names the component); ``mixture`` for another family or a kernel
            mixture of bandwidth 0.

    Example:
        >>> gm = GaussianMixture(means=[[-1.0], [1.0]], covariances=[1.0, 1.0],
        ...                      weights=[0.5, 0.5], labels=[0, 1])
        >>> tilted = exponential_tilt(gm, b=[1.0])  # N(mu + b, 1), weights prop. to e^{b mu}
        >>> tilted.means.flatten().tolist(), round(float(tilted.weights[1]), 6)
        ([0.0, 2.0], 0.880797)
        >>> from guidelab.distributions import EmpiricalMixture
        >>> kernel = EmpiricalMixture(points=[[0.0], [1.0]], labels=[0, 0], bandwidth=0.5)
        >>> tilted = exponential_tilt(kernel, A=4.0)  # covariance 1 / (1/h^2 + A) per point
        >>> [round(v, 12) for v in tilted.covariances.flatten().tolist()]
        [0.125, 0.125]
    """
    mixture = _check_mixture(mixture)
    b, A, m = _parse_weight(mixture.dim, b, A, m)
    if b is None and A is None:
        log_z = torch.zeros(mixture.num_components, dtype=torch.float64)
        means, covariances = mixture.means.clone(), mixture.covariances.clone()
    else:
        log_z, means, covariances = _tilted_components(mixture, b, A, m)
    log_weights = mixture.log_weights + log_z  # [K]
    if not torch.isfinite(log_weights.max()):
        raise ValueError("b, A: the tilted weights overflow float64 (log pi_k + log Z_k is "
                         "not finite); the weight g is too large over the mixture")
    weights = torch.exp(log_weights - log_weights.max())  # [K], largest 1
    return GaussianMixture(means=means, covariances=covariances, weights=weights,
                           labels=mixture.labels.clone())


def log_normaliser(mixture: GaussianMixture | EmpiricalMixture, *, b=None, A=None, m=None,
                   c: int | None = None) -> float:
    r"""log E_p[g] = log int p(x) g(x) dx, or log E_{p(.|c)}[g] for a class c.

    Equal to logsumexp_k (log pi_k + log Z_k) (over class c's components, minus log p(c)), with
    g and its arguments as in :func:`exponential_tilt`. For a kernel mixture of bandwidth 0
    (point masses m_j) Z_j = g(m_j): E_p[g] is the mean of g over the points.

    Args:
        mixture: the original :class:`GaussianMixture` p, or an :class:`EmpiricalMixture`
            (any bandwidth h >= 0).
        b, A, m: the weight g, as in :func:`exponential_tilt`.
        c: optional class; None for the whole mixture.

    Returns:
        The log-normaliser, a Python float.

    Example:
        >>> gm = GaussianMixture(means=[[0.0]], covariances=[2.0], weights=[1.0], labels=[0])
        >>> round(log_normaliser(gm, b=[1.0]), 12)  # E[e^X] = e^{mu + S / 2} for X ~ N(mu, S)
        1.0
    """
    mixture = _check_mixture(mixture, point_masses=True)
    b, A, m = _parse_weight(mixture.dim, b, A, m)
    if b is None and A is None:
        log_z = torch.zeros(mixture.num_components, dtype=torch.float64)
    elif isinstance(mixture, EmpiricalMixture):  # h = 0: Z_j = g(m_j)
        log_z = exponential_log_weight(mixture.points, b=b, A=A,
                                       m=m if A is not None else None)  # [K]
    else:
        log_z = _tilted_components(mixture, b, A, m)[0]  # [K]
    log_joint = mixture.log_weights + log_z  # [K]
    if c is None:
        return float(torch.logsumexp(log_joint, 0))
    c = _check_class(mixture, c)
    index = mixture.class_components(c)
    return float(torch.logsumexp(log_joint[index], 0) - torch.log(mixture.class_prior[c]))


def exponential_log_weight(x: torch.Tensor, *, b=None, A=None, m=None) -> torch.Tensor:
    r"""log g(x) = b^T x - 1/2 (x - m)^T A (x - m) for points ``[N, d]``.

    Args:
        x: points ``[N, d]``, floating point (computed in float64).
        b, A, m: the weight g, as in :func:`exponential_tilt` (d is read from x).

    Returns:
        ``[N]`` float64 log-weights, on x's device.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x: expected a tensor of shape [N, d], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    x = check_points(x, x.shape[1]).to(torch.float64)  # [N, d]
    b, A, m = _parse_weight(x.shape[1], b, A, m)
    out = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)  # [N]
    if b is not None:
        out = out + x @ b.to(x.device)
    if A is not None:
        offset = x - m.to(x.device)  # [N, d]
        out = out - 0.5 * ((offset @ A.to(x.device)) * offset).sum(1)
    return out


def class_reweighting(mixture: GaussianMixture, c: int) -> GaussianMixture:
    r"""The reweighting of p(x | c) by g(x) = 1/p(c | x): the full mixture p(x), exactly.

    By Bayes, p(c | x) = p(c) p(x | c) / p(x), so

        p(x | c) g(x) = p(x | c) / p(c | x) = p(x) / p(c),

    and normalising (E_{p(.|c)}[g] = 1/p(c), Gaussians having full support) leaves p(x).
    Reward guidance with this g, w (s(x | c) - s(x)), is classifier-free guidance.

    Args:
        mixture: the :class:`GaussianMixture` whose class c is the original distribution.
        c: the class, an int in 0..C-1.

    Returns:
        ``mixture`` itself (the reweighted distribution is the unconditional p).
    """
    mixture = _check_gaussian(mixture)
    _check_class(mixture, c)
    return mixture


def reward_from_class(mixture: GaussianMixture, c: int
                      ) -> Callable[..., torch.Tensor]:
    r"""The weight g = 1/p(c | x) of :func:`class_reweighting`, as a log-weight function.

    Its reward is r = 1/g = p(c | x); under p(x | c), E[g] = 1/p(c) (docs/maths.md, section 2).

    Args:
        mixture: the :class:`GaussianMixture`.
        c: the class, an int in 0..C-1.

    Returns:
        ``log_g(x, alpha=1.0, sigma=0.0) -> [N]``: -log p_t(c | x) at the level (alpha, sigma)
        (the clean posterior by default), in x's dtype.
    """
    mixture = _check_gaussian(mixture)
    c = _check_class(mixture, c)

    def log_g(x: torch.Tensor, alpha=1.0, sigma=0.0) -> torch.Tensor:
        return -mixture.log_class_posterior(x, alpha, sigma)[:, c]  # [N]

    log_g.__doc__ = f"-log p_t({c} | x): the log-weight g = 1/p(c|x) of class {c}; [N]."
    return log_g

