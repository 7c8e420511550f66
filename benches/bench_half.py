"""Half-precision input read in place: speed against the float32 call, and peak memory.

    python benches/bench_half.py [--n 10 50 200 1000] [--values 2e7] [--memory-d 1e7]

Speed: for each n (d = values / n), the median of 5 calls of each rule on float32, float16 and
bfloat16 input holding the same values, and each half-precision call's speed in coordinates
per second relative to the float32 call (above 1: faster).

Memory: in a fresh process per case, the peak resident memory a call adds over the input
(Linux's VmHWM, reset before the call through /proc/self/clear_refs) at n = 50,
d = --memory-d, for the rule on the bfloat16 input as it is, and for the way it ran before the
kernels read half precision (a float32 copy of the input, then the rule on it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import aggkit
import ml_dtypes
import numpy as np
from aggkit._bench import machine_line, read_bandwidth, timed

RULES = {
    "mean": lambda x: aggkit.mean(x),
    "median": lambda x: aggkit.median(x),
    "trimmed_mean": lambda x: aggkit.trimmed_mean(x, f=max(1, x.shape[0] // 10)),
    "multi_krum": lambda x: aggkit.multi_krum(x, f=max(1, x.shape[0] // 10), m=x.shape[0] // 2),
}

_CHILD = r"""
import sys, numpy as np, ml_dtypes, aggkit
rule, how, n, d = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
f = max(1, n // 10)
call = {"mean": lambda x: aggkit.mean(x), "median": lambda x: aggkit.median(x),
        "trimmed_mean": lambda x: aggkit.trimmed_mean(x, f=f),
        "multi_krum": lambda x: aggkit.multi_krum(x, f=f, m=n // 2)}[rule]
x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32).astype(ml_dtypes.bfloat16)
call(x[:, :1000])  # thread pool and plans
def kb(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(key))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
base = kb("VmRSS:")
out = call(x) if how == "in place" else call(x.astype(np.float32)).astype(x.dtype)
print((kb("VmHWM:") - base) / 1024, x.nbytes / 2**20, out.dtype)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50, 200, 1000])
    ap.add_argument("--values", type=float, default=2e7, help="n * d per case")
    ap.add_argument("--memory-d", type=float, default=1e7)
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    args = ap.parse_args()
    print(machine_line(aggkit.get_num_threads(), read_bandwidth(aggkit.get_num_threads())))
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| n | d | rule | float32 ms | float16 ms | bfloat16 ms | float16 / bfloat16 speed vs float32 |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in args.n:
        d = int(args.values) // n
        x32 = rng.standard_normal((n, d), dtype=np.float32)
        xs = [x32, x32.astype(np.float16), x32.astype(ml_dtypes.bfloat16)]
        for name in args.rules:
            call = RULES[name]
            t = [timed(lambda x=x, call=call: call(x), 5, warmup=True) for x in xs]
            print(
                f"| {n} | {d:.0e} | {name} | {t[0] * 1e3:.1f} | {t[1] * 1e3:.1f} | {t[2] * 1e3:.1f} "
                f"| {t[0] / t[1]:.2f} / {t[0] / t[2]:.2f} |",
                flush=True,
            )
    n, d = 50, int(args.memory_d)
    print(f"\nPeak memory a call adds over its input (n = {n}, d = {d:.0e}, bfloat16), MiB:\n")
    print("| rule | input MiB | read in place | float32 copy first (before) |")
    print("|---|---|---|---|")
    env = dict(os.environ)
    for name in args.rules:
        got = {}
        for how in ("in place", "copy"):
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, name, how, str(n), str(d)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.split()
            got[how] = float(out[0])
            size = float(out[1])
        print(f"| {name} | {size:.0f} | {got['in place']:.0f} | {got['copy']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
