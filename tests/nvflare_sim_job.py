"""An NVFlare simulation for the end-to-end test (run by tests/test_nvflare.py in a subprocess).

Five simulated sites train a one-array numpy model towards 2.0 for three rounds of NVFlare's
FedAvg (``NumpyFedAvgRecipe``) whose aggregator is aggkit's ``RobustAggregator``; site-5 is
Byzantine. Writes the final global model, the server's aggkit log lines and the exported
aggregator arguments to the JSON file argv[4].

    python nvflare_sim_job.py RULE_JSON FULL|DIFF WORKSPACE OUT.json
"""

import json
import pathlib
import sys

import numpy as np
from aggkit.nvflare import RobustAggregator
from aggkit.registry import from_spec
from nvflare.app_common.np.recipes.fedavg import NumpyFedAvgRecipe
from nvflare.recipe.sim_env import SimEnv

ROUNDS, SITES, THREADS = 3, 5, 5


def main(rule_spec: str, params_type: str, workspace: str, out: str) -> None:
    client = pathlib.Path(__file__).with_name("nvflare_sim_client.py")
    recipe = NumpyFedAvgRecipe(
        name="aggkit_robust",
        model=[[0.0, 0.0, 0.0, 0.0]],
        min_clients=SITES,
        num_rounds=ROUNDS,
        train_script=str(client),
        train_args="--byzantine site-5" + (" --diff" if params_type == "DIFF" else ""),
        aggregator=RobustAggregator(from_spec(rule_spec)),
    )
    recipe.execute(SimEnv(num_clients=SITES, num_threads=THREADS, workspace_root=workspace))
    job = pathlib.Path(workspace) / "aggkit_robust"
    server = job / "server"
    model = np.load(server / "simulate_job" / "models" / "server.npy")
    config = json.loads(
        (server / "simulate_job" / "app_server" / "config" / "config_fed_server.json").read_text()
    )
    log = (server / "log.txt").read_text()
    pathlib.Path(out).write_text(
        json.dumps(
            {
                "model": model.tolist(),
                "dtype": str(model.dtype),
                "aggregator": config["workflows"][0]["args"]["aggregator"],
                "aggkit_log": [line for line in log.splitlines() if "aggkit" in line],
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
