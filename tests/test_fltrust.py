"""FLTrust: the slow reference, invariants, non-finite inputs, errors, torch."""

from __future__ import annotations

import math

import aggkit
import numpy as np
import pytest
import reference as ref
from aggkit.registry import from_spec, to_spec
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import finite_elements, matrices

DOC_X = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])


def _tol(dtype, scale):
    tol = 1e-5 if dtype == np.float32 else 1e-9
    return dict(rtol=tol, atol=tol * (1 + scale))


def _well_posed(x, g0, bound=math.inf):
    """No row (near) orthogonal to the reference: there a rounding decides whether the trust is
    0 or a tiny positive number that the normalisation by the total trust then magnifies."""
    x = np.asarray(x, np.float64)
    gn = np.linalg.norm(g0)
    if gn == 0:
        return True
    xn = np.array([math.hypot(*r) for r in x])  # no underflow
    nz = xn > 0
    cos = x[nz] @ g0 / (xn[nz] * gn)
    return bool(np.all((xn[nz] < bound * gn) & (np.abs(cos) > 1e-9)))


@given(matrices(min_n=1, max_n=8, max_d=5), st.data())
def test_matches_reference(x, data):
    d = x.shape[1]
    kind = data.draw(st.sampled_from(["random", "row", "zero"]))
    if kind == "random":
        g0 = data.draw(hnp.arrays(np.float64, d, elements=finite_elements(np.float64)))
    elif kind == "row":
        g0 = x[data.draw(st.integers(0, x.shape[0] - 1))].astype(np.float64)
    else:
        g0 = np.zeros(d)
    assume(_well_posed(x, g0))
    got = aggkit.fltrust(x, reference=g0)
    assert got.dtype == x.dtype
    assert got.shape == (d,)
    want = ref.fltrust(x, g0).astype(x.dtype)
    np.testing.assert_allclose(got, want, **_tol(x.dtype, np.linalg.norm(g0)))
    # Each input's contribution has norm at most ||g0||: so has their convex combination.
    assert np.linalg.norm(got.astype(np.float64)) <= np.linalg.norm(g0) * (1 + 1e-5) + 1e-30


def test_docstring_oracle():
    # cos = 1/sqrt2 for the first two, -1 for the third: y = (g0n/2)(e1 + e2) with ||g0|| = sqrt2.
    y = aggkit.fltrust(DOC_X, reference=[1.0, 1.0])
    np.testing.assert_allclose(y, [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-15)
    # Trust 3/5 and 4/5 to g0 = (3, 4) (norm 5): y = 5 (0.6 e1 + 0.8 e2) / 1.4.
    y = aggkit.fltrust(np.array([[7.0, 0.0], [0.0, 0.5]]), reference=[3.0, 4.0])
    np.testing.assert_allclose(y, [3 / 1.4, 4 / 1.4], rtol=1e-15)
    np.testing.assert_allclose(aggkit.FLTrust()(DOC_X, reference=[1.0, 1.0]), [np.sqrt(0.5)] * 2, rtol=1e-15)


def test_no_positive_trust_gives_zero():
    x = np.array([[-1.0, 0.0], [0.0, -2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(aggkit.fltrust(x, reference=[1.0, 1.0]), [0.0, 0.0])
    # g0 = 0: no trust at all.
    np.testing.assert_array_equal(aggkit.fltrust(DOC_X, reference=[0.0, 0.0]), [0.0, 0.0])
    # orthogonal to g0 (exact small integers): cosine 0, no trust.
    np.testing.assert_array_equal(aggkit.fltrust(np.array([[0.0, 4.0]]), reference=[1.0, 0.0]), [0.0, 0.0])


def test_invariants(rng):
    x = rng.standard_normal((9, 6))
    g0 = rng.standard_normal(6)
    y = aggkit.fltrust(x, reference=g0)
    assert np.linalg.norm(y) <= np.linalg.norm(g0) * (1 + 1e-12)
    # Permuting the rows changes nothing.
    perm = rng.permutation(9)
    np.testing.assert_allclose(aggkit.fltrust(x[perm], reference=g0), y, rtol=1e-12, atol=1e-14)
    # Scaling an input by a positive factor changes nothing (it is rescaled to ||g0||).
    xs = x.copy()
    xs[2] *= 1234.5
    xs[5] *= 1e-3
    np.testing.assert_allclose(aggkit.fltrust(xs, reference=g0), y, rtol=1e-12, atol=1e-14)
    # Scaling g0 scales the output.
    np.testing.assert_allclose(aggkit.fltrust(x, reference=4.0 * g0), 4.0 * y, rtol=1e-12, atol=1e-14)
    # An input with cosine <= 0 to g0 has no influence, whatever it is.
    cos = x @ g0 / (np.linalg.norm(x, axis=1) * np.linalg.norm(g0))
    away = np.flatnonzero(cos <= 0)
    assert len(away) > 0
    xa = x.copy()
    xa[away] = -1e6 * g0 + rng.standard_normal((len(away), 6))  # point away, far
    np.testing.assert_allclose(aggkit.fltrust(xa, reference=g0), y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(aggkit.fltrust(np.delete(x, away, axis=0), reference=g0), y, rtol=1e-12)
    # An input along g0 only pulls the output toward g0's direction.
    more = aggkit.fltrust(np.vstack([x, 1e9 * g0]), reference=g0)
    c = lambda v: v @ g0 / (np.linalg.norm(v) * np.linalg.norm(g0))  # noqa: E731
    assert c(more) > c(y)


@pytest.mark.parametrize("nonfinite", ["robust", "raise", "propagate"])
def test_nonfinite_inputs(nonfinite):
    x = np.array([[2.0, 0.0], [np.nan, 1.0], [0.0, 3.0], [np.inf, -np.inf], [-1.0, 0.0]])
    g0 = [1.0, 1.0]
    if nonfinite == "raise":
        with pytest.raises(aggkit.NonFiniteError, match=r"nonfinite='raise'") as e:
            aggkit.fltrust(x, reference=g0, nonfinite="raise")
        assert list(e.value.rows) == [1, 3]
        return
    got = aggkit.fltrust(x, reference=g0, nonfinite=nonfinite)
    if nonfinite == "propagate":
        assert np.isnan(got).all()
    else:
        np.testing.assert_array_equal(got, aggkit.fltrust(DOC_X, reference=g0))
    # Every input non-finite: zero under "robust".
    bad = np.full((2, 2), np.nan)
    np.testing.assert_array_equal(aggkit.fltrust(bad, reference=g0), [0.0, 0.0])
    # A finite input is accepted under every policy.
    np.testing.assert_array_equal(
        aggkit.fltrust(DOC_X, reference=g0, nonfinite=nonfinite), aggkit.fltrust(DOC_X, reference=g0)
    )


def test_errors():
    x = np.ones((3, 2))
    with pytest.raises(aggkit.InvalidParameterError, match="reference must have one input's shape"):
        aggkit.fltrust(x, reference=np.ones(3))
    with pytest.raises(aggkit.InvalidParameterError, match="reference update must be finite"):
        aggkit.fltrust(x, reference=[1.0, np.nan])
    with pytest.raises(aggkit.InvalidParameterError, match="reference update must be finite"):
        aggkit.fltrust(x, reference=[np.inf, 0.0])
    with pytest.raises(aggkit.InvalidParameterError, match="reference must be an array of real numbers"):
        aggkit.fltrust(x, reference="abc")
    with pytest.raises(aggkit.InvalidParameterError, match="real numbers, got ndarray of dtype complex128"):
        aggkit.fltrust(x, reference=np.ones(2) * 1j)
    with pytest.raises(aggkit.InvalidParameterError, match=r"shape \(2, 3\) or \(6,\), got \(3, 2\)"):
        aggkit.fltrust(np.ones((3, 2, 3)), reference=np.ones((3, 2)))
    with pytest.raises(aggkit.InvalidParameterError, match="nonfinite"):
        aggkit.fltrust(x, reference=[1.0, 1.0], nonfinite="bogus")
    with pytest.raises(aggkit.InvalidParameterError, match="nonfinite"):
        aggkit.FLTrust(nonfinite="drop")
    with pytest.raises(TypeError):
        aggkit.fltrust(x)  # reference is required
    with pytest.raises(aggkit.InvalidParameterError, match="needs reference="):
        aggkit.rule("nnm>fltrust", f=1)(x)
    assert aggkit.rule("nnm>fltrust", f=1).uses_reference
    with pytest.raises(aggkit.InvalidParameterError, match="needs reference="):
        aggkit.FLTrust().aggregate(x)
    with pytest.raises(aggkit.InvalidParameterError, match="needs reference="):
        aggkit.FLTrust().rounds().aggregate(x)
    with pytest.raises(aggkit.InvalidParameterError, match="does not take weights"):
        aggkit.FLTrust().aggregate(x, reference=[1.0, 1.0], weights=np.ones(3))
    with pytest.raises(aggkit.InvalidParameterError, match="does not take a reference"):
        aggkit.Median().aggregate(x, reference=[1.0, 1.0])
    with pytest.raises(aggkit.EmptyInputError, match="fltrust needs at least one input"):
        aggkit.fltrust(np.zeros((0, 2)), reference=[1.0, 1.0])


def test_reference_given_as_array_of_the_inputs_shape():
    x = np.arange(24.0).reshape(4, 2, 3) - 5.0
    g0 = np.arange(6.0).reshape(2, 3)
    y = aggkit.fltrust(x, reference=g0)
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y.reshape(-1), ref.fltrust(x.reshape(4, -1), g0), rtol=1e-13)
    # A list of arrays, as a sequence of n inputs.
    np.testing.assert_allclose(aggkit.fltrust(list(x), reference=g0.tolist()), y, rtol=1e-15)


def test_edge_sizes():
    one = np.array([[3.0, -4.0]])
    np.testing.assert_allclose(aggkit.fltrust(one, reference=[10.0, 0.0]), [6.0, -8.0], rtol=1e-15)
    np.testing.assert_array_equal(aggkit.fltrust(one, reference=[-10.0, 0.0]), [0.0, 0.0])
    out = aggkit.fltrust(np.zeros((3, 0)), reference=np.zeros(0))
    assert out.shape == (0,)
    np.testing.assert_array_equal(aggkit.fltrust(np.zeros((3, 4)), reference=np.ones(4)), np.zeros(4))


def test_dtypes_are_kept():
    for dt in (np.float16, np.float32, np.float64):
        y = aggkit.fltrust(DOC_X.astype(dt), reference=[1.0, 1.0])
        assert y.dtype == dt
        np.testing.assert_allclose(y, [np.sqrt(0.5)] * 2, rtol=1e-3 if dt == np.float16 else 1e-7)


def test_huge_rows_do_not_overflow():
    x = np.array([[1e300, 1e300], [1e200, -1e200], [1.0, 0.0], [-1e300, 1e308]])
    y = aggkit.fltrust(x, reference=[1.0, 0.0])
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, ref.fltrust(x, [1.0, 0.0]), rtol=1e-14)
    np.testing.assert_allclose(y, [2 / (1 + np.sqrt(2)), 0.0], rtol=1e-14)
    # Largest float32 values (the output's norm is ||g0||'s, within float32).
    x32 = np.array([[3e38, 3e38], [1e38, 0.0]], np.float32)
    y32 = aggkit.fltrust(x32, reference=[1e38, 5e37])
    assert np.isfinite(y32).all()
    np.testing.assert_allclose(y32, ref.fltrust(x32, [1e38, 5e37]), rtol=1e-6)


def test_reference_with_overflowing_norm_is_refused_cleanly():
    with pytest.raises(aggkit.InvalidParameterError, match="norm overflows"):
        aggkit.fltrust(np.ones((2, 2)), reference=[1.7e308, 1.7e308])
    # a norm of 1.4e300 fits: measured scaled, no overflow on the way; the inputs take its norm
    np.testing.assert_allclose(aggkit.fltrust(np.ones((2, 2)), reference=[1e300, 1e300]), [1e300, 1e300])


@pytest.mark.parametrize(
    ("x", "g0"),
    [
        pytest.param(  # rows 1e12 shorter than g0: relative error ~1e-5
            [[1e-6, 2e-6, 0.5e-6], [0.3e-6, -1e-6, 2e-6], [1.0, 1.0, 1.0]],
            [1e6, 3e5, -2e5],
            id="short-rows",
        ),
        pytest.param(  # a row 1e38 longer than g0 (largest float32 values): its trust is lost
            np.array([[3e38, 3e38], [1.0, 0.0]], np.float32), [1.0, 0.5], id="long-row"
        ),
        pytest.param(  # rows 1e200 shorter than g0: their trust is lost
            [[1e-200, 1e-200], [1.0, -0.5]], [1.0, 0.5], id="tiny-row"
        ),
        pytest.param(  # exactly orthogonal: sqrt(26)**2 != 26, trust 4e-16 > 0, full weight alone
            [[0.0, 5.0]], [1.0, 0.0], id="orthogonal"
        ),
        pytest.param([[1e-3, 2e-3, 0.5e-3], [0.3e-3, -1e-3, 2e-3]], [1e6, 3e5, -2e5], id="moderate-ratio"),
    ],
)
def test_cosines_across_scales(x, g0):
    x = np.asarray(x)
    want = ref.fltrust(x, g0)
    np.testing.assert_allclose(
        aggkit.fltrust(x, reference=g0), want.astype(x.dtype), rtol=1e-6 if x.dtype == np.float32 else 1e-12
    )


def test_rule_object_registry_and_specs():
    r = aggkit.rule("fltrust")
    assert r == aggkit.FLTrust()
    assert r.uses_reference
    assert aggkit.rule("fltrust", nonfinite="raise") == aggkit.FLTrust(nonfinite="raise")
    for rule in (aggkit.FLTrust(), aggkit.FLTrust(nonfinite="propagate")):
        assert from_spec(to_spec(rule)) == rule
        assert eval(repr(rule), {"FLTrust": aggkit.FLTrust}) == rule
    out, sel = r.aggregate(DOC_X, reference=[1.0, 1.0])
    assert sel is None
    np.testing.assert_array_equal(out, aggkit.fltrust(DOC_X, reference=[1.0, 1.0]))
    out2, _ = r.rounds().aggregate(DOC_X, reference=[1.0, 1.0])
    np.testing.assert_array_equal(out2, out)


def test_torch_parity_and_native(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((8, 5))
    x[3] = -x[0]  # some negative trust
    g0 = rng.standard_normal(5)
    want = aggkit.fltrust(x, reference=g0)
    t = torch.from_numpy(x)
    for got in (at.fltrust(t, reference=g0), aggkit.fltrust(t, reference=torch.from_numpy(g0))):
        assert isinstance(got, torch.Tensor)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
    with at.force_native():
        np.testing.assert_allclose(at.fltrust(t, reference=g0).numpy(), want, rtol=1e-12, atol=1e-14)
    t32 = torch.from_numpy(x.astype(np.float32))
    got32 = at.fltrust(t32, reference=g0)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), aggkit.fltrust(x.astype(np.float32), reference=g0), rtol=1e-5)
    # Non-finite policies, huge rows, zero trust.
    xb = x.copy()
    xb[1, 2] = np.nan
    np.testing.assert_allclose(
        at.fltrust(torch.from_numpy(xb), reference=g0).numpy(),
        aggkit.fltrust(xb, reference=g0),
        rtol=1e-12,
        atol=1e-14,
    )
    assert torch.isnan(at.fltrust(torch.from_numpy(xb), reference=g0, nonfinite="propagate")).all()
    with pytest.raises(aggkit.NonFiniteError):
        at.fltrust(torch.from_numpy(xb), reference=g0, nonfinite="raise")
    huge = np.array([[1e300, 1e300], [1e200, -1e200], [1.0, 0.0], [-1e300, 1e308]])
    np.testing.assert_allclose(
        at.fltrust(torch.from_numpy(huge), reference=[1.0, 0.0]).numpy(),
        aggkit.fltrust(huge, reference=[1.0, 0.0]),
        rtol=1e-14,
        atol=1e-15,
    )
    np.testing.assert_array_equal(at.fltrust(torch.from_numpy(-x), reference=-x[0] * 0).numpy(), np.zeros(5))
    with pytest.raises(aggkit.InvalidParameterError, match="reference must have one input's shape"):
        at.fltrust(t, reference=torch.ones(4))
    with pytest.raises(aggkit.InvalidParameterError, match="finite"):
        at.fltrust(t, reference=torch.full((5,), float("nan")))


def test_torch_gradient(rng):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    x = rng.standard_normal((6, 4))
    g0 = rng.standard_normal(4)
    x[0] = -g0  # one with no trust: gets no gradient
    t = torch.from_numpy(x).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: at.fltrust(v, reference=g0), (t,))
    at.fltrust(t, reference=g0).sum().backward()
    assert torch.all(t.grad[0] == 0)
    # The reference is detached: it gets no gradient.
    r = torch.from_numpy(g0).requires_grad_(True)
    out = at.fltrust(torch.from_numpy(x), reference=r)
    assert not out.requires_grad


def test_a_tiny_byzantine_update_cannot_blow_up_the_float32_output():
    # A client sending a subnormal update along the server's: its factor ||g0|| / ||x|| is ~1e40,
    # which overflowed float32 when the mean was multiplied back by the weights' total.
    rng = np.random.default_rng(0)
    g0 = rng.standard_normal(10).astype(np.float32)
    honest = (g0 + 0.1 * rng.standard_normal((8, 10))).astype(np.float32)
    x = np.concatenate([honest, (g0 * np.float32(1e-41))[None]])
    y = aggkit.fltrust(x, reference=g0)
    assert np.isfinite(y).all()
    assert np.linalg.norm(y.astype(np.float64)) <= np.linalg.norm(g0.astype(np.float64)) * (1 + 1e-6)
    np.testing.assert_allclose(y, ref.fltrust(x, g0).astype(np.float32), rtol=1e-5, atol=1e-6)
    tiny = aggkit.fltrust(np.full((3, 4), 1e-40, np.float32), reference=np.ones(4))
    np.testing.assert_allclose(tiny, np.ones(4), rtol=1e-6)


def test_a_reference_near_float64s_limit_is_measured_scaled():
    x, g0 = np.ones((3, 100)), np.full(100, 1e307)  # ||g0|| = 1e308: accepted
    np.testing.assert_allclose(aggkit.fltrust(x, reference=g0), g0, rtol=1e-12)
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    t = at.fltrust(torch.from_numpy(x), reference=torch.from_numpy(g0))
    np.testing.assert_allclose(t.numpy(), g0, rtol=1e-12)


def test_a_pipeline_ending_in_fltrust_takes_the_reference():
    rng = np.random.default_rng(4)
    x, g0 = rng.standard_normal((7, 5)), rng.standard_normal(5)
    p = aggkit.rule("nnm>fltrust", f=1)
    want = aggkit.fltrust(aggkit.NNM(f=1)(x), reference=g0)
    np.testing.assert_array_equal(p.aggregate(x, reference=g0)[0], want)
    np.testing.assert_array_equal(p.rounds().aggregate(x, reference=g0)[0], want)
