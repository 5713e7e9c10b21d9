r"""Exact references: speed of grid propagation against a dense transition matrix, and the
numbers the exact layer exists to give.

Sections (``--only`` picks some; all by default):

* ``speed1d``: the heavy-tailed 1-D example (classes N(-1, 0.5^2) and {N(1, 0.3^2), N(3, 0.3^2)},
  p(c) = 1/2), the DDPM-type sampler with the linear schedule, T steps on a G-point grid.
  *push+convolve* is :func:`guidelab.exact.propagate_linear` (push-forward of the mass through
  each step's mean map, moment-matched deposit, direct Gaussian convolution); the baseline
  *dense matrix* builds the [G, G] Gaussian transition matrix of every step and multiplies
  (:func:`guidelab.exact.propagate_dense`), run on the first ``--dense-steps`` steps in the same
  process and extrapolated to T (``--dense-full`` runs it all and compares the values).
* ``speed2d``: the built-in 2-D mixture (``default_mixture``), class 2 at w = 2, the DDPM-type
  sampler with the linear and the Li–Jiao schedule, T = 1000: :func:`grid_reference` (two
  propagations, at h and h/2) with its quadrature error, and the dense baseline for one step
  on the finer grid, extrapolated.
* ``accuracy``: on the heavy-tailed example, the exact reverse kernel's Q(0) against 1/p(c) = 2
  and a Monte Carlo mean of 10^5 exact draws; the DDPM-type sampler's own Q(0) for growing T
  (its discretisation error, shrinking as 1/T), and Q(0.5), Q(2).
* ``profile``: the decrease formula on the 1-D two-Gaussian example (classes N(-1, 1), N(1, 1),
  p(c) = 1/2): direct Q(w) and 1/p(c) - 2w int I dt of the same Euler–Maruyama sampler on a
  grid (no Monte Carlo error) for growing step counts: their difference is discretisation.
* ``entropy``: Wu et al. (arXiv 2403.01639) on the 2-D mixture: E[p(c|Y)] and the differential
  entropy of the output against w for the DDPM-type sampler and DDIM (exact grid laws).

Everything is float64. ``--device cuda`` runs the grids on a GPU and checks them against the
CPU. Timings depend on the machine's load: both methods of a row run in the same process.

    python benchmarks/exact.py                    # everything (about ten minutes on 2 cores)
    python benchmarks/exact.py --only speed1d speed2d
    python benchmarks/exact.py --quick            # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from guidelab import GaussianMixture, linear_schedule, make_schedule
from guidelab.distributions import default_mixture
from guidelab.exact import (
    Grid,
    decrease_profile,
    default_grid,
    grid_functionals,
    grid_reference,
    propagate_dense,
    propagate_linear,
)
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.samplers.registry import linear_coefficients

SECTIONS = ("speed1d", "speed2d", "accuracy", "profile", "entropy")


def heavy_tailed() -> GaussianMixture:
    return GaussianMixture([[-1.0], [1.0], [3.0]], [0.25, 0.09, 0.09], [0.5, 0.25, 0.25],
                           [0, 1, 1])


def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def speed1d(args) -> None:
    family = heavy_tailed()
    grid = Grid((-10.0,), (12.0,), (args.points1d,))
    coefficients = linear_coefficients("ddpm_type", linear_schedule(args.steps))
    score = ClassifierFreeGuidance(family, 0, strength=0.0)
    state, fast = timed(lambda: propagate_linear(score, coefficients, grid, device=args.device))
    q_fast = grid_functionals(state, family, 0)["q"]
    k = min(args.dense_steps, args.steps - 1)
    if args.dense_full:
        dense_state, dense = timed(lambda: propagate_dense(score, coefficients, grid,
                                                           device=args.device))
        q_dense, how = f"{grid_functionals(dense_state, family, 0)['q']:.8f}", "full run"
    else:
        _, part = timed(lambda: propagate_dense(score, coefficients[:k], grid,
                                                device=args.device))
        dense, q_dense, how = part * args.steps / k, "-", f"{k} steps, extrapolated"
    table(f"1-D, G = {args.points1d}, T = {args.steps}, DDPM-type, linear schedule "
          f"({args.device})", ["method", "seconds", "Q(0)", "note"],
          [["push+convolve", f"{fast:.1f}", f"{q_fast:.8f}", "measured"],
           ["dense matrix", f"{dense:.1f}", q_dense, how],
           ["speed-up", f"{dense / fast:.0f}x", "", ""]])


def speed2d(args) -> None:
    family = default_mixture()
    rows = []
    for schedule_name in ("linear", "li_jiao"):
        schedule = make_schedule(schedule_name, args.steps)
        result, seconds = timed(lambda s=schedule: grid_reference(
            family, 2, 2.0, "ddpm_type", s, points=args.points2d, device=args.device))
        rows.append([schedule_name, "x".join(map(str, result.points)), f"{seconds:.1f}",
                     f"{result.q:.6f}", f"{result.quad_error:.1e}",
                     f"{result.quad_error / result.q:.1e}", f"{result.entropy:.5f}",
                     f"{result.errors['entropy']:.1e}"])
    fine = default_grid(family, args.points2d).refined()
    coefficients = linear_coefficients("ddpm_type", linear_schedule(args.steps))
    score = ClassifierFreeGuidance(family, 2, strength=2.0)
    _, one = timed(lambda: propagate_dense(score, coefficients[:1], fine, device=args.device,
                                           rows=256))
    rows.append(["dense matrix (linear)", "x".join(map(str, fine.points)),
                 f"{one * args.steps:.0f}", "-", "-", "-", "-",
                 "1 step on the finer grid, extrapolated (the coarse run not counted)"])
    table(f"2-D default mixture, class 2, w = 2, DDPM-type, T = {args.steps}, coarse and "
          f"refined grids ({args.device})",
          ["schedule", "finer grid", "seconds", "Q", "quad error", "relative", "entropy",
           "entropy error"], rows)


def accuracy(args) -> None:
    family = heavy_tailed()
    exact = grid_reference(family, 0, 0.0, "exact_reverse", linear_schedule(args.steps),
                           points=args.points1d // 2 + 1, device=args.device)
    draws = family.sample(100_000, 0, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    q = torch.exp(-family.log_class_posterior(draws, 1.0, 0.0)[:, 0])
    table("Heavy-tailed example, Q(0) of exact sampling (true value 1/p(c) = 2)",
          ["method", "Q(0)", "error", "reported error"],
          [["grid, exact reverse kernel", f"{exact.q:.10f}", f"{exact.q - 2:.1e}",
            f"{exact.quad_error:.1e} (quadrature)"],
           ["Monte Carlo, 1e5 exact draws", f"{float(q.mean()):.4f}",
            f"{float(q.mean()) - 2:.2f}", f"{float(q.std()) / math.sqrt(q.numel()):.3f} (se)"]])
    rows = []
    for T in args.T_list:
        result = grid_reference(family, 0, 0.0, "ddpm_type", linear_schedule(T),
                                points=args.points1d // 2 + 1, device=args.device)
        rows.append([T, f"{result.q:.6f}", f"{result.q - 2:.5f}", f"{result.quad_error:.1e}",
                     f"{(result.q - 2) * T:.1f}"])
    table("Heavy-tailed example, the DDPM-type sampler's own Q(0), linear schedule",
          ["T", "Q(0)", "Q(0) - 2", "quad error", "(Q(0) - 2) T"], rows)
    rows = []
    for w in (0.5, 2.0):
        result = grid_reference(family, 0, w, "ddpm_type", linear_schedule(args.steps),
                                points=args.points1d // 2 + 1, device=args.device)
        rows.append([w, f"{result.q:.6f}", f"{result.quad_error:.1e}", f"{result.p_mean:.6f}",
                     f"{result.entropy:.5f}", f"{result.kl:.5f}"])
    table(f"Heavy-tailed example, guided, DDPM-type, T = {args.steps}",
          ["w", "Q(w)", "quad error", "E[p(c|Y)]", "entropy", "KL to p(x|c)"], rows)


def profile(args) -> None:
    family = GaussianMixture([[-1.0], [1.0]], [1.0, 1.0], [0.5, 0.5], [0, 1])
    rows = []
    for w in (0.5, 2.0):
        for steps in args.profile_steps:
            result = decrease_profile(family, 1, w, num_steps=steps, method="grid",
                                      points=args.profile_points, device=args.device)
            rows.append([w, steps, f"{result.direct_q:.5f}", f"{result.formula_q:.5f}",
                         f"{2 * w * result.total:.5f}", f"{result.difference:+.5f}"])
    table("Decrease formula, classes N(-1,1), N(1,1), T = 6, Euler–Maruyama, grid (no MC error)",
          ["w", "steps", "direct Q(w)", "E[1/p_T] - 2w sum h I", "2w sum h I",
           "difference"], rows)


def entropy(args) -> None:
    family = default_mixture()
    grid = default_grid(family, args.points2d // 2 + 1)
    rows = []
    for sampler in ("ddpm_type", "ddim"):
        for w in (0.0, 0.5, 1.0, 2.0, 4.0):
            result = grid_reference(family, 1, w, sampler, linear_schedule(args.entropy_steps),
                                    grid=grid, device=args.device)
            rows.append([sampler, w, f"{result.p_mean:.4f}", f"{result.entropy:.4f}",
                         f"{result.errors['entropy']:.0e}", f"{result.q:.4f}"])
    table(f"Wu et al.: guidance raises E[p(c|Y)] and lowers the entropy (2-D mixture, class 1, "
          f"T = {args.entropy_steps})", ["sampler", "w", "E[p(c|Y)]", "entropy (nats)",
                                         "entropy error", "Q(w)"], rows)


def cuda_check(args) -> None:
    family = heavy_tailed()
    schedule = linear_schedule(200)
    cpu = grid_reference(family, 0, 0.5, "ddpm_type", schedule, points=1025, refine=False)
    gpu = grid_reference(family, 0, 0.5, "ddpm_type", schedule, points=1025, refine=False,
                         device=args.device)
    table("CUDA against CPU (float64)", ["device", "Q(0.5)", "entropy"],
          [["cpu", f"{cpu.q:.12f}", f"{cpu.entropy:.12f}"],
           [args.device, f"{gpu.q:.12f}", f"{gpu.entropy:.12f}"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--points1d", type=int, default=4097)
    parser.add_argument("--points2d", type=int, default=97,
                        help="coarser grid per axis; the reference also runs 2 n - 1")
    parser.add_argument("--dense-steps", type=int, default=20)
    parser.add_argument("--dense-full", action="store_true")
    parser.add_argument("--T-list", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    parser.add_argument("--profile-steps", type=int, nargs="+", default=[250, 500, 1000, 3000])
    parser.add_argument("--profile-points", type=int, default=513)
    parser.add_argument("--entropy-steps", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (on a shared 2-core machine 1 avoids spinning)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.points1d, args.points2d, args.dense_steps = 20, 257, 17, 2
        args.T_list, args.profile_steps, args.profile_points = [20, 40], [20, 40], 65
        args.entropy_steps = 5
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# guidelab exact references (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device})")
    for section in SECTIONS:
        if section in args.only:
            globals()[section](args)
    if args.device.startswith("cuda"):
        cuda_check(args)


if __name__ == "__main__":
    main()
