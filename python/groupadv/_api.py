"""The public functions: validate and coerce once, resolve the groups, call the backend."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _backend, _torch
from ._groups import Groups, make_groups, plain_layout, resolve
from ._inputs import (
    MAX_THREADS,
    check_out,
    choice,
    ddof_value,
    default_threads_value,
    environment_threads,
    eps_value,
    integer,
    out_array,
    plain_inputs,
    rewards_array,
    threads_value,
)
from ._presets import resolve_preset
from .errors import AdvantageOverflowError, GroupadvError, with_label
from .moments import GroupMoments

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


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
    moments=None,
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
        :func:`groupadv.distributed.all_reduce_moments`. A parameter of the core: the same
        rules apply (all-equal groups give exactly 0; an advantage that overflows the output
        dtype raises the overflow ValueError). NaN means an undefined batch std (a batch
        poisoned under nan="propagate", or too few rewards): the advantages it scales are NaN.
    moments: a :class:`GroupMoments` (from :func:`group_moments`, merged over batches or
        shards) with one record per group of this layout: the group statistics to use instead
        of those of ``rewards`` (streaming, sharded data); the batch scales then use the merge
        of these moments.

    Returns an array of the rewards' shape in their float dtype (float16, bfloat16 tensors,
    float32, float64); float64 for ints and bools. Statistics are accumulated in float64
    either way; an advantage that does not fit the output dtype raises the overflow
    ValueError. torch tensors in give tensors out: CPU tensors without copies (through numpy),
    tensors on other devices (CUDA) computed by the torch twin on their device; an ``out=``
    tensor of any float dtype is written.
    """
    if type(rewards) is np.ndarray and group_ids is None and moments is None and preset is None:
        result = _fast_advantages(rewards, group_size, offsets, groups, center, scale, ddof, eps, singleton,
                                  nan, out, num_threads, batch_std)
        if result is not None:
            return result if decimals is None else round_decimals(result, decimals)
    return _general(
        rewards, group_size, offsets, group_ids, groups, center, scale, ddof, eps, singleton, nan,
        decimals, out, num_threads, batch_std, moments, preset,
    )


def _fast_advantages(x: np.ndarray, group_size, offsets, groups, center, scale, ddof, eps, singleton, nan,
                     out, num_threads, batch_std) -> np.ndarray | None:
    """The common call without the general path's Python cost (issue 14: at N=8192 the core
    works ~8 µs, and the general path's checks cost as much again). For a contiguous 1-D
    float32/float64 array with a ``group_size=`` (a layout already cached), int64 ``offsets=``
    or ``groups=`` layout and plain parameters, it establishes cheaply that every check of
    :func:`_general` would pass, then makes the same backend call (the core's policy stage
    checks values and reports NaN/overflow faults, as there): the same result and the same
    errors. Returns None, having written nothing, for any other input: the general path takes
    it (and raises what it rejects)."""
    if not (x.ndim == 1 and (x.dtype is _F32 or x.dtype is _F64)):
        return None
    if not (type(center) is str and type(scale) is str and type(nan) is str
            and (singleton is None or type(singleton) is str)
            and (ddof is None or (type(ddof) is int and 0 <= ddof <= 1))
            and (eps is None or (type(eps) is float and 0.0 <= eps < math.inf))
            and (batch_std is None or type(batch_std) is float)
            and (num_threads is None or (type(num_threads) is int and 0 < num_threads <= MAX_THREADS))):
        return None
    n = x.shape[0]
    layout = None
    if offsets is None:
        layout = plain_layout(n, group_size, groups)
        if layout is None:
            return None
    elif group_size is not None or groups is not None:
        return None
    result = plain_inputs(x, out, offsets, num_threads)  # (reads GROUPADV_NUM_THREADS: a bad one raises)
    if result is None:
        return None
    params = (center, scale, 0 if ddof is None else ddof, 0.0 if eps is None else eps,
              "zero" if singleton is None else singleton, nan, 0 if num_threads is None else num_threads,
              batch_std)
    if layout is None:
        # A one-off ragged layout: the backend checks the offsets as it reads them, without a
        # layout object (the native core reads them in place instead of copying them).
        try:
            _backend.impl.advantages_offsets(x, result, offsets, *params)
        except GroupadvError as err:
            with_label(err, make_groups(n, offsets=offsets))
            raise
        return result
    try:  # as `with _labelled_errors(layout)`, without its three Python calls
        _backend.impl.advantages(x, result, layout._impl, *params)
    except GroupadvError as err:
        with_label(err, layout)
        raise
    return result


def _general(rewards, group_size, offsets, group_ids, groups, center, scale, ddof, eps, singleton, nan,
             decimals, out, num_threads, batch_std, moments, preset):
    """:func:`advantages` for every input: validate and coerce each argument, then call the backend."""
    ddof, eps, singleton = resolve_preset(preset, ddof, eps, singleton)
    check_out(out, rewards=rewards, offsets=offsets, group_ids=group_ids)
    if _torch.is_tensor(rewards):
        _torch_device_check(rewards)
        return _tensor_advantages(
            rewards, group_size, offsets, group_ids, groups, center, scale, ddof, eps, singleton,
            nan, decimals, out, num_threads, batch_std, moments,
        )
    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    want = np.dtype(np.float16) if getattr(rewards, "dtype", None) == np.float16 else x.dtype
    if want != x.dtype and out is not None:
        # Dtype policy: float16 in, float16 out (computed in float32, then narrowed into out).
        res = advantages(x, groups=g, center=center, scale=scale, ddof=ddof, eps=eps, singleton=singleton,
                         nan=nan, decimals=decimals, num_threads=num_threads, batch_std=batch_std,
                         moments=moments)
        return _np_write(out, res, len(x))
    result = out_array(out, x)
    core = {"batch_std": _batch_std_value(batch_std), "moments": _moments_value(moments, g.n_groups)}
    with _labelled_errors(g):
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
            **{k: v for k, v in core.items() if v is not None},
        )
    if decimals is not None:
        result = round_decimals(result, decimals)
    return result if want == x.dtype else _narrow(result, want)


def _np_write(out, result: np.ndarray, n: int) -> np.ndarray:
    """``result`` narrowed into the caller's float16 ``out`` (validated as any out=)."""
    checked = out_array(out, np.empty(n, dtype=np.float16))
    checked[...] = _narrow(result, out.dtype)
    return checked


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
                       singleton, nan, decimals, out, num_threads, batch_std, moments=None):
    """torch tensors: CPU through numpy (shared memory), other devices with the torch twin
    there. Either way the result has the dtype policy of :func:`groupadv._torch.result_dtype`
    (float16 / bfloat16 in, the same out), and an ``out=`` tensor of any float dtype is written."""
    want = _torch.result_dtype(rewards.dtype)
    if out is not None:
        if not _torch.is_tensor(out):
            raise TypeError(f"out must be a tensor for tensor rewards, got {type(out).__name__}")
        if not out.is_floating_point():
            raise TypeError(f"out must be a float tensor, got dtype {out.dtype}")
        if tuple(out.shape) != tuple(rewards.shape):
            raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(rewards.shape)}")
    if not _torch.on_device(rewards):
        as_np = _torch.numpy_if_tensor
        direct = out is not None and out.dtype == want and _torch.shares_numpy(out) and want not in _HALF()
        res = advantages(
            _torch.to_numpy(rewards), group_size, offsets=as_np(offsets), group_ids=as_np(group_ids),
            groups=groups, center=center, scale=scale, ddof=ddof, eps=eps, singleton=singleton, nan=nan,
            decimals=decimals, out=as_np(out) if direct else None, num_threads=num_threads,
            batch_std=batch_std, moments=moments,
        )
        if direct:
            return out
        result = _narrow(_torch.from_numpy(res, rewards), want)
        return _write(out, result)
    if moments is not None:
        raise ValueError("moments= is supported for numpy arrays and CPU tensors")
    threads_value(num_threads)  # unused by torch on a device, but checked as everywhere
    n = rewards.numel()
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got a tensor of shape {tuple(rewards.shape)}")
    codes, k = _torch.codes_on(rewards.device, n, group_size, offsets, group_ids, groups)
    res = _torch.advantages(
        rewards, codes=codes, n_groups=k, center=choice(center, "center"), scale=choice(scale, "scale"),
        ddof=ddof_value(ddof), eps=eps_value(eps), singleton=choice(singleton, "singleton"), nan=choice(nan, "nan"),
        batch_std=_batch_std_value(batch_std),
    )
    if decimals is not None:
        res = round_decimals(res, decimals)
    return _write(out, res)


def _HALF():
    import torch

    return (torch.float16, torch.bfloat16)


def _narrow(result, dtype):
    """The result (array or tensor) in a narrower float dtype: the one output-dtype rule of the
    API. An advantage that is finite but does not fit is the overflow error."""
    if result.dtype == dtype:
        return result
    if _torch.is_tensor(result):
        narrow = result.to(dtype)
        lost = bool((~narrow.isfinite() & result.isfinite()).any())
    else:
        narrow = result.astype(dtype)
        lost = not np.array_equal(np.isfinite(narrow), np.isfinite(result))
    if lost:
        raise AdvantageOverflowError(
            f"an advantage overflows the output dtype {dtype}; rescale rewards of magnitude near the float range"
        )
    return narrow


def _write(out, result):
    """``result`` into ``out`` (any float dtype), or ``result`` itself."""
    if out is None:
        return result
    out.copy_(_narrow(result, out.dtype))
    return out


def _batch_std_value(batch_std) -> float | None:
    """A caller's batch std as a float (its range is checked by the core's policy)."""
    if batch_std is None:
        return None
    if isinstance(batch_std, (bool, np.bool_, str, bytes)):
        raise TypeError(f"batch_std must be a number, got {type(batch_std).__name__}")
    try:
        return float(batch_std)
    except (TypeError, ValueError):
        raise TypeError(f"batch_std must be a number, got {type(batch_std).__name__}") from None


def _moments_value(moments, n_groups: int):
    """``moments=`` as the backend's (count, mean, m2, scale) tuple."""
    if moments is None:
        return None
    if not isinstance(moments, GroupMoments):
        raise TypeError(f"moments must be a groupadv.GroupMoments (from group_moments), got {type(moments).__name__}")
    if moments.n_groups != n_groups:
        raise ValueError(f"moments hold {moments.n_groups} groups but the layout has {n_groups}")
    return moments.record()


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


def group_moments(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    groups: Groups | None = None,
    nan: str = "raise",
    weights=None,
    num_threads: int | None = None,
) -> GroupMoments:
    """Per-group count, mean and M2 (float64, the core's moments stage) as a mergeable
    :class:`GroupMoments`, in group order (labelled groups: order of first appearance).

    ``nan`` as in :func:`advantages` ("omit" counts only finite rewards; "propagate" makes
    the group's mean and m2 NaN). ``weights``: optional frequency weights, one finite value
    >= 0 per reward (count = sum of weights). Merge the result over batches or shards
    (:meth:`GroupMoments.merge`, :meth:`GroupMoments.merge_at`) and pass it back as
    ``advantages(..., moments=gm)``.
    """
    from .moments import weights_array

    x = rewards_array(rewards)
    g = resolve(len(x), group_size, offsets, group_ids, groups)
    w = None if weights is None else weights_array(weights, len(x))
    rec = _backend.impl.group_moments(x, g._impl, choice(nan, "nan"), w, threads_value(num_threads))
    return GroupMoments(*rec)


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
