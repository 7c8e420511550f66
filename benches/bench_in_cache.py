"""Compute cost against memory cost per coordinate: is a rule compute- or memory-bound at n?

    python benches/bench_in_cache.py [n ...]        (default: 10 16 50 100 200)

For each n, float32, one thread: the marginal time per coordinate with the input in the L3
cache, (t(d2) - t(d1)) / (d2 - d1) for inputs of about 4 and 8 MB (medians of 101 calls; the
difference removes the fixed cost of a call, tens of microseconds with the thread pool), against
the time per coordinate at d = 1e6 (input in DRAM, median of 7), and the read time per
coordinate at the streaming read bandwidth this script measures (two threads share it, so one
thread's share is half). A rule whose in-cache
cost is a large fraction of the DRAM read cost cannot reach that bandwidth on this machine
without overlapping its compute with the reads perfectly.
"""

import statistics
import sys
import time

import aggkit
import numpy as np
from aggkit._bench import machine_line, read_bandwidth


def seconds(rule, x: np.ndarray, reps: int) -> float:
    rule(x)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        rule(x)
        ts.append(time.perf_counter() - t)
    return min(ts) if reps > 10 else statistics.median(ts)


def main() -> None:
    ns = [int(a) for a in sys.argv[1:]] or [10, 16, 50, 100, 200]
    bw = read_bandwidth(2)
    aggkit.set_num_threads(1)
    print(machine_line(1, bw))
    print(f"command: python benches/bench_in_cache.py {' '.join(map(str, ns))}")
    print("ns per coordinate, one thread: in L3 (marginal) / from DRAM | read at half the bandwidth")
    rng = np.random.default_rng(0)
    for n in ns:
        f = max(1, n // 10)
        read = n * 4 / (bw / 2)
        d2 = max(8192, (8 << 20) // (4 * n) // 4096 * 4096)
        x1 = rng.standard_normal((n, d2 // 4), dtype=np.float32)
        x2 = rng.standard_normal((n, d2), dtype=np.float32)
        xl = rng.standard_normal((n, 1_000_000), dtype=np.float32)
        cells = []
        for name, rule in [
            ("mean", aggkit.mean),
            ("median", aggkit.median),
            ("trimmed_mean", lambda x, f=f: aggkit.trimmed_mean(x, f=f)),
        ]:
            c = (seconds(rule, x2, 101) - seconds(rule, x1, 101)) / (d2 - d2 // 4) * 1e9
            m = seconds(rule, xl, 7) / 1_000_000 * 1e9
            cells.append(f"{name} {c:.2f} / {m:.2f}")
        print(f"n={n}: " + ", ".join(cells) + f" | read {read:.2f}")


if __name__ == "__main__":
    main()
