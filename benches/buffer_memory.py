"""Peak memory and time of a round collected in a spilled ``aggkit.UpdateBuffer``.

    python benches/buffer_memory.py --n 100 --d 1e7 --spill-dir /tmp

Appends ``n`` float32 updates of ``d`` values one at a time (each generated, appended, then
dropped, as a server receives them), then aggregates the block with the median and with
Multi-Krum, and compares with the same rules on an in-memory copy when ``--check`` is given
(that copy needs ``n x d x 4`` bytes of memory). Memory is sampled every 5 ms: the peak of the
process's anonymous resident memory (``RssAnon``), of the mapped file's resident pages
(``RssFile``: the buffer unmaps them as it goes, they stay in the page cache), and of the
whole (``VmRSS``, what ``top`` shows, shared memory included: a spill directory on tmpfs
shows there). ``--dtype bfloat16`` keeps the round in bfloat16 (half
the disk; needs ml_dtypes).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time

import aggkit
import numpy as np


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class Peak:
    """The peak of /proc/self/status fields while the block runs."""

    def __init__(self) -> None:
        self.anon = self.file = self.rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.anon = max(self.anon, _status("RssAnon"))
            self.file = max(self.file, _status("RssFile"))
            self.rss = max(self.rss, _status("VmRSS"))
            time.sleep(0.005)

    def __enter__(self) -> Peak:
        self.base = _status("RssAnon")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=float, default=1e7)
    ap.add_argument("--spill-dir", default=tempfile.gettempdir())
    ap.add_argument("--check", action="store_true", help="compare with the in-memory call")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument(
        "--cheap", action="store_true", help="updates as scaled copies of 4 random vectors (fast to make)"
    )
    args = ap.parse_args()
    n, d = args.n, int(args.d)
    if args.dtype == "bfloat16":
        import ml_dtypes

        dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        dtype = np.dtype(np.float32)
    gb = n * d * dtype.itemsize / 1e9
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"SIMD {aggkit.simd_level()}, threads {aggkit.get_num_threads()}"
    )
    print(f"# n={n} d={d:.0e} {dtype}: {gb:.1f} GB of updates in {args.spill_dir}")
    rng = np.random.default_rng(0)
    bases = [rng.standard_normal(d, dtype=np.float32).astype(dtype) for _ in range(4)] if args.cheap else []

    def update(i: int) -> np.ndarray:
        if bases:
            return bases[i % 4] * dtype.type(1.0 + 0.01 * i)
        return rng.standard_normal(d, dtype=np.float32).astype(dtype)

    with aggkit.UpdateBuffer(d, dtype, n_max=n, spill_dir=args.spill_dir) as buf:
        with Peak() as p:
            t0 = time.perf_counter()
            for i in range(n):
                u = update(i)
                buf.append(u)
                del u
            t_append = time.perf_counter() - t0
        print(
            f"append: {t_append:.1f} s ({gb / t_append:.2f} GB/s incl. making the updates), "
            f"peak RssAnon {p.anon / 1e9:.2f} GB (+{(p.anon - p.base) / 1e9:.2f} GB over the start), "
            f"peak RssFile {p.file / 1e9:.2f} GB, peak VmRSS {p.rss / 1e9:.2f} GB"
        )
        results = {}
        for name, params in (("median", {}), ("multi_krum", {"f": n // 10, "m": n // 2})):
            with Peak() as p:
                t0 = time.perf_counter()
                results[name] = buf.aggregate(name, **params)
                t = time.perf_counter() - t0
            out_gb = d * dtype.itemsize / 1e9
            print(
                f"{name:10s}: {t:.1f} s ({gb / t:.2f} GB/s read), peak RssAnon {p.anon / 1e9:.2f} GB "
                f"(+{(p.anon - p.base) / 1e9:.2f} GB over the start; output {out_gb:.2f} GB), "
                f"peak RssFile {p.file / 1e9:.2f} GB, peak VmRSS {p.rss / 1e9:.2f} GB"
            )
        if args.check:
            x = np.array(buf.rows())
            for name, params in (("median", {}), ("multi_krum", {"f": n // 10, "m": n // 2})):
                same = aggkit.rule(name, **params)(x).tobytes() == results[name].tobytes()
                print(f"{name}: bit-identical to the in-memory call: {same}")


if __name__ == "__main__":
    main()
