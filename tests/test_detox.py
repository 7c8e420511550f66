"""DETOX: the vote, stage 2, presets, accounting, diagnostics, the evidence test, torch."""

from __future__ import annotations

import aggkit
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# ---------------------------------------------------------------------------------------------
# Accounting: the table of docs/algorithms.md, DETOX

TABLE = [
    (15, 3, 2, 5, 0.143, 1), (15, 3, 3, 5, 0.407, 1), (15, 3, 5, 5, 1.209, 2),
    (45, 3, 3, 15, 0.134, 1), (45, 3, 5, 15, 0.433, 2), (45, 3, 9, 15, 1.459, 4),
    (45, 5, 5, 9, 0.059, 1), (45, 5, 9, 9, 0.424, 3), (99, 3, 5, 33, 0.200, 2),
    (99, 3, 11, 33, 1.053, 5),
]  # fmt: skip


@pytest.mark.parametrize(("n", "r", "q", "groups", "expected", "f_eff"), TABLE)
def test_accounting_table(n, r, q, groups, expected, f_eff):
    assert aggkit.contiguous_groups(n, r).shape == (groups, r)
    assert aggkit.expected_corrupted_groups(n, r, q) == pytest.approx(expected, abs=5e-4)
    assert aggkit.effective_f(q, r) == f_eff


def test_expected_corrupted_groups_r3_approximation():
    # For r = 3, E[X] ~ q (q - 1) / n (docs/algorithms.md).
    assert aggkit.expected_corrupted_groups(300, 3, 10) == pytest.approx(10 * 9 / 300, rel=0.05)
    assert aggkit.expected_corrupted_groups(9, 3, 1) == 0.0  # one Byzantine cannot win a group


# ---------------------------------------------------------------------------------------------
# The vote


def redundant(rng, g, r, d, dtype=np.float64):
    """g groups of r identical honest members (group j holds vector j)."""
    base = rng.standard_normal((g, d)).astype(dtype)
    return np.repeat(base, r, axis=0), base


def test_vote_exact_semantics_and_diagnostics():
    rng = np.random.default_rng(0)
    x, _ = redundant(rng, 4, 3, 5)
    x[1] = 7.0  # group 0: one bad member, outvoted
    x[3:5] = -1.0  # group 1: two colluding Byzantine workers win
    x[6], x[7] = 1.0, 2.0  # group 2: no majority
    _, info = aggkit.detox(x, q=3, buckets=3, inner="mean", outer="median", return_info=True)
    np.testing.assert_array_equal(info.winners[:, 0], [0, 3, -1, 9])
    assert info.majority.tolist() == [True, True, False, True]
    assert info.suspects == [
        1,
        5,
    ]  # outvoted members (5 is honest: its group was taken); group 2 has no winner to disagree with
    np.testing.assert_array_equal(info.kept_groups, [0, 1, 3])  # group 2 dropped


def test_signed_zeros_are_equal_and_nan_equals_nothing():
    x = np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0], [np.nan, 1.0], [np.nan, 1.0], [np.nan, 1.0]])
    _, info = aggkit.detox(x, q=0, outer="median", return_info=True, no_majority="drop")
    np.testing.assert_array_equal(info.winners[:, 0], [0, -1])  # NaN members never agree


def test_no_majority_policies():
    x = np.array([[1.0, 5.0], [2.0, 6.0], [3.0, 4.0], [9.0, 9.0], [9.0, 9.0], [0.0, 0.0]])
    # Group 0 has no majority; group 1's winner is [9, 9].
    with pytest.raises(aggkit.NoMajorityError, match=r"groups \[0\]") as e:
        aggkit.detox(x, q=0, no_majority="raise")
    assert e.value.groups == [0]
    y, info = aggkit.detox(x, q=0, no_majority="median", outer="median", buckets=1, return_info=True)
    np.testing.assert_array_equal(y, [(2.0 + 9.0) / 2, (5.0 + 9.0) / 2])  # mean of [median of group 0, 9]
    np.testing.assert_array_equal(info.kept_groups, [0, 1])
    # The reference's Boyer-Moore without verification: group 0 returns its last member.
    y, info = aggkit.detox(x, q=0, no_majority="reference", buckets=1, return_info=True)
    assert info.winners[0, 0] == 2
    np.testing.assert_array_equal(y, [(3.0 + 9.0) / 2, (4.0 + 9.0) / 2])
    y = aggkit.detox(x, q=0, buckets=1)  # drop: only group 1 remains
    np.testing.assert_array_equal(y, [9.0, 9.0])


def test_per_segment_vote_like_the_reference_per_layer():
    # Layer A = column 0, layer B = columns 1-2: a different member group wins each layer.
    x = np.array([[1.0, 7.0, 7.0], [1.0, 5.0, 5.0], [3.0, 5.0, 5.0]])
    with pytest.raises(aggkit.TooFewInputsError, match="majority"):
        aggkit.detox(x, q=0)  # no member wins the whole vector
    y, info = aggkit.detox(x, q=0, segments=[1], return_info=True, outer="median")
    np.testing.assert_array_equal(info.winners, [[0, 1]])
    np.testing.assert_array_equal(y, [1.0, 5.0, 5.0])


def test_approx_vote():
    rng = np.random.default_rng(1)
    x, base = redundant(rng, 3, 3, 4)
    x = x + rng.normal(scale=1e-9, size=x.shape)  # non-deterministic kernels: tiny differences
    with pytest.raises(aggkit.TooFewInputsError, match="at least one group with a majority"):
        aggkit.detox(x, q=0)
    y = aggkit.detox(x, q=0, vote="approx", atol=1e-6, rtol=0.0, outer="median", buckets=1)
    np.testing.assert_allclose(y, base.mean(axis=0), atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Stage 2, presets, properties


def test_stage2_median_of_means_with_explicit_rng():
    rng = np.random.default_rng(2)
    x, base = redundant(rng, 9, 3, 6)
    y, info = aggkit.detox(x, q=2, buckets=3, rng=5, return_info=True)
    assert sorted(np.concatenate(info.buckets).tolist()) == list(range(9))
    assert [len(b) for b in info.buckets] == [3, 3, 3]
    means = [aggkit.mean(base[b]) for b in info.buckets]
    np.testing.assert_array_equal(y, aggkit.median(np.stack(means)))
    y2, _ = aggkit.detox(x, q=2, buckets=3, rng=5, return_info=True)  # reproducible
    np.testing.assert_array_equal(y, y2)
    # Default b = 2 f_eff + 1 = 3 (q = 2, r = 3 -> f_eff = 1).
    assert len(aggkit.detox(x, q=2, return_info=True)[1].buckets) == 3


def test_presets_match_their_definitions():
    rng = np.random.default_rng(3)
    x, base = redundant(rng, 14, 3, 5)
    f_eff = aggkit.effective_f(2, 3)
    # detox_multikrum: 2 buckets, Multi-Krum(f=f_eff, m=size-f_eff-2) inside, mean outside.
    y, info = aggkit.detox_multikrum(x, q=2, return_info=True)
    parts = [aggkit.multi_krum(base[b], f=f_eff, m=len(b) - f_eff - 2) for b in info.buckets]
    np.testing.assert_allclose(y, np.mean(parts, axis=0), rtol=1e-12)
    assert len(info.selected_groups) == sum(len(b) - f_eff - 2 for b in info.buckets)
    # detox_bulyan: Krum-score selection of g - f_eff - 2, then trimmed mean by f_eff.
    y, info = aggkit.detox_bulyan(x, q=2, return_info=True)
    sel = info.selected_groups
    assert len(sel) == 14 - f_eff - 2
    np.testing.assert_allclose(y, aggkit.trimmed_mean(base[sel], f=f_eff), rtol=1e-12)
    # detox_median is the default composition.
    np.testing.assert_array_equal(aggkit.detox_median(x, q=2), aggkit.detox(x, q=2))


@given(st.data())
def test_properties(data):
    g = data.draw(st.integers(1, 7))
    d = data.draw(st.integers(1, 4))
    base = data.draw(hnp.arrays(np.float64, (g, d), elements=st.floats(-1e3, 1e3, allow_subnormal=False)))
    x = np.repeat(base, 3, axis=0)
    # Unanimity: every worker sends v -> v (to 1 ulp: the float64 bucket mean divides a
    # compensated sum, as aggkit.mean does).
    v = base[0]
    np.testing.assert_array_max_ulp(aggkit.detox(np.tile(v, (3 * g, 1)), q=0), v, maxulp=1)
    # Permuting groups, and members within a group, does not change the winners' set; with b = g
    # buckets (one winner each) and the median outside, the result is permutation invariant.
    perm = data.draw(st.permutations(range(g)))
    xp = np.repeat(base[list(perm)], 3, axis=0)
    np.testing.assert_array_equal(aggkit.detox(xp, q=0, buckets=g), aggkit.detox(x, q=0, buckets=g))
    # Bounded influence: q Byzantine workers, at most f_eff groups taken, the median of the
    # winners stays within the honest winners' range per coordinate.
    q = data.draw(st.integers(0, max(0, (g - 1) // 2) * 2))
    f_eff = aggkit.effective_f(q, 3)
    if g < 2 * f_eff + 1:
        return
    bad = np.array(
        data.draw(st.lists(st.integers(0, 3 * g - 1), min_size=q, max_size=q, unique=True)), dtype=int
    )
    xb = x.copy()
    xb[bad] = 1e30  # colluding: identical junk
    y = aggkit.detox(xb, q=q, buckets=g)
    groups_hit = {int(b) // 3 for b in bad if (np.isin(np.arange(3) + 3 * (int(b) // 3), bad)).sum() >= 2}
    honest = np.delete(base, list(groups_hit), axis=0)
    assert (y >= honest.min(axis=0)).all()
    assert (y <= honest.max(axis=0)).all()


def test_bad_input():
    x = np.zeros((9, 2))
    bad = [
        (lambda: aggkit.detox(np.zeros((8, 2)), q=0), aggkit.InvalidParameterError, "multiple of r"),
        (lambda: aggkit.detox(x, q=0, r=2), aggkit.InvalidParameterError, "odd"),
        (lambda: aggkit.detox(x, q=-1), aggkit.InvalidParameterError, "q must be >= 0"),
        (lambda: aggkit.detox(x, q=3, buckets=2), aggkit.TooFewInputsError, "b >= 2 f_eff \\+ 1"),
        (lambda: aggkit.detox(x, q=3, outer="mean"), aggkit.InvalidParameterError, "outer mean tolerates no"),
        (lambda: aggkit.detox(x, q=0, buckets=4), aggkit.InvalidParameterError, "1 <= b <= g'"),
        (lambda: aggkit.detox(x, q=0, groups="random"), aggkit.InvalidParameterError, "needs rng"),
        (lambda: aggkit.detox(x, q=0, groups=[[0, 1, 2], [3, 4, 5], [6, 7, 7]]), aggkit.InvalidParameterError,
         "exactly once"),
        (lambda: aggkit.detox(x, q=0, vote="fuzzy"), aggkit.InvalidParameterError, "vote"),
        (lambda: aggkit.detox(x, q=0, no_majority="ignore"), aggkit.InvalidParameterError, "no_majority"),
        (lambda: aggkit.detox(x, q=0, atol=-1.0), aggkit.InvalidParameterError, "atol"),
        (lambda: aggkit.detox_multikrum(np.zeros((12, 2)), q=2), aggkit.TooFewInputsError, "each bucket"),
        (lambda: aggkit.detox_bulyan(np.zeros((12, 2)), q=2), aggkit.TooFewInputsError, "Bulyan"),
        (lambda: aggkit.detox(x, q=0.5), TypeError, "q must be an int"),
    ]  # fmt: skip
    for fn, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            fn()


def test_groups_helpers_and_random_assignment():
    g = aggkit.random_groups(12, 3, 7)
    assert sorted(g.ravel().tolist()) == list(range(12))
    np.testing.assert_array_equal(g, aggkit.random_groups(12, 3, np.random.default_rng(7)))
    a = aggkit.data_assignment(g, 12)
    for j, members in enumerate(g):
        assert (a[members] == j).all()
    rng = np.random.default_rng(4)
    base = rng.standard_normal((4, 3))
    x = np.empty((12, 3))
    x[g.ravel()] = np.repeat(base, 3, axis=0)  # members of a random group share its data
    y, info = aggkit.detox(x, q=0, groups="random", rng=7, buckets=4, return_info=True)
    np.testing.assert_array_equal(info.groups, g)
    np.testing.assert_array_equal(y, aggkit.median(base))


def test_rule_object_and_registry():
    r = aggkit.rule("detox", q=2)
    assert r == aggkit.DETOX(q=2)
    assert "q=2" in repr(r)
    rng = np.random.default_rng(5)
    x, _ = redundant(rng, 5, 3, 3)
    np.testing.assert_array_equal(r(x), aggkit.detox(x, q=2))


# ---------------------------------------------------------------------------------------------
# Evidence: r-redundant training rounds with Byzantine workers


@pytest.mark.parametrize("attack", ["sign_flip", "constant", "alie"])
def test_detox_median_resists_the_pull_that_moves_the_plain_median(attack):
    """20 rounds of r = 3 redundant training: 45 workers, q = 9 Byzantine (a random set each
    round, colluding: identical junk), groups redrawn at random each round (DETOX's premise:
    workers cannot choose their group). Honest members of a group share a shard gradient.

    The pull of a rule is how far the Byzantine workers move its output from what it returns
    on the same round without them: DETOX + median-of-means is pulled less than half as far
    as the coordinate-wise median over all 45 workers (measured: 0.46-0.66x over these
    attacks; noise of the shard gradients affects both alike and cancels in the pull).
    """
    rng = np.random.default_rng(6)
    n, r, q, d = 45, 3, 9, 200
    g_true = rng.normal(size=d)
    pull_detox, pull_median = [], []
    for _ in range(20):
        groups = aggkit.random_groups(n, r, rng)
        shard = g_true + 0.5 * rng.normal(size=(n // r, d))
        clean = np.empty((n, d))
        clean[groups.ravel()] = np.repeat(shard, r, axis=0)
        x = clean.copy()
        byz = rng.choice(n, q, replace=False)
        junk = {
            "sign_flip": -100 * shard.mean(axis=0),  # the reference's rev_grad
            "constant": np.full(d, -100.0),  # the reference's constant
            "alie": clean.mean(axis=0) + clean.std(axis=0),  # the reference's ALIE, z = 1
        }[attack]
        x[byz] = junk
        pull_detox.append(
            np.linalg.norm(
                aggkit.detox_median(x, q=q, groups=groups) - aggkit.detox_median(clean, q=q, groups=groups)
            )
        )
        pull_median.append(np.linalg.norm(aggkit.median(x) - aggkit.median(clean)))
    assert np.mean(pull_detox) < 0.75 * np.mean(pull_median), (np.mean(pull_detox), np.mean(pull_median))
    if attack != "alie":  # far junk: the vote and the outer median leave almost nothing of it
        assert np.mean(pull_detox) < 0.05 * np.linalg.norm(junk - shard.mean(axis=0))


def test_worst_case_placement_is_what_effective_f_bounds():
    """An adversary that picks groups takes f_eff = floor(q / 2) winners with r = 3; stage 2
    with b >= 2 f_eff + 1 still bounds their influence to the honest winners' range."""
    rng = np.random.default_rng(8)
    n, r, q, d = 45, 3, 9, 50
    shard = rng.normal(size=(n // r, d))
    x = np.repeat(shard, r, axis=0)
    groups = aggkit.contiguous_groups(n, r)
    byz = np.concatenate([groups[j, :2] for j in range(4)] + [groups[4, :1]])
    x[byz] = 1e6
    y, info = aggkit.detox_median(x, q=q, buckets=15, return_info=True)
    assert (info.winners[:4, 0] == groups[:4, 0]).all()  # 4 = f_eff groups taken
    honest = shard[4:]
    assert (y >= honest.min(axis=0)).all()
    assert (y <= honest.max(axis=0)).all()


# ---------------------------------------------------------------------------------------------
# torch


def test_torch_op_module_and_gradient():
    torch = pytest.importorskip("torch")
    import aggkit.torch as at
    from aggkit.torch.nn import DETOX

    assert hasattr(torch.ops.aggkit, "detox")
    rng = np.random.default_rng(7)
    x, _ = redundant(rng, 5, 3, 4)
    x[0:2] = 50.0
    t = torch.tensor(x, requires_grad=True)
    y, info = at.detox(t, q=2, return_info=True)
    expected, info_np = aggkit.detox(x, q=2, return_info=True)
    assert torch.equal(y.detach(), torch.from_numpy(expected))
    np.testing.assert_array_equal(info.winners, info_np.winners)
    with at.force_native():
        y_native, info_native = at.detox(t, q=2, return_info=True)
    np.testing.assert_array_equal(info_native.winners, info_np.winners)
    np.testing.assert_array_equal(info_native.suspects, info_np.suspects)
    assert torch.equal(y_native, y)
    y.sum().backward()
    winners = set(info.winners.ravel().tolist())
    touched = set(torch.nonzero(t.grad.abs().sum(dim=1)).ravel().tolist())
    assert touched <= winners  # the gradient reaches winning members only
    assert torch.equal(DETOX(q=2)(torch.tensor(x)), y.detach())
    assert "q=2" in repr(DETOX(q=2))
    with pytest.raises(TypeError, match="tensor"):
        at.detox(x, q=0)


# Values with exact ties, signed zeros, NaN, ±inf and near misses for the approx vote.
_VOTE_VALUES = st.sampled_from([0.0, -0.0, 1.0, 1.0 + 1e-7, 1.0 + 2e-5, 2.0, -3.0, np.nan, np.inf, -np.inf])


@st.composite
def _votes(draw):
    r = draw(st.sampled_from([1, 3, 5]))
    g = draw(st.integers(1, 4))
    d = draw(st.integers(0, 7))
    base = draw(hnp.arrays(np.float64, (g, d), elements=_VOTE_VALUES))
    x = np.repeat(base, r, axis=0)
    noise = draw(hnp.arrays(np.float64, (g * r, d), elements=_VOTE_VALUES))
    mask = draw(hnp.arrays(np.bool_, (g * r, d)))
    x = np.where(mask, noise, x)
    cuts = sorted(draw(st.lists(st.integers(0, d), max_size=3)))
    groups = draw(st.permutations(range(g * r)))
    mode = draw(st.sampled_from(["exact", "approx", "reference"]))
    dtype = draw(st.sampled_from(["float32", "float64", "float16", "bfloat16"]))
    return x, r, [0, *cuts, d], np.asarray(groups, dtype=np.int32), mode, dtype


@given(_votes(), st.sampled_from([(0.0, 1e-5), (1e-6, 0.0), (0.5, 0.5)]))
def test_torch_native_vote_matches_the_core(case, tol):
    # The device vote (blocks of columns on the device, one table of decisions to the host)
    # against the Rust vote on the same values: every mode, NaN, signed zeros, empty segments.
    torch = pytest.importorskip("torch")
    import aggkit.torch as at

    op = torch.ops.aggkit.detox
    x, r, segs, groups, mode, dtype = case
    t = torch.tensor(x).to(getattr(torch, dtype))
    gt = torch.from_numpy(groups)
    want = op(t, gt, r, segs, mode, *tol)
    with at.force_native():
        got = op(t, gt, r, segs, mode, *tol)
    assert torch.equal(got[0], want[0]), (got[0], want[0])
    assert torch.equal(got[1], want[1]), (got[1], want[1])


def test_torch_native_vote_bounds_its_temporaries(monkeypatch):
    # Blocks of columns: a block size of a few elements gives the one-block answer.
    torch = pytest.importorskip("torch")
    import importlib

    import aggkit.torch as at

    D = importlib.import_module("aggkit.torch.detox")
    rng = np.random.default_rng(3)
    x, _ = redundant(rng, 3, 3, 40)
    x[1, 17] = 9.0
    x[6, 30:], x[7, 30:] = 1.0, 2.0
    t, gt = torch.tensor(x), torch.arange(9, dtype=torch.int32)
    with at.force_native():
        whole = D.detox_op(t, gt, 3, [0, 17, 18, 40], "approx", 0.0, 1e-5)
        monkeypatch.setattr(D, "_VOTE_BLOCK", 9 * 3)
        blocks = D.detox_op(t, gt, 3, [0, 17, 18, 40], "approx", 0.0, 1e-5)
    assert torch.equal(whole[0], blocks[0])
    assert torch.equal(whole[1], blocks[1])
    assert whole[0].tolist() == [0, 0, 0, 3, 3, 3, 6, 6, -1]  # (group, segment)
    assert whole[1].tolist() == [True, False, True] + [True] * 6  # no winner: no disagreement
