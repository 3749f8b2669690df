"""Mergeable batch statistics: count, mean and M2 (Chan et al.), per shard or per batch.

Batch-level statistics (the std that ``scale="batch"`` / ``"batch_residual"`` divide by) must
be computed once, on the *whole* batch, before any subsampling. When the batch is sharded over
workers, each worker computes :class:`BatchMoments` of its shard, the moments are merged
(:meth:`Moments.merge`, :func:`merge_all`, or :func:`groupadv.distributed.all_reduce_moments`),
and each worker then computes its advantages with the global std::

    local = ga.moments.BatchMoments.from_rewards(shard_rewards, group_ids=shard_uids)
    total = ga.moments.merge_all(all_shards_moments)            # or all_reduce_moments(local)
    adv = ga.advantages(shard_rewards, group_ids=shard_uids, scale="batch",
                        batch_std=total.std("batch", ddof=0))

Weighting: every reward (episode, output) counts once by default, whatever its token length.
Token weighting is an explicit option, ``weights=lengths``: frequency weights (a reward of
weight w counts as w copies), computed in float64 numpy.

Merging is exact algebra; in float64 the merged mean and M2 equal those of the whole batch to
rounding (the tests check 1e-12 relative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from . import _backend
from ._groups import Groups, resolve
from ._inputs import choice, ddof_value, rewards_array, threads_value

__all__ = ["BatchMoments", "GroupMoments", "Moments", "merge_all"]


def _record(count, mean, m2, scale) -> tuple:
    # contiguous float64 arrays: what the backends' moment functions read
    return tuple(np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(-1)) for v in (count, mean, m2, scale))


@dataclass(frozen=True)
class Moments:
    """Count, mean and M2 (sum of squared deviations from the mean) of a set of values, in the
    core's scaled form: ``M2 = m2 * scale**2`` (``scale`` is 1.0 unless the squared deviations
    would under- or overflow float64; see :class:`GroupMoments`).

    ``count`` is an int for unweighted data and the sum of the weights (a float) for weighted
    data. An empty set has count 0, mean 0.0 and m2 0.0. The merge and the std are the
    core's (``merge_moments``, ``moments_std``): this class holds no arithmetic of its own.
    """

    count: float
    mean: float
    m2: float
    scale: float = 1.0

    @classmethod
    def empty(cls) -> "Moments":
        """The moments of no values (the identity of :meth:`merge`)."""
        return cls(0, 0.0, 0.0)

    @classmethod
    def from_values(cls, values, weights=None) -> "Moments":
        """Moments of a 1-D array of values (optionally frequency-weighted), in float64.
        Non-finite values give a NaN mean and M2 (filter them first if that is not wanted)."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"values must be 1-D, got an array of shape {x.shape}")
        w = None if weights is None else weights_array(weights, len(x))
        if x.size == 0:
            return cls.empty()
        impl = _backend.impl
        one_group = impl.grouping_uniform(len(x), len(x))
        rec = impl.group_moments(x, one_group, "propagate", w, 0)
        return cls._from_record(rec, integer_count=w is None)

    @classmethod
    def _from_record(cls, rec, integer_count: bool) -> "Moments":
        c, mean, m2, scale = (float(np.asarray(v).reshape(-1)[0]) for v in rec)
        return cls(int(c) if integer_count and c.is_integer() else c, mean, m2, scale)

    def _as_record(self) -> tuple:
        return _record(self.count, self.mean, self.m2, self.scale)

    def merge(self, other: "Moments") -> "Moments":
        """The moments of the union of two disjoint sets (Chan, Golub & LeVeque)."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge Moments with Moments, got {type(other).__name__}")
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        rec = _backend.impl.merge_moments(self._as_record(), other._as_record())
        integer = isinstance(self.count, (int, np.integer)) and isinstance(other.count, (int, np.integer))
        return Moments._from_record(rec, integer)

    __add__ = merge

    def std(self, ddof: int = 0) -> float:
        """The guarded std ``scale * sqrt(m2 / (count - ddof))``; NaN when ``count <= ddof``."""
        ddof = ddof_value(ddof)
        return float(_backend.impl.moments_std(self._as_record(), ddof)[0])

    def var(self, ddof: int = 0) -> float:
        """Variance (the square of :meth:`std`); NaN when ``count <= ddof``."""
        return self.std(ddof) ** 2

    def to_array(self) -> np.ndarray:
        """``[count, mean, m2, scale]`` as float64 (for collectives)."""
        return np.array([self.count, self.mean, self.m2, self.scale], dtype=np.float64)

    @classmethod
    def from_array(cls, a, integer_count: bool = True) -> "Moments":
        """Inverse of :meth:`to_array` (a 3-entry array has scale 1.0). Moments that no set of
        values has (a negative or non-finite count, a fractional count where ``integer_count``,
        a negative M2, a scale that is not a positive finite number) are a ValueError: they
        arrive from other ranks or actors, and corrupt ones must not become a std."""
        v = np.asarray(a, dtype=np.float64).reshape(-1)
        if len(v) not in (3, 4):
            raise ValueError(f"a Moments array has 3 or 4 entries, got {len(v)}")
        count, m2, scale = float(v[0]), float(v[2]), float(v[3]) if len(v) == 4 else 1.0
        if not (np.isfinite(count) and count >= 0):
            raise ValueError(f"a Moments count must be a finite number >= 0, got {count}")
        if integer_count and not count.is_integer():
            raise ValueError(f"the count of unweighted moments must be an integer, got {count}")
        if m2 < 0:  # NaN is allowed: the moments of non-finite values
            raise ValueError(f"a Moments m2 (sum of squared deviations) must be >= 0, got {m2}")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"a Moments scale must be a finite number > 0, got {scale}")
        return cls._from_record((v[0], v[1], v[2], scale), integer_count)


@dataclass(frozen=True, eq=False)
class GroupMoments:
    """Per-group moments (count, mean, m2, scale: float64 arrays, one entry per group, in group
    order), as :func:`groupadv.group_moments` returns them: mergeable across batches or shards
    and usable as ``groupadv.advantages(..., moments=gm)``.

    ``M2 = m2 * scale**2`` is the sum of (weighted) squared deviations from the mean; ``scale``
    is a power of two (1.0 unless the squared deviations would under- or overflow float64).
    Frozen and picklable; every operation is a core function (``merge_moments``,
    ``moments_std``).
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        rec = _record(self.count, self.mean, self.m2, self.scale)
        if len({len(v) for v in rec}) != 1:
            raise ValueError("count, mean, m2 and scale must have the same length")
        for name, v in zip(("count", "mean", "m2", "scale"), rec):
            object.__setattr__(self, name, v)

    @classmethod
    def empty(cls, n_groups: int = 0) -> "GroupMoments":
        """``n_groups`` groups without values (the identity of :meth:`merge`)."""
        return cls(np.zeros(n_groups), np.zeros(n_groups), np.zeros(n_groups), np.ones(n_groups))

    def record(self) -> tuple:
        """``(count, mean, m2, scale)``: what the backend functions take."""
        return self.count, self.mean, self.m2, self.scale

    @property
    def n_groups(self) -> int:
        return len(self.count)

    def __len__(self) -> int:
        return self.n_groups

    def __eq__(self, other) -> bool:
        return isinstance(other, GroupMoments) and all(
            np.array_equal(a, b, equal_nan=True) for a, b in zip(self.record(), other.record())
        )

    def merge(self, other: "GroupMoments") -> "GroupMoments":
        """Group j of the result holds the values of group j of both (Chan et al.)."""
        if not isinstance(other, GroupMoments):
            raise TypeError(f"can only merge GroupMoments with GroupMoments, got {type(other).__name__}")
        if other.n_groups != self.n_groups:
            raise ValueError(f"cannot merge moments of {self.n_groups} and {other.n_groups} groups; use merge_at")
        return GroupMoments(*_backend.impl.merge_moments(self.record(), other.record()))

    __add__ = merge

    def merge_at(self, codes, part: "GroupMoments") -> "GroupMoments":
        """``part``'s group j merged into group ``codes[j]`` (growing the groups as needed):
        streaming data whose labels are numbered as they are first seen."""
        if not isinstance(part, GroupMoments):
            raise TypeError(f"part must be GroupMoments, got {type(part).__name__}")
        c = np.asarray(codes)
        if c.ndim != 1 or c.dtype.kind not in "iu" or len(c) != part.n_groups:
            raise ValueError(f"codes must be {part.n_groups} integers (one per group of part)")
        if c.size and c.min() < 0:
            raise ValueError("codes must be >= 0")
        if len(np.unique(c)) != len(c):
            raise ValueError("codes must be distinct (one target group per group of part)")
        k = max(self.n_groups, int(c.max()) + 1 if c.size else 0)
        grown, placed = self._grown(k), GroupMoments.empty(k)
        for mine, theirs in zip(placed.record(), part.record()):
            mine[c] = theirs
        return grown.merge(placed)

    def _grown(self, k: int) -> "GroupMoments":
        if k == self.n_groups:
            return self
        pad = GroupMoments.empty(k - self.n_groups)
        return GroupMoments(*(np.concatenate((a, b)) for a, b in zip(self.record(), pad.record())))

    def take(self, codes) -> "GroupMoments":
        """The moments of groups ``codes`` (in that order)."""
        c = np.asarray(codes, dtype=np.int64)
        return GroupMoments(*(a[c] for a in self.record()))

    def std(self, ddof: int = 0) -> np.ndarray:
        """The guarded std of each group (NaN where count <= ddof)."""
        return _backend.impl.moments_std(self.record(), ddof_value(ddof))

    def batch(self, scale: str = "batch") -> Moments:
        """The batch moments that ``scale`` divides by: ``"batch"``, all groups merged (the
        moments of every value); ``"batch_residual"``, the residuals ``r - mean_g`` (count =
        sum of counts, M2 = sum of M2s). Merged in a fixed pairwise order (the same result
        whatever produced the groups)."""
        scale = choice(scale, "scale")
        if scale not in ("batch", "batch_residual"):
            raise ValueError(f"scale must be 'batch' or 'batch_residual', got {scale!r}")
        count, mean, m2, s = self.record()
        if scale == "batch_residual":
            mean = np.zeros_like(mean)  # residuals have mean 0 in every group: M2s add up
        rec = (count, mean, m2, s)
        while len(rec[0]) > 1:
            half = len(rec[0]) // 2
            head = tuple(v[: 2 * half] for v in rec)
            merged = _backend.impl.merge_moments(_record(*(v[0::2] for v in head)), _record(*(v[1::2] for v in head)))
            if len(rec[0]) % 2:
                merged = tuple(np.append(a, v[-1]) for a, v in zip(merged, rec))
            rec = merged
        if len(rec[0]) == 0:
            return Moments.empty()
        return Moments._from_record(rec, integer_count=bool(np.all(np.mod(self.count, 1) == 0)))


@dataclass(frozen=True)
class BatchMoments:
    """The two batch statistics that the batch scales divide by, mergeable across shards.

    rewards: moments of the rewards themselves (``scale="batch"``: Lite PPO / TRL).
    residual: moments of the residuals ``r_i - group mean`` (``scale="batch_residual"``:
        AReaL). With episode weighting every group's residuals have mean 0, so merging
        shards adds their M2; groups must not straddle shards (a group split over two shards
        would be centred on two different partial means).
    weighted: True when built with token (or other) weights.
    """

    rewards: Moments
    residual: Moments
    weighted: bool = False

    @classmethod
    def empty(cls, weighted: bool = False) -> "BatchMoments":
        return cls(Moments.empty(), Moments.empty(), weighted)

    @classmethod
    def from_rewards(
        cls,
        rewards,
        group_size: int | None = None,
        *,
        offsets=None,
        group_ids=None,
        groups: Groups | None = None,
        weights=None,
        nan: str = "raise",
        num_threads: int | None = None,
    ) -> "BatchMoments":
        """Batch moments of one batch (or one shard) of rewards.

        Groups as in :func:`groupadv.advantages`. ``nan`` as there: "omit" leaves non-finite
        rewards out, "propagate" makes the statistics NaN, "raise" raises.

        weights: None (default): every reward counts once (episode weighting), computed by the
        active backend in one pass. Or one non-negative weight per reward, e.g. token lengths,
        for explicit token weighting (frequency weights, float64 numpy): the rewards' moments
        and those of the residuals ``r_i - mu_g`` (mu_g the unweighted group mean, the
        baseline that the advantages subtract), each weighted.
        """
        x = rewards_array(rewards)
        g = resolve(len(x), group_size, offsets, group_ids, groups)
        nan = choice(nan, "nan")
        threads = threads_value(num_threads)
        impl = _backend.impl
        w = None if weights is None else weights_array(weights, len(x))
        gm = GroupMoments(*impl.group_moments(x, g._impl, nan, w, threads))
        if w is None:
            return cls(gm.batch("batch"), gm.batch("batch_residual"), False)
        # Residuals about the (episode) group mean, the baseline the advantages subtract,
        # then their weighted moments: two core calls.
        x64 = x.astype(np.float64)
        res = np.empty(len(x))
        impl.advantages(x64, res, g._impl, "mean", "none", 0, 0.0, "zero", nan, threads)
        if nan == "omit":
            w = np.where(np.isfinite(x64), w, 0.0)
        residual = Moments._from_record(
            impl.group_moments(res, impl.grouping_uniform(len(res), len(res)), "propagate", w, threads), False
        )
        return cls(gm.batch("batch"), residual, True)

    def merge(self, other: "BatchMoments") -> "BatchMoments":
        """The moments of two disjoint shards together (Chan et al.)."""
        if not isinstance(other, BatchMoments):
            raise TypeError(f"can only merge BatchMoments with BatchMoments, got {type(other).__name__}")
        if self.weighted != other.weighted:
            raise ValueError("cannot merge weighted with unweighted BatchMoments; use the same weighting on every shard")
        return BatchMoments(self.rewards.merge(other.rewards), self.residual.merge(other.residual), self.weighted)

    __add__ = merge

    @property
    def count(self) -> float:
        """Number of rewards (sum of weights when weighted)."""
        return self.rewards.count

    @property
    def mean(self) -> float:
        """Mean reward of the batch."""
        return self.rewards.mean

    def std(self, scale: str = "batch", ddof: int = 0) -> float:
        """The batch std that ``advantages(..., scale=scale)`` divides by (before eps):
        of the rewards for ``scale="batch"``, of the residuals for ``"batch_residual"``."""
        scale = choice(scale, "scale")
        if scale == "batch":
            return self.rewards.std(ddof)
        if scale == "batch_residual":
            return self.residual.std(ddof)
        raise ValueError(f"scale must be 'batch' or 'batch_residual', got {scale!r}")

    def to_array(self) -> np.ndarray:
        """``[count, mean, m2, scale]`` of the rewards then of the residuals, as float64."""
        return np.concatenate((self.rewards.to_array(), self.residual.to_array()))

    @classmethod
    def from_array(cls, a, weighted: bool = False) -> "BatchMoments":
        """Inverse of :meth:`to_array` (6 entries: without the scales)."""
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        if len(a) not in (6, 8):
            raise ValueError(f"a BatchMoments array has 6 or 8 entries, got {len(a)}")
        h = len(a) // 2
        return cls(Moments.from_array(a[:h], not weighted), Moments.from_array(a[h:], not weighted), weighted)


def merge_all(parts: Iterable):
    """Merge an iterable of :class:`Moments` or :class:`BatchMoments` (in order) into one."""
    items = list(parts)
    if not items:
        raise ValueError("merge_all needs at least one Moments or BatchMoments")
    total = items[0]
    if not isinstance(total, (Moments, BatchMoments)):
        raise TypeError(f"merge_all takes Moments or BatchMoments, got {type(total).__name__}")
    for item in items[1:]:
        total = total.merge(item)
    return total


def weights_array(weights, n: int) -> np.ndarray:
    """Validated float64 weights: 1-D, length n, finite, >= 0."""
    w = np.asarray(weights)
    if w.dtype.kind not in "iufb":
        raise TypeError(f"weights must be numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D, got an array of shape {w.shape}")
    if len(w) != n:
        raise ValueError(f"weights has length {len(w)} but rewards has length {n}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"weights must be finite and >= 0, but weights[{i}] = {w[i]}")
    return w
