"""aggkit.torch: ops, autograd, the torch-native (device) path, modules, zero copy."""

from __future__ import annotations

import subprocess
import sys

import aggkit
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from producers import Foreign
from strategies import DTYPES, TIES, finite_elements, matrices

torch = pytest.importorskip("torch")
import aggkit.torch as at  # noqa: E402
from aggkit.torch import nn as ann  # noqa: E402

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")

POLICIES = ("robust", "propagate")  # "raise" refuses the non-finite draws; tested apart


def same(a, b) -> bool:
    """Bitwise equality of two tensors (NaN payloads aside: every NaN is equal)."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    it = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a[~nan].view(it), b[~nan].view(it))


@st.composite
def wild(draw, min_n=1, max_n=12, max_d=5):
    """Matrices mixing ordinary values, exact ties, ±0, ±inf, NaN and huge values."""
    dt = draw(DTYPES)
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    top = float(np.finfo(dt).max)
    special = st.sampled_from([np.nan, np.inf, -np.inf, top / 2, -top / 2, top, -top, -0.0, 0.0])
    elements = st.one_of(finite_elements(dt), TIES, special)
    return torch.from_numpy(draw(hnp.arrays(dt, (n, d), elements=elements)))


def native(fn, *args, **kw):
    with at.force_native():
        return fn(*args, **kw)


# ---------------------------------------------------------------------------------------------
# The Rust path and the torch-native path agree, and agree with the numpy API


@given(wild(), st.sampled_from(["mean", "lower", "upper"]), st.sampled_from(POLICIES))
def test_median_native_matches_core_bitwise(x, even, nonfinite):
    y = at.median(x, even=even, nonfinite=nonfinite)
    assert same(y, torch.from_numpy(aggkit.median(x.numpy(), even=even, nonfinite=nonfinite)))
    assert same(native(at.median, x, even=even, nonfinite=nonfinite), y)


@given(wild(), st.data())
def test_trimmed_mean_native_matches_core_bitwise(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    y = at.trimmed_mean(x, f=f, nonfinite=nonfinite)
    assert same(y, torch.from_numpy(aggkit.trimmed_mean(x.numpy(), f=f, nonfinite=nonfinite)))
    assert same(native(at.trimmed_mean, x, f=f, nonfinite=nonfinite), y)


def _weights(data, n):
    """None, or weights whose products with the values may overflow float64 (1e100 x 1e300)."""
    return data.draw(st.none() | st.lists(st.floats(0.5, 1e3) | st.just(1e100), min_size=n, max_size=n))


@given(wild(), st.data())
def test_weighted_trimmed_mean_native_matches_core_bitwise(x, data):
    f = data.draw(st.integers(0, (x.shape[0] - 1) // 2))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    n = x.shape[0]
    weights = data.draw(st.lists(st.floats(0.0, 1e3) | st.just(1e100), min_size=n, max_size=n))
    if sum(weights) == 0:
        weights[0] = 1.0
    y = at.trimmed_mean(x, f=f, weights=weights, nonfinite=nonfinite)
    core = aggkit.trimmed_mean(x.numpy(), f=f, weights=weights, nonfinite=nonfinite)
    assert same(y, torch.from_numpy(core))
    assert same(native(at.trimmed_mean, x, f=f, weights=weights, nonfinite=nonfinite), y)


@given(wild(), st.data())
def test_weighted_median_core_rows_match_native_values_and_gradients(x, data):
    # On CPU the rows come from the core and the value is gathered; the torch-native rule
    # ranks and sums in torch ops: same bits, same gradient (ties of exactly half the weight
    # included: weights of 0, 1 and 2).
    n = x.shape[0]
    weights = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 0.3]), min_size=n, max_size=n))
    if sum(weights) == 0:
        weights[0] = 1.0
    even = data.draw(st.sampled_from(["mean", "lower", "upper"]))
    nonfinite = data.draw(st.sampled_from(POLICIES))
    xr = x.clone().requires_grad_(True)
    y = at.median(xr, weights=weights, even=even, nonfinite=nonfinite)
    core = aggkit.median(x.numpy(), weights=weights, even=even, nonfinite=nonfinite)
    assert same(y.detach(), torch.from_numpy(np.asarray(core)))
    (grad,) = torch.autograd.grad(y.sum(), xr)
    yn = native(at.median, xr, weights=weights, even=even, nonfinite=nonfinite)
    assert same(yn.detach(), y.detach())
    (grad_n,) = torch.autograd.grad(yn.sum(), xr)
    assert same(grad, grad_n)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_weighted_rules_under_torch_func_and_export(rule):
    # Outside a custom op, the weighted rules read tensors in the core only when they are plain:
    # torch.func's wrapped tensors and export's fake ones take the torch ops.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5, dtype=torch.float64, generator=g)
    w = [1.0, 2.0, 0.5, 1.0, 3.0, 0.0, 1.0]
    kw = {"f": 1} if rule == "trimmed_mean" else {}
    fn = getattr(at, rule)
    want = fn(x, weights=w, **kw)
    batched = torch.func.vmap(lambda v: fn(v, weights=w, **kw), in_dims=2)(x[:, :, None].expand(7, 5, 3))
    assert same(batched, want[:, None].expand(5, 3).t())
    grad = torch.func.grad(lambda v: fn(v, weights=w, **kw).sum())(x)
    (want_grad,) = torch.autograd.grad(fn(x.requires_grad_(), weights=w, **kw).sum(), x)
    assert same(grad, want_grad)

    class M(torch.nn.Module):
        def forward(self, v):
            return fn(v, weights=w, **kw)

    exported = torch.export.export(M(), (x.detach(),), strict=False)
    assert same(exported.module()(x.detach()), want)


def test_median_backward_of_a_propagated_nan_column_is_the_same_on_both_paths():
    # even="mean", a NaN column under "propagate": both middle rows are the first NaN row, which
    # gets both halves of the gradient on every path (the Rust backward used to give one).
    x = torch.tensor([[1.0, 2.0], [float("nan"), 3.0], [4.0, 5.0], [6.0, -0.0]], dtype=torch.float64)
    g = torch.tensor([3.0, -0.0], dtype=torch.float64)
    grads = []
    for ctx in (_null, at.force_native):
        xr = x.clone().requires_grad_(True)
        with ctx():
            (gx,) = torch.autograd.grad(at.median(xr, even="mean", nonfinite="propagate"), xr, g)
        grads.append(gx)
    assert same(grads[0], grads[1])
    assert grads[0][1, 0].item() == 3.0


def test_averages_whose_sum_overflows_on_both_paths():
    top = np.finfo(np.float64).max
    x = torch.tensor([[top, 1e300], [top / 2, 0.0], [0.0, 0.0]], dtype=torch.float64)
    for run in (lambda fn, **kw: fn(x, **kw), lambda fn, **kw: native(fn, x, **kw)):
        assert run(at.mean).tolist() == [top / 2, 1e300 / 3]
        assert run(at.trimmed_mean, f=0).tolist() == [top / 2, 1e300 / 3]
        w = [2.0**300, 0.0, 2.0**300]  # w * x overflows for the weights as given
        assert run(at.mean, weights=w).tolist() == [top / 2, 5e299]
        assert run(at.trimmed_mean, f=0, weights=w).tolist() == [top / 2, 5e299]
    # The sum stays at MAX, only adding its compensation overflows; an infinity after an
    # overflow is IEEE arithmetic (numpy's NaN), as in the core.
    inf = float("inf")
    x = torch.tensor([[top, top, -top], [9e291, top, -top], [9e291, -inf, inf]], dtype=torch.float64)
    core = aggkit.mean(x.numpy(), nonfinite="propagate")
    assert core[0] < top
    assert np.isnan(core[1:]).all()
    for path in (at.mean, lambda *a, **k: native(at.mean, *a, **k)):
        assert same(path(x, nonfinite="propagate"), torch.from_numpy(core))
    tiny = torch.tensor([[5e-324], [2.2250738585072014e-308]], dtype=torch.float64)
    w = [5e-324, 3.295888487884983e-130]  # w * x underflows for the weights as given
    for path in (at.mean, lambda *a, **k: native(at.mean, *a, **k)):
        assert path(tiny, weights=w).tolist() == [2.2250738585072014e-308]


@given(wild(), st.data())
def test_mean_native_matches_core_bitwise(x, data):
    nonfinite = data.draw(st.sampled_from(POLICIES))
    weights = _weights(data, x.shape[0])
    if nonfinite == "robust" and not torch.isfinite(x).all(dim=1).any():  # every input dropped
        for path in (at.mean, lambda *a, **k: native(at.mean, *a, **k)):
            with pytest.raises(aggkit.NonFiniteError) as e:
                path(x, weights=weights, nonfinite=nonfinite)
            assert e.value.rows == list(range(x.shape[0]))
        return
    y = at.mean(x, weights=weights, nonfinite=nonfinite)
    assert same(y, torch.from_numpy(aggkit.mean(x.numpy(), weights=weights, nonfinite=nonfinite)))
    assert same(native(at.mean, x, weights=weights, nonfinite=nonfinite), y)


@given(matrices(min_n=3, max_n=12, max_d=8, ties=False), st.data())
def test_krum_native_matches_core(x, data):
    x = torch.from_numpy(x)
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n))
    y, sel = at.multi_krum(x, f=f, m=m, return_selection=True)
    yn, seln = native(at.multi_krum, x, f=f, m=m, return_selection=True)
    # The core squares float32 differences in float32 lanes (then sums in float64); the native
    # path works in float64 throughout: scores agree to float32 rounding.
    rtol = 1e-5 if x.dtype == torch.float32 else 1e-9
    torch.testing.assert_close(seln.scores, sel.scores, rtol=rtol, atol=1e-30)
    # Selections agree unless two scores are equal up to rounding.
    s = np.sort(sel.scores.numpy())
    if np.all(np.diff(s) > 2 * rtol * np.abs(s[1:])):
        assert torch.equal(seln.indices, sel.indices)
        assert same(yn, y)


def test_krum_spec_oracle_on_both_paths():
    x = torch.tensor(
        [[6.0, -8.0], [-6.0, -5.0], [-6.0, 6.0], [7.0, 2.0], [-9.0, -8.0], [-3.0, -1.0], [40.0, -30.0]],
        dtype=torch.float64,
    )
    for run in (lambda fn, **kw: fn(x, **kw), lambda fn, **kw: native(fn, x, **kw)):
        y, sel = run(at.krum, f=1, return_selection=True)
        assert y.tolist() == [-3.0, -1.0]
        assert sel.indices.tolist() == [5]
        assert sel.scores.tolist() == [609.0, 317.0, 569.0, 613.0, 533.0, 277.0, 9184.0]
        assert run(at.multi_krum, f=1, m=4).tolist() == [-6.0, -2.0]


def test_weighted_multi_krum_on_every_path():
    g = np.random.default_rng(5)
    x = g.standard_normal((9, 4))
    w = [3.0, 1.0, 0.0, 2.0, 5.0, 1.0, 1.0, 4.0, 2.0]
    expected = aggkit.multi_krum(x, f=2, m=4, weights=w)
    t = torch.tensor(x, requires_grad=True)
    for y in (at.multi_krum(t, f=2, m=4, weights=w), native(at.multi_krum, t, f=2, m=4, weights=w)):
        assert same(y, torch.from_numpy(expected))
    views = [torch.from_numpy(r) for r in x]  # the in-place list path
    assert same(at.multi_krum(views, f=2, m=4, weights=w), torch.from_numpy(expected))
    y, sel = at.multi_krum(t, f=2, m=4, weights=w, return_selection=True)
    y.sum().backward()
    kept = sel.indices.tolist()
    total = sum(w[i] for i in kept)
    for i in range(9):
        assert torch.allclose(t.grad[i], torch.full((4,), w[i] / total if i in kept else 0.0, dtype=t.dtype))


@pytest.mark.parametrize("path", ["core", "native"])
def test_krum_nonfinite_policies(path):
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [float("nan"), 0.0]])
    ctx = at.force_native() if path == "native" else _null()
    with ctx:
        assert at.krum(x, f=1).tolist() == [0.0, 0.0]
        with pytest.raises(aggkit.NonFiniteError) as e:
            at.krum(x, f=1, nonfinite="raise")
        assert e.value.rows == [4]
        assert torch.isnan(at.krum(x, f=1, nonfinite="propagate")).any()
        with pytest.raises(aggkit.NonFiniteError) as e:
            at.multi_krum(x, f=1, m=5)
        assert e.value.rows == [4]


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("path", ["core", "native"])
def test_raise_policy_names_rows(path):
    x = torch.tensor([[1.0, 2.0], [float("inf"), 0.0], [3.0, 4.0]])
    with at.force_native() if path == "native" else _null():
        for fn, kw in [(at.median, {}), (at.trimmed_mean, {"f": 1}), (at.mean, {})]:
            with pytest.raises(aggkit.NonFiniteError) as e:
                fn(x, nonfinite="raise", **kw)
            assert e.value.rows == [1]


@pytest.mark.parametrize("path", ["core", "native"])
def test_validation_errors_match(path):
    x = torch.zeros(4, 3)
    with at.force_native() if path == "native" else _null():
        with pytest.raises(aggkit.TooFewInputsError, match=r"trimmed mean needs n >= 2f \+ 1, got n=4, f=2"):
            at.trimmed_mean(x, f=2)
        with pytest.raises(aggkit.TooFewInputsError, match=r"Krum needs n >= 2f \+ 3, got n=4, f=1"):
            at.krum(x, f=1)
        with pytest.raises(aggkit.InvalidParameterError, match="m must satisfy"):
            at.multi_krum(torch.zeros(5, 2), f=1, m=6)
        with pytest.raises(aggkit.InvalidParameterError, match="weights"):
            at.mean(x, weights=[1.0, -1.0, 1.0, 1.0])
        with pytest.raises(aggkit.InvalidParameterError, match="weights"):
            at.mean(x, weights=[1.0, 1.0])
        with pytest.raises(aggkit.InvalidParameterError, match="sum to 0"):
            at.mean(x, weights=[0.0] * 4)
        with pytest.raises(aggkit.EmptyInputError):
            at.median(torch.zeros(0, 3))
        with pytest.raises(TypeError, match="floating-point"):
            at.median(torch.zeros(3, 2, dtype=torch.int64))
        with pytest.raises(TypeError, match="floating-point"):
            at.median(torch.zeros(3, 2, dtype=torch.complex64))
        with pytest.raises(aggkit.ShapeError):
            at.median(torch.tensor(1.0))
        with pytest.raises(aggkit.ShapeError, match="same shape"):
            at.median([torch.zeros(2), torch.zeros(3)])
        with pytest.raises(aggkit.InvalidParameterError, match="even"):
            at.median(x, even="middle")
        with pytest.raises(aggkit.InvalidParameterError, match="dim"):
            at.median(x, dim=2)


# ---------------------------------------------------------------------------------------------
# Gradients


def _separated(n, d, dtype=torch.float64, seed=0):
    """Inputs with distinct values in every column (no ties: the derivative exists)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randperm(n, generator=g) for _ in range(d)], dim=1).to(dtype)
    return (x + 0.1 * torch.rand(n, d, generator=g, dtype=dtype)).requires_grad_(True)


GRAD_CASES = [
    ("median odd", lambda x: at.median(x), 7),
    ("median even mean", lambda x: at.median(x, even="mean"), 6),
    ("median even lower", lambda x: at.median(x, even="lower"), 6),
    ("median even upper", lambda x: at.median(x, even="upper"), 6),
    ("trimmed_mean", lambda x: at.trimmed_mean(x, f=2), 7),
    ("mean", lambda x: at.mean(x), 5),
    ("mean weighted", lambda x: at.mean(x, weights=[1.0, 2.0, 0.5, 3.0, 1.0]), 5),
    ("krum", lambda x: at.krum(x, f=1), 6),
    ("multi_krum", lambda x: at.multi_krum(x, f=1, m=3), 6),
]


@pytest.mark.parametrize("path", ["core", "native"])
@pytest.mark.parametrize(("name", "fn", "n"), GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradcheck(name, fn, n, path):
    x = _separated(n, 4)
    with at.force_native() if path == "native" else _null():
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
        assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("path", ["core", "native"])
def test_gradient_routing_follows_the_tie_rule(path):
    with at.force_native() if path == "native" else _null():
        # Column [1, 1, 5]: ranks (1, row 0) < (1, row 1) < (5, row 2): the median is row 1's.
        x = torch.tensor([[1.0], [1.0], [5.0]], requires_grad=True)
        at.median(x).sum().backward()
        assert x.grad.flatten().tolist() == [0.0, 1.0, 0.0]
        # Even n, "mean": half to each middle element.
        x = torch.tensor([[3.0], [1.0], [2.0], [4.0]], requires_grad=True)
        at.median(x).sum().backward()
        assert x.grad.flatten().tolist() == [0.5, 0.0, 0.5, 0.0]
        # Trimmed mean, f=1, column [2, 2, 2, 2, 9]: trim (2, row 0) and (9, row 4).
        x = torch.tensor([[2.0], [2.0], [2.0], [2.0], [9.0]], requires_grad=True)
        at.trimmed_mean(x, f=1).sum().backward()
        third = 1.0 / 3.0
        assert x.grad.flatten().tolist() == pytest.approx([0.0, third, third, third, 0.0])
        # The robust mean gives nothing to a dropped (non-finite) input.
        x = torch.tensor([[1.0], [float("nan")], [3.0]], requires_grad=True)
        at.mean(x).sum().backward()
        assert x.grad.flatten().tolist() == [0.5, 0.0, 0.5]
        # Krum: the tie example of docs/algorithms.md selects row 0 (lowest index among equal scores).
        x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]], requires_grad=True)
        at.krum(x, f=1).sum().backward()
        assert x.grad[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


@given(wild(max_n=9), st.data())
def test_rust_backward_matches_torch_backward(x, data):
    """On CPU the backward runs a one-pass Rust kernel; the torch-op backward (used on devices
    and for double backward) must route the same gradient, ties and NaN columns included."""
    n = x.shape[0]
    nonfinite = data.draw(st.sampled_from(POLICIES))
    even = data.draw(st.sampled_from(["mean", "lower", "upper"]))
    f = data.draw(st.integers(0, (n - 1) // 2))
    g = torch.from_numpy(
        data.draw(hnp.arrays(x.numpy().dtype, x.shape[1], elements=st.floats(-4, 4, width=32)))
    )
    for fn, kw in [(at.median, {"even": even}), (at.trimmed_mean, {"f": f})]:
        grads = []
        for ctx in (_null(), at.force_native()):
            xr = x.clone().requires_grad_(True)
            with ctx:
                (gx,) = torch.autograd.grad(fn(xr, nonfinite=nonfinite, **kw), xr, g)
            grads.append(gx)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=0, equal_nan=True)


def test_grad_through_reduced_precision_and_batch_dims():
    x = _separated(5, 6, torch.float32).detach().reshape(5, 2, 3).to(torch.bfloat16).requires_grad_(True)
    y = at.median(x)
    assert y.dtype == torch.bfloat16
    assert y.shape == (2, 3)
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert x.grad.sum().item() == 6.0
    b = _separated(4, 7).detach().reshape(4, 7).T.reshape(7, 4, 1).contiguous().requires_grad_(True)
    y = at.trimmed_mean(b, f=1, dim=1)
    assert y.shape == (7, 1)
    ref = torch.stack([at.trimmed_mean(b[i], f=1) for i in range(7)])
    assert same(y, ref)
    y.sum().backward()
    assert torch.allclose(b.grad.sum(dim=1), torch.ones(7, 1, dtype=torch.float64))


def test_no_rows_are_computed_without_grad(monkeypatch):
    calls = []
    real = aggkit._core.median

    def spy(x, even, nonfinite, return_rows):
        calls.append(return_rows)
        return real(x, even, nonfinite, return_rows)

    monkeypatch.setattr(aggkit._core, "median", spy)
    x = torch.randn(5, 3)
    at.median(x)
    at.median(x.requires_grad_(True))
    with torch.no_grad():
        at.median(x)
    assert calls == [False, True, False]


# ---------------------------------------------------------------------------------------------
# Registration: opcheck, fake tensors, torch.compile


def _op_samples():
    x = _separated(7, 5).detach()
    for need in (True, False):
        yield torch.ops.aggkit.median.default, (x, "mean", "robust", need)
        yield torch.ops.aggkit.median.default, (x[:6], "mean", "robust", need)
        yield torch.ops.aggkit.trimmed_mean.default, (x, 2, "robust", need)
    yield torch.ops.aggkit.mean.default, (x, [], "robust")
    yield torch.ops.aggkit.mean.default, (x, [1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0], "robust")
    yield torch.ops.aggkit.krum.default, (x, 1, "robust")
    yield torch.ops.aggkit.multi_krum.default, (x, 1, 3, "robust")
    yield torch.ops.aggkit.meamed.default, (x, 4, "robust", True)
    yield torch.ops.aggkit.meamed.default, (x[:6], 3, "robust", True)


# torch's own aot_dispatch check reads .grad of the non-leaf inputs it makes (a torch-internal
# UserWarning, not about this op).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("k", range(12))
def test_opcheck(k):
    op, args = list(_op_samples())[k]
    x = args[0].clone().requires_grad_(op is not torch.ops.aggkit.median.default or args[3])
    if op in (torch.ops.aggkit.median.default, torch.ops.aggkit.trimmed_mean.default) and not args[3]:
        x = x.detach()  # without the rows there is nothing to differentiate
    torch.library.opcheck(op, (x, *args[1:]))


# Rules written in torch ops and aggkit ops (no op of their own): decisions on the (n, n)
# distances or norms, outputs through aggkit::mean / meamed / trimmed_mean or torch's autograd.
COMPOSED = {
    "bulyan", "caf", "centered_clipping", "mda", "monna", "pipeline", "sign_vote", "smea",
    "bucketing_cc", "nnm_cc", "nnm_trimmed_mean", "dnc", "fltrust", "foolsgold",
}  # fmt: skip


def test_every_rule_has_an_op():
    for name in aggkit.list_rules():
        assert callable(getattr(at, name)), name
        assert hasattr(torch.ops.aggkit, name) or name in COMPOSED, name
    assert not any(hasattr(torch.ops.aggkit, name) for name in COMPOSED)


def test_compile_fullgraph():
    torch._dynamo.reset()
    x = _separated(7, 16, torch.float32).detach().requires_grad_(True)

    def step(x):
        return (at.trimmed_mean(x, f=2) * 2.0).sum()

    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    loss = compiled(x)
    (g,) = torch.autograd.grad(loss, x)
    (g_ref,) = torch.autograd.grad(step(x), x)
    # Inductor fuses the surrounding ops (its own summation order): equal to rounding.
    torch.testing.assert_close(loss, step(x))
    torch.testing.assert_close(g, g_ref)


# ---------------------------------------------------------------------------------------------
# Zero copy, sequences, dtypes, no mutation


def test_cpu_tensors_reach_rust_without_copy(monkeypatch):
    seen = {}
    real = aggkit._core.median

    def spy(x, even, nonfinite, return_rows):
        seen["in"] = x.__array_interface__["data"][0]
        out = real(x, even, nonfinite, return_rows)
        seen["out"] = out[0].__array_interface__["data"][0]
        return out

    monkeypatch.setattr(aggkit._core, "median", spy)
    x = torch.randn(9, 4, 5)
    y = at.median(x)
    assert seen["in"] == x.data_ptr()
    assert seen["out"] == y.data_ptr()


def test_sequences_are_read_in_place(monkeypatch):
    seen = []
    real = aggkit._core.trimmed_mean

    def spy(x, *a):
        seen.extend(v.__array_interface__["data"][0] for v in x)
        return real(x, *a)

    monkeypatch.setattr(aggkit._core, "trimmed_mean", spy)
    xs = [torch.randn(3, 4) for _ in range(5)]
    y = at.trimmed_mean(xs, f=1)
    assert seen == [t.data_ptr() for t in xs]
    assert same(y, at.trimmed_mean(torch.stack(xs), f=1))


def test_numpy_api_accepts_tensors_and_mirrors_the_type():
    x = torch.randn(5, 3, dtype=torch.float64)
    rules = [(aggkit.median, {}), (aggkit.trimmed_mean, {"f": 1}), (aggkit.mean, {}), (aggkit.krum, {"f": 1})]
    for fn, kw in rules:
        y = fn(x, **kw)
        assert isinstance(y, torch.Tensor)
        assert y.dtype == torch.float64
        assert same(y, torch.from_numpy(fn(x.numpy(), **kw)))
    y = aggkit.multi_krum(list(x), f=1, m=2)
    assert isinstance(y, torch.Tensor)
    y, sel = aggkit.krum(x, f=1, return_selection=True)
    assert isinstance(sel.indices, torch.Tensor)
    # A tensor that requires grad goes through autograd rather than failing in numpy.
    xg = x.clone().requires_grad_(True)
    aggkit.median(xg).sum().backward()
    assert xg.grad is not None
    assert aggkit.Median()(x).dtype == torch.float64  # rule objects too


def test_dlpack_producers_get_their_own_type_back():
    a = np.arange(12.0).reshape(4, 3)
    y = aggkit.median(Foreign(a))
    assert isinstance(y, Foreign)
    np.testing.assert_array_equal(y.a, np.median(a, axis=0))
    y = aggkit.mean([Foreign(r) for r in a])
    assert isinstance(y, Foreign)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_are_preserved(dtype):
    x = torch.randn(7, 5).to(dtype)
    ref = x.float()
    for fn, kw in [(at.median, {}), (at.trimmed_mean, {"f": 2}), (at.mean, {}), (at.multi_krum, {"f": 1})]:
        y = fn(x, **kw)
        assert y.dtype == dtype
        if dtype in (torch.float16, torch.bfloat16):
            assert same(y, fn(ref, **kw).to(dtype))
        for path_y in (fn(list(x), **kw), native(fn, x, **kw)):
            assert path_y.dtype == dtype


def test_inputs_are_not_mutated():
    x = torch.tensor([[1.0, float("nan")], [-0.0, 3.0], [2.0, float("inf")], [5.0, 1.0], [0.0, 2.0]])
    before = x.clone()
    for ctx in (_null(), at.force_native()):
        with ctx:
            at.median(x)
            at.trimmed_mean(x, f=1)
            at.mean(x)
            at.krum(x, f=1)
    assert same(x, before)


def test_import_aggkit_does_not_import_torch():
    code = "import sys, aggkit, numpy as np; aggkit.median(np.ones((3, 2))); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# nn.Modules


def test_modules_repr_and_batch_dims():
    assert repr(ann.Median()) == "Median(even='mean', nonfinite='robust', dim=0)"
    assert repr(ann.TrimmedMean(f=2, dim=1)) == "TrimmedMean(f=2, nonfinite='robust', dim=1)"
    assert repr(ann.Krum(f=1)) == "Krum(f=1, m=1, nonfinite='robust')"
    assert repr(ann.MultiKrum(f=1)) == "MultiKrum(f=1, m=None, nonfinite='robust')"
    x = torch.randn(3, 5, 4)  # (batch, n, d)
    y = ann.Median(dim=1)(x)
    assert y.shape == (3, 4)
    assert same(y, torch.stack([at.median(x[b]) for b in range(3)]))
    assert same(ann.Mean(dim=-2)(x), torch.stack([at.mean(x[b]) for b in range(3)]))
    with pytest.raises(aggkit.InvalidParameterError):
        ann.TrimmedMean(f=-1)


def test_modules_inside_a_model_train():
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = torch.nn.ModuleList(torch.nn.Linear(3, 1) for _ in range(5))
            self.agg = ann.TrimmedMean(f=1, dim=0)

        def forward(self, x):
            return self.agg(torch.stack([h(x) for h in self.heads]))

    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 3)
    target = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


def test_krum_module_reports_selection():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]])
    k = ann.Krum(f=1)
    assert k(x).tolist() == [0.0, 0.0]
    assert k.last_selection.indices.tolist() == [0]
    mk = ann.MultiKrum(f=1)
    mk(x)
    assert 4 not in mk.last_selection.indices.tolist()


# ---------------------------------------------------------------------------------------------
# CUDA: the native path on a real device (skipped without a GPU)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(33, 1000, generator=g).to(dtype)
    x[3, :10] = float("nan")
    x[5, 10:20] = float("inf")
    x[:, 20:40] = torch.randint(-2, 3, (33, 20), generator=g).to(dtype)  # ties
    xc = x.cuda()
    for fn, kw in [
        (at.median, {"even": "mean"}),
        (at.median, {"even": "lower", "nonfinite": "propagate"}),
        (at.trimmed_mean, {"f": 5}),
        (at.mean, {}),
        (at.mean, {"weights": list(range(1, 34))}),
    ]:
        y = fn(xc, **kw)
        assert y.device.type == "cuda"
        assert same(y, fn(x, **kw)), (fn, kw)
    y, sel = at.multi_krum(torch.randn(20, 5000, generator=g).to(dtype).cuda(), f=3, return_selection=True)
    assert y.device.type == "cuda"
    assert sel.indices.device.type == "cuda"


@needs_cuda
def test_cuda_gradients():
    x = _separated(7, 4).detach().cuda().requires_grad_(True)
    for fn in (lambda t: at.median(t), lambda t: at.trimmed_mean(t, f=2), lambda t: at.krum(t, f=1)):
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)


# The rules beyond the median / trimmed mean / Krum core, each against the numpy API.
FAMILY = {
    "meamed": dict(f=2),
    "bulyan": dict(f=1),
    "mda": dict(f=2),
    "smea": dict(f=2),
    "caf": dict(f=2),
    "monna": dict(f=2),
    "centered_clipping": dict(tau=2.0, iters=2),
    "sign_vote": {},
}


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_matches_numpy_and_native(name, rng):
    x = rng.standard_normal((9, 3, 4)).astype(np.float32)
    kw = FAMILY[name]
    want = aggkit.rule(name, **kw)(x)
    t = torch.from_numpy(x.copy())
    got = getattr(at, name)(t, **kw)
    assert got.dtype == torch.float32
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    with at.force_native():
        nat = getattr(at, name)(t, **kw)
    np.testing.assert_allclose(nat.numpy(), want, rtol=1e-5, atol=1e-6)


@needs_cuda
@pytest.mark.parametrize("name", list(FAMILY))
def test_family_cuda_matches_cpu(name, rng):
    x = torch.from_numpy(rng.standard_normal((9, 64)).astype(np.float32))
    kw = FAMILY[name]
    cpu = getattr(at, name)(x, **kw)
    gpu = getattr(at, name)(x.cuda(), **kw)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


def test_aggregate_module_wraps_every_rule(rng):
    x = torch.from_numpy(rng.standard_normal((11, 6)))
    for name, kw in {**FAMILY, "pipeline": {"stages": [aggkit.NNM(f=2), aggkit.Median()]}}.items():
        m = ann.Aggregate(name, **kw)
        np.testing.assert_allclose(m(x).numpy(), aggkit.rule(name, **kw)(x.numpy()), rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="tensor"):
        ann.Aggregate("median")(x.numpy())
