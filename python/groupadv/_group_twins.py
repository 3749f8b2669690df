"""The numpy and torch twins of the group-level primitives of issue 12 (the Rust core's
``src/select.rs`` and ``src/components.rs``): top-2 per group (pass@k) and (N, K)
multi-component rewards.

The numpy functions have the signatures of the native ones (``groupadv._native``) and are what
the numpy backend calls; they are built on the numpy backend's own stages (group moments,
advantages), so every rule (singleton, NaN, the exact 0 of an all-equal group, the guarded
std) is the one of ``groupadv._numpy``. The torch functions compute on the tensors' device
(CUDA) with the torch twin's ``advantages``.
"""

from __future__ import annotations

import numpy as np

from . import _numpy
from .errors import AdvantageOverflowError, NonFiniteRewardError, SingletonGroupError


def _ratio(num, d):
    """``num / d``, and 0 where ``d == 0`` (no spread: no signal), as ``policy::ratio``."""
    with np.errstate(all="ignore"):
        return np.where(d == 0, 0.0, num / np.where(d == 0, 1.0, d))


def _top2(x: np.ndarray, codes: np.ndarray, n_groups: int, omit: bool):
    """(best index, max, second, number of valid values) per group; NaN is the largest value
    (torch.topk), the first index wins ties (as ``select::Top2``)."""
    idx = np.arange(len(x))
    if omit:
        keep = np.isfinite(x)
        idx = idx[keep]
    v, c = x[idx], codes[idx]
    order = np.lexsort((-idx, v, c))  # by group, then value (NaN last), then first index last
    c_sorted = c[order]
    n = np.bincount(c_sorted, minlength=n_groups)
    end = np.cumsum(n)
    has = n > 0
    best = np.full(n_groups, -1, dtype=np.int64)
    mx = np.full(n_groups, np.nan)
    second = np.full(n_groups, np.nan)
    best[has] = idx[order[end[has] - 1]]
    mx[has] = v[order[end[has] - 1]]
    two = n > 1
    second[two] = v[order[end[two] - 2]]
    return best, mx, second, n


def passk_advantages(rewards, out, grouping, scale, ddof, eps, singleton, nan, num_threads):
    """numpy twin of ``select::passk_advantages``."""
    _numpy._check("mean", scale, ddof, eps, singleton, nan)
    if scale not in ("group", "none"):
        raise ValueError("pass@k advantages take scale='group' or 'none'")
    if singleton == "raw":
        raise ValueError("pass@k advantages take singleton='zero' or 'error' ('raw' has no meaning here)")
    g = grouping
    count, mean, m2, mscale = _numpy.group_moments(rewards, g, nan, None, num_threads)
    x = rewards.astype(np.float64)
    best, mx, second, n = _top2(x, g.codes().astype(np.int64), g.n_groups, nan == "omit")
    if singleton == "error" and (n == 1).any():
        grp = int(np.flatnonzero(n == 1)[0])
        members = g.members(grp)
        finite = members[np.isfinite(x[members])]
        i = int(finite[0]) if finite.size else int(members[0])
        raise SingletonGroupError(
            f"group {grp} (rewards[{i}]) has a single reward, and singleton='error'; "
            "use singleton='zero' or 'raw' to allow it", index=i, group=grp,
        )
    with np.errstate(all="ignore"):
        diff = mx - second
        if scale == "group":
            pre = 1.0 / mscale
            std = np.where(count > ddof, np.sqrt(m2 / (count - ddof)), np.nan)
            adv = _ratio(diff * pre, std + eps * pre)
        else:
            adv = diff
    live = n > 1
    a = adv[live].astype(rewards.dtype)
    bad = ~np.isfinite(a) & np.isfinite(mx[live]) & np.isfinite(second[live]) & np.isfinite(mean[live])
    if bad.any():
        grp = int(np.flatnonzero(live)[np.flatnonzero(bad)[0]])
        raise AdvantageOverflowError(f"the advantages of group {grp} overflow", group=grp)
    out[...] = 0.0
    out[best[live]] = a


def component_sums(rewards, k, weights, out, nan, num_threads):
    """numpy twin of ``components::weighted_row_sums`` (rewards: the flat (N, K) buffer)."""
    _numpy._check_nan(nan)
    x, w = _flat_components(rewards, k, weights)
    finite = np.isfinite(x)
    if nan == "raise" and not finite.all():
        i, j = (int(v) for v in np.argwhere(~finite)[0])
        raise NonFiniteRewardError(
            f"rewards[{i}, {j}] is {x[i, j]}; pass nan='propagate' or nan='omit' to allow non-finite rewards",
            index=i, value=float(x[i, j]),
        )
    wide = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if nan == "omit":
            s = _row_sum(np.where(finite, wide * w, 0.0))
            s[~finite.any(axis=1)] = np.nan
        else:
            s = _row_sum(wide * w)
        narrow = s.astype(out.dtype)
    over = np.isfinite(s) & ~np.isfinite(narrow)
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise ValueError(f"the weighted sum of rewards row {i} ({s[i]:e}) overflows the rewards' dtype")
    out[...] = narrow


def _row_sum(terms: np.ndarray) -> np.ndarray:
    """Left-to-right sums of each row (the core's order)."""
    s = np.zeros(terms.shape[0])
    for j in range(terms.shape[1]):
        s += terms[:, j]
    return s


def _flat_components(rewards, k, weights):
    if k < 1 or len(rewards) % k:
        raise ValueError(f"a buffer of {len(rewards)} values is not (N, K) with K = {k} >= 1")
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != k:
        raise ValueError(f"weights has length {len(w)}, expected {k} (one per component)")
    if not np.isfinite(w).all():
        j = int(np.flatnonzero(~np.isfinite(w))[0])
        raise ValueError(f"weights must be finite, got weights[{j}] = {w[j]}")
    return rewards.reshape(-1, k), w


def normalize_then_sum(rewards, k, weights, out, grouping, center, scale, ddof, eps, singleton, nan,
                       num_threads):
    """numpy twin of ``components::normalize_then_sum``: the numpy backend's advantages of
    each component (as float64), summed with the weights."""
    _numpy._check(center, scale, ddof, eps, singleton, nan)
    if scale not in ("group", "none"):
        raise ValueError("normalize_then_sum takes scale='group' or 'none' per component")
    x, w = _flat_components(rewards, k, weights)
    if len(x) != grouping.n:
        raise ValueError(f"rewards has {len(x)} rows but the groups cover {grouping.n} rewards")
    acc = np.zeros(len(x))
    adv = np.empty(len(x))
    for j in range(k):
        col = np.ascontiguousarray(x[:, j], dtype=np.float64)
        _numpy.advantages(col, adv, grouping, center, scale, ddof, eps, singleton, nan, num_threads)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
            acc += w[j] * adv
    codes = grouping.codes().astype(np.int64)
    bad = ~np.isfinite(acc)
    if bad.any():
        # NaN by request (a poisoned component under "propagate"), else an overflow of finite rewards
        poisoned = np.bincount(codes, weights=(~np.isfinite(x)).any(axis=1), minlength=grouping.n_groups) > 0
        over = bad & ~(poisoned[codes] if nan == "propagate" else False)
        if over.any():
            grp = int(codes[np.flatnonzero(over)[0]])
            raise AdvantageOverflowError(f"the advantages of group {grp} overflow", group=grp)
    narrow = acc.astype(out.dtype)
    lost = ~np.isfinite(narrow) & np.isfinite(acc)
    if lost.any():
        grp = int(codes[np.flatnonzero(lost)[0]])
        raise AdvantageOverflowError(f"the advantages of group {grp} overflow", group=grp)
    out[...] = narrow


# ============================================================================ torch (devices)


def torch_passk(x, codes, n_groups, scale, ddof, eps, singleton, nan):
    """pass@k advantages of a 1-D tensor on its device (float64 statistics, the result in
    float64): the rules of :func:`passk_advantages`, the faults reported by the numpy twin."""
    import torch

    xd = x.detach().to(torch.float64)
    finite = torch.isfinite(xd)
    if (nan == "raise" and not bool(finite.all())) or singleton == "error":
        # Faults (and only they) are found by the host twin: same rules, same messages.
        from ._groups import make_groups

        g = make_groups(len(xd), group_ids=codes.cpu().numpy())
        host = xd.cpu().numpy()
        passk_advantages(host, np.empty_like(host), g._impl, scale, ddof, eps, singleton, nan, 0)
    live = finite if nan == "omit" else torch.ones_like(finite)
    n = torch.zeros(n_groups, dtype=torch.long, device=xd.device).index_add_(0, codes, live.long())
    idx = torch.arange(len(xd), device=xd.device)
    key = torch.where(live, xd, torch.tensor(-np.inf, dtype=xd.dtype, device=xd.device))
    # Sort by (group, value with NaN largest, first index last): stable sorts, last key first.
    order = torch.argsort(-idx, stable=True)
    v = key[order]
    nanv = torch.isnan(v)
    order = order[torch.argsort(torch.where(nanv, torch.tensor(np.inf, dtype=v.dtype, device=v.device), v),
                                stable=True)]
    order = order[torch.argsort(torch.isnan(key[order]).long(), stable=True)]
    order = order[torch.argsort(codes[order], stable=True)]
    sizes = torch.bincount(codes, minlength=n_groups)
    end = torch.cumsum(sizes, 0)
    has = n > 1
    best = order[end[has] - 1]
    mx = xd[best]
    second = xd[order[end[has] - 2]]
    diff = mx - second
    if scale == "group":
        from ._torch import _moments, _std

        count, _mean, m2, mscale, _s, _r = _moments(xd, live, codes, n_groups)
        std = _std(count, m2, mscale, ddof)[has]
        d = std + eps
        diff = torch.where(d == 0, torch.zeros_like(diff), diff / torch.where(d == 0, torch.ones_like(d), d))
    out = torch.zeros_like(xd)
    out[best] = diff
    return out


def torch_component_sums(x, weights, nan):
    """Weighted row sums of an (N, K) tensor on its device, in float64 (rules as
    :func:`component_sums`; faults reported by the numpy twin)."""
    import torch

    xd = x.detach().to(torch.float64)
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64), device=xd.device)
    finite = torch.isfinite(xd)
    if nan == "raise" and not bool(finite.all()):
        host = xd.cpu().numpy()
        component_sums(host.reshape(-1), host.shape[1], np.asarray(weights, np.float64),
                       np.empty(host.shape[0]), nan, 0)
    if nan == "omit":
        s = torch.where(finite, xd * w, torch.zeros_like(xd)).sum(dim=1)
        return torch.where(finite.any(dim=1), s, torch.full_like(s, float("nan")))
    return (xd * w).sum(dim=1)


def torch_normalize_then_sum(x, weights, codes, n_groups, **params):
    """``sum_k w_k A_k`` of an (N, K) tensor on its device, each ``A_k`` the torch twin's
    group advantages of component k (float64)."""
    import torch

    from ._torch import advantages

    xd = x.detach().to(torch.float64)
    acc = torch.zeros(xd.shape[0], dtype=torch.float64, device=xd.device)
    for j, wj in enumerate(np.asarray(weights, dtype=np.float64)):
        acc += float(wj) * advantages(xd[:, j].contiguous(), codes=codes, n_groups=n_groups, **params)
    return acc
