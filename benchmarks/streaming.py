r"""Streaming a study: throughput and peak memory of one unit of many samples, run in chunks.

A 2-D study over a K = 16 Gaussian mixture (4 classes, full covariances; the mixture of
``benchmarks/sampling.py``), guided DDPM-type sampling with CFG at w in {0, 2} (w = 0 is the
coupled baseline every study runs), the ``class_probability`` metric on every sample, driven by
the studies' own unit execution (:func:`guidelab.studies.runner.run_unit`): rows are drawn
from the row-keyed noise and sampled, measured and merged chunk by chunk, so memory is bounded
by the chunk and not by the number of samples.

    python benchmarks/streaming.py                          # CPU sizes, and the GPU when present
    python benchmarks/streaming.py --cpu-sizes 200000 400000 800000 --cpu-steps 100
    python benchmarks/streaming.py --gpu-samples 100000000 --gpu-steps 1000

Each size runs in a fresh subprocess (so peak memory is that run's own): samples = trials x
2 strengths, sample-steps/s = samples x steps / wall seconds of ``run_unit`` (sampling,
noise, metric records and their merging; the import of guidelab and the warm-up unit
excluded), peak resident memory of the process (``VmHWM``) on the CPU and
``torch.cuda.max_memory_allocated`` on a GPU. The CPU rows show that peak memory does not grow
with the number of samples; the GPU row is the 10^8-sample, 1000-step study (target 1e9
sample-steps/s).

The baseline (``method`` = ``sampler``, one subprocess a size as well) is the bare fused sampler
of ``benchmarks/sampling.py`` on the same mixture, strengths and number of samples: one
``ddpm_type`` call a strength on every row at once, ``torch.Generator`` noise, no metric, and
on the CPU the one PyTorch thread a unit runs with. Their ratio is what streaming costs on top
of sampling (row-keyed noise, the metric records, the chunk loop). ``--no-baseline`` skips it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
STRENGTHS = [0.0, 2.0]


def study_spec(samples: int, steps: int, device: str, chunk_rows: int | None):
    """The resolved spec of the streaming study: ``samples`` over both strengths."""
    sys.path.insert(0, str(HERE))
    try:
        from sampling import make_mixture
    finally:
        sys.path.remove(str(HERE))
    from guidelab.studies.spec import validate_spec

    mixture = make_mixture(2, 16)
    data = {
        "name": "streaming", "trials": max(1, samples // len(STRENGTHS)), "seed": 0,
        "dtype": "float32", "device": device, "metrics": ["class_probability"],
        "keep_samples": 0,
        "distribution": {"family": "gaussian_mixture", "means": mixture.means.tolist(),
                         "covariances": mixture.covariances.tolist(),
                         "weights": mixture.weights.tolist(),
                         "labels": mixture.labels.tolist()},
        "guidance": {"rule": "cfg"},
        "sampler": {"name": "ddpm_type", "schedule": "linear", "steps": steps},
        "sweep": {"w": STRENGTHS, "class": [0]},
    }
    if chunk_rows:
        data["chunk_rows"] = chunk_rows
    return validate_spec(data, "<benchmarks/streaming.py>")


def peak_resident_bytes() -> int:
    """VmHWM of this process (Linux), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def run_streamed(spec) -> dict:
    """The study's own unit execution: Q(w) of each strength and the non-finite rows."""
    from guidelab.studies.runner import run_unit

    result = run_unit(spec, {"class": 0})
    return {"q_mean": [row["q_mean"] for row in result.rows],
            "nonfinite": sum(int(row["n_nonfinite"]) for row in result.rows)}


def run_sampler(spec) -> dict:
    """The baseline: the bare fused sampler on all of a strength's rows at once, no metric,
    with as many CPU threads as a unit gets."""
    from guidelab.guidance import ClassifierFreeGuidance
    from guidelab.samplers import ddpm_type
    from guidelab.schedules import make_schedule
    from guidelab.studies.runner import UNIT_CPU_THREADS

    device, dtype = torch.device(spec.device), spec.torch_dtype
    if device.type == "cpu":
        torch.set_num_threads(UNIT_CPU_THREADS)
    mixture = spec.distribution_object()
    schedule = make_schedule(spec.sampler.schedule, spec.sampler.steps)
    nonfinite = 0
    for w in STRENGTHS:
        generator = torch.Generator(device=device).manual_seed(spec.seed)
        x_init = torch.randn(spec.trials, 2, generator=generator, device=device, dtype=dtype)
        result = ddpm_type(ClassifierFreeGuidance(mixture, 0, w), schedule, x_init,
                           generator=generator)
        nonfinite += result.n_nonfinite
    return {"q_mean": [], "nonfinite": nonfinite}


def child(args) -> None:
    """One size and method, in this (fresh) process: prints one JSON line."""
    run = {"unit": run_streamed, "sampler": run_sampler}[args.method]
    device = torch.device(args.device)
    run(study_spec(4096, 2, args.device, None))  # imports, caches, allocator pools
    spec = study_spec(args.samples, args.steps, args.device, args.chunk_rows)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = run(spec)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    samples = spec.trials * len(STRENGTHS)
    out |= {"device": str(device), "method": args.method, "samples": samples,
            "steps": args.steps, "seconds": seconds, "rate": samples * args.steps / seconds,
            "rss": peak_resident_bytes(),
            "gpu_peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else None}
    print(json.dumps(out), flush=True)


def measure(device: str, samples: int, steps: int, chunk_rows: int | None, timeout: float,
            method: str = "unit"):
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--device", device,
               "--samples", str(samples), "--steps", str(steps), "--method", method]
    if chunk_rows:
        command += ["--chunk-rows", str(chunk_rows)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"streaming child failed ({' '.join(command)}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_rows(rows) -> None:
    header = (f"{'device':<8} {'method':<8} {'samples':>11} {'steps':>5} {'seconds':>8} "
              f"{'sample-steps/s':>14} {'peak RSS GiB':>12} {'peak GPU GiB':>12} "
              f"{'non-finite':>10}  Q(w=0), Q(w=2)")
    print(header)
    print("-" * len(header))
    for row in rows:
        gpu = f"{row['gpu_peak'] / 2**30:12.3f}" if row["gpu_peak"] is not None \
            else f"{'-':>12}"
        q = ", ".join(f"{v:.4f}" for v in row["q_mean"])
        print(f"{row['device']:<8} {row['method']:<8} {row['samples']:>11,} {row['steps']:>5} "
              f"{row['seconds']:>8.2f} {row['rate']:>14.3e} {row['rss'] / 2**30:>12.3f} "
              f"{gpu} {row['nonfinite']:>10}  {q}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-sizes", type=int, nargs="*", default=[200_000, 400_000, 800_000],
                        help="samples of each CPU run (both strengths together)")
    parser.add_argument("--cpu-steps", type=int, default=100)
    parser.add_argument("--gpu-samples", type=int, default=100_000_000)
    parser.add_argument("--gpu-steps", type=int, default=1000)
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="rows a chunk (default: the runner's device default)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU run")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the bare-sampler baseline")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="unit", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"# streaming study: d = 2, K = 16, ddpm_type + CFG (w in {STRENGTHS}), float32, "
          f"class_probability records; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load average {load:.2f}")
    methods = ["unit"] if args.no_baseline else ["unit", "sampler"]
    runs = [("cpu", size, args.cpu_steps) for size in args.cpu_sizes]
    if torch.cuda.is_available() and not args.no_gpu:
        runs.append(("cuda", args.gpu_samples, args.gpu_steps))
    rows = [measure(device, size, steps, args.chunk_rows, args.timeout, method)
            for device, size, steps in runs for method in methods]
    print_rows(rows)
    for method in methods:
        cpu = [row for row in rows if row["device"] == "cpu" and row["method"] == method]
        if len(cpu) > 1:
            growth = cpu[-1]["rss"] / cpu[0]["rss"]
            print(f"{method}: peak RSS at {cpu[-1]['samples']:,} samples / at "
                  f"{cpu[0]['samples']:,}: {growth:.3f} "
                  f"(samples x{cpu[-1]['samples'] / cpu[0]['samples']:.0f})")
    if len(methods) > 1:  # rows come in (unit, sampler) pairs, one pair a run
        for unit, bare in zip(rows[::2], rows[1::2], strict=True):
            print(f"{unit['device']}, {unit['samples']:,} samples: streamed at "
                  f"{unit['rate'] / bare['rate']:.2f} x the bare sampler's rate")


if __name__ == "__main__":
    main()
