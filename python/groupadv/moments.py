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

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from . import _backend
from ._groups import Groups, resolve
from ._inputs import choice, ddof_value, rewards_array, threads_value

__all__ = ["BatchMoments", "Moments", "merge_all"]


@dataclass(frozen=True)
class Moments:
    """Count, mean and M2 (sum of squared deviations from the mean) of a set of values.

    ``count`` is an int for unweighted data and the sum of the weights (a float) for weighted
    data. An empty set has count 0, mean 0.0 and m2 0.0.
    """

    count: float
    mean: float
    m2: float

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
        if weights is None:
            n = int(x.size)
            if n == 0:
                return cls.empty()
            shift = x[0]
            with np.errstate(invalid="ignore", over="ignore"):
                mean = float(shift + np.sum(x - shift) / n)
                m2 = float(np.sum((x - mean) ** 2))
            return cls(n, mean, m2)
        w = weights_array(weights, len(x))
        total = float(w.sum())
        if total == 0.0:
            return cls(0.0, 0.0, 0.0)
        live = w > 0
        shift = x[live][0]
        with np.errstate(invalid="ignore", over="ignore"):
            dev = np.where(live, x - shift, 0.0)
            mean = float(shift + np.dot(w, dev) / total)
            d = np.where(live, x - mean, 0.0)
            m2 = float(np.dot(w, d * d))
        return cls(total, mean, m2)

    def merge(self, other: "Moments") -> "Moments":
        """The moments of the union of two disjoint sets (Chan, Golub & LeVeque)."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge Moments with Moments, got {type(other).__name__}")
        na, nb = self.count, other.count
        if nb == 0:
            return self
        if na == 0:
            return other
        n = na + nb
        delta = other.mean - self.mean
        mean = self.mean + delta * (nb / n)
        m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        return Moments(n, mean, m2)

    __add__ = merge

    def var(self, ddof: int = 0) -> float:
        """Variance ``m2 / (count - ddof)``; NaN when ``count <= ddof``."""
        ddof = ddof_value(ddof)
        if self.count <= ddof:
            return float("nan")
        return self.m2 / (self.count - ddof)

    def std(self, ddof: int = 0) -> float:
        """Standard deviation ``sqrt(m2 / (count - ddof))``; NaN when ``count <= ddof``."""
        v = self.var(ddof)
        return math.sqrt(v) if v == v else v

    def to_array(self) -> np.ndarray:
        """``[count, mean, m2]`` as float64 (for collectives)."""
        return np.array([self.count, self.mean, self.m2], dtype=np.float64)

    @classmethod
    def from_array(cls, a, integer_count: bool = True) -> "Moments":
        """Inverse of :meth:`to_array`."""
        c, mean, m2 = (float(v) for v in np.asarray(a, dtype=np.float64).reshape(3))
        return cls(int(c) if integer_count and c.is_integer() else c, mean, m2)


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
        if weights is None:
            n, mean, m2, rn, rm2 = _backend.impl.batch_moments(x, g._impl, nan, threads)
            return cls(Moments(int(n), float(mean), float(m2)), Moments(int(rn), 0.0, float(rm2)), False)
        w = weights_array(weights, len(x))
        count, gmean, _ = _backend.impl.group_stats(x, g._impl, 0, nan, threads)
        x64 = x.astype(np.float64)
        mu = gmean[g.codes()]
        with np.errstate(invalid="ignore", over="ignore"):
            res = x64 - mu
        if nan == "omit":
            ok = np.isfinite(x64)
            x64, res, w = x64[ok], res[ok], w[ok]
        return cls(Moments.from_values(x64, w), Moments.from_values(res, w), True)

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
        """``[count, mean, m2, residual count, residual mean, residual m2]`` as float64."""
        return np.concatenate((self.rewards.to_array(), self.residual.to_array()))

    @classmethod
    def from_array(cls, a, weighted: bool = False) -> "BatchMoments":
        """Inverse of :meth:`to_array`."""
        a = np.asarray(a, dtype=np.float64).reshape(6)
        return cls(Moments.from_array(a[:3], not weighted), Moments.from_array(a[3:], not weighted), weighted)


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
