"""PyG-style aggregations (aggkit.torch.aggr) and LCMAggregation under PyG's conventions.

The built-in monoids as ``aggr=`` of PyTorch Geometric layers: agreement with PyG's own
aggregations (and with slow obvious loops for prod and logsumexp), PyG's calling conventions
(``ptr`` winning over ``index``, ``dim_size``, ``dim``, empty sets), adversarial input, the
order guarantees, and a small GNN trained through ``SAGEConv`` with each aggregation, with an
``edge_index`` and under ``ToSparseTensor``. The classes also work without torch_geometric
(checked in a subprocess that hides it).
"""

import copy
import itertools
import math
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import aggkit  # noqa: E402
import aggkit.torch.nn as ann  # noqa: E402
from aggkit.errors import InvalidParameterError, ShapeError  # noqa: E402

# torch_geometric warns about torch APIs at import; torch about its sparse tensors (beta, and
# invariant checks off by default) when PyG builds them.
pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning:torch_geometric"),
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled:UserWarning"),
]

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

OURS = {
    "sum": ann.SumAggregation,
    "mean": ann.MeanAggregation,
    "max": ann.MaxAggregation,
    "min": ann.MinAggregation,
    "prod": ann.ProdAggregation,
    "logsumexp": ann.LogSumExpAggregation,
}
#: PyG's aggregation of the same monoid (PyG has no logsumexp).
PYG_NAMES = {
    "sum": "SumAggregation",
    "mean": "MeanAggregation",
    "max": "MaxAggregation",
    "min": "MinAggregation",
    "prod": "MulAggregation",
}
EXACT = ("max", "min")  # no rounding: bit-identical under any order of a set's elements


@pytest.fixture
def pyg_aggr():
    return pytest.importorskip("torch_geometric.nn.aggr")


@pytest.fixture
def one_thread():
    """One intra-op thread: the tiny GNN otherwise spends its time in thread hand-offs on a
    shared 2-core machine (the results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sets(sizes, h=5, dtype=torch.float64, seed=0, shuffle=True):
    """Random ``x`` and an ``index`` for sets of these sizes, rows in random order."""
    g = torch.Generator().manual_seed(seed)
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    if shuffle:
        index = index[torch.randperm(index.numel(), generator=g)]
    x = torch.randn(index.numel(), h, generator=g, dtype=dtype)
    return x, index


def _slow(x, index, dim_size, op):
    """The obvious per-set, per-coordinate loop in Python floats (float64 semantics)."""
    out = np.zeros((dim_size, x.shape[1]))
    xs, idx = x.double().tolist(), index.tolist()
    for s in range(dim_size):
        rows = [xs[e] for e in range(len(idx)) if idx[e] == s]
        for j in range(x.shape[1]):
            v = [r[j] for r in rows]
            if not v:
                out[s, j] = 1.0 if op == "prod" else 0.0
            elif op == "prod":
                p = 1.0
                for a in v:
                    p *= a
                out[s, j] = p
            else:  # logsumexp
                m = max(v)
                out[s, j] = m if math.isinf(m) else m + math.log(sum(math.exp(a - m) for a in v))
    return torch.from_numpy(out)


def _slow_sets(x, ptr, op):
    """Each set ``x[ptr[s]:ptr[s+1]]`` reduced with torch's own reductions (float64)."""
    empty = {"prod": 1.0}.get(op, 0.0)
    out = []
    for a, b in itertools.pairwise(ptr):
        v = x[a:b].double()
        if a == b:
            out.append(torch.full((x.shape[1],), empty, dtype=torch.float64))
        else:
            f = {"sum": v.sum, "mean": v.mean, "prod": v.prod, "max": v.amax, "min": v.amin}
            out.append(f[op](0) if op in f else torch.logsumexp(v, 0))
    return torch.stack(out).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# agreement with PyG and with the slow loops


@pytest.mark.parametrize("op", list(PYG_NAMES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_agrees_with_pyg(pyg_aggr, op, dtype):
    theirs = getattr(pyg_aggr, PYG_NAMES[op])()
    ours = OURS[op]()
    assert isinstance(ours, pyg_aggr.Aggregation)
    sizes = [0, 1, 2, 3, 5, 8, 13, 0, 31, 0]
    x, index = _sets(sizes, dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    for dim_size in (None, 10, 14):  # default max(index) + 1 = 9; exactly; trailing empty sets
        want = theirs(x, index, dim_size=dim_size)
        got = ours(x, index, dim_size=dim_size)
        assert got.dtype == dtype
        assert got.shape == want.shape
        if op in EXACT:
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, **tol)
    # Gradients (max/min: split evenly among ties, as PyG's scatter).
    xg = x.detach().clone().requires_grad_(True)
    if op in EXACT:
        xg.data[1] = xg.data[0]  # ties (rows 0 and 1 may share a set)
    g = torch.randn(10, x.shape[1], dtype=dtype, generator=torch.Generator().manual_seed(1))
    (want_g,) = torch.autograd.grad(theirs(xg, index, dim_size=10), xg, g)
    (got_g,) = torch.autograd.grad(ours(xg, index, dim_size=10), xg, g)
    torch.testing.assert_close(got_g, want_g, **tol)


@pytest.mark.parametrize("op", list(PYG_NAMES))
def test_agrees_with_pyg_along_other_dims_and_with_ptr(pyg_aggr, op):
    theirs = getattr(pyg_aggr, PYG_NAMES[op])()
    ours = OURS[op]()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 3, dtype=torch.float64, generator=g)
    index = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3, 3, 5])
    for dim in (1, -2):
        torch.testing.assert_close(ours(x, index, dim=dim), theirs(x, index, dim=dim), rtol=1e-12, atol=0)
    x0 = x.movedim(1, 0)  # elements first, two feature dimensions
    torch.testing.assert_close(ours(x0, index, dim=0), theirs(x0, index, dim=0), rtol=1e-12, atol=0)
    ptr = torch.tensor([0, 3, 3, 5, 10, 10, 11])
    torch.testing.assert_close(ours(x, ptr=ptr, dim=1), theirs(x, index, dim=1), rtol=1e-12, atol=0)


@given(
    sizes=st.lists(st.integers(0, 9), min_size=1, max_size=8),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    use_ptr=st.booleans(),
)
def test_random_sets_agree_with_pyg_and_the_slow_loop(sizes, extra, seed, use_ptr):
    """Any set sizes (empty ones included), any order of the rows, any trailing empty sets."""
    aggr = pytest.importorskip("torch_geometric.nn.aggr")
    x, index = _sets(sizes, h=3, seed=seed, shuffle=not use_ptr)
    dim_size = len(sizes) + extra
    if use_ptr:
        ptr = torch.tensor([0, *np.cumsum(sizes).tolist(), *[sum(sizes)] * extra])
        kwargs = {"ptr": ptr}
    else:
        kwargs = {"index": index, "dim_size": dim_size}
    for op, cls in OURS.items():
        got = cls()(x, **kwargs)
        assert got.shape == (dim_size, 3)
        if op in PYG_NAMES:
            want = getattr(aggr, PYG_NAMES[op])()(x, index, dim_size=dim_size)
        else:
            want = _slow(x, index, dim_size, op)
        if op in EXACT:
            assert torch.equal(got, want), op
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", ["prod", "logsumexp"])
def test_prod_and_logsumexp_equal_the_slow_loop(op):
    x, index = _sets([0, 1, 2, 3, 4, 7, 0, 9], h=4)
    if op == "prod":
        x = 1 + 0.3 * x  # products of a few factors near 1
    x[0, 1] = -0.0
    got = OURS[op](empty=1.0 if op == "prod" else 0.0)(x, index, dim_size=9)
    torch.testing.assert_close(got, _slow(x, index, 9, op), rtol=1e-13, atol=1e-13)
    # Large values: no overflow in logsumexp.
    if op == "logsumexp":
        big = x * 800
        torch.testing.assert_close(OURS[op]()(big, index), _slow(big, index, 8, op), rtol=1e-13, atol=1e-10)


@pytest.mark.parametrize("op", list(OURS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_float32_rounded_once(op, dtype):
    x, index = _sets([3, 0, 5, 2, 8], h=6, dtype=torch.float32)
    xh = x.to(dtype)
    got = OURS[op]()(xh, index)
    assert got.dtype == dtype
    assert torch.equal(got, OURS[op]()(xh.float(), index).to(dtype))


def test_nonfinite_values_propagate_as_pyg(pyg_aggr):
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[1.0, nan, inf, 2.0], [nan, 2.0, -inf, inf], [3.0, 1.0, 1.0, -inf]])
    index = torch.tensor([0, 0, 1])
    for op in PYG_NAMES:
        got = OURS[op]()(x, index, dim_size=3)
        want = getattr(pyg_aggr, PYG_NAMES[op])()(x, index, dim_size=3)
        torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    lse = ann.LogSumExpAggregation()(x, index, dim_size=3)
    assert torch.isnan(lse[0, :2]).all()
    assert lse[0, 2] == inf
    assert lse[1].tolist() == [3.0, 1.0, 1.0, -inf]


# ---------------------------------------------------------------------------------------------
# PyG's conventions


# With torch_geometric installed, PyG's Aggregation.__call__ normalises the arguments before
# forward (the one-set index, dim_size from ptr); calling forward directly checks that aggkit's
# own handling, the one used without torch_geometric, follows the same conventions.
def _calls(make):
    return [lambda *a, **k: make()(*a, **k), lambda *a, **k: make().forward(*a, **k)]


@pytest.mark.parametrize("op", list(OURS))
def test_ptr_wins_over_index(op):
    x, _ = _sets([3, 0, 4], shuffle=False)
    ptr = torch.tensor([0, 3, 3, 7])
    want = _slow_sets(x, [0, 3, 3, 7], op)
    for call in _calls(OURS[op]):  # a fresh module each call: nothing cached
        alone = call(x, ptr=ptr)
        torch.testing.assert_close(alone, want, rtol=1e-12, atol=1e-12)
        # MessagePassing passes both for a CSR adjacency; ptr defines the sets, index is not read.
        assert torch.equal(call(x, torch.zeros(7, dtype=torch.long), ptr), alone)
        assert torch.equal(call(x, torch.full((7,), -5), ptr, dim_size=3), alone)
        with pytest.raises(ShapeError, match=r"index has shape \(6,\) for 7 elements"):
            call(x, torch.zeros(6, dtype=torch.long), ptr)
        with pytest.raises(ValueError, match="dim_size"):
            call(x, ptr=ptr, dim_size=4)


@pytest.mark.parametrize("op", list(OURS))
def test_empty_sets_give_pyg_values_or_the_identity(op):
    x, index = _sets([2, 3], h=3)
    index = torch.where(index == 0, 1, 3)  # sets 0, 2 and 4 empty
    out = OURS[op]()(x, index, dim_size=5)
    default = 1.0 if op == "prod" else 0.0
    for s in (0, 2, 4):
        assert out[s].tolist() == [default] * 3
    identity = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}
    ident = OURS[op](empty="identity")(x, index, dim_size=5)
    assert ident[0].tolist() == [identity.get(op, -math.inf)] * 3
    assert OURS[op](empty=-7.5)(x, index, dim_size=5)[4].tolist() == [-7.5] * 3
    assert torch.equal(ident[[1, 3]], out[[1, 3]])
    assert torch.equal(ann.MonoidAggregation(op)(x, index, dim_size=5), out)  # the same defaults
    assert torch.equal(ann.MonoidAggregation(op, empty="identity")(x, index, dim_size=5), ident)


def test_neither_index_nor_ptr_is_one_set_as_pyg(pyg_aggr):
    x = torch.randn(6, 3)
    empty = torch.zeros(0, 3)
    for op in PYG_NAMES:
        theirs = getattr(pyg_aggr, PYG_NAMES[op])()
        for call in _calls(OURS[op]):
            torch.testing.assert_close(call(x), theirs(x))
            assert call(x).shape == (1, 3)
            out = call(x, dim_size=3)  # set 0 holds every element, the others are empty
            torch.testing.assert_close(out, theirs(x, dim_size=3))
            assert call(empty).shape == theirs(empty).shape == (0, 3)
            assert torch.equal(call(empty, dim_size=2), theirs(empty, dim_size=2))
    for call in _calls(lambda: ann.LCMAggregation(3, 4)):
        assert call(torch.zeros(0, 3)).shape == (0, 4)
        assert call(torch.zeros(0, 3), dim_size=2).shape == (2, 4)


@pytest.mark.parametrize("cls", [*OURS.values(), lambda: ann.LCMAggregation(5, 5)])
def test_adversarial_sets_are_refused_by_name(cls):
    for m in _calls(cls):
        _refused(m)


def _refused(m):
    x = torch.randn(4, 5)
    cases = [
        (
            dict(index=torch.tensor([0, 0, -3, 1])),
            InvalidParameterError,
            r"index must be >= 0, got index\[2\] = -3",
        ),
        (dict(index=torch.tensor([0, 0, 1, 4]), dim_size=3), ValueError, "dim_size"),
        (dict(index=torch.tensor([0, 1, 1])), ShapeError, "index has 3 entries for 4 elements"),
        (dict(index=torch.tensor([[0, 1, 1, 1]])), ShapeError, "index must be 1-D"),
        (dict(index=torch.tensor([0.0, 1.0, 1.0, 1.0])), TypeError, "index must hold integers"),
        (dict(ptr=torch.tensor([0, 3, 2, 4])), InvalidParameterError, "ptr must be non-decreasing"),
        (dict(ptr=torch.tensor([1, 4])), InvalidParameterError, "ptr must start at 0"),
        (dict(ptr=torch.tensor([0, 3])), InvalidParameterError, r"ptr must end at the number of rows \(4\)"),
        (dict(index=torch.tensor([0, 0, 1, 1]), dim_size=-1), ValueError, "dim_size"),
        (dict(dim=2), ValueError, "dim"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            m(x, **kwargs)
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(4, 5, dtype=torch.long), torch.tensor([0, 0, 1, 1]))


def test_parameters_are_checked():
    with pytest.raises(InvalidParameterError, match="op must be one of"):
        ann.MonoidAggregation("median")
    with pytest.raises(InvalidParameterError, match="empty must be one of 'identity'"):
        ann.MaxAggregation(empty="zero")
    with pytest.raises(TypeError, match="empty must be a number"):
        ann.MaxAggregation(empty=[0.0])
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        ann.SumAggregation(0.0)


def test_an_unsorted_index_keeps_each_sets_relative_order():
    """The elements of a set keep their relative order, so a set's result does not depend on
    how the other sets' elements are interleaved with it (bit-identical for every monoid)."""
    g = torch.Generator().manual_seed(4)
    x, index = _sets([5, 9, 0, 17, 3], h=7, shuffle=False)  # sorted: the sets in row order
    for _ in range(5):
        # A random interleaving: the labels shuffled, the k-th row of set s to the k-th
        # position labelled s.
        i2 = index[torch.randperm(index.numel(), generator=g)]
        x2 = torch.empty_like(x)
        x2[torch.sort(i2, stable=True).indices] = x
        assert not torch.equal(i2, index)
        for op, cls in OURS.items():
            assert torch.equal(cls()(x2, i2), cls()(x, index)), op


def test_max_and_min_are_exact_under_any_order():
    x, index = _sets([1, 2, 6, 0, 11], h=6)
    x[2, 0], x[3, 0] = 0.0, -0.0
    x[4, 1] = float("nan")
    x[5, 2] = x[6, 2] = x[7, 2] = 2.5
    g = torch.Generator().manual_seed(7)
    for op in EXACT:
        want = OURS[op]()(x, index)
        for _ in range(10):
            p = torch.randperm(index.numel(), generator=g)
            got = OURS[op]()(x[p], index[p])
            assert torch.equal(torch.isnan(got), torch.isnan(want))
            ok = ~torch.isnan(want)
            assert np.array_equal(got[ok].numpy().view(np.uint64), want[ok].numpy().view(np.uint64))


def test_a_set_does_not_depend_on_the_batch():
    x, index = _sets([4, 9, 1, 30], h=3)
    for cls in OURS.values():
        m = cls()
        batched = m(x, index)
        for s in range(4):
            alone = m(x[index == s], torch.zeros(int((index == s).sum()), dtype=torch.long))
            assert torch.equal(alone[0], batched[s])


# ---------------------------------------------------------------------------------------------
# the module: repr, reset_parameters, caching, state


def test_one_line_reprs(pyg_aggr):
    assert [repr(c()) for c in OURS.values()] == [
        "SumAggregation()",
        "MeanAggregation()",
        "MaxAggregation()",
        "MinAggregation()",
        "ProdAggregation()",
        "LogSumExpAggregation()",
    ]
    assert repr(ann.MaxAggregation(empty="identity")) == "MaxAggregation(empty='identity')"
    assert repr(ann.ProdAggregation(empty=0)) == "ProdAggregation(empty=0.0)"
    assert repr(ann.MonoidAggregation("min", empty=-1)) == "MonoidAggregation('min', empty=-1.0)"
    assert repr(ann.MonoidAggregation("prod")) == "MonoidAggregation('prod')"
    theirs = pyg_aggr.LCMAggregation(16, 32)
    ours = ann.LCMAggregation(16, 32)
    assert repr(theirs) == "LCMAggregation(16, 32, project=True)"
    assert repr(ours) == "LCMAggregation(16, 32, project=True, pad='none', learn_identity=False)"
    from torch_geometric.nn import SAGEConv

    conv = SAGEConv(16, 8, aggr=ann.LCMAggregation(16, 16))
    assert "\n" not in repr(conv)
    # MessagePassing keeps str(aggr); a repr such as "sum" would switch on its fused kernels.
    assert conv.aggr == "LCMAggregation(16, 16, project=True, pad='none', learn_identity=False)"
    assert SAGEConv(4, 4, aggr=ann.SumAggregation()).fuse is False


def test_reset_parameters():
    for cls in OURS.values():
        cls().reset_parameters()  # no parameters: nothing to do, but PyG's layers call it
    torch.manual_seed(0)
    fresh = ann.LCMAggregation(4, 6, learn_identity=True)
    m = copy.deepcopy(fresh)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    torch.manual_seed(0)
    m.reset_parameters()
    for (name, a), b in zip(m.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_layer_reset_parameters_reaches_the_aggregation(pyg_aggr):
    from torch_geometric.nn import SAGEConv

    conv = SAGEConv(4, 4, aggr=ann.LCMAggregation(4, 4))
    with torch.no_grad():
        conv.aggr_module.gru_cell.weight_ih.fill_(3.0)
    conv.reset_parameters()
    assert not (conv.aggr_module.gru_cell.weight_ih == 3.0).all()


def test_the_sets_are_cached_per_index_memory():
    m = ann.SumAggregation()
    x, index = _sets([3, 0, 5], h=2)
    edge_index = torch.stack([index, index])
    out = m(x, edge_index[1])
    cached = m._sets.value
    assert cached[1] is not None  # the unsorted index's permutation
    assert torch.equal(m(x, edge_index[1]), out)  # a new view of the same memory: reused
    assert m._sets.value is cached
    edge_index[1] = torch.sort(edge_index[1]).values  # in place: the version moves
    m(x, edge_index[1])
    assert m._sets.value is not cached
    assert m._sets.value[1] is None  # sorted now: no permutation
    # Not pickled (nor deep-copied) with the module.
    assert pickle.loads(pickle.dumps(m))._sets.value is None
    assert copy.deepcopy(m)._sets.value is None
    with torch.inference_mode():  # inference tensors have no version counter: not cached
        assert torch.equal(ann.SumAggregation()(x, index.clone()), m(x, index))


def test_under_torch_func_transforms():
    x, index = _sets([3, 0, 4, 1], h=3)
    for op, cls in OURS.items():
        m = cls()

        def loss(v, m=m):
            return m(v, index).pow(2).sum()

        v = x.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(loss(v), v)
        got = torch.func.grad(loss)(x)
        if op in ("prod", "logsumexp"):  # the Rust backward vs the same formula in torch ops
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(got, want), op
        batch = torch.stack([x, 2 * x])
        assert torch.equal(torch.func.vmap(lambda v, m=m: m(v, index))(batch)[1], m(2 * x, index)), op


# ---------------------------------------------------------------------------------------------
# inside PyG layers


def test_every_adjacency_form_gives_the_same_layer_output(pyg_aggr):
    import torch_geometric.transforms as T
    from torch_geometric import EdgeIndex
    from torch_geometric.data import Data
    from torch_geometric.nn import SAGEConv
    from torch_geometric.utils import sort_edge_index

    g = torch.Generator().manual_seed(5)
    edge_index = (torch.rand(12, 12, generator=g) < 0.3).nonzero().T  # no duplicate edges
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=g)]
    x = torch.randn(12, 4, generator=g)
    sorted_ei = sort_edge_index(edge_index, sort_by_row=False)
    adj_t = T.ToSparseTensor()(Data(edge_index=sorted_ei, num_nodes=12)).adj_t
    csc = EdgeIndex(sorted_ei, sparse_size=(12, 12), sort_order="col")  # MessagePassing passes ptr
    makers = {op: cls for op, cls in OURS.items()}
    makers["lcm"] = lambda: ann.LCMAggregation(4, 4)
    for name, make in makers.items():
        torch.manual_seed(0)
        conv = SAGEConv(4, 3, aggr=make())
        want = conv(x, sorted_ei)
        for adj in (adj_t, csc) if name == "lcm" else (edge_index, adj_t, csc):
            got = conv(x, adj)
            if name in EXACT or name == "lcm" or adj is not edge_index:
                assert torch.equal(got, want), name  # the same elements in the same order
            else:  # unsorted: each set in its edges' order, rounded differently
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_lcm_under_to_sparse_tensor_equals_sorted_edges(pyg_aggr):
    import torch_geometric.transforms as T
    from torch_geometric.data import Data
    from torch_geometric.nn import MessagePassing
    from torch_geometric.utils import sort_edge_index

    class Conv(MessagePassing):
        def __init__(self):
            super().__init__(aggr=ann.LCMAggregation(3, 5))

        def forward(self, x, edge_index):
            return self.propagate(edge_index, x=x)

    torch.manual_seed(0)
    conv = Conv()
    edge_index = sort_edge_index(torch.tensor([[0, 1, 2, 3, 0, 2], [1, 0, 1, 1, 3, 3]]), sort_by_row=False)
    x = torch.randn(5, 3)
    adj_t = T.ToSparseTensor()(Data(edge_index=edge_index, num_nodes=5)).adj_t
    assert torch.equal(conv(x, adj_t), conv(x, edge_index))
    ptr = torch.tensor([0, 1, 4, 4, 6, 6])
    assert torch.equal(conv.aggr_module(x[edge_index[0]], edge_index[1], ptr), conv(x, edge_index))


def _planted_partition(seed=0, n=90, k=3, p_in=0.2, p_out=0.02):
    """Nodes of ``k`` classes, edges mostly inside a class; features weakly tell the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    prob = torch.where(y[:, None] == y[None, :], p_in, p_out)
    adj = torch.triu(torch.rand(n, n, generator=g) < prob, 1)
    edge_index = (adj | adj.T).nonzero().T
    edge_index = edge_index[:, torch.randperm(edge_index.shape[1], generator=g)]  # unsorted
    onehot = torch.nn.functional.one_hot(y, k).float()
    x = torch.cat([1 + 0.8 * onehot + 0.6 * torch.randn(n, k, generator=g), torch.ones(n, 1)], 1)
    return x, edge_index, y


AGGREGATIONS = [*OURS, "lcm"]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", AGGREGATIONS)
def test_trains_a_gnn_through_sage_conv(pyg_aggr, name):
    import torch_geometric.transforms as T
    from torch_geometric.data import Data
    from torch_geometric.nn import SAGEConv
    from torch_geometric.utils import sort_edge_index

    x, edge_index, y = _planted_partition()
    n, classes = x.shape[0], 3
    adj_t = T.ToSparseTensor()(Data(edge_index=edge_index, num_nodes=n)).adj_t
    if name == "lcm":  # LCM needs messages sorted by destination (as PyG's)
        edge_index = sort_edge_index(edge_index, sort_by_row=False)

    def aggr(channels):
        return ann.LCMAggregation(channels, channels) if name == "lcm" else OURS[name]()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # No root weight: a node sees only its neighbours, so the aggregation must work.
            self.conv1 = SAGEConv(x.shape[1], 16, aggr=aggr(x.shape[1]), root_weight=False)
            self.conv2 = SAGEConv(16, classes, aggr=aggr(16), root_weight=False)

        def forward(self, x, adj):
            return self.conv2(torch.tanh(self.conv1(x, adj)), adj)

    first = {}
    for form, adj in (("edge_index", edge_index), ("ToSparseTensor", adj_t)):
        torch.manual_seed(0)
        net = Net()
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            out = net(x, adj)
            first.setdefault(form, out.detach())
            loss = torch.nn.functional.cross_entropy(out, y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        accuracy = (net(x, adj).argmax(1) == y).float().mean().item()
        assert all(math.isfinite(v) for v in losses), (form, losses)
        assert losses[-1] < 0.75 * losses[0], (form, losses[0], losses[-1])
        assert accuracy > 0.6, (form, accuracy)  # chance: 1/3
    # The two adjacency forms give the same model (bit-identical where no rounding differs).
    if name in EXACT or name == "lcm":
        assert torch.equal(first["edge_index"], first["ToSparseTensor"])
    else:
        torch.testing.assert_close(first["edge_index"], first["ToSparseTensor"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# without torch_geometric


def test_without_torch_geometric_the_modules_are_plain():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch_geometric"] = None  # as if not installed
        import torch
        import aggkit.torch.nn as ann

        for cls in (ann.SumAggregation, ann.MaxAggregation, ann.ProdAggregation, ann.LCMAggregation):
            assert not any(c.__module__.startswith("torch_geometric") for c in cls.__mro__), cls
        assert ann.MonoidAggregation.__mro__[1] is torch.nn.Module
        m = ann.MaxAggregation()
        x = torch.tensor([[1.0], [5.0], [3.0], [2.0]])
        assert m(x, torch.tensor([2, 0, 2, 0]), dim_size=4).ravel().tolist() == [5.0, 0.0, 3.0, 0.0]
        assert m(x).tolist() == [[5.0]]
        assert m(torch.zeros(0, 1)).shape == (0, 1)
        assert m(x, torch.zeros(4, dtype=torch.long), torch.tensor([0, 2, 4])).ravel().tolist() == [5.0, 3.0]
        for kwargs, match in [
            (dict(ptr=torch.tensor([0, 2, 4]), dim_size=3), "dim_size=3 does not match ptr"),
            (dict(index=torch.tensor([0, 0, 1, 3]), dim_size=2), "dim_size=2 is too small"),
            (dict(dim=2), "dim=2 is out of range"),
        ]:
            try:
                m(x, **kwargs)
            except ValueError as e:
                assert match in str(e), (match, str(e))
            else:
                raise AssertionError(kwargs)
        lcm = ann.LCMAggregation(1, 2)
        assert lcm(x, ptr=torch.tensor([0, 1, 4]), index=torch.tensor([0, 1, 1, 1])).shape == (2, 2)
        assert repr(lcm) == "LCMAggregation(1, 2, project=True, pad='none', learn_identity=False)"
        assert repr(m) == "MaxAggregation()"
        m.reset_parameters()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------
# CUDA


@CUDA
@pytest.mark.parametrize("op", list(OURS))
def test_cuda_matches_cpu(op):
    x, index = _sets([0, 1, 2, 5, 9, 33, 0], h=7)
    m = OURS[op]()
    cpu = m(x, index, dim_size=8)
    gpu = m(x.cuda(), index.cuda(), dim_size=8)
    assert gpu.device.type == "cuda"
    if op == "logsumexp":
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(gpu.cpu(), cpu)
    ptr = torch.tensor([0, 0, 1, 3, 8, 17, 50, 50]).cuda()
    xs = x[torch.sort(index, stable=True).indices]
    torch.testing.assert_close(m(xs.cuda(), ptr=ptr).cpu(), m(xs, ptr=ptr.cpu()), rtol=1e-12, atol=1e-12)


def test_the_set_cache_sees_writes_torch_does_not_count():
    """Memory rewritten without moving the version counter must not reuse the old sets."""
    x = torch.arange(6.0).reshape(6, 1)
    agg = ann.SumAggregation()
    index = torch.tensor([0, 0, 1, 1, 2, 2])
    assert agg(x, index, dim_size=3).flatten().tolist() == [1.0, 5.0, 9.0]
    torch.from_dlpack(index).copy_(torch.tensor([2, 1, 0, 2, 1, 0]))  # index._version stays 0
    assert agg(x, index, dim_size=3).flatten().tolist() == [7.0, 5.0, 3.0]
    buf = np.array([0, 0, 1, 1, 2, 2])
    first = agg(x, torch.from_numpy(buf), dim_size=3).flatten().tolist()
    buf[:] = [2, 2, 2, 2, 2, 2]  # a new tensor over the same memory, version 0 again
    assert agg(x, torch.from_numpy(buf), dim_size=3).flatten().tolist() == [0.0, 0.0, 15.0] != first


def test_lcm_validates_an_index_rewritten_in_place():
    from aggkit.torch.lcm import LCMAggregation

    lcm = LCMAggregation(2, 2)
    index = torch.tensor([0, 0, 1, 1, 2, 2])
    lcm(torch.randn(6, 2), index, dim_size=3)
    torch.from_dlpack(index).copy_(torch.tensor([0, 2, 1, 1, 2, 0]))  # unsorted, version unchanged
    with pytest.raises(aggkit.InvalidParameterError, match="index must be sorted"):
        lcm(torch.randn(6, 2), index, dim_size=3)
