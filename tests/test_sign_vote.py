"""Sign vote (signSGD with majority vote) and its noisy pre-aggregator."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest


def test_sign_vote():
    x = np.array([[1.0, -1.0, 0.0, np.nan], [2.0, 1.0, 0.0, 1.0], [-3.0, -5.0, 0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(aggkit.sign_vote(x), [1.0, -1.0, 0.0, 1.0])
    assert np.isnan(aggkit.sign_vote(x, nonfinite="propagate")[3])
    with pytest.raises(aggkit.NonFiniteError):
        aggkit.sign_vote(x, nonfinite="raise")
    assert aggkit.sign_vote(x).dtype == np.float32


def test_noisy_sign_vote_estimates_the_mean():
    # Chen et al. 2020: with uniform noise of scale b >= |g|, E[sign(g + b xi)] = g / b.
    g = np.array([0.3, -0.1, 0.05])
    x = np.repeat(g[None], 20001, axis=0)
    noisy = aggkit.Perturb(b=1.0, noise="uniform", seed=1)(x)
    np.testing.assert_allclose(np.sign(noisy).mean(axis=0), g, atol=0.02)
    assert aggkit.sign_vote(x).tolist() == [1.0, -1.0, 1.0]
    np.testing.assert_array_equal(
        aggkit.Pipeline([aggkit.Perturb(b=0.0), aggkit.SignVote()])(x), aggkit.sign_vote(x)
    )
