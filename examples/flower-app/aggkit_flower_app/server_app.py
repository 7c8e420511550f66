"""ServerApp: Flower's FedAvg rounds, with an aggkit rule as the aggregation."""

import json

import numpy as np
from aggkit.flower import RobustStrategy
from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rule, f = str(cfg["aggregation"]), int(cfg["num-byzantine"])
    min_nodes = 2 * f + 3  # enough for any rule that tolerates f Byzantine clients (Krum: 2f + 3)
    if rule == "fedavg":
        strategy = FedAvg(min_available_nodes=min_nodes)
    else:  # "trimmed_mean", "multi_krum", "bulyan", ...: an aggkit rule that takes f
        strategy = RobustStrategy(rule, f=f, min_available_nodes=min_nodes)
    if len(list(grid.get_node_ids())) < min_nodes:
        print(f"Waiting for {min_nodes} nodes: use `flwr run . --federation-config 'num-supernodes=10'`")
    initial = ArrayRecord({"w": Array(np.zeros(8, np.float32)), "b": Array(np.zeros(1, np.float32))})
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=int(cfg["num-server-rounds"]))
    final = dict(result.evaluate_metrics_clientapp[max(result.evaluate_metrics_clientapp)])
    print(f"{rule}: accuracy {final['eval-acc']:.3f}, loss {final['eval-loss']:.3f}")
    if cfg["result-file"]:
        with open(str(cfg["result-file"]), "w") as fh:
            json.dump({"aggregation": rule, "attack": cfg["attack"], "num-byzantine": f, **final}, fh)
