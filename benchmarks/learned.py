r"""Throughput of learned models: DSM training steps/s, and guided sampling with the
conditional and unconditional passes batched into one network call versus two calls.

* ``training``: :func:`guidelab.models.train_denoiser` optimiser steps per second (Adam, class
  dropout, data drawn exactly from a 2-D Gaussian mixture or from a tensor of 8x8 images).
* ``sampling``: :func:`guidelab.samplers.ddpm_type` driven by
  :class:`guidelab.guidance.ClassifierFreeGuidance` over a
  :class:`guidelab.models.LearnedScoreModel`, in sample-steps per second (N samples x steps /
  wall seconds), with

  - ``one call``: the model's ``branch_scores``: one network call on [x; x] with labels
    [c; null], split after (what the guidance seam uses for a network);
  - ``two calls``: s(x|c) and s(x) from two separate ``score`` calls, then the same
    combination.

  ``ratio`` is one call over two calls in the same process. Batching pays where a call's fixed
  overhead (Python, operator dispatch, small kernels) dominates: small N; at large N both do
  the same arithmetic and the ratio tends to 1.

float32, one process, best of ``--repeats`` timed runs after a warm-up (the two sampling
methods interleaved run by run, so both see the same background load). ``--clock cpu`` times
with the process's CPU time instead of the wall clock: on a machine shared with other jobs it
counts only the time the benchmark ran (use it with ``--threads 1``, where CPU time is the
work done).

    python benchmarks/learned.py                  # CPU
    python benchmarks/learned.py --device cuda    # on a GPU
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from guidelab import GaussianMixture, linear_schedule
from guidelab.guidance import ClassifierFreeGuidance
from guidelab.models import ConvDenoiser, LearnedScoreModel, MLPDenoiser, train_denoiser
from guidelab.samplers import ddpm_type

STRENGTH = 2.0  # w
# (name, network factory, sample shape, N for sampling)
SAMPLING_CASES = [
    ("MLP d=2 H=64x2", lambda: MLPDenoiser(2, 4, hidden=64, depth=2), (2,), 8),
    ("MLP d=2 H=64x2", lambda: MLPDenoiser(2, 4, hidden=64, depth=2), (2,), 256),
    ("MLP d=2 H=256x3", lambda: MLPDenoiser(2, 4, hidden=256, depth=3), (2,), 1024),
    ("Conv 8x8 W=32", lambda: ConvDenoiser(10, width=32), (1, 8, 8), 4),
    ("Conv 8x8 W=32", lambda: ConvDenoiser(10, width=32), (1, 8, 8), 128),
]


def mixture() -> GaussianMixture:
    """Four 2-D components on a square, one per class."""
    return GaussianMixture([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]],
                           [0.3, 0.3, 0.3, 0.3], [0.25] * 4, [0, 1, 2, 3])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCK = time.perf_counter  # or time.process_time (--clock cpu)


def time_training(args) -> list[dict]:
    device = torch.device(args.device)
    cases = [("MLP d=2 H=256x3", MLPDenoiser(2, 4, hidden=256, depth=3), mixture(), None, 256),
             ("Conv 8x8 W=32", ConvDenoiser(10, width=32),
              torch.randn(512, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
              torch.arange(512) % 10, 128)]
    rows = []
    for name, network, data, labels, batch in cases:
        batch = args.batch or batch
        train_denoiser(network, data, labels, steps=max(1, args.warmup), batch_size=batch,
                       progress=False, device=device)  # warm-up
        best = math.inf
        for _ in range(args.repeats):
            synchronize(device)
            start = CLOCK()
            train_denoiser(network, data, labels, steps=args.train_steps, batch_size=batch,
                           progress=False, device=device)
            synchronize(device)
            best = min(best, CLOCK() - start)
        rows.append({"case": name, "batch": batch, "steps": args.train_steps, "seconds": best,
                     "rate": args.train_steps / best})
    return rows


def time_sampling(score_fn, steps: int, n: int, shape, device, seed: int = 1) -> float:
    """Wall seconds of one ddpm_type run of ``steps`` steps on ``n`` samples."""
    schedule = linear_schedule(steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    x_init = torch.randn(n, *shape, generator=generator, device=device)
    synchronize(device)
    start = CLOCK()
    result = ddpm_type(score_fn, schedule, x_init, generator=generator)
    synchronize(device)
    seconds = CLOCK() - start
    if result.n_nonfinite:
        raise RuntimeError(f"{result.n_nonfinite} rows became non-finite")
    return seconds


def time_guided(args) -> list[dict]:
    """Best of ``repeats`` runs of each method, the methods interleaved run by run (ABAB...)
    so that both see the same background load on a shared machine."""
    device = torch.device(args.device)
    rows = []
    for name, factory, shape, n in SAMPLING_CASES:
        n = args.n or n
        model = LearnedScoreModel(factory().to(device).eval())
        rule = ClassifierFreeGuidance(model, c=1, strength=STRENGTH)
        def two_calls(x, a, s, model=model):
            return torch.lerp(model.score(x, a, s, None), model.score(x, a, s, 1),
                              1.0 + STRENGTH)

        methods = {"two calls": two_calls, "one call": rule}
        best = dict.fromkeys(methods, math.inf)
        for score_fn in methods.values():
            time_sampling(score_fn, args.warmup, n, shape, device)
        for _ in range(args.repeats):
            for method, score_fn in methods.items():
                best[method] = min(best[method],
                                   time_sampling(score_fn, args.steps, n, shape, device))
        for method in methods:
            rate = n * args.steps / best[method]
            rows.append({"case": name, "method": method, "N": n, "steps": args.steps,
                         "seconds": best[method], "rate": rate,
                         "ratio": rate / (n * args.steps / best["two calls"])})
    return rows


def print_training(training: list[dict], args) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"# learned models, float32, device={args.device}, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, load average {load:.2f}, "
          f"best of {args.repeats}, {args.clock} clock")
    header = f"{'training':<16} {'batch':>6} {'steps':>6} {'seconds':>8} {'steps/s':>9}"
    print(header)
    print("-" * len(header))
    for row in training:
        print(f"{row['case']:<16} {row['batch']:>6} {row['steps']:>6} {row['seconds']:>8.3f} "
              f"{row['rate']:>9.1f}")
    print(flush=True)


def print_sampling(sampling: list[dict]) -> None:
    header = (f"{'guided ddpm_type':<16} {'method':<9} {'N':>6} {'steps':>5} {'seconds':>8} "
              f"{'sample-steps/s':>14} {'ratio':>6}")
    print(f"# CFG w = {STRENGTH}: cond + uncond in one network call vs two calls")
    print(header)
    print("-" * len(header))
    for row in sampling:
        print(f"{row['case']:<16} {row['method']:<9} {row['N']:>6} {row['steps']:>5} "
              f"{row['seconds']:>8.3f} {row['rate']:>14.3e} {row['ratio']:>6.2f}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"# load average at the end {load:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--steps", type=int, default=50, help="timed sampler steps")
    parser.add_argument("--train-steps", type=int, default=50, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs, best kept")
    parser.add_argument("--n", type=int, default=None, help="override N of every case")
    parser.add_argument("--batch", type=int, default=None, help="override training batch")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall clock (default) or the process's CPU time")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print_training(time_training(args), args)
    print_sampling(time_guided(args))


if __name__ == "__main__":
    main()
