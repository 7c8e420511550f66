"""Bad input: every case raises a clear error that states the condition with the values."""

import aggkit
import numpy as np
import pytest
from producers import DLPackOnly

RULES = [
    lambda x, **kw: aggkit.mean(x, **kw),
    lambda x, **kw: aggkit.median(x, **kw),
    lambda x, **kw: aggkit.trimmed_mean(x, f=0, **kw),
    lambda x, **kw: aggkit.krum(x, f=0, **kw),
    lambda x, **kw: aggkit.multi_krum(x, f=0, **kw),
]
rules = pytest.mark.parametrize("rule", RULES, ids=["mean", "median", "trimmed_mean", "krum", "multi_krum"])


def test_errors_are_value_errors():
    assert issubclass(aggkit.AggkitError, ValueError)
    for e in (
        aggkit.EmptyInputError,
        aggkit.ShapeError,
        aggkit.TooFewInputsError,
        aggkit.InvalidParameterError,
        aggkit.NonFiniteError,
    ):
        assert issubclass(e, aggkit.AggkitError)


@rules
def test_empty(rule):
    with pytest.raises(aggkit.EmptyInputError, match="n=0"):
        rule(np.zeros((0, 3)))
    with pytest.raises(aggkit.EmptyInputError, match="n=0"):
        rule([])


@rules
def test_ragged_sequence(rule):
    with pytest.raises(aggkit.ShapeError, match=r"x\[0\] has shape \(3,\), x\[2\] has shape \(2,\)"):
        rule([np.zeros(3), np.zeros(3), np.zeros(2)])


@rules
def test_zero_dim_and_non_arrays(rule):
    with pytest.raises(aggkit.ShapeError, match="0-d"):
        rule(np.float64(1.0))
    with pytest.raises(TypeError, match="array"):
        rule("abc")
    with pytest.raises(TypeError, match="array"):
        rule(object())


@rules
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_, np.complex64, object])
def test_non_float_dtypes_raise_type_error(rule, dtype):
    with pytest.raises(TypeError, match="floating-point"):
        rule(np.ones((5, 2), dtype=dtype))


@rules
def test_mixed_dtypes_in_a_sequence(rule):
    with pytest.raises(TypeError, match="same dtype"):
        rule([np.zeros(2, np.float32), np.zeros(2, np.float64), np.zeros(2, np.float32)])


@rules
def test_bad_policy(rule):
    with pytest.raises(aggkit.InvalidParameterError, match="nonfinite must be one of"):
        rule(np.ones((5, 2)), nonfinite="ignore")


@rules
def test_noncontiguous_fortran_strided_and_readonly_inputs(rule, rng):
    base = rng.standard_normal((7, 12))
    expected = rule(np.ascontiguousarray(base[:, ::2]))
    for x in (base[:, ::2], np.asfortranarray(base[:, ::2]), base[::-1][::-1, ::2]):
        np.testing.assert_array_equal(rule(x), expected)
    rows = np.ascontiguousarray(base[::2])
    np.testing.assert_array_equal(rule(base[::2]), rule(rows))  # row-strided view: no copy needed
    ro = base.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(rule(ro), rule(base))
    be = base.astype(">f8")
    np.testing.assert_array_equal(rule(be), rule(base))


def test_f_validation():
    x = np.ones((5, 2))
    with pytest.raises(aggkit.InvalidParameterError, match="f must be >= 0, got f=-1"):
        aggkit.trimmed_mean(x, f=-1)
    with pytest.raises(TypeError, match="f must be an int"):
        aggkit.krum(x, f=1.0)
    with pytest.raises(TypeError, match="f must be an int"):
        aggkit.krum(x, f=True)
    with pytest.raises(TypeError):
        aggkit.krum(x)  # f is required and keyword-only
    with pytest.raises(TypeError):
        aggkit.trimmed_mean(x, 1)
    with pytest.raises(aggkit.TooFewInputsError, match=r"trimmed mean needs n >= 2f \+ 1, got n=5, f=3"):
        aggkit.trimmed_mean(x, f=3)


HUGE_F = [2**62 + 1, 2**63 - 1, 2**63, 2**64 - 1]


@pytest.mark.parametrize("f", HUGE_F)
def test_f_near_the_integer_limits_is_refused_by_the_core(f):
    """The core's own checks of ``n >= a*f + b`` cannot wrap around (the Python layer checks
    first, but the core is callable on its own and must not rely on it)."""
    from aggkit import _core

    x = np.ones((7, 3), np.float32)
    dist = _core.pairwise_sq_distances(x)
    calls = {
        "krum": lambda: _core.krum(x, f, "raise"),
        "multi_krum": lambda: _core.multi_krum(x, f, 2, "raise"),
        "krum_select": lambda: _core.krum_select(dist, f, 2, "raise"),
        "trimmed_mean": lambda: _core.trimmed_mean(x, f, "raise", False),
        "weighted_trimmed_mean": lambda: _core.weighted_trimmed_mean(x, np.ones(7), f, "raise", False),
        "meamed": lambda: _core.meamed(x, f, None, "raise", False),
        "bulyan_select": lambda: _core.bulyan_select(dist, f, False),
        "mda_select": lambda: _core.mda_select(dist, f, 1000),
    }
    for call in calls.values():
        with pytest.raises(aggkit.TooFewInputsError, match=f"needs n >= [24]f \\+ [13], got n=7, f={f}"):
            call()
    for rule in (aggkit.krum, aggkit.trimmed_mean, aggkit.meamed, aggkit.bulyan, aggkit.mda):
        with pytest.raises(aggkit.TooFewInputsError, match=f"f={f}"):
            rule(x, f=f)


def test_options_and_registry_errors():
    with pytest.raises(aggkit.InvalidParameterError, match="even must be one of"):
        aggkit.median(np.ones((2, 2)), even="middle")
    with pytest.raises(aggkit.InvalidParameterError, match="unknown rule 'bulyna'"):
        aggkit.rule("bulyna", f=1)
    with pytest.raises(
        aggkit.InvalidParameterError, match=r"median: unknown parameters \['f'\]; it takes even, nonfinite"
    ):
        aggkit.rule("median", f=1)
    with pytest.raises(aggkit.InvalidParameterError, match=r"krum: the parameters \['f'\] have no default"):
        aggkit.rule("krum")
    with pytest.raises(aggkit.InvalidParameterError, match=r"nnm: the parameters \['f'\] have no default"):
        aggkit.rule("nnm>trimmed_mean")
    with pytest.raises(aggkit.InvalidParameterError, match="cannot be applied"):
        aggkit.rule(aggkit.Median(), even="lower")
    with pytest.raises(aggkit.InvalidParameterError, match="f must be >= 0"):
        aggkit.Krum(f=-2)
    with pytest.raises(aggkit.InvalidParameterError, match="n must be between 1 and"):
        aggkit.set_num_threads(0)


def test_dlpack_and_array_like_inputs():
    class ArrayLike:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    x = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(aggkit.median(ArrayLike(x)), aggkit.median(x))

    np.testing.assert_array_equal(aggkit.median(DLPackOnly(x)), aggkit.median(x))


def test_rule_specs_round_trip_and_refuse_anything_else():
    from aggkit.registry import from_spec, to_spec

    rules = [
        aggkit.rule("nnm>trimmed_mean", f=2),
        aggkit.DETOX(q=3, outer=aggkit.Krum(f=0)),
        aggkit.CenteredClipping(tau=1e308, iters=2),
        aggkit.GeometricMedian(nu=5e-324),
    ]
    for r in rules:
        assert from_spec(to_spec(r)) == r
    bad = [
        "not json",
        "[" * 100_000 + "]" * 100_000,
        '{"name": "median"}',
        '{"name": ["median"], "params": {}}',
        '{"name": "median", "params": []}',
        '{"name": "median", "params": {}, "extra": 1}',
        '{"name": "os.system", "params": {}}',
        '{"name": "nnm", "params": {"f": 1}}',  # a pre-aggregator is not a rule
        '{"name": "median", "params": {"foo": 1}}',
        '{"name": "pipeline", "params": {"stages": ' + "[" * 40 + "]" * 40 + "}}",
    ]
    for spec in bad:
        with pytest.raises(aggkit.InvalidParameterError):
            from_spec(spec)
