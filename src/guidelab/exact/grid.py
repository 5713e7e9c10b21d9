r"""Exact output densities of samplers in 1-D and 2-D by density propagation on a grid.

Every stochastic sampler of guidelab takes steps

    x' = c_x x + c_s s(x; alpha, sigma) + n Z,        Z ~ N(0, I),                     (1)

(DDPM-type, ancestral DDPM, DDIM with eta > 0, Euler–Maruyama), and the exact reverse kernel of a
Gaussian mixture is a mixture of such Gaussian steps over its components, weighted by the
responsibilities. Given the exact (guided) score, the law of Y_t is propagated on a regular grid
from the start law (N(0, I), or the exact p_T(x|c) for the exact kernel) to t = 0, and from the
output law we read Q = E[1/p(c|Y)], E[p(c|Y)], the differential entropy -E[log p_Y(Y)] and
KL(p_Y || p(.|c)) = E[log p_Y(Y) - log p(Y|c)], with the clean class posterior of the family,
and, given a weight g (reward guidance's), E[g(Y)] = sum_j m_j g(y_j).

**Why not an FFT.** 1/p(c|x) reaches 1e13 where p(x|c) is 1e-14 (the heavy-tailed example), so
the output density must be accurate *relative to itself* far in its tails; an FFT convolution
has absolute round-off 1e-16 times the peak everywhere and loses those tails. Every operation
here adds non-negative terms, so each grid value keeps its relative precision.

**A noisy step** (1) with mass m_j = p(x_j) h^d at node x_j (trapezoid weights):

1. *push*: move each node's mass to its mean m(x_j) = c_x x_j + c_s s(x_j);
2. *deposit*: spread it over the five nodes -2..2 around its nearest node along each axis
   (offset f in [-1/2, 1/2] grid units), with the weights that give it the mass, the mean,
   a variance V h^2 and the third and fourth moments of a Gaussian of that variance:
   w_j = E[L_j(K)] for the Lagrange basis L_j of the nodes and K with raw moments
   f, V + f^2, f^3 + 3 f V, f^4 + 6 f^2 V + 3 V^2 (:func:`deposit`). They are non-negative for
   every f when 0.4 <= V <= 1 (3/4 is used). Linear "cloud-in-cell" weights would add a
   variance f (1 - f) h^2 that depends on f; over a thousand steps it accumulates into a
   numerical diffusion that ruins the tails;
3. *convolve* with a discrete Gaussian of variance n^2 - (3/4) h^2 along each axis (direct sums
   of non-negative terms, done as one dense matrix product per axis, :func:`convolve_axis`),
   the discrete kernel's variance matched exactly. Every source's step kernel then has the
   mass, mean, covariance and the third and fourth cumulants of N(m(x_j), n^2 I): the first
   error terms are of order h^5 (the refinement shows about h^6 on the 1-D examples).

Steps whose noise is below the grid (n^2 < 1.75 h^2) are *lumped*: their maps are applied to
the moving node positions and their variances accumulated, carried through the later maps of
the block by the block's Jacobian (finite differences of the moving nodes, per axis), until
the variance reaches 1.75 h^2; one deposit and convolution then flushes them (the lumped noise
enters the later scores at their mean: an error of order beta^2 s'' per step). A source whose
requested variance the deposit cannot give exactly (outside [0.4, 1] h^2 after the common
convolution, e.g. a last flush below 0.4 h^2, which falls back to three nodes with variance at
least |f| - f^2) adds the difference to ``unresolved_variance``.

**Deterministic tails.** Steps after the last noisy one (the DDPM-type sampler's last step,
DDIM with eta = 0, the probability-flow ODE: all of it) are not deposited: the node positions
are mapped on, and the change of variables log p(y) = log p(x) - log|det dy/dx| (the Jacobian of
each step from the closed-form guided Hessian, :mod:`guidelab.exact.fields`) gives the output
density at the mapped points. Expectations are then trapezoid sums over the last grid:
E[f(Y)] = sum_j m_j f(y_j).

**Errors.** The grid spans the start law and the data (``extent``), grows when mass leaves it,
and the result is computed at spacing h and h/2: the reported ``quad_error`` is the difference
(the values are those at h/2). Mass that leaves the grid is counted in ``mass_lost`` and not
renormalised away (Q omits it, so Q is then low by at least that mass).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..distributions import GaussianMixture, LabelledMixture
from ..guidance import ClassifierFreeGuidance
from ..samplers.base import discrete_levels
from ..samplers.exact import exact_reverse_coefficients
from ..samplers.registry import linear_coefficients
from ..schedules import DiscreteSchedule, VPContinuous
from .fields import jacobian_function

__all__ = ["Grid", "GridState", "GridResult", "deposit", "gaussian_kernel", "convolve_axis",
           "propagate_linear", "propagate_dense", "propagate_exact_kernel", "propagate_heun",
           "grid_functionals", "default_grid", "grid_reference", "GRID_SAMPLERS",
           "standard_normal_log_density"]

GRID_SAMPLERS = ("ddpm_type", "ddpm_ancestral", "ddim", "euler_maruyama", "ode_euler",
                 "ode_heun", "exact_reverse")
"""Samplers :func:`grid_reference` propagates."""

LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------- the grid


@dataclass(frozen=True)
class Grid:
    """A regular grid on the box prod_a [lo_a, hi_a] with ``points[a]`` nodes per axis.

    Nodes are ordered row-major (the last axis fastest), so a flat ``[G]`` array reshapes to
    ``shape``.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    points: tuple[int, ...]

    def __post_init__(self):
        if not (len(self.lo) == len(self.hi) == len(self.points) >= 1):
            raise ValueError("grid: lo, hi and points need one entry per axis")
        for lo, hi, n in zip(self.lo, self.hi, self.points, strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ValueError(f"extent: expected finite lo < hi, got ({lo}, {hi})")
            if isinstance(n, bool) or not isinstance(n, int) or n < 3:
                raise ValueError(f"points: expected an integer >= 3 per axis, got {n!r}")

    @property
    def dim(self) -> int:
        return len(self.points)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.points)

    @property
    def size(self) -> int:
        return math.prod(self.points)

    @property
    def spacing(self) -> tuple[float, ...]:
        """h_a = (hi_a - lo_a) / (points_a - 1)."""
        return tuple((hi - lo) / (n - 1) for lo, hi, n in zip(self.lo, self.hi, self.points,
                                                                strict=True))

    @property
    def cell(self) -> float:
        """prod_a h_a, the trapezoid weight of a node."""
        return math.prod(self.spacing)

    def axes(self, device=None) -> list[torch.Tensor]:
        """The node coordinates of each axis, ``[points_a]`` float64."""
        return [torch.linspace(lo, hi, n, dtype=torch.float64, device=device)
                for lo, hi, n in zip(self.lo, self.hi, self.points, strict=True)]

    def nodes(self, device=None) -> torch.Tensor:
        """All nodes ``[G, d]`` float64, row-major."""
        mesh = torch.meshgrid(*self.axes(device), indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=1)  # [G, d]

    def refined(self) -> Grid:
        """The same box at half the spacing (2 points - 1 nodes per axis, nested)."""
        return Grid(self.lo, self.hi, tuple(2 * n - 1 for n in self.points))

    def grown(self, factor: float) -> Grid:
        """The box widened by ``factor`` about its centre at (about) the same spacing."""
        lo, hi, points = [], [], []
        for a, (l0, h0) in enumerate(zip(self.lo, self.hi, strict=True)):
            centre, half = (l0 + h0) / 2, (h0 - l0) / 2 * factor
            cells = math.ceil(2 * half / self.spacing[a])
            lo.append(centre - cells * self.spacing[a] / 2)
            hi.append(centre + cells * self.spacing[a] / 2)
            points.append(cells + 1)
        return Grid(tuple(lo), tuple(hi), tuple(points))


# --------------------------------------------------------------------------- deposit


def _five_point(f: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Weights ``[..., 5]`` on nodes -2..2 (offset f from node 0) with the moments of a Gaussian
    of variance v up to the fourth: w_j = E[L_j(K)] for the Lagrange basis L_j of the nodes,
    from the raw moments M1 = f, M2 = v + f^2, M3 = f^3 + 3 f v, M4 = f^4 + 6 f^2 v + 3 v^2."""
    f2 = f * f
    m1, m2 = f, v + f2
    m3 = f * (f2 + 3 * v)
    m4 = f2 * (f2 + 6 * v) + 3 * v * v
    return torch.stack([(m4 - 2 * m3 - m2 + 2 * m1) / 24,
                        -(m4 - m3 - 4 * m2 + 4 * m1) / 6,
                        (m4 - 5 * m2 + 4) / 4,
                        -(m4 + m3 - 4 * m2 - 4 * m1) / 6,
                        (m4 + 2 * m3 - m2 - 2 * m1) / 24], dim=-1)


FIVE_POINT_RANGE = (0.4, 1.0)
"""Variances (grid units squared) for which the five-point weights are non-negative at every
offset |f| <= 1/2 (they are for about 0.35 .. 1.05)."""


def deposit(masses: torch.Tensor, positions: torch.Tensor, grid: Grid,
            variance: torch.Tensor | float) -> tuple[torch.Tensor, float, float]:
    r"""Spread point masses onto the grid with moment-matching weights.

    Along each axis a mass at offset f from its nearest node (grid units, |f| <= 1/2) is spread
    over the nodes -2..2 with the weights that give it the mass, mean, variance V h_a^2 and the
    third and fourth moments of a Gaussian (:func:`_five_point`; non-negative for V in
    :data:`FIVE_POINT_RANGE`, V is clamped there). A requested V below that range uses the
    nodes -1, 0, 1 with weights (f^2 + V - f)/2, 1 - f^2 - V, (f^2 + V + f)/2 (mass, mean and
    variance exact; non-negative for V >= |f| - f^2, clamped there). The axes' weights
    multiply. Mass, mean and variance are conserved whatever the position, so repeated
    deposits do not diffuse (linear "cloud-in-cell" weights add f (1 - f) h^2 each time).

    Args:
        masses: ``[M]`` non-negative masses.
        positions: ``[M, d]`` points.
        grid: the :class:`Grid`.
        variance: V per axis in grid units squared: a float, ``[d]`` or ``[M, d]``.

    Returns:
        (grid masses ``[G]``, mass that fell outside the grid, mass-weighted variance error
        sum_j m_j sum_a |V_ja - requested_ja| h_a^2 from the clamping).
    """
    device, d = positions.device, grid.dim
    lo = torch.tensor(grid.lo, dtype=torch.float64, device=device)
    spacing = torch.tensor(grid.spacing, dtype=torch.float64, device=device)
    sizes = torch.tensor(grid.points, dtype=torch.float64, device=device)
    u = (positions - lo) / spacing  # grid coordinates, [M, d]
    finite = torch.isfinite(u).all(dim=1) & (u > -3).all(dim=1) & (u < sizes + 2).all(dim=1)
    lost = float(masses[~finite].sum()) if not bool(finite.all()) else 0.0
    masses, u = masses[finite], u[finite]  # [M'], [M', d]
    nearest = torch.round(u)  # [M', d]
    f = u - nearest  # [M', d], |f| <= 1/2
    requested = torch.as_tensor(variance, dtype=torch.float64, device=device)
    requested = (requested[finite] if requested.ndim == 2 else requested).expand_as(f)
    five = requested >= FIVE_POINT_RANGE[0]  # [M', d]
    v = torch.where(five, requested.clamp(*FIVE_POINT_RANGE),
                    torch.maximum(requested, f.abs() - f * f))  # [M', d]
    error = float((masses * ((v - requested).abs() * spacing**2).sum(dim=1)).sum())
    weights = _five_point(f, v)  # [M', d, 5]
    if not bool(five.all()):
        ff = f * f + v
        three = torch.stack([torch.zeros_like(f), (ff - f) / 2, 1 - ff, (ff + f) / 2,
                             torch.zeros_like(f)], dim=-1)  # [M', d, 5]
        weights = torch.where(five[..., None], weights, three)
    index = nearest.to(torch.int64)  # [M', d]
    strides = [math.prod(grid.points[a + 1:]) for a in range(d)]
    base = sum(index[:, a] * strides[a] for a in range(d))  # flat index of the nearest node
    offsets = torch.zeros(1, dtype=torch.int64, device=device)
    total = masses[:, None]  # [M', 1]
    taps = torch.arange(-2, 3, device=device)
    for a in range(d):  # axis 0 slowest, like the flat index
        offsets = (offsets[:, None] + taps[None, :] * strides[a]).reshape(-1)  # [5^(a+1)]
        total = (total[:, :, None] * weights[:, a, None, :]).reshape(masses.shape[0], -1)
    flat = base[:, None] + offsets[None, :]  # [M', 5^d]
    sizes_i = torch.tensor(grid.points, dtype=torch.int64, device=device)
    edge = ((index < 2) | (index > sizes_i - 3)).any(dim=1)  # [M']
    if bool(edge.any()):
        rows = edge.nonzero().flatten()
        valid = torch.ones(rows.numel(), 1, dtype=torch.bool, device=device)
        for a in range(d):
            node = index[rows, a, None] + taps  # [E, 5]
            inside = (node >= 0) & (node < grid.points[a])
            valid = (valid[:, :, None] & inside[:, None, :]).reshape(rows.numel(), -1)
        lost += float(total[rows].masked_fill(valid, 0.0).sum())
        total[rows] = total[rows].masked_fill(~valid, 0.0)
        flat[rows] = flat[rows].masked_fill(~valid, 0)
    out = torch.bincount(flat.reshape(-1), weights=total.reshape(-1), minlength=grid.size)
    return out, lost, error


# --------------------------------------------------------------------------- convolution


def gaussian_kernel(variance: float, truncate: float = 12.0) -> torch.Tensor:
    r"""A discrete Gaussian kernel ``[2R + 1]`` (float64, CPU, sums to 1) of variance exactly
    ``variance`` (grid units squared), R = ceil(truncate sqrt(variance)).

    Weights exp(-i^2 / (2 tau^2)) / Z. By Poisson summation the sampled Gaussian's variance is
    tau^2 (1 - O(tau^2 exp(-2 pi^2 tau^2))), a relative 1e-15 at tau^2 = 2, so for
    variance >= 2 tau^2 = variance; below that tau^2 is solved for (bisection on the sampled
    variance, which increases with tau^2).

    The truncation at R costs nothing as long as the law being convolved changes by much less
    than exp(truncate^2 / 2) over R: its log-slope L must satisfy L sqrt(variance) h << 12
    (about 0.5 at most in the samplers' late steps, where the steps are small).
    """
    if not (math.isfinite(variance) and variance >= 0):
        raise ValueError(f"variance: expected a finite non-negative variance, got {variance}")
    if variance == 0:
        return torch.ones(1, dtype=torch.float64)
    radius = max(1, math.ceil(truncate * math.sqrt(variance)))
    squares = np.arange(-radius, radius + 1, dtype=np.float64) ** 2

    def kernel(tau2: float) -> np.ndarray:
        k = np.exp(-squares / (2 * tau2))
        return k / k.sum()

    tau2 = variance
    if variance < 2:
        low, high = 1e-3 * variance, variance + 1
        while high - low > 1e-15 * high:
            mid = 0.5 * (low + high)
            if float(kernel(mid) @ squares) < variance:
                low = mid
            else:
                high = mid
        tau2 = 0.5 * (low + high)
    return torch.from_numpy(kernel(tau2))


def convolve_axis(values: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    r"""out[i] = sum_j values[j] kernel[i - j + R] along ``axis`` (zero outside the grid).

    A direct sum of non-negative terms done as one dense matrix product: the axis is cut into
    blocks of B nodes; output block I needs the input blocks I - m .. I + m (m = ceil(R / B)),
    a window of P = (2m + 1) B values, and

        out[I B + a] = sum_p window_I[P - 1 - p'] ... = sum_{p'} reversed_window_I[p'] H[p', a],

    with H[p', a] = kernel[m B + R + a - P + 1 + p'] a Hankel matrix (a zero-copy strided view
    of the zero-padded kernel). All windows are one ``[rows, blocks, P] @ [P, B]`` product:
    (2m + 1) B multiply-adds per node against 2R + 1 for the plain sum, at matrix-product speed.

    Args:
        values: grid values of any shape; kernel: ``[2R + 1]``; axis: the axis to convolve.
    """
    radius = (kernel.numel() - 1) // 2
    if radius == 0:
        return values * kernel[0]
    x = values.movedim(axis, -1)  # [..., L]
    length = x.shape[-1]
    if radius >= length:  # the kernel never reaches further than the grid
        kernel, radius = kernel[radius - length + 1: radius + length], length - 1
    block = min(128, max(16, 1 << max(0, radius // 4 - 1).bit_length()))
    blocks = -(-length // block)
    reach = -(-radius // block)
    width = (2 * reach + 1) * block  # P
    lead = x.shape[:-1]
    padded = torch.nn.functional.pad(x.reshape(-1, length),
                                     (reach * block, blocks * block - length + reach * block))
    windows = padded.unfold(-1, width, block).flip(-1)  # reversed windows, [rows, nb, P]
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    margin = (reach + 1) * block
    kpad = torch.nn.functional.pad(kernel, (margin, margin))  # [2R + 1 + 2 margin]
    offset = margin + reach * block + radius - width + 1  # index of H[0, 0] in kpad
    hankel = kpad.as_strided((width, block), (1, 1), kpad.storage_offset() + offset)  # [P, B]
    out = windows @ hankel  # [rows, nb, B]
    out = out.reshape(-1, blocks * block)[:, :length].reshape(*lead, length)
    return out.movedim(-1, axis)


def _smooth(masses: torch.Tensor, grid: Grid, variances: Sequence[float],
            truncate: float) -> torch.Tensor:
    """Convolve flat grid masses with per-axis discrete Gaussians (grid units squared)."""
    values = masses.view(grid.shape)
    for a, variance in enumerate(variances):
        if variance > 0:
            values = convolve_axis(values, gaussian_kernel(variance, truncate), a)
    return values.reshape(-1)


def _noisy_update(masses, positions, grid: Grid, variance, truncate: float):
    """Deposit at ``positions`` and convolve so that each source gets the added variance
    ``variance`` (data units squared): a list per axis, or ``[M, d]`` per source.

    Per axis, with c the sources' common variance (grid units; the median when they
    differ): if c > 1 a discrete Gaussian convolution of variance c - 3/4 and deposits of
    variance 3/4 plus each source's own excess over c; else deposits of the whole variance.
    Returns (masses ``[G]``, lost mass, variance error of the deposit's clamping).
    """
    spacing = torch.tensor(grid.spacing, dtype=torch.float64, device=positions.device)
    v = torch.as_tensor(variance, dtype=torch.float64, device=positions.device) / spacing**2
    if v.ndim == 2 and v.shape[0] > 0:
        common = torch.quantile(v[::max(1, v.shape[0] // 4096)].contiguous(), 0.5, dim=0)
    else:
        common = v.reshape(-1, grid.dim)[0] if v.numel() else torch.zeros(grid.dim)
    conv_v = [float(cv) - 0.75 if float(cv) > 1.0 else 0.0 for cv in common]
    deposit_v = v - torch.tensor(conv_v, dtype=torch.float64, device=positions.device)
    out, lost, error = deposit(masses, positions, grid, deposit_v)
    deposited = float(out.sum())
    out = _smooth(out, grid, conv_v, truncate)
    lost += max(0.0, deposited - float(out.sum()))
    return out, lost, error


def _axis_derivatives(positions: torch.Tensor, grid: Grid) -> torch.Tensor:
    """d positions_a / d node_a by central differences on the grid: ``[G, d]``."""
    values = positions.view(*grid.shape, grid.dim)
    columns = [torch.gradient(values[..., a], spacing=grid.spacing[a], dim=a)[0].reshape(-1)
               for a in range(grid.dim)]
    return torch.stack(columns, dim=1)  # [G, d]


# --------------------------------------------------------------------------- state


@dataclass
class GridState:
    """The propagated law: masses m_j on the grid nodes, carried to ``positions`` by the
    deterministic tail, with log|det| of that tail's Jacobian.

    Attributes:
        grid: the :class:`Grid`.
        masses: ``[G]`` masses (density times cell) at the last noisy step.
        positions: ``[G, d]`` where the deterministic tail took each node (the nodes when there
            is no tail).
        log_jacobian: ``[G]`` log|det d positions / d nodes| (zeros without a tail).
        mass_lost: mass that left the grid (or was never on it: the start law outside it).
        unresolved_variance: mass-weighted variance added beyond the steps' own (sub-grid
            noise flushed with the deposit's minimum variance), data units squared.
        folded: nodes where a tail step's Jacobian determinant was <= 0 (the map folds there).
        score_evaluations: score calls made.
    """

    grid: Grid
    masses: torch.Tensor
    positions: torch.Tensor
    log_jacobian: torch.Tensor
    mass_lost: float = 0.0
    unresolved_variance: float = 0.0
    folded: int = 0
    score_evaluations: int = 0

    @property
    def has_tail(self) -> bool:
        return bool((self.log_jacobian != 0).any()) or not torch.equal(
            self.positions, self.grid.nodes(self.positions.device))

    def log_density(self) -> torch.Tensor:
        """log p_Y at ``positions``: log(m_j / cell) - log|det|; ``[G]`` (-inf where m_j = 0)."""
        return torch.log(self.masses / self.grid.cell) - self.log_jacobian

    def density(self) -> torch.Tensor:
        """The output density on the grid nodes, ``grid.shape`` (float64).

        Without a deterministic tail these are the propagated values themselves; with one, the
        tail's masses are deposited at their end points (variance h^2/4 per axis: a picture of
        the law, not the values the functionals use).
        """
        if not self.has_tail:
            return (self.masses / self.grid.cell).view(self.grid.shape)
        out, _, _ = deposit(self.masses, self.positions, self.grid, 0.75)
        return (out / self.grid.cell).view(self.grid.shape)


def _start_masses(grid: Grid, start_log_density: Callable, device) -> tuple[torch.Tensor, float]:
    nodes = grid.nodes(device)  # [G, d]
    log_p = start_log_density(nodes).to(torch.float64)  # [G]
    masses = torch.exp(log_p) * grid.cell  # [G]
    if not torch.isfinite(masses).all():
        raise FloatingPointError("start: the start log-density is NaN or +inf on the grid")
    return masses, max(0.0, 1.0 - float(masses.sum()))


def standard_normal_log_density(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) ``[N]`` of points ``[N, d]``."""
    return -0.5 * (x * x).sum(dim=1) - 0.5 * x.shape[1] * LOG_2PI


def _tail_log_det(jac: torch.Tensor, coef_x: float, coef_s: float) -> torch.Tensor:
    """log det(coef_x I + coef_s J) ``[N]``, NaN where the determinant is <= 0."""
    d = jac.shape[1]
    step = coef_s * jac
    step.diagonal(dim1=1, dim2=2).add_(coef_x)  # [N, d, d]
    det = torch.linalg.det(step) if d > 2 else (
        step[:, 0, 0] if d == 1 else step[:, 0, 0] * step[:, 1, 1] - step[:, 0, 1] * step[:, 1, 0])
    return torch.where(det > 0, torch.log(det.clamp_min(1e-300)),
                       torch.full_like(det, math.nan))


def propagate_linear(score_fn: Callable, coefficients: Sequence[tuple[float, ...]], grid: Grid,
                     start_log_density: Callable = standard_normal_log_density, *,
                     jacobian_fn: Callable | None = None, observe: Callable | None = None,
                     device=None, truncate: float = 12.0, lump: bool = True,
                     progress: bool = False) -> GridState:
    r"""Propagate a law on ``grid`` through steps x' = c_x x + c_s s(x) + n Z (module docstring).

    Args:
        score_fn: the (guided) score ``(x [N, d], alpha, sigma) -> [N, d]``.
        coefficients: per step (alpha, sigma, c_x, c_s, n), e.g.
            :func:`guidelab.samplers.registry.linear_coefficients`.
        grid: the :class:`Grid`.
        start_log_density: log-density of the start law ``[G, d] -> [G]`` (default N(0, I)).
        jacobian_fn: ``(x, alpha, sigma) -> (score, jacobian [N, d, d])`` for the steps after the
            last noisy one (default :func:`~guidelab.exact.fields.jacobian_function`).
        observe: optional ``observe(i, alpha, sigma, nodes [G, d], masses [G])`` called before
            every noisy step i with the law of Y at that step's level on the grid (disables
            lumping).
        device: where to compute (default CPU); everything is float64.
        truncate: Gaussian kernels are cut at ``truncate`` standard deviations.
        lump: lump sub-grid noisy steps (module docstring).

    Returns:
        :class:`GridState`.
    """
    nodes = grid.nodes(device)  # [G, d]
    masses, lost = _start_masses(grid, start_log_density, device)  # [G]
    noisy = [i for i, step in enumerate(coefficients) if step[4] > 0]
    last_noisy = noisy[-1] if noisy else -1
    threshold = 1.75 * min(grid.spacing) ** 2  # flush lumped noise at this variance
    positions, excess, calls = nodes, 0.0, 0
    pending = 0.0  # variance lumped so far (the same for every node)
    carried = None  # sum_k n_k^2 / J_k^2 per node and axis, [G, d], while lumping
    bar = tqdm(total=len(coefficients), desc="grid", disable=not progress, leave=False)
    for i in range(last_noisy + 1):
        alpha, sigma, coef_x, coef_s, noise = (float(v) for v in coefficients[i])
        if observe is not None:
            observe(i, alpha, sigma, nodes, masses)
        score = score_fn(positions, alpha, sigma).to(torch.float64)  # [G, d]
        positions = coef_x * positions + coef_s * score  # [G, d]
        calls += 1
        flush = (pending + noise**2 >= threshold or i == last_noisy or observe is not None
                 or not lump)
        if pending > 0 or not flush:
            # noise lumped from earlier steps of the block is carried through this step's map:
            # with J the block's Jacobian so far, the noise added after step k reaches the end
            # scaled by J_end / J_k (per axis; the block's Jacobian is nearly diagonal)
            slope = _axis_derivatives(positions, grid).abs().clamp_min(1e-6)  # [G, d]
            carried = (0 if carried is None else carried) + noise**2 / slope**2
        pending += noise**2
        if flush:
            variance = [pending] * grid.dim if carried is None else carried * slope**2
            masses, step_lost, step_excess = _noisy_update(masses, positions, grid, variance,
                                                           truncate)
            lost += step_lost
            excess += step_excess
            positions, pending, carried = nodes, 0.0, None
        bar.update()
    log_jac = torch.zeros_like(masses)
    folded = 0
    if last_noisy + 1 < len(coefficients):
        jacobian_fn = jacobian_fn or jacobian_function(score_fn)
        live = masses > 0
        points = nodes[live]  # [G', d]
        log_det = torch.zeros(points.shape[0], dtype=torch.float64, device=points.device)
        for i in range(last_noisy + 1, len(coefficients)):
            alpha, sigma, coef_x, coef_s, _ = (float(v) for v in coefficients[i])
            score, jac = jacobian_fn(points, alpha, sigma)
            log_det += _tail_log_det(jac.to(torch.float64), coef_x, coef_s)
            points = coef_x * points + coef_s * score.to(torch.float64)
            calls += 1
            bar.update()
        folded = int(torch.isnan(log_det).sum())
        positions = nodes.clone()
        positions[live] = points
        log_jac[live] = log_det
    bar.close()
    return GridState(grid, masses, positions, log_jac, lost, excess, folded, calls)


def propagate_dense(score_fn: Callable, coefficients: Sequence[tuple[float, ...]], grid: Grid,
                    start_log_density: Callable = standard_normal_log_density, *,
                    jacobian_fn: Callable | None = None, device=None, rows: int = 1024,
                    progress: bool = False) -> GridState:
    r"""The slow reference: each noisy step as a dense ``[G, G]`` Gaussian transition matrix.

    m'_i = cell sum_j m_j N(y_i; m(x_j), n^2 I) with m(x) = c_x x + c_s s(x): the trapezoid rule
    in x of the Chapman–Kolmogorov integral, O(G^2) per step (built ``rows`` output nodes at a
    time). An independent discretisation of the same steps (no deposit, no lumping) for tests
    and the speed benchmark; the deterministic tail is handled as in :func:`propagate_linear`.
    """
    nodes = grid.nodes(device)  # [G, d]
    masses, lost = _start_masses(grid, start_log_density, device)
    noisy = [i for i, step in enumerate(coefficients) if step[4] > 0]
    last_noisy = noisy[-1] if noisy else -1
    d = grid.dim
    for i in tqdm(range(last_noisy + 1), desc="dense", disable=not progress, leave=False):
        alpha, sigma, coef_x, coef_s, noise = (float(v) for v in coefficients[i])
        moved = coef_x * nodes + coef_s * score_fn(nodes, alpha, sigma).to(torch.float64)
        if noise == 0:
            raise ValueError("coefficients: a deterministic step before a noisy one; the dense "
                             "reference needs noise on every step up to the last noisy one")
        log_norm = -0.5 * d * (LOG_2PI + 2 * math.log(noise)) + math.log(grid.cell)
        new = torch.empty_like(masses)
        for start in range(0, nodes.shape[0], rows):
            block = nodes[start:start + rows]  # [r, d]
            sq = torch.cdist(block, moved).pow_(2)  # [r, G]
            kernel = torch.exp(sq.mul_(-0.5 / noise**2).add_(log_norm))  # [r, G]
            new[start:start + rows] = kernel @ masses  # [r]
        lost += max(0.0, float(masses.sum()) - float(new.sum()))
        masses = new
    tail = [step for step in coefficients[last_noisy + 1:]]
    if not tail:
        return GridState(grid, masses, nodes, torch.zeros_like(masses), lost)
    state = propagate_linear(score_fn, tail, grid, lambda x: torch.log(masses / grid.cell),
                             jacobian_fn=jacobian_fn, device=device)
    state.mass_lost += lost
    return state


def propagate_heun(score_fn: Callable, alphas: Sequence[float], sigmas: Sequence[float],
                   grid: Grid, start_log_density: Callable = standard_normal_log_density, *,
                   jacobian_fn: Callable | None = None, device=None,
                   progress: bool = False) -> GridState:
    r"""The probability-flow ODE by Heun's method (deterministic): the nodes are mapped and the
    log|det| of each step's Jacobian accumulated.

    A step from level i to i+1 (ratio r = alpha_{i+1}/alpha_i, scaled step
    H = sigma_{i+1} - r sigma_i, slopes d(x) = -sigma s(x)) is
    e = r x + H d_i(x), x' = r x + H (d_i(x) + d_{i+1}(e)) / 2 (Euler when sigma_{i+1} = 0), so

        dx'/dx = r I - (H/2) (sigma_i J_i(x) + sigma_{i+1} J_{i+1}(e) (r I - H sigma_i J_i(x))).
    """
    nodes = grid.nodes(device)
    masses, lost = _start_masses(grid, start_log_density, device)
    jacobian_fn = jacobian_fn or jacobian_function(score_fn)
    live = masses > 0
    x = nodes[live]  # [G', d]
    d = grid.dim
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    log_det = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    calls = 0
    for i in tqdm(range(len(alphas) - 1), desc="grid heun", disable=not progress, leave=False):
        alpha, sigma, alpha_next, sigma_next = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        ratio = alpha_next / alpha
        scaled_h = sigma_next - ratio * sigma
        score, jac = jacobian_fn(x, alpha, sigma)  # [G', d], [G', d, d]
        euler = ratio * x - scaled_h * sigma * score  # [G', d]
        d_euler = ratio * eye - scaled_h * sigma * jac  # [G', d, d]
        calls += 1
        if sigma_next > 0:
            score_next, jac_next = jacobian_fn(euler, alpha_next, sigma_next)
            calls += 1
            x = ratio * x - 0.5 * scaled_h * (sigma * score + sigma_next * score_next)
            step = ratio * eye - 0.5 * scaled_h * (sigma * jac + sigma_next * jac_next @ d_euler)
        else:
            x, step = euler, d_euler
        det = torch.linalg.det(step)  # [G']
        log_det += torch.where(det > 0, torch.log(det.clamp_min(1e-300)),
                               torch.full_like(det, math.nan))
    positions = nodes.clone()
    positions[live] = x
    log_jac = torch.zeros_like(masses)
    log_jac[live] = log_det
    return GridState(grid, masses, positions, log_jac, lost, 0.0, int(torch.isnan(log_det).sum()),
                     calls)


def _kernel_noise(bases: torch.Tensor, std: torch.Tensor, tolerance: float = 1e-12):
    """Split N(0, U diag(std^2) U^T) into per-axis variances and extra directions.

    Returns (axis variances ``[d]``, list of (direction ``[d]``, variance)) such that the sum of
    the axis-aligned Gaussian and the 1-D Gaussians along the directions has that covariance.
    """
    d = std.numel()
    var = std**2  # [d]
    if d == 1 or torch.allclose(bases, torch.eye(d, dtype=bases.dtype, device=bases.device),
                                atol=tolerance):
        return [float(v) for v in var], []
    iso = float(var.min())
    extra = [(bases[:, j], float(var[j]) - iso) for j in range(d) if float(var[j]) - iso > 0]
    return [iso] * d, extra


def propagate_exact_kernel(mixture: GaussianMixture, c: int, schedule: DiscreteSchedule,
                           grid: Grid, *, device=None, truncate: float = 12.0,
                           hermite_nodes: int = 9, progress: bool = False) -> GridState:
    r"""Propagate the exact reverse kernel p(x_{t-1} | x_t, c) of a Gaussian mixture on a grid.

    The step is the mixture over class c's components k of Gaussian steps with weight r_k^c(x),
    mean alpha_{t-1} mu_k + U_k (g_k * U_k^T (x - alpha_t mu_k)) and covariance
    U_k diag(std_k^2) U_k^T (:func:`guidelab.samplers.exact.exact_reverse_coefficients`), from
    the exact start p_T(x|c). Each component's masses are deposited and convolved like a linear
    step; a covariance not aligned with the axes is split into an isotropic part (convolved) and
    1-D Gaussians along its eigenvectors (Gauss–Hermite points, ``hermite_nodes`` of them).
    """
    c = mixture.resolve_class(c, 1)
    if not isinstance(c, int):
        raise ValueError("c: expected one class (an int)")
    levels = discrete_levels(schedule)
    T = schedule.num_steps
    gain, std = exact_reverse_coefficients(mixture, schedule)  # [T, K, d] each
    cast = {"device": device, "dtype": torch.float64}
    gain, std = gain.to(**cast), std.to(**cast)
    means = mixture.means.to(**cast)  # [K, d]
    bases = mixture.eigvecs.to(**cast)  # [K, d, d]
    components = mixture.class_components(c).tolist()
    nodes = grid.nodes(device)

    def start(x):
        return mixture.log_prob(x, levels.alphas[0], levels.sigmas[0], c)

    masses, lost = _start_masses(grid, start, device)
    gh_z, gh_w = _hermite(hermite_nodes, device)
    excess = 0.0
    for i in tqdm(range(T), desc="grid exact kernel", disable=not progress, leave=False):
        alpha_t, sigma_t, alpha_prev = levels.alphas[i], levels.sigmas[i], levels.alphas[i + 1]
        live = masses > 0
        x = nodes[live]  # [G', d]
        weights = mixture.log_responsibilities(x, alpha_t, sigma_t, c).exp()  # [G', K]
        groups: dict[tuple, list] = {}
        for k in components:
            residual = (x - alpha_t * means[k]) @ bases[k]  # U^T (x - alpha mu), [G', d]
            mean = alpha_prev * means[k] + (residual * gain[i, k]) @ bases[k].T  # [G', d]
            mass = masses[live] * weights[:, k]  # [G']
            axis_var, extra = _kernel_noise(bases[k], std[i, k])
            for direction, variance in extra:  # Gauss–Hermite points along the direction
                spread = math.sqrt(variance) * gh_z[:, None] * direction  # [H, d]
                mean = (mean[None] + spread[:, None, :]).reshape(-1, grid.dim)  # [H G', d]
                mass = (gh_w[:, None] * mass[None]).reshape(-1)  # [H G']
            key = tuple(round(v, 15) for v in axis_var)
            groups.setdefault(key, []).append((mass, mean))
        new = torch.zeros_like(masses)
        for key, parts in groups.items():
            mass = torch.cat([m for m, _ in parts])
            mean = torch.cat([p for _, p in parts])
            out, step_lost, step_excess = _noisy_update(mass, mean, grid, list(key), truncate)
            new += out
            lost += step_lost
            excess += step_excess
        masses = new
    return GridState(grid, masses, nodes, torch.zeros_like(masses), lost, excess, 0, T)


def _hermite(n: int, device):
    """Gauss–Hermite nodes and weights for E[f(Z)], Z ~ N(0, 1): ``[n]``, ``[n]``."""
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return (torch.tensor(z, dtype=torch.float64, device=device),
            torch.tensor(w / w.sum(), dtype=torch.float64, device=device))


# --------------------------------------------------------------------------- functionals


def grid_functionals(state: GridState, family: LabelledMixture, c: int,
                     log_weight: Callable | None = None) -> dict[str, float]:
    r"""Q = E[1/p(c|Y)], E[p(c|Y)], entropy -E[log p_Y(Y)] and KL(p_Y || p(.|c)) as trapezoid
    sums sum_j m_j f(y_j) over the propagated law (clean class posterior of ``family``).

    Terms with m_j = 0 are skipped; a term with m_j > 0 where log p(y_j|c) = -inf makes the KL
    +inf (the law has mass outside the support of p(.|c)).

    With ``log_weight`` (``y [G', d] -> log g(y) [G']``, float64) also E[g(Y)] =
    sum_j m_j g(y_j) = sum_j p_Y(y_j) g(y_j) h^d (the mass m_j is the density times the cell
    volume; after a deterministic tail, y_j is where node j's mass went), summed in log space
    as exp(logsumexp_j(log m_j + log g(y_j))): ``g``, with ``g_edge_share`` its share from the
    outer 1% of the grid (as ``edge_share`` for Q).
    """
    live = state.masses > 0
    masses = state.masses[live]  # [G']
    y = state.positions[live]  # [G', d]
    log_post = _chunked(lambda z: family.log_class_posterior(z, 1.0, 0.0)[:, c], y)  # [G']
    log_m = torch.log(masses)
    log_terms = log_m - log_post  # log m_j / p(c|y_j), [G']
    q = float(torch.exp(torch.logsumexp(log_terms, dim=0)))
    edge = _edge_nodes(state.grid, state.masses.device)[live]  # [G']
    edge_share = float(torch.exp(torch.logsumexp(log_terms[edge], dim=0)) / q) \
        if bool(edge.any()) else 0.0
    p_mean = float((masses * log_post.exp()).sum())
    log_density = log_m - math.log(state.grid.cell) - state.log_jacobian[live]  # [G']
    finite = torch.isfinite(log_density)
    entropy = float(-(masses[finite] * log_density[finite]).sum())
    log_target = _chunked(lambda z: family.log_prob(z, 1.0, 0.0, c), y)  # [G']
    terms = masses * (log_density - log_target)
    kl = float(terms[finite].sum())
    out = {"q": q, "p_mean": p_mean, "entropy": entropy, "kl": kl,
           "mass": float(masses.sum()), "edge_share": edge_share}
    if log_weight is not None:
        log_g = _chunked(lambda z: log_weight(z).to(torch.float64), y)  # [G']
        log_g_terms = log_m + log_g  # log m_j g(y_j), [G']
        log_total = torch.logsumexp(log_g_terms, dim=0)
        out["g"] = float(torch.exp(log_total))
        out["g_edge_share"] = float(torch.exp(torch.logsumexp(log_g_terms[edge], dim=0)
                                              - log_total)) if bool(edge.any()) else 0.0
    return out


def _edge_nodes(grid: Grid, device) -> torch.Tensor:
    """``[G]`` mask of the nodes in the outer 1% (at least 2 nodes) of any axis."""
    mask = torch.zeros(grid.shape, dtype=torch.bool, device=device)
    for a, n in enumerate(grid.points):
        width = max(2, n // 100)
        index = [slice(None)] * grid.dim
        index[a] = slice(0, width)
        mask[tuple(index)] = True
        index[a] = slice(n - width, n)
        mask[tuple(index)] = True
    return mask.reshape(-1)


def _chunked(fn: Callable, x: torch.Tensor, rows: int = 1 << 16) -> torch.Tensor:
    return torch.cat([fn(x[i:i + rows]) for i in range(0, x.shape[0], rows)]) if x.shape[0] \
        else x.new_empty(0)


# --------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class GridResult:
    r"""The exact output law of a sampler on a grid, and what it gives.

    Attributes:
        q: E[1/p(c|Y)] (at the finer grid).
        p_mean: E[p(c|Y)].
        entropy: differential entropy -E[log p_Y(Y)] in nats.
        kl: KL(p_Y || p(.|c)) in nats.
        density: the output density on ``grid`` (finer grid), ``[G_1]`` or ``[G_1, G_2]``.
        grid: the node coordinates of each axis (finer grid).
        quad_error: |q(h) - q(h/2)|, the quadrature error estimate of q.
        errors: the same difference for each of q, p_mean, entropy, kl.
        mass_lost: mass that left the grid (or started outside it), finer grid.
        unresolved_variance: variance added beyond the sampler's own (sub-grid noise).
        coarse: the values at spacing h.
        points: nodes per axis of the finer grid; spacing: its h per axis.
        sampler, steps, c, w: what was propagated.
        folded_mass: mass on the nodes where the deterministic tail's map folds (a step's
            Jacobian determinant <= 0: the change of variables is invalid there, and those
            nodes are left out of the entropy and the KL).
        edge_share: share of q from the outer 1% of the grid's nodes on any axis (finer grid):
            a tail truncated by the grid's extent would show here.
        seconds: wall time of both propagations.
        g: E[g(Y)] for the ``log_weight`` of :func:`grid_reference` (NaN without one); its
            refinement error is ``errors["g"]``.
    """

    q: float
    p_mean: float
    entropy: float
    kl: float
    density: torch.Tensor
    grid: tuple[torch.Tensor, ...]
    quad_error: float
    errors: dict[str, float]
    mass_lost: float
    unresolved_variance: float
    coarse: dict[str, float]
    points: tuple[int, ...]
    spacing: tuple[float, ...]
    sampler: str
    steps: int
    c: int
    w: float
    folded_mass: float = 0.0
    edge_share: float = 0.0
    seconds: float = 0.0
    g: float = math.nan


def default_grid(family: LabelledMixture, points: int | Sequence[int] | None = None, *,
                 z: float | None = None) -> Grid:
    r"""A grid holding every Y_t of a diffusion between N(0, I) and the data to z standard
    deviations.

    Y_t = alpha X_0 + sigma Z with alpha^2 + sigma^2 = 1: given component k (mean mu_k,
    standard deviation s_k along an axis), Y_t has mean alpha mu_k, between 0 and mu_k, and
    standard deviation sqrt(alpha^2 s_k^2 + sigma^2) <= max(1, s_k). So the box
    [min_k min(0, mu_k) - z max(1, s_k), max_k max(0, mu_k) + z max(1, s_k)] per axis holds
    every Y_t to z standard deviations (Gaussian mixtures; other families: the range of 4096
    draws widened by half, then the same margin). Defaults: z = 9 in 1-D (heavy tails need the
    far tails of p(x)), 6.5 in 2-D and beyond; points 2049 (1-D), 129 per axis (2-D), 33
    beyond (:func:`grid_reference` adds the refined grid with 2 points - 1).
    """
    d = family.dim
    if z is None:
        z = 9.0 if d == 1 else 6.5
    if isinstance(family, GaussianMixture):
        centre = family.means  # [K, d]
        spread = family.covariances.diagonal(dim1=1, dim2=2).sqrt()  # [K, d]
    else:
        draws = family.sample(4096, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64)
        width = draws.amax(0) - draws.amin(0)
        centre = torch.stack([draws.amin(0) - width / 2, draws.amax(0) + width / 2])  # [2, d]
        spread = torch.zeros_like(centre)
    margin = z * spread.clamp_min(1.0)  # [K, d]
    lo = (centre.clamp_max(0.0) - margin).amin(0)  # [d]
    hi = (centre.clamp_min(0.0) + margin).amax(0)  # [d]
    if points is None:
        points = {1: 2049, 2: 129}.get(d, 33)
    if isinstance(points, int):
        points = (points,) * d
    return Grid(tuple(lo.tolist()), tuple(hi.tolist()), tuple(int(p) for p in points))


def _propagate(family, c, w, sampler, schedule, grid, options, device, progress, field=None):
    """One propagation of ``sampler`` on ``grid``: the :class:`GridState`."""
    if sampler == "exact_reverse":
        if not isinstance(family, GaussianMixture):
            raise ValueError("family: the exact reverse kernel needs a GaussianMixture")
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError("schedule: the exact reverse kernel needs a DiscreteSchedule")
        return propagate_exact_kernel(family, c, schedule, grid, device=device,
                                      progress=progress, **options)
    score_fn = field if field is not None else ClassifierFreeGuidance(family, c, strength=w)
    if sampler == "ode_heun":
        from ..samplers.ode import ode_levels

        alphas, sigmas = ode_levels(schedule, **options)
        return propagate_heun(score_fn, alphas, sigmas, grid, device=device, progress=progress)
    coefficients = linear_coefficients(sampler, schedule, **options)
    return propagate_linear(score_fn, coefficients, grid, device=device, progress=progress)


def grid_reference(family: LabelledMixture, c: int, w: float = 0.0,
                   sampler: str = "ddpm_type",
                   schedule: DiscreteSchedule | VPContinuous | None = None, *,
                   points: int | Sequence[int] | None = None, grid: Grid | None = None,
                   refine: bool = True, sampler_options: dict | None = None,
                   max_mass_lost: float = 1e-9, max_edge_share: float = 1e-9,
                   max_grow: int = 2, device=None, field=None,
                   log_weight: Callable | None = None, progress: bool = False) -> GridResult:
    r"""The exact output law of ``sampler`` with exact guided scores, on a grid (d = 1 or 2).

    Propagates Y from the sampler's start law (N(0, I); the exact p_T(x|c) for
    ``"exact_reverse"``, which is only defined at w = 0) with the score
    s^w = ClassifierFreeGuidance(family, c, w) through the sampler's steps (module docstring),
    at the grid's spacing h and at h/2, and returns the values at h/2 with their differences as
    error estimates. The grid grows (1.5x wider, same spacing, up to ``max_grow`` times)
    while more than ``max_mass_lost`` leaves it or more than ``max_edge_share`` of Q (or of
    E[g] with ``log_weight``) comes from the outer 1% of its nodes on some axis (the truncated
    tail would matter).

    Args:
        family: an exact family (a GaussianMixture for the closed-form Jacobians).
        c: the class; w: the guidance strength (w = 0 unguided).
        sampler: one of :data:`GRID_SAMPLERS`.
        schedule: the sampler's schedule (a DiscreteSchedule; a VPContinuous for
            Euler–Maruyama and the ODEs on continuous time).
        points, grid: nodes per axis of the coarser grid on the default box
            (:func:`default_grid`), or an explicit :class:`Grid`.
        refine: also run at h/2 (default); False returns the single run with quad_error NaN.
        sampler_options: the sampler's own options (``eta``, ``timesteps``, ``num_steps``, ...).
        device: where to compute (float64 throughout).
        field: the guided score function to propagate, ``(x, alpha, sigma) -> [N, d]``: any
            guided field of ``family`` whose value depends on (x, level) only (a rule with no
            per-run state and no separate re-noising direction, any strength schedule);
            default classifier-free guidance of strength ``w``. ``w`` then only labels the
            result.
        log_weight: optional ``x [N, d] -> log g(x) [N]`` (e.g. reward guidance's weight,
            :func:`guidelab.distributions.exponential_log_weight`): the result's ``g`` is then
            E[g(Y)] of the output law, with no Monte Carlo error (:func:`grid_functionals`),
            and ``errors["g"]`` its refinement error.

    Returns:
        :class:`GridResult`.

    Example:
        >>> from guidelab import GaussianMixture, linear_schedule
        >>> gm = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
        >>> exact = grid_reference(gm, 0, 0.0, "exact_reverse", linear_schedule(10), points=257)
        >>> round(exact.q, 6)  # exact sampling: E[1/p(c|X)] = 1/p(c)
        2.0
        >>> guided = grid_reference(gm, 0, 2.0, "ddpm_type", linear_schedule(50), points=257)
        >>> guided.q < 1.1 and guided.quad_error < 1e-6
        True
    """
    if family.dim > 3:
        raise ValueError(f"family: grid propagation is for d <= 2 (d = 3 is allowed but slow), "
                         f"got d = {family.dim}")
    if sampler not in GRID_SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(GRID_SAMPLERS)}, got "
                         f"{sampler!r}")
    if schedule is None:
        raise ValueError("schedule: a schedule is required")
    c = family.resolve_class(c, 1)
    if not isinstance(c, int):
        raise ValueError("c: expected one class (an int)")
    w = float(w)
    if sampler == "exact_reverse" and w != 0:
        raise ValueError(f"w: the exact reverse kernel samples p(x|c) and has no guidance; "
                         f"got w = {w}")
    options = dict(sampler_options or {})
    base = grid if grid is not None else default_grid(family, points)
    t0 = time.perf_counter()
    for _ in range(max_grow + 1):
        state = _propagate(family, c, w, sampler, schedule, base, options, device, progress,
                           field)
        coarse = grid_functionals(state, family, c, log_weight)
        if state.mass_lost <= max_mass_lost and coarse["edge_share"] <= max_edge_share \
                and coarse.get("g_edge_share", 0.0) <= max_edge_share:
            break
        base = base.grown(1.5)
    fine_state = state
    if refine:
        fine_state = _propagate(family, c, w, sampler, schedule, base.refined(), options,
                                device, progress, field)
        fine = grid_functionals(fine_state, family, c, log_weight)
        errors = {key: abs(fine[key] - coarse[key]) for key in ("q", "p_mean", "entropy", "kl")}
    else:
        fine = coarse
        errors = {key: math.nan for key in ("q", "p_mean", "entropy", "kl")}
    if log_weight is not None:
        errors["g"] = abs(fine["g"] - coarse["g"]) if refine else math.nan
    for key in ("q", "p_mean", "entropy"):
        if not math.isfinite(fine[key]):
            raise FloatingPointError(f"grid_reference: {key} is not finite ({fine[key]})")
    g = fine_state.grid
    steps = (schedule.num_steps if isinstance(schedule, DiscreteSchedule)
             else int(options.get("num_steps") or 1000))
    return GridResult(
        q=fine["q"], p_mean=fine["p_mean"], entropy=fine["entropy"], kl=fine["kl"],
        density=fine_state.density().cpu(), grid=tuple(a.cpu() for a in g.axes()),
        quad_error=errors["q"], errors=errors, mass_lost=fine_state.mass_lost,
        unresolved_variance=fine_state.unresolved_variance, coarse=coarse, points=g.points,
        spacing=g.spacing, sampler=sampler, steps=steps, c=c, w=w,
        folded_mass=float(fine_state.masses[torch.isnan(fine_state.log_jacobian)].sum()),
        edge_share=fine["edge_share"], seconds=time.perf_counter() - t0,
        g=fine.get("g", math.nan))
