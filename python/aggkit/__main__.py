"""The ``aggkit`` command (also ``python -m aggkit``): ``simulate``, ``demo`` and ``bench``.

``aggkit --help`` prints :data:`DESCRIPTION`, the same in plain text.
"""

from __future__ import annotations

import argparse
import os
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
    server = true + 0.1 * rng.standard_normal(d)  # FLTrust: the server's update on its own data
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
        ("geometric_median", aggkit.geometric_median(x)),
        (f"meamed(f={f})", aggkit.meamed(x, f=f)),
        ("bulyan(f=2, variant='detox')", aggkit.bulyan(x, f=2, variant="detox")),
        (f"mda(f={f})", aggkit.mda(x, f=f)),
        (f"smea(f={f})", aggkit.smea(x, f=f)),
        (f"caf(f={f})", aggkit.caf(x, f=f)),
        (f"monna(f={f}, trusted client 0)", aggkit.monna(x, f=f, idx=0)),
        ("centered_clipping(tau=2, iters=10)", aggkit.centered_clipping(x, tau=2.0, iters=10)),
        (f"pipeline: nnm>trimmed_mean(f={f})", aggkit.rule("nnm>trimmed_mean", f=f)(x)),
        (f"nnm_trimmed_mean(f={f}) (preset)", aggkit.rule("nnm_trimmed_mean", f=f)(x)),
        (f"nnm_cc(f={f}, tau=2) (preset)", aggkit.rule("nnm_cc", f=f, tau=2.0)(x)),
        ("bucketing_cc(tau=2) (preset)", aggkit.rule("bucketing_cc", tau=2.0, seed=seed)(x)),
        (f"dnc(f={f})", aggkit.dnc(x, f=f, seed=seed)),
        ("fltrust (server's own estimate)", aggkit.fltrust(x, reference=server)),
        ("foolsgold (fails: IID clients alike)", aggkit.foolsgold(x)),
        ("sign_vote (a sign per coordinate)", aggkit.sign_vote(x)),
    ]
    for name, y in rows:
        err = float(np.linalg.norm(y.astype(np.float64) - true))
        print(f"{name:<34} {np.array2string(y):<60} {err:.3g}")
    _, sel = aggkit.multi_krum(x, f=f, return_selection=True)
    print(f"\nmulti_krum kept clients {sorted(sel.indices.tolist())}; scores {sel.scores.round(2)}")
    print("(clients 7, 8, 9 are the Byzantine ones: their scores are huge or infinite)")
    # DETOX needs redundancy: workers in groups of 3 compute on the same data.
    groups_x = np.repeat(honest[:3], 3, axis=0)  # 9 workers, 3 groups, each group one shard
    groups_x[[0, 1]] = 1e6  # two colluding Byzantine workers take group 0
    groups_x[4] = np.nan  # a third one is outvoted in group 1
    y, info = aggkit.detox(groups_x, q=3, buckets=3, return_info=True)
    err = float(np.linalg.norm(y.astype(np.float64) - honest[:3].mean(axis=0)))
    print(f"\ndetox(q=3) over 9 workers in groups of 3 (workers 0, 1, 4 Byzantine): {np.array2string(y)}")
    print(f"  group winners {info.winners.ravel().tolist()}, outvoted workers {info.suspects}; error vs the")
    print(f"  honest groups' mean {err:.3g} (the median of the 3 group winners ignores the tainted one)")
    print(f"\nthreads: {aggkit.get_num_threads()}, SIMD path: {aggkit.simd_level()}")


def _simulate(args: argparse.Namespace) -> int:
    from aggkit.simulate import simulate

    try:
        result = simulate(
            rules=args.rules,
            attacks=args.attacks,
            dataset=args.dataset,
            model=args.model,
            clients=args.clients,
            byzantine=args.byzantine,
            rounds=args.rounds,
            local_steps=args.local_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            alpha=args.alpha,
            weighted=args.weighted,
            protocol=args.protocol,
            momentum=args.momentum,
            seed=args.seed,
            seeds=args.seeds,
            progress=not args.quiet,
        )
    except (aggkit.AggkitError, ImportError, TypeError) as e:
        print(f"aggkit simulate: error: {str(e).removeprefix('simulate: ')}", file=sys.stderr)
        return 2
    c = result.config
    seeds = c["seeds"]
    sent = (
        f"{c['local_steps']} local SGD steps per round"
        if c["protocol"] == "local_sgd"
        else f"momentum {c['momentum']} per client"
    )
    print(
        f"\n{c['dataset']} / {c['model']} ({c['params']} parameters): {c['clients']} clients, the last "
        f"{c['byzantine']} Byzantine, Dirichlet alpha={c['alpha']}, {c['rounds']} rounds, {sent}, "
        + (f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}..{seeds[-1]}")
    )
    spread = ", mean ± standard deviation over the seeds" if len(seeds) > 1 else ""
    print(f"final test accuracy (%){spread}, {result.seconds:.1f} s:\n")
    print(result.table())
    if result.kept and c["byzantine"]:
        honest = c["clients"] - c["byzantine"]
        print(f"\nselection rules: share of Byzantine clients (>= {honest}) among the kept ones")
        for (r, a), kept in result.kept.items():
            if a != "none":
                total = sum(kept)
                print(f"  {r:<14} vs {a:<14} {100 * sum(kept[honest:]) / total:5.1f} %")
    if args.json:
        import json

        with open(args.json, "w") as fh:
            json.dump(
                {
                    "config": c,
                    "seconds": result.seconds,
                    "accuracy": [
                        {"rule": r, "attack": a, "accuracy": v, "runs": result.runs[(r, a)]}
                        for (r, a), v in result.accuracy.items()
                    ],
                },
                fh,
                indent=1,
            )
        print(f"\nresults written to {args.json}")
    if args.plot != "none":
        try:
            print(f"plot written to {result.plot(args.plot)}")
        except ImportError as e:
            print(f"no plot: {e}", file=sys.stderr)
    return 0


DESCRIPTION = """\
aggkit: robust aggregation for federated and Byzantine-resilient learning. Each command has
its own options: aggkit simulate -h, aggkit demo -h, aggkit bench -h.
"""


def _plot_problem(path: str) -> str | None:
    """Why the simulation could not write its plot to ``path``, checked before it runs."""
    from aggkit._cli import check_writable

    problem = check_writable(path, "--plot")
    if problem is not None:
        return problem
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return "--plot needs matplotlib: pip install 'aggkit[sim]', or pass --plot none"
    ext = os.path.splitext(path)[1][1:].lower()
    types = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in types:
        return f"--plot {path!r}: matplotlib cannot write .{ext} files (it writes {', '.join(sorted(types))})"
    return None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    from aggkit._cli import (
        Formatter,
        check_writable,
        paragraphs,
        positive_float,
        positive_int,
        positive_or_inf,
        seed,
        unit_interval,
    )
    from aggkit.simulate import DEFAULT_ATTACKS, DEFAULT_RULES, PRESETS, PROTOCOLS

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its own parser: aggkit bench -h lists its options
        from aggkit._bench import run

        return run(argv[1:])
    parser = argparse.ArgumentParser(prog="aggkit", description=DESCRIPTION, formatter_class=Formatter)
    parser.add_argument(
        "--version", action="version", version=f"aggkit {aggkit.__version__} (SIMD {aggkit.simd_level()})"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{simulate,demo,bench}")
    p = sub.add_parser(
        "demo",
        help="aggregate honest and Byzantine updates with every rule",
        description=paragraphs(
            "Aggregate 7 honest client updates and 3 Byzantine ones (huge values, a sign flip, "
            "NaN) with every rule, and show each output and its error."
        ),
        formatter_class=Formatter,
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the honest clients' noise")

    s = sub.add_parser(
        "simulate",
        help="federated learning with Byzantine clients; accuracy per rule and attack",
        description=paragraphs(
            "Federated learning with Byzantine clients: a table of final accuracy per rule and "
            "attack, and a plot of accuracy over rounds (needs aggkit[sim]).",
            "Rules and attacks are names with optional parameters, e.g. trimmed_mean:f=2 or "
            "alie:z=1.5; rules with an f get f=--byzantine unless given.",
            "The rule 'mean' drops clients that send NaN or inf (its robust default, labelled "
            "'mean (drops non-finite)'); 'mean:nonfinite=propagate' is plain FedAvg.",
        ),
        formatter_class=Formatter,
    )
    s.add_argument(
        "--rules",
        nargs="+",
        default=list(DEFAULT_RULES),
        metavar="RULE",
        help="rules to compare; see aggkit.list_rules()",
    )
    s.add_argument(
        "--attacks",
        nargs="+",
        default=list(DEFAULT_ATTACKS),
        metavar="ATTACK",
        help="attacks; see aggkit.attacks.list_attacks()",
    )
    s.add_argument(
        "--dataset",
        choices=["digits", "synthetic"],
        default="digits",
        help="scikit-learn's bundled digits, or a generated task",
    )
    s.add_argument(
        "--model",
        choices=["mlp", "logreg"],
        default="mlp",
        help="a 1-hidden-layer MLP (32 ReLU units) or multinomial logistic regression",
    )
    s.add_argument("--clients", type=positive_int, default=20, help="number of clients n")
    s.add_argument("--byzantine", type=int, default=4, help="Byzantine clients among them (the last ones)")
    s.add_argument("--rounds", type=positive_int, default=40, help="aggregation rounds")
    s.add_argument("--local-steps", type=positive_int, default=2, help="SGD steps per client per round")
    s.add_argument("--batch-size", type=positive_int, default=32, help="examples per local SGD step")
    s.add_argument("--lr", type=positive_float, default=0.5, help="local SGD learning rate")
    s.add_argument(
        "--alpha",
        type=positive_or_inf,
        default=1.0,
        help="Dirichlet label heterogeneity (inf: IID; 0.1: very non-IID)",
    )
    s.add_argument(
        "--weighted", action="store_true", help="weight by client example counts where the rule takes weights"
    )
    s.add_argument(
        "--seed", type=seed, default=0, help="seeds the split, the model, the batches and the attacks"
    )
    s.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        default="local_sgd",
        help="what honest clients send: their change after local SGD steps, or -lr times their "
        "momentum of one minibatch gradient per round",
    )
    s.add_argument(
        "--momentum", type=unit_interval, default=0.9, help="client momentum beta for --protocol momentum"
    )
    s.add_argument(
        "--seeds", type=positive_int, default=1, help="repetitions, seeded --seed, --seed + 1, ..."
    )
    s.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named setting; options given explicitly override it. hard-noniid: "
        + ", ".join(
            f"{k} {' '.join(v) if isinstance(v, tuple) else v}" for k, v in PRESETS["hard-noniid"].items()
        ),
    )
    s.add_argument(
        "--plot", default="aggkit-simulate.png", help="image path (.png, .pdf, .svg, ...), or 'none'"
    )
    s.add_argument("--json", default=None, help="also write the accuracy curves as JSON here")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("bench", help="benchmark grid against numpy/torch (options: aggkit bench -h)")
    args = parser.parse_args(argv)
    if args.command == "simulate" and args.preset is not None:
        # the preset replaces the defaults; what the command line gives still wins
        s.set_defaults(**{k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS[args.preset].items()})
        args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.seed)
        return 0
    if (
        args.plot not in ("none", "")
        and not args.plot.endswith(("/", os.sep))
        and not os.path.splitext(args.plot)[1]
    ):
        args.plot += ".png"  # what matplotlib writes for a name without an extension
    problems = [_plot_problem(args.plot) if args.plot != "none" else None]
    problems.append(check_writable(args.json, "--json") if args.json is not None else None)
    if (
        args.json is not None
        and args.plot != "none"
        and os.path.abspath(args.json) == os.path.abspath(args.plot)
    ):
        problems.append("--json and --plot name the same file")
    for problem in problems:
        if problem is not None:
            parser.exit(2, f"aggkit simulate: error: {problem}\n")
    return _simulate(args)


if __name__ == "__main__":
    sys.exit(main())
