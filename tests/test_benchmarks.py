"""The benchmark scripts still run (tiny sizes; timings are never asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("args", [
    ["sampling.py", "--steps", "3", "--warmup", "1", "--repeats", "1", "--n", "64"],
    ["learned.py", "--steps", "3", "--train-steps", "2", "--warmup", "1", "--repeats", "1",
     "--n", "8", "--batch", "8", "--threads", "1"],
])
def test_benchmark_script_runs(args):
    result = subprocess.run([sys.executable, str(BENCHMARKS / args[0]), *args[1:]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "sample-steps/s" in result.stdout


def test_score_kernel_agrees_with_its_baseline():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import score_kernel
    finally:
        sys.path.remove(str(BENCHMARKS))
    import torch

    gm = score_kernel.make_mixture(8, 3)
    x = torch.randn(128, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    baseline = score_kernel.baseline_score(gm, x, 0.8, 0.6)
    torch.testing.assert_close(gm.score(x, 0.8, 0.6), baseline, rtol=1e-9, atol=1e-9)


def test_streaming_benchmark_runs():
    """A tiny size of benchmarks/streaming.py: a streamed and a bare CPU run, no GPU."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "streaming.py"), "--cpu-sizes",
                             "512", "--cpu-steps", "3", "--no-gpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "sample-steps/s" in result.stdout and "peak RSS" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("cpu ")]
    assert [row[:3] for row in rows] == [["cpu", "unit", "512"], ["cpu", "sampler", "512"]]
    assert all(row[8] == "0" for row in rows)  # no non-finite samples
    assert "streamed at" in result.stdout


def test_gpu_script_refuses_without_cuda(tmp_path):
    """benchmarks/gpu.sh parses, and on a machine without CUDA stops before running anything,
    with status 2 and a one-line reason (it is for the GPU machine only)."""
    import torch

    script = BENCHMARKS / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("CUDA is present: the script would run every GPU check")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                 "OUT": str(tmp_path / "out")}, check=False)
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr and not (tmp_path / "out").exists()
