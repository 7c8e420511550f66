"""Input forms and memory: a list of n separate arrays against the same data stacked, and the
peak memory a call adds beyond its input and output.

    python benches/bench_memory.py

n = 50, d = 1e6, float32 (200 MB of input). Time: median of 5, list / stacked ratio. Memory:
each (rule, form) runs in a fresh process; the peak resident set size during the call (Linux
VmHWM, reset through /proc/self/clear_refs just before) minus the resident size before it,
i.e. what the call allocated at its peak, the output included (d values, 4 MB). The thread
pool is started on a small input first.
"""

from __future__ import annotations

import subprocess
import sys

import aggkit
import numpy as np
from aggkit._bench import machine_line, read_bandwidth, timed

N, D = 50, 1_000_000
RULES = {
    "mean": lambda x: aggkit.mean(x),
    "median": lambda x: aggkit.median(x),
    "trimmed_mean": lambda x: aggkit.trimmed_mean(x, f=10),
    "krum": lambda x: aggkit.krum(x, f=10),
}

CHILD = """
import sys, numpy as np, aggkit
sys.path.insert(0, {here!r})
from bench_memory import RULES, N, D
rng = np.random.default_rng(0)
if {as_list}:  # generated in place in float32: no transient larger than the input
    x = [rng.standard_normal(D, dtype=np.float32) for _ in range(N)]
else:
    x = rng.standard_normal((N, D), dtype=np.float32)
RULES[{name!r}]([r[:1000] for r in x])  # start the thread pool on a small input


def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))


with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
    fh.write("5")
before = status("VmRSS:")
RULES[{name!r}](x)
print((status("VmHWM:") - before) / 1024)
"""


def peak_mb(name: str, as_list: bool) -> float:
    code = CHILD.format(here=sys.path[0], as_list=as_list, name=name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    print(machine_line(aggkit.get_num_threads(), read_bandwidth(aggkit.get_num_threads())))
    print(f"command: python {' '.join(sys.argv)}\n")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    rows = [np.array(r) for r in x]
    print("| rule | stacked ms | list ms | list / stacked | extra peak MB, stacked | extra peak MB, list |")
    print("|---|---|---|---|---|---|")
    for name, fn in RULES.items():
        ts = timed(lambda fn=fn: fn(x), 5, warmup=True)
        tl = timed(lambda fn=fn: fn(rows), 5, warmup=True)
        ms, ml = peak_mb(name, False), peak_mb(name, True)
        print(f"| {name} | {ts * 1e3:.1f} | {tl * 1e3:.1f} | {tl / ts:.2f} | {ms:.1f} | {ml:.1f} |")


if __name__ == "__main__":
    main()
