"""The median and trimmed mean on each SIMD path this CPU has (one process per level).

    python benches/bench_simd_levels.py avx512    # or avx2, scalar

n in {10, 50}, d = 1e6, float32 and float64, trimmed mean with f = n // 5; median of 7 runs;
GB/s = bytes of x / time.
"""

import statistics
import sys
import time

import aggkit
import numpy as np
from aggkit import _core
from aggkit._bench import machine_line, read_bandwidth


def main() -> None:
    level = sys.argv[1] if len(sys.argv) > 1 else aggkit.simd_level()
    print(machine_line(aggkit.get_num_threads(), read_bandwidth(aggkit.get_num_threads())))
    print(f"command: python {' '.join(sys.argv)}; level in force: {_core._set_simd_level(level)}")
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        for n in (10, 50):
            x = rng.standard_normal((n, 1_000_000)).astype(dt)
            for name, fn in [
                ("median", lambda x=x: aggkit.median(x)),
                ("trimmed_mean", lambda x=x, n=n: aggkit.trimmed_mean(x, f=n // 5)),
            ]:
                fn()
                ts = []
                for _ in range(7):
                    t = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t)
                t = statistics.median(ts)
                print(f"{np.dtype(dt).name} n={n} {name}: {t * 1e3:.1f} ms  {x.nbytes / t / 1e9:.2f} GB/s")


if __name__ == "__main__":
    main()
