"""torch versions of the rules and pre-aggregators added with issue 9.

They share one pattern: decisions (which inputs, which weights) are taken on small metadata —
the ``(n, n)`` distance matrix, ``n`` norms — by the same code as the numpy API (Rust, numpy),
and the output is then formed from ``x`` with differentiable torch ops and aggkit ops on the
input's device. The data never leaves its device (only ``n²`` distances do), and the gradient
flows to the chosen inputs with the selection treated as constant (ALGORITHMS.md §0.6). Rules
written entirely in torch ops (centered clipping, sign vote, clipping, ARC) get torch's exact
autograd. The weighted median and trimmed mean run as torch ops (sort, cumulative weights,
gather) on every device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from aggkit import _core
from aggkit._validate import POLICIES, check_choice, check_f, check_n, check_weights
from aggkit.errors import InvalidParameterError
from aggkit.rules.krum import Selection
from aggkit.torch import _native, _ops


def _prepared(x: Any, rule: str) -> Any:
    from aggkit.torch import _Prepared

    return _Prepared(x, rule)


def _needs_grad(x: Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def distances(x: Tensor) -> np.ndarray:
    """``(n, n)`` float64 squared distances of the rows of ``x``, as numpy (Rust on CPU)."""
    xd = x.detach()
    if _ops._rust(xd):
        return _core.pairwise_sq_distances(xd.numpy())
    return _native.pairwise_sq_distances(xd).cpu().numpy()


def _bad_rows(x: Tensor) -> list[int]:
    return _native.nonfinite_rows(x.detach())


def _finite_part(x: Tensor, f: int, nonfinite: str, rule: str) -> tuple[list[int], int]:
    bad = _bad_rows(x)
    if bad and nonfinite == "raise":
        raise _native.nonfinite_error(rule, bad, "nonfinite='raise' refuses NaN and infinite values")
    if len(bad) > f:
        raise _native.nonfinite_error(rule, bad, f"more than f={f} inputs are non-finite")
    good = [i for i in range(x.shape[0]) if i not in set(bad)]
    return good, f - len(bad)


def _subset_mean(x: Tensor, idx: list[int], weights: list[float] | None = None) -> Tensor:
    sub = x[torch.tensor(idx, dtype=torch.long, device=x.device)]
    out, _ = torch.ops.aggkit.mean(sub, weights or [], "propagate")
    return out


# ---------------------------------------------------------------------------------------------
# weighted median / trimmed mean


def weighted_median(x: Tensor, w: list[float], even: str, nonfinite: str) -> Tensor:
    """Weighted median of the columns of ``(n, d)`` ``x`` (see :func:`aggkit.median`)."""
    _native.check_policy(x, "median", nonfinite)
    n = x.shape[0]
    order = _native.rank_order(x)
    wt = torch.tensor(w, dtype=torch.float64, device=x.device)[order]
    c = wt.cumsum(0)
    total = c[-1:]
    reach = (2.0 * c >= total) & (wt > 0)
    r = reach.to(torch.uint8).argmax(0, keepdim=True)
    exact = (2.0 * c.gather(0, r) == total)[0]
    rank = torch.arange(n, device=x.device)[:, None]
    nxt = (rank > r) & (wt > 0)
    s = torch.where(nxt.any(0, keepdim=True), nxt.to(torch.uint8).argmax(0, keepdim=True), r)
    vr = x.gather(0, order.gather(0, r))[0]
    vs = x.gather(0, order.gather(0, s))[0]
    if even == "lower":
        out = vr
    elif even == "upper":
        out = torch.where(exact, vs, vr)
    else:
        out = torch.where(exact, _native.midpoint(vr, vs), vr)
    if nonfinite == "propagate":
        out = torch.where(torch.isnan(x).any(0), torch.full_like(out, float("nan")), out)
    return out


def weighted_trimmed_mean(x: Tensor, w: list[float], f: int, nonfinite: str) -> Tensor:
    """Weighted trimmed mean of the columns of ``(n, d)`` ``x`` (see :func:`aggkit.trimmed_mean`)."""
    _native.check_policy(x, "trimmed_mean", nonfinite)
    n = x.shape[0]
    order = _native.rank_order(x)
    wt = torch.tensor(w, dtype=torch.float64, device=x.device)[order]
    c1 = wt.cumsum(0)
    c0 = c1 - wt
    total = c1[-1:]
    t = total * f / n
    part = (torch.minimum(c1, total - t) - torch.maximum(c0, t)).clamp(min=0.0)
    vals = x.gather(0, order).double()
    vals = torch.where(part > 0, vals, torch.zeros((), dtype=vals.dtype, device=x.device))
    out = ((part * vals).sum(0) / part.sum(0)).to(x.dtype)
    if nonfinite == "propagate":
        out = torch.where(torch.isnan(x).any(0), torch.full_like(out, float("nan")), out)
    return out


# ---------------------------------------------------------------------------------------------
# rules


def meamed(x: Any, *, f: int, nonfinite: str = "robust") -> Tensor:
    """Meamed; see :func:`aggkit.meamed`. The gradient is ``1/(n - f)`` to each kept value."""
    f = check_f(f, "meamed")
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "meamed")
    p = _prepared(x, "meamed")
    check_n("meamed", "n >= 2f + 1", p.n, f, 2 * f + 1)
    out, _, _ = torch.ops.aggkit.meamed(p.x, p.n - f, nonfinite, _needs_grad(p.x))
    return p.finish(out)


def bulyan(
    x: Any,
    *,
    f: int,
    variant: str = "paper",
    clamp: bool = True,
    nonfinite: str = "robust",
    return_selection: bool = False,
) -> Any:
    """Bulyan; see :func:`aggkit.bulyan`. The gradient reaches the selected inputs' kept values."""
    from aggkit.rules.bulyan import VARIANTS, bulyan_plan
    from aggkit.rules.subsets import POLICIES_SUBSET

    f = check_f(f, "bulyan")
    check_choice(variant, "variant", VARIANTS, "bulyan")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "bulyan")
    p = _prepared(x, "bulyan")
    _finite_part(p.x, f, nonfinite, "bulyan")
    sel, scores, keep = bulyan_plan(distances(p.x), p.n, f, variant, bool(clamp))
    sub = p.x[torch.tensor(sel, dtype=torch.long, device=p.x.device)]
    if variant == "paper":
        out, _, _ = torch.ops.aggkit.meamed(sub, keep, "robust", _needs_grad(sub))
    else:
        out, _, _ = torch.ops.aggkit.trimmed_mean(sub, f, "robust", _needs_grad(sub))
    y = p.finish(out)
    if not return_selection:
        return y
    dev = p.x.device
    return y, Selection(torch.tensor(sel, dtype=torch.int64, device=dev), torch.from_numpy(scores).to(dev))


def centered_clipping(
    x: Any, *, tau: float = 100.0, iters: int = 1, center: Any = None, nonfinite: str = "robust"
) -> Tensor:
    """Centered clipping in torch ops (float64), with torch's exact autograd through every step.

    The centre receives no gradient (it is detached, ALGORITHMS.md §6).
    """
    from aggkit.rules.centered_clipping import check_cc_params

    check_cc_params(tau, iters, nonfinite)
    p = _prepared(x, "centered_clipping")
    xs = p.x
    _native.check_policy(xs, "centered_clipping", nonfinite)
    if nonfinite == "robust":
        good = torch.isfinite(xs).all(dim=1)
        if not bool(good.any()):
            raise _native.nonfinite_error(
                "centered_clipping",
                list(range(p.n)),
                "every input holds NaN or infinite values, nothing is left",
            )
        if not bool(good.all()):
            xs = xs[good]
    xd = xs.double()
    d = xd.shape[1]
    if center is None:
        v = torch.zeros(d, dtype=torch.float64, device=xd.device)
    else:
        c = torch.as_tensor(center).detach().to(device=xd.device, dtype=torch.float64).reshape(-1)
        if c.numel() != d:
            raise InvalidParameterError(
                f"centered_clipping: the center must have the inputs' size: got {c.numel()} values for d={d}"
            )
        v = c
    tiny = torch.finfo(torch.float64).tiny
    for _ in range(int(iters)):
        diff = xd - v[None]
        norm = diff.square().sum(dim=1).sqrt()
        scale = torch.clamp(float(tau) / norm.clamp(min=tiny), max=1.0)
        v = v + (diff * scale[:, None]).sum(dim=0) / xd.shape[0]
    return p.finish(v.to(p.x.dtype))


def sign_vote(x: Any, *, nonfinite: str = "robust") -> Tensor:
    """Majority vote of signs; see :func:`aggkit.sign_vote`. Zero gradient (sign is flat)."""
    nonfinite = check_choice(nonfinite, "nonfinite", POLICIES, "sign_vote")
    p = _prepared(x, "sign_vote")
    _native.check_policy(p.x, "sign_vote", nonfinite)
    votes = torch.sign(torch.nan_to_num(p.x, nan=0.0)).sum(dim=0)
    out = torch.sign(votes).to(p.x.dtype)
    if nonfinite == "propagate":
        out = torch.where(torch.isnan(p.x).any(0), torch.full_like(out, float("nan")), out)
    return p.finish(out)


def mda(x: Any, *, f: int, max_subsets: int = 10**7, nonfinite: str = "robust") -> Tensor:
    """MDA; see :func:`aggkit.mda`. The gradient is ``1/(n - f)`` to each kept input."""
    from aggkit.rules.subsets import POLICIES_SUBSET, check_max_subsets, mda_indices

    f = check_f(f, "mda")
    max_subsets = check_max_subsets(max_subsets, "mda")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "mda")
    p = _prepared(x, "mda")
    check_n("mda", "n >= 2f + 1", p.n, f, 2 * f + 1)
    good, f2 = _finite_part(p.x, f, nonfinite, "mda")
    kept = mda_indices(distances(p.x[good]), f2, max_subsets)
    return p.finish(_subset_mean(p.x, [good[i] for i in kept]))


def smea(x: Any, *, f: int, max_subsets: int = 10**5, nonfinite: str = "robust") -> Tensor:
    """SMEA; see :func:`aggkit.smea`. The gradient is ``1/(n - f)`` to each kept input."""
    from aggkit.rules.subsets import POLICIES_SUBSET, check_max_subsets, smea_indices

    f = check_f(f, "smea")
    max_subsets = check_max_subsets(max_subsets, "smea")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "smea")
    p = _prepared(x, "smea")
    check_n("smea", "n >= 2f + 1", p.n, f, 2 * f + 1)
    good, f2 = _finite_part(p.x, f, nonfinite, "smea")
    kept = smea_indices(distances(p.x[good]), f2, max_subsets)
    return p.finish(_subset_mean(p.x, [good[i] for i in kept]))


def caf(x: Any, *, f: int, nonfinite: str = "robust") -> Tensor:
    """CAF; see :func:`aggkit.caf`. The gradient is ``c_i / Σ c`` (final weights held constant)."""
    from aggkit.rules.subsets import POLICIES_SUBSET, caf_weights

    f = check_f(f, "caf")
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "caf")
    p = _prepared(x, "caf")
    check_n("caf", "n >= 2f + 1", p.n, f, 2 * f + 1)
    good, _ = _finite_part(p.x, f, nonfinite, "caf")
    c = caf_weights(distances(p.x[good]), p.n, f)
    keep = [k for k in range(len(good)) if c[k] > 0]
    return p.finish(_subset_mean(p.x, [good[k] for k in keep], [float(c[k]) for k in keep]))


def monna(x: Any, *, f: int, idx: int = 0, nonfinite: str = "robust") -> Tensor:
    """MoNNA; see :func:`aggkit.monna`. The gradient is ``1/(n - f)`` to each kept input."""
    from aggkit.rules.subsets import POLICIES_SUBSET, check_index, monna_indices

    f = check_f(f, "monna")
    idx = check_index(idx)
    check_choice(nonfinite, "nonfinite", POLICIES_SUBSET, "monna")
    p = _prepared(x, "monna")
    check_n("monna", "n >= 2f + 1", p.n, f, 2 * f + 1)
    if idx >= p.n:
        raise InvalidParameterError(f"monna: idx must be < n, got idx={idx}, n={p.n}")
    _finite_part(p.x, f, nonfinite, "monna")
    xd = p.x.detach()
    if not bool(torch.isfinite(xd[idx]).all()):
        raise _native.nonfinite_error("monna", [idx], "the trusted input must be finite")
    if _ops._rust(xd):
        dist = _core.dists_to(xd.numpy(), np.ascontiguousarray(xd[idx].double().numpy()))
    else:
        dist = (xd.double() - xd[idx].double()[None]).square().sum(dim=1).sqrt().cpu().numpy()
    return p.finish(_subset_mean(p.x, monna_indices(dist, f)))


# ---------------------------------------------------------------------------------------------
# pre-aggregators: (n, *shape) -> (m, *shape) tensors


def _rows_like(p: Any, out: Tensor) -> Tensor:
    out = out.reshape(out.shape[0], *p.shape)
    return out if out.dtype == p.dtype else out.to(p.dtype)


def _group_means(x: Tensor, groups: list[list[int]]) -> Tensor:
    """Means of groups of rows as one differentiable matrix product (0/1 weights / size)."""
    m = torch.zeros(len(groups), x.shape[0], dtype=x.dtype, device=x.device)
    for g, members in enumerate(groups):
        m[g, members] = 1.0 / len(members)
    finite = torch.isfinite(x).all(dim=1)
    if bool(finite.all()):
        return m @ x
    # 0 * inf would be NaN: sum only the members, row by row.
    return torch.stack([x[members].sum(dim=0) / len(members) for members in groups])


def nnm(x: Any, *, f: int) -> Tensor:
    """Nearest-neighbour mixing; see :class:`aggkit.NNM`. Gradient ``1/(n - f)`` per neighbour."""
    from aggkit.preagg import _check_less, nnm_neighbours

    p = _prepared(x, "nnm")
    _check_less(f, p.n)
    nb = nnm_neighbours(distances(p.x), f)
    return _rows_like(p, _group_means(p.x, nb.tolist()))


def bucketing(x: Any, pre: Any) -> Tensor:
    """Bucketing; see :class:`aggkit.Bucketing` (its generator draws the permutation)."""
    p = _prepared(x, "bucketing")
    return _rows_like(p, _group_means(p.x, pre.buckets(p.n)))


def _clip(x: Tensor, tau: Tensor | float) -> Tensor:
    norm = x.double().square().sum(dim=1).sqrt()
    scale = torch.where(norm > tau, tau / norm, torch.ones_like(norm))
    scale = torch.where(torch.isfinite(norm), scale, torch.ones_like(norm))
    return x * scale.to(x.dtype)[:, None]


def clipping(x: Any, *, c: float) -> Tensor:
    """Static clipping; see :class:`aggkit.Clipping` (torch's autograd, any device)."""
    p = _prepared(x, "clipping")
    return _rows_like(p, _clip(p.x, float(c)))


def arc(x: Any, *, f: int) -> Tensor:
    """ARC; see :class:`aggkit.ARC`. The gradient includes the path through the threshold."""
    p = _prepared(x, "arc")
    if f > p.n:
        raise InvalidParameterError(f"arc: needs f <= n, got f={f}, n={p.n}")
    k = 2 * f * (p.n - f) // p.n
    if k == 0:
        return _rows_like(p, p.x.clone())
    norm = p.x.double().square().sum(dim=1).sqrt()
    key = torch.where(torch.isnan(norm), torch.full_like(norm, float("inf")), norm)
    order = torch.sort(key.detach(), stable=True).indices
    tau = key[order[p.n - k - 1]]
    return _rows_like(p, _clip(p.x, tau))


def perturb(x: Any, pre: Any) -> Tensor:
    """Noise ``b · xi`` added to each input; see :class:`aggkit.Perturb` (noise drawn by numpy)."""
    p = _prepared(x, "perturb")
    noise = torch.from_numpy(pre.draw(p.n, p.x.shape[1])).to(device=p.x.device, dtype=p.x.dtype)
    return _rows_like(p, p.x + noise)


def check_rule_weights(weights: Any, n: int, rule: str) -> list[float]:
    """Per-input weights for the weighted order statistics."""
    return check_weights(weights, n, rule)


# ---------------------------------------------------------------------------------------------
# geometric median: the unrolled and implicit gradients


def gm_unrolled(x: Tensor, keep: Tensor, a: Tensor, nu: float, iters: int, init: str) -> Tensor:
    """Replay ``iters`` Weiszfeld steps with differentiable torch ops (float64)."""
    xs, aa = x[keep].double(), a[keep]
    if init == "mean":
        z = (aa[:, None] * xs).sum(0) / aa.sum()
    elif init == "median":
        z = xs.median(dim=0).values if xs.shape[0] % 2 else torch.quantile(xs, 0.5, dim=0)
    else:
        z = torch.zeros(xs.shape[1], dtype=torch.float64, device=x.device)
    for _ in range(iters):
        w = aa / (xs - z).norm(dim=1).clamp(min=nu)
        z = (w[:, None] * xs).sum(0) / w.sum()
    return z


class _GmImplicit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, z: Tensor, keep: Tensor, a: Tensor, nu: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, z, keep, a)
        ctx.nu = nu
        return z.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        x, z, keep, a = ctx.saved_tensors
        xs = x[keep].double()
        diff = z.double()[None] - xs
        r = diff.norm(dim=1).clamp(min=ctx.nu)
        u = diff / r[:, None]
        c = a[keep] / r

        def h(v: Tensor) -> Tensor:  # H v = Σ c_i (v - u_i (u_i . v))
            return c.sum() * v - (c * (u @ v)) @ u

        gd = g.double()
        v = torch.zeros_like(gd)
        res = gd.clone()
        dirn = res.clone()
        rs = res @ res
        tol = 1e-24 * float(gd @ gd)
        for _ in range(max(50, 4 * gd.numel())):
            if float(rs) <= tol:
                break
            hd = h(dirn)
            step = rs / (dirn @ hd)
            v = v + step * dirn
            res = res - step * hd
            rs_new = res @ res
            dirn = res + (rs_new / rs) * dirn
            rs = rs_new
        gx = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        gx[keep] = c[:, None] * (v[None] - u * (u @ v)[:, None])
        return gx.to(x.dtype), None, None, None, None


def gm_implicit(x: Tensor, z: Tensor, keep: Tensor, a: Tensor, nu: float) -> Tensor:
    """``z`` (the converged median) with the implicit-function gradient to ``x``."""
    return _GmImplicit.apply(x, z, keep, a, nu)
