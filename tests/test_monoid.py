"""Monoid tree reductions: schedules, built-in monoids (numpy and Rust), docs/algorithms.md."""

import itertools

import aggkit
import aggkit.monoid as am
import numpy as np
import pytest
import reference as ref
from aggkit.errors import InvalidParameterError, ShapeError
from hypothesis import given
from hypothesis import strategies as st


def _ptr(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    both_nan = np.isnan(a) & np.isnan(b)
    ok = both_nan | (a.view(np.uint8).reshape(*a.shape, -1) == b.view(np.uint8).reshape(*b.shape, -1)).all(-1)
    assert ok.all(), (a[~ok], b[~ok])


def _symbolic(schedule, leaves):
    """Evaluate a schedule with string concatenation (not associative, not commutative)."""
    cur = list(leaves)
    out = [None] * schedule.num_sets
    for level in range(schedule.depth + 1):
        for p, s in zip(schedule.done[level], schedule.done_sets[level], strict=False):
            out[s] = cur[p]
        if level == schedule.depth:
            break
        pairs = schedule.pairs[level]
        half = len(pairs) // 2
        nxt = [f"({cur[a]}{cur[b]})" for a, b in zip(pairs[:half], pairs[half:], strict=False)]
        cur = nxt + [cur[c] for c in schedule.carry[level]]
    return out


# ---------------------------------------------------------------------------------------------
# schedules


def test_tree_shape_of_five_is_the_spec_oracle():
    s = am.tree_schedule(ptr=[0, 5])
    assert _symbolic(s, [f"x{i}" for i in range(5)]) == ["(((x0x1)(x2x3))x4)"]
    assert (s.depth, s.combines) == (3, 4)


@given(st.lists(st.integers(0, 40), min_size=1, max_size=12))
def test_each_set_has_its_own_carry_tree(sizes):
    ptr = _ptr(sizes)
    s = am.tree_schedule(ptr=ptr)
    leaves = [f"<{j}>" for j in range(ptr[-1])]
    got = _symbolic(s, leaves)
    for k, (a, b), g in zip(sizes, itertools.pairwise(ptr), got, strict=False):
        if k == 0:
            assert g is None
        else:
            assert g == ref.carry_tree(leaves[a:b], lambda u, v: f"({u}{v})")
    assert s.combines == sum(k - 1 for k in sizes if k)
    assert s.depth == max((int(np.ceil(np.log2(k))) for k in sizes if k), default=0)


def test_a_set_does_not_depend_on_the_batch():
    alone = am.tree_schedule(ptr=[0, 3])
    batched = am.tree_schedule(ptr=[0, 7, 10, 15])
    leaves = [f"x{i}" for i in range(15)]
    assert _symbolic(alone, leaves[7:10]) == [_symbolic(batched, leaves)[1]]


def test_padded_modes():
    sizes = [3, 0, 1, 5]
    ptr = _ptr(sizes)
    leaves = [f"x{i}" for i in range(9)] + ["e"]
    z = _symbolic(am.tree_schedule(ptr=ptr, pad="zeros_dense"), leaves)
    # PyG's to_dense_batch: every set padded to the largest size (5) and reduced alike.
    assert z[0] == "(((x0x1)(x2e))e)"
    assert z[1] == "(((ee)(ee))e)"
    assert z[2] == "(((x3e)(ee))e)"
    assert z[3] == "(((x4x5)(x6x7))x8)"
    i = _symbolic(am.tree_schedule(ptr=ptr, pad="identity"), leaves)
    assert i == ["((x0x1)(x2e))", "e", "x3", "(((x4x5)(x6x7))((x8e)(ee)))"]


def test_schedule_from_index_equals_from_ptr_and_is_deterministic():
    index = np.array([0, 0, 1, 3, 3, 3, 3])
    a = am.tree_schedule(index=index, dim_size=6)
    b = am.tree_schedule(ptr=[0, 2, 3, 3, 7, 7, 7])
    for u, v in [(a.pairs, b.pairs), (a.carry, b.carry), (a.done, b.done), (a.done_sets, b.done_sets)]:
        assert len(u) == len(v)
        assert all(np.array_equal(p, q) for p, q in zip(u, v, strict=False))
    assert a.num_sets == 6
    assert "depth=2" in repr(a)


def test_index_and_ptr_errors():
    with pytest.raises(InvalidParameterError, match="sorted"):
        am.segment_ptr(3, index=[0, 2, 1])
    with pytest.raises(InvalidParameterError, match="dim_size=2 is too small"):
        am.segment_ptr(2, index=[0, 2], dim_size=2)
    with pytest.raises(InvalidParameterError, match=">= 0"):
        am.segment_ptr(1, index=[-1])
    with pytest.raises(InvalidParameterError, match="does not match ptr"):
        am.segment_ptr(3, ptr=[0, 1, 3], dim_size=3)
    with pytest.raises(InvalidParameterError, match="end at the number of rows"):
        am.segment_ptr(4, ptr=[0, 1, 3])
    with pytest.raises(InvalidParameterError, match="start at 0"):
        am.segment_ptr(3, ptr=[1, 3])
    with pytest.raises(InvalidParameterError, match="non-decreasing"):
        am.segment_ptr(2, ptr=[0, 3, 2])
    with pytest.raises(InvalidParameterError, match="exactly one"):
        am.segment_ptr(2)
    with pytest.raises(InvalidParameterError, match="exactly one"):
        am.segment_ptr(2, index=[0, 0], ptr=[0, 2])
    with pytest.raises(ShapeError, match="index has 3 entries for 2 rows"):
        am.segment_ptr(2, index=[0, 0, 0])
    with pytest.raises(TypeError, match="integers"):
        am.segment_ptr(2, index=[0.0, 1.0])
    with pytest.raises(InvalidParameterError, match="pad"):
        am.tree_schedule(ptr=[0, 1], pad="ones")


# ---------------------------------------------------------------------------------------------
# built-in monoids


values = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False, width=32),
    st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0]),
)


@pytest.mark.parametrize("op", am.OPS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(
    sizes=st.lists(st.integers(0, 20), min_size=1, max_size=8),
    h=st.integers(1, 5),
    data=st.data(),
)
def test_segment_reduce_equals_the_reference(op, dtype, sizes, h, data):
    ptr = _ptr(sizes)
    m = int(ptr[-1]) * h
    x = np.array(data.draw(st.lists(values, min_size=m, max_size=m)), dtype=dtype)
    x = x.reshape(ptr[-1], h)
    got = am.segment_reduce(x, op, ptr=ptr)
    want = ref.segment_reduce(x, ptr, op)
    if op == "logsumexp":  # numpy's exp/log1p vs the Rust libm: equal to rounding
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dtype).eps, atol=0)
        assert np.array_equal(np.isnan(got), np.isnan(want))
    else:
        _same_bits(got, want)


@pytest.mark.parametrize("op", am.OPS)
def test_thread_count_and_simd_level_do_not_change_bits(op, rng, threads, simd):
    sizes = rng.integers(0, 300, size=400)
    sizes[::37] = 5000  # a few large sets
    ptr = _ptr(sizes)
    x = rng.standard_normal((ptr[-1], 16)).astype(np.float32)
    outs = []
    for t in (1, 2, 3):
        aggkit.set_num_threads(t)
        outs.append(am.segment_reduce(x, op, ptr=ptr))
    for o in outs[1:]:
        _same_bits(o, outs[0])
    aggkit._core._set_simd_level("scalar")
    _same_bits(am.segment_reduce(x, op, ptr=ptr), outs[0])


def test_sum_is_pairwise_accurate():
    # 2^20 float32 ones plus one 2^-10 each: a sequential float32 sum stalls at 2^24, the tree
    # sum's error stays O(log k) ulps.
    x = np.full((1 << 20, 1), np.float32(1 + 2**-10))
    got = am.segment_reduce(x, "sum", ptr=[0, x.shape[0]])[0, 0]
    assert abs(float(got) - (1 << 20) * (1 + 2**-10)) <= 1e-6 * (1 << 20)


def test_axis_batch_dims_empty_value_and_dtypes():
    x = np.arange(24, dtype=np.float64).reshape(2, 4, 3)  # elements on axis 1
    got = am.segment_reduce(x, "max", index=[0, 0, 2, 2], axis=1)
    assert got.shape == (2, 3, 3)
    np.testing.assert_array_equal(got[:, 0], x[:, 1])
    np.testing.assert_array_equal(got[:, 1], np.full((2, 3), -np.inf))
    np.testing.assert_array_equal(got[:, 2], x[:, 3])
    assert am.segment_reduce(x, "max", index=[0, 0, 2, 2], axis=1, empty=0.0)[0, 1].tolist() == [0, 0, 0]
    h = np.array([[1.0], [2.0], [4.0]], dtype=np.float16)
    out = am.segment_reduce(h, "mean", ptr=[0, 3, 3])
    assert out.dtype == np.float16
    assert out[:, 0].tolist() == [np.float16(7 / 3), 0.0]
    assert am.segment_reduce(np.zeros((0, 2)), "sum", ptr=[0, 0, 0]).tolist() == [[0, 0], [0, 0]]
    assert am.segment_reduce(np.ones((2, 2)), "prod", index=[1, 1]).tolist() == [[1, 1], [1, 1]]


def test_inputs_are_not_modified():
    x = np.random.default_rng(0).standard_normal((9, 3))
    before = x.copy()
    for op in am.OPS:
        am.segment_reduce(x, op, index=[0, 0, 0, 1, 1, 2, 2, 2, 2])
    assert np.array_equal(x, before)


def test_segment_reduce_errors():
    x = np.ones((3, 2))
    with pytest.raises(InvalidParameterError, match="op"):
        am.segment_reduce(x, "median", ptr=[0, 3])
    with pytest.raises(TypeError, match="floating-point"):
        am.segment_reduce(np.ones((3, 2), dtype=np.int64), "sum", ptr=[0, 3])
    with pytest.raises(ShapeError, match="axis 2"):
        am.segment_reduce(x, "sum", ptr=[0, 3], axis=2)
    with pytest.raises(InvalidParameterError, match="sorted"):
        am.segment_reduce(x, "sum", index=[1, 0, 0])
    with pytest.raises(ShapeError, match="0-d"):
        am.segment_reduce(np.float64(1.0), "sum", ptr=[0, 1])
