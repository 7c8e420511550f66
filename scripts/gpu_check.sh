#!/usr/bin/env bash
# The GPU checks of aggkit in one command, for a machine with a CUDA GPU, torch and triton:
# the CUDA tests, the compiled kernels against the Rust core (large inputs included), then
# benches/bench_gpu.py. Figures and logs go to $OUT (default gpu-out/). About 9 minutes.
#
# aggkit must be importable there. Without Rust on that machine, build a wheel here first
# (an abi3 wheel serves every CPython >= 3.11; the newest in .whl/ is installed):
#     maturin build --release -o .whl
# numpy, torch, triton, pytest and hypothesis must be installed there. From the repo root:
#     bash scripts/gpu_check.sh            # the checks and the full benchmark grid
#     QUICK=1 bash scripts/gpu_check.sh    # the checks and a short benchmark
set -u
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
whl=$(ls -t .whl/aggkit-*.whl 2>/dev/null | head -1)
if [ -n "$whl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$whl" || exit 1
    export PYTHONPATH=/tmp/site
fi
python3 - <<'PY' 2>&1 | tee "$out/machine.txt"
import torch, aggkit
print("aggkit", aggkit.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
PY
nvidia-smi >> "$out/machine.txt" 2>&1
# The CUDA tests of the torch layer, compiled kernels (a process of their own: the Triton test
# modules switch their own process to the interpreter), then the Triton modules' GPU tests.
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_torch.py tests/test_residency.py -k cuda 2>&1 | tee "$out/tests.txt"
t1=${PIPESTATUS[0]}
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_triton.py -k cuda 2>&1 | tee -a "$out/tests.txt"
t2=${PIPESTATUS[0]}
# Compiled kernels against the Rust core: distances (bitwise for float64), and a median whose
# input has more than 2**31 values (64-bit offsets), on its last columns.
timeout 120 python3 - <<'PY' 2>&1 | tee "$out/checks.txt"
import numpy as np, torch
import aggkit, aggkit.torch as at
from aggkit import _core
from aggkit.torch import _triton_dist as D
ok = True
for n, d in [(10, 100_003), (129, 20_000), (300, 3_000)]:
    for dt in (torch.float64, torch.float32):
        x = torch.randn(n, d, dtype=dt) * 3 + 1
        got = D.pairwise_sq_distances(x.cuda()).cpu().numpy()
        want = _core.pairwise_sq_distances(x.double().numpy())
        same = np.array_equal(got, want) if dt == torch.float64 else np.allclose(got, want, rtol=1e-6)
        ok &= bool(same)
        print(f"distances n={n} d={d} {dt}: {'same' if same else 'DIFFERENT'}")
n, d = 50, 50_000_000  # 2.5e9 values, 10 GB
x = torch.empty(n, d, device="cuda")
for i in range(n):
    x[i].normal_()
y = at.median(x)
tail = x[:, -1000:].cpu().numpy()
same = np.array_equal(y[-1000:].cpu().numpy(), aggkit.median(np.ascontiguousarray(tail)))
ok &= bool(same)
print(f"median of {n}x{d}: last columns {'same' if same else 'DIFFERENT'}; peak",
      torch.cuda.max_memory_allocated() / 1e9, "GB")
raise SystemExit(0 if ok else 1)
PY
t3=${PIPESTATUS[0]}
if [ -n "${QUICK:-}" ]; then
    grid=(--n 10 50 --d 1e6 1e8 --dtype float32)
else
    grid=()
fi
timeout 180 python3 benches/bench_gpu.py "${grid[@]}" --json "$out/bench_gpu.json" 2>&1 \
    | tee "$out/bench_gpu.md"
bench=${PIPESTATUS[0]}
echo "tests $t1 $t2, checks $t3, bench $bench" | tee -a "$out/machine.txt"
[ "$t1$t2$t3$bench" = 0000 ]
