"""DETOX against Multi-Krum over all n workers: the cost as n grows.

    python benches/bench_detox.py                 # n in {15, 45, 99, 195}, d = 1e6, r = 3
    python benches/bench_detox.py --n 15 45 --d 1e5

float32 vectors from r-redundant workers (the members of a group hold the same shard gradient),
q = max(1, n // 15) Byzantine workers (colluding, a random set; few enough that the
Multi-Krum preset's buckets can hold 2 f_eff + 3 winners). DETOX: exact vote (Rust) + median of
bucket means (b = 2 f_eff + 1), and the Multi-Krum preset; baseline: aggkit's own Multi-Krum
over all n workers (f = q, m = n - q; exact distances, the fastest Multi-Krum we know of, so
the ratio is DETOX's algorithmic saving, not a slow baseline). Median of the repeats.
"""

from __future__ import annotations

import argparse
import os
import sys

import aggkit
import numpy as np
from aggkit._bench import machine_line, read_bandwidth, timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[15, 45, 99, 195])
    ap.add_argument("--d", type=float, default=1e6)
    ap.add_argument("--r", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    print(machine_line(threads, read_bandwidth(threads)))
    print(f"command: python {' '.join(sys.argv)}\n")
    print("| n | d | q | f_eff | DETOX median ms | DETOX Multi-Krum ms | Multi-Krum (all n) ms | "
          "Multi-Krum / DETOX median |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    d, r = int(args.d), args.r
    rng = np.random.default_rng(0)
    for n in args.n:
        q = max(1, n // 15)
        f_eff = aggkit.effective_f(q, r)
        shard = rng.standard_normal((n // r, d), dtype=np.float32)
        x = np.repeat(shard, r, axis=0)
        x[rng.choice(n, q, replace=False)] = -100.0
        t_detox = timed(lambda x=x, q=q: aggkit.detox_median(x, q=q), args.repeats, warmup=True)
        g = n // r
        try:
            t_dmk = timed(lambda x=x, q=q: aggkit.detox_multikrum(x, q=q), args.repeats, warmup=True)
            dmk = f"{t_dmk * 1e3:.0f}"
        except aggkit.AggkitError:
            dmk = f"— (g={g} too few for 2 buckets)"
        t_mk = timed(lambda x=x, q=q, n=n: aggkit.multi_krum(x, f=q, m=n - q), args.repeats, warmup=True)
        print(f"| {n} | {d:.0e} | {q} | {f_eff} | {t_detox * 1e3:.0f} | {dmk} | {t_mk * 1e3:.0f} | "
              f"{t_mk / t_detox:.1f}x |")  # fmt: skip
        sys.stdout.flush()


if __name__ == "__main__":
    main()
