"""Runtime settings: threads and SIMD (speed, never results) and the work limit.

The work limit refuses calls whose cost would hold a server for minutes.
"""

from __future__ import annotations

import math
import operator

from aggkit import _core
from aggkit.errors import InvalidParameterError


def set_num_threads(n: int) -> None:
    """Run aggkit's kernels on ``n`` threads (default: ``AGGKIT_NUM_THREADS`` or all cores).

    Results are bit-identical for every thread count.

    Parameters
    ----------
    n : int
        Number of threads, ``1 <= n <= max(256, 4 x the machine's cores)``.

    Raises
    ------
    InvalidParameterError
        ``n`` out of that range, or the system cannot start that many threads.
    """
    n = _int(n, "set_num_threads: n")
    most = _core.max_threads()
    if not 1 <= n <= most:
        raise InvalidParameterError(f"set_num_threads: n must be between 1 and {most}, got n={n}")
    _core.set_num_threads(n)


#: The default of :func:`set_work_limit`: about a minute of one core of a 2-core VM.
DEFAULT_WORK_LIMIT = 10**11
_work_limit = DEFAULT_WORK_LIMIT


def set_work_limit(operations: int) -> None:
    """Refuse calls that would take more than ``operations`` elementary operations.

    Rules whose cost grows faster than reading their input and its ``n x n`` distances (Bulyan's
    iterated Krum, MDA's and SMEA's subset scans, CAF's eigenproblems, the iterations of
    centered clipping and of the geometric median) state their cost as a formula in ``n``,
    ``d`` and their parameters (:meth:`aggkit.registry.Rule.work`), and refuse a call whose cost
    exceeds the limit with an :class:`aggkit.InvalidParameterError`, before doing any work: an
    input size or a parameter cannot hold the caller for hours. One operation is roughly one
    nanosecond of one core. The default is ``10**11``.

    Parameters
    ----------
    operations : int
        The new limit, ``>= 1``.
    """
    global _work_limit
    operations = _int(operations, "set_work_limit: operations")
    if operations < 1:
        raise InvalidParameterError(f"set_work_limit: operations must be >= 1, got {operations}")
    _work_limit = operations


def _int(v: object, what: str) -> int:
    """``v`` as a Python int (numpy integers included); ``TypeError`` for bools and the rest."""
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{what} must be an int, got {type(v).__name__}")
    return operator.index(v)


def get_work_limit() -> int:
    """The work limit in operations (see :func:`set_work_limit`)."""
    return _work_limit


def check_work(rule: str, cost: int, formula: str, sizes: str) -> None:
    """Refuse a call of ``rule`` whose ``cost`` (``formula`` at ``sizes``) exceeds the limit."""
    if cost > _work_limit:
        allow = (
            f"aggkit.set_work_limit({cost}) allows the call" if cost < 10**30 else "no limit lets it finish"
        )
        raise InvalidParameterError(
            f"{rule}: {sizes} needs about {_approx(cost)} operations ({formula}), more than the "
            f"work limit of {_approx(_work_limit)}; {allow}"
        )


def _approx(v: int) -> str:
    """``v`` to 3 significant digits, also beyond the float range."""
    if v < 10**300:
        return f"{v:.3g}"
    return f"1e+{int(v.bit_length() * math.log10(2))} (order of magnitude)"


def get_num_threads() -> int:
    """The number of threads aggkit's kernels use."""
    return _core.get_num_threads()


def simd_level() -> str:
    """The SIMD code path in use.

    ``"avx512"``, ``"avx2"`` or ``"scalar"`` on x86-64; ``"neon"`` or ``"scalar"`` on aarch64.
    The best path the CPU supports is picked at run time from one portable build. Set
    ``AGGKIT_SIMD`` to ``scalar``, ``avx2``, ``avx512`` or ``neon`` before import to choose (a
    level the CPU lacks falls back to the best one below it); ``avx2`` keeps 512-bit code off.
    Results are bit-identical on every path.
    """
    return _core.simd_level()
