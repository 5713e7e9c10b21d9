#!/usr/bin/env bash
# Every GPU check of guidelab in one run, on a machine with a CUDA device:
#
#   1. the CUDA tests (each compares the GPU with a float64 CPU reference);
#   2. every benchmark with --device cuda (sampling, score kernel, learned models, exact grids);
#   3. the streaming study of 10^8 samples x 1000 steps (target 1e9 sample-steps/s, peak GPU
#      memory reported), last because it is the longest.
#
#   bash benchmarks/gpu.sh                         # tables under ./gpu-results
#   OUT=/tmp/r STEP_SECONDS=300 GPU_SAMPLES=10000000 bash benchmarks/gpu.sh
#
# Environment: PYTHON (default .venv/bin/python when it exists, else python3); OUT, the folder
# of the tables (default gpu-results); STEP_SECONDS, the limit of each step (default 600);
# GPU_SAMPLES and GPU_STEPS, the streaming study's size (default 100000000 and 1000).
# guidelab is imported from src/ when it is not installed. A step that fails or runs out of
# time is reported and the next one runs; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
    if [ -x .venv/bin/python ]; then python_bin=.venv/bin/python; else python_bin=python3; fi
fi
out="${OUT:-gpu-results}"
limit="${STEP_SECONDS:-600}"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python_bin" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA device visible to $python_bin (torch.cuda.is_available() is False)" >&2
    exit 2
fi
mkdir -p "$out"
"$python_bin" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))' \
    | tee "$out/device.txt"

failed=0
step() {  # step NAME COMMAND...: run under the time limit, table to $out/NAME.txt
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    local status=$?
    tail -n 40 "$out/$name.txt"
    if [ "$status" -ne 0 ]; then
        failed=$((failed + 1))
        echo "!! $name failed with status $status$([ "$status" -eq 124 ] && echo " (over ${limit} s)")"
    fi
    echo "== $name: $((SECONDS - start)) s"
}

step tests "$python_bin" -m pytest -q -rs tests/test_gaussian_mixture.py tests/test_exact_grid.py \
    tests/test_metrics_record.py tests/test_runner.py -k cuda
step sampling "$python_bin" benchmarks/sampling.py --device cuda
step score_kernel "$python_bin" benchmarks/score_kernel.py --device cuda
step learned "$python_bin" benchmarks/learned.py --device cuda
step exact "$python_bin" benchmarks/exact.py --device cuda --only speed1d speed2d
step streaming "$python_bin" benchmarks/streaming.py --cpu-sizes \
    --gpu-samples "${GPU_SAMPLES:-100000000}" --gpu-steps "${GPU_STEPS:-1000}"
echo "failed steps: $failed (tables in $out)"
exit "$failed"
