"""Scale-out on existing engines: batch statistics over shards with torch.distributed or Ray.

Each worker holds a shard of the batch (whole groups: every reward of a prompt on the same
worker). Group statistics are local; only the batch scales (``scale="batch"`` /
``"batch_residual"``) need a global std, which is the merge of the shards'
:class:`~groupadv.moments.BatchMoments` (8 float64 per worker, one collective):

torch.distributed (any backend; gloo on CPU, nccl on GPU)::

    from groupadv.distributed import advantages
    adv = advantages(shard_rewards, group_ids=shard_uids, scale="batch")   # global batch std

    # or by hand
    local = BatchMoments.from_rewards(shard_rewards, group_ids=shard_uids)
    total = all_reduce_moments(local)                # same result on every rank
    adv = ga.advantages(shard_rewards, group_ids=shard_uids, scale="batch",
                        batch_std=total.std("batch"))

Ray: wrap :class:`ShardWorker` in ``ray.remote`` (one actor per shard) and call
:func:`ray_advantages` on the handles; see ``examples/ray_shards.py``.

Groups that straddle shards are an error: the group mean would be taken over part of the
group. With ``group_ids`` the labels are compared across shards (:func:`check_groups_disjoint`,
:func:`find_straddling_groups`) and the error names a straddling label and its shards.
With ``group_size=`` / ``offsets=`` the groups are by construction those of the shard.

torch and ray are imported only when these functions are called.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import _api
from ._groups import Groups, make_groups
from .moments import BatchMoments, Moments, merge_all

__all__ = [
    "ShardWorker",
    "StraddlingGroupsError",
    "advantages",
    "all_reduce_moments",
    "check_groups_disjoint",
    "find_straddling_groups",
    "ray_advantages",
]


class StraddlingGroupsError(ValueError):
    """A group (prompt) has rewards on more than one shard."""


# ----------------------------------------------------------------------------- shard checks


def _unique_labels(group_ids) -> list:
    if group_ids is None:
        return []
    if isinstance(group_ids, np.ndarray):
        return np.unique(group_ids).tolist()
    return list(dict.fromkeys(group_ids))


def find_straddling_groups(shard_labels: Sequence) -> dict:
    """``{label: [shard indices]}`` for every label that occurs on more than one shard.
    ``shard_labels[k]`` is the labels (group ids) of shard k, in any order, repeats allowed."""
    where: dict = {}
    for k, labels in enumerate(shard_labels):
        for lab in set(_unique_labels(labels)):
            where.setdefault(lab, []).append(k)
    return {lab: ks for lab, ks in where.items() if len(ks) > 1}


def _raise_straddling(bad: dict, what: str = "shards") -> None:
    if not bad:
        return
    lab, ks = next(iter(sorted(bad.items(), key=lambda kv: repr(kv[0]))))
    raise StraddlingGroupsError(
        f"{len(bad)} group(s) straddle {what}: e.g. group {lab!r} has rewards on {what} {ks}. "
        "Every reward of a group (prompt) must be on the same shard, or its mean and std would be "
        "taken over part of the group; shard by group (e.g. by prompt uid), not by reward."
    )


def check_groups_disjoint(group_ids, process_group=None) -> None:
    """torch.distributed: raise :class:`StraddlingGroupsError` on every rank when a group label
    of this rank's ``group_ids`` also occurs on another rank (one ``all_gather_object`` of the
    rank's distinct labels)."""
    dist = _dist()
    world = dist.get_world_size(process_group)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, _unique_labels(group_ids), group=process_group)
    _raise_straddling(find_straddling_groups(gathered), "ranks")


# ----------------------------------------------------------------------------- torch.distributed


def _dist():
    try:
        import torch.distributed as dist
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("groupadv.distributed needs torch (pip install torch) for torch.distributed") from e
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized; call torch.distributed.init_process_group first")
    return dist


def all_reduce_moments(moments, process_group=None):
    """Merge a :class:`~groupadv.moments.Moments` or :class:`~groupadv.moments.BatchMoments`
    over all ranks of ``process_group`` (torch.distributed); every rank gets the same result.

    One ``all_gather`` of a few float64 per rank (on the current CUDA device for nccl, else
    CPU), then an exact Chan merge in rank order, so the result does not depend on the
    reduction tree and equals the whole batch's moments to float64 rounding.
    """
    import torch

    dist = _dist()
    if isinstance(moments, BatchMoments):
        local = np.append(moments.to_array(), float(moments.weighted))
    elif isinstance(moments, Moments):
        local = moments.to_array()
    else:
        raise TypeError(f"all_reduce_moments takes Moments or BatchMoments, got {type(moments).__name__}")
    device = torch.device("cpu")
    if dist.get_backend(process_group) == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.as_tensor(local, dtype=torch.float64, device=device)
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(process_group))]
    dist.all_gather(parts, t, group=process_group)
    rows = torch.stack(parts).cpu().numpy()
    if isinstance(moments, Moments):
        integer = isinstance(moments.count, (int, np.integer))
        return merge_all(Moments.from_array(r, integer) for r in rows)
    flags = rows[:, 8]
    if not (flags == flags[0]).all():
        raise ValueError("some ranks computed weighted BatchMoments and others unweighted; use the same weighting everywhere")
    weighted = bool(flags[0])
    return merge_all(BatchMoments.from_array(r[:8], weighted) for r in rows)


def advantages(
    rewards,
    group_size: int | None = None,
    *,
    offsets=None,
    group_ids=None,
    center: str = "mean",
    scale: str = "group",
    ddof: int = 0,
    eps: float = 0.0,
    singleton: str = "zero",
    nan: str = "raise",
    weights=None,
    check_groups: bool = True,
    process_group=None,
    num_threads: int | None = None,
) -> np.ndarray:
    """:func:`groupadv.advantages` of this rank's shard, with batch statistics over all ranks.

    A collective: every rank of ``process_group`` must call it (with the same options). A rank
    with no rewards passes an empty array and gets an empty array back.
    ``check_groups`` (with ``group_ids``): first check that no group straddles ranks.
    ``weights``: explicit token weighting of the batch std (see
    :meth:`BatchMoments.from_rewards`); default: each reward once.
    """
    n = len(rewards)
    if check_groups and group_ids is not None:
        check_groups_disjoint(group_ids if n else [], process_group)
    if scale not in ("batch", "batch_residual"):
        if not n:
            return _empty_like(rewards)
        return _api.advantages(
            rewards, group_size, offsets=offsets, group_ids=group_ids, center=center, scale=scale,
            ddof=ddof, eps=eps, singleton=singleton, nan=nan, num_threads=num_threads,
        )
    if n:
        local = BatchMoments.from_rewards(
            rewards, group_size, offsets=offsets, group_ids=group_ids, weights=weights, nan=nan, num_threads=num_threads
        )
    else:
        local = BatchMoments.empty(weighted=weights is not None)
    total = all_reduce_moments(local, process_group)
    if not n:
        return _empty_like(rewards)
    return _api.advantages(
        rewards, group_size, offsets=offsets, group_ids=group_ids, center=center, scale=scale,
        ddof=ddof, eps=eps, singleton=singleton, nan=nan, num_threads=num_threads,
        batch_std=_finite_std(total, scale, ddof),
    )


def _empty_like(rewards) -> np.ndarray:
    a = np.asarray(rewards)
    return np.empty(0, dtype=a.dtype if a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) else np.float64)


def _finite_std(total: BatchMoments, scale: str, ddof: int) -> float:
    std = total.std(scale, ddof)
    if not np.isfinite(std):
        raise ValueError(
            f"the global batch std is {std}: the batch has non-finite rewards (nan='propagate') or "
            f"no more than ddof={ddof} rewards"
        )
    return std


# ----------------------------------------------------------------------------- Ray


class ShardWorker:
    """One shard of a batch: its rewards and groups. Plain Python, meant to be wrapped as a Ray
    actor (``ray.remote(ShardWorker)``) or used in any other process pool.

    Methods: :meth:`labels` (distinct group labels, for the straddling check),
    :meth:`moments` (local :class:`BatchMoments`), :meth:`advantages` (with a global batch std).
    """

    def __init__(self, rewards, group_size: int | None = None, *, offsets=None, group_ids=None, weights=None, nan: str = "raise"):
        self.rewards = np.asarray(rewards)
        self.group_ids = group_ids
        self.weights = weights
        self.nan = nan
        self.groups: Groups = make_groups(len(self.rewards), group_size, offsets=offsets, group_ids=group_ids)

    def labels(self) -> list:
        """Distinct group labels of the shard ([] for group_size= / offsets= layouts)."""
        return _unique_labels(self.group_ids)

    def moments(self) -> BatchMoments:
        """Batch moments of this shard."""
        return BatchMoments.from_rewards(self.rewards, groups=self.groups, weights=self.weights, nan=self.nan)

    def advantages(self, batch_std: float | None = None, **kwargs: Any) -> np.ndarray:
        """Advantages of this shard; ``batch_std`` (the global one) for the batch scales.
        Other keywords as :func:`groupadv.advantages`."""
        return _api.advantages(self.rewards, groups=self.groups, nan=self.nan, batch_std=batch_std, **kwargs)


def ray_advantages(
    actors: Sequence,
    *,
    center: str = "mean",
    scale: str = "batch",
    ddof: int = 0,
    eps: float = 0.0,
    singleton: str = "zero",
    check_groups: bool = True,
) -> list:
    """Normalize shards held by Ray actors (handles of ``ray.remote(ShardWorker)`` or any actor
    with the same ``labels`` / ``moments`` / ``advantages`` methods) with the global batch
    statistics. Returns the ObjectRefs of the shards' advantages, in actor order (``ray.get``
    them, or pass them on to the learners).

    Steps: (1) with group labels, check that no group straddles actors; (2) gather each
    shard's :class:`BatchMoments` (8 numbers each) and merge them on the driver; (3) each actor
    divides by the global std.
    """
    import ray

    if check_groups:
        _raise_straddling(find_straddling_groups(ray.get([a.labels.remote() for a in actors])), "actors")
    kw = dict(center=center, scale=scale, ddof=ddof, eps=eps, singleton=singleton)
    if scale not in ("batch", "batch_residual"):
        return [a.advantages.remote(**kw) for a in actors]
    total = merge_all(ray.get([a.moments.remote() for a in actors]))
    std = _finite_std(total, scale, ddof)
    return [a.advantages.remote(batch_std=std, **kw) for a in actors]
