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


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def simd(request):
    """Run a test on each SIMD path (a level this CPU lacks is capped to the best it has)."""
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
