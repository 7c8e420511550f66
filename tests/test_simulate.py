"""aggkit.simulate and the ``aggkit simulate`` command."""

import importlib.util
import json
import math
import subprocess
import sys

import aggkit
import numpy as np
import pytest
from aggkit.simulate import load_dataset, parse_spec, partition, simulate

SMALL = dict(dataset="synthetic", clients=10, byzantine=2, rounds=6, progress=False)


def test_runs_every_pair_reproducibly():
    kw = dict(SMALL, rules=["mean", "median", "trimmed_mean:f=1"], attacks=["none", "large_values"])
    a, b = simulate(**kw), simulate(**kw)
    assert a.accuracy == b.accuracy
    assert list(a.accuracy) == [
        ("mean", "none"), ("median", "none"), ("trimmed_mean:f=1", "none"),
        ("mean", "large_values"), ("median", "large_values"), ("trimmed_mean:f=1", "large_values"),
    ]  # fmt: skip
    assert all(len(v) == 6 and all(0.0 <= x <= 1.0 for x in v) for v in a.accuracy.values())
    assert a.config["params"] > 0
    assert a.seconds > 0


def test_robust_rules_beat_the_mean_under_attack():
    r = simulate(
        **dict(SMALL, rounds=15), rules=["mean", "median", "multi_krum"], attacks=["none", "large_values"]
    )
    acc = r.final_accuracy()
    clean = acc[("mean", "none")]
    assert clean > 0.4  # 10 classes: chance is 0.1
    assert acc[("mean", "large_values")] < 0.2  # the model is destroyed
    assert acc[("median", "large_values")] > 0.75 * clean
    assert acc[("multi_krum", "large_values")] > 0.75 * clean
    kept = r.kept[("multi_krum", "large_values")]
    assert sum(kept[8:]) == 0  # Multi-Krum never kept a Byzantine client
    assert sum(kept) == 15 * 8  # m = n - f clients kept per round


def test_without_attack_the_byzantine_clients_are_honest():
    r = simulate(**SMALL, rules=["mean"], attacks=["none"])
    honest = simulate(**dict(SMALL, byzantine=0), rules=["mean"], attacks=["none"])
    assert r.accuracy == honest.accuracy


def test_label_flip_and_weights_and_rule_objects():
    r = simulate(
        **SMALL,
        rules=[aggkit.MultiKrum(f=2, m=5), "mean"],
        attacks=["label_flip", aggkit.attacks.SignFlip(scale=10)],
        weighted=True,
        alpha=math.inf,
        model="logreg",
    )
    assert ("MultiKrum(f=2, m=5, nonfinite='robust')", "label_flip") in r.accuracy
    assert ("mean", "SignFlip(scale=10.0)") in r.accuracy
    table = r.table()
    assert table.splitlines()[0].split() == [
        "rule",
        "label_flip",
        "SignFlip(scale=10.0)",
        "worst",
        "worst",
        "attack",
    ]
    assert len(table.splitlines()) == 4


def test_parse_spec():
    assert parse_spec("median") == ("median", {})
    assert parse_spec("multi_krum:f=2,m=5") == ("multi_krum", {"f": 2, "m": 5})
    assert parse_spec("alie:z=1.5") == ("alie", {"z": 1.5})
    assert parse_spec("median:even=lower,nonfinite=raise") == (
        "median",
        {"even": "lower", "nonfinite": "raise"},
    )
    with pytest.raises(aggkit.InvalidParameterError, match="name:key=value"):
        parse_spec("median:lower")


def test_partition_covers_every_sample_once():
    y = np.repeat(np.arange(10), 30)
    rng = np.random.default_rng(0)
    for alpha in (0.1, 1.0, math.inf):
        parts = partition(y, 12, alpha, rng)
        assert len(parts) == 12
        assert min(len(p) for p in parts) >= 2
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(300))
    iid = partition(y, 12, math.inf, rng)
    assert max(map(len, iid)) - min(map(len, iid)) <= 1
    # Small alpha concentrates each client on few classes.
    skewed = partition(y, 12, 0.05, rng)
    assert np.mean([len(np.unique(y[p])) for p in skewed]) < 5


def test_datasets():
    s = load_dataset("synthetic", 0)
    assert s.x_train.dtype == np.float32
    assert s.num_classes == 10
    assert len(s.y_train) + len(s.y_test) == 2000
    pytest.importorskip("sklearn")
    d = load_dataset("digits", 0)
    assert d.x_train.shape[1] == 64
    assert len(d.y_train) + len(d.y_test) == 1797


def test_bad_input():
    bad = [
        (dict(clients=0), "clients must be an int >= 1"),
        (dict(byzantine=10), "byzantine must be an int in 0..clients-1"),
        (dict(rounds=0), "rounds must be an int >= 1"),
        (dict(alpha=0.0), "alpha must be > 0"),
        (dict(dataset="mnist"), "unknown dataset 'mnist'"),
        (dict(model="cnn"), "unknown model 'cnn'"),
        (dict(rules=["krum"], byzantine=4), r"rule krum needs at least 11 clients, got clients=10"),
        (dict(rules=["nope"]), "unknown rule 'nope'"),
        (dict(attacks=["nope"]), "unknown attack 'nope'"),
    ]
    for over, msg in bad:
        with pytest.raises(aggkit.InvalidParameterError, match=msg):
            simulate(**{**SMALL, **over})
    with pytest.raises(TypeError, match="sequences"):
        simulate(**SMALL, rules="median")


def test_command_line(tmp_path):
    png, js = tmp_path / "acc.png", tmp_path / "acc.json"
    args = ["simulate", "--dataset", "synthetic", "--clients", "9", "--byzantine", "2", "--rounds", "3"]
    args += ["--rules", "mean", "median", "krum", "--attacks", "none", "sign_flip:scale=5"]
    args += ["--json", str(js), "--plot", str(png)]
    proc = subprocess.run(
        [sys.executable, "-m", "aggkit", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "final test accuracy (%)" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rule"))
    assert lines[header].split() == ["rule", "none", "sign_flip:scale=5", "worst", "worst", "attack"]
    assert [line.split()[0] for line in lines[header + 2 : header + 5]] == ["mean", "median", "krum"]
    if importlib.util.find_spec("tqdm") is not None:
        assert "100%" in proc.stderr  # tqdm's progress bar reached the end
    data = json.loads(js.read_text())
    assert data["config"]["clients"] == 9
    assert len(data["accuracy"]) == 6
    if "no plot" in proc.stderr:
        pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_line_errors():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggkit",
            "simulate",
            "--rules",
            "krum",
            "--clients",
            "5",
            "--dataset",
            "synthetic",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Krum" in proc.stderr or "krum" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_command_quick():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aggkit",
            "bench",
            "--d",
            "1e5",
            "--rules",
            "median",
            "--n",
            "10",
            "--repeats",
            "1",
            "--dtype",
            "float32",
            "float64",
            "float16",
            "bfloat16",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "streaming read bandwidth measured" in proc.stdout
    assert "SIMD" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 10 |")]
    assert {r.split("|")[3].strip() for r in rows} == {"float32", "float64", "float16", "bfloat16"}
    assert all("median" in r and r.rstrip().endswith("x |") for r in rows)


def run_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "aggkit", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_help_is_plain_text_with_defaults():
    top = run_cli("--help")
    assert top.returncode == 0
    assert "``" not in top.stdout
    assert "simulate" in top.stdout
    assert "bench" in top.stdout
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith(f"aggkit {aggkit.__version__}")
    sim = run_cli("simulate", "--help").stdout
    sim = sim[sim.index("options:") :]
    for option, default in [("--rounds", "40"), ("--batch-size", "32"), ("--lr", "0.5"), ("--seed", "0")]:
        block = sim[sim.index(option) :]
        assert f"(default: {default})" in " ".join(block.split()[:20]), option
    assert "(default: aggkit-simulate.png)" in " ".join(sim.split())
    bench = " ".join(run_cli("bench", "--help").stdout.split())
    for text in ("(default: 10 50 200)", "(default: 100000 1000000 10000000)", "(default: 5)", "threads for"):
        assert text in bench
    assert "``" not in sim
    assert "``" not in bench


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plot", "/nonexistent-dir/acc.png"], "cannot be written: No such file or directory"),
        (["--plot", "acc.notaformat"], "cannot write .notaformat"),
        (["--json", "."], "is a directory"),
        (["--clients", "0"], "expected an integer >= 1, got 0"),
        (["--lr", "nan"], "expected a finite number > 0"),
        (["--seed", "-1"], "expected an integer >= 0"),
        (["--plot", ""], "empty path"),
        (["--plot", "nodir-x/"], "cannot be written"),
        (["--json", "missing-dir-x/out.json"], "cannot be written"),
        (["--json", "same.png", "--plot", "same.png"], "name the same file"),
    ],
)
def test_output_paths_and_values_are_checked_before_the_run(args, message, tmp_path):
    if "--plot" in args:
        pytest.importorskip("matplotlib")
    proc = subprocess.run(
        [sys.executable, "-m", "aggkit", "simulate", "--dataset", "synthetic", "--rounds", "1000000", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], ">= 1"),
        (["--d", "0.5"], "whole number"),
        (["--d", "1e12", "--n", "10"], "GB with one copy"),
        (["--threads", "100000"], "--threads: set_num_threads"),
        (["--quick", "--repeats", "1"], "--quick sets --n, --d, --repeats; drop --repeats or --quick"),
        (["--quick", "--large"], "not both"),
    ],
)
def test_bench_values_are_checked(args, message):
    proc = run_cli("bench", *args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_bench_krum_with_too_few_inputs_says_so():
    proc = run_cli("bench", "--n", "2", "--d", "1000", "--rules", "krum", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert "needs n >= 3" in proc.stdout


def test_figure_has_one_legend_and_no_empty_panel():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    r = simulate(
        **dict(SMALL, rounds=2), rules=["mean", "median"], attacks=["none", "sign_flip", "alie", "ipm"]
    )
    fig = r.figure()
    try:
        assert len(fig.axes) == 4  # a 3 x 2 grid less its two empty slots
        assert len(fig.legends) == 1
        assert all(ax.get_legend() is None for ax in fig.axes)
        names = [t.get_text() for t in fig.legends[0].get_texts()]
        assert names == ["mean (drops non-finite)", "median"]
    finally:
        plt.close(fig)


def test_the_baseline_says_what_it_does():
    r = simulate(**SMALL, rules=["mean", "mean:nonfinite=propagate"], attacks=["nonfinite"])
    table = r.table()
    assert "mean (drops non-finite)" in table
    assert "mean:nonfinite=propagate" in table
    assert "mean:nonfinite=propagate (drops" not in table
    assert math.isnan(r.accuracy[("mean:nonfinite=propagate", "nonfinite")][-1]) or (
        r.accuracy[("mean:nonfinite=propagate", "nonfinite")][-1] < 0.2
    )


def test_iid_and_a_name_without_extension(tmp_path):
    pytest.importorskip("matplotlib")
    args = ["simulate", "--dataset", "synthetic", "--rounds", "1", "--alpha", "inf", "--rules", "median"]
    args += ["--attacks", "none", "--plot", "acc", "--quiet"]
    proc = subprocess.run(
        [sys.executable, "-m", "aggkit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "alpha=inf" in proc.stdout
    assert (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot written to acc.png" in proc.stdout


def test_progress_goes_through_tqdm_or_nowhere(capsys, monkeypatch):
    simulate(**dict(SMALL, rounds=2, progress=True), rules=["mean"], attacks=["none"])
    err = capsys.readouterr().err
    if importlib.util.find_spec("tqdm") is not None:
        assert "2/2" in err
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    simulate(**dict(SMALL, rounds=2, progress=True), rules=["mean"], attacks=["none"])
    assert capsys.readouterr().err == ""


def test_seeds_are_independent_runs_averaged():
    kw = dict(SMALL, rules=["mean", "median"], attacks=["none", "sign_flip"])
    both = simulate(**kw, seed=3, seeds=2)
    first, second = simulate(**kw, seed=3), simulate(**kw, seed=4)
    assert both.config["seeds"] == [3, 4]
    for key in both.accuracy:
        assert both.runs[key] == [first.accuracy[key], second.accuracy[key]]
        assert both.accuracy[key] == pytest.approx(
            [(a + b) / 2 for a, b in zip(*both.runs[key], strict=True)]
        )
    spread = both.final_spread()
    for key, curves in both.runs.items():
        assert spread[key] == pytest.approx(abs(curves[0][-1] - curves[1][-1]) / math.sqrt(2))
    assert first.final_spread() == dict.fromkeys(first.accuracy, 0.0)
    lines = both.table().splitlines()
    assert "±" in lines[2]
    assert "±" not in first.table()


def test_worst_column_is_the_lowest_attack():
    r = simulate(**SMALL, rules=["mean", "median"], attacks=["none", "large_values", "sign_flip"])
    final = r.final_accuracy()
    for rule, (acc, attack) in r.worst().items():
        assert acc == min(final[(rule, a)] for a in ("none", "large_values", "sign_flip"))
        assert final[(rule, attack)] == acc
    row = r.table().splitlines()[2]
    assert row.split()[-1] == r.worst()["mean"][1]


def test_pipeline_specs_give_f_to_every_stage():
    r = simulate(
        **SMALL,
        rules=["nnm>trimmed_mean", "bucketing:s=2,seed=1>median", "arc>nnm:f=1>mean"],
        attacks=["none"],
    )
    assert list(r.accuracy) == [
        ("nnm>trimmed_mean", "none"), ("bucketing:s=2,seed=1>median", "none"), ("arc>nnm:f=1>mean", "none"),
    ]  # fmt: skip
    from aggkit.simulate import _make_rule

    assert _make_rule("nnm>trimmed_mean", 2)[1] == aggkit.Pipeline([aggkit.NNM(f=2), aggkit.TrimmedMean(f=2)])
    assert _make_rule("arc>nnm:f=1>mean", 3)[1] == aggkit.Pipeline(
        [aggkit.ARC(f=3), aggkit.NNM(f=1), aggkit.Mean()]
    )
    with pytest.raises(aggkit.InvalidParameterError, match="unknown pipeline stage 'nope'"):
        _make_rule("nope>mean", 1)
    with pytest.raises(aggkit.InvalidParameterError, match=r"bucketing: unknown parameters \['tau'\]"):
        _make_rule("bucketing:tau=1>mean", 1)


def test_momentum_protocol():
    kw = dict(SMALL, rules=["mean", "centered_clipping:tau=0.5"], attacks=["none", "alie"])
    a = simulate(**kw, protocol="momentum")
    assert a.accuracy == simulate(**kw, protocol="momentum").accuracy
    assert a.config["protocol"] == "momentum"
    # momentum (1 - beta) g starts slowly: 25 rounds to learn
    longer = simulate(**dict(kw, rounds=25, attacks=["none"]), protocol="momentum")
    assert longer.final_accuracy()[("mean", "none")] > 0.25  # chance is 0.1
    assert a.accuracy != simulate(**kw, protocol="momentum", momentum=0.5).accuracy
    # Without momentum a client sends -lr times one minibatch gradient: one local SGD step,
    # from the same minibatches (up to float32 rounding of (w - lr g) - w).
    kw = dict(SMALL, rules=["mean"], attacks=["none"], rounds=3)
    plain = simulate(**kw, protocol="momentum", momentum=0.0)
    sgd = simulate(**kw, protocol="local_sgd", local_steps=1)
    assert plain.accuracy[("mean", "none")] == pytest.approx(sgd.accuracy[("mean", "none")], abs=0.01)


def test_adaptive_attacks_see_the_rule_and_its_state_without_changing_it():
    r = simulate(
        **SMALL,
        rules=["median", "centered_clipping:tau=1"],
        attacks=["alie_opt", "ipm_opt", "min_max", "min_sum"],
    )
    assert len(r.accuracy) == 8
    # The attack tries the rule 20 times a round on a copy: the state the rule carries is the
    # one a run without those trials reaches, so the same run twice agrees.
    again = simulate(**SMALL, rules=["centered_clipping:tau=1"], attacks=["alie_opt"])
    assert (
        again.accuracy[("centered_clipping:tau=1", "alie_opt")]
        == r.accuracy[("centered_clipping:tau=1", "alie_opt")]
    )


def test_stateful_pipelines_keep_their_state_across_rounds():
    cc = aggkit.CenteredClipping(tau=0.01)
    r = simulate(**SMALL, rules=[aggkit.Pipeline([aggkit.Clipping(c=1e9), cc]), cc], attacks=["none"])
    a, b = r.accuracy.values()
    assert a == b  # clipping at 1e9 changes nothing: the pipeline clips around the last aggregate too
    state = aggkit.Pipeline([aggkit.Clipping(c=1e9), cc]).rounds()
    x = np.ones((3, 2))
    out1 = state.aggregate(x)[0]
    out2 = state.aggregate(x)[0]
    np.testing.assert_allclose(out2, 2 * out1)
    state.reset()
    np.testing.assert_allclose(state.aggregate(x)[0], out1)


def test_a_destroyed_model_stays_destroyed():
    r = simulate(**dict(SMALL, rounds=12), rules=["mean"], attacks=["alie_opt"])
    acc = r.accuracy[("mean", "alie_opt")]
    assert acc[-1] < 0.2
    assert len(acc) == 12


def test_preset_and_new_options_on_the_command_line(tmp_path):
    from aggkit.simulate import PRESETS

    hard = PRESETS["hard-noniid"]
    assert (hard["clients"], hard["byzantine"], hard["alpha"]) == (20, 6, 0.3)
    assert {"alie_opt", "ipm_opt", "min_max", "min_sum"} <= set(hard["attacks"])
    js = tmp_path / "r.json"
    args = ["simulate", "--preset", "hard-noniid", "--dataset", "synthetic", "--rounds", "2", "--seeds", "2"]
    args += ["--rules", "mean", "nnm>trimmed_mean", "--attacks", "none", "min_sum", "--protocol", "momentum"]
    args += ["--plot", "none", "--quiet", "--json", str(js)]
    proc = subprocess.run(
        [sys.executable, "-m", "aggkit", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "20 clients, the last 6 Byzantine, Dirichlet alpha=0.3, 2 rounds, momentum 0.9 per client, seeds 0..1"
        in proc.stdout
    )
    data = json.loads(js.read_text())
    assert data["config"]["seeds"] == [0, 1]
    assert all(len(row["runs"]) == 2 for row in data["accuracy"])


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (dict(protocol="fedprox"), "protocol must be one of"),
        (dict(momentum=1.0), r"momentum must be in \[0, 1\)"),
        (dict(seeds=0), "seeds must be an int >= 1"),
    ],
)
def test_bad_new_options(over, message):
    with pytest.raises(aggkit.InvalidParameterError, match=message):
        simulate(**{**SMALL, "rules": ["mean"], "attacks": ["none"], **over})


def test_rules_with_their_own_randomness_are_reproducible_pair_by_pair():
    kw = dict(dataset="synthetic", model="logreg", rounds=4, clients=8, byzantine=2, progress=False)
    for spec in ("dnc:b=5", "bucketing_cc:tau=0.05"):
        a = simulate(rules=[spec], attacks=["alie"], **kw)
        b = simulate(rules=[spec], attacks=["none", "alie"], **kw)
        assert a.runs[(spec, "alie")] == b.runs[(spec, "alie")]
        two = simulate(rules=[spec], attacks=["alie"], seeds=2, **kw)
        one = simulate(rules=[spec], attacks=["alie"], seed=1, **kw)
        assert two.runs[(spec, "alie")][1] == one.runs[(spec, "alie")][0]
