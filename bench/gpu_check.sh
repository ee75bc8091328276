#!/usr/bin/env bash
# The GPU check, sized for a lent CUDA machine (< 8 minutes): GPU-marked tests, then the
# kernel benchmark (quick sweep, includes the issue's [T=8, B=32, C=128, 32, 32] case in
# float32 and bfloat16). Results go to $OUT (the device tool's folder) or bench/results/gpu.
#
# What the GPU image lacks travels as wheels in .whl/ (see the device tool's README):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#     spikingjelly==2.0.0 loguru==0.7.3 tqdm
# then run with carry [".whl"]:  bash bench/gpu_check.sh
set -uo pipefail
out="${OUT:-bench/results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/sjglif . || exit 1
export PYTHONPATH=/tmp/sjglif:$PYTHONPATH
python3 - <<'PY' | tee "$out/environment.txt"
import torch, triton
print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
# tests import sj_glif from the installed copy; -p no:cacheprovider keeps the tree clean
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.txt"
timeout 240 python3 -m sj_glif.cli bench --device cuda --quick --no-progress --out "$out" 2>&1 \
  | tee "$out/bench.txt"
