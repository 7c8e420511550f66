"""torch: segment_reduce (Rust and torch-native paths, autograd) and LCMAggregation (docs/algorithms.md)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import aggkit.torch as at  # noqa: E402
import reference as ref  # noqa: E402
from aggkit.errors import InvalidParameterError, ShapeError  # noqa: E402
from aggkit.torch.monoid import OPS, tree_reduce, tree_schedule  # noqa: E402
from aggkit.torch.nn import LCMAggregation  # noqa: E402

# torch_geometric (imported by LCMAggregation when installed) warns about torch APIs at import.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:torch_geometric")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _sets(sizes, h, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = torch.randn(int(sum(sizes)), h, generator=g, dtype=dtype)
    return x, index


def _equal_nan(a, b):
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    assert torch.equal(torch.isnan(a), torch.isnan(b))
    m = ~torch.isnan(a)
    assert np.array_equal(a[m].detach().numpy().view(np.uint8), b[m].detach().numpy().view(np.uint8))


# ---------------------------------------------------------------------------------------------
# segment_reduce


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rust_and_native_paths_agree(op, dtype):
    sizes = [0, 1, 2, 3, 5, 8, 13, 0, 31, 64]
    x, index = _sets(sizes, 6, dtype)
    x[3, 2], x[10, 1], x[11, 0], x[12, 4] = float("nan"), float("inf"), -0.0, float("-inf")
    rust = at.segment_reduce(x, index, dim_size=11, op=op)
    with at.force_native():
        native = at.segment_reduce(x, index, dim_size=11, op=op)
    want = torch.from_numpy(ref.segment_reduce(x.numpy(), np.r_[0, np.cumsum(sizes), np.sum(sizes)], op))
    if op == "logsumexp":
        torch.testing.assert_close(native, rust, equal_nan=True)
    else:
        _equal_nan(native, rust)
        _equal_nan(rust, want)
    # The gradients: one Rust pass on CPU, torch ops on other devices.
    g = torch.randn(rust.shape, dtype=dtype, generator=torch.Generator().manual_seed(5))
    grads = []
    for native_path in (False, True):
        xx = x.clone().requires_grad_(True)
        if native_path:
            with at.force_native():
                (gx,) = torch.autograd.grad(at.segment_reduce(xx, index, dim_size=11, op=op), xx, g)
        else:
            (gx,) = torch.autograd.grad(at.segment_reduce(xx, index, dim_size=11, op=op), xx, g)
        grads.append(gx)
    if op in ("logsumexp", "prod"):
        torch.testing.assert_close(grads[0], grads[1], equal_nan=True)
    else:
        _equal_nan(grads[0], grads[1])


def test_dim_and_half_precision():
    x = torch.arange(24.0).reshape(2, 4, 3)
    out = at.segment_reduce(x, torch.tensor([0, 0, 1, 1]), dim=1, op="sum")
    assert out.shape == (2, 2, 3)
    torch.testing.assert_close(out[:, 0], x[:, 0] + x[:, 1])
    h = at.segment_reduce(x.half(), ptr=torch.tensor([0, 2, 4]), dim=1, op="mean")
    assert h.dtype == torch.float16
    torch.testing.assert_close(h.float(), out / 2)


@pytest.mark.parametrize("op", ["sum", "mean", "prod", "max", "min", "logsumexp"])
def test_gradcheck(op):
    sizes = [1, 2, 3, 5, 0, 4]
    x, index = _sets(sizes, 3)
    x = x.detach().requires_grad_(True)
    torch.autograd.gradcheck(lambda v: at.segment_reduce(v, index, op=op, empty=0.0), (x,))
    with at.force_native():
        torch.autograd.gradcheck(lambda v: at.segment_reduce(v, index, op=op, empty=0.0), (x,))


def test_prod_gradient_with_zeros_and_max_ties():
    x = torch.tensor([[2.0], [0.0], [3.0], [0.0], [0.0], [5.0]], dtype=torch.float64, requires_grad=True)
    ptr = torch.tensor([0, 3, 5, 6])
    (g,) = torch.autograd.grad(at.segment_reduce(x, ptr=ptr, op="prod").sum(), x)
    assert g.ravel().tolist() == [0.0, 6.0, 0.0, 0.0, 0.0, 1.0]
    with at.force_native():
        (g2,) = torch.autograd.grad(at.segment_reduce(x, ptr=ptr, op="prod").sum(), x)
    assert torch.equal(g, g2)
    y = torch.tensor([[1.0], [4.0], [4.0], [4.0], [2.0]], requires_grad=True)
    (g,) = torch.autograd.grad(at.segment_reduce(y, ptr=torch.tensor([0, 5]), op="max").sum(), y)
    torch.testing.assert_close(g.ravel(), torch.tensor([0, 1 / 3, 1 / 3, 1 / 3, 0]))


# torch's own aot_dispatch check reads .grad of the non-leaf inputs it makes (as in test_torch.py).
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_opcheck():
    x, _index = _sets([2, 3, 1], 4)
    ptr = torch.tensor([0, 2, 5, 6])
    for op in OPS:
        torch.library.opcheck(torch.ops.aggkit.segment_reduce, (x.requires_grad_(True), ptr, op, None))


def test_segment_reduce_errors():
    x = torch.ones(3, 2)
    with pytest.raises(InvalidParameterError, match="sorted"):
        at.segment_reduce(x, torch.tensor([1, 0, 0]))
    with pytest.raises(InvalidParameterError, match="does not match ptr"):
        at.segment_reduce(x, ptr=torch.tensor([0, 1, 3]), dim_size=5)
    with pytest.raises(TypeError, match="floating-point"):
        at.segment_reduce(torch.ones(3, 2, dtype=torch.int64), torch.tensor([0, 0, 0]))
    with pytest.raises(InvalidParameterError, match="op"):
        at.segment_reduce(x, torch.tensor([0, 0, 0]), op="median")


# Forward-mode AD loads torch's jit-scripted decompositions on first use, which warns.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("op", OPS)
def test_under_torch_func_transforms(op):
    """grad, jacrev, jacfwd, hessian and vmap: a custom op with an autograd formula cannot run
    under them, so segment_reduce switches to an autograd.Function with the same formulas."""
    x, index = _sets([2, 0, 3, 1, 4], 3)
    x[1, 1] = x[0, 1]  # a tie for max/min

    def f(v):
        return at.segment_reduce(v, index, dim_size=6, op=op, empty=0.0)

    def loss(v):
        return f(v).pow(2).sum()

    close = {"rtol": 1e-12, "atol": 1e-12}
    v = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(loss(v), v)
    torch.testing.assert_close(torch.func.grad(loss)(x), want, **close)
    jac = torch.autograd.functional.jacobian(f, x)
    torch.testing.assert_close(torch.func.jacrev(f)(x), jac, **close)
    torch.testing.assert_close(torch.func.jacfwd(f)(x), jac, **close)
    if op != "prod":  # the custom op's prod backward has no second derivative
        hess = torch.autograd.functional.hessian(loss, x)
        torch.testing.assert_close(torch.func.hessian(loss)(x), hess, **close)
    else:  # under torch.func it has: against torch's own product
        sets = [index == s for s in range(6)]

        def plain(v):
            return sum((v[m].prod(0) if m.any() else v.new_zeros(3)).pow(2).sum() for m in sets)

        torch.testing.assert_close(torch.func.hessian(loss)(x), torch.func.hessian(plain)(x), **close)
    batch = torch.randn(4, *x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    got = torch.func.vmap(f)(batch)  # the batch folded into the columns: no per-sample loop
    assert torch.equal(got, torch.stack([f(b) for b in batch]))
    g_batch = torch.func.vmap(torch.func.grad(loss))(batch)
    torch.testing.assert_close(g_batch, torch.stack([torch.func.grad(loss)(b) for b in batch]), **close)


def test_lcm_under_torch_func_grad():
    m = _lcm()
    x, index = _sets([3, 1, 4], 4)
    v = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(m(v, index).pow(2).sum(), v)
    got = torch.func.grad(lambda v: m(v, index).pow(2).sum())(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# LCMAggregation


def _lcm(pad="none", seed=0, **kw):
    torch.manual_seed(seed)
    return LCMAggregation(4, 8, pad=pad, **kw).double()


def test_single_element_set_is_its_projected_input():
    m = _lcm()
    x = torch.randn(1, 4, dtype=torch.float64)
    out = m(x, torch.tensor([0]))
    assert torch.equal(out, m._project(x))  # k = 1: the element itself, no operator call
    torch.testing.assert_close(out, m.lin(x).relu(), rtol=1e-15, atol=1e-15)


def test_commutativity_is_exact():
    m = _lcm()
    a, b = torch.randn(20, 8, dtype=torch.float64), torch.randn(20, 8, dtype=torch.float64)
    assert torch.equal(m.combine(a, b), m.combine(b, a))
    # Swapping the two leaves of a pair inside a set does not change the set's output.
    x = torch.randn(5, 4, dtype=torch.float64)
    idx = torch.zeros(5, dtype=torch.long)
    assert torch.equal(m(x, idx), m(x[[1, 0, 2, 3, 4]], idx))


def test_tree_shape_of_five():
    m = _lcm()
    x = torch.randn(5, 4, dtype=torch.float64)
    z = m.lin(x).relu()

    def op(a, b):
        return m.combine(a[None], b[None])[0]

    want = op(op(op(z[0], z[1]), op(z[2], z[3])), z[4])
    torch.testing.assert_close(m(x, torch.zeros(5, dtype=torch.long))[0], want, rtol=0, atol=1e-12)


def test_equals_the_one_pair_at_a_time_reference():
    m = _lcm()
    sizes = [3, 0, 1, 7, 2, 16, 5]
    x, index = _sets(sizes, 4)
    got = m(x, index)
    z = m.lin(x).relu()
    start = 0
    for s, k in enumerate(sizes):
        rows = [z[i] for i in range(start, start + k)]
        want = (
            torch.zeros(8, dtype=x.dtype)
            if k == 0
            else ref.carry_tree(rows, lambda a, b: m.combine(a[None], b[None])[0])
        )
        torch.testing.assert_close(got[s], want, rtol=0, atol=1e-12)
        start += k


def test_a_set_does_not_depend_on_the_other_sets():
    m = LCMAggregation(6, 16)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        k, other = (int(v) for v in torch.randint(1, 40, (2,), generator=g))
        xs, xo = torch.randn(k, 6, generator=g), torch.randn(other, 6, generator=g)
        alone = m(xs, torch.zeros(k, dtype=torch.long))
        batched = m(torch.cat([xo, xs]), torch.tensor([0] * other + [1] * k))
        # Equal to rounding by construction; bit-identical with the padding of small GEMMs.
        assert torch.equal(alone[0], batched[1])


def test_empty_sets_and_the_learned_identity():
    x, index = _sets([2, 3], 4)
    out = _lcm()(x, index + 1, dim_size=4)  # sets 0 and 3 empty
    assert torch.equal(out[0], torch.zeros(8, dtype=x.dtype))
    assert torch.equal(out[3], out[0])
    m = _lcm(learn_identity=True)
    with torch.no_grad():
        m.identity.copy_(torch.arange(8.0))
    out = m(x, index + 1, dim_size=4)
    assert torch.equal(out[0], m.identity)
    assert torch.equal(out[3], m.identity)
    mi = _lcm(pad="identity")
    assert mi.identity is not None
    with torch.no_grad():
        mi.identity.copy_(torch.arange(8.0))
    out = mi(x, index + 1, dim_size=4)
    z = mi.lin(x).relu()
    e = mi.identity
    op = lambda a, b: mi.combine(a[None], b[None])[0]  # noqa: E731
    torch.testing.assert_close(out[2], op(op(z[2], z[3]), op(z[4], e)), rtol=0, atol=1e-12)
    assert torch.equal(out[0], e)


def test_zeros_dense_is_pyg_shaped():
    m = _lcm(pad="zeros_dense")
    x, index = _sets([3, 1], 4)
    out = m(x, index, dim_size=3)
    z = m.lin(x).relu()
    zero = torch.zeros(8, dtype=x.dtype)
    op = lambda a, b: m.combine(a[None], b[None])[0]  # noqa: E731
    torch.testing.assert_close(out[0], op(op(z[0], z[1]), z[2]), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[1], op(op(z[3], zero), zero), rtol=0, atol=1e-12)
    torch.testing.assert_close(out[2], op(op(zero, zero), zero), rtol=0, atol=1e-12)


@pytest.mark.parametrize("pad", ["none", "zeros_dense", "identity"])
def test_gradients_reach_every_parameter(pad):
    m = _lcm(pad=pad, learn_identity=True)
    x, index = _sets([3, 0, 5, 1], 4)
    x.requires_grad_(True)
    loss = (
        m(x, index, dim_size=5).pow(2).sum() + m.assoc_loss(num_triples=16) + m.identity_loss(num_samples=8)
    )
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_gradcheck_through_the_tree():
    m = _lcm()
    x, index = _sets([3, 1, 4], 4)
    x.requires_grad_(True)
    torch.autograd.gradcheck(lambda v: m(v, index), (x,))


def test_assoc_loss():
    m = _lcm()
    x = torch.randn(10, 4, dtype=torch.float64)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = m.assoc_loss(x, num_triples=32, generator=g1)
    idx = torch.randint(0, 10, (3, 32), generator=g2)
    z = m.lin(x).relu()
    a, b, c = z[idx[0]], z[idx[1]], z[idx[2]]
    want = (m.combine(m.combine(a, b), c) - m.combine(a, m.combine(b, c))).pow(2).sum(-1).mean()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert got > 0
    with pytest.raises(InvalidParameterError, match="no input yet"):
        _lcm().assoc_loss()
    with pytest.raises(InvalidParameterError, match="learn_identity"):
        m.identity_loss(x)


def test_schedule_is_cached_per_index_tensor():
    m = _lcm()
    x, index = _sets([3, 2], 4)
    m(x, index)
    s = m._cache.value
    m(x, index)
    assert m._cache.value is s
    edge_index = torch.stack([index, index])
    m(x, edge_index[1])  # a new view of other memory: rebuilt
    s = m._cache.value
    m(x, edge_index[1])  # another view of the same memory (MessagePassing's index): reused
    assert m._cache.value is s
    m(x, index, dim_size=4)  # other sets: rebuilt
    assert m._cache.value is not s
    index = edge_index[1]
    m(x, index)
    s = m._cache.value
    edge_index[1, 3:] = 2  # modified in place through the base tensor: the schedule is rebuilt
    out = m(x, index)
    assert m._cache.value is not s
    assert out.shape == (3, 8)
    sched = tree_schedule(index)
    assert torch.equal(m(x, schedule=sched), out)


def test_lcm_errors():
    with pytest.raises(InvalidParameterError, match="projected"):
        LCMAggregation(4, 8, project=False)
    with pytest.raises(InvalidParameterError, match="pad"):
        LCMAggregation(4, 8, pad="zeros")
    with pytest.raises(InvalidParameterError, match="learned identity"):
        LCMAggregation(4, 8, pad="identity", learn_identity=False)
    m = LCMAggregation(4, 8)
    with pytest.raises(InvalidParameterError, match="sorted"):
        m(torch.randn(3, 4), torch.tensor([1, 0, 1]))
    # ValueError: PyG's Aggregation.__call__ checks this first when torch_geometric is installed.
    with pytest.raises(ValueError, match="dim_size"):
        m(torch.randn(3, 4), ptr=torch.tensor([0, 1, 3]), dim_size=4)
    with pytest.raises(ShapeError, match="channels"):
        m(torch.randn(3, 5), torch.tensor([0, 0, 1]))
    with pytest.raises(ShapeError, match="dim=-2"):
        m(torch.randn(2, 3, 4), torch.tensor([0, 0, 1]))
    with pytest.raises(ShapeError, match="index has 2 entries"):
        m(torch.randn(3, 4), torch.tensor([0, 0]))
    with pytest.raises(TypeError, match="floating-point"):
        m(torch.ones(3, 4, dtype=torch.long), torch.tensor([0, 0, 1]))


def test_tree_reduce_with_any_operator():
    s = tree_schedule(ptr=torch.tensor([0, 5, 5, 7]))
    x = torch.arange(7.0)[:, None]
    out = tree_reduce(x, s, lambda a, b: 10 * a + b, fill=-1.0)
    assert out.ravel().tolist() == [334.0, -1.0, 56.0]
    with pytest.raises(ShapeError, match="schedule is for 7 rows"):
        tree_reduce(x[:3], s, torch.add)


# ---------------------------------------------------------------------------------------------
# PyTorch Geometric (when installed)


def test_zeros_dense_equals_pyg_and_none_fixes_its_batch_dependence():
    pyg = pytest.importorskip("torch_geometric.nn.aggr")
    torch.manual_seed(0)
    theirs = pyg.LCMAggregation(6, 16)
    ours = LCMAggregation(6, 16, pad="zeros_dense")
    ours.load_state_dict(theirs.state_dict())
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        sizes = torch.randint(0, 9, (7,), generator=g)
        index = torch.repeat_interleave(torch.arange(7), sizes)
        x = torch.randn(int(sizes.sum()), 6, generator=g)
        torch.testing.assert_close(
            ours(x, index, dim_size=9), theirs(x, index, dim_size=9), rtol=1e-6, atol=1e-6
        )
    # PyG's defect (docs/algorithms.md, LCM aggregation): a 3-element set alone vs batched
    # with a 5-element set.
    x3, x5 = torch.randn(3, 6, generator=g), torch.randn(5, 6, generator=g)
    batch = torch.tensor([0] * 3 + [1] * 5)
    alone_p, batched_p = theirs(x3, torch.zeros(3, dtype=torch.long)), theirs(torch.cat([x3, x5]), batch)
    assert (alone_p[0] - batched_p[0]).abs().max() > 1e-3
    per_set = LCMAggregation(6, 16)
    per_set.load_state_dict(theirs.state_dict())
    assert torch.equal(
        per_set(x3, torch.zeros(3, dtype=torch.long))[0], per_set(torch.cat([x3, x5]), batch)[0]
    )


def test_drops_into_a_pyg_message_passing_layer():
    pytest.importorskip("torch_geometric")
    from torch_geometric.nn import MessagePassing
    from torch_geometric.utils import sort_edge_index

    class Conv(MessagePassing):
        def __init__(self):
            super().__init__(aggr=LCMAggregation(3, 5))

        def forward(self, x, edge_index):
            return self.propagate(edge_index, x=x)

    torch.manual_seed(0)
    conv = Conv()
    edge_index = sort_edge_index(torch.tensor([[0, 1, 2, 3, 0, 2], [1, 0, 1, 1, 3, 3]]), sort_by_row=False)
    x = torch.randn(5, 3)
    out = conv(x, edge_index)
    assert out.shape == (5, 5)
    want = conv.aggr_module(x[edge_index[0]], edge_index[1], dim_size=5)
    assert torch.equal(out, want)
    assert torch.equal(out[2], torch.zeros(5))
    assert torch.equal(out[4], torch.zeros(5))


@CUDA
@pytest.mark.parametrize("op", OPS)
def test_cuda_segment_reduce_matches_cpu(op):
    x, index = _sets([0, 1, 2, 5, 9, 33], 7)
    cpu = at.segment_reduce(x, index, op=op)
    gpu = at.segment_reduce(x.cuda(), index.cuda(), op=op)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=0, equal_nan=True)


@CUDA
def test_cuda_lcm_matches_cpu():
    m = _lcm(pad="none", learn_identity=True)
    x, index = _sets([0, 1, 2, 5, 9, 33], 4)
    torch.testing.assert_close(
        m.cuda()(x.cuda(), index.cuda()).cpu(), m.cpu()(x, index), rtol=1e-9, atol=1e-9
    )


def test_no_messages_at_all():
    m = LCMAggregation(3, 4)
    empty = torch.zeros(0, dtype=torch.long)
    assert torch.equal(m(torch.zeros(0, 3), empty, dim_size=2), torch.zeros(2, 4))
    assert torch.equal(
        LCMAggregation(3, 4, pad="zeros_dense")(torch.zeros(0, 3), empty, dim_size=2), torch.zeros(2, 4)
    )
    out = at.segment_reduce(torch.zeros(0, 3), empty, dim_size=2, op="max")
    assert torch.equal(out, torch.full((2, 3), float("-inf")))
    assert m(torch.randn(4, 3)).shape == (1, 4)  # no index and no ptr: one set (as PyG)
