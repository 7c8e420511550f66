"""ClientApp: logistic regression by local SGD; partitions 0 .. num-byzantine - 1 attack."""

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

app = ClientApp()
TRUE_W = np.random.default_rng(0).normal(size=8)  # the model behind every client's data


def load_data(partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """250 examples (200 to train on, 50 to evaluate), features shifted per partition."""
    rng = np.random.default_rng(partition_id)
    x = rng.normal(size=(250, 8)) + rng.normal(scale=0.5, size=8)
    y = (rng.random(250) < 1 / (1 + np.exp(-4 * (x @ TRUE_W + 0.5)))).astype(np.float64)
    return x, y


def get_model(msg: Message) -> np.ndarray:
    arrays = msg.content.array_records["arrays"]
    return np.concatenate([arrays["w"].numpy(), arrays["b"].numpy()]).astype(np.float64)


@app.train()
def train(msg: Message, context: Context) -> Message:
    pid, cfg = int(context.node_config["partition-id"]), context.run_config
    x, y = load_data(pid)
    theta = model = get_model(msg)  # 8 weights, then the bias
    server_round = msg.content.config_records["config"]["server-round"]  # set by FedAvg
    assert isinstance(server_round, int)
    rng = np.random.default_rng([pid, server_round])
    for _ in range(int(cfg["local-epochs"])):  # mini-batch SGD on the log loss
        for idx in np.array_split(rng.permutation(200), 200 // 32):
            err = 0.5 + 0.5 * np.tanh((x[idx] @ theta[:-1] + theta[-1]) / 2) - y[idx]
            theta = theta - float(cfg["learning-rate"]) * np.append(x[idx].T @ err, err.sum()) / len(idx)
    if pid < int(cfg["num-byzantine"]):  # a Byzantine client
        if cfg["attack"] == "sign-flip":  # ten times its update, reversed
            theta = model - 10 * (theta - model)
        elif cfg["attack"] == "large":
            theta = np.full_like(theta, 1e6)
    theta = theta.astype(np.float32)
    arrays = ArrayRecord({"w": Array(theta[:-1]), "b": Array(theta[-1:])})
    metrics = MetricRecord({"num-examples": 200})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    x, y = load_data(int(context.node_config["partition-id"]))
    theta = get_model(msg)
    z, y = x[200:] @ theta[:-1] + theta[-1], y[200:]
    loss, accuracy = float(np.mean(np.logaddexp(0, z) - y * z)), float(np.mean((z > 0) == (y > 0.5)))
    metrics = MetricRecord({"eval-loss": loss, "eval-acc": accuracy, "num-examples": 50})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)
