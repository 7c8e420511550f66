import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from strategies import matrices

SPEC = np.array([[6, -8], [-6, -5], [-6, 6], [7, 2], [-9, -8], [-3, -1], [40, -30]], np.float64)


def test_oracle():  # docs/algorithms.md, Krum and Multi-Krum
    y, sel = aggkit.krum(SPEC, f=1, return_selection=True)
    np.testing.assert_array_equal(sel.scores, [609, 317, 569, 613, 533, 277, 9184])
    np.testing.assert_array_equal(y, [-3, -1])
    assert sel.indices.tolist() == [5]
    y, sel = aggkit.multi_krum(SPEC, f=1, m=4, return_selection=True)
    np.testing.assert_array_equal(y, [-6, -2])
    assert sorted(sel.indices.tolist()) == [1, 2, 4, 5]
    np.testing.assert_allclose(aggkit.multi_krum(SPEC, f=1, m=6), [-11 / 6, -14 / 6], rtol=1e-15)
    np.testing.assert_allclose(aggkit.multi_krum(SPEC, f=1), [-11 / 6, -14 / 6], rtol=1e-15)


def test_tie_rule_lowest_index():  # docs/algorithms.md
    x = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [10, 10]], np.float32)
    y, sel = aggkit.krum(x, f=1, return_selection=True)
    np.testing.assert_array_equal(sel.scores, [2, 2, 2, 2, 343])
    assert sel.indices.tolist() == [0]
    np.testing.assert_array_equal(y, [0, 0])


@given(st.data())
def test_matches_reference(data):
    x = data.draw(matrices(min_n=3, max_n=10))
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n))
    y, sel = aggkit.multi_krum(x, f=f, m=m, return_selection=True)
    expected = ref.krum_scores(x, f)
    rtol = 1e-5 if x.dtype == np.float32 else 1e-12
    # Squares below the dtype's smallest normal underflow in the input precision.
    atol = float(np.finfo(x.dtype).tiny) * x.size
    np.testing.assert_allclose(sel.scores, expected, rtol=rtol, atol=atol)
    # The ranking is by (score, index) on the scores returned.
    order = sorted(range(n), key=lambda i: (sel.scores[i], i))[:m]
    assert sel.indices.tolist() == order
    # Where the reference's m-th and (m+1)-th scores are clearly apart, the sets agree.
    s = sorted(expected)
    if m == n or s[m] - s[m - 1] > 1e-3 * max(abs(s[m]), 1.0):
        assert sorted(order) == sorted(ref.multi_krum(x, f, m)[1])
    np.testing.assert_array_equal(y, _mean_in_order(x[order]))


def _mean_in_order(rows):
    return np.array(
        [ref.average(rows[:, j], rows.dtype) for j in range(rows.shape[1])],
        dtype=rows.dtype,
    )


def test_exact_distances_on_near_identical_updates(rng):
    # Honest updates: a large shared component plus tiny noise. Flower's float32 Gram identity
    # returns negative squared distances here and picks the wrong winner.
    d = 200_000
    base = (1 + 0.5 * np.sin(np.arange(d) / 1000)).astype(np.float32)
    x = base + rng.uniform(-1e-3, 1e-3, (10, d)).astype(np.float32)
    dm = aggkit._core.pairwise_sq_distances(x)
    x64 = x.astype(np.float64)
    exact = np.array([[((x64[i] - x64[j]) ** 2).sum() for j in range(10)] for i in range(10)])
    assert (dm >= 0).all()
    np.testing.assert_allclose(dm, exact, rtol=1e-5)
    gram = np.einsum("ik,jk->ij", x, x)  # float32, as Flower computes it
    sq = np.diag(gram)
    gram_d = sq[:, None] + sq[None, :] - 2 * gram
    assert np.abs(gram_d - exact).max() > 100 * np.abs(dm - exact).max()
    _, sel = aggkit.krum(x, f=2, return_selection=True)
    assert sel.indices[0] == int(np.argmin(ref_scores_from(exact, 2)))


def ref_scores_from(dist, f):
    n = len(dist)
    return [np.sort(np.delete(dist[i], i))[: n - f - 2].sum() for i in range(n)]


def test_nonfinite_policies():
    x = SPEC.copy()
    x[2, 0] = np.nan
    y, sel = aggkit.krum(x, f=1, return_selection=True)
    assert np.isinf(sel.scores[2])
    assert sel.indices.tolist() == [5]
    y, sel = aggkit.krum(x, f=1, nonfinite="propagate", return_selection=True)
    assert sel.indices.tolist() == [2]
    assert np.isnan(y[0])
    with pytest.raises(aggkit.NonFiniteError):
        aggkit.krum(x, f=1, nonfinite="raise")
    x[3, 1] = np.inf
    with pytest.raises(aggkit.NonFiniteError, match="fewer than m inputs have a finite score"):
        aggkit.multi_krum(x, f=1, m=6)
    # Rows 2 and 3 can no longer be chosen: the best four finite ones are 0, 1, 4, 5.
    np.testing.assert_array_equal(aggkit.multi_krum(x, f=1, m=4), [-3, -5.5])


def test_validity():
    with pytest.raises(aggkit.TooFewInputsError, match=r"^Krum needs n >= 2f \+ 3, got n=6, f=2$"):
        aggkit.krum(SPEC[:6], f=2)
    with pytest.raises(aggkit.TooFewInputsError, match="n=6, f=2"):
        aggkit.multi_krum(SPEC[:6], f=2)
    with pytest.raises(aggkit.InvalidParameterError, match="1 <= m <= n, got m=8, n=7"):
        aggkit.multi_krum(SPEC, f=1, m=8)
    with pytest.raises(aggkit.InvalidParameterError, match="got m=0"):
        aggkit.multi_krum(SPEC, f=1, m=0)
    with pytest.raises(TypeError):
        aggkit.multi_krum(SPEC, f=1, m=2.0)


@given(st.data())
def test_weighted_multi_krum_averages_the_selection_with_its_weights(data):
    x = data.draw(matrices(min_n=3, max_n=10))
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n))
    w = data.draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n))
    y, sel = aggkit.multi_krum(x, f=f, m=m, weights=w, return_selection=True)
    _, unweighted = aggkit.multi_krum(x, f=f, m=m, return_selection=True)
    assert sel.indices.tolist() == unweighted.indices.tolist()  # weights do not change who is kept
    order = sel.indices.tolist()
    expected = ref.mean(x[order], weights=[w[i] for i in order], nonfinite="propagate")
    np.testing.assert_array_equal(y, expected)


def test_weighted_multi_krum_errors():
    x = np.arange(14.0).reshape(7, 2)
    with pytest.raises(aggkit.InvalidParameterError, match="one entry per input"):
        aggkit.multi_krum(x, f=1, weights=[1, 2])
    with pytest.raises(aggkit.InvalidParameterError, match=r"weights\[1\]=-1"):
        aggkit.multi_krum(x, f=1, weights=[1, -1, 1, 1, 1, 1, 1])
    with pytest.raises(aggkit.InvalidParameterError, match="all have weight 0"):
        aggkit.multi_krum(x, f=1, m=2, weights=[0] * 7)


def test_rule_objects_report_their_selection():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]])
    y, sel = aggkit.Krum(f=1).aggregate(x)
    np.testing.assert_array_equal(y, [0.0, 0.0])
    assert sel.indices.tolist() == [0]
    y, sel = aggkit.MultiKrum(f=1, m=2).aggregate(x, weights=[3, 1, 1, 1, 1])
    np.testing.assert_array_equal(y, [0.25, 0.0])
    assert sel.indices.tolist() == [0, 1]
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        aggkit.Krum(f=1).aggregate(x, weights=[1] * 5)
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        aggkit.Bulyan(f=0).aggregate(x, weights=[1] * 5)
    y, sel = aggkit.Mean().aggregate(x, weights=[1, 0, 0, 0, 0])
    assert sel is None
    np.testing.assert_array_equal(y, [0.0, 0.0])
