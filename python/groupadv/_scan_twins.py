"""The numpy and torch twins of the token passes of ``src/whiten.rs`` and ``src/scan.rs``.

The numpy twin is the ``GROUPADV_BACKEND=numpy`` path; the torch twin computes CUDA (any
non-CPU) tensors on their device. Both follow the Rust core rule for rule: float64
statistics, the mean taken relative to the first masked value (all-equal masked values give
a mean equal to that value and a variance of exactly 0), the same errors and messages.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import AdvantageOverflowError, NonFiniteRewardError


def _too_few(count: float, unbiased: bool) -> ValueError:
    need = "more than one (the unbiased variance divides by count - 1)" if unbiased else "at least one"
    shown = int(count) if float(count).is_integer() else count
    return ValueError(f"the mask selects {shown} token(s); masked whitening needs {need}")


def _float_text(v: float) -> str:
    """A float as Rust's Display writes it (NaN, inf, -inf), so both backends say the same."""
    return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)


def _non_finite(index: int, value: float) -> NonFiniteRewardError:
    return NonFiniteRewardError(
        f"values[{index}] is {_float_text(value)} under the mask; pass nan='propagate' to allow non-finite values",
        index=index, value=value)


def whiten_affine(count: float, mean: float, m2: float, *, scale: bool, unbiased: bool, eps: float,
                  clamp: bool) -> tuple[float, float]:
    """(mean, k) of ``out = (x - mean) * k`` from the masked moments (``whiten::whiten_affine``)."""
    if not (count > 1.0 if unbiased else count > 0.0):
        raise _too_few(count, unbiased)
    if not scale:
        return mean, 1.0
    var = m2 / (count - 1.0 if unbiased else count)
    if not (math.isfinite(var) and math.isfinite(mean)):
        raise AdvantageOverflowError("the masked values overflow float64 in their variance; rescale them")
    v = max(var, eps) if clamp else var + eps
    return mean, (1.0 / math.sqrt(v) if v > 0.0 else 1.0)


# ---- numpy ----

def _np_weights(mask, n: int) -> np.ndarray:
    if mask is None:
        return np.ones(n)
    m = mask.reshape(-1)
    return (m != 0).astype(np.float64) if m.dtype == np.uint8 else m.astype(np.float64)


def np_masked_moments(x: np.ndarray, mask) -> tuple[float, float, float]:
    """(count, mean, M2) of the masked values of ``x`` (flat), float64; raises
    NonFiniteRewardError for the first non-finite masked value."""
    xs = x.reshape(-1).astype(np.float64)
    w = _np_weights(mask, xs.size)
    sel = w != 0
    bad = sel & ~np.isfinite(xs)
    if bad.any():
        i = int(np.argmax(bad))
        raise _non_finite(i, float(xs[i]))
    if not sel.any():
        return 0.0, 0.0, 0.0
    x0 = xs[int(np.argmax(sel))]
    ws, d = w[sel], xs[sel] - x0
    count = float(ws.sum())
    s = float((ws * d).sum())
    mean = float(x0) if s == 0.0 else float(x0 + s / count)
    dev = xs[sel] - mean
    return count, mean, float((ws * dev * dev).sum())


def np_masked_whiten(x: np.ndarray, mask, out: np.ndarray, *, shift_mean=True, scale=True, unbiased=True,
                     eps=1e-8, clamp=False, apply_mask=False, propagate=False) -> tuple[float, float]:
    """The numpy twin of the native ``masked_whiten`` (same arguments, writes ``out``)."""
    try:
        count, mean, m2 = np_masked_moments(x, mask)
        mean, k = whiten_affine(count, mean, m2, scale=scale, unbiased=unbiased, eps=eps, clamp=clamp)
    except NonFiniteRewardError:
        if not propagate:
            raise
        mean, k = math.nan, math.nan
    back = 0.0 if shift_mean else mean
    with np.errstate(invalid="ignore", over="ignore"):
        r = (x.astype(np.float64) - mean) * k + back
        if apply_mask and mask is not None:
            if mask.dtype == np.uint8:
                r = np.where(mask != 0, r, 0.0)
            else:
                r = r * mask.astype(np.float64)
        out[...] = r.reshape(out.shape)
    return mean, k


# ---- torch (tensors on a device) ----

def torch_masked_whiten(x, mask, *, shift_mean=True, scale=True, unbiased=True, eps=1e-8, clamp=False,
                        apply_mask=False, propagate=False):
    """The torch twin: whitened ``x`` (float64) computed on ``x``'s device; ``mask`` None, bool
    or float (weights)."""
    import torch

    xs = x.detach().reshape(-1).double()
    if mask is None:
        w = torch.ones_like(xs)
    else:
        m = mask.reshape(-1)
        w = (m != 0).double() if not m.is_floating_point() else m.double()
    sel = w != 0
    mean, k = math.nan, math.nan
    bad = sel & ~torch.isfinite(xs)
    if bool(bad.any()):
        if not propagate:
            i = int(torch.argmax(bad.to(torch.uint8)))
            raise _non_finite(i, float(xs[i]))
    else:
        if bool(sel.any()):
            x0 = xs[int(torch.argmax(sel.to(torch.uint8)))]
            ws = torch.where(sel, w, 0.0)
            count = float(ws.sum())
            s = float((ws * torch.where(sel, xs - x0, 0.0)).sum())
            mu = float(x0) if s == 0.0 else float(x0) + s / count
            dev = torch.where(sel, xs - mu, 0.0)
            m2 = float((ws * dev * dev).sum())
        else:
            count, mu, m2 = 0.0, 0.0, 0.0
        mean, k = whiten_affine(count, mu, m2, scale=scale, unbiased=unbiased, eps=eps, clamp=clamp)
    back = 0.0 if shift_mean else mean
    r = (xs - mean) * k + back
    if apply_mask and mask is not None:
        r = torch.where(sel, r, 0.0) if not mask.is_floating_point() else r * w
    return r.reshape(x.shape)


# ---- reverse scans (src/scan.rs) ----

def _scan_fault(xp_rewards, xp_values, out_rows_bad: int, width: int, to_float):
    """The error of the first response whose outputs are not all finite: its first non-finite
    reward (then value), else an overflow (``scan::row_fault``)."""
    row = out_rows_bad
    for what, xs in (("rewards", xp_rewards), ("values", xp_values)):
        if xs is None:
            continue
        for t in range(width):
            v = to_float(xs[row, t])
            if not math.isfinite(v):
                index = row * width + t
                return NonFiniteRewardError(
                    f"{what}[{index}] is {_float_text(v)}; pass nan='propagate' to allow non-finite inputs",
                    index=index, value=v)
    return AdvantageOverflowError(f"the returns of response {row} overflow the output dtype; rescale the rewards",
                                  index=row)


def _scan_rows(r, v, m, a, ret, zeros, gamma: float, lam: float, zero: bool) -> None:
    """The reverse scan of ``scan.rs`` over the columns of float64 (bs, L) arrays, written once
    for both twins (numpy arrays or torch tensors: the same arithmetic, in the same order).
    ``zero``: a token outside the mask discounts with a zero reward and value (OpenRLHF);
    else it is skipped, its running value carried (verl). Fills ``a`` (and ``ret`` for GAE)."""
    run, nv, last = zeros, zeros, zeros
    gl = gamma * lam
    for t in range(r.shape[1] - 1, -1, -1):
        mt, rt = m[:, t], r[:, t]
        if v is None:
            if zero:
                run = rt * mt + gamma * run
                a[:, t] = run
            else:
                new = rt + gamma * run
                run = new * mt + run * (1.0 - mt)
                a[:, t] = new * mt
        else:
            vt = v[:, t]
            if zero:
                vm = vt * mt
                last = rt * mt + gamma * nv - vm + gl * last
                nv = vm
                a[:, t], ret[:, t] = last, last + vm
            else:
                new = rt + gamma * nv - vt + gl * last
                nv = vt * mt + (1.0 - mt) * nv
                last = new * mt + (1.0 - mt) * last
                a[:, t], ret[:, t] = last, last + vt


def np_scan(rewards: np.ndarray, values, mask, *, gamma: float, lam: float, zero: bool, check: bool):
    """Discounted returns (values None) or (advantages, returns) of GAE over the rows of 2-D
    ``rewards``, float64 inside, in the rewards' dtype out: the numpy twin of ``scan.rs``."""
    r = rewards.astype(np.float64)
    bs, L = r.shape
    if mask is None:
        m = np.ones_like(r)
    else:
        m = (mask != 0).astype(np.float64) if mask.dtype == np.uint8 else mask.astype(np.float64)
    v = None if values is None else values.astype(np.float64)
    a = np.empty_like(r)
    ret = None if v is None else np.empty_like(r)
    with np.errstate(invalid="ignore", over="ignore"):
        _scan_rows(r, v, m, a, ret, np.zeros(bs), gamma, lam, zero)
        outs = [a] if ret is None else [a, ret]
        outs = [o.astype(rewards.dtype) for o in outs]
    if check:
        bad = ~np.isfinite(outs[0]).all(axis=1)
        if len(outs) == 2:
            bad |= ~np.isfinite(outs[1]).all(axis=1)
        if bad.any():
            raise _scan_fault(rewards, values, int(np.argmax(bad)), L, float)
    return outs[0] if ret is None else (outs[0], outs[1])


def torch_scan(rewards, values, mask, *, gamma: float, lam: float, zero: bool, check: bool):
    """The torch twin of :func:`np_scan` (float64 on the tensors' device)."""
    import torch

    r = rewards.detach().double()
    bs, L = r.shape
    m = torch.ones_like(r) if mask is None else (mask.double() if mask.is_floating_point() else (mask != 0).double())
    v = None if values is None else values.detach().double()
    a = torch.empty_like(r)
    ret = None if v is None else torch.empty_like(r)
    _scan_rows(r, v, m, a, ret, torch.zeros(bs, dtype=torch.float64, device=r.device), gamma, lam, zero)
    outs = [a] if ret is None else [a, ret]
    want = rewards.dtype if rewards.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) \
        else torch.float64
    outs = [o.to(want) for o in outs]
    if check:
        bad = ~torch.isfinite(outs[0]).all(dim=1)
        if len(outs) == 2:
            bad |= ~torch.isfinite(outs[1]).all(dim=1)
        if bool(bad.any()):
            raise _scan_fault(rewards, values, int(torch.argmax(bad.to(torch.uint8))), L, float)
    return outs[0] if ret is None else (outs[0], outs[1])
