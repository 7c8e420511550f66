"""Federated-learning simulation with Byzantine clients: what ``aggkit simulate`` runs.

A server trains a small classifier with ``n`` clients for a number of rounds. Each round every
client receives the global model, runs a few steps of minibatch SGD on its own data and sends
its update (local model minus global model); the server aggregates the ``n`` updates with a
rule and adds the result to the global model. The last ``f`` clients are Byzantine: each round
they replace their updates by an attack (:mod:`aggkit.attacks`) built from the honest updates
of that round, or, for data-poisoning attacks, train on poisoned data. Every (rule, attack)
pair starts from the same model and data partition and draws the same minibatches, so the
runs differ only in the rule and the attack.

Everything here is numpy and aggkit; the data are scikit-learn's bundled digits (8x8 images,
10 classes, no download) or a generated Gaussian-mixture task that needs nothing.

    >>> from aggkit.simulate import simulate
    >>> r = simulate(rules=["mean", "median"], attacks=["sign_flip"], dataset="synthetic",
    ...              clients=10, byzantine=2, rounds=5, progress=False)
    >>> sorted(r.final_accuracy())
    [('mean', 'sign_flip'), ('median', 'sign_flip')]
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import aggkit
from aggkit import attacks as _attacks
from aggkit.errors import InvalidParameterError
from aggkit.registry import Pipeline, Rule, param_names, preaggregator_class, rule_class, stage
from aggkit.rules.mean import Mean

__all__ = ["Dataset", "SimulationResult", "load_dataset", "parse_spec", "simulate"]


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Dataset:
    """A classification task: float32 features in [0, 1] scale, int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """``"digits"`` (scikit-learn's bundled 8x8 digits, 1797 images) or ``"synthetic"``.

    Both are split 75 % / 25 % into train and test with ``seed``.
    """
    rng = np.random.default_rng(seed)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ImportError(
                "the digits dataset comes with scikit-learn: pip install 'aggkit[sim]' "
                "(or use dataset='synthetic', which needs nothing)"
            ) from None
        d = load_digits()
        x, y, c = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64), 10
    elif name == "synthetic":
        # 10 Gaussian classes in 32 dimensions, overlapping enough that accuracy is not trivial.
        c, dim, per = 10, 32, 200
        centers = rng.standard_normal((c, dim)).astype(np.float32)
        y = np.repeat(np.arange(c), per)
        x = centers[y] + 1.2 * rng.standard_normal((c * per, dim)).astype(np.float32)
        x = (x - x.min()) / (x.max() - x.min())
    else:
        raise InvalidParameterError(f"unknown dataset {name!r}; choose 'digits' or 'synthetic'")
    perm = rng.permutation(len(y))
    cut = int(0.75 * len(y))
    tr, te = perm[:cut], perm[cut:]
    return Dataset(name, x[tr], y[tr], x[te], y[te], c)


def partition(y: np.ndarray, clients: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Split sample indices among clients; per class, shares drawn from Dirichlet(alpha).

    ``alpha = inf`` gives an IID split (shuffled, near-equal sizes). Small ``alpha`` gives each
    client few classes. Every client gets at least 2 samples (the draw is repeated until so).
    """
    n = len(y)
    if clients * 2 > n:
        raise InvalidParameterError(f"{clients} clients need at least {2 * clients} samples, got {n}")
    if math.isinf(alpha):
        return [np.sort(p) for p in np.array_split(rng.permutation(n), clients)]
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= 2:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise InvalidParameterError(
        f"Dirichlet alpha={alpha} left some of {clients} clients with fewer than 2 samples in "
        "100 draws; use a larger alpha or fewer clients"
    )


# ---------------------------------------------------------------------------------------------
# Models: flat float32 parameter vectors, numpy forward and backward


class _Model:
    def __init__(self, kind: str, dim: int, classes: int, hidden: int = 32) -> None:
        self.kind, self.dim, self.classes, self.hidden = kind, dim, classes, hidden
        if kind == "logreg":
            self.shapes = [(dim, classes), (classes,)]
        elif kind == "mlp":
            self.shapes = [(dim, hidden), (hidden,), (hidden, classes), (classes,)]
        else:
            raise InvalidParameterError(f"unknown model {kind!r}; choose 'logreg' or 'mlp'")
        self.size = sum(int(np.prod(s)) for s in self.shapes)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        parts = []
        for s in self.shapes:
            if len(s) == 2:
                parts.append(rng.standard_normal(s) * math.sqrt(2.0 / s[0]))
            else:
                parts.append(np.zeros(s))
        return np.concatenate([p.ravel() for p in parts]).astype(np.float32)

    def _unflat(self, w: np.ndarray) -> list[np.ndarray]:
        out, o = [], 0
        for s in self.shapes:
            k = int(np.prod(s))
            out.append(w[o : o + k].reshape(s))
            o += k
        return out

    def logits(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        p = self._unflat(w)
        out: np.ndarray
        if self.kind == "logreg":
            out = x @ p[0] + p[1]
        else:
            out = np.maximum(x @ p[0] + p[1], 0.0) @ p[2] + p[3]
        return out

    def grad(self, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the mean cross-entropy at ``w`` on ``(x, y)``."""
        p = self._unflat(w)
        m = len(y)
        if self.kind == "logreg":
            z = x @ p[0] + p[1]
        else:
            a = x @ p[0] + p[1]
            h = np.maximum(a, 0.0)
            z = h @ p[2] + p[3]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        g = e / e.sum(axis=1, keepdims=True)
        g[np.arange(m), y] -= 1.0
        g /= m
        if self.kind == "logreg":
            grads = [x.T @ g, g.sum(0)]
        else:
            gh = (g @ p[2].T) * (a > 0)
            grads = [x.T @ gh, gh.sum(0), h.T @ g, g.sum(0)]
        return np.concatenate([q.ravel() for q in grads]).astype(np.float32)

    def accuracy(self, w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        if not np.all(np.isfinite(w)):
            return float(np.mean(y == 0))  # a NaN model predicts class 0 (argmax of NaNs)
        with np.errstate(over="ignore", invalid="ignore"):
            pred = np.argmax(self.logits(w, x), axis=1)
        return float(np.mean(pred == y))


# ---------------------------------------------------------------------------------------------
# Specs such as "trimmed_mean:f=3" or "alie:z=1.5"


def _value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text in ("None", "none"):
        return None
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:k=v,k2=v2"`` -> ``("name", {"k": v, "k2": v2})`` (ints, floats, None, strings)."""
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise InvalidParameterError(f"cannot read {item!r} in {spec!r}; write name:key=value,...")
        params[k.strip()] = _value(v.strip())
    return name.strip(), params


def _make_rule(spec: str | Rule, byzantine: int, seed: int = 0) -> tuple[str, Rule]:
    """A rule from ``"name:k=v"`` or a pipeline ``"stage:k=v>...>rule:k=v"``.

    Every stage that takes ``f`` gets ``f=byzantine`` unless its spec sets it, and every stage
    that draws random numbers (bucketing, DnC) gets ``seed`` unless its spec sets it: runs are
    reproducible from the simulation's seed. A rule object is copied (its generator too).
    """
    if isinstance(spec, Rule):
        return repr(spec), copy.deepcopy(spec)
    stages = []
    for part in spec.split(">"):
        name, params = parse_spec(part)
        cls = rule_class(name) or preaggregator_class(name)
        if cls is not None and "f" in param_names(cls) and "f" not in params:
            params["f"] = byzantine
        if cls is not None and "seed" in param_names(cls) and "seed" not in params:
            params["seed"] = seed
        stages.append((name, params))
    if len(stages) == 1:
        return spec, aggkit.rule(stages[0][0], **stages[0][1])
    return spec, Pipeline([stage(name, **params) for name, params in stages])


def _make_attack(spec: str | _attacks.Attack | None) -> tuple[str, _attacks.Attack | None]:
    if spec is None or spec == "none":
        return "none", None
    if isinstance(spec, _attacks.Attack):
        return repr(spec), spec
    name, params = parse_spec(spec)
    return spec, _attacks.attack(name, **params)


# ---------------------------------------------------------------------------------------------
# The simulation


@dataclass
class SimulationResult:
    """Test accuracy after every round, per (rule, attack), for every seed."""

    #: The mean over seeds of the accuracy after each round, per (rule, attack).
    accuracy: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: For selection rules: per (rule, attack), how often each client was kept over the rounds
    #: (summed over seeds).
    kept: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    #: How the table and the plot name a rule, where that differs from its spec.
    labels: dict[str, str] = field(default_factory=dict)
    #: Per (rule, attack): one accuracy curve per seed, in the order of ``config["seeds"]``.
    runs: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)

    def label(self, rule: str) -> str:
        """The name shown for rule spec ``rule`` (``"mean (drops non-finite)"`` for ``"mean"``)."""
        return self.labels.get(rule, rule)

    def final_accuracy(self) -> dict[tuple[str, str], float]:
        """The accuracy after the last round, per (rule, attack): the mean over seeds."""
        return {k: v[-1] for k, v in self.accuracy.items()}

    def final_spread(self) -> dict[tuple[str, str], float]:
        """The standard deviation over seeds of the final accuracy (``ddof=1``; 0 for one seed)."""
        out = {}
        for k, curves in self.runs.items():
            finals = [c[-1] for c in curves]
            out[k] = statistics.stdev(finals) if len(finals) > 1 else 0.0
        return out

    def worst(self) -> dict[str, tuple[float, str]]:
        """Per rule: the lowest mean final accuracy over the attacks, and that attack."""
        out: dict[str, tuple[float, str]] = {}
        for (r, a), acc in self.final_accuracy().items():
            if r not in out or acc < out[r][0]:
                out[r] = (acc, a)
        return out

    def table(self) -> str:
        """A plain-text table: a row per rule, a column per attack, then the worst attack.

        Cells are the final accuracy in %, the mean over seeds ``± `` the standard deviation
        when there are several seeds.
        """
        rules = list(dict.fromkeys(r for r, _ in self.accuracy))
        attacks = list(dict.fromkeys(a for _, a in self.accuracy))
        final, spread = self.final_accuracy(), self.final_spread()
        several = len(next(iter(self.runs.values()), [[]])) > 1

        def cell(k: tuple[str, str]) -> str:
            if k not in final:
                return "-"
            text = f"{100 * final[k]:.1f}"
            return f"{text} ± {100 * spread[k]:.1f}" if several else text

        worst = self.worst()
        header = ["rule", *attacks, "worst", "worst attack"]
        rows = [
            [self.label(r), *(cell((r, a)) for a in attacks), cell((r, worst[r][1])), worst[r][1]]
            for r in rules
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        widths[1:-1] = [max(w, 6) for w in widths[1:-1]]

        def line(row: list[str]) -> str:
            cells = [f"{row[0]:<{widths[0]}}"]
            cells += [f"{c:>{w}}" for c, w in zip(row[1:-1], widths[1:-1], strict=True)]
            return "  ".join([*cells, f"{row[-1]:<{widths[-1]}}"]).rstrip()

        lines = [line(header)]
        lines.append("-" * len(lines[0]))
        lines += [line(row) for row in rows]
        return "\n".join(lines)

    def plot(self, path: str) -> str:
        """Write a plot of accuracy over rounds (one panel per attack, one line per rule).

        The format follows the file's extension (PNG without one); returns ``path``.
        """
        import matplotlib.pyplot as plt

        fig = self.figure()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def figure(self) -> Any:
        """The matplotlib figure :meth:`plot` writes: a panel per attack, one legend below."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            from matplotlib.ticker import MaxNLocator
        except ImportError:
            raise ImportError("plotting needs matplotlib: pip install 'aggkit[sim]'") from None
        rules = list(dict.fromkeys(r for r, _ in self.accuracy))
        attacks = list(dict.fromkeys(a for _, a in self.accuracy))
        cols = min(3, len(attacks))
        rows = math.ceil(len(attacks) / cols)
        width = max(4.2 * cols, 7.5)  # room for the title and a legend row, even for one panel
        fig, axes = plt.subplots(rows, cols, figsize=(width, 3.2 * rows), squeeze=False, sharey=True)
        for ax, a in zip(axes.ravel(), attacks, strict=False):
            for r in rules:
                acc = self.accuracy.get((r, a))
                if acc:
                    ax.plot(range(1, len(acc) + 1), [100 * v for v in acc], label=self.label(r))
            ax.set_title(f"attack: {a}")
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
        for ax in axes[:, 0]:
            ax.set_ylabel("test accuracy (%)")
        for ax in axes.ravel()[len(attacks) :]:
            fig.delaxes(ax)
        # one legend for the figure, below the panels (every panel has the same rules)
        handles, names = axes.ravel()[0].get_legend_handles_labels()
        per_row = max(1, min(len(names), int(width // 2.4)))
        fig.legend(handles, names, loc="lower center", ncol=max(per_row, 1), fontsize=8, frameon=False)
        legend_rows = math.ceil(len(names) / max(per_row, 1))
        c = self.config
        fig.suptitle(
            f"aggkit simulate: {c.get('dataset')}, {c.get('model')}, n={c.get('clients')} clients, "
            f"{c.get('byzantine')} Byzantine, alpha={c.get('alpha')}, seed={c.get('seed')}",
            fontsize=10,
        )
        fig.tight_layout(rect=(0, 0.045 * legend_rows / rows + 0.02, 1, 1))
        return fig


class _Progress:
    """Progress on stderr through tqdm (in the ``sim`` extra); nothing when tqdm is missing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="round", file=sys.stderr, dynamic_ncols=True)

    def step(self, label: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(label, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


DEFAULT_RULES = ("mean", "median", "trimmed_mean", "krum", "multi_krum")
DEFAULT_ATTACKS = ("none", "sign_flip", "alie", "ipm", "gaussian", "large_values", "nonfinite", "label_flip")
PROTOCOLS = ("local_sgd", "momentum")

#: Named settings for :func:`simulate` (``aggkit simulate --preset NAME``); explicit arguments
#: override them.
# fmt: off
PRESETS: dict[str, dict[str, Any]] = {
    # Non-IID clients and a large colluding minority: every attack, the adaptive ones included,
    # over three seeds. 200 rounds: the momentum protocol takes one gradient per round and is
    # still learning at 80.
    "hard-noniid": dict(
        clients=20, byzantine=6, alpha=0.3, rounds=200, seeds=3,
        attacks=(
            "none", "sign_flip", "alie", "ipm", "large_values", "nonfinite", "label_flip", "mimic",
            "alie_opt", "ipm_opt", "min_max", "min_sum",
        ),
    ),
}
# fmt: on


def simulate(
    *,
    rules: Sequence[str | Rule] = DEFAULT_RULES,
    attacks: Sequence[str | _attacks.Attack | None] = DEFAULT_ATTACKS,
    dataset: str = "digits",
    model: str = "mlp",
    clients: int = 20,
    byzantine: int = 4,
    rounds: int = 40,
    protocol: str = "local_sgd",
    local_steps: int = 2,
    momentum: float = 0.9,
    batch_size: int = 32,
    lr: float = 0.5,
    alpha: float = 1.0,
    weighted: bool = False,
    seed: int = 0,
    seeds: int = 1,
    root_size: int = 100,
    progress: bool = True,
    on_round: Callable[[str, str, int, float], None] | None = None,
) -> SimulationResult:
    r"""Run every (rule, attack) pair for every seed; return the test accuracy after each round.

    Parameters
    ----------
    rules : sequence of str or Rule
        Rule objects or specs ``"name"`` / ``"name:key=value,..."``, or pipelines
        ``"nnm>trimmed_mean"`` / ``"bucketing:s=2>centered_clipping:tau=1"``; every rule or
        stage with an ``f`` parameter gets ``f=byzantine`` unless its spec sets it.
    attacks : sequence of str, Attack or None
        Attack objects or specs (``"none"`` or ``None``: the Byzantine clients are honest).
        Adaptive attacks (``alie_opt``, ``ipm_opt``) are optimised each round against the rule
        in use, from its current state (see :mod:`aggkit.attacks`).
    dataset : {"digits", "synthetic"}
    model : {"mlp", "logreg"}
        A 1-hidden-layer MLP (32 ReLU units) or multinomial logistic regression.
    clients, byzantine : int
        ``n`` clients of which the last ``byzantine`` are Byzantine.
    rounds : int
        Aggregation rounds.
    protocol : {"local_sgd", "momentum"}
        What honest clients send. ``"local_sgd"``: the change of their model after
        ``local_steps`` minibatch SGD steps of rate ``lr`` from the global model.
        ``"momentum"``: ``-lr`` times their momentum
        :math:`m_i \leftarrow \beta m_i + (1 - \beta) g_i`, with :math:`g_i` one minibatch
        gradient at the global model (the setting of centered clipping's and NNM's guarantees).
        The server adds the aggregate to the global model in both.
    local_steps : int
        SGD steps per round with ``protocol="local_sgd"``.
    momentum : float
        :math:`\beta` in ``[0, 1)`` for ``protocol="momentum"``.
    batch_size, lr : int, float
        Examples per minibatch; the learning rate.
    alpha : float
        Dirichlet concentration of the label split (``inf``: IID; small: non-IID).
    weighted : bool
        Pass the clients' example counts as weights to rules that take them (FedAvg style).
    root_size : int
        Examples of the training set the server holds (drawn at random), for rules that use a
        reference update (FLTrust): each round the server computes its own update on them, by
        the clients' protocol, and passes it as ``reference=``.
    seed, seeds : int
        Runs ``seeds`` independent repetitions, with seeds ``seed, seed + 1, ...``; each seeds
        the split, the initial model, the minibatches and the attacks.
    progress : bool
        Show a progress bar on stderr.
    on_round : callable, optional
        Called as ``on_round(rule, attack, round, accuracy)`` after each round (seed after seed).

    Returns
    -------
    SimulationResult
        ``accuracy`` holds the mean curve over seeds, ``runs`` each seed's curve.
    """
    if isinstance(rules, (str, Rule)) or isinstance(attacks, (str, _attacks.Attack)):
        raise TypeError("rules and attacks are sequences, e.g. rules=['median']")
    for name, v, lo in (
        ("clients", clients, 1), ("rounds", rounds, 1), ("local_steps", local_steps, 1), ("seeds", seeds, 1),
        ("root_size", root_size, 1),
    ):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise InvalidParameterError(f"simulate: {name} must be an int >= {lo}, got {v!r}")
    if isinstance(byzantine, bool) or not isinstance(byzantine, int) or not 0 <= byzantine < clients:
        raise InvalidParameterError(
            f"simulate: byzantine must be an int in 0..clients-1, got {byzantine!r} with clients={clients}"
        )
    if not alpha > 0:
        raise InvalidParameterError(f"simulate: alpha must be > 0 (inf for IID), got {alpha}")
    if protocol not in PROTOCOLS:
        raise InvalidParameterError(f"simulate: protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not 0.0 <= momentum < 1.0:
        raise InvalidParameterError(f"simulate: momentum must be in [0, 1), got {momentum!r}")
    rule_objs = [_make_rule(r, byzantine) for r in rules]
    attack_objs = [_make_attack(a) for a in attacks]
    for label, r in rule_objs:
        if clients < r.min_inputs():
            raise InvalidParameterError(
                f"simulate: rule {label} needs at least {r.min_inputs()} clients, got clients={clients}"
            )
    seed_list = [seed + k for k in range(seeds)]
    result = SimulationResult(
        config=dict(
            dataset=dataset, model=model, clients=clients, byzantine=byzantine, rounds=rounds,
            protocol=protocol, local_steps=local_steps, momentum=momentum, batch_size=batch_size,
            lr=lr, alpha=alpha, weighted=weighted, seed=seed, seeds=seed_list, root_size=root_size,
        )
    )  # fmt: skip
    for label, r in rule_objs:
        if isinstance(r, Mean) and r.nonfinite == "robust":
            result.labels[label] = f"{label} (drops non-finite)"
    bar = _Progress(seeds * len(rule_objs) * len(attack_objs) * rounds, progress)
    t0 = time.perf_counter()
    try:
        for s in seed_list:
            data = load_dataset(dataset, s)
            net = _Model(model, data.x_train.shape[1], data.num_classes)
            result.config["params"] = net.size
            split = partition(data.y_train, clients, alpha, np.random.default_rng(s + 1))
            w0 = net.init(np.random.default_rng(s + 2))
            root = np.sort(np.random.default_rng(s + 4).permutation(len(data.y_train))[:root_size])
            run = _Run(net, data, split, w0, result.config, s, root)
            for a_label, atk in attack_objs:
                for (r_label, _), spec in zip(rule_objs, rules, strict=True):
                    # a fresh rule per pair and seed: its random draws depend on nothing else
                    rule = _make_rule(spec, byzantine, s)[1]

                    def step(rnd: int, acc: float, r_label: str = r_label, a_label: str = a_label) -> None:
                        if on_round is not None:
                            on_round(r_label, a_label, rnd + 1, acc)
                        bar.step(f"{r_label} vs {a_label}, round {rnd + 1}/{rounds}")

                    accs, kept = run.train(rule, atk, step)
                    result.runs.setdefault((r_label, a_label), []).append(accs)
                    if any(kept):
                        total = result.kept.setdefault((r_label, a_label), [0] * clients)
                        result.kept[(r_label, a_label)] = [a + b for a, b in zip(total, kept, strict=True)]
    finally:
        bar.close()
    for key, curves in result.runs.items():
        result.accuracy[key] = [statistics.fmean(v) for v in zip(*curves, strict=True)]
    result.seconds = time.perf_counter() - t0
    return result


class _Run:
    """One seed's data split and initial model; trains one (rule, attack) pair at a time."""

    def __init__(
        self,
        net: _Model,
        data: Dataset,
        split: list[np.ndarray],
        w0: np.ndarray,
        config: dict[str, Any],
        seed: int,
        root: np.ndarray,
    ) -> None:
        self.net, self.data, self.split, self.w0, self.c, self.seed = net, data, split, w0, config, seed
        self.root = root
        self.counts = np.array([len(p) for p in split], dtype=np.float64)

    def train(
        self, rule: Rule, atk: _attacks.Attack | None, step: Callable[[int, float], None]
    ) -> tuple[list[float], list[int]]:
        c, net, data = self.c, self.net, self.data
        n, f = c["clients"], c["byzantine"]
        honest_n = n - f
        rng = np.random.default_rng(self.seed + 3)  # same minibatches and attack draws for every pair
        w = self.w0.copy()
        accs: list[float] = []
        kept = [0] * n
        carried = rule.rounds()  # what the rule keeps between rounds (centered clipping's centre)
        moment = np.zeros((n + 1, net.size), dtype=np.float32)  # the last row: the server's
        beta = np.float32(c["momentum"])
        lr = c["lr"]
        server_rng = np.random.default_rng(self.seed + 5)  # the clients' draws stay the same

        def train(i: int, idx: np.ndarray, gen: np.random.Generator, poisoned: bool) -> np.ndarray:
            if c["protocol"] == "local_sgd":
                return _local_update(net, w, data, idx, gen, c["local_steps"], c["batch_size"], lr, poisoned)
            g = _gradient(net, w, data, idx, gen, c["batch_size"], poisoned)
            moment[i] = beta * moment[i] + (1 - beta) * g
            update: np.ndarray = -lr * moment[i]
            return update

        for rnd in range(c["rounds"]):
            if not np.isfinite(w).all():  # the attack destroyed the model: it stays destroyed
                accs.append(accs[-1])
                step(rnd, accs[-1])
                continue
            updates = np.empty((n, net.size), dtype=np.float32)
            for i in range(n):
                poisoned = i >= honest_n and atk is not None and atk.poisons_data
                updates[i] = train(i, self.split[i], rng, poisoned)
            extra: dict[str, Any] = {}
            if rule.uses_reference:
                extra["reference"] = train(n, self.root, server_rng, False)
            if not np.isfinite(updates[:honest_n]).all():
                # the model has diverged so far that honest training overflows: count it destroyed
                w = np.full_like(w, np.nan)
                accs.append(net.accuracy(w, data.x_test, data.y_test))
                step(rnd, accs[-1])
                continue
            if atk is not None and f and not atk.poisons_data:
                oracle = None
                if atk.adaptive:

                    def oracle(x: Any, state: Any = carried, extra: Any = extra) -> Any:
                        # the attacker knows the rule, its state and the server's update: it
                        # tries a copy of them
                        return copy.deepcopy(state).aggregate(x, **extra)[0]

                updates[honest_n:] = atk(updates[:honest_n], f=f, rng=rng, rule=oracle)
            weights = self.counts if c["weighted"] and rule.supports_weights else None
            with np.errstate(all="ignore"):
                agg, sel = carried.aggregate(updates, weights=weights, **extra)
                w = (w + agg).astype(np.float32)
            if sel is not None:
                for i in sel.indices.tolist():
                    kept[i] += 1
            acc = net.accuracy(w, data.x_test, data.y_test)
            accs.append(acc)
            step(rnd, acc)
        return accs, kept


def _batch(
    data: Dataset, idx: np.ndarray, rng: np.random.Generator, batch: int, poisoned: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A minibatch of the client's samples (labels flipped for a data-poisoning client)."""
    b = rng.choice(idx, size=min(batch, len(idx)), replace=False)
    y = data.y_train[b]
    if poisoned:
        y = _attacks.LabelFlip().poison_labels(y, data.num_classes)
    return data.x_train[b], y


def _gradient(
    net: _Model,
    w: np.ndarray,
    data: Dataset,
    idx: np.ndarray,
    rng: np.random.Generator,
    batch: int,
    poisoned: bool,
) -> np.ndarray:
    """One minibatch gradient at ``w`` on the client's samples."""
    x, y = _batch(data, idx, rng, batch, poisoned)
    with np.errstate(all="ignore"):
        return net.grad(w, x, y)


def _local_update(
    net: _Model,
    w: np.ndarray,
    data: Dataset,
    idx: np.ndarray,
    rng: np.random.Generator,
    steps: int,
    batch: int,
    lr: float,
    poisoned: bool,
) -> np.ndarray:
    """``steps`` minibatch SGD steps from ``w`` on the client's samples; returns the change."""
    local = w.copy()
    for _ in range(steps):
        x, y = _batch(data, idx, rng, batch, poisoned)
        with np.errstate(all="ignore"):
            local -= lr * net.grad(local, x, y)
    update: np.ndarray = local - w
    return update
