"""The exact-references benchmark script still runs (tiny sizes; timings are never asserted)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_exact_benchmark_runs():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "exact.py"), "--quick",
                             "--threads", "1", "--only", "speed1d", "accuracy", "profile"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "push+convolve" in result.stdout and "dense matrix" in result.stdout
    assert "Decrease formula" in result.stdout
