"""The benchmark grid of ``aggkit bench`` (the code lives in ``aggkit._bench``, shipped with the package).

python benches/bench_rules.py --quick        # same as: aggkit bench --quick
"""

import sys

from aggkit._bench import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
