"""aggkit.torch against plain torch on CPU tensors, forward and forward + backward.

    python benches/bench_torch.py                  # n in {10, 50}, d in {1e5, 1e6}
    python benches/bench_torch.py --quick          # a smoke run
    python benches/bench_torch.py --device cuda    # the torch-native path on a GPU

Baselines, all float32 with the same thread count:
- median: ``torch.median(x, dim=0)`` (lower median; aggkit runs with ``even="lower"`` to match);
- trimmed mean: ``torch.sort(x, dim=0).values[f:n-f].mean(0)`` (sort-based), f = n // 5;
- Krum: ``torch.cdist(x, x) ** 2``, the ``n - f - 2`` nearest per row summed, argmin, that row
  (torch's cdist uses the Gram form for large inputs: fast and inexact; aggkit is exact).
"fwd+bwd" adds ``y.sum().backward()`` with ``x.requires_grad_()``. Each figure is the median of
the repeats; the speed-up is baseline time / aggkit time from the same run.
"""

from __future__ import annotations

import argparse
import sys

import aggkit
import aggkit.torch as at
import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from aggkit._bench import machine_line, read_bandwidth, timed


def torch_trimmed_mean(x: torch.Tensor, f: int) -> torch.Tensor:
    n = x.shape[0]
    return torch.sort(x, dim=0).values[f : n - f].mean(dim=0)


def torch_krum_cdist(x: torch.Tensor, f: int) -> torch.Tensor:
    k = x.shape[0] - f - 2
    dist = torch.cdist(x, x) ** 2
    scores = torch.topk(dist, k + 1, dim=1, largest=False).values.sum(dim=1)  # +1: self at 0
    return x[torch.argmin(scores)]


def cases(n: int):
    f = n // 5
    fk = (n - 3) // 2
    return [
        ("median", lambda x: at.median(x, even="lower"), lambda x: torch.median(x, dim=0).values),
        ("trimmed_mean", lambda x: at.trimmed_mean(x, f=f), lambda x: torch_trimmed_mean(x, f)),
        ("krum", lambda x: at.krum(x, f=fk), lambda x: torch_krum_cdist(x, fk)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=[10, 50])
    ap.add_argument("--d", type=float, nargs="*", default=[1e5, 1e6])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.repeats = [10], [1e5], 2
    threads = aggkit.get_num_threads()
    torch.set_num_threads(threads)
    if args.device == "cpu":
        print(machine_line(threads, read_bandwidth(threads)))
    else:
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"command: python {' '.join(sys.argv)}")
    print("| rule | n | d | pass | aggkit ms | torch ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for n in args.n:
        for d in map(int, args.d):
            x0 = torch.randn(n, d, generator=g).to(args.device)
            for name, ours, theirs in cases(n):
                for mode in ("fwd", "fwd+bwd"):
                    if mode == "fwd":
                        x = x0

                        def run(fn, x=x):
                            with torch.no_grad():
                                fn(x)

                    else:
                        x = x0.clone().requires_grad_(True)

                        def run(fn, x=x):
                            x.grad = None
                            fn(x).sum().backward()

                    ta = timed(lambda run=run, ours=ours: run(ours), args.repeats, args.device, warmup=True)
                    tb = timed(
                        lambda run=run, theirs=theirs: run(theirs), args.repeats, args.device, warmup=True
                    )
                    row = f"| {name} | {n} | {d:.0e} | {mode} | {ta * 1e3:.1f} | {tb * 1e3:.1f} |"
                    print(f"{row} {tb / ta:.1f}x |")
                    sys.stdout.flush()


if __name__ == "__main__":
    main()
