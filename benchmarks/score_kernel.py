"""Exact Gaussian-mixture score: guidelab's kernel against autograd through torch.distributions.

Both compute grad_x log p_t(x) of the same noised mixture at the same points, float32, in one
process. The baseline is the straightforward way: ``MixtureSameFamily(Categorical,
MultivariateNormal)`` with the noised covariances, ``log_prob(x).sum().backward()``.
Relative errors are taken against a float64 autograd reference on the first rows.

    python benchmarks/score_kernel.py            # CPU table
    python benchmarks/score_kernel.py --device cuda

Columns: milliseconds per call (best of several repeats), component-evaluations per second
(N K / time), speed-up of guidelab over the baseline, relative error of each against float64.
A last section measures peak memory for N = 10^7, K = 16, d = 2 in a fresh subprocess, and on
CUDA the float32 matmul throughput of the same device, for the d = 512 comparison.
"""

from __future__ import annotations

import argparse
import math
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


def relative_error(value, reference):
    return ((value.double().cpu() - reference).norm() / reference.norm()).item()


def run_cases(cases, device, with_baseline=True):
    alpha, sigma = 0.8, 0.6
    header = (f"{'N':>8} {'K':>5} {'d':>4} | {'autograd ms':>11} {'comp/s':>9} | "
              f"{'guidelab ms':>11} {'comp/s':>9} | {'ratio':>6} | {'rel.err autograd':>16} "
              f"{'rel.err guidelab':>16}")
    print(header)
    print("-" * len(header))
    for N, K, d in cases:
        gm = make_mixture(K, d)
        x = torch.randn(N, d, generator=torch.Generator().manual_seed(1)).to(device)
        rows = min(N, 256)
        reference = baseline_score(gm, x[:rows].double().cpu(), alpha, sigma)
        t_ours, ours = timed(lambda: gm.score(x, alpha, sigma), device)  # noqa: B023
        err_ours = relative_error(ours[:rows], reference)
        if with_baseline:
            t_base, base = timed(lambda: baseline_score(gm, x, alpha, sigma),  # noqa: B023
                                 device,
                                 min_seconds=0.2, max_reps=5)
            err_base = relative_error(base[:rows], reference)
            base_cols = f"{t_base * 1e3:11.2f} {N * K / t_base:9.2e}"
            ratio, err_b = f"{t_base / t_ours:6.1f}", f"{err_base:16.1e}"
        else:
            base_cols, ratio, err_b = f"{'-':>11} {'-':>9}", f"{'-':>6}", f"{'-':>16}"
        print(f"{N:>8} {K:>5} {d:>4} | {base_cols} | {t_ours * 1e3:11.2f} "
              f"{N * K / t_ours:9.2e} | {ratio} | {err_b} {err_ours:16.1e}", flush=True)


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
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"float32, alpha = 0.8, sigma = 0.6")
    run_cases(CPU_CASES if device.type == "cpu" else GPU_CASES, device)
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
