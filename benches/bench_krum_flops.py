"""Krum's distance kernel in GFLOP/s per core, and its exactness on near-identical rows.

    python benches/bench_krum_flops.py [--n 10 50 200 1000] [--dtype float32 float64]

The (n, n) squared distances by direct differences (``aggkit._core.pairwise_sq_distances``,
the kernel Krum, Multi-Krum, Bulyan and NNM use) at n in {10, 50, 200, 1000}, float32 and
float64, on 1 and 2 threads, with the SIMD level in force (``AGGKIT_SIMD`` chooses it). Work is
counted as 3 flops per (pair, coordinate): a subtract, a multiply and an add (n (n - 1) / 2
pairs); the target is 25 GFLOP/s per core. At n = 10 the kernel reads each value once, so it is
bound by memory bandwidth rather than arithmetic (float64 most of all: 1.7 flops per byte).
Exactness: rows = a common vector + 1e-3 noise, the largest relative error against a float64
reference of the same pairs (direct differences in float64).
"""

from __future__ import annotations

import argparse
import sys

import aggkit
import numpy as np
from aggkit import _core
from aggkit._bench import machine_line, read_bandwidth, timed

#: d per n: about 2e8 (pair, coordinate) terms each, and at most 80 MB of float64 input.
SIZES = {10: 5_000_000, 50: 1_000_000, 200: 200_000, 1000: 40_000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    ap.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    args = ap.parse_args()
    print(machine_line(aggkit.get_num_threads(), read_bandwidth(aggkit.get_num_threads())))
    print(f"command: python {' '.join(sys.argv)}\n")
    rng = np.random.default_rng(0)
    print("| n | d | dtype | threads | ms | GFLOP/s | GFLOP/s per core |")
    print("|---|---|---|---|---|---|---|")
    before = aggkit.get_num_threads()
    for n in args.n:
        d = SIZES[n]
        base = rng.standard_normal((n, d))
        for dtype in args.dtype:
            x = base.astype(dtype)
            flops = 3.0 * n * (n - 1) / 2 * d
            for t in (1, 2):
                aggkit.set_num_threads(t)
                s = timed(lambda x=x: _core.pairwise_sq_distances(x), 5, warmup=True)
                gf = flops / s / 1e9
                row = f"| {n} | {d:.0e} | {dtype} | {t} | {s * 1e3:.1f} | {gf:.1f} | {gf / t:.1f} |"
                print(row, flush=True)
    aggkit.set_num_threads(before)
    # exactness on near-identical rows (the case float32 Gram forms get wrong)
    n, d = 40, 200_000
    base = (1 + 0.5 * np.sin(np.arange(d) / 1000)).astype(np.float32)
    x = (base + 1e-3 * rng.random((n, d))).astype(np.float32)
    got = _core.pairwise_sq_distances(x)
    xd = x.astype(np.float64)
    want = np.array([[np.sum((xd[i] - xd[j]) ** 2) for j in range(n)] for i in range(n)])
    off = ~np.eye(n, dtype=bool)
    rel = np.max(np.abs(got[off] - want[off]) / want[off])
    print(f"\nnear-identical rows (n={n}, d={d:.0e}): max relative error vs float64 = {rel:.2e}")


if __name__ == "__main__":
    main()
