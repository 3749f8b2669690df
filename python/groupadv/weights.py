"""Self-normalized, clipped importance weights — a *loss-side* helper.

Off-policy or stale rollouts are reweighted by importance ratios ``rho_i = pi(y_i) / mu(y_i)``.
Truncating them (``min(rho, clip)``) bounds the variance; dividing by their sum
(self-normalization) makes the weights sum to 1, so the loss is a weighted average whose scale
does not depend on how far the behaviour policy drifted:

    w_i = min(rho_i, clip) / sum_j min(rho_j, clip)

This is not an advantage normalization: it belongs in the loss code, applied to per-sample (or
per-token) losses, after :mod:`groupadv` has produced the advantages. It accepts numpy arrays
and torch tensors (torch is imported only when a tensor is passed; the result stays on the
tensor's device and keeps autograd, and there is no host sync).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["self_normalized_weights"]


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _bounds(clip) -> tuple[float, float]:
    if clip is None:
        return 0.0, math.inf
    if isinstance(clip, (tuple, list)):
        if len(clip) != 2:
            raise ValueError(f"clip must be a number (upper bound) or a (low, high) pair, got {clip!r}")
        lo, hi = (float(c) for c in clip)
    else:
        lo, hi = 0.0, float(clip)
    if not (lo >= 0 and hi > 0 and lo <= hi) or math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"clip bounds must satisfy 0 <= low <= high, high > 0; got low={lo}, high={hi}")
    return lo, hi


def self_normalized_weights(ratio=None, *, log_ratio=None, clip=None, mask=None, axis: int | None = None):
    """Clipped importance weights divided by their sum: ``w = c / sum(c)``, ``c = clip(ratio)``.

    ratio: importance ratios (>= 0), or give ``log_ratio`` (log pi - log mu) instead, which is
        evaluated stably in log space (shifted by its maximum before ``exp``).
    clip: None (no truncation), an upper bound ``high`` (truncated IS: ``min(rho, high)``), or a
        ``(low, high)`` pair.
    mask: optional booleans of the same shape; masked-out entries get weight 0 and are left out
        of the sum (e.g. padding tokens).
    axis: None normalizes over all entries; an int normalizes along that axis (e.g. per
        sequence over tokens).

    Where the sum is 0 (everything masked out) the weights are 0, not NaN. numpy input must
    be finite (a ValueError names the first bad entry); torch tensors are not checked, to
    avoid a device sync. Returns the input's float dtype (float64 for integer numpy input).
    """
    if (ratio is None) == (log_ratio is None):
        raise TypeError("give exactly one of ratio= or log_ratio=")
    lo, hi = _bounds(clip)
    x = ratio if log_ratio is None else log_ratio
    if _is_torch(x):
        return _torch(x, log_ratio is not None, lo, hi, mask, axis)
    return _numpy(x, log_ratio is not None, lo, hi, mask, axis)


def _numpy(x, is_log, lo, hi, mask, axis):
    name = "log_ratio" if is_log else "ratio"
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    if axis is not None:
        axis = int(axis)
        if not -a.ndim <= axis < a.ndim:
            raise ValueError(f"axis {axis} is out of range for {name} of shape {a.shape}")
    bad = ~np.isfinite(a) if is_log else ~(np.isfinite(a) & (a >= 0))
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        need = "finite" if is_log else "finite and >= 0"
        raise ValueError(f"{name} must be {need}, but {name}[{', '.join(map(str, i))}] = {a[i]}")
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_ or m.shape != a.shape:
            raise ValueError(f"mask must be a bool array of shape {a.shape}, got {m.dtype} {m.shape}")
    else:
        m = None
    f = a.astype(np.float64)
    if is_log:
        f = np.clip(f, math.log(lo) if lo > 0 else -math.inf, math.log(hi) if hi < math.inf else math.inf)
        if m is not None:
            f = np.where(m, f, -math.inf)
        top = np.max(f, axis=axis, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        c = np.exp(f - top)
    else:
        c = np.clip(f, lo, hi)
        if m is not None:
            c = np.where(m, c, 0.0)
    total = np.sum(c, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(total > 0, c / np.where(total > 0, total, 1.0), 0.0)
    return w.astype(a.dtype, copy=False)


def _torch(x, is_log, lo, hi, mask, axis):
    import torch

    t = x if x.is_floating_point() else x.to(torch.float64)
    if t.dtype in (torch.float16, torch.bfloat16):
        # Half-precision sums overflow (65504) or stall (8-bit mantissa): compute in float32 and
        # return the input's dtype, as the numpy path computes in float64.
        return _torch(t.float(), is_log, lo, hi, mask, axis).to(t.dtype)
    if mask is not None:
        mask = torch.as_tensor(mask, device=t.device).to(torch.bool)
        if mask.shape != t.shape:
            raise ValueError(f"mask must have the shape {tuple(t.shape)}, got {tuple(mask.shape)}")
    dims = {} if axis is None else {"dim": int(axis)}
    if is_log:
        f = t
        if lo > 0 or hi < math.inf:
            f = t.clamp(min=math.log(lo) if lo > 0 else None, max=math.log(hi) if hi < math.inf else None)
        if mask is not None:
            f = f.masked_fill(~mask, -math.inf)
        top = f.amax(**dims, keepdim=True) if axis is not None else f.max()
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
        c = torch.exp(f - top)
    else:
        c = t.clamp(min=lo, max=hi if hi < math.inf else None)
        if mask is not None:
            c = c.masked_fill(~mask, 0.0)
    total = c.sum(**dims, keepdim=True) if axis is not None else c.sum()
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, c / safe, torch.zeros_like(c))
