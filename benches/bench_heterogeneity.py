"""FLTrust, FoolsGold and DnC against straightforward numpy versions, and the read bandwidth.

    python benches/bench_heterogeneity.py [--n 20 100] [--d 1e5 1e6] [--repeats 5]

For each (n, d), float32 input, the median of ``--repeats`` calls of the aggkit rule and of a
plain numpy implementation of the same definition (float64 copies, ``np.linalg``), their ratio
(above 1: aggkit faster), and aggkit's input read rate as a fraction of the measured streaming
read bandwidth. DnC samples ``b = 10000`` coordinates per iteration (5 iterations), as its
default; FoolsGold runs one round (its history is this round's updates).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import aggkit
import numpy as np
from aggkit._bench import machine_line, read_bandwidth, timed


def np_fltrust(x: np.ndarray, g0: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=1)
    n0 = np.linalg.norm(g0)
    ts = np.maximum(x @ g0 / (norms * n0), 0.0)
    return ((ts * n0 / norms) @ x / ts.sum()).astype(np.float32)


def np_foolsgold(x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64)
    u = h / np.linalg.norm(h, axis=1)[:, None]
    cs = u @ u.T - np.eye(len(h))
    maxcs = cs.max(axis=1) + 1e-5
    pardon = maxcs[:, None] < maxcs[None, :]
    cs = np.where(pardon, cs * maxcs[:, None] / maxcs[None, :], cs)
    wv = np.clip(1 - cs.max(axis=1), 0, 1)
    wv = wv / wv.max()
    wv[wv == 1] = 0.99
    wv = np.clip(np.log(wv / (1 - wv) + 1e-5) + 0.5, 0, 1)
    return (wv @ h / wv.sum()).astype(np.float32)


def np_dnc(x: np.ndarray, f: int, rng: np.random.Generator, b: int = 10000, niters: int = 5) -> np.ndarray:
    n, d = x.shape
    good = set(range(n))
    for _ in range(niters):
        cols = np.sort(rng.choice(d, size=min(b, d), replace=False))
        xs = x[:, cols].astype(np.float64)
        xc = xs - xs.mean(axis=0)
        v = np.linalg.svd(xc, full_matrices=False)[2][0]
        scores = (xc @ v) ** 2
        good &= set(np.argsort(scores, kind="stable")[: n - f].tolist())
    return x[sorted(good)].astype(np.float64).mean(axis=0).astype(np.float32)


def _cases(
    x: np.ndarray, g0: np.ndarray, f: int
) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    return [
        ("fltrust", lambda: aggkit.fltrust(x, reference=g0), lambda: np_fltrust(x, g0)),
        ("foolsgold", lambda: aggkit.foolsgold(x), lambda: np_foolsgold(x)),
        ("dnc", lambda: aggkit.dnc(x, f=f, seed=0), lambda: np_dnc(x, f, np.random.default_rng(0))),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[20, 100])
    p.add_argument("--d", type=float, nargs="+", default=[1e5, 1e6])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    threads = aggkit.get_num_threads()
    bw = read_bandwidth(threads)
    print(machine_line(threads, bw))
    print("\n| rule | n | d | aggkit ms | numpy ms | speedup | % of read BW |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        for d in (int(v) for v in args.d):
            rng = np.random.default_rng(0)
            x = rng.standard_normal((n, d)).astype(np.float32)
            g0 = rng.standard_normal(d)
            for name, ours, theirs in _cases(x, g0, max(1, n // 5)):
                ta = timed(ours, args.repeats, warmup=True)
                tb = timed(theirs, args.repeats, warmup=True)
                gbs = x.nbytes / ta / 1e9
                print(
                    f"| {name} | {n} | {d:.0e} | {1e3 * ta:.1f} | {1e3 * tb:.1f} | {tb / ta:.1f}x | "
                    f"{100 * gbs / bw:.0f} % |"
                )


if __name__ == "__main__":
    main()
