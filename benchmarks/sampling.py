r"""Throughput of the guided DDPM-type sampler over an exact Gaussian mixture.

Measures sample-steps per second (N samples x steps / wall seconds) of
:func:`guidelab.samplers.ddpm_type` driven by

* ``fused``: :class:`guidelab.guidance.ClassifierFreeGuidance` through the guidance seam
  (:class:`guidelab.guidance.Guided` with the CFG rule, whose coefficients (1 + w, -w) the
  mixture's one-pass ``combined_score`` evaluates: s^w = sum_k [(1 + w) r_k^c - w r_k]
  grad log p_{k,t}); at d <= 4 in float32 this is the quadratic-feature kernel (see
  :mod:`guidelab.distributions.gaussian_mixture`);
* ``fused direct``: the same kernel called directly at every step, as ClassifierFreeGuidance
  did before the seam (``seam / direct`` is the cost of the seam);
* ``fused residual``: the same with ``quadratic_features = False`` on the mixture, i.e. the
  residual-form kernel every case used before (the baseline the quadratic features are
  measured against, in the same process);
* ``two-call``: the plain baseline, ``lerp(score(x), score(x, c), 1 + w)`` from two separate
  ``score`` calls (the floor set for this library: 1.6e6 sample-steps/s at d = 2, K = 16 on a
  2-core CPU);

and, to show where the time goes, ``conditional`` (w = 0: one class-restricted score per step)
and ``sampler only`` (a score function returning zeros: the sampler's own arithmetic, noise
draws and non-finite guard). ``ratio`` is sample-steps/s over the two-call baseline of the
same case, ``vs residual`` over the ``fused residual`` one, ``vs direct`` over ``fused
direct``. float32, one process, after a
warm-up run; each timed run is repeated and the best kept, methods interleaved so that a
burst of load on a shared machine hits all of them alike.

    python benchmarks/sampling.py                 # CPU, both cases
    python benchmarks/sampling.py --device cuda   # on a GPU
    python benchmarks/sampling.py --profile       # torch.profiler table of the fused path
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time

import torch

from guidelab import GaussianMixture, linear_schedule
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.samplers import ddpm_type

CASES = [  # (d, K, N)
    (2, 16, 65536),
    (64, 64, 8192),
]
STRENGTH = 2.0  # w; cfg_scale = 3
NUM_CLASSES = 4


def make_mixture(dim: int, num_components: int, seed: int = 0) -> GaussianMixture:
    """K components with random means, full covariances and weights; labels k mod 4."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(num_components, dim, dim, generator=g,
                                       dtype=torch.float64))
    eig = 0.05 + 0.5 * torch.rand(num_components, dim, generator=g, dtype=torch.float64)
    covariances = q @ torch.diag_embed(eig) @ q.transpose(1, 2)  # [K, d, d]
    means = 3 * torch.randn(num_components, dim, generator=g, dtype=torch.float64)  # [K, d]
    weights = 0.5 + torch.rand(num_components, generator=g, dtype=torch.float64)
    labels = torch.arange(num_components) % NUM_CLASSES
    return GaussianMixture(means, covariances, weights, labels)


def score_functions(mixture: GaussianMixture, c: int, w: float):
    """The methods compared: name -> guided score function (x, alpha, sigma) -> [N, d]."""
    residual = copy.copy(mixture)
    residual.quadratic_features = False  # the residual-form kernel, on this instance only

    def two_call(x, alpha, sigma):
        conditional = mixture.score(x, alpha, sigma, c)  # [N, d]
        unconditional = mixture.score(x, alpha, sigma)  # [N, d]
        return torch.lerp(unconditional, conditional, 1.0 + w)  # [N, d]

    def zeros(x, alpha, sigma):
        return torch.zeros_like(x)  # [N, d]

    def direct(x, alpha, sigma):
        return mixture.combined_score(x, alpha, sigma, c, 1.0 + w, -w)  # [N, d]

    return {
        "two-call": two_call,
        "fused": ClassifierFreeGuidance(mixture, c, w),
        "fused direct": direct,
        "fused residual": ClassifierFreeGuidance(residual, c, w),
        "conditional": ClassifierFreeGuidance(mixture, c, 0.0),
        "sampler only": zeros,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_run(score_fn, steps: int, n: int, dim: int, device: torch.device,
             dtype: torch.dtype, seed: int = 1) -> float:
    """Wall seconds of one ddpm_type run of ``steps`` steps on ``n`` points."""
    schedule = linear_schedule(steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    x_init = torch.randn(n, dim, generator=generator, device=device, dtype=dtype)
    synchronize(device)
    start = time.perf_counter()
    result = ddpm_type(score_fn, schedule, x_init, generator=generator)
    synchronize(device)
    seconds = time.perf_counter() - start
    if result.n_nonfinite:
        raise RuntimeError(f"{result.n_nonfinite} rows became non-finite")
    return seconds


def run(args) -> list[dict]:
    device = torch.device(args.device)
    dtype = torch.float32
    rows = []
    for index, (dim, num_components, n) in enumerate(CASES):
        if args.cases is not None and index not in args.cases:
            continue
        if args.n is not None:
            n = args.n
        mixture = make_mixture(dim, num_components)
        methods = score_functions(mixture, c=0, w=STRENGTH)
        for score_fn in methods.values():
            time_run(score_fn, args.warmup, n, dim, device, dtype)  # warm-up
        best = dict.fromkeys(methods, math.inf)
        for _ in range(args.repeats):  # interleaved: load bursts hit every method alike
            for name, score_fn in methods.items():
                best[name] = min(best[name],
                                 time_run(score_fn, args.steps, n, dim, device, dtype))
        rates = {name: n * args.steps / seconds for name, seconds in best.items()}
        for name, seconds in best.items():
            rows.append({"case": f"d={dim}, K={num_components}", "method": name, "N": n,
                         "steps": args.steps, "seconds": seconds, "rate": rates[name],
                         "ratio": rates[name] / rates["two-call"],
                         "vs_residual": rates[name] / rates["fused residual"],
                         "vs_direct": rates[name] / rates["fused direct"]})
    return rows


def print_table(rows: list[dict], args) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"# ddpm_type + CFG (w = {STRENGTH}) on an exact GaussianMixture, float32, "
          f"device={args.device}, torch {torch.__version__}, threads={torch.get_num_threads()}, "
          f"load average {load:.2f}, best of {args.repeats}")
    header = f"{'case':<14} {'method':<15} {'N':>7} {'steps':>5} {'seconds':>8} " \
             f"{'sample-steps/s':>14} {'ratio':>6} {'vs residual':>11} {'vs direct':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['case']:<14} {row['method']:<15} {row['N']:>7} {row['steps']:>5} "
              f"{row['seconds']:>8.3f} {row['rate']:>14.3e} {row['ratio']:>6.2f} "
              f"{row['vs_residual']:>11.2f} {row['vs_direct']:>9.3f}")


def profile(args) -> None:
    """Operator-level profile of the fused path at the first case."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    device = torch.device(args.device)
    dim, num_components, n = CASES[0]
    n = args.n or n
    score_fn = score_functions(make_mixture(dim, num_components), 0, STRENGTH)["fused"]
    time_run(score_fn, args.warmup, n, dim, device, torch.float32)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        time_run(score_fn, args.steps, n, dim, device, torch.float32)
    sort = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, best kept")
    parser.add_argument("--n", type=int, default=None, help="override N for every case")
    parser.add_argument("--cases", type=int, nargs="+", default=None,
                        help="indices of CASES to run (default all)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--profile", action="store_true", help="profile the fused path")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.profile:
        profile(args)
        return
    print_table(run(args), args)


if __name__ == "__main__":
    main()
