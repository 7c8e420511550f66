"""FoolsGold: the authors' loops as reference, sybils, rounds by client id, errors, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
import reference as ref
from aggkit.registry import from_spec, to_spec
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import finite_elements, matrices

DOC_X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [-1.0, -1.0]])


def _well_posed(histories) -> bool:
    """Some client has no near-parallel partner (the largest pre-normalisation weight is not a
    rounding error), or every client has an identical partner (the weights are exactly 0)."""
    h = [list(map(float, r)) for r in histories]
    n = len(h)
    if n <= 1:
        return True
    cs = [[ref.history_cosine(h[i], h[j]) for j in range(n)] for i in range(n)]
    if any(all(cs[i][j] < 1 - 1e-6 for j in range(n) if j != i) for i in range(n)):
        return True
    return all(any(h[i] == h[j] for j in range(n) if j != i) for i in range(n))


def _tol(dtype, x):
    tol = 1e-5 if dtype == np.float32 else 1e-9
    return dict(rtol=tol, atol=tol * (1 + np.abs(x).max(initial=0.0)))


@given(matrices(min_n=1, max_n=7, max_d=4), st.data())
def test_matches_reference(x, data):
    n, d = x.shape
    history = None
    if data.draw(st.booleans()):
        history = data.draw(hnp.arrays(np.float64, (n, d), elements=finite_elements(np.float64, 1e3)))
    kappa = data.draw(st.sampled_from([1.0, 0.5, 2.0]))
    clip = data.draw(st.sampled_from([None, None, 0.5, 100.0]))
    want, w_want = ref.foolsgold(x, history, kappa, clip)
    x64 = x.astype(np.float64)
    if clip is not None:
        norms = np.linalg.norm(x64, axis=1)
        x64 = x64 * np.minimum(1.0, clip / np.where(norms > 0, norms, 1.0))[:, None]
    hist = x64 if history is None else history + x64
    assume(_well_posed(hist))
    got, info = aggkit.foolsgold(x, history=history, kappa=kappa, clip=clip, return_info=True)
    assert got.dtype == x.dtype
    assert got.shape == (d,)
    np.testing.assert_allclose(info.weights, w_want, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(info.history, hist, rtol=1e-12, atol=1e-12 * (1 + np.abs(hist).max(initial=0)))
    np.testing.assert_allclose(got, want.astype(x.dtype), **_tol(x.dtype, x))
    # A convex combination of the (clipped) updates, with the weights returned.
    w = info.weights
    assert np.all((w >= 0) & (w <= 1))
    if w.sum() > 0:
        np.testing.assert_allclose(got, (w @ x64 / w.sum()).astype(x.dtype), **_tol(x.dtype, x))
    else:
        np.testing.assert_array_equal(got, np.zeros(d))


def test_docstring_oracle():
    y, info = aggkit.foolsgold(DOC_X, return_info=True)
    np.testing.assert_array_equal(y, [0.5, 0.5])
    np.testing.assert_array_equal(info.weights, [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(info.history, DOC_X)
    # Weights strictly between 0 and 1: a history at 60 degrees to another, a third opposed.
    # cs = 0.5 for the pair, so w = 0.5 / 1 -> ln(1 + 1e-5) + 0.5 for both, 1 for the third.
    x = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)], [-1.0, -1.0]])
    _, info = aggkit.foolsgold(x, return_info=True)
    mid = np.log(1.0 + 1e-5) + 0.5
    np.testing.assert_allclose(info.weights, [mid, mid, 1.0], rtol=1e-12)
    np.testing.assert_allclose(info.weights, ref.foolsgold(x)[1], rtol=1e-12)
    # kappa scales the logit: 2 * mid > 1 saturates.
    _, info = aggkit.foolsgold(x, kappa=2.0, return_info=True)
    np.testing.assert_allclose(info.weights, [1.0, 1.0, 1.0])


def test_sybils_get_no_weight_and_honest_clients_keep_theirs(rng):
    honest = rng.standard_normal((6, 30))
    sybil = rng.standard_normal(30) + 5.0
    for f in (2, 3, 5):
        x = np.vstack([honest, np.tile(sybil, (f, 1))])
        y, info = aggkit.foolsgold(x, return_info=True)
        np.testing.assert_array_equal(info.weights[6:], 0.0)
        assert np.all(info.weights[:6] > 0.5)
        np.testing.assert_allclose(y, info.weights[:6] @ honest / info.weights[:6].sum(), rtol=1e-12)
    # Nearly identical sybils (tiny independent noise) are caught too.
    x = np.vstack([honest, sybil + 1e-6 * rng.standard_normal((4, 30))])
    w = aggkit.foolsgold(x, return_info=True)[1].weights
    np.testing.assert_array_equal(w[6:], 0.0)
    assert np.all(w[:6] > 0.5)


def test_permutation_equivariance_and_convexity(rng):
    x = rng.standard_normal((9, 5))
    x[7] = x[8] = x[2]
    h = rng.standard_normal((9, 5))
    y, info = aggkit.foolsgold(x, history=h, return_info=True)
    perm = rng.permutation(9)
    yp, infop = aggkit.foolsgold(x[perm], history=h[perm], return_info=True)
    np.testing.assert_allclose(infop.weights, info.weights[perm], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(yp, y, rtol=1e-12, atol=1e-14)
    # The output lies in the box of the updates of positive weight.
    used = x[info.weights > 0]
    assert np.all(y >= used.min(axis=0) - 1e-12)
    assert np.all(y <= used.max(axis=0) + 1e-12)
    # Scaling one client's history and update by a positive factor keeps every weight.
    xs, hs = x.copy(), h.copy()
    xs[4] *= 1e3
    hs[4] *= 1e3
    np.testing.assert_allclose(
        aggkit.foolsgold(xs, history=hs, return_info=True)[1].weights, info.weights, rtol=1e-9, atol=1e-9
    )


def test_all_weights_zero_gives_zero():
    # All histories identical (zero ones included): cosine 1, every weight 0, zero output.
    for x in (np.ones((3, 2)), np.zeros((3, 2)), np.tile([2.0, -1.0, 3.0], (5, 1))):
        y, info = aggkit.foolsgold(x, return_info=True)
        np.testing.assert_array_equal(y, np.zeros(x.shape[1]))
        np.testing.assert_array_equal(info.weights, 0.0)
    # clip=0 zeroes every update: the histories stay zero.
    y, info = aggkit.foolsgold(DOC_X, clip=0.0, return_info=True)
    np.testing.assert_array_equal(y, [0.0, 0.0])
    np.testing.assert_array_equal(info.history, 0.0)


def test_clip_bounds_history_and_output(rng):
    x = rng.standard_normal((6, 4)) * 10
    y, info = aggkit.foolsgold(x, clip=1.0, return_info=True)
    assert np.all(np.linalg.norm(info.history, axis=1) <= 1 + 1e-12)
    assert np.linalg.norm(y) <= 1 + 1e-12
    clipped = x / np.maximum(1.0, np.linalg.norm(x, axis=1))[:, None]
    np.testing.assert_allclose(info.history, clipped, rtol=1e-14)
    np.testing.assert_allclose(y, info.weights @ clipped / info.weights.sum(), rtol=1e-12)


@pytest.mark.parametrize("nonfinite", ["robust", "raise"])
def test_nonfinite_inputs(nonfinite, rng):
    x = rng.standard_normal((6, 3))
    x[1, 0] = np.nan
    x[4] = [np.inf, 1.0, -np.inf]
    h = rng.standard_normal((6, 3))
    if nonfinite == "raise":
        with pytest.raises(aggkit.NonFiniteError, match="nonfinite='raise'") as e:
            aggkit.foolsgold(x, history=h, nonfinite="raise")
        assert list(e.value.rows) == [1, 4]
        return
    y, info = aggkit.foolsgold(x, history=h, return_info=True)
    assert np.isfinite(y).all()
    assert info.weights[1] == 0
    assert info.weights[4] == 0
    # Left out of the history (kept as it was) and of the others' similarities.
    np.testing.assert_array_equal(info.history[[1, 4]], h[[1, 4]])
    good = [0, 2, 3, 5]
    y2, info2 = aggkit.foolsgold(x[good], history=h[good], return_info=True)
    np.testing.assert_array_equal(info.weights[good], info2.weights)
    np.testing.assert_allclose(y, y2, rtol=1e-14)
    # Every input non-finite: zero output, no weight.
    y, info = aggkit.foolsgold(np.full((3, 2), np.nan), return_info=True)
    np.testing.assert_array_equal(y, [0.0, 0.0])
    np.testing.assert_array_equal(info.weights, 0.0)


def test_huge_values():
    x = np.array([[1e300, 1e300], [1e200, -1e200], [1.0, 0.0], [-1e308, 1e308]])
    y, info = aggkit.foolsgold(x, return_info=True)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(info.weights, ref.foolsgold(x)[1], rtol=1e-12)
    np.testing.assert_allclose(y, ref.foolsgold(x)[0], rtol=1e-14)
    np.testing.assert_array_equal(y, x[3])  # the only one with no partner at 45 degrees or less
    # Clipping rows whose norm overflows float64.
    x = np.array([[1e300, 1e300], [1e200, -1e200], [1.0, 0.0]])
    y, info = aggkit.foolsgold(x, clip=2.0, return_info=True)
    assert np.isfinite(y).all()
    assert np.isfinite(info.history).all()
    np.testing.assert_allclose(np.linalg.norm(info.history, axis=1), [2.0, 2.0, 1.0], rtol=1e-14)


def test_history_that_overflows_gets_no_weight():
    x = np.array([[1e308, 1e308], [1.0, 0.0], [0.0, 1.0]])
    h = [[1e308, 1e308], None, None]
    y, info = aggkit.foolsgold(x, history=h, return_info=True)
    assert np.isfinite(y).all()
    assert info.weights[0] == 0
    assert np.all(info.weights[1:] == 1)
    np.testing.assert_array_equal(y, [0.5, 0.5])


def test_history_that_overflows_gets_no_weight_torch():
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = torch.tensor([[1e308, 1e308], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y, info = at.foolsgold(x, history=[[1e308, 1e308], None, None], return_info=True)
    assert torch.isfinite(y).all()
    np.testing.assert_array_equal(info.weights.numpy(), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(y.numpy(), [0.5, 0.5])


def test_edge_sizes():
    y, info = aggkit.foolsgold(np.array([[3.0, -4.0]]), return_info=True)
    np.testing.assert_array_equal(y, [3.0, -4.0])
    np.testing.assert_array_equal(info.weights, [1.0])
    y = aggkit.foolsgold(np.zeros((3, 0)))
    assert y.shape == (0,)
    with pytest.raises(aggkit.EmptyInputError, match="foolsgold needs at least one input"):
        aggkit.foolsgold(np.zeros((0, 3)))
    for dt in (np.float16, np.float32, np.float64):
        y = aggkit.foolsgold(DOC_X.astype(dt))
        assert y.dtype == dt
        np.testing.assert_array_equal(y, [0.5, 0.5])
    # Any shape per input.
    x = np.arange(24.0).reshape(4, 2, 3) * np.array([1, -1, 1, -1])[:, None, None]
    y = aggkit.foolsgold(x, history=np.ones((4, 2, 3)))
    assert y.shape == (2, 3)


def test_errors():
    x = np.ones((3, 2))
    for kappa in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(aggkit.InvalidParameterError, match="kappa"):
            aggkit.foolsgold(x, kappa=kappa)
    for clip in (-1.0, np.nan, np.inf):
        with pytest.raises(aggkit.InvalidParameterError, match="clip"):
            aggkit.foolsgold(x, clip=clip)
    with pytest.raises(aggkit.InvalidParameterError, match="nonfinite"):
        aggkit.foolsgold(x, nonfinite="propagate")
    with pytest.raises(aggkit.ShapeError, match="history must have one row per input"):
        aggkit.foolsgold(x, history=np.ones((2, 2)))
    with pytest.raises(aggkit.ShapeError, match="history row 1 has 3 values"):
        aggkit.foolsgold(x, history=[None, np.ones(3), None])
    with pytest.raises(aggkit.InvalidParameterError, match="history rows must be arrays of numbers"):
        aggkit.foolsgold(x, history=[None, "ab", None])
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        aggkit.FoolsGold().aggregate(x, weights=np.ones(3))
    with pytest.raises(aggkit.InvalidParameterError, match="does not take a reference"):
        aggkit.FoolsGold().aggregate(x, reference=np.ones(2))


def test_rounds_keep_histories_by_client_id(rng):
    rule = aggkit.FoolsGold()
    state = rule.rounds()
    assert isinstance(state, aggkit.FoolsGoldState)
    x1, x2, x3 = (rng.standard_normal((4, 3)) for _ in range(3))
    out1, sel = state.aggregate(x1, ids=["a", "b", "c", "d"])
    assert sel is None
    np.testing.assert_array_equal(out1, aggkit.foolsgold(x1))
    assert set(state.histories) == {"a", "b", "c", "d"}
    # Reordered ids: the rows map to the same clients; their histories accumulate.
    out2, _ = state.aggregate(x2, ids=["c", "a", "d", "b"])
    h_before = [x1[2], x1[0], x1[3], x1[1]]
    np.testing.assert_array_equal(out2, aggkit.foolsgold(x2, history=h_before))
    np.testing.assert_allclose(state.histories["c"], x1[2] + x2[0], rtol=1e-15)
    np.testing.assert_allclose(state.histories["b"], x1[1] + x2[3], rtol=1e-15)
    # A new client starts empty; an absent one keeps its history.
    out3, _ = state.aggregate(x3[:3], ids=["z", "b", "a"])
    want = aggkit.foolsgold(x3[:3], history=[None, state_b := x1[1] + x2[3], x1[0] + x2[1]])
    np.testing.assert_allclose(out3, want, rtol=1e-15)
    np.testing.assert_array_equal(state.histories["z"], x3[0])
    np.testing.assert_allclose(state.histories["b"], state_b + x3[1], rtol=1e-15)
    np.testing.assert_allclose(state.histories["d"], x1[3] + x2[2], rtol=1e-15)
    assert "clients=5" in repr(state)
    # The ids of one round must be distinct and one per row.
    with pytest.raises(aggkit.InvalidParameterError, match="distinct"):
        state.aggregate(x1, ids=["a", "a", "b", "c"])
    with pytest.raises(aggkit.InvalidParameterError, match="ids must name each of the 4 inputs, got 3 ids"):
        state.aggregate(x1, ids=["a", "b", "c"])
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        state.aggregate(x1, weights=np.ones(4))
    with pytest.raises(aggkit.InvalidParameterError, match="does not take a reference"):
        state.aggregate(x1, reference=np.ones(3))
    assert len(state.histories) == 5  # refused rounds change nothing
    state.reset()
    assert state.histories == {}
    np.testing.assert_array_equal(state.aggregate(x1, ids=["d", "c", "b", "a"])[0], out1)


def test_rounds_without_ids_and_sybils_over_time(rng):
    # Without ids row i is client i. Sybils that differ each round but always push one way
    # are caught by their summed histories.
    state = aggkit.FoolsGold().rounds()
    goal = rng.standard_normal(20)
    for t in range(6):
        honest = rng.standard_normal((5, 20))
        sybils = goal + 0.8 * rng.standard_normal((3, 20))
        out, _ = state.aggregate(np.vstack([honest, sybils]))
        if t == 0:
            first = out
    np.testing.assert_array_equal(sorted(state.histories), list(range(8)))
    h = np.array([state.histories[i] for i in range(8)])
    w = aggkit.foolsgold(np.zeros((8, 20)), history=h, return_info=True)[1].weights
    np.testing.assert_array_equal(w[5:], 0.0)
    assert np.all(w[:5] > 0)
    assert not np.array_equal(first, out)


def test_registry_and_specs():
    assert aggkit.rule("foolsgold") == aggkit.FoolsGold()
    r = aggkit.rule("foolsgold", kappa=2.0, clip=1.5, nonfinite="raise")
    assert r == aggkit.FoolsGold(kappa=2.0, clip=1.5, nonfinite="raise")
    for rule in (aggkit.FoolsGold(), r):
        assert from_spec(to_spec(rule)) == rule
        assert eval(repr(rule), {"FoolsGold": aggkit.FoolsGold}) == rule
    out, sel = r.aggregate(DOC_X)
    assert sel is None
    np.testing.assert_array_equal(out, aggkit.foolsgold(DOC_X, kappa=2.0, clip=1.5))
    np.testing.assert_array_equal(
        aggkit.FoolsGold()(DOC_X, history=DOC_X), aggkit.foolsgold(DOC_X, history=DOC_X)
    )


def test_torch_parity_and_gradient(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((7, 5))
    x[5] = x[6] = x[0] * 2
    h = rng.standard_normal((7, 5))
    for clip in (None, 0.8):
        want, winfo = aggkit.foolsgold(x, history=h, clip=clip, return_info=True)
        t = torch.from_numpy(x)
        got, info = at.foolsgold(t, history=torch.from_numpy(h), clip=clip, return_info=True)
        assert isinstance(got, torch.Tensor)
        assert isinstance(info.weights, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(info.weights.numpy(), winfo.weights, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(info.history.numpy(), winfo.history, rtol=1e-15)
        with at.force_native():
            got_n = aggkit.foolsgold(t, history=list(h), clip=clip)
        np.testing.assert_allclose(got_n.numpy(), want, rtol=1e-12, atol=1e-14)
    got32 = at.foolsgold(torch.from_numpy(x.astype(np.float32)), history=h)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), aggkit.foolsgold(x.astype(np.float32), history=h), rtol=1e-5)
    # Non-finite inputs and huge values on the torch path.
    xb = x.copy()
    xb[2, 1] = np.inf
    np.testing.assert_allclose(
        at.foolsgold(torch.from_numpy(xb), history=h).numpy(), aggkit.foolsgold(xb, history=h), rtol=1e-12
    )
    with pytest.raises(aggkit.NonFiniteError):
        at.foolsgold(torch.from_numpy(xb), nonfinite="raise")
    huge = np.array([[1e300, 1e300], [1e200, -1e200], [1.0, 0.0], [-1e308, 1e308]])
    np.testing.assert_array_equal(at.foolsgold(torch.from_numpy(huge)).numpy(), aggkit.foolsgold(huge))
    with pytest.raises(aggkit.ShapeError, match="history must have one row per input"):
        at.foolsgold(torch.from_numpy(x), history=h[:3])
    # The gradient flows through the weighted mean: w_i / sum(w) to each row.
    t = torch.from_numpy(x).requires_grad_(True)
    out, info = at.foolsgold(t, history=h, return_info=True)
    out.sum().backward()
    w = info.weights.numpy()
    np.testing.assert_allclose(t.grad.numpy(), np.tile((w / w.sum())[:, None], (1, 5)), rtol=1e-14)
    # Rounds with tensors.
    state = aggkit.FoolsGold().rounds()
    state.aggregate(torch.from_numpy(x[:3]), ids=["p", "q", "r"])
    out, _ = state.aggregate(torch.from_numpy(x[3:6]), ids=["r", "p", "s"])
    np.testing.assert_allclose(
        out.numpy(), aggkit.foolsgold(x[3:6], history=[x[2], x[0], None]), rtol=1e-12, atol=1e-14
    )


def test_state_keeps_a_copy_per_client_and_can_forget():
    rng = np.random.default_rng(8)
    st = aggkit.FoolsGold().rounds()
    for r in range(3):
        st.aggregate(rng.standard_normal((5, 40)), ids=[0, 1, 2, 3, f"once-{r}"])
    assert len(st.histories) == 7
    for h in st.histories.values():
        assert h.base is None  # a copy: no view keeps a round's whole block alive
    st.forget(["once-0", "once-1", "never-seen"])
    assert sorted(map(str, st.histories)) == ["0", "1", "2", "3", "once-2"]
    with pytest.raises(
        aggkit.ShapeError, match=r"client 0 sent 41 values, its history has 40; forget\(\[0\]\)"
    ):
        st.aggregate(rng.standard_normal((2, 41)), ids=[0, 9])
    with pytest.raises(TypeError, match="ids must be a sequence of client ids, got str"):
        st.aggregate(rng.standard_normal((3, 40)), ids="abc")
    with pytest.raises(TypeError, match="ids must be hashable"):
        st.aggregate(rng.standard_normal((2, 40)), ids=[[1], [2]])


def test_large_kappa_and_bad_histories_are_quiet_and_clear():
    x = np.random.default_rng(2).standard_normal((4, 3))
    np.testing.assert_array_equal(aggkit.foolsgold(x, kappa=1e308), aggkit.foolsgold(x, kappa=1.0))
    for bad in ("abcde", 3.0):
        with pytest.raises(aggkit.ShapeError, match="history must hold one row per input"):
            aggkit.foolsgold(x, history=bad)
    torch = pytest.importorskip("torch")
    with pytest.raises(aggkit.InvalidParameterError, match="history rows must be arrays of numbers"):
        aggkit.foolsgold(x, history=torch.zeros(4, 3, requires_grad=True))


def test_mixing_before_foolsgold_is_refused():
    with pytest.raises(aggkit.InvalidParameterError, match="mixes the clients' updates before it"):
        aggkit.rule("nnm>foolsgold", f=1)
    with pytest.raises(aggkit.InvalidParameterError, match="mixes the clients' updates before it"):
        aggkit.Pipeline([aggkit.Bucketing(), aggkit.FoolsGold()])
    aggkit.rule("arc>foolsgold", f=1)  # clipping keeps each client's row its own


@given(matrices(min_n=1, max_n=6, max_d=40), st.data())
def test_history_pass_is_the_plain_sum(x, data):
    # The Rust pass adds the round to the histories as numpy's `h + s * x` would, leaves the
    # caller's histories alone, and reads rows given as views, None, or of another dtype.
    n, d = x.shape
    for i in data.draw(st.lists(st.integers(0, n - 1), max_size=2)):
        x[i, data.draw(st.integers(0, d - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    rows = []
    for _ in range(n):
        kind = data.draw(st.sampled_from(["none", "f64", "f32", "strided"]))
        h = data.draw(hnp.arrays(np.float64, 2 * d, elements=finite_elements(np.float64)))
        rows.append({"none": None, "f64": h[:d], "f32": h[:d].astype(np.float32), "strided": h[::2]}[kind])
    before = [None if r is None else r.copy() for r in rows]
    clip = data.draw(st.sampled_from([None, 1.0]))
    _, info = aggkit.foolsgold(x, history=rows, clip=clip, return_info=True)
    for r, b in zip(rows, before, strict=True):
        if r is not None:
            np.testing.assert_array_equal(r, b)
    finite = np.isfinite(x).all(axis=1)
    for i in range(n):
        h0 = np.zeros(d) if rows[i] is None else np.asarray(rows[i], dtype=np.float64)
        if not finite[i]:
            np.testing.assert_array_equal(info.history[i], h0)
            continue
        s = 1.0
        if clip is not None:
            norm = float(np.linalg.norm(x[i].astype(np.float64)))
            s = min(1.0, clip / norm) if norm > 0 else 1.0
        with np.errstate(over="ignore"):
            want = h0 + s * x[i].astype(np.float64)
        np.testing.assert_allclose(info.history[i], want, rtol=1e-12)
        if clip is None:
            np.testing.assert_array_equal(info.history[i], want)
