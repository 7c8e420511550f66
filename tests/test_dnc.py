"""DnC: the paper's SVD formulation as reference, seeds and subsets, selection, errors, torch."""

from __future__ import annotations

import math

import aggkit
import numpy as np
import pytest
import reference as ref
from aggkit.registry import from_spec, to_spec
from hypothesis import assume, event, given
from hypothesis import strategies as st
from strategies import matrices

DOC_X = np.array([[1.0, 2.0], [1.2, 2.1], [0.9, 1.9], [1.1, 2.0], [9.0, -7.0]])


def _well_posed(x, subsets, removed) -> bool:
    """Every subsample has a distinct top singular value and a clear gap between the last kept
    and the first removed score (otherwise the kept set is decided by rounding)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if removed == 0:
        return True
    for cols in subsets:
        sub = x if cols is None else x[:, cols]
        centred = sub - sub.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        if s[0] == 0.0:
            return False
        if len(s) > 1 and s[1] > s[0] * (1 - 1e-6):
            return False
        scores = np.sort((centred @ vt[0]) ** 2)
        if scores[n - removed] - scores[n - removed - 1] <= 1e-7 * scores[-1]:
            return False
    return True


@st.composite
def spread_matrices(draw):
    """Gaussian rows (a drawn seed, scale and offset) with a few shifted ones: well-separated
    scores, unlike most of hypothesis' raw floats."""
    dt = draw(st.sampled_from([np.float32, np.float64]))
    n, d = draw(st.integers(3, 9)), draw(st.integers(1, 12))
    g = np.random.default_rng(draw(st.integers(0, 2**32)))
    x = g.standard_normal((n, d)) * draw(st.sampled_from([1e-3, 1.0, 1e4])) + draw(
        st.sampled_from([0.0, 100.0])
    )
    k = draw(st.integers(0, n // 3))
    x[:k] += g.standard_normal(d) * draw(st.sampled_from([3.0, 50.0])) * np.abs(x).max()
    return x.astype(dt)


@given(matrices(min_n=2, max_n=8, max_d=6, ties=False) | spread_matrices(), st.data())
def test_matches_reference(x, data):
    n, d = x.shape
    f = data.draw(st.integers(1, n - 1) | st.just(0))
    c = data.draw(st.sampled_from([1.0, 1.0, 0.5, 2.0]))
    assume(math.floor(c * f) < n)
    b = data.draw(st.integers(1, d + 1))
    niters = data.draw(st.integers(1, 4))
    seed = data.draw(st.integers(0, 2**32))
    subsets = aggkit.DnC(f=f, b=b, niters=niters, c=c, seed=seed).subsets(d)  # the same draws
    assume(_well_posed(x, subsets, math.floor(c * f)))
    event(f"removes {'some' if math.floor(c * f) else 'none'}, {'samples' if b < d else 'all coordinates'}")
    got, sel = aggkit.dnc(x, f=f, b=b, niters=niters, c=c, seed=seed, return_selection=True)
    want, kept, votes = ref.dnc(x, f, subsets, c)
    assert got.dtype == x.dtype
    assert got.shape == (d,)
    assert sorted(sel.indices.tolist()) == kept
    np.testing.assert_array_equal(sel.scores, niters - np.asarray(votes))
    tol = 1e-5 if x.dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want.astype(x.dtype), rtol=tol, atol=tol * (1 + np.abs(x).max()))


def test_docstring_oracle():
    y, sel = aggkit.dnc(DOC_X, f=1, return_selection=True)
    np.testing.assert_allclose(y, [1.05, 2.0], rtol=1e-15)
    assert sel.indices.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(sel.scores, [0, 0, 0, 0, 5])
    assert sel.indices.dtype == np.int64
    assert sel.scores.dtype == np.float64
    np.testing.assert_allclose(aggkit.DnC(f=1)(DOC_X), [1.05, 2.0], rtol=1e-15)
    # Hand-made: on a line, the two ends score highest; f=2 removes both.
    x = np.array([[-3.0], [0.0], [1.0], [2.0], [10.0]])  # mean 2: scores 25, 4, 1, 0, 64
    y, sel = aggkit.dnc(x, f=2, return_selection=True)
    assert sel.indices.tolist() == [1, 2, 3]
    np.testing.assert_allclose(y, [1.0])
    np.testing.assert_array_equal(sel.scores, [5, 0, 0, 0, 5])
    # c scales the number removed: floor(0.5 * 2) = 1.
    _, sel = aggkit.dnc(x, f=2, c=0.5, return_selection=True)
    assert sel.indices.tolist() == [0, 1, 2, 3]


def test_plain_mean_when_nothing_is_removed(rng):
    x = rng.standard_normal((7, 5))
    for kw in (dict(f=0), dict(f=3, c=0.0), dict(f=1, c=0.9)):
        y, sel = aggkit.dnc(x, **kw, return_selection=True)
        np.testing.assert_allclose(y, aggkit.mean(x), rtol=1e-15)
        assert sel.indices.tolist() == list(range(7))
        np.testing.assert_array_equal(sel.scores, 0.0)


def test_ties_keep_the_lower_index():
    # Identical rows: every score 0; the last floor(c f) rows are removed.
    x = np.ones((5, 3))
    y, sel = aggkit.dnc(x, f=2, return_selection=True)
    assert sel.indices.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(sel.scores, [0, 0, 0, 5, 5])
    np.testing.assert_array_equal(y, np.ones(3))
    # A symmetric pair of outliers ties: the lower index stays.
    x = np.array([[0.0], [0.0], [0.0], [5.0], [-5.0]])
    _, sel = aggkit.dnc(x, f=1, return_selection=True)
    assert sel.indices.tolist() == [0, 1, 2, 3]


def test_far_outlier_is_never_kept(rng):
    honest = rng.standard_normal((12, 60)) + 3.0
    for seed in range(6):
        x = np.insert(honest, seed, 50.0 * rng.standard_normal(60), axis=0)
        y, sel = aggkit.dnc(x, f=2, b=10, niters=4, seed=seed, return_selection=True)
        assert seed not in sel.indices.tolist()
        assert sel.scores[seed] == 4
        np.testing.assert_allclose(y, x[sel.indices].mean(axis=0), rtol=1e-13)
    # A colluding group along one direction is removed too.
    x = np.vstack([honest, honest[:3] + 20.0])
    _, sel = aggkit.dnc(x, f=3, b=20, seed=1, return_selection=True)
    assert not {12, 13, 14} & set(sel.indices.tolist())


def test_seed_reproducible_and_new_subsets_each_call(rng):
    x = rng.standard_normal((10, 40))
    d = x.shape[1]
    r1, r2 = aggkit.DnC(f=3, b=3, seed=7), aggkit.DnC(f=3, b=3, seed=7)
    outs = [r1.aggregate(x) for _ in range(5)]
    for out, _ in outs:
        np.testing.assert_array_equal(r2(x), out)
    assert len({o.tobytes() for o, _ in outs}) > 1  # different subsets, different selections
    np.testing.assert_array_equal(aggkit.dnc(x, f=3, b=3, seed=7), outs[0][0])
    # subsets(): niters sorted draws of b distinct coordinates, a new draw every call.
    twin = aggkit.DnC(f=3, b=3, niters=4, seed=7)
    a, b = twin.subsets(d), twin.subsets(d)
    assert len(a) == 4
    for s in a + b:
        assert len(s) == 3
        assert len(set(s.tolist())) == 3
        assert np.all(np.diff(s) > 0)
        assert s.max() < d
    assert any(not np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert aggkit.DnC(f=3, b=d).subsets(d) == [None] * 5  # b >= d: all coordinates, no draw
    # Without a seed: fresh entropy; still a valid selection.
    _, sel = aggkit.dnc(x, f=3, b=3, return_selection=True)
    assert len(sel.indices) >= 1


def test_empty_intersection_falls_back_to_most_kept(rng):
    x = rng.standard_normal((3, 20))
    found = False
    for seed in range(40):
        y, sel = aggkit.dnc(x, f=1, b=1, niters=5, seed=seed, return_selection=True)
        subsets = aggkit.DnC(f=1, b=1, niters=5, seed=seed).subsets(20)
        want, kept, _votes = ref.dnc(x, 1, subsets)
        assert sorted(sel.indices.tolist()) == kept
        np.testing.assert_allclose(y, want, rtol=1e-14)
        if sel.scores.min() > 0:  # every input removed at least once
            found = True
            assert np.all(sel.scores[sel.indices] == sel.scores.min())
            assert np.isfinite(y).all()
    assert found


def test_selection_contents(rng):
    x = rng.standard_normal((9, 12))
    x[4] = np.nan
    y, sel = aggkit.dnc(x, f=3, b=4, niters=3, seed=2, return_selection=True)
    assert sel.scores.shape == (9,)
    assert sel.scores[4] == np.inf
    finite = np.delete(np.arange(9), 4)
    assert np.all((sel.scores[finite] >= 0) & (sel.scores[finite] <= 3))
    assert 4 not in sel.indices.tolist()
    # The kept inputs are those removed least often (none, when some input always stays).
    assert len(sel.indices) >= 1
    np.testing.assert_array_equal(sel.scores[sel.indices], sel.scores[finite].min())
    assert sel.indices.tolist() == sorted(sel.indices.tolist())
    np.testing.assert_allclose(y, x[sel.indices].mean(axis=0), rtol=1e-14)
    # Without return_selection: the output only.
    np.testing.assert_array_equal(aggkit.dnc(x, f=3, b=4, niters=3, seed=2), y)


@pytest.mark.parametrize("nonfinite", ["robust", "raise"])
def test_nonfinite_inputs(nonfinite, rng):
    x = rng.standard_normal((8, 6))
    x[2, 3] = np.nan
    x[6] = -np.inf
    if nonfinite == "raise":
        with pytest.raises(aggkit.NonFiniteError, match="nonfinite='raise'") as e:
            aggkit.dnc(x, f=3, nonfinite="raise")
        assert list(e.value.rows) == [2, 6]
        return
    # Left out, counting against f: as DnC with f - 2 on the finite rows.
    y, sel = aggkit.dnc(x, f=3, b=2, seed=4, return_selection=True)
    good = [0, 1, 3, 4, 5, 7]
    y2, sel2 = aggkit.dnc(x[good], f=1, b=2, seed=4, return_selection=True)
    np.testing.assert_array_equal(y, y2)
    assert sel.indices.tolist() == [good[i] for i in sel2.indices.tolist()]
    np.testing.assert_array_equal(sel.scores[good], sel2.scores)
    assert np.isinf(sel.scores[[2, 6]]).all()
    with pytest.raises(aggkit.NonFiniteError, match="more than f=1 inputs are non-finite"):
        aggkit.dnc(x, f=1)


def test_errors():
    x = np.ones((4, 3))
    for kw, name in [
        (dict(f=-1), "f"),
        (dict(f=1, b=0), "b"),
        (dict(f=1, niters=0), "niters"),
        (dict(f=1, c=-1.0), "c"),
        (dict(f=1, c=np.nan), "c"),
        (dict(f=1, seed=-1), "seed"),
        (dict(f=1, nonfinite="propagate"), "nonfinite"),
    ]:
        with pytest.raises(aggkit.InvalidParameterError, match=rf"dnc: {name} must"):
            aggkit.dnc(x, **kw)
    with pytest.raises(TypeError, match="dnc: f must be an int"):
        aggkit.dnc(x, f=1.5)
    with pytest.raises(TypeError, match="dnc: b must be an int"):
        aggkit.dnc(x, f=1, b=2.5)
    with pytest.raises(TypeError):
        aggkit.dnc(x)  # f is required
    with pytest.raises(aggkit.TooFewInputsError, match=r"n > floor\(c f\) = 4, got n=4, f=4"):
        aggkit.dnc(x, f=4)
    with pytest.raises(aggkit.TooFewInputsError, match=r"floor\(c f\) = 4"):
        aggkit.dnc(x, f=2, c=2.0)
    assert aggkit.DnC(f=2, c=1.5).min_inputs() == 4
    with pytest.raises(aggkit.EmptyInputError, match="dnc needs at least one input"):
        aggkit.dnc(np.zeros((0, 3)), f=0)
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        aggkit.DnC(f=1).aggregate(x, weights=np.ones(4))
    with pytest.raises(aggkit.InvalidParameterError, match="does not take a reference"):
        aggkit.DnC(f=1).aggregate(x, reference=np.ones(3))


def test_edge_sizes():
    np.testing.assert_array_equal(aggkit.dnc(np.array([[3.0, -4.0]]), f=0), [3.0, -4.0])
    y = aggkit.dnc(np.zeros((3, 0)), f=1)
    assert y.shape == (0,)
    np.testing.assert_array_equal(aggkit.dnc(np.array([[1.0], [3.0]]), f=1), [1.0])  # a tie: row 0 stays
    for dt in (np.float16, np.float32, np.float64):
        y = aggkit.dnc(DOC_X.astype(dt), f=1)
        assert y.dtype == dt
        np.testing.assert_allclose(y, [1.05, 2.0], rtol=1e-3)
    x = np.arange(60.0).reshape(5, 3, 4) ** 1.5
    y, sel = aggkit.dnc(x, f=1, b=5, seed=0, return_selection=True)
    assert y.shape == (3, 4)
    np.testing.assert_allclose(y, x[sel.indices].mean(axis=0), rtol=1e-14)


def test_large_values_within_float64(rng):
    # Squared distances up to ~1e300 (rows of 1e150) stay finite: the far row is removed.
    x = np.vstack([rng.standard_normal((8, 4)), np.full(4, 1e150), -np.full(4, 1e140)])
    y, sel = aggkit.dnc(x, f=2, return_selection=True)
    assert sel.indices.tolist() == list(range(8))
    np.testing.assert_allclose(y, x[:8].mean(axis=0), rtol=1e-14)
    # A large common offset cancels: the same selection as without it.
    off = rng.standard_normal((10, 5))
    off[3] += 4.0
    _, s1 = aggkit.dnc(off, f=1, return_selection=True)
    _, s2 = aggkit.dnc(off + 1e8, f=1, return_selection=True)
    assert s1.indices.tolist() == s2.indices.tolist()
    assert 3 not in s1.indices.tolist()


@pytest.mark.parametrize("big", [pytest.param(1e200), pytest.param(1e300)])
def test_huge_rows_are_removed_numpy(big, rng):
    x = np.vstack([rng.standard_normal((8, 4)), np.full(4, big)])
    y, sel = aggkit.dnc(x, f=1, return_selection=True)
    assert np.isfinite(y).all()
    assert sel.indices.tolist() == list(range(8))


def test_huge_rows_are_removed_torch(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = np.vstack([rng.standard_normal((8, 4)), np.full(4, 1e200)])
    y, sel = at.dnc(torch.from_numpy(x), f=1, return_selection=True)
    assert torch.isfinite(y).all()
    assert sel.indices.tolist() == list(range(8))


def test_registry_and_specs():
    assert aggkit.rule("dnc", f=1) == aggkit.DnC(f=1)
    r = aggkit.rule("dnc", f=2, b=100, niters=3, c=0.5, seed=9, nonfinite="raise")
    assert r == aggkit.DnC(f=2, b=100, niters=3, c=0.5, seed=9, nonfinite="raise")
    for rule in (aggkit.DnC(f=1), r):
        back = from_spec(to_spec(rule))
        assert back == rule
        assert eval(repr(rule), {"DnC": aggkit.DnC}) == rule
    # A rebuilt seeded rule draws the same subsets.
    x = np.random.default_rng(3).standard_normal((9, 300))
    np.testing.assert_array_equal(from_spec(to_spec(r))(x), r(x))
    out, sel = aggkit.rule("dnc", f=1).aggregate(DOC_X)
    np.testing.assert_allclose(out, [1.05, 2.0], rtol=1e-15)
    assert sel.indices.tolist() == [0, 1, 2, 3]
    out, sel = aggkit.DnC(f=1).rounds().aggregate(DOC_X)
    assert sel.indices.tolist() == [0, 1, 2, 3]


def test_torch_parity_and_gradient(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((10, 30))
    x[7] += 6.0
    x[2, 5] = np.nan
    want, wsel = aggkit.dnc(x, f=3, b=8, niters=4, seed=11, return_selection=True)
    t = torch.from_numpy(x)
    for native in (False, True):
        if native:
            with at.force_native():
                got, sel = at.dnc(t, f=3, b=8, niters=4, seed=11, return_selection=True)
        else:
            got, sel = aggkit.dnc(t, f=3, b=8, niters=4, seed=11, return_selection=True)
        assert isinstance(got, torch.Tensor)
        assert isinstance(sel.indices, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
        assert sel.indices.tolist() == wsel.indices.tolist()
        np.testing.assert_array_equal(sel.scores.numpy(), wsel.scores)
    got32 = at.dnc(torch.from_numpy(x.astype(np.float32)), f=3, b=8, seed=11)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), aggkit.dnc(x.astype(np.float32), f=3, b=8, seed=11), rtol=1e-5)
    with pytest.raises(aggkit.NonFiniteError):
        at.dnc(t, f=3, nonfinite="raise")
    with pytest.raises(aggkit.TooFewInputsError):
        at.dnc(t[:3], f=3)
    # The gradient: 1/m to each of the m kept rows, 0 to the others.
    xf = np.nan_to_num(x)
    tg = torch.from_numpy(xf).requires_grad_(True)
    out, sel = at.dnc(tg, f=3, b=8, seed=5, return_selection=True)
    out.sum().backward()
    m = len(sel.indices)
    expected = np.zeros_like(xf)
    expected[sel.indices.numpy()] = 1.0 / m
    np.testing.assert_allclose(tg.grad.numpy(), expected, rtol=1e-15)
    assert torch.autograd.gradcheck(lambda v: at.dnc(v, f=3, seed=5), (tg,))


def test_torch_path_stays_finite_near_float64s_largest_values():
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    with np.errstate(over="ignore"):
        x = np.clip(np.random.default_rng(0).standard_normal((7, 5)) * 1e308, -1.7e308, 1.7e308)
    want = aggkit.dnc(x, f=2, seed=0)
    got = at.dnc(torch.from_numpy(x), f=2, seed=0).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_huge_niters_is_refused_before_any_work():
    with pytest.raises(aggkit.InvalidParameterError, match="work limit"):
        aggkit.dnc(np.ones((12, 5)), f=2, b=2, niters=10**15)
    with pytest.raises(aggkit.TooFewInputsError):
        aggkit.dnc(np.ones((3, 2)), f=10**400, c=2.0)  # floor(c f) in exact integers
