"""A markdown table from the JSON of ``aggkit simulate --json``: the tables of docs/choosing.md.

    python scripts/simulate_table.py results.json [--attacks none alie ...]

Cells are the final test accuracy in %, mean ± standard deviation over the seeds; the last
columns are each rule's worst attack and its accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics


def table(path: str, attacks: list[str] | None = None) -> str:
    """The markdown table of the run saved at ``path`` (the columns ``attacks``, default all)."""
    with open(path) as fh:
        data = json.load(fh)
    rows: dict[str, dict[str, list[float]]] = {}
    for entry in data["accuracy"]:
        finals = [100 * curve[-1] for curve in entry["runs"]]
        rows.setdefault(entry["rule"], {})[entry["attack"]] = finals
    names = attacks or list(dict.fromkeys(a for r in rows.values() for a in r))

    def cell(v: list[float]) -> str:
        mean = statistics.fmean(v)
        return f"{mean:.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{mean:.1f}"

    out = ["| rule | " + " | ".join(names) + " | worst |", "|---" * (len(names) + 2) + "|"]
    for rule, by_attack in rows.items():
        worst = min(names, key=lambda a: statistics.fmean(by_attack[a]))
        cells = [cell(by_attack[a]) for a in names]
        out.append(f"| `{rule}` | " + " | ".join(cells) + f" | **{cell(by_attack[worst])}** ({worst}) |")
    return "\n".join(out)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json")
    p.add_argument("--attacks", nargs="+")
    args = p.parse_args()
    print(table(args.json, args.attacks))


if __name__ == "__main__":
    main()
