"""torch support: CPU tensors go through numpy without copies; tensors on other devices
(CUDA) are computed by a torch implementation on their device, with no host copy of the
rewards. torch is optional and imported only when a tensor is seen."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NonFiniteRewardError, SingletonGroupError


def is_tensor(x: Any) -> bool:
    """True for a torch.Tensor (checked without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "device")


def to_numpy(t) -> np.ndarray:
    """A CPU tensor as a numpy array sharing its memory (bfloat16 becomes float32)."""
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.resolve_conj().resolve_neg().numpy()


def numpy_if_tensor(v):
    """`v` as numpy when it is a CPU tensor, else unchanged (arrays, lists, None)."""
    return to_numpy(v) if is_tensor(v) else v


def from_numpy(a: np.ndarray, like):
    """A numpy result as a tensor on `like`'s device (no copy on CPU)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).to(like.device)


def codes_on(device, n: int, group_size=None, offsets=None, group_ids=None, groups=None):
    """(codes, n_groups) as an int64 tensor on `device` for any layout. Labels given as a tensor
    on the device are factorized there; other labels on the host (they are small)."""
    import torch

    from ._groups import make_groups

    if group_ids is not None and is_tensor(group_ids) and groups is None:
        if group_ids.is_floating_point() and bool(torch.isnan(group_ids).any()):
            from .errors import BadLabelError

            i = int(torch.nonzero(torch.isnan(group_ids.reshape(-1)))[0].item())
            raise BadLabelError(f"group_ids[{i}] is nan, which is not equal to itself (NaN) and so "
                                "cannot identify a group", index=i, label=float("nan"))
        _, codes = torch.unique(group_ids.reshape(-1), return_inverse=True)
        if codes.numel() != n:
            raise ValueError(f"group_ids has length {codes.numel()} but rewards has length {n}")
        return codes, int(codes.max().item()) + 1 if n else 0
    if is_tensor(offsets):
        offsets = offsets.detach().cpu().numpy()
    if groups is None:
        groups = make_groups(n, group_size, offsets=offsets, group_ids=group_ids)
    elif groups.n != n:
        raise ValueError(f"groups covers {groups.n} rewards but rewards has length {n}")
    return torch.from_numpy(groups.codes()).to(device), groups.n_groups


def advantages(rewards, *, codes, n_groups, center="mean", scale="group", ddof=0, eps=0.0,
               singleton="zero", nan="raise"):
    """The semantics of :func:`groupadv.advantages`, computed with torch on the rewards' device
    (statistics in float64; an all-equal group gives exactly 0)."""
    import torch

    x = rewards.detach().reshape(-1)
    out_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float64
    xd = x.double()
    n = xd.numel()
    if n == 0:
        raise ValueError("rewards is empty")
    finite = torch.isfinite(xd)
    if nan == "raise" and not bool(finite.all()):
        i = int(torch.nonzero(~finite)[0].item())
        v = float(xd[i].item())
        name = "NaN" if v != v else ("inf" if v > 0 else "-inf")
        raise NonFiniteRewardError(
            f"rewards[{i}] is {name}; pass nan='propagate' or nan='omit' to allow non-finite rewards",
            index=i, group=int(codes[i].item()), value=v,
        )
    valid = finite if nan == "omit" else torch.ones_like(finite)
    k = n_groups
    zeros = torch.zeros(k, dtype=torch.float64, device=xd.device)
    cnt = zeros.index_add(0, codes, valid.double())
    # Shift each group by one of its own (valid) rewards: all-equal groups stay exactly 0.
    pos = torch.arange(n, device=xd.device)
    big = torch.full((k,), n, dtype=torch.long, device=xd.device)
    first = big.scatter_reduce(0, codes, torch.where(valid, pos, torch.full_like(pos, n)), reduce="amin")
    shift = torch.where(first < n, xd[first.clamp(max=n - 1)], zeros)
    xv = torch.where(valid, xd, torch.zeros_like(xd))
    dev = torch.where(valid, xd - shift[codes], torch.zeros_like(xd))
    mean = shift + zeros.index_add(0, codes, dev) / cnt.clamp(min=1)
    res = torch.where(valid, xd - mean[codes], torch.zeros_like(xd))
    m2 = zeros.index_add(0, codes, res * res)
    poisoned = (cnt > 0) & ~torch.isfinite(mean)
    if singleton == "error":
        single = (cnt == 1) & ~poisoned
        if bool(single.any()):
            g = int(torch.nonzero(single)[0].item())
            i = int(torch.nonzero((codes == g) & valid)[0].item())
            raise SingletonGroupError(f"group {g} (rewards[{i}]) has a single reward, and singleton='error'; "
                                      "use singleton='zero' or 'raw' to allow it", index=i, group=g)
    many = cnt >= 2
    if scale in ("batch", "batch_residual"):
        nv = valid.sum()
        if scale == "batch":
            bmean = xv.sum() / nv
            num = (torch.where(valid, xd - bmean, torch.zeros_like(xd)) ** 2).sum()
        else:
            num = m2.sum()
        bstd = torch.sqrt(num / (nv - ddof)) if int(nv) > ddof else torch.tensor(float("nan"), dtype=torch.float64, device=xd.device)
        if bool(poisoned.any()):
            bstd = torch.tensor(float("nan"), dtype=torch.float64, device=xd.device)
        bden = bstd + eps
    mu = torch.where(many & torch.tensor(center != "none", device=xd.device), mean, zeros)
    if center == "loo":
        factor = torch.where(many, cnt / (cnt - 1).clamp(min=1), zeros)
    else:
        factor = many.double()
    if scale == "group":
        std = torch.sqrt(m2 / (cnt - ddof).clamp(min=1))
        denom = torch.where(many, std + eps, torch.ones_like(zeros))
    elif scale == "none":
        denom = torch.ones_like(zeros)
    else:
        denom = torch.where(many, bden, torch.ones_like(zeros))
    if singleton == "raw":
        one = cnt == 1
        factor = torch.where(one, torch.ones_like(zeros), factor)
        if scale == "group":
            denom = torch.where(one, torch.full_like(zeros, 1.0 + eps), denom)
        elif scale != "none":
            denom = torch.where(one, bden.expand_as(zeros), denom)
    kk = torch.where(denom == 0, zeros, factor / denom)
    adv = (xd - mu[codes]) * kk[codes]
    if nan == "omit":
        adv = torch.where(valid, adv, torch.zeros_like(adv))
    adv = torch.where(poisoned[codes], torch.full_like(adv, float("nan")), adv)
    return adv.to(out_dtype).reshape(rewards.shape)
