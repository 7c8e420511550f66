"""aggkit.attacks: each attack's definition, its array-type handling, and its errors."""

import math
import statistics

import aggkit
import numpy as np
import pytest
from aggkit import attacks as A

H = np.array([[1.0, 2.0, -1.0], [3.0, 2.0, 0.0], [2.0, 5.0, 4.0], [6.0, -3.0, 1.0]], dtype=np.float32)


def column_stats(h):
    mean = [statistics.fmean(map(float, h[:, j])) for j in range(h.shape[1])]
    std = [statistics.stdev(map(float, h[:, j])) for j in range(h.shape[1])]
    return np.array(mean), np.array(std)


@pytest.mark.parametrize(
    ("attack", "expected"),
    [
        (A.SignFlip(), lambda mu, sd: -mu),
        (A.SignFlip(scale=100), lambda mu, sd: -100 * mu),
        (A.InnerProductManipulation(epsilon=0.1), lambda mu, sd: -0.1 * mu),
        (A.ALittleIsEnough(z=1.5), lambda mu, sd: mu - 1.5 * sd),
        (A.ALittleIsEnough(z=-1.0), lambda mu, sd: mu + sd),  # the DETOX reference's variant
        (A.LargeValues(), lambda mu, sd: np.full_like(mu, 1e6)),
        (A.Mimic(target=2), lambda mu, sd: H[2].astype(np.float64)),
    ],
)
def test_definitions(attack, expected):
    mu, sd = column_stats(H)
    y = attack(H, f=3)
    assert y.shape == (3, 3)
    assert y.dtype == np.float32
    for row in y:
        np.testing.assert_allclose(row, expected(mu, sd), rtol=1e-6, atol=1e-6)


def test_alie_default_z_is_baruch_z_max():
    # n = 10, f = 2: s = floor(10/2 + 1) - 2 = 4, z = Phi^-1((10 - 4) / 10) = Phi^-1(0.6).
    assert A.alie_z(10, 2) == pytest.approx(0.2533471031357997)
    honest = np.random.default_rng(0).standard_normal((8, 5))
    mu, sd = column_stats(honest)
    y = A.ALittleIsEnough()(honest, f=2)
    np.testing.assert_allclose(y[0], mu - A.alie_z(10, 2) * sd, rtol=1e-12)
    with pytest.raises(aggkit.InvalidParameterError, match="undefined"):
        A.alie_z(2, 0)


def test_random_attacks_are_reproducible_and_independent_per_client():
    g1 = A.Gaussian(sigma=2.0, mu=1.0)(H, f=400, rng=7)
    g2 = A.Gaussian(sigma=2.0, mu=1.0)(H, f=400, rng=7)
    np.testing.assert_array_equal(g1, g2)
    assert not np.array_equal(g1[0], g1[1])
    assert abs(float(g1.mean()) - 1.0) < 0.2
    assert abs(float(g1.std()) - 2.0) < 0.2
    y = A.NonFinite(value="inf", fraction=0.5)(np.zeros((3, 10)), f=2, rng=1)
    assert np.isposinf(y).sum(axis=1).tolist() == [5, 5]
    np.testing.assert_array_equal(np.isinf(y[0]), np.isinf(y[1]))
    assert np.isnan(A.NonFinite()(H, f=1)).all()


def test_input_is_not_modified_and_outputs_are_fresh():
    h = H.copy()
    h.setflags(write=False)
    for name in A.list_attacks():
        if name == "label_flip":
            continue
        y = A.attack(name)(h, f=2, rng=0, rule=aggkit.median)
        assert not np.shares_memory(y, h)
        y[...] = 0  # writable, and the two Byzantine rows do not alias the input
    np.testing.assert_array_equal(h, H)


def test_shapes_sequences_and_zero_f():
    x = np.arange(24, dtype=np.float64).reshape(4, 2, 3)
    y = A.SignFlip()(x, f=2)
    assert y.shape == (2, 2, 3)
    np.testing.assert_array_equal(y[1], -x.mean(axis=0))
    np.testing.assert_array_equal(A.SignFlip()(list(x), f=2), y)
    assert A.SignFlip()(x, f=0).shape == (0, 2, 3)


def test_label_flip_poisons_labels_not_updates():
    y = np.array([0, 3, 9])
    np.testing.assert_array_equal(A.LabelFlip().poison_labels(y, 10), [9, 6, 0])
    np.testing.assert_array_equal(y, [0, 3, 9])
    assert A.LabelFlip.poisons_data
    with pytest.raises(TypeError, match="poison_labels"):
        A.LabelFlip()(H, f=1)


def test_registry_and_errors():
    assert A.list_attacks() == [
        "alie", "alie_opt", "gaussian", "ipm", "ipm_opt", "label_flip", "large_values", "mimic", "min_max",
        "min_sum", "nonfinite", "sign_flip",
    ]  # fmt: skip
    assert A.attack("alie", z=2.0) == A.ALittleIsEnough(z=2.0)
    assert repr(A.attack("sign_flip", scale=3)) == "SignFlip(scale=3.0)"
    a = A.Mimic(target=1)
    assert A.attack(a) is a
    with pytest.raises(aggkit.InvalidParameterError, match="unknown attack 'nope'; known attacks: alie"):
        A.attack("nope")
    with pytest.raises(aggkit.InvalidParameterError, match="cannot be applied"):
        A.attack(a, target=2)
    bad = [
        (lambda: A.SignFlip(scale=0), aggkit.InvalidParameterError, "scale must be > 0"),
        (lambda: A.SignFlip(scale=math.inf), aggkit.InvalidParameterError, "must be finite"),
        (lambda: A.Gaussian(sigma=-1), aggkit.InvalidParameterError, "sigma must be >= 0"),
        (lambda: A.NonFinite(value="zero"), aggkit.InvalidParameterError, "'nan', 'inf' or '-inf'"),
        (lambda: A.NonFinite(fraction=0), aggkit.InvalidParameterError, r"fraction must be in \(0, 1\]"),
        (lambda: A.Mimic(target=-1), aggkit.InvalidParameterError, "target must be an int >= 0"),
        (lambda: A.Mimic(target=9)(H, f=1), aggkit.InvalidParameterError, "target must be < h"),
        (lambda: A.SignFlip()(H, f=-1), aggkit.InvalidParameterError, "f must be >= 0"),
        (lambda: A.SignFlip()(H[:0], f=1), aggkit.ShapeError, "at least one honest update"),
        (lambda: A.SignFlip()(np.float32(1.0), f=1), aggkit.ShapeError, "0-d"),
        (lambda: A.SignFlip()(np.ones((3, 2), dtype=np.int32), f=1), TypeError, "floating point"),
        (lambda: A.SignFlip(scale="big"), TypeError, "scale must be a number"),
        (lambda: A.OptimizedALIE()(H, f=1), aggkit.InvalidParameterError, "pass rule="),
        (lambda: A.OptimizedIPM()(H, f=1, rule=3), TypeError, "rule must be callable"),
        (lambda: A.OptimizedIPM(evals=0), aggkit.InvalidParameterError, "evals must be >= 1"),
        (lambda: A.OptimizedIPM(delta=-1), aggkit.InvalidParameterError, "delta must be > 0"),
        (lambda: A.MinMax(dev="l2"), aggkit.InvalidParameterError, "dev must be one of"),
        (lambda: A.MinSum(gamma=0), aggkit.InvalidParameterError, "gamma must be > 0"),
    ]
    for fn, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            fn()


def test_robust_rules_resist_what_breaks_the_mean():
    rng = np.random.default_rng(3)
    honest = (1.0 + 0.1 * rng.standard_normal((12, 50))).astype(np.float32)
    for atk in (A.LargeValues(), A.SignFlip(scale=100), A.Gaussian(sigma=100.0)):
        x = np.concatenate([honest, atk(honest, f=3, rng=0)])
        assert np.abs(aggkit.mean(x) - 1.0).max() > 5
        assert np.abs(aggkit.median(x) - 1.0).max() < 0.5
        assert np.abs(aggkit.trimmed_mean(x, f=3) - 1.0).max() < 0.5
        _, sel = aggkit.multi_krum(x, f=3, return_selection=True)
        assert max(sel.indices.tolist()) < 12


def test_torch_tensors_in_and_out():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(H.copy())
    for name in A.list_attacks():
        if name == "label_flip":
            continue
        a = A.attack(name)
        y = a(t, f=2, rng=0, rule=aggkit.median)
        assert isinstance(y, torch.Tensor)
        assert y.dtype == torch.float32
        assert y.shape == (2, 3)
        if name != "gaussian":  # torch draws its own normals; the rest agree with numpy
            np.testing.assert_allclose(y.numpy(), a(H, f=2, rng=0, rule=aggkit.median), rtol=1e-6)
    np.testing.assert_array_equal(A.SignFlip()(list(t), f=1).numpy(), A.SignFlip()(H, f=1))
    torch.testing.assert_close(t, torch.from_numpy(H))


def test_line_maximize_is_byzfls_search():
    calls = []

    def rising(t):
        calls.append(t)
        return t

    # Strictly rising: the step doubles every time, 20 evaluations in all.
    assert A.line_maximize(rising) == 10 * (2**19 - 1)
    assert len(calls) == 20
    # A peak at 37: steps of 10 and 20 reach 30, 40 more overshoots (70); the step then shrinks
    # by 0.8 per try, above the best point only: 30 + 40 * 0.8**5 = 43.1 is the first that beats
    # 30, and nothing above it beats it (byzfl's one-sided search does not come back down).
    peak = A.line_maximize(lambda t: -((t - 37.0) ** 2), evals=200)
    assert peak == pytest.approx(30 + 40 * 0.8**5)
    assert A.line_maximize(lambda t: -t) == 0.0  # nothing beats the start
    assert A.line_maximize(lambda t: 1.0, evals=1) == 0.0


def damage(rule, honest, byz):
    return float(np.linalg.norm(rule(np.concatenate([honest, byz])).astype(np.float64) - honest.mean(0)))


@pytest.mark.parametrize("rule", [aggkit.median, aggkit.TrimmedMean(f=3), aggkit.MultiKrum(f=3)])
def test_optimized_attacks_beat_their_fixed_versions(rule):
    honest = np.random.default_rng(5).standard_normal((12, 40)).astype(np.float32)
    mu = honest.mean(0, dtype=np.float64)
    sd = honest.std(0, ddof=1, dtype=np.float64)
    for atk, vector in [
        (A.OptimizedALIE(), lambda t: mu + t * sd),
        (A.OptimizedIPM(), lambda t: -t * mu),
    ]:
        y = atk(honest, f=3, rule=rule)
        assert y.shape == (3, 40)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y[0], y[2])
        # The chosen strength does at least as much damage as the start and the first step.
        best = damage(rule, honest, y)
        for t in (0.0, 10.0):
            assert best >= damage(rule, honest, np.repeat(vector(t)[None].astype(np.float32), 3, 0)) - 1e-6


def test_optimized_attacks_evaluate_the_rule_on_what_the_server_receives():
    honest = np.random.default_rng(1).standard_normal((6, 4))
    seen = []

    def rule(x):
        seen.append(np.array(x))
        return aggkit.median(x)

    A.OptimizedALIE(evals=5)(honest, f=2, rule=rule)
    assert len(seen) == 5
    for x in seen:
        assert x.shape == (8, 4)
        np.testing.assert_array_equal(x[:6], honest)  # honest first, then the f Byzantine copies
        np.testing.assert_array_equal(x[6], x[7])


def min_distance_case(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((10, 30)) + rng.standard_normal(30)


@pytest.mark.parametrize("dev", ["std", "unit_vec", "sign"])
def test_min_sum_matches_its_closed_form(dev):
    # sum_i ||mu - g dev - x_i||^2 = sum_i ||mu - x_i||^2 + h g^2 ||dev||^2 (the cross term is 0),
    # so the largest admissible g is sqrt((T - sum_i ||mu - x_i||^2) / (h ||dev||^2)).
    x = min_distance_case(0)
    mu = x.mean(0)
    d = {"std": x.std(0, ddof=1), "unit_vec": mu / np.linalg.norm(mu), "sign": np.sign(mu)}[dev]
    pair = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    threshold = pair.sum(1).min()
    g = math.sqrt((threshold - ((x - mu) ** 2).sum()) / (len(x) * (d**2).sum()))
    assert g < 20  # inside the search's reach (2 gamma)
    y = A.MinSum(dev=dev)(x, f=2)
    found = (mu - y[0]) @ d / (d @ d)
    assert found == pytest.approx(g, abs=2e-5)
    np.testing.assert_allclose(y[0], mu - found * d, atol=1e-9)


def test_min_max_is_the_largest_admissible_gamma():
    x = min_distance_case(1)
    mu, d = x.mean(0), x.std(0, ddof=1)
    pair_max = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).max()

    def fits(g):
        return ((mu - g * d - x) ** 2).sum(1).max() <= pair_max

    y = A.MinMax()(x, f=3)
    g = (mu - y[0]) @ d / (d @ d)
    assert fits(g)
    assert not fits(g + 1e-4)
    assert g > 0.5
    # Nothing admissible beyond zero: the mean itself (all honest updates identical).
    same = np.ones((4, 3))
    np.testing.assert_array_equal(A.MinMax(dev="unit_vec")(same, f=1)[0], np.ones(3))


def test_searches_end_and_stay_quiet_at_the_limits():
    h = np.random.default_rng(0).standard_normal((6, 4)) * 55410203300.09503
    y = A.MinMax(dev="unit_vec", gamma=277051016500.47516)(h, f=1)  # looped forever before
    assert np.isfinite(y).all()
    A.MinSum()(np.random.default_rng(1).standard_normal((5, 3)) * 1e300, f=1)  # no warning
    honest = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float16)
    y = A.OptimizedIPM()(honest, f=2, rule=aggkit.rule("mean", nonfinite="propagate"))
    assert y.dtype == np.float16  # a strength beyond float16: inf rows, quietly
    for kwargs, msg in [
        (dict(evals=0), "evals must be an int >= 1"),
        (dict(delta=-1.0), "delta must be > 0"),
        (dict(ratio=2.0), r"ratio must be in \(0, 1\)"),
        (dict(start=math.inf), "start must be finite"),
    ]:
        with pytest.raises(aggkit.InvalidParameterError, match=msg):
            A.line_maximize(lambda t: t, **kwargs)
    assert math.isfinite(A.line_maximize(lambda t: t, evals=5000))  # stops doubling before inf
    with pytest.raises(aggkit.ShapeError, match="the rule returned 1 values for updates of 4"):
        A.OptimizedALIE()(np.ones((3, 4)), f=1, rule=lambda x: np.zeros(1))
