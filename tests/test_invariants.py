"""Properties every rule promises, driven by the registry: a new rule is tested once registered.

Each case builds a rule object for a given ``(n, f)``; ``robust`` says how far the rule bounds
the influence of ``f`` arbitrary inputs (per coordinate, or by selecting an honest input).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aggkit
import numpy as np
import pytest
from conftest import SIMD_LEVELS
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import ANY, FAR, junk, matrices


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[int], aggkit.Rule]  # n -> rule (with the largest f the rule allows)
    f: Callable[[int], int]
    min_n: int
    # "coordinate": stays in the honest range per coordinate; "widened": within that range widened
    # by its width on each side; "diameter": widened by the honest inputs' Euclidean diameter;
    # "select": returns an honest row.
    robust: str | None
    averaging: bool  # output averages values (rounding) rather than picking one
    # Whether the generic properties below apply. DETOX does not fit them: its groups are
    # positional (no permutation invariance) and random rows never reach a group majority; its
    # own properties are in tests/test_detox.py.
    generic: bool = True


CASES = {
    "mean": Case("mean", lambda n: aggkit.Mean(), lambda n: 0, 1, None, True),
    "median": Case(
        "median",
        lambda n: aggkit.Median(even="lower"),
        lambda n: (n - 1) // 2,
        1,
        "coordinate",
        False,
    ),
    "trimmed_mean": Case(
        "trimmed_mean",
        lambda n: aggkit.TrimmedMean(f=(n - 1) // 2),
        lambda n: (n - 1) // 2,
        1,
        "coordinate",
        True,
    ),
    "krum": Case("krum", lambda n: aggkit.Krum(f=(n - 3) // 2), lambda n: (n - 3) // 2, 3, "select", False),
    "multi_krum": Case(
        "multi_krum",
        lambda n: aggkit.MultiKrum(f=(n - 3) // 2),
        lambda n: (n - 3) // 2,
        3,
        "coordinate",
        True,
    ),
    "geometric_median": Case(
        "geometric_median", lambda n: aggkit.GeometricMedian(), lambda n: 0, 1, None, True, generic=False
    ),
    "detox": Case("detox", lambda n: aggkit.DETOX(q=0), lambda n: 0, 3, None, True, generic=False),
    "meamed": Case(
        "meamed", lambda n: aggkit.Meamed(f=(n - 1) // 2), lambda n: (n - 1) // 2, 1, "widened", True
    ),
    "bulyan": Case(
        "bulyan", lambda n: aggkit.Bulyan(f=(n - 3) // 4), lambda n: (n - 3) // 4, 3, "widened", True
    ),
    "mda": Case("mda", lambda n: aggkit.MDA(f=(n - 1) // 2), lambda n: (n - 1) // 2, 1, "diameter", True),
    "smea": Case(
        "smea", lambda n: aggkit.SMEA(f=min((n - 1) // 2, 3)), lambda n: min((n - 1) // 2, 3), 1, None, True
    ),
    "caf": Case("caf", lambda n: aggkit.CAF(f=(n - 1) // 2), lambda n: (n - 1) // 2, 1, None, True),
    "pipeline": Case(
        "pipeline",
        lambda n: aggkit.rule("nnm>trimmed_mean", f=(n - 1) // 2),
        lambda n: (n - 1) // 2,
        1,
        None,
        True,
    ),
    # Not generic: MoNNA trusts a positional input (no permutation invariance); centered clipping
    # has an absolute radius tau (no scale equivariance); the sign vote is scale-invariant, not
    # equivariant. Their properties are in tests/test_family.py.
    "monna": Case(
        "monna", lambda n: aggkit.MoNNA(f=(n - 1) // 2), lambda n: (n - 1) // 2, 1, None, True, generic=False
    ),
    "centered_clipping": Case(
        "centered_clipping", lambda n: aggkit.CenteredClipping(), lambda n: 0, 1, None, True, generic=False
    ),
    "sign_vote": Case("sign_vote", lambda n: aggkit.SignVote(), lambda n: 0, 1, None, False, generic=False),
    "nnm_trimmed_mean": Case(
        "nnm_trimmed_mean",
        lambda n: aggkit.NNMTrimmedMean(f=(n - 1) // 2),
        lambda n: (n - 1) // 2,
        1,
        None,
        True,
    ),
    # Not generic either: DnC draws random coordinate subsets and breaks score ties by index;
    # FoolsGold's weights react to similarity, not position (identical inputs get weight 0, so
    # unanimity fails by design); FLTrust needs the server's update; the other presets carry
    # centered clipping's absolute radius or bucketing's random draws. Their properties are in
    # tests/test_dnc.py, test_foolsgold.py, test_fltrust.py and test_presets.py.
    "dnc": Case(
        "dnc",
        lambda n: aggkit.DnC(f=(n - 1) // 2, seed=0),
        lambda n: (n - 1) // 2,
        1,
        None,
        True,
        generic=False,
    ),
    "foolsgold": Case("foolsgold", lambda n: aggkit.FoolsGold(), lambda n: 0, 1, None, True, generic=False),
    "fltrust": Case("fltrust", lambda n: aggkit.FLTrust(), lambda n: 0, 1, None, True, generic=False),
    "nnm_cc": Case(
        "nnm_cc", lambda n: aggkit.NNMCC(f=(n - 1) // 2), lambda n: (n - 1) // 2, 1, None, True, generic=False
    ),
    "bucketing_cc": Case(
        "bucketing_cc", lambda n: aggkit.BucketingCC(seed=0), lambda n: 0, 1, None, True, generic=False
    ),
}

# Rules that choose inputs by their pairwise distances.
DISTANCE = {"krum", "multi_krum", "bulyan", "mda", "smea", "caf", "pipeline", "nnm_trimmed_mean"}

# Rules whose output sums whole inputs in input order: a permutation changes the rounding.
ROW_SUMS = {"mean", "mda", "smea", "caf", "pipeline", "nnm_trimmed_mean"}


def test_every_registered_rule_has_a_case():
    assert sorted(CASES) == aggkit.list_rules()


GENERIC = {k: c for k, c in CASES.items() if c.generic}


def _distinct_distances(x: np.ndarray) -> bool:
    """No two pairs of inputs at the same distance (subset choices then never tie)."""
    d = aggkit._core.pairwise_sq_distances(np.ascontiguousarray(x))
    iu = np.triu_indices(len(x), 1)
    vals = d[iu]
    return len(set(vals.tolist())) == len(vals) and bool(np.all(vals > 0))


def _unique_min_diameter(x: np.ndarray, f: int) -> bool:
    import itertools

    d = aggkit._core.pairwise_sq_distances(np.ascontiguousarray(x))
    n = len(x)
    diams = sorted(
        max((d[i, j] for i, j in itertools.combinations(s, 2)), default=0.0)
        for s in itertools.combinations(range(n), n - f)
    )
    return len(diams) == 1 or diams[0] < diams[1]


def _unique_min_eigenvalue(x: np.ndarray, f: int) -> bool:
    import itertools

    xd = x.astype(np.float64)
    n = len(xd)
    tops = []
    for s in itertools.combinations(range(n), n - f):
        c = xd[list(s)] - xd[list(s)].mean(axis=0)
        tops.append(np.linalg.eigvalsh(c.T @ c)[-1])
    tops.sort()
    return len(tops) == 1 or tops[0] < tops[1] * (1 - 1e-6)


def _equidistant_pair(x: np.ndarray, tol: float = 0.0) -> bool:
    """Whether some column has two different values at the same distance (within ``tol``) from its median."""
    med = np.median(x.astype(np.float64), axis=0)
    for j in range(x.shape[1]):
        col = x[:, j].astype(np.float64)
        dist = np.abs(col - med[j])
        for a in range(len(col)):
            for b in range(a + 1, len(col)):
                if col[a] != col[b] and abs(dist[a] - dist[b]) <= tol:
                    return True
    return False


rules = pytest.mark.parametrize("case", list(GENERIC.values()), ids=list(GENERIC))


def draw_input(data, case, **kw):
    x = data.draw(matrices(min_n=case.min_n, **kw))
    return x, case.make(x.shape[0])


@rules
# The assumptions below (tie-free scores and distances) reject many small draws; how many the
# health check sees first depends on what ran earlier in the session (a README example before
# this test tripped it), so the filter check is off here and the assumptions stay.
@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_permutation_invariance(case, data):
    x, rule = draw_input(data, case, ties=False)
    if "krum" in case.name:  # equal scores are broken by input index, by definition
        _, sel = aggkit.krum(x, f=rule.f, return_selection=True)
        assume(len(set(sel.scores.tolist())) == x.shape[0])
    perm = data.draw(st.permutations(range(x.shape[0])))
    if case.name in {"mda", "smea", "caf", "pipeline", "nnm_trimmed_mean"}:  # equal distances: ties by index
        assume(_distinct_distances(x))
    if case.name == "mda":  # subsets sharing the smallest diameter: the first by index wins
        assume(_unique_min_diameter(x, rule.f))
    if case.name == "smea":  # top eigenvalues equal within rounding: the first subset wins
        assume(_unique_min_eigenvalue(x, rule.f))
    if case.name == "meamed":  # two values equally far from the median: the lower row's is kept
        assume(not _equidistant_pair(x))
    if case.name == "bulyan":  # each Krum round breaks equal scores (k = 1: always) by index
        _, sa = rule.aggregate(x)
        _, sb = rule.aggregate(x[list(perm)])
        assume(sorted(sa.indices.tolist()) == sorted(perm[i] for i in sb.indices.tolist()))
    a, b = rule(x), rule(x[list(perm)])
    if case.name == "caf":  # weights from eigenvectors: permuted LAPACK input rounds differently
        np.testing.assert_allclose(a, b, rtol=1e-6 if x.dtype == np.float32 else 1e-10, atol=0)
    elif case.name in ROW_SUMS:  # float64 accumulation in row order: equal up to the last rounding
        eps = float(np.finfo(x.dtype).eps)  # (plus cancellation: eps of the largest term)
        np.testing.assert_allclose(
            a, b, rtol=1e-6 if x.dtype == np.float32 else 1e-14, atol=eps * np.abs(x).max()
        )
    else:
        np.testing.assert_array_equal(a, b)


@rules
@given(data=st.data())
def test_scaling_by_powers_of_two_is_exact(case, data):
    x, rule = draw_input(data, case)
    # Exact only away from underflow: an average of tiny values can be subnormal (fewer bits).
    assume(np.all((x == 0) | (np.abs(x) >= np.finfo(x.dtype).tiny * 1024)))
    k = data.draw(st.sampled_from([-4.0, -2.0, 0.5, 2.0, 8.0]))
    if k < 0 and case.name == "median":  # negating swaps the lower and upper middle
        rule = aggkit.Median(even="mean")
    if k < 0 and case.name in ("meamed", "bulyan"):  # equidistant values: the lower row's is kept
        assume(not _equidistant_pair(x))
    np.testing.assert_array_equal(rule(x * x.dtype.type(k)), rule(x) * x.dtype.type(k))


@rules
@given(data=st.data())
def test_translation_equivariance(case, data):
    x, rule = draw_input(data, case, ties=False)
    c = data.draw(st.floats(-1e3, 1e3, allow_subnormal=False))
    shifted = (x + x.dtype.type(c)).astype(x.dtype)
    eps = float(np.finfo(x.dtype).eps)
    tol = 4 * eps * (np.abs(x).max() + abs(c) + 1)
    # Selections compare rounded quantities: a near-tie may flip once the shifted input is
    # rounded. The property is that, for the same choice, the output moves with the input.
    if case.name in ("krum", "multi_krum", "bulyan"):
        _, s1 = rule.aggregate(x)
        _, s2 = rule.aggregate(shifted)
        assume(s1.indices.tolist() == s2.indices.tolist())
    if case.name in ("meamed", "bulyan"):
        assume(not _equidistant_pair(x, tol) and not _equidistant_pair(shifted, tol))
    if case.name == "caf":  # weights from eigenvectors: error grows with the condition
        tol *= 100
    np.testing.assert_allclose(rule(shifted), rule(x) + c, rtol=0, atol=tol)


@rules
@given(data=st.data())
def test_unanimity(case, data):
    x, rule = draw_input(data, case)
    v = x[0]
    same = np.repeat(v[None], x.shape[0], axis=0)
    out = rule(same)
    # Bit for bit, -0.0 included: averages stay within the values averaged.
    assert np.asarray(out).tobytes() == v.tobytes(), (out, v)


ROBUST = [c for c in CASES.values() if c.robust is not None]  # the mean is the non-robust baseline


@pytest.mark.parametrize("case", ROBUST, ids=[c.name for c in ROBUST])
@given(data=st.data())
def test_bounded_influence(case, data):
    honest = data.draw(matrices(min_n=1, max_n=9, ties=False))
    h = honest.shape[0]
    # n = h + f inputs with the largest f the rule tolerates at that n.
    f = data.draw(st.integers(0, 6))
    n = h + f
    assume(n >= case.min_n and case.f(n) >= f)
    kinds = ANY if case.robust in ("coordinate", "widened", "diameter") and "krum" not in case.name else FAR
    if case.name in DISTANCE:  # squared differences below the float range are 0: no distance
        small = np.sqrt(np.finfo(honest.dtype).tiny) * 1e3
        assume(np.all((honest == 0) | (np.abs(honest) > small)))
    x = np.concatenate([honest, data.draw(junk(honest, f, kinds))])
    perm = data.draw(st.permutations(range(n)))
    x = x[list(perm)]
    rule = case.make(n)
    with np.errstate(invalid="ignore", over="ignore"):
        out = rule(x)
    if case.robust == "select":
        assert any(np.array_equal(out, r) for r in honest)
    else:
        lo, hi = honest.min(axis=0), honest.max(axis=0)
        if case.robust == "widened":
            # Meamed and Bulyan keep values near the median, which may be a Byzantine value
            # closer than a far honest one: only within the honest spread of the honest range.
            w = hi - lo
            lo, hi = lo - w, hi + w
        elif case.robust == "diameter":
            # MDA keeps a set no wider than the honest inputs (Euclidean), which holds one.
            hd = honest.astype(np.float64)
            diam = max(float(np.linalg.norm(a - b)) for a in hd for b in hd)
            lo, hi = lo - diam * (1 + 1e-6), hi + diam * (1 + 1e-6)
        assert np.all((lo <= out) & (out <= hi)), (out, lo, hi)


@rules
def test_thread_count_and_simd_level_do_not_change_bits(case, rng, threads, simd):
    x = rng.standard_normal((23, 9001)).astype(np.float32)
    x[4, ::5] = np.nan
    rule = case.make(23)
    outs = []
    for t in (1, 2, 3):
        aggkit.set_num_threads(t)
        outs.append(rule(x))
    for o in outs[1:]:
        np.testing.assert_array_equal(o.view(np.uint32), outs[0].view(np.uint32))


@rules
def test_simd_levels_agree_bitwise(case, rng):
    x = rng.standard_normal((11, 5000))
    rule = case.make(11)
    before = aggkit.simd_level()
    outs = []
    try:
        for level in SIMD_LEVELS:
            aggkit._core._set_simd_level(level)
            outs.append(rule(x))
    finally:
        aggkit._core._set_simd_level(before)
    for o in outs[1:]:
        np.testing.assert_array_equal(o.view(np.uint64), outs[0].view(np.uint64))


@rules
def test_inputs_are_never_mutated(case, rng):
    x = rng.standard_normal((9, 40)).astype(np.float32)
    x[1, 3] = np.nan
    x.flags.writeable = False
    snapshot = x.copy()
    rule = case.make(9)
    rule(x)
    rule(list(x))
    np.testing.assert_array_equal(x, snapshot)


@rules
def test_dtypes_and_shapes_are_preserved(case, rng):
    rule = case.make(7)
    for dt in (np.float16, np.float32, np.float64):
        x = rng.standard_normal((7, 3, 4)).astype(dt)
        out = rule(x)
        assert out.dtype == dt
        assert out.shape == (3, 4)
        seq = rule([x[i] for i in range(7)])
        np.testing.assert_array_equal(seq, out)
    assert rule(np.ones((7, 0))).shape == (0,)


@rules
def test_repr_eq_and_registry_roundtrip(case):
    r = case.make(9)
    assert aggkit.rule(r.name, **r.get_params()) == r
    assert eval(repr(r), {k: getattr(aggkit, k) for k in aggkit.__all__}) == r
    assert hash(r) == hash(aggkit.rule(r.name, **r.get_params()))
    assert aggkit.rule(r) is r
    with pytest.raises(AttributeError):
        r.nonfinite = "raise"


WEIGHTED = {
    "mean": lambda x, w: aggkit.mean(x, weights=w),
    "median": lambda x, w: aggkit.median(x, weights=w),
    "trimmed_mean": lambda x, w: aggkit.trimmed_mean(x, f=(len(x) - 1) // 2, weights=w),
    "multi_krum": lambda x, w: aggkit.multi_krum(x, f=0, m=max(1, len(x) - 3), weights=w),
    "geometric_median": lambda x, w: aggkit.geometric_median(x, weights=w),
}


@pytest.mark.parametrize("name", sorted(WEIGHTED))
@given(data=st.data())
def test_weights_act_by_their_ratios_at_any_scale(name, data):
    """Weights from 2**-1000 to 2**1000 times the same ratios give the same bits (sums of
    1e308 weights overflowed, products with subnormal weights lost bits)."""
    x = data.draw(matrices(min_n=3, max_n=9))
    # Exact only while every product w x stays normal: weights down to 2^-501 (smaller ones are
    # rescaled) times values down to 2^-400 (the geometric median's 1/nu included).
    assume(np.all((x == 0) | (np.abs(x) >= 2.0**-400)))
    w = data.draw(hnp.arrays(np.float64, len(x), elements=st.floats(0.5, 2.0)))
    k = data.draw(st.integers(-1000, 1000))
    call = WEIGHTED[name]
    assert np.asarray(call(x, np.ldexp(w, k))).tobytes() == np.asarray(call(x, w)).tobytes()
