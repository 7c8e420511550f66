"""Parity with byzfl, the reference library users compare against (optional dependency:
``pip install aggkit[parity]``)."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest

byzfl = pytest.importorskip("byzfl")


@pytest.mark.parametrize("seed", range(5))
def test_parity(seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal((9, 6))
    x[r.integers(9)] += 30.0
    f = 2
    same = {
        "meamed": (byzfl.Meamed(f=f), aggkit.meamed(x, f=f)),
        "mda": (byzfl.MDA(f=f), aggkit.mda(x, f=f)),
        "monna": (byzfl.MoNNA(f=f, idx=1), aggkit.monna(x, f=f, idx=1)),
        "median": (byzfl.Median(), aggkit.median(x)),
        "trmean": (byzfl.TrMean(f=f), aggkit.trimmed_mean(x, f=f)),
        "cc": (byzfl.CenteredClipping(L=3, tau=2.0), aggkit.centered_clipping(x, tau=2.0, iters=3)),
        "gm-preset": (
            byzfl.GeometricMedian(),
            aggkit.geometric_median(x, init="zero", nu=0.1, maxiter=3, ftol=0.0),
        ),
    }
    for name, (theirs, ours) in same.items():
        np.testing.assert_allclose(ours, theirs(x.copy()), rtol=1e-10, atol=1e-12, err_msg=name)
    for theirs, ours in [
        (byzfl.NNM(f=f), aggkit.NNM(f=f)),
        (byzfl.ARC(f=f), aggkit.ARC(f=f)),
        (byzfl.Clipping(c=2.0), aggkit.Clipping(c=2.0)),
    ]:
        np.testing.assert_allclose(ours(x), theirs(x.copy()), rtol=1e-10, atol=1e-12)


def test_byzfl_mutates_and_aggkit_does_not():
    x = np.array([[3.0, 4.0], [30.0, 40.0], [0.3, 0.4]])
    theirs = x.copy()
    byzfl.Clipping(c=1.0)(theirs)
    assert not np.array_equal(theirs, x)  # byzfl's Clipping scales its argument in place
    mine = x.copy()
    aggkit.Clipping(c=1.0)(mine)
    np.testing.assert_array_equal(mine, x)
