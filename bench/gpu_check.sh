#!/usr/bin/env bash
# The GPU check, sized for a lent CUDA machine (its steps' timeouts add up to 10 minutes;
# it took 2.6 on an H200): the kernel tests on the GPU and the GPU-marked tests, then
# `sj-glif bench --device cuda --quick` (the headline case [T=8, B=32, C=128, 32, 32] in
# float32 and bfloat16: end-to-end training steps of every provider, GLIF (Triton) kernel
# time by CUDA-graph replay, a 1 GiB copy for the bandwidth), then a size sweep. Results
# go to $OUT (the device tool's folder; it brings back 8 files, so the sweep's come as
# sweep.tar.gz) or bench/results/gpu, each benchmark case appended to bench.jsonl /
# bench.csv as it completes. A failing test does not stop the benchmark; each step has its
# own timeout; the exit status is 1 if any step failed.
#
# Runs from any checkout, with nothing of sj-glif installed: Python runs from the
# repository root with PYTHONPATH=$PWD (sj_glif registers the top-level kernels/ as
# sj_glif.kernels there). What the GPU image lacks travels as wheels in .whl/ (see the
# device tool's README):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#     spikingjelly==2.0.0 loguru==0.7.3 SciencePlots==2.2.2
# then run with carry [".whl"]:  bash bench/gpu_check.sh
#
# SJ_GLIF_GPU_CHECK_DRY=1 runs the same steps on the CPU (tests collected, not run; a tiny
# benchmark): what tests/test_bench.py checks without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out="${OUT:-bench/results/gpu}"
mkdir -p "$out" || exit 1
export PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"
dry="${SJ_GLIF_GPU_CHECK_DRY:-0}"
status=0

# 1. the carried wheels (about 10 s), then the source tree ahead of them
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  timeout 60 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || { echo "gpu_check: wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# 2. versions, then the kernel tests (at most 180 + 60 s): all of tests/test_kernels.py, which on
#    a CUDA machine runs every kernel feature compiled on the GPU, and the GPU-marked tests
#    of the other files that have them (only those files, so a module needing what the GPU
#    image lacks cannot stop the collection); over 8 workers where pytest-xdist is installed
#    (the kernels' compile time dominates)
gpu_tests=$(grep -l "pytest.mark.gpu" tests/test_*.py | grep -v test_kernels.py | tr '\n' ' ')
collect=""
[ "$dry" = 1 ] && collect="--collect-only"
workers=""
[ "$dry" != 1 ] && "$py" -c "import xdist" 2>/dev/null && workers="-n 8"
{
  s=0
  timeout 30 "$py" - <<'PY' || s=1
import torch, triton, spikingjelly, sj_glif, sj_glif.kernels.glif
print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.version.cuda,
      "sj_glif", sj_glif.__version__, "from", sj_glif.__file__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
  # shellcheck disable=SC2086
  timeout 180 "$py" -m pytest -q -rfE -p no:cacheprovider --durations=5 $workers $collect \
    tests/test_kernels.py || s=1
  # shellcheck disable=SC2086
  timeout 60 "$py" -m pytest -q -rfE -m gpu -p no:cacheprovider \
    --continue-on-collection-errors $collect $gpu_tests || s=1
  exit $s
} 2>&1 | tee "$out/gpu_tests.txt" || status=1

# 3. the benchmark (at most 180 s; on the timeout's SIGTERM it writes the summary of the
#    cases it finished, and -k kills it 20 s later if that hangs)
if [ "$dry" = 1 ]; then
  args=(--device cpu --providers glif_torch gated_lif --dtypes float32 --T 2 --sizes 2x3x4x4
        --reps 2 --warmup 0 --copy-mib 1)
  sweep=(--device cpu --providers glif_torch --dtypes float32 --T 2 3 --sizes 2x3x4x4
         --reps 2 --warmup 0 --copy-mib 1)
else
  args=(--device cuda --quick)
  # 4. the size sweep (at most 90 s): the Triton kernels against eager GatedLIFNode and
  #    LIFNode at T = 4, 8, 16 on the headline size and one 4x as large, both dtypes
  sweep=(--device cuda --providers glif_triton gated_lif sj_lif --T 4 8 16
         --sizes 32x128x32x32 64x256x32x32 --dtypes float32 bfloat16 --reps 20 --warmup 3)
fi
timeout -k 20 180 "$py" -m sj_glif.cli bench "${args[@]}" --no-progress --out "$out" 2>&1 \
  | tee "$out/bench.txt" || status=1
# the device tool brings back 8 files: summary.txt repeats bench.txt's end, and the sweep's
# own files (its printed output as sweep.txt) travel as one archive, sweep.tar.gz
rm -f "$out/summary.txt"
sweep_dir=$(mktemp -d)
timeout -k 20 90 "$py" -m sj_glif.cli bench "${sweep[@]}" --no-progress --out "$sweep_dir" \
  2>&1 | tee "$sweep_dir/sweep.txt" || status=1
tar -czf "$out/sweep.tar.gz" -C "$sweep_dir" . || status=1
exit $status
