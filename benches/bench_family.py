"""aggkit against byzfl and Flower on every rule they share.

    python benches/bench_family.py                     # n = 20, d = 1e5 and 1e6, float32
    python benches/bench_family.py --n 20 --d 1e5 --repeats 3

byzfl 0.0.11 (numpy input; its Clipping and ARC rescale their input in place, so they get a
copy, timed with them: aggkit allocates its output too) and Flower's
``flwr.server.strategy.aggregate`` functions (``aggregate_median``, ``aggregate_trimmed_avg``,
``aggregate_krum``, ``aggregate_bulyan``; inputs as one-layer models). Exponential rules (MDA,
SMEA) run at their own small n. Each cell: median of the repeats, seconds; ratio = peer / aggkit.
The mean's time against the machine's read bandwidth (measured in the same run) is the floor.
"""

from __future__ import annotations

import argparse
import os
import sys

import aggkit
import numpy as np
from aggkit._bench import machine_line, read_bandwidth, timed


def cases(n: int, f: int):
    """(name, aggkit callable, {peer: callable}) over an (n, d) float32 matrix x."""
    import byzfl
    from flwr.server.strategy import aggregate as fl

    def flower(x):
        return [([r], 1) for r in x]

    fk = (n - 3) // 2
    fb = (n - 3) // 4
    return [
        ("mean", lambda x: aggkit.mean(x), {"byzfl": lambda x: byzfl.Average()(x)}),
        (
            "median",
            lambda x: aggkit.median(x),
            {"byzfl": lambda x: byzfl.Median()(x), "flower": lambda x: fl.aggregate_median(flower(x))},
        ),
        (
            f"trimmed_mean f={f}",
            lambda x: aggkit.trimmed_mean(x, f=f),
            {
                "byzfl": lambda x: byzfl.TrMean(f=f)(x),
                "flower": lambda x: fl.aggregate_trimmed_avg(flower(x), f / n),
            },
        ),
        (
            f"krum f={fk}",
            lambda x: aggkit.krum(x, f=fk),
            {"byzfl": lambda x: byzfl.Krum(f=fk)(x), "flower": lambda x: fl.aggregate_krum(flower(x), fk, 0)},
        ),
        (
            f"multi_krum f={fk} m={n - fk}",
            lambda x: aggkit.multi_krum(x, f=fk),
            {
                "byzfl": lambda x: byzfl.MultiKrum(f=fk)(x),
                "flower": lambda x: fl.aggregate_krum(flower(x), fk, n - fk),
            },
        ),
        (
            f"bulyan f={fb}",
            lambda x: aggkit.bulyan(x, f=fb),
            {"flower": lambda x: fl.aggregate_bulyan(flower(x), fb, fl.aggregate_krum, to_keep=0)},
        ),
        (
            "geometric_median (byzfl preset)",
            lambda x: aggkit.geometric_median(x, init="zero", nu=0.1, maxiter=3, ftol=0.0),
            {"byzfl": lambda x: byzfl.GeometricMedian()(x)},
        ),
        ("geometric_median (converged)", lambda x: aggkit.geometric_median(x), {}),
        (f"meamed f={f}", lambda x: aggkit.meamed(x, f=f), {"byzfl": lambda x: byzfl.Meamed(f=f)(x)}),
        (
            "centered_clipping",
            lambda x: aggkit.centered_clipping(x, tau=10.0),
            {"byzfl": lambda x: byzfl.CenteredClipping(tau=10.0)(x)},
        ),
        (f"monna f={f}", lambda x: aggkit.monna(x, f=f), {"byzfl": lambda x: byzfl.MoNNA(f=f)(x)}),
        (f"caf f={f}", lambda x: aggkit.caf(x, f=f), {"byzfl": lambda x: byzfl.CAF(f=f)(x)}),
        (f"nnm f={f}", lambda x: aggkit.NNM(f=f)(x), {"byzfl": lambda x: byzfl.NNM(f=f)(x)}),
        (f"arc f={f}", lambda x: aggkit.ARC(f=f)(x), {"byzfl": lambda x: byzfl.ARC(f=f)(x.copy())}),
        (
            "clipping c=1",
            lambda x: aggkit.Clipping(c=1.0)(x),
            {"byzfl": lambda x: byzfl.Clipping(c=1.0)(x.copy())},
        ),
        (
            "bucketing s=2",
            lambda x: aggkit.Bucketing(s=2, seed=0)(x),
            {"byzfl": lambda x: byzfl.Bucketing(s=2)(x)},
        ),
        ("sign_vote", lambda x: aggkit.sign_vote(x), {"numpy": lambda x: np.sign(np.sign(x).sum(axis=0))}),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--d", type=float, nargs="+", default=[1e5, 1e6])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    threads = aggkit.get_num_threads()
    bw = read_bandwidth(threads)
    print(machine_line(threads, bw))
    print("command: python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]))
    rng = np.random.default_rng(0)
    n, f = args.n, 4
    print("\n| rule | d | aggkit (s) | peer | peer (s) | peer / aggkit |")
    print("|---|---|---|---|---|---|")
    for d in (int(v) for v in args.d):
        x = rng.standard_normal((n, d)).astype(np.float32)
        x[:f] += 5.0  # a few far inputs, so selections have something to do
        floor = n * d * 4 / (bw * 1e9)  # seconds to read x once
        for name, ours, peers in cases(n, f):
            t = timed(lambda ours=ours, x=x: ours(x), args.repeats, warmup=True)
            extra = f" ({floor / t:.0%} of read bandwidth)" if name == "mean" else ""
            if not peers:
                print(f"| {name} | {d:.0e} | {t:.4f}{extra} | | | |")
            for peer, fn in peers.items():
                tp = timed(lambda fn=fn, x=x: fn(x), args.repeats, warmup=True)
                print(f"| {name} | {d:.0e} | {t:.4f}{extra} | {peer} | {tp:.4f} | {tp / t:.1f} |")
        # Exponential subset searches at their own small n.
        import byzfl

        xs = x[:12]
        for name, ours, theirs in (
            ("mda f=2 (n=12)", lambda xs=xs: aggkit.mda(xs, f=2), lambda xs=xs: byzfl.MDA(f=2)(xs)),
            ("smea f=2 (n=12)", lambda xs=xs: aggkit.smea(xs, f=2), lambda xs=xs: byzfl.SMEA(f=2)(xs)),
        ):
            t = timed(ours, args.repeats, warmup=True)
            tp = timed(theirs, max(1, args.repeats // 2), warmup=True)
            print(f"| {name} | {d:.0e} | {t:.4f} | byzfl | {tp:.4f} | {tp / t:.1f} |")


if __name__ == "__main__":
    main()
