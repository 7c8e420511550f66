"""aggkit against numpy / torch baselines, with the machine's read bandwidth measured in the same run.

``aggkit bench`` runs this (``benches/bench_rules.py`` is the same program)::

    aggkit bench                       # the full grid (n 10/50/200, d 1e5/1e6/1e7), ~25 min, 8 GB
    aggkit bench --n 50 --d 1e6        # one point
    aggkit bench --quick               # a smoke run in seconds
    aggkit bench --large               # n from 500 to 10,000 at d = 1e5 (4 GB at n = 10,000)

For each (n, d) and dtype (float32 unless ``--dtype`` says more: float64, float16, and bfloat16
with ml_dtypes): median time of the repeats in ms, GB/s of input read (itemsize·n·d bytes per
call), that rate as a % of the streaming read
bandwidth measured at the start, and the speed-up over each baseline (baseline time / aggkit
time, both medians in this run). A baseline whose projected time exceeds --budget seconds is
skipped and marked so. Shared machines are noisy: compare the ratios, not the absolute numbers.

Baselines: np.median(axis=0); a numpy trimmed mean (np.partition then mean, as Flower's
FedTrimmedAvg); torch.median(dim=0) when torch is installed (lower median, same thread count);
a numpy Krum in Flower's form (the Gram identity in the input's dtype through BLAS: fast, but it
is the inexact method aggkit refuses; aggkit computes exact direct differences).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

import aggkit

torch: Any
try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None


def timed(fn: Callable[[], object], repeats: int, device: str = "cpu", warmup: bool = False) -> float:
    """Median wall time in seconds over ``repeats`` calls of ``fn``.

    ``warmup`` makes one untimed call first (kernels compiled, memory allocated); on a CUDA
    ``device`` every timed call is bracketed by ``torch.cuda.synchronize()``. Every benchmark
    script times through this one function.
    """

    def sync() -> None:
        if device == "cuda":
            import torch

            torch.cuda.synchronize()

    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_bandwidth(threads: int, gib: float = 1.0) -> float:
    """Streaming read bandwidth in GB/s: numpy sums over a buffer far larger than the caches."""
    buf = np.ones(int(gib * 2**30) // 4, dtype=np.float32)
    parts = np.array_split(buf, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))  # numpy releases the GIL in large reductions
            best = max(best, buf.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def np_trimmed_mean(x: np.ndarray, f: int) -> np.ndarray:
    n = x.shape[0]
    out: np.ndarray = np.partition(x, (f, n - f - 1), axis=0)[f : n - f].mean(axis=0)
    return out


def np_krum_gram(x: np.ndarray, f: int) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    dist = sq[:, None] + sq[None, :] - 2 * (x @ x.T)
    np.fill_diagonal(dist, np.inf)
    k = x.shape[0] - f - 2
    scores = np.sort(dist, axis=1)[:, :k].sum(axis=1)
    out: np.ndarray = x[int(np.argmin(scores))]
    return out


def machine_line(threads: int, bw: float) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    tv = torch.__version__ if torch is not None else "not installed"
    return (
        f"{cpu}, {os.cpu_count()} CPUs, threads={threads}, aggkit {aggkit.__version__} "
        f"(SIMD {aggkit.simd_level()}), numpy {np.__version__}, torch {tv}, "
        f"Python {sys.version.split()[0]}; streaming read bandwidth measured: {bw:.1f} GB/s"
    )


def run(argv: list[str] | None = None) -> int:
    """Run the benchmark grid with command-line arguments ``argv``; print a Markdown table."""
    from aggkit._cli import Formatter, paragraphs, positive_float, positive_int, size

    ap = argparse.ArgumentParser(
        prog="aggkit bench",
        formatter_class=Formatter,
        description=paragraphs(
            "aggkit against numpy / torch baselines, with the machine's read bandwidth measured "
            "in the same run. Prints a Markdown table: per (n, d, dtype, rule), aggkit's median "
            "time, GB/s read, % of the read bandwidth, and the speed-up over each baseline.",
            "The default grid takes about 25 minutes and 8 GB; --quick takes seconds.",
        ),
    )
    ap.add_argument("--n", type=positive_int, nargs="+", default=[10, 50, 200], help="numbers of inputs")
    ap.add_argument(
        "--d",
        type=size,
        nargs="+",
        default=[100_000, 1_000_000, 10_000_000],
        help="values per input (1e6 is read as 1000000)",
    )
    ap.add_argument(
        "--threads", type=positive_int, default=os.cpu_count() or 1, help="threads for aggkit and torch"
    )
    ap.add_argument(
        "--repeats", type=positive_int, default=5, help="timed calls per point (the median is shown)"
    )
    ap.add_argument(
        "--budget", type=positive_float, default=30.0, help="max projected seconds for one baseline call"
    )
    ap.add_argument(
        "--rules",
        nargs="+",
        default=["mean", "median", "trimmed_mean", "krum"],
        choices=["mean", "median", "trimmed_mean", "krum"],
        help="rules to time",
    )
    ap.add_argument(
        "--dtype",
        nargs="+",
        default=["float32"],
        choices=["float32", "float64", "float16", "bfloat16"],
        help="input dtypes (bfloat16 needs ml_dtypes)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="n 10/50, d 1e5, 3 repeats (replaces --n, --d and --repeats)"
    )
    ap.add_argument(
        "--large",
        action="store_true",
        help="large n: n 500/1000/2000/5000/10000, d 1e5, median and trimmed mean, 3 repeats "
        "(replaces --n, --d, --rules and --repeats)",
    )
    args = ap.parse_args(argv)
    for preset, sets in (("--quick", ("n", "d", "repeats")), ("--large", ("n", "d", "repeats", "rules"))):
        given = [f"--{k}" for k in sets if getattr(args, k) != ap.get_default(k)]
        if getattr(args, preset[2:]) and given:
            ap.error(
                f"{preset} sets {', '.join('--' + k for k in sets)}; drop {', '.join(given)} or {preset}"
            )
    if args.quick and args.large:
        ap.error("give --quick or --large, not both")
    try:
        aggkit.set_num_threads(args.threads)
    except aggkit.InvalidParameterError as e:
        ap.error(f"--threads: {e}")
    if args.quick:
        args.n, args.d, args.repeats = [10, 50], [100_000], 3
    if args.large:
        args.n, args.d, args.repeats = [500, 1000, 2000, 5000, 10000], [100_000], 3
        args.rules = ["median", "trimmed_mean"]

    itemsize = max(_dtype(name).itemsize for name in args.dtype)
    need = max(args.n) * max(args.d) * (4 + itemsize)  # the float32 input and one copy
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    if memory and need > memory:
        ap.error(
            f"the largest input (n={max(args.n)}, d={max(args.d)}) needs at least {need / 1e9:.0f} GB "
            f"with one copy; this machine has {memory / 1e9:.0f} GB"
        )
    if torch is not None:
        torch.set_num_threads(args.threads)
    bw = read_bandwidth(args.threads)
    print(machine_line(args.threads, bw))
    print(f"command: aggkit bench {' '.join(sys.argv[1:] if argv is None else argv)}\n")
    print("| n | d | dtype | rule | aggkit ms | GB/s | % of read BW | baseline | baseline ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for d in args.d:
        for n in args.n:
            x = rng.standard_normal((n, d), dtype=np.float32)
            for dtype in args.dtype:
                bench_point(x if dtype == "float32" else x.astype(_dtype(dtype)), args, bw)
    return 0


def _dtype(name: str) -> Any:
    """The numpy dtype called ``name``: ml_dtypes' for bfloat16."""
    if name != "bfloat16":
        return np.dtype(name)
    try:
        import ml_dtypes
    except ImportError:
        raise SystemExit("aggkit bench: --dtype bfloat16 needs ml_dtypes (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def _torch_view(x: np.ndarray) -> Any:
    """``x`` as a CPU tensor without a copy (bfloat16 through its bit patterns)."""
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def bench_point(x: np.ndarray, args: argparse.Namespace, bw: float) -> None:
    """Time every requested rule and its baselines on one (n, d) input; print table rows."""
    n, d = x.shape
    f = max(1, n // 10) if n >= 5 else 0
    fk = (n - 3) // 4  # Krum: a quarter of the admissible range
    gb = x.nbytes / 1e9
    tx = _torch_view(x) if torch is not None else None
    rules: dict[str, tuple[Callable[[], object], list[tuple[str, Callable[[], object]]]]] = {
        "mean": (lambda: aggkit.mean(x), [("np.mean(axis=0)", lambda: x.mean(axis=0))]),
        "median": (
            lambda: aggkit.median(x),
            [("np.median(axis=0)", lambda: np.median(x, axis=0))]
            + ([("torch.median(dim=0)", lambda: tx.median(dim=0))] if tx is not None else []),
        ),
        "trimmed_mean": (
            lambda: aggkit.trimmed_mean(x, f=f),
            [("np.partition + mean", lambda: np_trimmed_mean(x, f))],
        ),
        "krum": (
            lambda: aggkit.krum(x, f=fk),
            [("numpy Krum (Gram identity, Flower's form)", lambda: np_krum_gram(x, fk))],
        ),
    }
    for name in args.rules:
        ours, baselines = rules[name]
        if name == "krum" and n < 3:
            print(f"| {n} | {d:.0e} | {x.dtype} | krum | needs n >= 3 | — | — | — | — | — |")
            continue
        ours()  # warm-up: thread pool, page faults of the output
        t = timed(ours, args.repeats)
        label = {"trimmed_mean": f"trimmed_mean f={f}", "krum": f"krum f={fk}"}.get(name, name)
        pct = 100 * gb / t / bw
        head = f"| {n} | {d:.0e} | {x.dtype} | {label} | {t * 1e3:.1f} | {gb / t:.2f} | {pct:.0f} % "
        for bname, bfn in baselines:
            try:
                if bname.startswith("numpy Krum") and x.dtype.itemsize == 2:
                    raise TypeError("no BLAS in half precision (numpy's matmul overflows)")
                projected = _project(bname, n, max(1, d // 100), d, f, fk, x.dtype)
            except TypeError:  # numpy's reductions on ml_dtypes' bfloat16
                print(f"{head}| {bname} | not available for {x.dtype} | — |")
                continue
            if projected > args.budget:
                print(f"{head}| {bname} | skipped (> {args.budget:.0f} s projected) | — |")
                continue
            bt = timed(bfn, 1 if projected > 2 else 3)
            print(f"{head}| {bname} | {bt * 1e3:.1f} | {bt / t:.1f}x |")
        sys.stdout.flush()


def _project(bname: str, n: int, small: int, d: int, f: int, fk: int, dtype: np.dtype[Any]) -> float:
    """Time a baseline on d/100 coordinates and scale linearly (they are all O(d))."""
    xs = np.random.default_rng(1).standard_normal((n, small), dtype=np.float32).astype(dtype)
    fns = {
        "np.mean(axis=0)": lambda: xs.mean(axis=0),
        "np.median(axis=0)": lambda: np.median(xs, axis=0),
        "np.partition + mean": lambda: np_trimmed_mean(xs, f),
        "numpy Krum (Gram identity, Flower's form)": lambda: np_krum_gram(xs, fk),
    }
    if torch is not None:
        txs = _torch_view(xs)
        fns["torch.median(dim=0)"] = lambda: txs.median(dim=0)
    return timed(fns[bname], 1) * d / small
