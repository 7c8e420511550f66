"""A Flower app for the end-to-end simulation test (run by test_flower.py in a subprocess, needs ray).

Five supernodes pull a 2-array model towards a target; partition 4 is Byzantine and sends 1e6.
The server trains 3 rounds with aggkit's RobustStrategy and writes the final model to argv[2].
"""

import json
import os
import sys

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np
from aggkit.flower import RobustStrategy
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

TARGET = {"w": np.full((3, 4), 2.0, np.float32), "b": np.full(4, -1.0, np.float32)}
client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    keys = list(msg.content["arrays"].keys())
    if pid == 4:  # Byzantine
        new = [np.full_like(a, 1e6) for a in arrays]
    else:
        new = [a + 0.5 * (TARGET[k] - a) for k, a in zip(keys, arrays, strict=True)]
    content = RecordDict(
        {
            "arrays": ArrayRecord(
                dict(zip(keys, [ArrayRecord.from_numpy_ndarrays([a])["0"] for a in new], strict=True))
            ),
            "metrics": MetricRecord({"num-examples": 10}),
        }
    )
    return Message(content=content, reply_to=msg)


def server_for(rule: str, out: str) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        kwargs = {"f": 1} if rule == "krum" else {}
        strategy = RobustStrategy(
            rule, **kwargs, fraction_evaluate=0.0, min_available_nodes=5, min_train_nodes=5
        )
        init = ArrayRecord({"w": Array(np.zeros((3, 4), np.float32)), "b": Array(np.zeros(4, np.float32))})
        result = strategy.start(grid=grid, initial_arrays=init, num_rounds=3)
        final = {k: v.numpy().tolist() for k, v in result.arrays.items()}
        with open(out, "w") as fh:
            json.dump({"arrays": final, "history": [h["excluded_node_ids"] for h in strategy.history]
                       if rule == "krum" else []}, fh)  # fmt: skip

    return app


if __name__ == "__main__":
    rule, out = sys.argv[1], sys.argv[2]
    run_simulation(
        server_app=server_for(rule, out),
        client_app=client,
        num_supernodes=5,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
