r"""Built-in distributions: named exact families that specs and examples refer to.

A spec names one with ``[model] kind = "exact"`` (or the older ``[distribution]``) and
``family = "builtin", name = "..."``; :data:`CATALOG` maps each name to a factory taking no
arguments (or keyword arguments of its own, e.g. ``dim``). Users add their own with
:func:`register_distribution` or through the ``guidelab.distributions`` entry-point group.

* ``default_mixture``: the 3-class 2-D Gaussian mixture of the Li & Jiao study
  (:func:`default_mixture`);
* ``adjacent_boxes``: two classes uniform on boxes that share a face (:func:`adjacent_boxes`),
  where the support of each class is known exactly;
* ``swiss_roll``: a kernel mixture on seeded points of the 2-D Swiss roll of
  :func:`guidelab.data.swiss_roll`, labelled by arm (:func:`swiss_roll_mixture`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .empirical import EmpiricalMixture
from .gaussian_mixture import GaussianMixture
from .uniform_box import UniformBoxMixture

__all__ = ["CATALOG", "default_mixture", "adjacent_boxes", "swiss_roll_mixture",
           "register_distribution"]


def default_mixture() -> GaussianMixture:
    """The built-in data distribution: 3 classes, d = 2, 3 components per class, K = 9.

    Each class's components lie on an arc around its own direction (90, 210 and 330 degrees,
    radii 0.45 to 0.63), so the classes overlap substantially but not completely (unguided
    E[p(c|Y)] is about 0.5 to 0.6). Covariances are full and anisotropic (eigenvalues 0.5 and
    0.2), oriented at 20, 80 and 140 degrees for components 1, 2, 3 of *every* class; weights
    within a class are 0.3, 0.45, 0.25 and class priors 0.45, 0.35, 0.20.

    Why the shared orientations: in the tails, the log-odds between two classes are governed
    by their widest components along that direction. If one class is wider there, the odds grow
    quadratically and 1/p(c|X) becomes heavy-tailed (its m-th moment is infinite once m exceeds
    rho / (rho - 1), rho the ratio of directional variances); with the same set of covariances
    in every class the odds grow only linearly and every moment of 1/p(c|X) exists. The
    unguided Q then has a Pareto k-hat near 0.3 at 10^4 samples and an honest normal interval,
    so the decrease of Q(w) is measured, not guessed.
    """
    means, covariances, weights, labels = [], [], [], []
    class_priors = [0.45, 0.35, 0.20]
    for c, centre in enumerate([90.0, 210.0, 330.0]):
        for j, offset in enumerate([-35.0, 0.0, 35.0]):
            angle = math.radians(centre + offset)
            radius = 0.45 * (1 + 0.2 * j)
            means.append([radius * math.cos(angle), radius * math.sin(angle)])
            rotation = math.radians(20.0 + 60.0 * j)
            u = torch.tensor([[math.cos(rotation), -math.sin(rotation)],
                              [math.sin(rotation), math.cos(rotation)]], dtype=torch.float64)
            covariances.append(u @ torch.diag(torch.tensor([0.5, 0.2],
                                                           dtype=torch.float64)) @ u.T)
            weights.append(class_priors[c] * [0.3, 0.45, 0.25][j])
            labels.append(c)
    return GaussianMixture(means, torch.stack(covariances), weights, labels)


def adjacent_boxes(dim: int = 1) -> UniformBoxMixture:
    """Two classes on adjacent boxes sharing a face: class 0 uniform on [-1, 0] x [0, 1]^(d-1),
    class 1 on [0, 1] x [0, 1]^(d-1), p(c) = 1/2 each."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive integer, got {dim!r}")
    lows = [[-1.0] + [0.0] * (dim - 1), [0.0] * dim]
    highs = [[0.0] + [1.0] * (dim - 1), [1.0] * dim]
    return UniformBoxMixture(lows=lows, highs=highs, weights=[0.5, 0.5], labels=[0, 1])


def swiss_roll_mixture(n: int = 500, seed: int = 0, *, bandwidth: float = 0.1,
                       classes: int = 2) -> EmpiricalMixture:
    r"""The Swiss roll as an exact kernel mixture: n seeded points of the noiseless roll, each
    blurred by N(0, h^2 I).

    The points are ``guidelab.data.swiss_roll(n, seed, noise=0, classes=classes)`` (float64):
    m_j = (t_j cos t_j, t_j sin t_j) / (9 pi / 2) with t_j = 3 pi/2 + 3 pi u_j, u_j the first
    n uniforms of ``numpy.random.Generator(PCG64(seed))``; class k is the k-th of ``classes``
    equal ranges of t (default 2: class 0 the inner arm, radius 1/3 to 2/3, class 1 the outer,
    2/3 to 1). The law is p(x) = (1/n) sum_j N(x; m_j, h^2 I).

    Because ``guidelab.data.swiss_roll`` draws the n uniforms before the noise, the data set
    ``swiss_roll(n, seed, noise=h)`` is exactly one draw from each kernel of this mixture (same
    n, seed and classes): a network trained on it learns a sample of this law. Defaults: 500
    points (about 0.013 apart along the roll, far below h, so the density is smooth along the
    arms) and h = 0.1 (arms 0.44 apart radially, so they stay 4 h apart; a smaller h needs
    finer grids for the exact grid reference, whose cost grows as the square of the nodes per
    axis).

    Args:
        n: number of points (>= 1).
        seed: the roll's seed (>= 0).
        bandwidth: h >= 0 (0: the empirical distribution of the points itself).
        classes: number of arms (equal ranges of t), >= 1.
    """
    from ..data import swiss_roll

    roll = swiss_roll(n, seed, noise=0.0, classes=classes, dtype=torch.float64)
    return EmpiricalMixture(roll.x, roll.labels, bandwidth=bandwidth)


CATALOG: dict[str, Callable] = {"default_mixture": default_mixture,
                                "adjacent_boxes": adjacent_boxes,
                                "swiss_roll": swiss_roll_mixture}
"""name -> factory of a built-in distribution."""


def register_distribution(name: str, factory: Callable, *, replace: bool = False) -> Callable:
    """Add a named distribution factory; ValueError for a taken name unless ``replace``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if name in CATALOG and not replace:
        raise ValueError(f"name: a distribution {name!r} is already registered")
    CATALOG[name] = factory
    return factory
