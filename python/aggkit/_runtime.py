"""Threads and SIMD: the knobs that change speed, never results."""

from __future__ import annotations

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
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    most = _core.max_threads()
    if not 1 <= n <= most:
        raise InvalidParameterError(f"set_num_threads: n must be between 1 and {most}, got n={n}")
    _core.set_num_threads(n)


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
