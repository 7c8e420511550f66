"""aggkit on CUDA tensors against torch: median, trimmed mean and Krum, with bandwidth and memory.

    python benches/bench_gpu.py                          # the grid below, on the GPU
    python benches/bench_gpu.py --n 50 --d 1e8           # one point
    python benches/bench_gpu.py --quick                  # seconds; on CPU tensors if no GPU
    python benches/bench_gpu.py --json figures.json      # also write the rows as JSON

For each (n, d, dtype) of ``--n`` x ``--d`` x ``--dtype`` (default n 10/50/200/1000, d 1e6/1e8,
float32 and bfloat16) and each rule, the median time of ``--repeats`` calls after a warm-up,
with ``torch.cuda.synchronize()`` around each, of:

* ``aggkit.torch.median`` against ``torch.median(x, dim=0)`` (torch's lower median, which
  sorts);
* ``aggkit.torch.trimmed_mean`` (``f = n // 5``) against a sort-based trimmed mean,
  ``torch.sort(x, dim=0).values[f:n-f].mean(dim=0)``;
* ``aggkit.torch.krum`` (``f = n // 5``) against a ``torch.cdist`` Krum (distances in the input
  dtype, float32 for half precision, which ``cdist`` lacks; ``topk`` scores);
* ``aggkit.torch.meamed`` (``f = n // 5``) against ``topk`` of the distances to
  ``torch.median`` and a mean of the gathered values;
* ``aggkit.torch.median`` with weights ``1..n`` against a sort and a ``cumsum`` of the weights
  (the lower weighted median).

``--rules`` picks some of them.

Columns: aggkit's ms and the baseline's, the speed-up, aggkit's input read rate in GB/s
(``n * d * itemsize`` bytes per call) and that rate as a % of the device's copy bandwidth
measured at the start (``copy_`` of a 2 GiB buffer: bytes read plus bytes written per second,
the best of 5; a kernel that only reads reaches about 100 % when it reads at the rate a copy
moves bytes), and each side's peak extra device memory (``torch.cuda.max_memory_allocated``
during the calls, less the input). A point whose input would take more than 40 % of the free
device memory is skipped; a call that runs out of memory is reported as ``OOM``. ``path`` says
which kernels aggkit ran: ``triton`` or the torch-native fallback.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import aggkit
import aggkit.torch as at
import torch
from aggkit._bench import timed
from aggkit._cli import size
from aggkit.torch import _paths

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def copy_bandwidth(device: torch.device, gib: float = 2.0) -> float:
    """Device copy bandwidth in GB/s: (bytes read + bytes written) per second, best of 5."""
    src = torch.ones(int(gib * 2**30) // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    nbytes = 2 * src.numel() * 4

    def copy() -> None:
        dst.copy_(src)

    return max(nbytes / timed(copy, 1, device.type, warmup=True) / 1e9 for _ in range(5))


def torch_trimmed_mean(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    return torch.sort(x, dim=0).values[f : n - f].mean(dim=0)


def torch_krum(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # cdist has no half kernels
    dist = torch.cdist(xf[None], xf[None])[0].square()
    dist.fill_diagonal_(float("inf"))
    scores = dist.topk(n - f - 2, dim=1, largest=False).values.sum(dim=1)
    return x[int(scores.argmin())]


def measure(fn: Callable[[], object], x: torch.Tensor, repeats: int) -> tuple[float, float] | None:
    """``(median seconds, peak extra bytes)`` of ``fn``; ``None`` if it ran out of memory or failed."""
    cuda = x.device.type == "cuda"
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t = timed(fn, repeats, x.device.type, warmup=True)
        peak = float(torch.cuda.max_memory_allocated() - base) if cuda else float("nan")
        return t, peak
    except torch.cuda.OutOfMemoryError:
        if cuda:
            torch.cuda.empty_cache()
        return None
    except Exception as e:  # one failing case must not lose the others' figures
        print(f"  ({type(e).__name__}: {str(e)[:200]})", flush=True)
        return None


def torch_meamed(x: torch.Tensor, f: int) -> torch.Tensor:
    med = torch.median(x, dim=0).values
    idx = (x - med).abs().topk(x.shape[0] - f, dim=0, largest=False).indices
    return x.gather(0, idx).float().mean(dim=0)


def torch_weighted_median(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    values, order = torch.sort(x, dim=0)
    c = w[order].cumsum(0)
    r = (2 * c >= c[-1:]).to(torch.uint8).argmax(0, keepdim=True)
    return values.gather(0, r)[0]


RULES = ("median", "trimmed_mean", "krum", "meamed", "weighted_median")


def cases(
    n: int, rules: list[str]
) -> list[tuple[str, Callable[[torch.Tensor], object], Callable[[torch.Tensor], object]]]:
    f = n // 5
    w = torch.arange(1.0, n + 1, dtype=torch.float64)
    all_cases = {
        "median": (lambda x: at.median(x), lambda x: torch.median(x, dim=0)),
        "trimmed_mean": (lambda x: at.trimmed_mean(x, f=f), lambda x: torch_trimmed_mean(x, f)),
        "krum": (lambda x: at.krum(x, f=f), lambda x: torch_krum(x, f)),
        "meamed": (lambda x: at.meamed(x, f=f), lambda x: torch_meamed(x, f)),
        "weighted_median": (
            lambda x: at.median(x, weights=w),
            lambda x: torch_weighted_median(x, w.to(x.device)),
        ),
    }
    return [(name, *all_cases[name]) for name in rules]


def machine_line(device: torch.device, bw: float) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU tensors (no GPU)"
    triton_v = "not installed"
    try:
        import triton

        triton_v = triton.__version__
    except ImportError:
        pass
    return (
        f"{name}, torch {torch.__version__}, triton {triton_v}, aggkit {aggkit.__version__}; "
        f"device copy bandwidth measured: {bw:.0f} GB/s"
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50, 200, 1000])
    ap.add_argument("--d", type=size, nargs="+", default=[1_000_000, 100_000_000])
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=sorted(DTYPES))
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="n 10/50, d 1e5, float32, 3 repeats")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.d, args.dtype, args.repeats = [10, 50], [100_000], ["float32"], 3
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bw = copy_bandwidth(device, 2.0 if device.type == "cuda" else 0.25)
    print(machine_line(device, bw))
    print()
    print(
        "| rule | n | d | dtype | path | aggkit ms | torch ms | speed-up | GB/s | % of copy BW "
        "| aggkit extra MB | torch extra MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    gen = torch.Generator(device=device).manual_seed(0)
    for dname in args.dtype:
        dtype = DTYPES[dname]
        itemsize = torch.empty((), dtype=dtype).element_size()
        for n in args.n:
            for d in args.d:
                nbytes = n * d * itemsize
                if device.type == "cuda" and nbytes > 0.4 * torch.cuda.mem_get_info(device)[0]:
                    print(f"| (skipped: n={n} d={d:.0e} {dname} needs {nbytes / 1e9:.0f} GB) |")
                    continue
                x = torch.empty(n, d, device=device, dtype=dtype)
                for i in range(n):  # row by row: no float32 copy of the whole input
                    x[i] = torch.randn(d, generator=gen, device=device, dtype=torch.float32)
                path = "triton" if _paths.use_triton(x) else ("rust" if _paths.rust(x) else "torch-native")
                for name, ours, theirs in cases(n, args.rules):
                    a = measure(lambda f=ours, x=x: f(x), x, args.repeats)
                    b = measure(lambda f=theirs, x=x: f(x), x, args.repeats)
                    row: dict[str, Any] = {"rule": name, "n": n, "d": d, "dtype": dname, "path": path}
                    row["aggkit_ms"] = None if a is None else a[0] * 1e3
                    row["torch_ms"] = None if b is None else b[0] * 1e3
                    row["aggkit_extra_mb"] = None if a is None else a[1] / 1e6
                    row["torch_extra_mb"] = None if b is None else b[1] / 1e6
                    row["gb_s"] = None if a is None else nbytes / a[0] / 1e9
                    row["pct_copy_bw"] = None if a is None else 100 * nbytes / a[0] / 1e9 / bw
                    rows.append(row)
                    if args.json:  # after every row: a later failure keeps what was measured
                        with open(args.json, "w") as fh:
                            json.dump({"machine": machine_line(device, bw), "rows": rows}, fh, indent=1)

                    def fmt(v: float | None, spec: str) -> str:
                        return "OOM" if v is None else format(v, spec)

                    speed = None if a is None or b is None else b[0] / a[0]
                    print(
                        f"| {name} | {n} | {d:.0e} | {dname} | {path} | {fmt(row['aggkit_ms'], '.2f')} "
                        f"| {fmt(row['torch_ms'], '.2f')} | {fmt(speed, '.1f')}x | {fmt(row['gb_s'], '.0f')} "
                        f"| {fmt(row['pct_copy_bw'], '.0f')} % | {fmt(row['aggkit_extra_mb'], '.1f')} "
                        f"| {fmt(row['torch_extra_mb'], '.1f')} |",
                        flush=True,
                    )
                x = torch.empty(0)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n{time.perf_counter() - t0:.0f} s")
