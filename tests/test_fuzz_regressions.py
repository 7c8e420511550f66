"""Findings of the fuzz harness (fuzz/fuzz_api.py), minimised, and a smoke run of the harness.

Every case the fuzzer found is kept here. Those that are still bugs in aggkit are marked
``xfail(strict=True)``: fixing the bug makes the test pass, which fails the suite until the mark
is removed. The harness knows them too (``KNOWN`` in fuzz/fuzz_api.py) and counts them instead
of reporting them, so a long run goes on past them; remove the entry with the mark.

The rule the harness applies (docs/conventions.md, Errors): a refusal is an ``AggkitError`` or a
``TypeError`` that aggkit raises itself, naming the rule and the parameter; never a bare
``ValueError``, ``OverflowError`` or a ``TypeError`` from deep inside numpy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import aggkit
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = np.ones((3, 2))


def refused_by_aggkit(call, name: str) -> BaseException:
    """Run ``call``; it must raise an AggkitError or a TypeError, either naming the parameter ``name``."""
    error = None
    try:
        call()
    except Exception as e:
        error = e
    assert error is not None, "accepted"
    what = f"{type(error).__module__}.{type(error).__name__}: {error}"
    assert isinstance(error, aggkit.AggkitError | TypeError), what
    assert re.search(rf"\b{name}\b", str(error)), f"not naming {name!r}: {what}"
    return error


# ---------------------------------------------------------------------------------------------
# Open bugs


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("tau", lambda v: aggkit.centered_clipping(X, tau=v)),
        ("nu", lambda v: aggkit.geometric_median(X, nu=v)),
        ("ftol", lambda v: aggkit.geometric_median(X, ftol=v)),
        ("c", lambda v: aggkit.Clipping(c=v)),
        ("b", lambda v: aggkit.Perturb(b=v)),
        ("atol", lambda v: aggkit.DETOX(q=0, atol=v)),
    ],
    ids=["tau", "nu", "ftol", "c", "b", "atol"],
)
def test_float_parameters_beyond_the_float_range_are_refused(name, call):
    call(2.0)  # accepted
    refused_by_aggkit(lambda: call(10**400), name)


@pytest.mark.parametrize("rule", ["mean", "median", "trimmed_mean", "multi_krum", "geometric_median"])
def test_weights_beyond_the_float_range_are_refused(rule):
    x = np.ones((5, 2))
    kw = {"trimmed_mean": {"f": 1}, "multi_krum": {"f": 0}}.get(rule, {})
    getattr(aggkit, rule)(x, weights=[2.0**1000, 1, 1, 1, 1], **kw)  # accepted: ratios matter
    refused_by_aggkit(lambda: getattr(aggkit, rule)(x, weights=[10**400, 1, 1, 1, 1], **kw), "weights")


@pytest.mark.parametrize(
    "call",
    [
        lambda: aggkit.detox(np.ones((3, 2)), q=0, rng=-1),
        lambda: aggkit.detox(np.ones((3, 2)), q=0, rng="x"),
        lambda: aggkit.detox(np.ones((3, 2)), q=0, rng=1.5),
        lambda: aggkit.random_groups(6, 3, -1),
        lambda: aggkit.random_groups(6, 3, "x"),
    ],
    ids=["detox-negative", "detox-str", "detox-float", "random_groups-negative", "random_groups-str"],
)
def test_a_bad_rng_is_refused_by_name(call):
    refused_by_aggkit(call, "rng")


@pytest.mark.parametrize(
    "call",
    [
        lambda: aggkit.contiguous_groups(6.0, 3),
        lambda: aggkit.random_groups(6.0, 3, 0),
        lambda: aggkit.random_groups([6], 3, 0),
        lambda: aggkit.expected_corrupted_groups(6.0, 3, 2),
        lambda: aggkit.data_assignment(np.arange(3).reshape(1, 3), 3.0),
    ],
    ids=[
        "contiguous_groups",
        "random_groups-float",
        "random_groups-list",
        "expected-float",
        "data_assignment",
    ],
)
def test_detox_helpers_refuse_a_bad_n_by_name(call):
    refused_by_aggkit(call, "n")


def test_group_helpers_refuse_more_workers_than_32_bit_rows():
    """Found by the 30-minute atheris run: numpy's bare ValueError ("Maximum allowed size
    exceeded") from np.arange(n)."""
    refused_by_aggkit(lambda: aggkit.contiguous_groups(n=27670116110564327421, r=2**63 - 1), "n")
    refused_by_aggkit(lambda: aggkit.random_groups(3 * 2**32, 3, 0), "n")


def test_expected_corrupted_groups_refuses_groups_too_large_to_sum_exactly():
    """Found: math.comb's OverflowError (and, below it, hours of exact binomials)."""
    refused_by_aggkit(lambda: aggkit.expected_corrupted_groups(3 * (2**64 - 1), 2**64 - 1, 6), "r")


@pytest.mark.parametrize("axis", ["0", 0.5, b"0", 1j], ids=["str", "float", "bytes", "complex"])
def test_segment_reduce_refuses_a_non_integer_axis_by_name(axis):
    refused_by_aggkit(lambda: aggkit.monoid.segment_reduce(X, "sum", ptr=[0, 3], axis=axis), "axis")


@pytest.mark.parametrize(
    "call",
    [
        lambda: aggkit.monoid.tree_schedule(ptr=[0, [1]]),
        lambda: aggkit.monoid.segment_reduce(np.ones((2, 1)), "sum", index=[0, [1]]),
        lambda: aggkit.monoid.segment_reduce(np.ones((2, 1)), "sum", ptr=[0, [1, 2]]),
    ],
    ids=["tree_schedule-ptr", "segment_reduce-index", "segment_reduce-ptr"],
)
def test_ragged_index_and_ptr_are_refused(call):
    """Found: numpy's bare ValueError (inhomogeneous shape) out of rules/monoid.py's _int_array.
    Fixed by _params.int_array (a ShapeError naming index / ptr)."""
    refused_by_aggkit(call, "index|ptr")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_caf_stops_when_the_filtered_weight_reaches_n_minus_2f_exactly(dtype):
    x = np.array([-2.0, 3.0, 0.0, 1.0, -2.0], dtype)
    y = aggkit.caf(x, f=1)
    assert abs(float(y)) < 1e-6, y


# ---------------------------------------------------------------------------------------------
# Cases the fuzzer found that hold on the current tree (kept as regressions)


@pytest.mark.parametrize(
    ("rule", "value", "n"),
    [
        # tests/reference.py divides the float64 sum by the count and can land one ulp outside the
        # values (or overflow to inf): the core keeps a mean inside the values it averages
        # (rust/order.rs, mean_within). Found as disagreements with the reference.
        ("weighted mean of one input", 0.40425193309783936, 1),
        ("trimmed_mean f=0", 0.09838537780538596, 7),
        ("meamed", -1.7878830714931133, 4),
        ("meamed", 1.7e308, 10),
        ("trimmed_mean f=2", -1e308, 7),
        ("weighted multi_krum", 0.09838537780538596, 7),
        ("bulyan", -1.7878830714931133, 7),
    ],
)
def test_the_mean_of_identical_values_is_that_value(rule, value, n):
    x = np.full((n, 3), value)
    call = {
        "weighted mean of one input": lambda: aggkit.mean(x, weights=[0.37499180505147556]),
        "trimmed_mean f=0": lambda: aggkit.trimmed_mean(x, f=0),
        "trimmed_mean f=2": lambda: aggkit.trimmed_mean(x, f=2),
        "meamed": lambda: aggkit.meamed(x, f=(n - 1) // 2),
        "weighted multi_krum": lambda: aggkit.multi_krum(x, f=1, weights=[3, 1, 2, 5, 1, 1, 1]),
        "bulyan": lambda: aggkit.bulyan(x, f=1),
    }[rule]
    assert call().tobytes() == x[0].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_krum_returns_the_selected_input_bit_for_bit(dtype):
    """Krum returns "a copy of the selected input" (its docstring) and is Multi-Krum with m = 1 bit for
    bit (docs/algorithms.md): the float64 sum of that one row used to start from +0.0 and turn -0.0
    into +0.0. Fixed by the sums starting from -0.0 (rust/order.rs, Accumulator::zero)."""
    x = np.array([[-0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], dtype)
    y, sel = aggkit.krum(x, f=0, return_selection=True)
    assert sel.indices.tolist() == [0]
    assert y.tobytes() == x[0].tobytes(), (y, x[0])


@pytest.mark.parametrize(
    "center", ["abc", [1.0, "a"], 1 + 2j, object()], ids=["str", "list", "complex", "object"]
)
def test_centered_clipping_refuses_a_bad_center_by_name(center):
    """Found: numpy's ValueError / TypeError escaped np.asarray(center, float64). Fixed by
    rules/centered_clipping.py's parse_center (an InvalidParameterError naming the center)."""
    refused_by_aggkit(lambda: aggkit.centered_clipping(X, center=center), "center")
    with pytest.raises(aggkit.InvalidParameterError, match="center must have the inputs' size"):
        aggkit.centered_clipping(X, center=np.zeros(3))


CAF_CASE = np.frombuffer(
    bytes.fromhex(
        "d4dc7b438768fcbfe4d6150130e0eabf6ed108153aa3eebf23a2d9a10e28f53f8af0b181ed73e53feb59f67eadbae83f"
        "c07a0c1ea166edbf2fe288e4f993eb3f0b35e91f2f2cf13f940bffee15bed13fb052b56cc48ef63f5f18cec5ba52e03f"
        "13d31b494364f4bf8d607fa4ae23debf1ff441a70666d23f9dbec96fc319c8bfc8e904561ca7bb3fadc0a750c1aaf8bf"
        "ae1d030cf56cee3fb7f6e220277fc03f40d6065c46d7dcbfac7b0da84ba4773fcd6ae24d86f7d43fcf05803b30e3c33f"
        "00000000000000c02a4143aa3fffec3f69b3c119f80ea1bf9caf7708c583f8bfe2ee86b01936f3bf6fe3ffdb8425b6bf"
        "cc8a275c37b3f83f1bed0e698a24e0bf2b6c282f6d7ae33fcdbf10b888e0fabf59224b16ee4ffbbf96d793e72463d8bf"
        "2413ca125173cb3fffffffffffffdf7f8e882f63c6c989bfe295a92306bbf83f169244607041f7bf986778642ca7b23f"
        "a5e9fef521b2db3fba74501b8e54dfbf4fbccdbb110fe5bf95a23695a02fe4bf5060113cb2dbe33f75f28c328c0bc43f"
        "a262694f2c87f93f63167e97fc48e7bfadaa235008f4a5bf3c1d50cb475de6bf78c7f794439b0640b04c40e0938dd1bf"
        "4748080438fcbcbf"
    ),
    "<f8",
).reshape(11, 5)


def test_caf_near_the_float64_limit_raises_no_linalg_error():
    """Found once as numpy's LinAlgError ("Eigenvalues did not converge") out of aggkit.caf while
    _numpy/subsets.py and _plans.py were being changed (one input holds 2**1023 in one coordinate);
    it does not reproduce on the tree as it is now. Kept: no f may raise anything but an AggkitError."""
    for f in range(6):
        out = aggkit.caf(CAF_CASE, f=f)
        assert out.shape == (5,)
    assert aggkit.caf(CAF_CASE, f=4, nonfinite="raise").shape == (5,)


def test_logsumexp_near_zero_is_accurate_to_the_operands_scale():
    """Found against tests/test_monoid.py's tolerance (rtol 4 eps, no atol): float32 sets whose
    logsumexp is near 0 lose relative accuracy to cancellation in ``m + log1p(exp(-|a - b|))``
    (the core is 11 ulps of the result off, numpy's reference 5): both are within an ulp or two
    of the operands. The family test would fail on this set; the error bound is absolute."""
    v = np.array([-1.2223612, -0.9881004, -1.1716619, -2.6502726], np.float32)
    got = float(aggkit.monoid.segment_reduce(v[:, None], "logsumexp", ptr=[0, 4])[0, 0])
    exact = float(np.log(np.exp(v.astype(np.float64)).sum()))
    assert abs(got - exact) <= 4 * float(np.finfo(np.float32).eps) * float(np.abs(v).max())


# ---------------------------------------------------------------------------------------------
# The harness itself


def test_fuzz_smoke():
    """200 inputs of the random driver with a fixed seed: no finding (known ones are counted)."""
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "fuzz", "fuzz_api.py"), "--cases", "200", "--seed", "20261122"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "200 inputs" in r.stdout, r.stdout[-4000:]
    assert "0 distinct findings" in r.stdout, r.stdout[-4000:]
    assert "ok " in r.stdout  # some calls succeeded and were checked


def test_a_huge_int_for_a_float_is_refused_by_name_everywhere():
    """Found by the 30-minute atheris run: segment_reduce(empty=10**400) raised a bare
    OverflowError from float(); the attacks' and Flower's number checks had the same gap."""
    refused_by_aggkit(lambda: aggkit.monoid.segment_reduce(X, "sum", ptr=[0, 3], empty=10**400), "empty")
    refused_by_aggkit(lambda: aggkit.attacks.SignFlip(scale=10**400), "scale")


# A float64 sum of finite values that overflows (found by rust/fuzz.rs): the average of
# [MAX, MAX/2, 0] came back as MAX, the largest value averaged, where it is MAX/2.
TOP = float(np.finfo(np.float64).max)
HUGE_WEIGHTS = [2.0**300, 0.0, 2.0**300]  # passed bit for bit; w * MAX overflows


@pytest.mark.parametrize(
    "call",
    [
        lambda x: aggkit.mean(x),
        lambda x: aggkit.mean(x, weights=HUGE_WEIGHTS),
        lambda x: aggkit.trimmed_mean(x, f=0),
        lambda x: aggkit.trimmed_mean(x, f=0, weights=HUGE_WEIGHTS),
        lambda x: aggkit.meamed(x, f=0),
        lambda x: aggkit.bulyan(x, f=0),
    ],
    ids=["mean", "weighted mean", "trimmed_mean", "weighted trimmed_mean", "meamed", "bulyan"],
)
def test_an_average_whose_float64_sum_overflows(call):
    x = np.array([[TOP, -TOP], [TOP / 2, -TOP / 2], [0.0, -0.0]])
    assert call(x).tolist() == [TOP / 2, -TOP / 2]


def test_tiny_weights_act_by_their_ratio():
    # Found by rust/fuzz.rs: with weights near 1e-130 the products w*x of values near 1e-308
    # underflowed to 0 and the weighted mean came back as the smallest value (5e-324).
    x = np.array([[5e-324], [2.2250738585072014e-308]])
    w = [5e-324, 3.295888487884983e-130]
    assert aggkit.mean(x, weights=w).tolist() == [2.2250738585072014e-308]
    assert aggkit.trimmed_mean(x, f=0, weights=w).tolist() == [2.2250738585072014e-308]


def test_a_mean_whose_compensation_overflows():
    # Found in review: the running sum stays at MAX (9e291 is below half its ulp) and only
    # adding the compensation (1.8e292) at the end overflows.
    x = np.array([[TOP], [9e291], [9e291]])
    y = aggkit.mean(x)[0]
    assert y < TOP
    assert abs(y / (TOP / 3) - 1) < 1e-15
    assert aggkit.trimmed_mean(-x, f=0)[0] == -y


def test_weights_in_range_are_used_as_given():
    # Found in review: scaling weights whose largest is 1 down by 2 rounded a subnormal weight.
    x = np.array([[0.0], [2.0**1000]])
    assert aggkit.mean(x, weights=[1.0, 1.5e-323]).tolist() == [2.0**1000 * 1.5e-323 / (1.0 + 1.5e-323)]
    assert aggkit.median(np.array([[0.0], [1.0], [2.0]]), weights=[1.0, 5e-324, 1.0]).tolist() == [0.5]
