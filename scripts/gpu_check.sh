#!/usr/bin/env bash
# The GPU checks of aggkit in one command, for a machine with a CUDA GPU, torch and triton:
# the CUDA tests, then benches/bench_gpu.py. Figures and logs go to $OUT (default gpu-out/).
#
# aggkit must be importable there. Without Rust on that machine, build a wheel here first
# (an abi3 wheel serves every CPython >= 3.11):
#     maturin build --release -o .whl
# and this script installs it into /tmp/site. Run from the repository root:
#     bash scripts/gpu_check.sh            # the tests and the full benchmark grid
#     QUICK=1 bash scripts/gpu_check.sh    # the tests and a short benchmark
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .whl/aggkit-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/aggkit-*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 - <<'PY' 2>&1 | tee "$out/machine.txt"
import torch, aggkit
print("aggkit", aggkit.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
PY
nvidia-smi >> "$out/machine.txt" 2>&1
# The CUDA tests: every test that names cuda, and the Triton kernels on the GPU.
timeout 300 python3 -m pytest -q -p no:cacheprovider \
    tests/test_torch.py tests/test_triton.py tests/test_triton_dist.py tests/test_distributed.py \
    -k "cuda or triton" 2>&1 | tee "$out/tests.txt"
tests=${PIPESTATUS[0]}
if [ -n "${QUICK:-}" ]; then
    grid=(--n 10 50 --d 1e6 1e8 --dtype float32)
else
    grid=()
fi
timeout 420 python3 benches/bench_gpu.py "${grid[@]}" --json "$out/bench_gpu.json" 2>&1 \
    | tee "$out/bench_gpu.md"
bench=${PIPESTATUS[0]}
echo "tests exit $tests, bench exit $bench" | tee -a "$out/machine.txt"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
