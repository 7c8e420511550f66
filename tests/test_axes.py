"""numpy's reduction keywords on the coordinate-wise rules: ``axis=``, ``out=``, ``keepdims=``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import aggkit
import numpy as np
import pytest

RULES: dict[str, Callable[..., Any]] = {
    "median": aggkit.median,
    "mean": aggkit.mean,
    "trimmed_mean": lambda x, **kw: aggkit.trimmed_mean(x, f=1, **kw),
    "meamed": lambda x, **kw: aggkit.meamed(x, f=1, **kw),
    "sign_vote": aggkit.sign_vote,
}
AXES: list[Any] = [0, 1, 2, -1, -3, (0, 2), (2, 0), (1, 2), [0, 1], (0, 1, 2), None, np.int64(1)]


def clients_first(x: np.ndarray, axis: Any) -> np.ndarray:
    """The obvious reference: move the client axes first and merge them, by hand."""
    axes = range(x.ndim) if axis is None else np.atleast_1d(axis).tolist()
    axes = sorted(int(a) % x.ndim for a in axes)
    moved = np.moveaxis(x, axes, list(range(len(axes))))
    return moved.reshape(math.prod(moved.shape[: len(axes)]), *moved.shape[len(axes) :])


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(5, 4, 3)).astype(np.float32)


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("axis", AXES, ids=repr)
@pytest.mark.parametrize("keepdims", [False, True])
def test_axis_is_the_rule_on_moved_inputs(x: np.ndarray, name: str, axis: Any, keepdims: bool) -> None:
    fn = RULES[name]
    got = fn(x, axis=axis, keepdims=keepdims)
    want = fn(clients_first(x, axis))
    shape = np.median(x, axis=axis, keepdims=keepdims).shape
    assert got.shape == shape
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got.reshape(want.shape), want)


@pytest.mark.parametrize("axis", [a for a in AXES if not isinstance(a, list)], ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_and_mean_agree_with_numpy(axis: Any, dtype: Any) -> None:
    x = np.random.default_rng(3).normal(size=(6, 5, 4)).astype(dtype)
    for keepdims in (False, True):
        np.testing.assert_allclose(
            aggkit.median(x, axis=axis, keepdims=keepdims),
            np.median(x, axis=axis, keepdims=keepdims),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            aggkit.mean(x, axis=axis, keepdims=keepdims),
            np.mean(x, axis=axis, keepdims=keepdims, dtype=np.float64),
            rtol=1e-6,
        )


def test_weights_follow_the_client_axis() -> None:
    x = np.random.default_rng(1).normal(size=(3, 7)).astype(np.float64)
    w = np.arange(1.0, 8.0)
    got = aggkit.median(x, axis=1, weights=w)
    np.testing.assert_array_equal(got, aggkit.median(x.T, weights=w))
    np.testing.assert_allclose(aggkit.mean(x, axis=-1, weights=w), np.average(x, axis=1, weights=w))
    with pytest.raises(aggkit.InvalidParameterError, match="7 weights for n=3"):
        aggkit.trimmed_mean(x, f=1, axis=0, weights=w)


def test_sequences_stack_only_when_the_axis_is_not_the_sequence() -> None:
    rng = np.random.default_rng(2)
    rows = [rng.normal(size=(4, 3)) for _ in range(5)]
    stacked = np.stack(rows)
    for axis in (0, 1, -1, (1, 2), None):
        np.testing.assert_array_equal(aggkit.median(rows, axis=axis), aggkit.median(stacked, axis=axis))
    assert aggkit.median(rows, keepdims=True).shape == (1, 4, 3)
    # np.stack would promote a mixed sequence silently; aggkit refuses it on every axis
    mixed = [*rows[:-1], rows[-1].astype(np.float32)]
    for axis in (0, 1):
        with pytest.raises(TypeError, match="same dtype"):
            aggkit.median(mixed, axis=axis)
    with pytest.raises(aggkit.ShapeError, match="same shape"):
        aggkit.median([*rows[:-1], rows[-1][:2]], axis=1)


def test_nested_lists_read_as_numpy_reads_them() -> None:
    assert aggkit.median([[1, 2], [3, 5]]).tolist() == [2.0, 3.5]
    assert aggkit.median([[1, 2], [3, 5]]).dtype == np.float64
    assert aggkit.median([[1, 2], [3, 5]], axis=1).tolist() == np.median([[1, 2], [3, 5]], axis=1).tolist()
    assert float(aggkit.mean([True, False, True, True], axis=None)) == 0.75
    assert float(aggkit.median([1.0, 2.0, 7.0])) == 2.0
    # a typed integer array keeps its dtype's meaning: refused, not converted silently
    with pytest.raises(TypeError, match="convert explicitly"):
        aggkit.median(np.array([[1, 2], [3, 5]]))
    for typed in (
        [[np.int8(1)], [np.int8(2)]],
        [[np.arange(3)], [np.arange(3)]],
    ):
        with pytest.raises(TypeError, match="numpy integers"):
            aggkit.mean(typed, axis=None)


def test_index_like_axes_and_the_default_axis_in_any_type() -> None:
    x = np.random.default_rng(9).normal(size=(3, 4, 5))
    for axis in (np.array(1), np.int8(1), [1]):
        np.testing.assert_array_equal(aggkit.median(x, axis=axis), aggkit.median(x, axis=1))
    np.testing.assert_array_equal(aggkit.median(x, axis=range(2)), aggkit.median(x, axis=(0, 1)))
    # a 0-d input gives the same error whether the default axis is written 0 or np.int64(0)
    for zero in (0, np.int64(0), np.array(0)):
        with pytest.raises(aggkit.ShapeError, match="0-d"):
            aggkit.median(np.float64(3.0), axis=zero)


def test_out_is_checked_before_the_rule_runs() -> None:
    x = np.ones((5, 3), np.float32)
    x[0, 0] = np.nan  # the rule would refuse this input under "raise"
    with pytest.raises(aggkit.ShapeError, match="out must have shape"):
        aggkit.median(x, nonfinite="raise", out=np.empty(4, np.float32))
    with pytest.raises(TypeError, match="same_kind"):
        aggkit.median(x, nonfinite="raise", out=np.empty(3, np.int32))


def test_out_receives_the_result(x: np.ndarray) -> None:
    out = np.full((4, 3), np.nan, dtype=np.float64)
    assert aggkit.median(x, out=out) is out
    np.testing.assert_array_equal(out, aggkit.median(x).astype(np.float64))
    out32 = np.empty((5, 1, 3), dtype=np.float32)
    assert aggkit.trimmed_mean(x, f=1, axis=1, keepdims=True, out=out32) is out32
    np.testing.assert_array_equal(out32, aggkit.trimmed_mean(x, f=1, axis=1, keepdims=True))
    # same_kind lets float64 go to float32, as numpy does
    out_small = np.empty(3, dtype=np.float32)
    aggkit.mean(x.astype(np.float64), axis=(0, 1), out=out_small)
    np.testing.assert_allclose(out_small, x.astype(np.float64).mean(axis=(0, 1)), rtol=1e-6)


def test_out_may_alias_the_input(x: np.ndarray) -> None:
    want = aggkit.median(x)
    y = x.copy()
    aggkit.median(y, out=y[0])
    np.testing.assert_array_equal(y[0], want)
    np.testing.assert_array_equal(y[1:], x[1:])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"axis": 3}, np.exceptions.AxisError, "axis 3 is out of bounds for a 3-d input"),
        ({"axis": -4}, aggkit.AxisError, "out of bounds"),
        ({"axis": 2**63}, aggkit.InvalidParameterError, "out of bounds"),
        ({"axis": -(2**64)}, IndexError, "out of bounds"),
        ({"axis": (0, -3)}, aggkit.InvalidParameterError, "names one axis twice"),
        ({"axis": 1.0}, TypeError, "axis must be an int"),
        ({"axis": True}, TypeError, "axis must be an int"),
        ({"axis": "0"}, TypeError, "axis must be an int"),
        ({"axis": ((0,),)}, TypeError, "axis must be an int"),
        ({"keepdims": "yes"}, TypeError, "keepdims must be a bool"),
        ({"out": np.empty(3)}, aggkit.ShapeError, r"out must have shape \(4, 3\), got \(3,\)"),
        ({"out": np.empty((4, 3), np.int64)}, TypeError, "same_kind"),
        ({"out": [[0.0] * 3] * 4}, TypeError, "out must be a numpy array"),
        ({"out": np.empty((4, 3)), "keepdims": True}, aggkit.ShapeError, r"\(1, 4, 3\)"),
    ],
)
def test_bad_keywords_are_named(x: np.ndarray, kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        aggkit.median(x, **kwargs)


def test_read_only_out_is_refused_and_input_untouched(x: np.ndarray) -> None:
    before = x.copy()
    out = np.zeros((4, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(aggkit.InvalidParameterError, match="read-only"):
        aggkit.median(x, out=out)
    assert not out.any()
    aggkit.median(x, axis=(0, 2), keepdims=True)
    np.testing.assert_array_equal(x, before)


def test_zero_dimensional_and_empty_inputs() -> None:
    assert float(aggkit.median(np.float64(3.0), axis=None)) == 3.0
    assert aggkit.median(np.float64(3.0), axis=None, keepdims=True).shape == ()
    with pytest.raises(aggkit.InvalidParameterError, match="out of bounds"):
        aggkit.median(np.float64(3.0), axis=0, keepdims=True)
    with pytest.raises(aggkit.EmptyInputError):
        aggkit.median(np.zeros((3, 0)), axis=1)
    assert aggkit.median(np.zeros((3, 0)), axis=0).shape == (0,)


def test_half_precision_with_axis() -> None:
    x = np.random.default_rng(4).normal(size=(4, 9)).astype(np.float16)
    got = aggkit.median(x, axis=1)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, aggkit.median(np.ascontiguousarray(x.T)))


def test_torch_axis_keepdims_out_and_grad() -> None:
    torch = pytest.importorskip("torch")
    x = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    y = aggkit.median(x, axis=1, keepdims=True)
    want = torch.median(x, dim=1, keepdim=True).values  # n = 4: aggkit's "mean" differs
    assert y.shape == want.shape
    torch.testing.assert_close(aggkit.median(x, axis=1, even="lower"), torch.median(x, dim=1).values)
    y.sum().backward()
    assert x.grad is not None
    ref = x.detach().clone().requires_grad_(True)
    aggkit.median(ref.movedim(1, 0)).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)

    out = torch.empty(4, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        aggkit.mean(x, out=out)
    nan = x.detach().clone().requires_grad_(True)
    with torch.no_grad():
        nan[0, 0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="automatic differentiation"):  # before the rule's refusal
        aggkit.median(nan, nonfinite="raise", out=out)
    with torch.no_grad():
        assert aggkit.mean(x, out=out) is out
    torch.testing.assert_close(out, x.detach().mean(0))
    with pytest.raises(TypeError, match="cannot be cast"):
        aggkit.mean(x.detach(), out=torch.empty(4, 3, dtype=torch.int64))
    with pytest.raises(aggkit.ShapeError, match="out must have shape"):
        aggkit.mean(x.detach(), out=torch.empty(3))
    with pytest.raises(TypeError, match="out must be a tensor"):
        aggkit.mean(x.detach(), out=np.empty((4, 3)))

    rows = list(torch.randn(5, 6, dtype=torch.bfloat16).unbind(0))
    got = aggkit.trimmed_mean(rows, f=1, axis=-1)
    assert got.dtype == torch.bfloat16
    assert got.shape == (5,)
    torch.testing.assert_close(got, aggkit.trimmed_mean(torch.stack(rows).T.contiguous(), f=1))
