"""The numpy and torch twins of the optimal-token-baseline core (``src/token_baseline.rs``).

Same inputs, same rules, same errors as the Rust core; float64 arithmetic throughout (the
caller rounds to its output dtype). The rules, written once here per backend as in the core:

* ``G = reverse cumsum(r m)``, ``w = (1 - 2 exp(lp) + q) rho^2``, ``W = cumsum(w m)``;
* per group and step k: ``b = sum G W m / (sum W m + eps)``; where every response with
  ``W m != 0`` has the same return, ``b`` is exactly that return (the exact-0 rule);
* groups of fewer than 2 responses (``turn``: with a valid token) get ``b = 0``;
* ``handle_zero_tail``: the unique longest response gets ``b = 0`` from the second-longest
  length on;
* ``turn`` aligns steps by rank among each response's valid tokens; a response without valid
  tokens, and every masked token, get 0.

Errors (``nan="raise"``): the earliest response (row) with a fault; within it, a non-finite
path-variance weight (naming ``old_log_probs`` / ``sum_pi_squared`` / ``rollout_is_weights``
``[row, t]``; ``-inf`` log-probs are allowed) before a non-finite reward.
"""

from __future__ import annotations

import numpy as np

from .errors import NonFiniteRewardError


def _weight_error(lp, q, rho, i: int) -> ValueError:
    for what, x in (("old_log_probs", lp), ("sum_pi_squared", q), ("rollout_is_weights", rho)):
        if x is None:
            continue
        row = np.asarray(x[i], dtype=np.float64)
        for t in np.flatnonzero(~np.isfinite(row)):
            v = float(row[t])
            if not (what == "old_log_probs" and v == -np.inf):
                return ValueError(f"{what}[{i}, {t}] is {_fmt(v)}; the path-variance weights must be finite "
                                  "(pass nan='propagate' to let it spread as verl does)")
    return ValueError(f"the path-variance weights of response {i} overflow float64; rescale rollout_is_weights")


def _fmt(v: float) -> str:
    """A float as Rust's Display writes it (NaN, inf, -inf, 2 for 2.0), so every backend
    says the same."""
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _mask_error(m, i: int) -> ValueError:
    row = np.asarray(m[i], dtype=np.float64)
    t = int(np.flatnonzero((row != 0) & (row != 1))[0])
    return ValueError(f"response_mask[{i}, {t}] is {_fmt(float(row[t]))}; the mask must hold only 0 and 1")


def _reward_error(r, i: int) -> ValueError:
    row = np.asarray(r[i], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(row))
    if bad.size == 0:
        return ValueError(f"the returns of response {i} overflow float64")
    v = float(row[bad[0]])
    return NonFiniteRewardError(
        f"rewards[{i}] is {_fmt(v)}; pass nan='propagate' or nan='omit' to allow non-finite rewards",
        index=i, value=v)


def _first_error(bad_m, w_last, g_first, r, m, lp, q, rho, raise_: bool):
    """The error of the earliest faulty row (within it: the mask, then the weights, then the
    rewards), or None. A mask that is not 0/1 is an error under every ``nan``."""
    bad_w = ~np.isfinite(w_last) if raise_ else np.zeros_like(bad_m)
    bad_g = ~np.isfinite(g_first) if raise_ else np.zeros_like(bad_m)
    rows = np.flatnonzero(bad_m | bad_w | bad_g)
    if rows.size == 0:
        return None
    i = int(rows[0])
    if bad_m[i]:
        return _mask_error(m, i)
    return _weight_error(lp, q, rho, i) if bad_w[i] else _reward_error(r, i)


def otb_numpy(r, m, lp, q, rho, codes, n_groups: int, turn: bool, handle_zero_tail: bool, eps: float,
              nan: str):
    """(advantages, returns) as float64 (bs, L) arrays. ``m``: the mask (bs, L), any real
    dtype, 0 and 1 only (checked); ``codes``: each row's group in ``0..n_groups``."""
    f8 = np.float64
    bs, L = r.shape
    mf = m.astype(f8)
    bad_m = ((mf != 0) & (mf != 1)).any(axis=1) if L else np.zeros(bs, bool)
    with np.errstate(all="ignore"):
        G = np.cumsum((r.astype(f8) * mf)[:, ::-1], axis=1)[:, ::-1]
        w = 1.0 - 2.0 * np.exp(lp.astype(f8)) + q.astype(f8)
        if rho is not None:
            x = rho.astype(f8)
            w = w * (x * x)
        W = np.cumsum(w * mf, axis=1)
    if bs and L:
        err = _first_error(bad_m, W[:, -1], G[:, 0], r, m, lp, q, rho, nan == "raise")
        if err is not None:
            raise err
    G = np.ascontiguousarray(G)
    m = mf != 0
    adv = np.zeros((bs, L), f8)
    if bs == 0 or L == 0:
        return adv, G
    lengths = m.astype(np.int64).sum(axis=1)
    if turn:
        valid = m != 0
        rank = np.cumsum(valid, axis=1) - 1
        rows_i, cols_t = np.nonzero(valid)
        ranks = rank[rows_i, cols_t]
        Gc, Wc = np.zeros((bs, L), f8), np.zeros((bs, L), f8)
        Gc[rows_i, ranks] = G[rows_i, cols_t]
        Wc[rows_i, ranks] = W[rows_i, cols_t]
        mc = (np.arange(L)[None, :] < lengths[:, None]).astype(f8)
        part = lengths > 0
    else:
        Gc, Wc, mc, part = G, W, mf, np.ones(bs, bool)
    codes = np.asarray(codes, np.int64)
    with np.errstate(all="ignore"):
        wm = Wc * mc
        gw = Gc * wm
    sel = np.flatnonzero(part)
    order = sel[np.argsort(codes[sel], kind="stable")]
    sc = codes[order]
    starts = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]]) if order.size else np.zeros(0, np.int64)
    gids = sc[starts]
    counts = np.diff(np.r_[starts, order.size])
    B = np.zeros((n_groups, L), f8)
    if order.size:
        carries = wm[order] != 0
        with np.errstate(all="ignore"):
            num = np.add.reduceat(gw[order], starts, axis=0)
            den = np.add.reduceat(wm[order], starts, axis=0)
            gmin = np.minimum.reduceat(np.where(carries, Gc[order], np.inf), starts, axis=0)
            gmax = np.maximum.reduceat(np.where(carries, Gc[order], -np.inf), starts, axis=0)
            n_carry = np.add.reduceat(carries.astype(np.int64), starts, axis=0)
            b = num / (den + eps)
        equal = (n_carry > 0) & (gmin == gmax) & ~np.isnan(num)
        b = np.where(equal, gmin, b)
        b[counts < 2] = 0.0
        B[gids] = b
    base = B[codes]
    if handle_zero_tail and order.size:
        lo = lengths[order]
        gmaxlen = np.maximum.reduceat(lo, starts)
        at_max = lo == np.repeat(gmaxlen, counts)
        n_at_max = np.add.reduceat(at_max.astype(np.int64), starts)
        second = np.maximum.reduceat(np.where(at_max, -1, lo), starts)
        for g in np.flatnonzero((n_at_max == 1) & (counts >= 2) & (gmaxlen > second)):
            seg = order[starts[g]:starts[g] + counts[g]]
            row = int(seg[at_max[starts[g]:starts[g] + counts[g]]][0])
            base[row, int(second[g]):] = 0.0
    with np.errstate(all="ignore"):
        adv_c = (Gc - base) * mc
    if turn:
        adv[rows_i, cols_t] = adv_c[rows_i, ranks]
    else:
        adv = adv_c
    return adv, G


def otb_torch(r, m, lp, q, rho, codes, n_groups: int, turn: bool, handle_zero_tail: bool, eps: float,
              nan: str):
    """The torch twin on the tensors' device (float64); ``m`` a bool/0-1 tensor, ``codes`` an
    int64 tensor. Returns float64 (advantages, returns)."""
    import torch

    f8 = torch.float64
    bs, L = r.shape
    dev = r.device
    mf = m.to(f8)
    G = torch.flip(torch.cumsum(torch.flip(r.to(f8) * mf, [1]), 1), [1])
    w = 1.0 - 2.0 * torch.exp(lp.to(f8)) + q.to(f8)
    if rho is not None:
        x = rho.to(f8)
        w = w * (x * x)
    W = torch.cumsum(w * mf, 1)
    if bs and L:
        bad_m = ((mf != 0) & (mf != 1)).any(1)
        bad = bad_m
        if nan == "raise":
            bad = bad | ~torch.isfinite(W[:, -1]) | ~torch.isfinite(G[:, 0])
        if bool(bad.any()):
            cpu = lambda t: None if t is None else t.detach().to("cpu", f8).numpy()  # noqa: E731
            err = _first_error(bad_m.cpu().numpy(), cpu(W[:, -1]), cpu(G[:, 0]), cpu(r), cpu(mf), cpu(lp),
                               cpu(q), cpu(rho), nan == "raise")
            assert err is not None
            raise err
    adv = torch.zeros((bs, L), dtype=f8, device=dev)
    if bs == 0 or L == 0:
        return adv, G
    valid = m != 0
    lengths = valid.sum(1)
    if turn:
        rank = torch.cumsum(valid.to(torch.int64), 1) - 1
        ri, ti = torch.nonzero(valid, as_tuple=True)
        rk = rank[ri, ti]
        Gc = torch.zeros((bs, L), dtype=f8, device=dev)
        Wc = torch.zeros_like(Gc)
        Gc[ri, rk] = G[ri, ti]
        Wc[ri, rk] = W[ri, ti]
        mc = (torch.arange(L, device=dev)[None, :] < lengths[:, None]).to(f8)
        part = lengths > 0
    else:
        Gc, Wc, mc, part = G, W, mf, torch.ones(bs, dtype=torch.bool, device=dev)
    codes = codes.to(dev, torch.int64)
    wm = Wc * mc
    pc = torch.where(part, codes, torch.full_like(codes, n_groups))  # non-participants: a spare group
    k = n_groups + 1
    num = torch.zeros((k, L), dtype=f8, device=dev).index_add_(0, pc, Gc * wm)
    den = torch.zeros((k, L), dtype=f8, device=dev).index_add_(0, pc, wm)
    carries = wm != 0
    inf = torch.tensor(float("inf"), dtype=f8, device=dev)
    gmin = torch.full((k, L), float("inf"), dtype=f8, device=dev).scatter_reduce(
        0, pc[:, None].expand(bs, L), torch.where(carries, Gc, inf), "amin")
    gmax = torch.full((k, L), float("-inf"), dtype=f8, device=dev).scatter_reduce(
        0, pc[:, None].expand(bs, L), torch.where(carries, Gc, -inf), "amax")
    n_carry = torch.zeros((k, L), dtype=torch.int64, device=dev).index_add_(0, pc, carries.to(torch.int64))
    counts = torch.zeros(k, dtype=torch.int64, device=dev).index_add_(0, pc, torch.ones_like(pc))
    b = num / (den + eps)
    equal = (n_carry > 0) & (gmin == gmax) & ~torch.isnan(num)
    b = torch.where(equal, gmin, b)
    b[counts < 2] = 0.0
    base = b[pc]
    if handle_zero_tail:
        lens = torch.where(part, lengths, torch.full_like(lengths, -1))
        gmaxlen = torch.full((k,), -1, dtype=torch.int64, device=dev).scatter_reduce(0, pc, lens, "amax")
        at_max = part & (lens == gmaxlen[pc])
        n_at_max = torch.zeros(k, dtype=torch.int64, device=dev).index_add_(0, pc, at_max.to(torch.int64))
        second = torch.full((k,), -1, dtype=torch.int64, device=dev).scatter_reduce(
            0, pc, torch.where(at_max, torch.full_like(lens, -1), lens), "amax")
        rows = torch.nonzero(at_max & (n_at_max[pc] == 1) & (counts[pc] >= 2) & (gmaxlen[pc] > second[pc]),
                             as_tuple=True)[0]
        cut = second[pc].clamp_min(0)
        zero = rows[:, None], torch.arange(L, device=dev)[None, :]
        base[zero] = torch.where(zero[1] >= cut[rows][:, None], 0.0, base[zero])
    adv_c = (Gc - base) * mc
    if turn:
        adv[ri, ti] = adv_c[ri, rk]
    else:
        adv = adv_c
    return adv, G
