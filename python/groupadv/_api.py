"""The public functions: validate and coerce once, resolve the groups, call the backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _backend, _torch
from ._groups import Groups, resolve
from ._presets import resolve_preset
from ._inputs import (
    check_out, choice, ddof_value, default_threads_value, environment_threads, eps_value, integer,
    out_array, rewards_array, threads_value,
)
from .errors import GroupadvError, with_label


def advantages(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    center: str = "mean",
    scale: str = "group",
    ddof: int | None = None,
    eps: float | None = None,
    singleton: str | None = None,
    nan: str = "raise",
    decimals: int | None = None,
    out=None,
    num_threads: int | None = None,
    batch_std: float | None = None,
    preset: str | None = None,
):
    """Group-relative advantages ``A_i = c * (r_i - mu_g) / d``, in input order.

    Groups: exactly one of ``group_size``, ``offsets``, ``group_ids`` or ``groups``.

    center: ``"mean"`` (mu = group mean), ``"loo"`` (leave-one-out: r_i minus the mean of the
        other rewards of its group, i.e. c = n/(n-1)), ``"none"`` (mu = 0).
    scale: ``"group"`` (d = group std + eps), ``"batch"`` (d = std of all rewards in the batch
        + eps; TRL / Lite PPO), ``"batch_residual"`` (d = std over the batch of the residuals
        r_i - mu_g, + eps; AReaL), ``"none"`` (d = 1).
        Batch statistics count each reward (episode) once.
    ddof: 0 (population std, the default) or 1 (sample std, as torch.std and the peers).
    eps: added to the std (>= 0). A group or batch with no spread gives advantages of exactly
        0.0 whatever eps is, including 0.
    singleton: a group with one (valid) reward gets ``"zero"`` (0.0), ``"raw"`` (verl: mean 0,
        std 1, so the reward itself, divided by 1+eps for scale="group"), or ``"error"``.
    nan: a NaN or infinite reward ``"raise"`` (ValueError naming its index),
        ``"propagate"`` (its group's advantages, and any batch statistic, become NaN), or
        ``"omit"`` (left out of every statistic; its own advantage is 0.0).
    decimals: round the result (numpy's round-half-to-even) when given.
    out: a C-contiguous array of the result's shape and dtype to write into. If the call
        raises, ``out`` may have been partly written.
    num_threads: threads for this call (default: set_num_threads / GROUPADV_NUM_THREADS / CPUs).
    preset: ``"verl"``, ``"trl"`` or ``"openrlhf"``: the peer's ddof, eps and singleton
        conventions (see :data:`groupadv.PRESETS`); keywords given explicitly win. Unset: ddof=0,
        eps=0.0, singleton="zero".
    batch_std: with ``scale="batch"`` or ``"batch_residual"`` only: the batch std to divide by
        (d = batch_std + eps) instead of the one of ``rewards``; for a shard of a larger batch,
        pass the global std from :mod:`groupadv.moments` (``BatchMoments.std(scale, ddof)``) or
        :func:`groupadv.distributed.all_reduce_moments`. Computed as the centred advantages
        (``scale="none"``) divided by d in float64, so it equals the one-pass result up to one
        rounding.

    Returns an array of the rewards' shape; float32 in, float32 out; float64 for float64,
    ints and bools. Statistics are accumulated in float64 either way. torch tensors in give
    tensors out: CPU tensors without copies (through numpy), tensors on other devices (CUDA)
    computed by torch on their device.
    """
    ddof, eps, singleton = resolve_preset(preset, ddof, eps, singleton)
    check_out(out, rewards=rewards, offsets=offsets, group_ids=group_ids)
    if _torch.is_tensor(rewards):
        _torch_device_check(rewards)
        return _tensor_advantages(
            rewards, group_size, offsets, group_ids, groups, center, scale, ddof, eps, singleton,
            nan, decimals, out, num_threads, batch_std,
        )
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    result = out_array(out, x)
    with _labelled_errors(g):
        if batch_std is not None:  # external batch std (issue 5: sharded batches)
            _with_batch_std(x, result, g, center, scale, ddof, eps, singleton, nan, num_threads, batch_std)
        else:
            _backend.impl.advantages(
                x,
                result,
                g._impl,
                choice(center, "center"),
                choice(scale, "scale"),
                ddof_value(ddof),
                eps_value(eps),
                choice(singleton, "singleton"),
                choice(nan, "nan"),
                threads_value(num_threads),
            )
    if decimals is not None:
        result = round_decimals(result, decimals)
    return result


class _labelled_errors:
    """Fill `group` / `label` of a typed error raised by a backend from the call's layout."""

    def __init__(self, groups):
        self.groups = groups

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, GroupadvError):
            with_label(err, self.groups)
        return False


def _torch_device_check(t) -> None:
    if t.device.type == "meta":
        raise TypeError("rewards is a 'meta' tensor, which has no data; pass a CPU or CUDA tensor")


def round_decimals(a, decimals):
    """Round to `decimals` places (numpy's / torch's round-half-to-even), arrays in place and
    tensors: the one rounding rule. Where the scaled value 10**decimals * a overflows (huge
    decimals, float32 near its range) rounding changes nothing, or (negative decimals) gives
    a signed 0, instead of the inf / NaN that np.round returns there."""
    d = integer(decimals, "decimals")
    if not -(1 << 31) < d < 1 << 31:
        raise ValueError(f"decimals must fit in 32 bits (|decimals| < 2**31), got {d}")
    d = max(-400, min(400, d))  # beyond +-400 every finite float rounds as at +-400
    if _torch.is_tensor(a):
        import torch

        r = a.round(decimals=d)
        bad = ~torch.isfinite(r) & torch.isfinite(a)
        return torch.where(bad, a if d > 0 else torch.copysign(torch.zeros_like(a), a), r)
    with np.errstate(all="ignore"):
        r = np.round(a, d)
    bad = ~np.isfinite(r) & np.isfinite(a)
    if bad.any():
        r[bad] = a[bad] if d > 0 else np.copysign(0.0, a[bad])
    a[...] = r
    return a


def _tensor_advantages(rewards, group_size, offsets, group_ids, groups, center, scale, ddof, eps,
                       singleton, nan, decimals, out, num_threads, batch_std):
    """torch tensors: CPU through numpy (shared memory), other devices with torch there."""
    if rewards.device.type == "cpu":
        as_np = _torch.numpy_if_tensor
        res = advantages(
            _torch.to_numpy(rewards), group_size, offsets=as_np(offsets), group_ids=as_np(group_ids),
            groups=groups, center=center, scale=scale, ddof=ddof, eps=eps, singleton=singleton, nan=nan,
            decimals=decimals, out=as_np(out), num_threads=num_threads, batch_std=batch_std,
        )
        return out if out is not None else _torch.from_numpy(res, rewards)
    if batch_std is not None:
        raise ValueError("batch_std= is supported for numpy arrays and CPU tensors")
    threads_value(num_threads)  # unused by torch on a device, but checked as everywhere
    n = rewards.numel()
    codes, k = _torch.codes_on(rewards.device, n, group_size, offsets, group_ids, groups)
    res = _torch.advantages(
        rewards, codes=codes, n_groups=k, center=choice(center, "center"), scale=choice(scale, "scale"),
        ddof=ddof_value(ddof), eps=eps_value(eps), singleton=choice(singleton, "singleton"), nan=choice(nan, "nan"),
    )
    if decimals is not None:
        res = round_decimals(res, decimals)
    if out is not None:
        out.copy_(res)
        return out
    return res


# --- batch_std= (issue 5): advantages of a shard with a batch std computed elsewhere ---------
def _with_batch_std(x, result, g, center, scale, ddof, eps, singleton, nan, num_threads, batch_std) -> None:
    scale = choice(scale, "scale")
    if scale not in ("batch", "batch_residual"):
        raise ValueError(f"batch_std= needs scale='batch' or 'batch_residual', got scale={scale!r}")
    if isinstance(batch_std, (bool, np.bool_, str, bytes)):
        raise TypeError(f"batch_std must be a number, got {type(batch_std).__name__}")
    try:
        std = float(batch_std)
    except (TypeError, ValueError):
        raise TypeError(f"batch_std must be a number, got {type(batch_std).__name__}") from None
    if not (np.isfinite(std) and std >= 0):
        raise ValueError(
            f"batch_std must be a finite number >= 0, got {std} (a NaN batch std means non-finite "
            "rewards, or no more rewards in the batch than ddof)"
        )
    ddof_value(ddof)
    denom = std + eps_value(eps)
    x64 = x if x.dtype == np.float64 else x.astype(np.float64)
    tmp = result if result.dtype == np.float64 else np.empty(len(x), dtype=np.float64)
    _backend.impl.advantages(
        x64, tmp, g._impl, choice(center, "center"), "none", ddof_value(ddof), 0.0,
        choice(singleton, "singleton"), choice(nan, "nan"), threads_value(num_threads),
    )
    if denom == 0.0:
        np.multiply(tmp, 0.0, out=tmp)  # no spread in the batch: exactly 0, as the core does
    else:
        np.divide(tmp, denom, out=tmp)
    if tmp is not result:
        result[...] = tmp
# --- end batch_std= ----------------------------------------------------------------------


def grpo(rewards, group_size: int | None = None, *, scale: str = "group", **kwargs) -> np.ndarray:
    """GRPO advantages: the z-score of each reward within its group, ``(r - mean) / (std + eps)``.

    ``scale="batch"`` or ``"batch_residual"`` keeps the group mean but divides by a batch std.
    Other keywords as :func:`advantages`.
    """
    return advantages(rewards, group_size, center="mean", scale=scale, **kwargs)


def drgrpo(rewards, group_size: int | None = None, **kwargs) -> np.ndarray:
    """Dr. GRPO advantages: ``r - group mean``, no division by a std.
    Other keywords as :func:`advantages`."""
    return advantages(rewards, group_size, center="mean", scale="none", **kwargs)


def rloo(rewards, group_size: int | None = None, **kwargs) -> np.ndarray:
    """RLOO advantages: ``r_i - mean of the other rewards of its group``
    (= n/(n-1) * (r_i - group mean)). Undefined for one-reward groups: see ``singleton``.
    Other keywords as :func:`advantages`."""
    return advantages(rewards, group_size, center="loo", scale="none", **kwargs)


@dataclass(frozen=True)
class GroupStats:
    """Per-group statistics, in group order (labelled groups: order of first appearance)."""

    count: np.ndarray
    """Number of (valid) rewards in each group, int64."""
    mean: np.ndarray
    """Group mean, float64 (NaN for a group without valid rewards)."""
    std: np.ndarray
    """Group std with the requested ddof, float64 (NaN where count <= ddof)."""
    labels: object = None
    """The label of each group for `group_ids=` layouts, else None."""

    @property
    def n_groups(self) -> int:
        return len(self.count)

    @property
    def mean_within_std(self) -> float:
        """Mean of the group stds over groups with at least two rewards (NaN if none): the
        spread that a std normalization divides away."""
        s = self.std[(self.count >= 2) & np.isfinite(self.std)]
        return float(s.mean()) if s.size else float("nan")

    @property
    def frac_zero_std(self) -> float:
        """Fraction of groups with at least two rewards whose rewards are all equal
        (they carry no learning signal under group-relative advantages)."""
        multi = self.count >= 2
        n = int(multi.sum())
        return float(np.sum(self.std[multi] == 0.0) / n) if n else float("nan")

    def summary(self) -> dict:
        """Scalars for logging."""
        return {
            "n_groups": self.n_groups,
            "n_rewards": int(self.count.sum()),
            "mean_within_std": self.mean_within_std,
            "frac_zero_std": self.frac_zero_std,
        }


def group_stats(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    ddof: int = 0,
    nan: str = "raise",
    num_threads: int | None = None,
) -> GroupStats:
    """Count, mean and std of each group, plus summary diagnostics (see :class:`GroupStats`).
    ``nan`` as in :func:`advantages` ("omit" counts only finite rewards)."""
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    with _labelled_errors(g):
        count, mean, std = _backend.impl.group_stats(
            x, g._impl, ddof_value(ddof), choice(nan, "nan"), threads_value(num_threads)
        )
    return GroupStats(count=count, mean=mean, std=std, labels=g.labels)


def backend() -> str:
    """The active backend: "native" (compiled Rust core) or "numpy" (fallback)."""
    return _backend.name


def set_num_threads(n: int) -> None:
    """Default number of threads for the native backend, 0 .. :data:`groupadv.MAX_THREADS`
    (0 restores the default: GROUPADV_NUM_THREADS, else the number of CPUs)."""
    _backend.impl.set_num_threads(default_threads_value(n))


def get_num_threads() -> int:
    """Default number of threads of the active backend (a ThreadCountError for an unusable
    GROUPADV_NUM_THREADS)."""
    environment_threads()
    return _backend.impl.get_num_threads()
