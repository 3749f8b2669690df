"""torch support: CPU tensors go through numpy without copies; tensors on other devices
(CUDA) are computed by the torch twin below, on their device, with no host copy of the
rewards. torch is optional and imported only when a tensor is seen.

The torch twin has the four stages of the core (DESIGN.md) written with torch ops over group
codes: layout (``codes_on``), moments (``_moments``: count, mean, m2, scale in float64, the
mean relative to each group's first valid reward, the power-of-two guard), policy
(``_policy``: A = (r * p - a) * b per group) and apply. A fault (non-finite reward under
"raise", a singleton under "error", an overflow) is detected on the device and reported by the
numpy twin on the host copy, so the message is the core's, word for word.

Dtype policy (every path): float16 / bfloat16 in -> the same dtype out, float32 -> float32,
float64 -> float64, ints and bools -> float64; statistics in float64 (float32 on devices
without float64, e.g. MPS).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BadLabelError

# Tests set this to run CPU tensors through the device code path (no GPU on the test machines).
FORCE_DEVICE_PATH = False
_LIFT = 2.0**60  # the core's lift of residuals whose 1/denominator overflows (exact scaling)


def is_tensor(x: Any) -> bool:
    """True for a torch.Tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "device")


def on_device(t) -> bool:
    """Whether a tensor takes the device path (not CPU, or forced by the test hook)."""
    return t.device.type != "cpu" or FORCE_DEVICE_PATH


def to_numpy(t) -> np.ndarray:
    """A CPU tensor as a numpy array sharing its memory (bfloat16, which numpy lacks, becomes
    a float32 copy)."""
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.resolve_conj().resolve_neg().numpy()


def shares_numpy(t) -> bool:
    """Whether :func:`to_numpy` of this tensor is a view (so writes reach the tensor)."""
    import torch

    return t.dtype != torch.bfloat16


def numpy_if_tensor(v):
    """`v` as numpy when it is a CPU tensor, else unchanged (arrays, lists, None)."""
    return to_numpy(v) if is_tensor(v) else v


def from_numpy(a: np.ndarray, like, dtype=None):
    """A numpy result as a tensor on `like`'s device (no copy on CPU), in ``dtype`` if given."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(a)).to(like.device)
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def result_dtype(dtype):
    """The dtype of the advantages of rewards of this (torch) dtype: floats keep theirs."""
    import torch

    return dtype if dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) else torch.float64


def codes_on(device, n: int, group_size=None, offsets=None, group_ids=None, groups=None):
    """(codes, n_groups) as an int64 tensor on `device` for any layout. Labels given as a tensor
    on the device are factorized there; other labels on the host (they are small)."""
    import torch

    from ._groups import make_groups

    if group_ids is not None and is_tensor(group_ids) and groups is None:
        ids = group_ids.detach()
        if ids.ndim != 1:
            raise ValueError(f"group_ids must be 1-D, got shape {tuple(ids.shape)}")
        if ids.is_floating_point() and bool(torch.isnan(ids).any()):
            i = int(torch.nonzero(torch.isnan(ids))[0].item())
            raise BadLabelError(f"group_ids[{i}] is nan, which is not equal to itself (NaN) and so "
                                "cannot identify a group", index=i, label=float("nan"))
        if ids.is_floating_point():
            ids = ids + 0.0  # -0.0 and 0.0 are one label
        if ids.numel() != n:
            raise ValueError(f"group_ids has length {ids.numel()} but rewards has length {n}")
        _, codes = torch.unique(ids, return_inverse=True)
        return codes, int(codes.max().item()) + 1 if n else 0
    if is_tensor(offsets):
        offsets = offsets.detach().cpu().numpy()
    if is_tensor(group_ids):
        group_ids = group_ids.detach().cpu().numpy()
    if groups is None:
        groups = make_groups(n, group_size, offsets=offsets, group_ids=group_ids)
    elif groups.n != n:
        raise ValueError(f"groups covers {groups.n} rewards but rewards has length {n}")
    return torch.from_numpy(groups.codes()).to(device), groups.n_groups


# ============================================================================ moments


def _stat_dtype(device):
    import torch

    return torch.float32 if device.type == "mps" else torch.float64


def _group_sum(v, codes, k):
    import torch

    return torch.zeros(k, dtype=v.dtype, device=v.device).index_add_(0, codes, v)


def _first_live(live, codes, k):
    """Index of each group's first live reward (n where there is none)."""
    import torch

    n = live.numel()
    pos = torch.arange(n, device=live.device)
    big = torch.full((k,), n, dtype=torch.long, device=live.device)
    return big.scatter_reduce(0, codes, torch.where(live, pos, torch.full_like(pos, n)), reduce="amin")


def _shifted_mean(xs, live, codes, k, count):
    """Mean relative to each group's first live reward: all-equal groups get their value."""
    import torch

    first = _first_live(live, codes, k)
    padded = torch.cat((xs, xs.new_zeros(1)))
    shift = torch.where(first < xs.numel(), padded[first], torch.zeros_like(count))
    dev = torch.where(live, xs - shift[codes], torch.zeros_like(xs))
    return shift + _group_sum(dev, codes, k) / count.clamp(min=1)


def _pow2_scale(root):
    """As the numpy twin: 1 in the safe range, else the power of two at or below ``root``."""
    import torch

    safe = (root == 0) | ((root >= 1e-140) & (root <= 1e150)) | ~torch.isfinite(root)
    _, exp = torch.frexp(torch.where(safe, torch.ones_like(root), root))
    return torch.where(safe, torch.ones_like(root), torch.ldexp(torch.ones_like(root), exp - 1))


def _moments(xd, live, codes, k):
    """(count, mean, m2, scale, smean, res) per group in the statistics dtype."""
    import torch

    count = _group_sum(live.to(xd.dtype), codes, k)
    mean = _shifted_mean(xd, live, codes, k, count)
    res = torch.where(live, xd - mean[codes], torch.zeros_like(xd))
    m2 = _group_sum(res * res, codes, k)
    scale, smean = torch.ones_like(m2), mean
    tiny, huge = (1e-140, 1e150) if xd.dtype == torch.float64 else (1e-15, 1e15)
    risky = (count > 0) & torch.isfinite(mean) & ~((m2 >= tiny**2) & (m2 <= huge**2))
    if xd.dtype == torch.float64 and bool(risky.any()):
        # Exact rescaling by a power of two near the largest deviation; mean and M2 again.
        amax = torch.zeros_like(m2).scatter_reduce(0, codes, torch.where(risky[codes], res.abs(), 0.0), reduce="amax")
        scale = torch.where(risky, _pow2_scale(amax), torch.ones_like(amax))
        xs = xd / scale[codes]
        sm = _shifted_mean(xs, live, codes, k, count)
        q = torch.where(live & risky[codes], xs - sm[codes], torch.zeros_like(xs))
        m2 = torch.where(risky, torch.where(torch.isfinite(amax), _group_sum(q * q, codes, k), torch.inf), m2)
        smean = torch.where(risky, sm, mean)
        mean = torch.where(risky, sm * scale, mean)
    return count, mean, m2, scale, smean, res


def _std(count, m2, scale, ddof):
    """THE guarded std: scale * sqrt(m2 / (count - ddof)), NaN where count <= ddof."""
    import torch

    dof = count - ddof
    std = scale * torch.sqrt(m2 / dof.clamp(min=1))
    return torch.where(dof > 0, std, torch.full_like(std, float("nan")))


def _rescaled(m2, scale, big):
    """As the numpy twin: m2 * (scale / big)**2, exactly 0 for a record without spread (whose
    scale / big may overflow: 0 * inf would be NaN)."""
    import torch

    r = scale / big
    return torch.where(m2 == 0, torch.zeros_like(m2), (m2 * r) * r)


def _batch_std(count, mean, m2, scale, kind, ddof):
    """The batch std: the merge of the group moments (closed form, as the numpy twin)."""
    import torch

    live = count > 0
    c, mu, q, s = count[live], mean[live], m2[live], scale[live]
    total = c.sum()
    if c.numel() == 0:  # no valid reward in the batch: undefined (NaN), as count <= ddof
        return torch.full((), float("nan"), dtype=count.dtype, device=count.device)
    if kind == "batch_residual":
        root = (s * torch.sqrt(q)).max() if c.numel() else total * 0
        big = _pow2_scale(root) if bool(torch.isfinite(root)) else s.max()
        bm2 = _rescaled(q, s, big).sum()
    else:
        shift = mu[0]
        bmean = shift + ((c / total) * (mu - shift)).sum()
        dev = mu - bmean
        root = torch.maximum((s * torch.sqrt(q)).max(), dev.abs().max())
        big = _pow2_scale(root) if bool(torch.isfinite(root)) else s.max()
        bm2 = _rescaled(q, s, big).sum() + (c * (dev / big) ** 2).sum()
    return _std(total.reshape(1), bm2.reshape(1), big.reshape(1), ddof)[0]


# ============================================================================ policy + apply


def advantages(rewards, *, codes, n_groups, center="mean", scale="group", ddof=0, eps=0.0,
               singleton="zero", nan="raise", batch_std=None):
    """The semantics of :func:`groupadv.advantages`, computed with torch on the rewards' device
    (statistics in float64; an all-equal group gives exactly 0). Same rules, same errors."""
    import torch

    from . import _numpy

    _numpy._check(center, scale, ddof, eps, singleton, nan)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got a tensor of shape {tuple(rewards.shape)}")
    if rewards.is_complex() or not (rewards.is_floating_point() or rewards.dtype in _INT_DTYPES()):
        raise TypeError(f"rewards must hold numbers (float, int or bool), got dtype {rewards.dtype}")
    x = rewards.detach()
    n = x.numel()
    if n == 0:
        raise ValueError("rewards is empty")
    if codes.numel() != n:
        raise ValueError(f"the groups cover {codes.numel()} rewards but rewards has length {n}")
    batch = scale in ("batch", "batch_residual")
    if batch_std is not None and not batch:
        raise ValueError(f"batch_std= needs scale='batch' or 'batch_residual', got scale={scale!r}")
    if batch_std is not None and not (np.isfinite(batch_std) and batch_std >= 0):
        raise ValueError(f"batch_std must be a finite number >= 0, got {batch_std}")
    out_dtype = result_dtype(x.dtype)
    xd = x.to(_stat_dtype(x.device))
    k = n_groups
    finite = torch.isfinite(xd)
    live = finite if nan == "omit" else torch.ones_like(finite)
    count, mean, m2, mscale, smean, res = _moments(xd, live, codes, k)
    bad_mean = (count > 0) & ~torch.isfinite(mean)
    # Faults found on the device are reported by the numpy twin (same rules, same message).
    suspect = (nan == "raise" and not bool(finite.all())) or (nan != "propagate" and bool(bad_mean.any()))
    if nan == "propagate" and bool(bad_mean.any()):  # a NaN group without a non-finite reward: overflow
        suspect = suspect or bool((bad_mean & (_group_sum((~finite).to(xd.dtype), codes, k) == 0)).any())
    if singleton == "error":
        suspect = suspect or bool(((count == 1) & ~bad_mean).any())
    if suspect:
        _host_error(x, codes, k, center, scale, ddof, eps, singleton, nan, batch_std)
    many = count > 1
    one = count == 1
    lifted = mscale < 1
    p = torch.where(lifted, 1.0 / mscale.clamp(min=2.0**-1000), torch.ones_like(mscale))
    sp = mscale * p
    centre = torch.where(lifted, smean * sp, mean)
    a = torch.where(many, centre, torch.zeros_like(centre)) if center != "none" else torch.zeros_like(centre)
    factor = torch.where(many, count / (count - 1).clamp(min=1), 0.0) if center == "loo" else many.to(xd.dtype)
    if scale == "group":
        std = _std(count, m2, sp, ddof)
        if bool((many & ~bad_mean & ~torch.isfinite(std)).any()):  # the spread overflows
            _host_error(x, codes, k, center, scale, ddof, eps, singleton, nan, batch_std)
        denom = std + eps * p
    elif scale == "none":
        denom = p
    else:
        if batch_std is not None:
            bstd = torch.tensor(float(batch_std), dtype=xd.dtype, device=xd.device)
        elif bool(bad_mean.any()):
            bstd = torch.tensor(float("nan"), dtype=xd.dtype, device=xd.device)
        else:
            bstd = _batch_std(count, mean, m2, mscale, scale, ddof)
            if bool(torch.isinf(bstd)):
                _host_error(x, codes, k, center, scale, ddof, eps, singleton, nan, batch_std)
        bd = bstd + eps
        denom = bd * p
    b = torch.where(many & (denom != 0), factor / denom, torch.zeros_like(denom))
    num, den = factor, denom
    if singleton == "raw":  # verl: mean 0, std 1
        a = torch.where(one, torch.zeros_like(a), a)
        d1 = (1.0 + eps if scale == "group" else bd if scale != "none" else 1.0) * p
        b = torch.where(one, torch.where(d1 != 0, 1.0 / d1, torch.zeros_like(b)), b)
        num, den = torch.where(one, torch.ones_like(b), factor), torch.where(one, d1, denom)
    # The core's lift: where 1/denominator overflows (a subnormal denominator) the residuals are
    # first multiplied by 2^60 (exact) and b divided by it: A = ((r * p - a) * lift) * b.
    over = torch.isinf(b)
    lift = None
    if bool(over.any()):
        b = torch.where(over, num / (den * _LIFT), b)
        lift = torch.where(over, torch.full_like(b, _LIFT), torch.ones_like(b))
    # The reverse: a lifted group (p > 1) whose denominator in lifted units overflows keeps b
    # in plain units and multiplies the advantage by 1/p last: A = ((r * p - a) * b) * post.
    plain = many & (p > 1) & torch.isinf(denom)
    if scale == "group":
        plain &= torch.isfinite(std)
    post = None
    if scale != "none" and bool(plain.any()):
        d = std / p + eps if scale == "group" else bd
        b = torch.where(plain, factor / d, b)
        post = torch.where(plain, 1.0 / p, torch.ones_like(p))
    a = torch.where(bad_mean, torch.full_like(a, float("nan")), a)  # a poisoned group is NaN
    d = xd * p[codes] - a[codes]
    adv = (d if lift is None else d * lift[codes]) * b[codes]
    if post is not None:
        adv = adv * post[codes]
    if nan == "omit":
        adv = torch.where(live, adv, torch.zeros_like(adv))
    out = adv.to(out_dtype)
    # A non-finite advantage outside a NaN group (or a NaN batch std) is an overflow.
    unasked = ~torch.isfinite(out) & ~bad_mean[codes] & ~torch.isnan(b[codes])
    if bool(unasked.any()):
        _host_error(x, codes, k, center, scale, ddof, eps, singleton, nan, batch_std)
        from ._numpy import _OVERFLOW

        raise ValueError(_OVERFLOW.format(int(codes[unasked][0].item())))
    return out.reshape(rewards.shape)


def _INT_DTYPES():
    import torch

    return (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _host_error(x, codes, k, center, scale, ddof, eps, singleton, nan, batch_std) -> None:
    """Raise the numpy twin's error for these rewards (the rare path: copies to the host)."""
    from . import _numpy

    xh = x.detach().cpu().double().numpy() if x.dtype not in _float_np() else x.detach().cpu().numpy()
    c = codes.detach().cpu().numpy().astype(np.int64)
    sizes = np.bincount(c, minlength=k).astype(np.int64)
    first = np.full(k, len(c), dtype=np.int64)
    np.minimum.at(first, c, np.arange(len(c)))
    g = _numpy.Grouping(len(c), k, "permuted", labels=c, first=first, sizes=sizes)
    out = np.empty(len(xh), dtype=xh.dtype)
    _numpy.advantages(xh, out, g, center, scale, ddof, eps, singleton, nan, 0, batch_std=batch_std)
    if not np.isfinite(out[np.isfinite(xh)]).all() and nan != "propagate":
        raise ValueError(_numpy._OVERFLOW.format(int(c[~np.isfinite(out)][0])))


def _float_np():
    import torch

    return (torch.float32, torch.float64)
