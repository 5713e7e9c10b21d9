"""Exact Gaussian-mixture score: guidelab's kernels against autograd through torch.distributions.

All compute grad_x log p_t(x) of the same noised mixture at the same points, float32, in one
process. The baseline is the straightforward way: ``MixtureSameFamily(Categorical,
MultivariateNormal)`` with the noised covariances, ``log_prob(x).sum().backward()``. guidelab
runs twice: ``residual``, the residual-form kernel (``quadratic_features = False``, what every
case used before), and ``default``, what ``GaussianMixture.score`` does now (quadratic features
at d <= 4, the residual form above). Relative errors are taken against a float64 autograd
reference on the first rows.

    python benchmarks/score_kernel.py            # CPU table
    python benchmarks/score_kernel.py --device cuda

Columns: milliseconds per call (best of several repeats, the methods interleaved), component-
evaluations per second (N K / time), speed-ups (default over residual, default over
autograd), relative error of each against float64. Then an accuracy table of the float32
kernels against float64 at typical points and points 10 to 1000 units out, sigma from 1 to 0
(max over points of |s32 - s64| / |s64|, and the share of rows that took the expansion). A
last section measures peak memory for N = 10^7, K = 16, d = 2 in a fresh subprocess, and on
CUDA the float32 matmul throughput of the same device, for the d = 512 comparison.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import subprocess
import sys
import time

import torch

from guidelab import GaussianMixture

CPU_CASES = [(16384, 16, 2), (16384, 1024, 2), (4096, 64, 32), (2048, 64, 128)]
GPU_CASES = [(1 << 20, 16, 2), (16384, 1024, 2), (65536, 64, 32), (8192, 64, 512)]


def make_mixture(K: int, d: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(K, d, d, generator=g, dtype=torch.float64))
    eig = torch.exp(torch.rand(K, d, generator=g, dtype=torch.float64) * math.log(10)) * 0.3
    covs = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    means = torch.randn(K, d, generator=g, dtype=torch.float64) * 2
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.1
    return GaussianMixture(means, covs, weights, torch.arange(K) % 3)


def baseline_score(gm: GaussianMixture, x: torch.Tensor, alpha: float, sigma: float):
    """Autograd through torch.distributions (covariances noised, then Cholesky-factored)."""
    dtype, device = x.dtype, x.device
    covs = (alpha**2 * gm.covariances + sigma**2 * torch.eye(gm.dim, dtype=torch.float64))
    dist = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=gm.weights.to(device, dtype)),
        torch.distributions.MultivariateNormal((alpha * gm.means).to(device, dtype),
                                               covariance_matrix=covs.to(device, dtype)))
    x = x.detach().requires_grad_(True)
    dist.log_prob(x).sum().backward()
    return x.grad


def timed(fn, device, min_seconds=0.4, max_reps=50):
    fn()
    best, total, reps = math.inf, 0.0, 0
    while reps < 3 or (total < min_seconds and reps < max_reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        best, total, reps = min(best, elapsed), total + elapsed, reps + 1
    return best, out


def timed_together(fns, device, rounds=7, min_seconds=0.3):
    """Best time of each function, calls interleaved (a load burst hits all alike)."""
    outs = {name: fn() for name, fn in fns.items()}  # warm-up
    best = dict.fromkeys(fns, math.inf)
    spent, done = 0.0, 0
    while done < rounds or (spent < min_seconds and done < 5 * rounds):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            outs[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            best[name], spent = min(best[name], elapsed), spent + elapsed
        done += 1
    return best, outs


def residual_copy(gm: GaussianMixture) -> GaussianMixture:
    """The same mixture evaluated with the residual-form kernel only."""
    old = copy.copy(gm)
    old.quadratic_features = False
    return old


def relative_error(value, reference):
    return ((value.double().cpu() - reference).norm() / reference.norm()).item()


def run_cases(cases, device, with_baseline=True):
    alpha, sigma = 0.8, 0.6
    header = (f"{'N':>8} {'K':>5} {'d':>4} | {'autograd ms':>11} {'comp/s':>9} | "
              f"{'residual ms':>11} {'comp/s':>9} | {'default ms':>10} {'comp/s':>9} | "
              f"{'vs res.':>7} {'vs aut.':>7} | {'rel.err aut.':>12} {'residual':>9} "
              f"{'default':>9}")
    print(header)
    print("-" * len(header))
    for N, K, d in cases:
        gm = make_mixture(K, d)
        old = residual_copy(gm)
        x = torch.randn(N, d, generator=torch.Generator().manual_seed(1)).to(device)
        rows = min(N, 256)
        reference = baseline_score(gm, x[:rows].double().cpu(), alpha, sigma)
        best, outs = timed_together({"default": lambda: gm.score(x, alpha, sigma),  # noqa: B023
                                     "residual": lambda: old.score(x, alpha, sigma)},  # noqa: B023
                                    device)
        t_new, t_old = best["default"], best["residual"]
        err_new = relative_error(outs["default"][:rows], reference)
        err_old = relative_error(outs["residual"][:rows], reference)
        if with_baseline:
            t_base, base = timed(lambda: baseline_score(gm, x, alpha, sigma),  # noqa: B023
                                 device,
                                 min_seconds=0.2, max_reps=5)
            err_base = relative_error(base[:rows], reference)
            base_cols = f"{t_base * 1e3:11.2f} {N * K / t_base:9.2e}"
            ratio, err_b = f"{t_base / t_new:7.1f}", f"{err_base:12.1e}"
        else:
            base_cols, ratio, err_b = f"{'-':>11} {'-':>9}", f"{'-':>7}", f"{'-':>12}"
        print(f"{N:>8} {K:>5} {d:>4} | {base_cols} | {t_old * 1e3:11.2f} {N * K / t_old:9.2e} "
              f"| {t_new * 1e3:10.2f} {N * K / t_new:9.2e} | {t_old / t_new:7.2f} {ratio} | "
              f"{err_b} {err_old:9.1e} {err_new:9.1e}", flush=True)


def accuracy_table(device, K=64, d=2, n=2000):
    """float32 kernels against float64 (the residual form in float64 at the same float32
    points and float32-rounded levels), typical and far points, sigma from 1 to 0."""
    gm = make_mixture(K, d)
    gm.quadratic_min_elements = 0
    old = residual_copy(gm)
    g = torch.Generator().manual_seed(2)
    print(f"accuracy, K = {K}, d = {d}, {n} points each: max_i |s32 - s64| / |s64| "
          f"(unconditional score and guided w = 2 toward class 1); 'expansion' is the share "
          f"of rows the quadratic path kept")
    header = (f"{'sigma':>7} {'points':>8} | {'residual':>9} {'default':>9} | "
              f"{'guided res.':>11} {'guided def.':>11} | {'expansion':>9}")
    print(header)
    print("-" * len(header))
    for sigma in [1.0, 0.6, 0.1, 1e-2, 1e-3, 0.0]:
        alpha = math.sqrt(1 - sigma**2) if sigma < 1 else 1e-3
        a32, s32 = (float(torch.tensor(v, dtype=torch.float32)) for v in (alpha, sigma))
        x0 = gm.sample(n, generator=g, dtype=torch.float64)
        typical = alpha * x0 + sigma * torch.randn(n, d, generator=g, dtype=torch.float64)
        direction = torch.nn.functional.normalize(
            torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
        far = typical + direction * torch.logspace(1, 3, n, dtype=torch.float64)[:, None]
        for name, points in [("typical", typical), ("far", far)]:
            x = points.float()
            errors = []
            for fn in ["score", "guided"]:
                def call(model, x, a, s, fn=fn):
                    if fn == "score":
                        return model.score(x, a, s)
                    return model.combined_score(x, a, s, 1, 1 + 2.0, -2.0)
                reference = call(gm, x.double(), a32, s32)
                for model in (old, gm):
                    value = call(model, x.to(device), alpha, sigma).double().cpu()
                    errors.append(((value - reference).norm(dim=1)
                                   / reference.norm(dim=1).clamp_min(1e-300)).max().item())
            quad = gm._quadratic_level(a32, s32, gm.params(x.device, x.dtype))
            centred = (x.double() - torch.from_numpy(quad["shift"].numpy().T)).abs().sum(1)
            kept = gm._expansion_ok(centred, quad).double().mean().item()
            print(f"{sigma:7.0e} {name:>8} | {errors[0]:9.1e} {errors[1]:9.1e} | "
                  f"{errors[2]:11.1e} {errors[3]:11.1e} | {kept:9.0%}", flush=True)


MEMORY_CHILD = r"""
import resource, sys, torch
sys.path[:0] = [{path!r}]
from score_kernel import make_mixture
device = torch.device({device!r})
gm = make_mixture(16, 2)
x = torch.randn(10_000_000, 2, device=device)
gm.score(x[:1000], 0.8, 0.6)
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    out = gm.score(x, 0.8, 0.6); torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - start
    total = torch.cuda.max_memory_allocated()
else:
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = gm.score(x, 0.8, 0.6)
    total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = total - start
print(f"{{peak / 2**30:.3f}} {{total / 2**30:.3f}} {{bool(torch.isfinite(out).all())}}")
"""


def memory_row(device):
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    code = MEMORY_CHILD.format(path=here, device=str(device))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    _, total, finite = result.stdout.split()
    scope = "allocated on the device" if device.type == "cuda" else "resident, whole process"
    print(f"N = 10^7, K = 16, d = 2 on {device}: peak memory {float(total):.3f} GiB ({scope}; "
          f"inputs [N, d] and output [N, d] included), all scores finite: {finite}")


def matmul_throughput(device, size=8192):
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds, _ = timed(lambda: a @ b, device)
    return 2 * size**3 / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--cases", type=int, nargs="+", default=None,
                        help="indices of the case list to run (default all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"float32, alpha = 0.8, sigma = 0.6, load average {load:.2f}")
    cases = CPU_CASES if device.type == "cpu" else GPU_CASES
    run_cases([case for i, case in enumerate(cases) if args.cases is None or i in args.cases],
              device)
    if not args.skip_accuracy:
        print()
        accuracy_table(device)
    if device.type == "cuda":
        flops = matmul_throughput(device)
        N, K, d = 8192, 64, 512
        gm = make_mixture(K, d)
        x = torch.randn(N, d, device=device)
        seconds, _ = timed(lambda: gm.score(x, 0.8, 0.6), device)
        ours = 4 * N * K * d * d / seconds  # two [N, d] x [d, K d] products
        print(f"d = 512: kernel {ours / 1e12:.1f} TFLOP/s vs plain float32 matmul "
              f"{flops / 1e12:.1f} TFLOP/s ({ours / flops:.0%})")
    if not args.skip_memory:
        memory_row(device)


if __name__ == "__main__":
    main()
