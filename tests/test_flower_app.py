"""The Flower app in examples/flower-app, run as a user runs it: `flwr run` on the local simulation.

`flwr run` starts a local SuperLink in the background (simulation mode, ray backend) and leaves it
running; the module's fixture gives it its own HOME, FLWR_HOME and port and ends it, with
everything it started, after the tests. Flower's runtime installation of the app's dependencies is
off (FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1): the app runs on this environment's aggkit.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cleanup reads /proc")

APP = pathlib.Path(__file__).resolve().parents[1] / "examples" / "flower-app"
BIN = pathlib.Path(sys.executable).parent
FEDERATION = "num-supernodes=10"


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[int(entry)] = (int(stat[1]), stat[0], cmd)
    return out


def _stop_local_superlink(flwr_home: pathlib.Path) -> None:
    """End the SuperLink `flwr run` started for this FLWR_HOME and its descendants (SuperExec, ray)."""
    log_file = str(flwr_home / "local-superlink" / "superlink.log")
    procs = _processes()
    todo = [p for p, (_, _, cmd) in procs.items() if "flower-superlink" in cmd and log_file in cmd]
    tree = []
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += [p for p, (ppid, _, _) in procs.items() if ppid == pid]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            procs = _processes()
            tree = [p for p in tree if p in procs and procs[p][1] != "Z"]
            if not tree:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def flwr_env(tmp_path_factory):
    flwr = BIN / "flwr"
    if not flwr.exists():
        pytest.skip(f"no flwr command next to {sys.executable}")
    home = tmp_path_factory.mktemp("home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        HOME=str(home),
        FLWR_HOME=str(home / ".flwr"),
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(port),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `flwr run` starts `flower-superlink`
    )
    try:
        yield env
    finally:
        _stop_local_superlink(home / ".flwr")


def flwr_run(env: dict[str, str], out: pathlib.Path, **run_config: object) -> dict:
    """`flwr run examples/flower-app --stream`; returns the result file the ServerApp wrote."""
    config = " ".join(f"{k}={json.dumps(v)}" for k, v in {"result-file": str(out), **run_config}.items())
    cmd = [str(BIN / "flwr"), "run", str(APP), "--stream", "--federation-config", FEDERATION]
    proc = subprocess.run(
        [*cmd, "--run-config", config], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    # `flwr run --stream` exits 0 when the run fails too: the ServerApp's result file tells.
    if not out.exists():
        runs = subprocess.run(
            [str(BIN / "flwr"), "list", "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        pytest.fail(
            f"no result (exit {proc.returncode})\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}\n{runs.stdout}"
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("rule", ["trimmed_mean", "multi_krum"])
def test_flower_app_robust_rule_keeps_the_model_good(flwr_env, tmp_path, rule):
    result = flwr_run(flwr_env, tmp_path / "result.json", aggregation=rule)
    assert result["aggregation"] == rule
    assert result["num-byzantine"] == 2
    assert result["attack"] == "sign-flip"
    assert result["eval-acc"] > 0.88, result  # 0.942 for FedAvg with attack="none"


def test_flower_app_fedavg_is_broken_by_the_same_clients(flwr_env, tmp_path):
    result = flwr_run(flwr_env, tmp_path / "result.json", aggregation="fedavg")
    assert result["eval-acc"] < 0.5, result


@pytest.mark.parametrize(
    "name", ["aggkit_flower_app/server_app.py", "aggkit_flower_app/client_app.py", "pyproject.toml"]
)
def test_the_readme_shows_the_app_as_it_is(name):
    """The README shows each file of the app whole, as it is (the test above runs the files)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    fence = "```toml\n" if name.endswith(".toml") else "```python\n"
    marker = "### A complete Flower app" if name.endswith(".toml") else f"`{name}`:"
    start = readme.index(fence, readme.index(marker)) + len(fence)
    assert readme[start : readme.index("```", start)] == (root / "examples" / "flower-app" / name).read_text()
