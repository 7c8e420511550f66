"""CrossMax: the kernel against the step-by-step reference, its properties, the torch op and modules."""

from __future__ import annotations

import contextlib

import aggkit
import numpy as np
import pytest
import reference as ref
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import DTYPES, TIES, finite_elements

Z = np.array([[1, 0, -1, 0.5], [0, 2, 0, -3], [0.5, -1, 3, 0], [2, 1.5, 0, 1.9]])


def test_oracle():  # docs/algorithms.md, CrossMax
    np.testing.assert_allclose(aggkit.crossmax(Z, k=2), [0, -0.5, -2, -0.4], atol=1e-15)
    np.testing.assert_allclose(aggkit.crossmax(Z, k=3), [-2, -1, -2, -2.9], atol=1e-15)
    np.testing.assert_allclose(
        aggkit.crossmax(Z, reducer="median", even="mean"), [-1, -0.75, -2, -1.65], atol=1e-15
    )
    assert int(np.argmax(aggkit.crossmax(Z, k=2))) == 0
    assert int(np.argmax(aggkit.crossmax(Z, k=3))) == 1
    # N = 4: the lower median is the 3rd largest.
    np.testing.assert_array_equal(aggkit.crossmax(Z, reducer="median"), aggkit.crossmax(Z, k=3))


@st.composite
def logits(draw, min_n=2, max_n=9, special=False):
    dt = draw(DTYPES)
    b, n, c = draw(st.integers(1, 3)), draw(st.integers(min_n, max_n)), draw(st.integers(1, 6))
    elements = st.one_of(finite_elements(dt, 1e4), TIES)
    if special:
        elements = st.one_of(elements, st.sampled_from([np.nan, np.inf, -np.inf]))
    return draw(hnp.arrays(dt, (b, n, c), elements=elements))


def params(draw, n):
    if draw(st.booleans()):
        return {"k": draw(st.integers(2, n))}
    return {"reducer": "median", "even": draw(st.sampled_from(["lower", "upper", "mean"]))}


@given(logits(special=True), st.data(), st.sampled_from(["robust", "propagate"]))
def test_matches_the_step_by_step_reference(z, data, nonfinite):
    kw = params(data.draw, z.shape[1])
    y = aggkit.crossmax(z, **kw, nonfinite=nonfinite)
    expected = ref.crossmax(z, **kw, nonfinite=nonfinite)
    assert y.dtype == z.dtype
    if kw.get("even") == "mean":  # the reference averages after subtracting the top: rounding
        fin = np.abs(expected[np.isfinite(expected)])
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6 * float(fin.max(initial=1.0)))
    else:
        np.testing.assert_array_equal(y, expected)


@given(logits(), st.data())
def test_properties(z, data):
    kw = params(data.draw, z.shape[1])
    y = aggkit.crossmax(z, **kw)
    assert (y <= 0).all()
    # Permuting the predictors changes nothing (the ranked values are the same).
    perm = data.draw(st.permutations(range(z.shape[1])))
    np.testing.assert_array_equal(aggkit.crossmax(z[:, list(perm)], **kw), y)
    # A per-predictor shift by a small integer is exact on integer logits.
    zi = np.round(z).astype(z.dtype)
    shift = np.array(data.draw(st.lists(st.integers(-8, 8), min_size=z.shape[1], max_size=z.shape[1])))
    np.testing.assert_array_equal(
        aggkit.crossmax(zi + shift[None, :, None].astype(z.dtype), **kw), aggkit.crossmax(zi, **kw)
    )


def test_logits_and_log_softmax_agree():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(16, 8, 10)) * 3
    log_softmax = (
        z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
    )
    np.testing.assert_allclose(aggkit.crossmax(log_softmax), aggkit.crossmax(z), atol=1e-12)
    # Probabilities are not logits: the result differs.
    assert not np.allclose(aggkit.crossmax(np.exp(log_softmax)), aggkit.crossmax(z))


def test_one_shouting_predictor_cannot_set_a_class_score():
    z = np.zeros((5, 3))
    z[:, 0] = 1.0  # everyone prefers class 0
    z[4, 2] = 1e6  # one predictor shouts for class 2
    y = aggkit.crossmax(z, k=3)
    assert int(np.argmax(y)) == 0
    assert int(np.argmax(z.mean(axis=0))) == 2  # the mean ensemble is captured


def test_dims_batch_and_dtypes():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)  # (..., N=5, C=7)
    y = aggkit.crossmax(z)
    assert y.shape == (2, 3, 7)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y[1, 2], aggkit.crossmax(z[1, 2]))
    moved = np.moveaxis(z, (-2, -1), (0, 2))  # (N, 2, C, 3)
    np.testing.assert_array_equal(
        aggkit.crossmax(moved, predictor_dim=0, class_dim=2),
        np.moveaxis(y, -1, -1).transpose(0, 2, 1).transpose(0, 2, 1),
    )
    assert aggkit.crossmax(z.astype(np.float16)).dtype == np.float16
    assert aggkit.crossmax(np.zeros((0, 4, 3))).shape == (0, 3)


def test_masked_classes_and_nonfinite_policies():
    z = Z.copy()
    z[:, 3] = -np.inf  # class 3 masked by every predictor
    assert aggkit.crossmax(z, k=3)[3] == -np.inf
    assert np.isfinite(aggkit.crossmax(z, k=3)[:3]).all()
    z = Z.copy()
    z[1, 1] = np.nan
    with pytest.raises(aggkit.NonFiniteError, match="NaN or \\+inf") as e:
        aggkit.crossmax(z, nonfinite="raise")
    assert e.value.rows == [1]
    assert np.isnan(aggkit.crossmax(z, nonfinite="propagate")).all()
    robust = aggkit.crossmax(z)  # the NaN is no bid: predictor 1 no longer backs class 1
    assert np.isfinite(robust).all()
    z[1, 1] = -np.inf
    np.testing.assert_array_equal(robust, aggkit.crossmax(z))
    z = Z.copy()
    z[2] = -np.inf  # predictor 2 has no finite logit: it abstains under "robust"
    assert np.isfinite(aggkit.crossmax(z, k=3)).all()
    assert aggkit.crossmax(z, k=4).tolist() == [-np.inf] * 4
    # ... and under "raise" (-inf is allowed there): not -inf - -inf = NaN in every score, which
    # a single client could otherwise cause. "propagate" computes it naively.
    np.testing.assert_array_equal(aggkit.crossmax(z, k=3, nonfinite="raise"), aggkit.crossmax(z, k=3))
    assert np.isnan(aggkit.crossmax(z, nonfinite="propagate")).all()


def test_torch_paths_let_an_all_masked_predictor_abstain_and_take_no_classes():
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    z = torch.from_numpy(Z.copy())[None].repeat(2, 1, 1)
    z[1, 2] = -np.inf
    want = torch.from_numpy(aggkit.crossmax(z.numpy(), k=3, nonfinite="raise"))
    assert not torch.isnan(want).any()
    for ctx in (contextlib.nullcontext, at.force_native):
        with ctx():
            assert torch.equal(at.crossmax(z, k=3, nonfinite="raise"), want)
        with ctx():
            empty = torch.zeros(2, 3, 0, requires_grad=True)
            y = at.crossmax(empty, k=2)
            y.sum().backward()
        assert y.shape == (2, 0)
        assert empty.grad.shape == (2, 3, 0)


def test_bad_input():
    bad = [
        (lambda: aggkit.crossmax(Z, k=1), aggkit.InvalidParameterError, "k=1 is degenerate"),
        (lambda: aggkit.crossmax(Z, k=5), aggkit.InvalidParameterError, r"2 <= k <= N, got k=5, N=4"),
        (lambda: aggkit.crossmax(Z[:1], reducer="median"), aggkit.InvalidParameterError, "N >= 2"),
        (lambda: aggkit.crossmax(Z, k=2.0), TypeError, "k must be an int"),
        (lambda: aggkit.crossmax(Z, reducer="median", k=2), aggkit.InvalidParameterError, "not used"),
        (lambda: aggkit.crossmax(Z, reducer="mode"), aggkit.InvalidParameterError, "reducer must be one of"),
        (lambda: aggkit.crossmax(Z, reducer="median", even="mid"), aggkit.InvalidParameterError, "even"),
        (lambda: aggkit.crossmax(Z[0]), aggkit.ShapeError, "at least 2 dimensions"),
        (lambda: aggkit.crossmax(Z, predictor_dim=1, class_dim=-1), aggkit.ShapeError, "must differ"),
        (lambda: aggkit.crossmax(Z, predictor_dim=2), aggkit.ShapeError, "out of range"),
        (lambda: aggkit.crossmax(Z.astype(int)), TypeError, "floating-point"),
        (lambda: aggkit.crossmax(Z, nonfinite="skip"), aggkit.InvalidParameterError, "nonfinite"),
    ]
    for fn, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            fn()


def test_input_not_modified_and_threads_do_not_change_bits():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 8, 100)).astype(np.float32)
    z.setflags(write=False)
    before = z.copy()
    prev = aggkit.get_num_threads()
    try:
        aggkit.set_num_threads(1)
        one = aggkit.crossmax(z)
        aggkit.set_num_threads(2)
        two = aggkit.crossmax(z)
    finally:
        aggkit.set_num_threads(prev)
    assert one.tobytes() == two.tobytes()
    np.testing.assert_array_equal(z, before)


# ---------------------------------------------------------------------------------------------
# torch: the op (Rust on CPU, torch-native elsewhere), its gradient, the modules


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _same(a, b) -> bool:
    a, b = a.detach().cpu(), b.detach().cpu()
    nan = a.isnan()
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and bool((nan == b.isnan()).all())
        and bool((a[~nan] == b[~nan]).all())
    )


@given(logits(special=True), st.data(), st.sampled_from(["robust", "propagate"]))
def test_torch_paths_match_numpy_bitwise(z, data, nonfinite):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    kw = params(data.draw, z.shape[1])
    expected = torch.from_numpy(aggkit.crossmax(z, **kw, nonfinite=nonfinite))
    t = torch.from_numpy(z)
    assert _same(at.crossmax(t, **kw, nonfinite=nonfinite), expected)
    with at.force_native():
        assert _same(at.crossmax(t, **kw, nonfinite=nonfinite), expected)
        # The indices the backward uses agree too (finite inputs: no NaN ranking to argue about).
    if np.isfinite(z).all():
        need = (t.contiguous(), kw.get("k", 0) if "k" in kw else 0, "kth" if "k" in kw else "median",
                kw.get("even", "lower"), nonfinite, True)  # fmt: skip
        rust = torch.ops.aggkit.crossmax(*need)
        with at.force_native():
            native = torch.ops.aggkit.crossmax(*need)
        for a, b in zip(rust[1:], native[1:], strict=True):
            assert torch.equal(a, b)


def test_gradient_is_the_sparse_four_entry_formula(torch):
    import aggkit.torch as at

    z = torch.tensor(Z, requires_grad=True)
    at.crossmax(z, k=3)[1].backward()
    # Class 1: A[:, 1] = [-1, 0, -4, -0.5], so the top predictor is 1 (whose own argmax is
    # class 1: its two entries cancel) and the 3rd is predictor 0 (argmax class 0).
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0, 1] += 1
    expected[0, 0] -= 1
    expected[1, 1] -= 1
    expected[1, 1] += 1
    assert torch.equal(z.grad, expected)
    z.grad = None
    y = at.crossmax(z, k=2)
    y.sum().backward()
    assert float(z.grad.sum()) == 0.0  # every output's gradient sums to zero


@given(logits(special=True), st.data())
def test_rust_backward_equals_the_torch_backward(z, data):
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    kw = params(data.draw, z.shape[1])
    t = torch.from_numpy(z).requires_grad_(True)
    y = at.crossmax(t, **kw)
    g = torch.from_numpy(np.random.default_rng(0).standard_normal(tuple(y.shape)).astype(z.dtype))
    (rust,) = torch.autograd.grad(y, t, g, retain_graph=True)  # one-pass Rust kernel
    (ops,) = torch.autograd.grad(y, t, g, create_graph=True)  # differentiable torch ops
    assert torch.equal(rust, ops.detach())


@pytest.mark.parametrize(
    "kw", [{"k": 2}, {"k": 3}, {"reducer": "median", "even": "mean"}, {"reducer": "median"}]
)
@pytest.mark.parametrize("native", [False, True])
def test_gradcheck(torch, kw, native):
    import contextlib

    import aggkit.torch as at

    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    with at.force_native() if native else contextlib.nullcontext():
        assert torch.autograd.gradcheck(lambda t: at.crossmax(t, **kw), (z,))
        assert torch.autograd.gradgradcheck(lambda t: at.crossmax(t, **kw), (z,))


# torch's own aot_dispatch check reads .grad of the non-leaf inputs it makes (as in test_torch.py).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_opcheck_and_compile(torch):
    import aggkit.torch as at

    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 5, 7, generator=g)
    for args in [(3, "kth", "lower", "robust", True), (0, "median", "mean", "robust", True),
                 (2, "kth", "lower", "propagate", False)]:  # fmt: skip
        zz = z.clone().requires_grad_(args[-1])
        torch.library.opcheck(torch.ops.aggkit.crossmax, (zz, *args))
    torch._dynamo.reset()
    zc = z.clone().requires_grad_(True)

    @torch.compile(fullgraph=True)
    def step(t):
        return at.crossmax(t, k=3).logsumexp(-1).sum()

    step(zc).backward()
    ze = z.clone().requires_grad_(True)
    at.crossmax(ze, k=3).logsumexp(-1).sum().backward()
    torch.testing.assert_close(zc.grad, ze.grad)


def test_torch_dims_dtypes_and_module(torch):
    import aggkit.torch as at
    from aggkit.torch.nn import CrossMax

    z = torch.randn(2, 7, 5, dtype=torch.bfloat16)  # (B, C, N): predictors last
    y = CrossMax(k=2, predictor_dim=-1, class_dim=-2)(z)
    assert y.shape == (2, 7)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, at.crossmax(z.movedim(-1, -2), k=2))
    assert "k=2" in repr(CrossMax(k=2))
    assert CrossMax(reducer="median").k is None
    with pytest.raises(aggkit.InvalidParameterError, match="k=1 is degenerate"):
        CrossMax(k=1)
    with pytest.raises(TypeError, match="must be a tensor"):
        at.crossmax(Z)
    # The numpy API hands tensors to aggkit.torch.
    assert isinstance(aggkit.crossmax(torch.from_numpy(Z)), torch.Tensor)


def test_cuda_matches_cpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    import aggkit.torch as at

    z = torch.randn(64, 8, 100, dtype=torch.float64)
    zc = z.cuda().requires_grad_(True)
    y = at.crossmax(zc, k=3)
    assert y.device.type == "cuda"
    assert _same(y, at.crossmax(z, k=3))
    y.sum().backward()
    zz = z.clone().requires_grad_(True)
    at.crossmax(zz, k=3).sum().backward()
    torch.testing.assert_close(zc.grad.cpu(), zz.grad)


def test_self_ensemble(torch):
    from aggkit.torch.nn import SelfEnsemble

    torch.manual_seed(0)
    backbone = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip
    x = torch.randn(6, 1, 8, 8)
    se = SelfEnsemble(backbone, ["1", backbone[3]], 10, k=2, example_input=x)
    y, z = se(x, return_all=True)
    assert y.shape == (6, 10)
    assert z.shape == (6, 3, 10)  # two heads and the backbone
    assert torch.equal(z[:, 2], backbone(x))
    assert torch.equal(y, aggkit.torch.crossmax(z, k=2))
    assert se.layer_names == ["1", "3"]
    # Training the heads: a summed cross-entropy reaches every head and the backbone.
    target = torch.randint(0, 10, (6,))
    torch.nn.functional.cross_entropy(z.flatten(0, 1), target.repeat_interleave(3)).backward()
    assert all(p.grad is not None for p in se.heads.parameters())
    assert backbone[0].weight.grad is not None
    # detach_features: heads train, the backbone sees only its own loss.
    frozen = SelfEnsemble(backbone, ["1"], 10, k=2, detach_features=True, example_input=x)
    backbone.zero_grad()
    frozen(x, return_all=True)[1][:, 0].sum().backward()
    assert backbone[0].weight.grad is None or float(backbone[0].weight.grad.abs().sum()) == 0.0
    # Custom heads, given as a factory.
    fac = SelfEnsemble(backbone, ["3"], 10, heads=lambda name: torch.nn.Linear(8, 10), k=2)
    assert fac(x).shape == (6, 10)
    bad = [
        (lambda: SelfEnsemble(backbone, ["9"], 10), "no submodule '9'"),
        (lambda: SelfEnsemble(backbone, [torch.nn.ReLU()], 10), "submodule of backbone"),
        (lambda: SelfEnsemble(backbone, [], 10), "non-empty"),
        (lambda: SelfEnsemble(backbone, ["1"], 10, k=3), r"2 <= k <= N, got k=3, N=2"),
        (
            lambda: SelfEnsemble(backbone, ["1", "3"], 10, heads=[torch.nn.Linear(4, 10)]),
            "1 heads for 2 layers",
        ),
    ]
    for fn, msg in bad:
        with pytest.raises(aggkit.InvalidParameterError, match=msg):
            fn()
    wrong = SelfEnsemble(backbone, ["1"], 7, example_input=None, heads=[torch.nn.Linear(4, 7)], k=2)
    with pytest.raises(
        aggkit.InvalidParameterError,
        match=r"backbone returned shape \(6, 10\), expected \(batch, num_classes=7\)",
    ):
        wrong(x)
    se.remove_hooks()
    with pytest.raises(RuntimeError, match="hooks were removed"):
        se(x)


def test_digits_example_runs():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parents[1] / "examples" / "crossmax_digits.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--epochs", "2", "--eval", "40", "--steps", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "CrossMax (k=3)" in proc.stdout
    assert "PGD-adaptive" in proc.stdout
