import os

import aggkit
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "ci" (default) keeps the whole suite to a few minutes on 2 cores; "thorough" for local runs:
#   AGGKIT_HYPOTHESIS=thorough pytest
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("thorough", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("AGGKIT_HYPOTHESIS", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def _simd_levels():
    """The distinct SIMD paths this machine runs: every level, capped to what the CPU has
    (x86-64: scalar, avx2, avx512 as available; aarch64: scalar and neon)."""
    before = aggkit.simd_level()
    levels = []
    try:
        for name in ("scalar", "avx2", "avx512", "neon"):
            got = aggkit._core._set_simd_level(name)
            if got not in levels:
                levels.append(got)
    finally:
        aggkit._core._set_simd_level(before)
    return levels


SIMD_LEVELS = _simd_levels()


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    """Run a test on each SIMD path this machine has (`SIMD_LEVELS`)."""
    before = aggkit.simd_level()
    level = aggkit._core._set_simd_level(request.param)
    yield level
    aggkit._core._set_simd_level(before)


@pytest.fixture
def threads():
    """Restore the thread count after a test changes it."""
    before = aggkit.get_num_threads()
    yield
    aggkit.set_num_threads(before)
