"""``python -m aggkit demo``: what robust aggregation buys, in ten seconds."""

from __future__ import annotations

import argparse
import sys

import numpy as np

import aggkit


def demo(seed: int = 0) -> None:
    """Aggregate 7 honest client updates and 3 Byzantine ones with every rule."""
    rng = np.random.default_rng(seed)
    d, honest_n, f = 6, 7, 3
    true = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0], dtype=np.float32)
    honest = true + 0.1 * rng.standard_normal((honest_n, d)).astype(np.float32)
    byzantine = np.stack(
        [
            np.full(d, 1e6, np.float32),  # large values
            -10.0 * true,  # sign flip
            np.full(d, np.nan, np.float32),  # a NaN update
        ]
    )
    x = np.concatenate([honest, byzantine])
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    print(f"{honest_n} honest clients send the true update plus noise:  {true}")
    print("3 Byzantine clients send: all 1e6, a sign flip (x -10), all NaN")
    print(f"n = {len(x)} updates of d = {d}; the robust rules are told f = {f}\n")
    print(f"{'rule':<34} {'output':<60} error vs true")
    rows = [
        ("mean of the honest clients only", aggkit.mean(honest)),
        ("mean (FedAvg)", aggkit.mean(x, nonfinite="propagate")),
        ("mean, non-finite inputs dropped", aggkit.mean(x)),
        ("median", aggkit.median(x)),
        (f"trimmed_mean(f={f})", aggkit.trimmed_mean(x, f=f)),
        (f"krum(f={f})", aggkit.krum(x, f=f)),
        (f"multi_krum(f={f})", aggkit.multi_krum(x, f=f)),
    ]
    for name, y in rows:
        err = float(np.linalg.norm(y.astype(np.float64) - true))
        print(f"{name:<34} {np.array2string(y):<60} {err:.3g}")
    _, sel = aggkit.multi_krum(x, f=f, return_selection=True)
    print(f"\nmulti_krum kept clients {sorted(sel.indices.tolist())}; scores {sel.scores.round(2)}")
    print("(clients 7, 8, 9 are the Byzantine ones: their scores are huge or infinite)")
    print(f"\nthreads: {aggkit.get_num_threads()}, SIMD path: {aggkit.simd_level()}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m aggkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="aggregate honest and Byzantine updates with every rule")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
